"""The token balance and the price multiplier: the one owner of both.

Every change of a balance goes through these functions, whoever asks for it
(a transcription job, the admin API, an operator's command). Each is one
conditional UPDATE computed in the database (``F()``) or a write under the
user's row lock, so concurrent changes never lose one another.
"""

from __future__ import annotations

import uuid
from decimal import ROUND_HALF_UP, Decimal

from django.db import transaction
from django.db.models import F, Q

from accounts.models import User
from accounts.services.users import user_get_by_username
from whisper_site.errors import ApplicationError

# Far above any real balance, far below the 64-bit column's limit: a typo of a
# few extra digits is refused instead of stored.
TOKEN_BALANCE_MAX = 10**15
PRICE_MULTIPLIER_MAX = Decimal(1000)
# The column keeps 4 decimal places; rounding here makes the stored value the
# one we answer with, on every database.
PRICE_MULTIPLIER_STEP = Decimal("0.0001")


class InsufficientBalance(Exception):
    """The balance does not cover a charge; nothing was taken."""

    def __init__(self, *, required: int, available: int) -> None:
        super().__init__(f"Insufficient token balance. Required: {required}, Available: {available}")
        self.required = required
        self.available = available


def balance_charge(*, user_id: uuid.UUID, amount: int) -> None:
    """Take ``amount`` tokens from the user's balance, or raise :class:`InsufficientBalance`.

    Race: two jobs of one user charged at once by different workers. The UPDATE only
    succeeds while the balance covers the amount, and the database serialises the two
    UPDATEs of the user's row, so the second sees the first one's result: the balance
    can never go below zero (the CHECK constraint is the backstop).
    """
    if amount <= 0:
        return
    charged = User.objects.filter(pk=user_id, token_balance__gte=amount).update(
        token_balance=F("token_balance") - amount
    )
    if not charged:
        available = User.objects.values_list("token_balance", flat=True).filter(pk=user_id).first() or 0
        raise InsufficientBalance(required=amount, available=available)


def balance_refund(*, user_id: uuid.UUID, amount: int) -> None:
    """Give back ``amount`` tokens taken by :func:`balance_charge`."""
    if amount > 0:
        User.objects.filter(pk=user_id).update(token_balance=F("token_balance") + amount)


def token_balance_validate(*, token_balance: int) -> None:
    """A balance is a whole number of tokens between 0 and ``TOKEN_BALANCE_MAX``."""
    if token_balance < 0:
        raise ApplicationError("token_balance must be non-negative", 400)
    if token_balance > TOKEN_BALANCE_MAX:
        raise ApplicationError(f"token_balance must be at most {TOKEN_BALANCE_MAX}", 400)


def price_multiplier_clean(*, price_multiplier: Decimal) -> Decimal:
    """A finite multiplier between 0 and 1000, rounded to 4 decimal places."""
    if not price_multiplier.is_finite():
        raise ApplicationError("price_multiplier must be a number", 400)
    if price_multiplier < 0:
        raise ApplicationError("price_multiplier must be non-negative", 400)
    if price_multiplier > PRICE_MULTIPLIER_MAX:
        raise ApplicationError(f"price_multiplier must be at most {PRICE_MULTIPLIER_MAX}", 400)
    return price_multiplier.quantize(PRICE_MULTIPLIER_STEP, rounding=ROUND_HALF_UP)


def balance_set(
    *, user_id: uuid.UUID, token_balance: int | None = None, price_multiplier: Decimal | None = None
) -> tuple[User, list[str]]:
    """Set a user's token balance and/or price multiplier; returns the user and the updated fields.

    Both values are validated before either is written. The balance is set,
    not added. Race: a job charged in the same instant is either before this
    write (and overwritten, as the operator asked for this balance) or after
    it (and charged from it); the row lock keeps the two from interleaving.
    """
    changes: dict[str, object] = {}
    if token_balance is not None:
        token_balance_validate(token_balance=token_balance)
        changes["token_balance"] = token_balance
    if price_multiplier is not None:
        changes["price_multiplier"] = price_multiplier_clean(price_multiplier=price_multiplier)
    if not changes:
        raise ApplicationError("No valid fields to update. Provide token_balance or price_multiplier", 400)
    with transaction.atomic():
        user = User.objects.select_for_update().filter(pk=user_id).first()
        if user is None:
            raise ApplicationError("User not found", 404)
        for name, value in changes.items():
            setattr(user, name, value)
        user.save(update_fields=list(changes))
    return user, list(changes)


def balance_grant(*, username: str, amount: int, expect_balance: int | None = None) -> User:
    """Add ``amount`` tokens to a balance in one conditional UPDATE.

    Race: a job charged while the grant runs. ``F()`` adds in the database, so
    neither change is lost to a read-modify-write. ``expect_balance`` makes a
    retried grant safe: it only applies while the balance is still the one
    the operator saw.
    """
    if amount < 1:
        raise ApplicationError("AMOUNT must be a positive integer", 400)
    if amount > TOKEN_BALANCE_MAX:
        raise ApplicationError(f"AMOUNT must be at most {TOKEN_BALANCE_MAX}", 400)
    user = user_get_by_username(username=username)
    condition = Q(pk=user.pk, token_balance__lte=TOKEN_BALANCE_MAX - amount)
    if expect_balance is not None:
        condition &= Q(token_balance=expect_balance)
    updated = User.objects.filter(condition).update(token_balance=F("token_balance") + amount)
    user.refresh_from_db(fields=["token_balance"])
    if not updated:
        if expect_balance is not None and user.token_balance != expect_balance:
            raise ApplicationError(
                f"{user.username} has {user.token_balance} tokens, not {expect_balance}: nothing granted", 409
            )
        raise ApplicationError(
            f"{user.username} has {user.token_balance} tokens: adding {amount} would exceed {TOKEN_BALANCE_MAX}",
            400,
        )
    return user


def price_multiplier_set(*, username: str, price_multiplier: Decimal) -> tuple[User, Decimal]:
    """Set a user's price multiplier under the row lock; returns the user and the previous multiplier."""
    value = price_multiplier_clean(price_multiplier=price_multiplier)
    with transaction.atomic():
        user = user_get_by_username(username=username)
        user = User.objects.select_for_update().get(pk=user.pk)
        previous = user.price_multiplier
        if previous != value:
            user.price_multiplier = value
            user.save(update_fields=["price_multiplier"])
    return user, previous
