"""The token balance: charged, refunded, set and granted only by accounts.services."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
from django.db import connection

from accounts import services
from accounts.models import User
from whisper_site.errors import ApplicationError

pytestmark = pytest.mark.django_db


@pytest.fixture
def carol(db: None) -> User:
    # Unusable password: these tests never log in, and Argon2 is slow.
    return User.objects.create(username="carol", password="!", token_balance=100)


def balance(user: User) -> int:
    return User.objects.values_list("token_balance", flat=True).get(pk=user.pk)


def test_charge_and_refund(carol: User) -> None:
    services.balance_charge(user_id=carol.pk, amount=60)
    assert balance(carol) == 40
    with pytest.raises(services.InsufficientBalance) as refused:
        services.balance_charge(user_id=carol.pk, amount=41)
    assert str(refused.value) == "Insufficient token balance. Required: 41, Available: 40"
    assert (refused.value.required, refused.value.available) == (41, 40)
    assert balance(carol) == 40
    services.balance_refund(user_id=carol.pk, amount=60)
    assert balance(carol) == 100
    # Nothing to take or give back is no change.
    services.balance_charge(user_id=carol.pk, amount=0)
    services.balance_refund(user_id=carol.pk, amount=0)
    assert balance(carol) == 100


def test_set_validates_both_values_before_writing_either(carol: User) -> None:
    with pytest.raises(ApplicationError, match="price_multiplier must be non-negative"):
        services.balance_set(user_id=carol.pk, token_balance=5, price_multiplier=Decimal("-1"))
    with pytest.raises(ApplicationError, match="No valid fields to update"):
        services.balance_set(user_id=carol.pk)
    carol.refresh_from_db()
    assert (carol.token_balance, carol.price_multiplier) == (100, 1)
    user, fields = services.balance_set(user_id=carol.pk, token_balance=7, price_multiplier=Decimal("0.12345"))
    assert fields == ["token_balance", "price_multiplier"]
    assert (user.token_balance, user.price_multiplier) == (7, Decimal("0.1235"))
    carol.refresh_from_db()
    assert (carol.token_balance, carol.price_multiplier) == (7, Decimal("0.1235"))


def test_set_of_an_unknown_user_is_404(db: None) -> None:
    with pytest.raises(ApplicationError) as missing:
        services.balance_set(user_id=User().pk, token_balance=1)
    assert (missing.value.message, missing.value.status) == ("User not found", 404)


def test_grant_and_price_multiplier_find_the_user_case_insensitively(carol: User) -> None:
    assert services.balance_grant(username="CAROL", amount=5).token_balance == 105
    user, previous = services.price_multiplier_set(username="Carol", price_multiplier=Decimal("2"))
    assert (user.price_multiplier, previous) == (Decimal("2"), Decimal("1"))
    with pytest.raises(ApplicationError, match="User not found: dave"):
        services.balance_grant(username="dave", amount=5)


@pytest.mark.django_db(transaction=True)
def test_concurrent_charges_never_overdraw() -> None:
    carol = User.objects.create(username="carol", password="!", token_balance=50)

    def charge(_: int) -> bool:
        try:
            services.balance_charge(user_id=carol.pk, amount=10)
            return True
        except services.InsufficientBalance:
            return False
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(charge, range(8)))
    assert results.count(True) == 5
    assert balance(carol) == 0
