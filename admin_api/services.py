"""Operator writes: balances, price multipliers and session clean-up.

Shared by the admin API (``PATCH /admin/users/:uuid``) and the management
commands, so that both enforce the same bounds with the same messages.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from accounts.models import User, UserSession
from whisper_site.errors import ApplicationError

# Far above any real balance, far below the 64-bit column's limit: a typo of a
# few extra digits is refused instead of stored.
TOKEN_BALANCE_MAX = 10**15
PRICE_MULTIPLIER_MAX = Decimal(1000)
# The column keeps 4 decimal places; rounding here makes the stored value the
# one we answer with, on every database.
PRICE_MULTIPLIER_STEP = Decimal("0.0001")
PURGE_BATCH_SIZE = 5000


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


def admin_user_update(
    *, user_id: uuid.UUID, token_balance: int | None = None, price_multiplier: Decimal | None = None
) -> tuple[User, list[str]]:
    """Set a user's token balance and/or price multiplier; returns the user and the updated fields.

    Both values are validated before either is written. The balance is set,
    not added: a job charged in the same instant is either before this write
    (and overwritten, as the operator asked for this balance) or after it
    (and charged from it); the row lock keeps the two from interleaving.
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


def user_get_by_username(*, username: str) -> User:
    """The user of that name, matched case-insensitively as at login."""
    user = User.objects.filter(username__iexact=username).first()
    if user is None:
        raise ApplicationError(f"User not found: {username}", 404)
    return user


def user_tokens_grant(*, username: str, amount: int, expect_balance: int | None = None) -> User:
    """Add ``amount`` tokens to a balance in one conditional UPDATE.

    ``F()`` adds in the database, so a job charged concurrently is never lost
    to a read-modify-write. ``expect_balance`` makes a retried grant safe: it
    only applies while the balance is still the one the operator saw.
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


def user_price_multiplier_set(*, username: str, price_multiplier: Decimal) -> tuple[User, Decimal]:
    """Set a user's price multiplier; returns the user and the previous multiplier."""
    value = price_multiplier_clean(price_multiplier=price_multiplier)
    with transaction.atomic():
        user = user_get_by_username(username=username)
        user = User.objects.select_for_update().get(pk=user.pk)
        previous = user.price_multiplier
        if previous != value:
            user.price_multiplier = value
            user.save(update_fields=["price_multiplier"])
    return user, previous


@dataclass(frozen=True)
class PurgeResult:
    ended: int
    expired: int

    @property
    def total(self) -> int:
        return self.ended + self.expired


def session_purge(*, dry_run: bool = False) -> PurgeResult:
    """Delete sessions that can never authenticate again: ended or past their lifetime.

    Deleted in batches of ids, so that a large backlog never holds one long
    lock on the sessions table while users are logging in.
    """
    cutoff = timezone.now() - UserSession.lifetime()
    ended = UserSession.objects.filter(ended_at__isnull=False)
    expired = UserSession.objects.filter(ended_at__isnull=True, created_at__lte=cutoff)
    result = PurgeResult(ended=ended.count(), expired=expired.count())
    if dry_run:
        return result
    stale = UserSession.objects.filter(Q(ended_at__isnull=False) | Q(created_at__lte=cutoff)).order_by()
    while True:
        ids = list(stale.values_list("pk", flat=True)[:PURGE_BATCH_SIZE])
        if not ids:
            break
        UserSession.objects.filter(pk__in=ids).delete()
    return result
