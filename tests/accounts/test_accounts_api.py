"""The account surface of the API: register, login, logout, me, tokens, sessions, health."""

from __future__ import annotations

import datetime as dt
import re
from unittest import mock

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import ApiKey, User, UserSession
from tests.conftest import PASSWORD, make_user

pytestmark = pytest.mark.django_db
HEX32 = re.compile(r"^[0-9a-f]{32}$")
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")


def text(response) -> str:
    assert response["Content-Type"].startswith("text/plain"), response["Content-Type"]
    return response.content.decode()


# --- register -------------------------------------------------------------


def test_register_returns_ids_and_opens_a_session(anon: APIClient) -> None:
    response = anon.post("/api/v1/user/register", {"username": "john_doe", "password": PASSWORD}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert body["message"] == "User registered and logged in successfully"
    assert body["username"] == "john_doe"
    assert HEX32.match(body["uuid"]) and HEX32.match(body["session_id"])
    user = User.objects.get(username="john_doe")
    assert user.token_balance == 1000 and user.price_multiplier == 1
    assert user.password.startswith("argon2$argon2id$")
    me = anon.get("/api/v1/user/me", HTTP_AUTHORIZATION=f"Basic {body['session_id']}")
    assert me.status_code == 200 and me.json()["username"] == "john_doe"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"password": PASSWORD}, "Missing username"),
        (
            {"username": "ab", "password": PASSWORD},
            "Invalid username. Must be 3-20 characters and contain only alphanumeric characters, underscores, or hyphens",
        ),
        ({"username": "a" * 21, "password": PASSWORD}, "Invalid username. Must be 3-20 characters"),
        ({"username": "bad name", "password": PASSWORD}, "Invalid username."),
        ({"username": "bad/name", "password": PASSWORD}, "Invalid username."),
        ({"username": ["x"], "password": PASSWORD}, "Invalid username"),
        ({"username": "john_doe"}, "Missing password"),
        ({"username": "john_doe", "password": "Sh0rt!"}, "Password must be at least 12 characters long"),
        ({"username": "john_doe", "password": "Aa1!" * 33}, "Password must be at most 128 characters long"),
        (
            {"username": "john_doe", "password": "securep@ssw0rd"},
            "Password must contain at least 1 uppercase letter(s)",
        ),
        (
            {"username": "john_doe", "password": "SECUREP@SSW0RD"},
            "Password must contain at least 1 lowercase letter(s)",
        ),
        ({"username": "john_doe", "password": "SecureP@ssword"}, "Password must contain at least 1 digit(s)"),
        (
            {"username": "john_doe", "password": "SecurePassw0rd"},
            "Password must contain at least 1 special character(s)",
        ),
        ({"username": "john_doe", "password": 123456789012}, "Password must contain at least 1 uppercase letter(s)"),
        ({"username": "john_doe", "password": {"a": 1}}, "Invalid password"),
    ],
)
def test_register_validation(anon: APIClient, body: dict, message: str) -> None:
    response = anon.post("/api/v1/user/register", body, format="json")
    assert response.status_code == 400
    assert text(response).startswith(message)
    assert not User.objects.exists()


def test_register_duplicate_username_is_409_case_insensitive(anon: APIClient) -> None:
    make_user("john_doe")
    response = anon.post("/api/v1/user/register", {"username": "JOHN_doe", "password": PASSWORD}, format="json")
    assert response.status_code == 409
    assert text(response) == "Username already exists"


@pytest.mark.parametrize(
    ("raw", "content_type", "status"),
    [
        (b"{not json", "application/json", 400),
        (b"[1, 2]", "application/json", 400),
        (b'"a string"', "application/json", 400),
        (b"\xff\xfe\x00garbage", "application/json", 400),
        (b"username=x", "text/csv", 415),
    ],
)
def test_register_malformed_bodies_are_plain_4xx(anon: APIClient, raw: bytes, content_type: str, status: int) -> None:
    response = anon.generic("POST", "/api/v1/user/register", raw, content_type=content_type)
    assert response.status_code == status
    assert "\n" not in text(response)


def test_huge_body_is_413(anon: APIClient) -> None:
    raw = b'{"username": "' + b"a" * (2 * 1024 * 1024) + b'"}'
    response = anon.generic("POST", "/api/v1/user/register", raw, content_type="application/json")
    assert response.status_code == 413
    assert text(response) == "Request body too large"


# --- login -----------------------------------------------------------------


def test_login_returns_session_and_is_admin(anon: APIClient) -> None:
    make_user("john_doe")
    response = anon.post(
        "/api/v1/user/login", {"username": "john_doe", "password": PASSWORD}, format="json", HTTP_USER_AGENT="curl/8.0"
    )
    assert response.status_code == 200
    body = response.json()
    assert body["message"] == "Login successful" and body["is_admin"] is False and body["username"] == "john_doe"
    session = UserSession.objects.get(id=body["session_id"])
    assert session.user_agent == "curl/8.0"


def test_login_errors(anon: APIClient) -> None:
    make_user("john_doe")
    assert text(anon.post("/api/v1/user/login", {"password": "x"}, format="json")) == "Missing username"
    assert text(anon.post("/api/v1/user/login", {"username": "john_doe"}, format="json")) == "Missing password"
    wrong = anon.post("/api/v1/user/login", {"username": "john_doe", "password": "Wrong#Passw0rd"}, format="json")
    assert wrong.status_code == 401 and text(wrong) == "Authentication failed"
    nobody = anon.post("/api/v1/user/login", {"username": "nobody", "password": PASSWORD}, format="json")
    assert nobody.status_code == 401 and text(nobody) == "Authentication failed"


# Login throttling, and the other limits on guessing and registering: test_throttling.py.


def test_superuser_from_createsuperuser_is_admin(anon: APIClient) -> None:
    User.objects.create_superuser("operator", PASSWORD)
    response = anon.post("/api/v1/user/login", {"username": "operator", "password": PASSWORD}, format="json")
    assert response.json()["is_admin"] is True


# --- authentication ----------------------------------------------------------


def test_missing_or_bad_authorization_is_401(anon: APIClient, api_key: str, session: UserSession) -> None:
    response = anon.get("/api/v1/user/me")
    assert response.status_code == 401
    assert text(response) == "Missing valid Authorization header with session or API key"
    assert response["WWW-Authenticate"]
    for header in (
        "Bearer nothex",
        "Bearer " + "0" * 32,
        "Basic " + "0" * 32,
        "Basic",
        "Bearer a b",
        "Basic dXNlcjpwYXNz",
    ):
        response = anon.get("/api/v1/user/me", HTTP_AUTHORIZATION=header)
        assert response.status_code == 401, header
        assert "\n" not in text(response)
    assert anon.get("/api/v1/user/me", HTTP_AUTHORIZATION=f"Bearer {api_key}").status_code == 200
    assert anon.get("/api/v1/user/me", HTTP_AUTHORIZATION=f"Bearer {api_key.upper()}").status_code == 200
    assert anon.get("/api/v1/user/me", HTTP_AUTHORIZATION=f"Basic {session.id.hex}").status_code == 200
    # A session id is not an API key and an API key is not a session id.
    assert anon.get("/api/v1/user/me", HTTP_AUTHORIZATION=f"Bearer {session.id.hex}").status_code == 401
    assert anon.get("/api/v1/user/me", HTTP_AUTHORIZATION=f"Basic {api_key}").status_code == 401


def test_sessions_expire_24_hours_after_creation(client_session: APIClient, session: UserSession) -> None:
    assert client_session.get("/api/v1/user/me").status_code == 200
    later = timezone.now() + dt.timedelta(hours=24, seconds=1)
    with mock.patch("django.utils.timezone.now", return_value=later):
        response = client_session.get("/api/v1/user/me")
    assert response.status_code == 401
    assert text(response) == "Invalid or expired session"
    almost = timezone.now() + dt.timedelta(hours=23, minutes=59)
    with mock.patch("django.utils.timezone.now", return_value=almost):
        assert client_session.get("/api/v1/user/me").status_code == 200


# --- me ----------------------------------------------------------------------


def test_me_profile(client_key: APIClient, user: User) -> None:
    body = client_key.get("/api/v1/user/me").json()
    assert body == {
        "uuid": user.id.hex,
        "username": "alice",
        "is_admin": False,
        "registered_at": user.registered_at.strftime("%Y-%m-%d %H:%M:%S"),
        "token_balance": 1000,
        "avatar_uuid": None,
    }
    assert TIMESTAMP.match(body["registered_at"])


def test_me_trailing_slash_works_too(client_key: APIClient) -> None:
    assert client_key.get("/api/v1/user/me/").status_code == 200


@pytest.mark.parametrize("slash", ["", "/"])
def test_every_account_route_takes_an_optional_trailing_slash(anon: APIClient, slash: str) -> None:
    assert anon.get(f"/api/v1/health{slash}").status_code == 200
    registered = anon.post(f"/api/v1/user/register{slash}", {"username": "dora", "password": PASSWORD}, format="json")
    assert registered.status_code == 200, registered.content
    login = anon.post(f"/api/v1/user/login{slash}", {"username": "dora", "password": PASSWORD}, format="json")
    assert login.status_code == 200
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Basic {login.json()['session_id']}")
    assert client.get(f"/api/v1/user/me{slash}").status_code == 200
    assert client.patch(f"/api/v1/user/me{slash}", {"username": "dora2"}, format="json").status_code == 200
    assert client.get(f"/api/v1/user/sessions{slash}").status_code == 200
    assert client.get(f"/api/v1/user/token{slash}").status_code == 200
    token_id = client.post(f"/api/v1/user/token{slash}", {"name": "k"}, format="json").json()["token_id"]
    assert client.delete(f"/api/v1/user/token/{token_id}{slash}").status_code == 200
    assert client.post(f"/api/v1/user/logout{slash}").status_code == 200
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Basic {registered.json()['session_id']}")
    assert other.delete(f"/api/v1/user/me{slash}", {"password": PASSWORD}, format="json").status_code == 200
    # Only one slash: a doubled one is an unknown path.
    assert anon.get("/api/v1/health//").status_code == 404


def test_routes_have_names() -> None:
    assert reverse("health") == "/api/v1/health"
    assert reverse("user-register") == "/api/v1/user/register"
    assert reverse("user-login") == "/api/v1/user/login"
    assert reverse("user-logout") == "/api/v1/user/logout"
    assert reverse("user-me") == "/api/v1/user/me"
    assert reverse("user-sessions") == "/api/v1/user/sessions"
    assert reverse("user-token-list") == "/api/v1/user/token"
    assert reverse("user-token-detail", kwargs={"token_id": "0" * 32}) == f"/api/v1/user/token/{'0' * 32}"


def test_patch_me_username_and_password(client_session: APIClient, user: User, session: UserSession) -> None:
    _, other_session = make_user("carol")
    second = UserSession.objects.create(user=user, user_agent="other device")
    response = client_session.patch(
        "/api/v1/user/me",
        {"username": "alice2", "password": "NewP@ssw0rd12345", "old_password": PASSWORD},
        format="multipart",
    )
    assert response.status_code == 200, response.content
    assert response.json() == {"message": "Profile updated successfully", "updated_fields": ["username", "password"]}
    user.refresh_from_db()
    assert user.username == "alice2" and user.check_password("NewP@ssw0rd12345")
    # The password change ends the user's other sessions, not this one nor anyone else's.
    second.refresh_from_db()
    other_session.refresh_from_db()
    assert second.ended_at is not None and other_session.ended_at is None
    assert client_session.get("/api/v1/user/me").status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({}, 400, "No fields to update"),
        ({"password": "NewP@ssw0rd12345"}, 400, "old_password is required to update password"),
        ({"password": "NewP@ssw0rd12345", "old_password": "Wrong#Passw0rd1"}, 401, "Incorrect old password"),
        ({"password": "short", "old_password": PASSWORD}, 400, "Password must be at least 12 characters long"),
        ({"username": "x"}, 400, "Invalid username."),
        ({"username": "Carol"}, 409, "Username already taken"),
    ],
)
def test_patch_me_errors(client_session: APIClient, user: User, body: dict, status: int, message: str) -> None:
    make_user("carol")
    response = client_session.patch("/api/v1/user/me", body, format="json")
    assert response.status_code == status
    assert text(response).startswith(message)
    user.refresh_from_db()
    assert user.username == "alice" and user.check_password(PASSWORD)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"username": 12345}, "Invalid username"),
        ({"username": True}, "Invalid username"),
        ({"password": ["NewP@ssw0rd12345"], "old_password": PASSWORD}, "Invalid password"),
        ({"password": "NewP@ssw0rd12345", "old_password": 1}, "Invalid old_password"),
        # The first field in the order username, password, old_password, avatar.
        ({"avatar": 5, "old_password": 1, "username": 1}, "Invalid username"),
        ({"avatar": "not a file"}, "avatar must be an image file upload"),
        ({"avatar": {"name": "x.png"}}, "avatar must be an image file upload"),
        # null and an empty avatar are "not given".
        ({"username": None, "password": None, "avatar": None}, "No fields to update"),
        ({"avatar": ""}, "No fields to update"),
        ({"password": "", "old_password": ""}, "old_password is required to update password"),
        ({"username": ""}, "Invalid username. Must be 3-20 characters"),
    ],
)
def test_patch_me_rejects_what_is_not_a_string_or_a_file(
    client_session: APIClient, user: User, body: dict, message: str
) -> None:
    response = client_session.patch("/api/v1/user/me", body, format="json")
    assert response.status_code == 400
    assert text(response).startswith(message)
    user.refresh_from_db()
    assert user.username == "alice" and user.check_password(PASSWORD)


def test_patch_me_multipart_fields(client_session: APIClient, user: User) -> None:
    response = client_session.patch("/api/v1/user/me", {"username": "alice_2", "avatar": ""}, format="multipart")
    assert response.status_code == 200
    assert response.json()["updated_fields"] == ["username"]
    user.refresh_from_db()
    assert user.username == "alice_2"


def test_patch_me_password_change_with_an_api_key_ends_every_session(
    client_key: APIClient, user: User, session: UserSession
) -> None:
    response = client_key.patch(
        "/api/v1/user/me", {"password": "NewP@ssw0rd12345", "old_password": PASSWORD}, format="json"
    )
    assert response.status_code == 200
    session.refresh_from_db()
    assert session.ended_at is not None
    # The API key is no session: it keeps working.
    assert client_key.get("/api/v1/user/me").status_code == 200


def test_delete_me(client_key: APIClient, user: User) -> None:
    missing = client_key.delete("/api/v1/user/me", {}, format="json")
    assert missing.status_code == 400 and text(missing) == "Password is required to delete account"
    wrong = client_key.delete("/api/v1/user/me", {"password": "Wrong#Passw0rd1"}, format="json")
    assert wrong.status_code == 401 and text(wrong) == "Incorrect password"
    assert User.objects.filter(pk=user.pk).exists()
    ok = client_key.delete("/api/v1/user/me", {"password": PASSWORD}, format="json")
    assert ok.status_code == 200 and ok.json() == {"message": "Account deleted successfully"}
    assert not User.objects.filter(pk=user.pk).exists()
    assert not UserSession.objects.exists() and not ApiKey.objects.exists()
    assert client_key.get("/api/v1/user/me").status_code == 401


# --- logout --------------------------------------------------------------------


def test_logout_current_session(client_session: APIClient, session: UserSession) -> None:
    response = client_session.post("/api/v1/user/logout")
    assert response.status_code == 200 and response.json() == {"message": "Logged out successfully"}
    session.refresh_from_db()
    assert session.ended_at is not None
    assert client_session.get("/api/v1/user/me").status_code == 401


def test_logout_other_session_of_same_user(client_session: APIClient, user: User, session: UserSession) -> None:
    second = UserSession.objects.create(user=user)
    response = client_session.post("/api/v1/user/logout", {"session_id": second.id.hex}, format="json")
    assert response.status_code == 200
    second.refresh_from_db()
    session.refresh_from_db()
    assert second.ended_at is not None and session.ended_at is None
    again = client_session.post("/api/v1/user/logout", {"session_id": second.id.hex}, format="json")
    assert again.status_code == 404 and text(again) == "Session not found or already ended"


def test_logout_errors(client_session: APIClient, client_key: APIClient) -> None:
    with_key = client_key.post("/api/v1/user/logout")
    assert with_key.status_code == 400 and text(with_key) == "Cannot logout with API key. Use session authentication"
    _, bobs = make_user("bob")
    foreign = client_session.post("/api/v1/user/logout", {"session_id": bobs.id.hex}, format="json")
    assert foreign.status_code == 403 and text(foreign) == "Cannot logout from another user's session"
    bobs.refresh_from_db()
    assert bobs.ended_at is None
    unknown = client_session.post("/api/v1/user/logout", {"session_id": "0" * 32}, format="json")
    assert unknown.status_code == 404
    bad = client_session.post("/api/v1/user/logout", {"session_id": "xyz"}, format="json")
    assert bad.status_code == 400 and text(bad) == "Invalid session ID format"
    for value in ("", 42, ["0" * 32], "0" * 31):
        bad = client_session.post("/api/v1/user/logout", {"session_id": value}, format="json")
        assert bad.status_code == 400 and text(bad) == "Invalid session ID format", value
    # The credential is checked before the body.
    with_key = client_key.post("/api/v1/user/logout", {"session_id": "xyz"}, format="json")
    assert with_key.status_code == 400 and text(with_key) == "Cannot logout with API key. Use session authentication"


def test_logout_takes_a_hyphenated_session_id(client_session: APIClient, user: User) -> None:
    second = UserSession.objects.create(user=user)
    response = client_session.post("/api/v1/user/logout", {"session_id": str(second.id)}, format="json")
    assert response.status_code == 200
    second.refresh_from_db()
    assert second.ended_at is not None


# --- sessions ------------------------------------------------------------------


def test_sessions_lists_only_active_own_sessions(client_session: APIClient, user: User, session: UserSession) -> None:
    make_user("bob")
    ended = UserSession.objects.create(user=user, ended_at=timezone.now())
    old = UserSession.objects.create(user=user, created_at=timezone.now() - dt.timedelta(hours=25))
    response = client_session.get("/api/v1/user/sessions")
    assert response.status_code == 200
    rows = response.json()["sessions"]
    assert [row["session_id"] for row in rows] == [session.id.hex]
    assert rows[0]["user_agent"] == "pytest" and TIMESTAMP.match(rows[0]["started_at"])
    assert ended.id.hex not in str(rows) and old.id.hex not in str(rows)


# --- API tokens ----------------------------------------------------------------


def test_token_issue_list_use_revoke(client_session: APIClient, anon: APIClient) -> None:
    issued = client_session.post("/api/v1/user/token", {"name": "Production API Key"}, format="json")
    assert issued.status_code == 200
    body = issued.json()
    assert body["message"] == "Token issued successfully" and body["name"] == "Production API Key"
    assert body["note"] == "Save this token securely. You won't be able to see it again."
    raw = body["token"]
    assert HEX32.match(raw) and HEX32.match(body["token_id"])
    stored = ApiKey.objects.get(id=body["token_id"])
    assert raw not in (stored.key_digest, stored.prefix + stored.suffix)

    listing = client_session.get("/api/v1/user/token").json()["tokens"]
    assert listing == [
        {
            "token_id": body["token_id"],
            "token": f"{raw[:4]}...{raw[-4:]}",
            "name": "Production API Key",
            "created_at": listing[0]["created_at"],
        }
    ]
    assert anon.get("/api/v1/user/me", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200

    revoked = client_session.delete(f"/api/v1/user/token/{body['token_id']}")
    assert revoked.status_code == 200
    assert revoked.json() == {
        "message": "Token revoked successfully",
        "token_id": body["token_id"],
        "token_name": "Production API Key",
    }
    assert anon.get("/api/v1/user/me", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 401


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "Missing 'name' field in request body"),
        ({"name": None}, "Missing 'name' field in request body"),
        ({"name": ""}, "Token name must be between 1 and 255 characters"),
        ({"name": "x" * 256}, "Token name must be between 1 and 255 characters"),
        ({"name": 42}, "Token name must be between 1 and 255 characters"),
        ({"name": ["a"]}, "Token name must be between 1 and 255 characters"),
    ],
)
def test_token_create_validation(client_session: APIClient, body: dict, message: str) -> None:
    response = client_session.post("/api/v1/user/token", body, format="json")
    assert response.status_code == 400
    assert text(response) == message
    assert not ApiKey.objects.exists()


def test_token_cap(client_session: APIClient, settings) -> None:
    settings.MAX_API_KEYS_PER_USER = 2
    for index in range(2):
        assert client_session.post("/api/v1/user/token", {"name": f"k{index}"}, format="json").status_code == 200
    response = client_session.post("/api/v1/user/token", {"name": "k3"}, format="json")
    assert response.status_code == 400 and text(response) == "Maximum number of API tokens reached (2)"


def test_token_revoke_errors_and_isolation(client_session: APIClient, other_client: APIClient) -> None:
    token_id = client_session.post("/api/v1/user/token", {"name": "mine"}, format="json").json()["token_id"]
    bad = client_session.delete("/api/v1/user/token/not-a-uuid")
    assert bad.status_code == 400 and text(bad) == "Invalid token ID format"
    foreign = other_client.delete(f"/api/v1/user/token/{token_id}")
    assert foreign.status_code == 404 and text(foreign) == "Token not found or access denied"
    assert other_client.get("/api/v1/user/token").json() == {"tokens": []}
    hyphenated = "-".join([token_id[:8], token_id[8:12], token_id[12:16], token_id[16:20], token_id[20:]])
    revoked = client_session.delete(f"/api/v1/user/token/{hyphenated}")
    assert revoked.status_code == 200
    assert revoked.json() == {"message": "Token revoked successfully", "token_id": token_id, "token_name": "mine"}
    # Any text up to the next slash is an id to parse, dots included.
    dotted = client_session.delete("/api/v1/user/token/a.b")
    assert dotted.status_code == 400 and text(dotted) == "Invalid token ID format"


# --- health and plain-text errors ---------------------------------------------------


def test_health(anon: APIClient) -> None:
    response = anon.get("/api/v1/health")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_health_is_503_when_database_is_down(anon: APIClient) -> None:
    # A fault we cannot cause for the test database without breaking the test run.
    with mock.patch.object(connection, "cursor", side_effect=Exception("connection refused")):
        response = anon.get("/api/v1/health")
    assert response.status_code == 503 and text(response) == "Database unavailable"


def test_unknown_path_and_wrong_method_are_plain_text(anon: APIClient, client_key: APIClient) -> None:
    response = anon.get("/api/v1/nothing/here")
    assert response.status_code == 404 and text(response) == "Not found"
    response = client_key.put("/api/v1/user/me", {}, format="json")
    assert response.status_code == 405 and text(response) == "Method not allowed"
    response = anon.get("/api/v1/user/register")
    assert response.status_code == 405 and text(response) == "Method not allowed"


def test_unhandled_error_is_plain_500(client_key: APIClient) -> None:
    client_key.raise_request_exception = False
    with mock.patch("accounts.apis.UserOutputSerializer.to_representation", side_effect=RuntimeError("boom")):
        response = client_key.get("/api/v1/user/me")
    assert response.status_code == 500
    assert text(response) == "Internal server error"
