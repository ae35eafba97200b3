"""Operator commands: grant_tokens, set_price_multiplier, purge_sessions."""

from __future__ import annotations

import datetime as dt
import io
from decimal import Decimal

import pytest
from django.core.management import call_command, load_command_class
from django.core.management.base import CommandError
from django.utils import timezone

from accounts.models import User, UserSession

pytestmark = pytest.mark.django_db


@pytest.fixture
def bob(db: None) -> User:
    # Unusable password: these tests never log in, and Argon2 is slow.
    return User.objects.create(username="bob", password="!", token_balance=100)


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("grant_tokens", ["USERNAME", "AMOUNT", "--expect-balance", "atomic"]),
        ("set_price_multiplier", ["USERNAME", "VALUE", "1000"]),
        ("purge_sessions", ["--dry-run", "expired", "ended"]),
    ],
)
def test_every_command_has_help(name: str, words: list[str]) -> None:
    command = load_command_class("accounts", name)
    help_text = command.create_parser("manage.py", name).format_help()
    for word in words:
        assert word in help_text


# --- grant_tokens -----------------------------------------------------------


def test_grant_tokens_adds_and_prints_the_balance(bob: User) -> None:
    assert run("grant_tokens", "bob", "250") == "Granted 250 tokens to bob: balance 350\n"
    assert run("grant_tokens", "BOB", "50") == "Granted 50 tokens to bob: balance 400\n"
    bob.refresh_from_db()
    assert bob.token_balance == 400


def test_grant_tokens_with_expected_balance_is_safe_to_retry(bob: User) -> None:
    assert "balance 600" in run("grant_tokens", "bob", "500", "--expect-balance", "100")
    with pytest.raises(CommandError, match="bob has 600 tokens, not 100: nothing granted"):
        run("grant_tokens", "bob", "500", "--expect-balance", "100")
    bob.refresh_from_db()
    assert bob.token_balance == 600


def test_grant_tokens_keeps_the_balance_bounded(bob: User) -> None:
    User.objects.filter(pk=bob.pk).update(token_balance=10**15 - 10)
    with pytest.raises(CommandError, match="would exceed 1000000000000000"):
        run("grant_tokens", "bob", "11")
    assert "balance 1000000000000000" in run("grant_tokens", "bob", "10")


def test_grant_tokens_unknown_user(db: None) -> None:
    with pytest.raises(CommandError, match="User not found: ghost"):
        run("grant_tokens", "ghost", "10")


@pytest.mark.parametrize("amount", ["0", "-5", "abc", "1.5", ""])
def test_grant_tokens_needs_a_positive_integer(bob: User, amount: str) -> None:
    with pytest.raises(CommandError, match="AMOUNT must be a positive integer"):
        run("grant_tokens", "bob", amount)
    bob.refresh_from_db()
    assert bob.token_balance == 100


def test_grant_tokens_needs_both_arguments(bob: User) -> None:
    with pytest.raises(CommandError, match="the following arguments are required: AMOUNT"):
        run("grant_tokens", "bob")


# --- set_price_multiplier -------------------------------------------------------


def test_set_price_multiplier_sets_and_is_idempotent(bob: User) -> None:
    assert run("set_price_multiplier", "bob", "0.5") == "bob: price multiplier 1 -> 0.5\n"
    assert run("set_price_multiplier", "Bob", "0.50") == "bob: price multiplier already 0.5\n"
    bob.refresh_from_db()
    assert bob.price_multiplier == Decimal("0.5")


@pytest.mark.parametrize(("value", "stored"), [("0", "0"), ("1000", "1000"), ("0.12345", "0.1235"), ("2", "2")])
def test_set_price_multiplier_bounds_and_rounding(bob: User, value: str, stored: str) -> None:
    run("set_price_multiplier", "bob", value)
    bob.refresh_from_db()
    assert bob.price_multiplier == Decimal(stored)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abc", "VALUE must be a number"),
        ("nan", "VALUE must be a number"),
        ("inf", "VALUE must be a number"),
        ("-0.1", "price_multiplier must be non-negative"),
        ("1000.5", "price_multiplier must be at most 1000"),
    ],
)
def test_set_price_multiplier_rejects(bob: User, value: str, message: str) -> None:
    with pytest.raises(CommandError, match=message):
        run("set_price_multiplier", "bob", value)
    bob.refresh_from_db()
    assert bob.price_multiplier == 1


def test_set_price_multiplier_unknown_user(db: None) -> None:
    with pytest.raises(CommandError, match="User not found: ghost"):
        run("set_price_multiplier", "ghost", "1")


# --- purge_sessions ---------------------------------------------------------------


def test_purge_sessions_deletes_ended_and_expired_only(bob: User) -> None:
    now = timezone.now()
    active = UserSession.objects.create(user=bob)
    almost_expired = UserSession.objects.create(user=bob, created_at=now - dt.timedelta(hours=23, minutes=59))
    UserSession.objects.create(user=bob, ended_at=now)
    UserSession.objects.create(user=bob, created_at=now - dt.timedelta(hours=24, minutes=1))
    UserSession.objects.create(user=bob, created_at=now - dt.timedelta(days=90), ended_at=now - dt.timedelta(days=89))

    assert run("purge_sessions", "--dry-run") == "Would delete 3 session(s): 2 ended, 1 expired\n"
    assert UserSession.objects.count() == 5
    assert run("purge_sessions") == "Deleted 3 session(s): 2 ended, 1 expired\n"
    assert set(UserSession.objects.values_list("pk", flat=True)) == {active.pk, almost_expired.pk}
    # Idempotent: nothing left to do.
    assert run("purge_sessions") == "Deleted 0 session(s): 0 ended, 0 expired\n"


def test_purge_sessions_works_in_batches(bob: User, monkeypatch: pytest.MonkeyPatch) -> None:
    from accounts.services import sessions

    monkeypatch.setattr(sessions, "PURGE_BATCH_SIZE", 2)
    UserSession.objects.bulk_create(UserSession(user=bob, ended_at=timezone.now()) for _ in range(5))
    assert "Deleted 5 session(s)" in run("purge_sessions")
    assert not UserSession.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_concurrent_grants_are_never_lost() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    User.objects.create(username="carol", password="!", token_balance=100)

    def grant(_: int) -> None:
        try:
            for _ in range(5):
                run("grant_tokens", "carol", "10")
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(grant, range(8)))
    assert User.objects.get(username="carol").token_balance == 100 + 8 * 5 * 10
