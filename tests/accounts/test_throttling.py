"""Limits on guessing passwords and on registering, driven through the API.

Failed password checks count per (account, client address) and per address;
the pair blocks at LOGIN_MAX_FAILURES, the address at the higher
LOGIN_MAX_FAILURES_PER_ADDRESS. The admin login's share of the guard is in
tests/admin_api/test_admin_site.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from rest_framework.test import APIClient

from accounts import services
from accounts.models import User
from accounts.services import throttles
from tests.conftest import PASSWORD, make_user
from whisper_site.errors import ApplicationError

pytestmark = pytest.mark.django_db
WRONG = "Wrong#Passw0rd1"
NEW_PASSWORD = "NewP@ssw0rd12345"
BLOCKED_LOGIN = "Too many failed login attempts. Try again later"
BLOCKED_PASSWORD = "Too many incorrect password attempts. Try again later"
BLOCKED_REGISTRATION = "Too many registrations from this address. Try again later"


def login(client: APIClient, username: str, password: str, address: str, forwarded_for: str | None = None):
    extra = {"REMOTE_ADDR": address}
    if forwarded_for is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded_for
    return client.post("/api/v1/user/login", {"username": username, "password": password}, format="json", **extra)


def text(response) -> str:
    assert response["Content-Type"].startswith("text/plain"), response["Content-Type"]
    return response.content.decode()


# --- login: the pair blocks, the account is not locked ----------------------------------


def test_failures_for_an_account_block_that_address_not_the_account(anon: APIClient) -> None:
    make_user("bob")
    for _ in range(django_settings.LOGIN_MAX_FAILURES):
        assert login(anon, "bob", WRONG, "127.0.0.2").status_code == 401
    # The owner, elsewhere, logs in.
    assert login(anon, "bob", PASSWORD, "127.0.0.3").status_code == 200
    # From the guessing address even the right password is refused.
    blocked = login(anon, "bob", PASSWORD, "127.0.0.2")
    assert blocked.status_code == 429 and text(blocked) == BLOCKED_LOGIN


def test_the_pair_is_counted_whatever_the_username_case(anon: APIClient, settings) -> None:
    settings.LOGIN_MAX_FAILURES = 3
    make_user("bob")
    for name in ("bob", "BOB", "Bob"):
        login(anon, name, WRONG, "127.0.0.2")
    assert login(anon, "bOb", PASSWORD, "127.0.0.2").status_code == 429


def test_failures_on_made_up_names_do_not_block_a_user_elsewhere(anon: APIClient, settings) -> None:
    settings.LOGIN_MAX_FAILURES = 3
    settings.LOGIN_MAX_FAILURES_PER_ADDRESS = 8
    make_user("bob")
    for index in range(7):
        assert login(anon, f"ghost{index}", PASSWORD, "127.0.0.2").status_code == 401
    # Below the address's limit, a real user on the same address still logs in.
    assert login(anon, "bob", PASSWORD, "127.0.0.2").status_code == 200
    assert login(anon, "ghost7", PASSWORD, "127.0.0.2").status_code == 401
    # The address is at its limit: blocked for every account, and only it.
    blocked = login(anon, "bob", PASSWORD, "127.0.0.2")
    assert blocked.status_code == 429 and text(blocked) == BLOCKED_LOGIN
    assert login(anon, "bob", PASSWORD, "127.0.0.3").status_code == 200


def test_a_success_forgets_the_pair_but_not_the_address(anon: APIClient, settings) -> None:
    settings.LOGIN_MAX_FAILURES = 3
    settings.LOGIN_MAX_FAILURES_PER_ADDRESS = 5
    make_user("bob")
    make_user("mallory")
    for _ in range(2):
        login(anon, "bob", WRONG, "127.0.0.2")
    assert login(anon, "bob", PASSWORD, "127.0.0.2").status_code == 200
    for _ in range(2):
        login(anon, "bob", WRONG, "127.0.0.2")
    # The pair started again after the success: 2 of 3.
    assert login(anon, "bob", PASSWORD, "127.0.0.2").status_code == 200
    # The address has 4 of 5; logging into one's own account gives none back.
    assert login(anon, "mallory", PASSWORD, "127.0.0.2").status_code == 200
    login(anon, "ghost", WRONG, "127.0.0.2")
    assert login(anon, "mallory", PASSWORD, "127.0.0.2").status_code == 429


def test_a_block_holds_until_the_window_passes(anon: APIClient, settings) -> None:
    settings.LOGIN_FAILURE_WINDOW_SECONDS = 3
    make_user("bob")
    started = time.monotonic()
    login(anon, "bob", WRONG, "127.0.0.2")  # opens the window
    opened_by = time.monotonic()
    for _ in range(settings.LOGIN_MAX_FAILURES - 1):
        login(anon, "bob", WRONG, "127.0.0.2")
    # Retrying while blocked is refused and does not prolong the block.
    for _ in range(3):
        assert login(anon, "bob", PASSWORD, "127.0.0.2").status_code == 429
    assert time.monotonic() - started < 3, "too slow to see the block inside its window"
    time.sleep(max(0.0, opened_by + 3.1 - time.monotonic()))
    assert login(anon, "bob", PASSWORD, "127.0.0.2").status_code == 200


def test_attempts_still_running_count(user: User) -> None:
    """Concurrent guesses cannot all pass the check before the first of them fails."""
    for _ in range(django_settings.LOGIN_MAX_FAILURES):
        services.password_attempt_begin(user=user, username="", address="127.0.0.2", blocked_message="blocked")
    with pytest.raises(ApplicationError) as error:
        services.password_attempt_begin(user=user, username="", address="127.0.0.2", blocked_message="blocked")
    assert (error.value.message, error.value.status) == ("blocked", 429)


def test_ipv6_clients_are_counted_by_their_64_network(anon: APIClient, settings) -> None:
    settings.LOGIN_MAX_FAILURES = 2
    make_user("bob")
    login(anon, "bob", WRONG, "2001:db8:1:2::10")
    login(anon, "bob", WRONG, "2001:db8:1:2::11")
    assert login(anon, "bob", PASSWORD, "2001:db8:1:2:ffff::1").status_code == 429
    assert login(anon, "bob", PASSWORD, "2001:db8:1:3::10").status_code == 200


# --- behind a reverse proxy ---------------------------------------------------------------


def test_behind_a_proxy_clients_are_told_apart_and_cannot_spoof(anon: APIClient, settings) -> None:
    settings.TRUSTED_PROXY_COUNT = 1
    make_user("bob")
    proxy = "10.0.0.1"
    # The guesser writes a different address of its own in front each time: ignored.
    for index in range(settings.LOGIN_MAX_FAILURES):
        assert login(anon, "bob", WRONG, proxy, f"192.0.2.{index}, 198.51.100.9").status_code == 401
    assert login(anon, "bob", PASSWORD, proxy, "192.0.2.77, 198.51.100.9").status_code == 429
    # Everyone else reaches the service through the same proxy and is not blocked.
    assert login(anon, "bob", PASSWORD, proxy, "203.0.113.5").status_code == 200


def test_without_trusted_proxies_x_forwarded_for_cannot_escape_a_block(anon: APIClient, settings) -> None:
    settings.TRUSTED_PROXY_COUNT = 0
    make_user("bob")
    for _ in range(settings.LOGIN_MAX_FAILURES):
        login(anon, "bob", WRONG, "198.51.100.9")
    assert login(anon, "bob", PASSWORD, "198.51.100.9", "203.0.113.5").status_code == 429


# --- PATCH and DELETE /user/me: the password confirmations --------------------------------


def patch_password(client: APIClient, old_password: str, address: str = "127.0.0.2"):
    body = {"password": NEW_PASSWORD, "old_password": old_password}
    return client.patch("/api/v1/user/me", body, format="multipart", REMOTE_ADDR=address)


def test_wrong_old_passwords_are_limited(client_session: APIClient, user: User) -> None:
    for _ in range(django_settings.LOGIN_MAX_FAILURES):
        wrong = patch_password(client_session, WRONG)
        assert wrong.status_code == 401 and text(wrong) == "Incorrect old password"
    blocked = patch_password(client_session, PASSWORD)
    assert blocked.status_code == 429 and text(blocked) == BLOCKED_PASSWORD
    user.refresh_from_db()
    assert user.check_password(PASSWORD)
    # The same guard as logins: that pair is blocked there too; another address is not.
    assert login(APIClient(), user.username, PASSWORD, "127.0.0.2").status_code == 429
    assert patch_password(client_session, PASSWORD, address="127.0.0.3").status_code == 200


def test_wrong_delete_passwords_are_limited(client_key: APIClient, user: User) -> None:
    for _ in range(django_settings.LOGIN_MAX_FAILURES):
        wrong = client_key.delete("/api/v1/user/me", {"password": WRONG}, format="json", REMOTE_ADDR="127.0.0.2")
        assert wrong.status_code == 401 and text(wrong) == "Incorrect password"
    blocked = client_key.delete("/api/v1/user/me", {"password": PASSWORD}, format="json", REMOTE_ADDR="127.0.0.2")
    assert blocked.status_code == 429 and text(blocked) == BLOCKED_PASSWORD
    assert User.objects.filter(pk=user.pk).exists()


def test_a_renamed_account_keeps_its_count(client_session: APIClient, user: User, settings) -> None:
    settings.LOGIN_MAX_FAILURES = 2
    for _ in range(2):
        patch_password(client_session, WRONG)
    renamed = client_session.patch("/api/v1/user/me", {"username": "alice_2"}, format="json", REMOTE_ADDR="127.0.0.2")
    assert renamed.status_code == 200
    assert patch_password(client_session, PASSWORD).status_code == 429


# --- registrations ----------------------------------------------------------------------


def register(client: APIClient, username: str, address: str):
    body = {"username": username, "password": PASSWORD}
    return client.post("/api/v1/user/register", body, format="json", REMOTE_ADDR=address)


def test_registrations_are_limited_per_address(anon: APIClient, settings) -> None:
    settings.REGISTRATIONS_PER_ADDRESS_PER_HOUR = 3
    assert register(anon, "user0", "127.0.0.2").status_code == 200
    # A refused registration does not use the allowance.
    assert register(anon, "User0", "127.0.0.2").status_code == 409
    assert register(anon, "user1", "127.0.0.2").status_code == 200
    assert register(anon, "user2", "127.0.0.2").status_code == 200
    blocked = register(anon, "user3", "127.0.0.2")
    assert blocked.status_code == 429 and text(blocked) == BLOCKED_REGISTRATION
    assert not User.objects.filter(username="user3").exists()
    assert User.objects.count() == 3
    assert register(anon, "user3", "127.0.0.3").status_code == 200


def test_registrations_allowed_again_after_the_hour(anon: APIClient, settings, monkeypatch) -> None:
    settings.REGISTRATIONS_PER_ADDRESS_PER_HOUR = 1
    monkeypatch.setattr(throttles, "REGISTRATION_WINDOW_SECONDS", 3)
    started = time.monotonic()
    assert register(anon, "first", "127.0.0.2").status_code == 200  # opens the window
    opened_by = time.monotonic()
    assert register(anon, "second", "127.0.0.2").status_code == 429
    assert time.monotonic() - started < 3, "too slow to see the limit inside its window"
    time.sleep(max(0.0, opened_by + 3.1 - time.monotonic()))
    assert register(anon, "second", "127.0.0.2").status_code == 200


# --- settings and the schema ---------------------------------------------------------------


def test_defaults() -> None:
    assert django_settings.LOGIN_MAX_FAILURES == 5
    assert django_settings.LOGIN_MAX_FAILURES_PER_ADDRESS == 50
    assert django_settings.LOGIN_FAILURE_WINDOW_SECONDS == 900
    assert django_settings.REGISTRATIONS_PER_ADDRESS_PER_HOUR == 20
    assert django_settings.TRUSTED_PROXY_COUNT == 0


def test_an_address_limit_below_the_pair_limit_is_refused() -> None:
    environment = {**os.environ, "LOGIN_MAX_FAILURES": "10", "LOGIN_MAX_FAILURES_PER_ADDRESS": "5"}
    completed = subprocess.run(
        [sys.executable, "-c", "import whisper_site.settings"],
        cwd=Path(__file__).resolve().parents[2],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode != 0
    assert "LOGIN_MAX_FAILURES_PER_ADDRESS must be at least LOGIN_MAX_FAILURES" in completed.stderr


def test_the_schema_documents_the_429s(anon: APIClient) -> None:
    document = anon.get("/api/v1/schema?format=json").json()

    def messages(path: str, method: str) -> set[str]:
        examples = document["paths"][path][method]["responses"]["429"]["content"]["text/plain"]["examples"]
        return {example["value"] for example in examples.values()}

    assert messages("/api/v1/user/login", "post") == {BLOCKED_LOGIN}
    assert messages("/api/v1/user/register", "post") == {BLOCKED_REGISTRATION}
    assert messages("/api/v1/user/me", "patch") == {BLOCKED_PASSWORD}
    assert messages("/api/v1/user/me", "delete") == {BLOCKED_PASSWORD}
