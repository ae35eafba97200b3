"""The admin surface of the API: GET /admin/users and PATCH /admin/users/:uuid."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from accounts import services as account_services
from accounts.models import ApiKey, User, UserSession
from files.models import File
from tests.conftest import make_user
from transcriptions.models import Transcription

pytestmark = pytest.mark.django_db
ADMIN_REQUIRED = "Access denied. Admin privileges required"
_digests = itertools.count()


def text(response) -> str:
    assert response["Content-Type"].startswith("text/plain"), response["Content-Type"]
    return response.content.decode()


def add_file(owner: User, *, size: int, kind: str = "audio", age_days: float = 0) -> File:
    return File.objects.create(
        owner=owner,
        filename=f"f{next(_digests)}.mp3",
        kind=kind,
        content_type="audio/mpeg",
        blake3=f"{next(_digests):064x}",
        size_bytes=size,
        duration=12.5,
        state=File.State.READY,
        uploaded_at=timezone.now() - dt.timedelta(days=age_days),
    )


def add_job(owner: User, file: File, *, status: str, seconds: int, age_days: float = 0) -> Transcription:
    return Transcription.objects.create(
        owner=owner,
        file=file,
        model="ggml-tiny.en",
        format="verbose_json",
        status=status,
        audio_seconds=seconds,
        created_at=timezone.now() - dt.timedelta(days=age_days),
    )


def by_name(response) -> dict[str, dict]:
    assert response.status_code == 200, response.content
    return {row["username"]: row for row in response.json()["users"]}


# --- access ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/v1/admin/users"),
        ("patch", "/api/v1/admin/users/018c5f9a7b2e7a8c9d0e1f2a3b4c5d6e"),
        # Permission is checked before the method or the id: a non-admin learns nothing.
        ("get", "/api/v1/admin/users/not-a-uuid"),
        ("delete", "/api/v1/admin/users"),
    ],
)
def test_non_admins_get_403(client_session: APIClient, client_key: APIClient, method: str, path: str) -> None:
    for client in (client_session, client_key):
        response = getattr(client, method)(path, {"token_balance": 5}, format="json")
        assert response.status_code == 403
        assert text(response) == ADMIN_REQUIRED


def test_unauthenticated_gets_401(anon: APIClient) -> None:
    response = anon.get("/api/v1/admin/users")
    assert response.status_code == 401
    assert text(response) == "Missing valid Authorization header with session or API key"
    response = anon.patch("/api/v1/admin/users/018c5f9a7b2e7a8c9d0e1f2a3b4c5d6e", {}, format="json")
    assert response.status_code == 401


def test_admin_with_api_key_and_trailing_slash(admin_client: APIClient) -> None:
    admin = User.objects.get(username="root_admin")
    _, raw = account_services.api_key_create(user=admin, name="Admin API Key")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert client.get("/api/v1/admin/users/").status_code == 200
    assert client.get("/api/v1/admin/users?page=1&limit=20").status_code == 200


# --- GET /admin/users ----------------------------------------------------------


def test_list_has_every_field_of_the_reference(admin_client: APIClient, user: User) -> None:
    User.objects.filter(pk=user.pk).update(price_multiplier=Decimal("0.8"), token_balance=500)
    body = admin_client.get("/api/v1/admin/users").json()
    assert set(body) == {"users", "pagination"}
    row = next(row for row in body["users"] if row["username"] == "alice")
    assert set(row) == {
        "uuid",
        "username",
        "is_admin",
        "registered_at",
        "token_balance",
        "price_multiplier",
        "avatar_uuid",
        "stats",
    }
    assert row["uuid"] == user.id.hex
    assert row["is_admin"] is False
    assert row["token_balance"] == 500
    assert row["price_multiplier"] == 0.8 and isinstance(row["price_multiplier"], float)
    assert row["avatar_uuid"] is None
    assert row["registered_at"] == user.registered_at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    assert set(row["stats"]) == {"last_30_days", "total_storage_bytes", "active_sessions", "api_keys_count"}
    assert set(row["stats"]["last_30_days"]) == {"transcriptions_count", "total_audio_seconds", "files_uploaded"}
    admin_row = next(row for row in body["users"] if row["username"] == "root_admin")
    assert admin_row["is_admin"] is True and admin_row["price_multiplier"] == 1.0
    assert body["pagination"] == {"page": 1, "limit": 10, "total_count": 2, "total_pages": 1}


def test_stats_are_counted_as_documented(admin_client: APIClient, user: User) -> None:
    # Media: two recent uploads, one older than 30 days, one avatar.
    recent_a = add_file(user, size=100)
    add_file(user, size=200, kind="video", age_days=29)
    old = add_file(user, size=1000, age_days=40)
    avatar = add_file(user, size=50, kind="image")
    User.objects.filter(pk=user.pk).update(avatar=avatar)
    # Jobs: two completed recently count; failed, pending and old ones do not.
    add_job(user, recent_a, status="completed", seconds=60)
    add_job(user, recent_a, status="completed", seconds=30, age_days=29.9)
    add_job(user, recent_a, status="failed", seconds=99)
    add_job(user, recent_a, status="pending", seconds=0)
    add_job(user, old, status="completed", seconds=500, age_days=31)
    # Sessions: registration's one and another are active; ended and expired are not.
    UserSession.objects.create(user=user, user_agent="second")
    UserSession.objects.create(user=user, user_agent="ended", ended_at=timezone.now())
    UserSession.objects.create(user=user, created_at=timezone.now() - dt.timedelta(hours=25))
    for index in range(3):
        account_services.api_key_create(user=user, name=f"key {index}")
    # Another user's rows never leak into alice's figures (no join multiplication).
    bob, _ = make_user("bob")
    bob_file = add_file(bob, size=7)
    add_job(bob, bob_file, status="completed", seconds=5)

    rows = by_name(admin_client.get("/api/v1/admin/users"))
    assert rows["alice"]["avatar_uuid"] == avatar.id.hex
    assert rows["alice"]["stats"] == {
        "last_30_days": {"transcriptions_count": 2, "total_audio_seconds": 90, "files_uploaded": 2},
        "total_storage_bytes": 1350,
        "active_sessions": 2,
        "api_keys_count": 3,
    }
    assert rows["bob"]["stats"] == {
        "last_30_days": {"transcriptions_count": 1, "total_audio_seconds": 5, "files_uploaded": 1},
        "total_storage_bytes": 7,
        "active_sessions": 1,
        "api_keys_count": 0,
    }
    assert all(isinstance(v, int) for v in rows["alice"]["stats"]["last_30_days"].values())


def test_list_is_newest_first_and_paginated(admin_client: APIClient) -> None:
    now = timezone.now()
    User.objects.bulk_create(
        User(username=f"user{index:02d}", password="!", registered_at=now + dt.timedelta(minutes=index))
        for index in range(12)
    )
    first = admin_client.get("/api/v1/admin/users?page=1&limit=5").json()
    assert [row["username"] for row in first["users"]] == ["user11", "user10", "user09", "user08", "user07"]
    assert first["pagination"] == {"page": 1, "limit": 5, "total_count": 13, "total_pages": 3}
    last = admin_client.get("/api/v1/admin/users?page=3&limit=5").json()
    assert [row["username"] for row in last["users"]] == ["user01", "user00", "root_admin"]
    beyond = admin_client.get("/api/v1/admin/users?page=9&limit=5").json()
    assert beyond["users"] == [] and beyond["pagination"]["total_count"] == 13


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("page=0", "Invalid page. Must be a positive integer"),
        ("page=x", "Invalid page. Must be a positive integer"),
        ("page=", "Invalid page. Must be a positive integer"),
        ("page=%2B1", "Invalid page. Must be a positive integer"),
        ("page=1.0", "Invalid page. Must be a positive integer"),
        ("page=1e2", "Invalid page. Must be a positive integer"),
        ("page=%EF%BC%91", "Invalid page. Must be a positive integer"),  # a fullwidth digit one
        ("page=1234567890", "Invalid page. Must be a positive integer"),
        ("limit=101", "Invalid limit. Must be between 1 and 100"),
        ("limit=-1", "Invalid limit. Must be between 1 and 100"),
        ("limit=0", "Invalid limit. Must be between 1 and 100"),
        ("limit=", "Invalid limit. Must be between 1 and 100"),
        # The page is checked first.
        ("limit=0&page=0", "Invalid page. Must be a positive integer"),
    ],
)
def test_list_rejects_bad_pagination(admin_client: APIClient, query: str, message: str) -> None:
    response = admin_client.get(f"/api/v1/admin/users?{query}")
    assert response.status_code == 400
    assert text(response) == message


@pytest.mark.parametrize(("query", "page", "limit"), [("page=%202%20&limit=1", 2, 1), ("page=002&limit=0100", 2, 100)])
def test_list_reads_padded_numbers(admin_client: APIClient, query: str, page: int, limit: int) -> None:
    body = admin_client.get(f"/api/v1/admin/users?{query}").json()
    assert (body["pagination"]["page"], body["pagination"]["limit"]) == (page, limit)


def test_search_by_username(admin_client: APIClient) -> None:
    User.objects.bulk_create(User(username=name, password="!") for name in ("john_doe", "Johnny", "jane"))
    for param in ("search", "username"):
        rows = by_name(admin_client.get(f"/api/v1/admin/users?{param}=JOHN"))
        assert set(rows) == {"john_doe", "Johnny"}
    body = admin_client.get("/api/v1/admin/users?search=nobody").json()
    assert body == {"users": [], "pagination": {"page": 1, "limit": 10, "total_count": 0, "total_pages": 0}}
    # An empty search is no filter, and gives way to the alias; blank text is no filter either.
    assert len(by_name(admin_client.get("/api/v1/admin/users?search="))) == 4
    assert set(by_name(admin_client.get("/api/v1/admin/users?search=&username=jan"))) == {"jane"}
    assert set(by_name(admin_client.get("/api/v1/admin/users?search=jan&username=john"))) == {"jane"}
    assert len(by_name(admin_client.get("/api/v1/admin/users?search=%20%20&username=jan"))) == 4
    assert set(by_name(admin_client.get("/api/v1/admin/users?search=%20jane%20"))) == {"jane"}


def _populate(count: int) -> None:
    """``count`` users, each with a file, a completed job, a session and an API key."""
    now = timezone.now()
    users = User.objects.bulk_create(
        User(username=f"bulk{index:04d}", password="!", registered_at=now - dt.timedelta(seconds=index))
        for index in range(count)
    )
    files = File.objects.bulk_create(
        File(owner=u, filename="a.mp3", kind="audio", content_type="audio/mpeg", blake3=f"{i:064x}", size_bytes=10)
        for i, u in enumerate(users)
    )
    Transcription.objects.bulk_create(
        Transcription(owner=f.owner, file=f, model="m", format="srt", status="completed", audio_seconds=3)
        for f in files
    )
    UserSession.objects.bulk_create(UserSession(user=u) for u in users)
    ApiKey.objects.bulk_create(
        ApiKey(user=u, name="k", key_digest=f"{i:064x}", prefix="abcd", suffix="ef01") for i, u in enumerate(users)
    )


@pytest.mark.parametrize("count", [3, 300])
def test_list_runs_a_fixed_number_of_queries(admin_client: APIClient, django_assert_num_queries, count: int) -> None:
    _populate(count)
    # The session lookup, the COUNT for the pagination, and one query for the page.
    with django_assert_num_queries(3):
        response = admin_client.get("/api/v1/admin/users?limit=100")
    body = response.json()
    assert body["pagination"]["total_count"] == count + 1
    assert len(body["users"]) == min(count + 1, 100)
    bulk = [row for row in body["users"] if row["username"].startswith("bulk")]
    assert all(
        row["stats"]
        == {
            "last_30_days": {"transcriptions_count": 1, "total_audio_seconds": 3, "files_uploaded": 1},
            "total_storage_bytes": 10,
            "active_sessions": 1,
            "api_keys_count": 1,
        }
        for row in bulk
    )


# --- PATCH /admin/users/:uuid --------------------------------------------------


def test_patch_updates_both_fields(admin_client: APIClient, user: User, client_session: APIClient) -> None:
    response = admin_client.patch(
        f"/api/v1/admin/users/{user.id.hex}", {"token_balance": 5000, "price_multiplier": 0.5}, format="json"
    )
    assert response.status_code == 200
    assert response.json() == {
        "message": "User updated successfully",
        "updated_fields": ["token_balance", "price_multiplier"],
        "user": {"uuid": user.id.hex, "username": "alice", "token_balance": 5000, "price_multiplier": 0.5},
    }
    user.refresh_from_db()
    assert user.token_balance == 5000 and user.price_multiplier == Decimal("0.5")
    # The user sees the new balance.
    assert client_session.get("/api/v1/user/me").json()["token_balance"] == 5000


@pytest.mark.parametrize(
    ("body", "fields", "balance", "multiplier"),
    [
        ({"token_balance": 0}, ["token_balance"], 0, 1.0),
        ({"token_balance": 10**15}, ["token_balance"], 10**15, 1.0),
        ({"price_multiplier": 2}, ["price_multiplier"], 1000, 2.0),
        ({"price_multiplier": 0}, ["price_multiplier"], 1000, 0.0),
        ({"price_multiplier": 1000}, ["price_multiplier"], 1000, 1000.0),
        ({"price_multiplier": 0.12345}, ["price_multiplier"], 1000, 0.1235),
        ({"price_multiplier": 1.5, "note": "ignored"}, ["price_multiplier"], 1000, 1.5),
    ],
)
def test_patch_one_field(
    admin_client: APIClient, user: User, body: dict, fields: list, balance: int, multiplier: float
) -> None:
    response = admin_client.patch(f"/api/v1/admin/users/{user.id.hex}", body, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["updated_fields"] == fields
    assert response.json()["user"]["token_balance"] == balance
    assert response.json()["user"]["price_multiplier"] == multiplier
    user.refresh_from_db()
    assert user.token_balance == balance and float(user.price_multiplier) == multiplier


def test_patch_accepts_hyphenated_uuid_and_trailing_slash(admin_client: APIClient, user: User) -> None:
    response = admin_client.patch(f"/api/v1/admin/users/{user.id}/", {"token_balance": 7}, format="json")
    assert response.status_code == 200
    assert response.json()["user"]["uuid"] == user.id.hex


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"token_balance": "5000"}, "token_balance must be an integer"),
        ({"token_balance": 5.5}, "token_balance must be an integer"),
        ({"token_balance": 5.0}, "token_balance must be an integer"),
        ({"token_balance": True}, "token_balance must be an integer"),
        ({"token_balance": None}, "token_balance must be an integer"),
        ({"token_balance": [1]}, "token_balance must be an integer"),
        ({"token_balance": -1}, "token_balance must be non-negative"),
        ({"token_balance": 10**15 + 1}, "token_balance must be at most 1000000000000000"),
        ({"token_balance": 10**30}, "token_balance must be at most 1000000000000000"),
        ({"price_multiplier": "0.5"}, "price_multiplier must be a number"),
        ({"price_multiplier": False}, "price_multiplier must be a number"),
        ({"price_multiplier": None}, "price_multiplier must be a number"),
        ({"price_multiplier": {"v": 1}}, "price_multiplier must be a number"),
        ({"price_multiplier": -0.1}, "price_multiplier must be non-negative"),
        ({"price_multiplier": 1000.01}, "price_multiplier must be at most 1000"),
        ({"price_multiplier": 1e308}, "price_multiplier must be at most 1000"),
        ({}, "No valid fields to update. Provide token_balance or price_multiplier"),
        ({"username": "mallory"}, "No valid fields to update. Provide token_balance or price_multiplier"),
        # Both validated before either is written.
        ({"token_balance": 1, "price_multiplier": -1}, "price_multiplier must be non-negative"),
        ({"token_balance": -1, "price_multiplier": 1}, "token_balance must be non-negative"),
    ],
)
def test_patch_validation(admin_client: APIClient, user: User, body: dict, message: str) -> None:
    response = admin_client.patch(f"/api/v1/admin/users/{user.id.hex}", body, format="json")
    assert response.status_code == 400
    assert text(response) == message
    user.refresh_from_db()
    assert user.token_balance == 1000 and user.price_multiplier == 1


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ('{"price_multiplier": NaN}', "Malformed request body"),
        ('{"price_multiplier": Infinity}', "Malformed request body"),
        ("[1, 2]", "Request body must be a JSON object"),
        ("{", "Malformed request body"),
    ],
)
def test_patch_rejects_bad_json(admin_client: APIClient, user: User, raw: str, message: str) -> None:
    response = admin_client.patch(f"/api/v1/admin/users/{user.id.hex}", raw, content_type="application/json")
    assert response.status_code == 400
    assert text(response) == message


@pytest.mark.parametrize(
    "value", ["nope", "018c5f9a7b2e7a8c9d0e1f2a3b4c5d6", "018c5f9a7b2e7a8c9d0e1f2a3b4c5d6g", "1" * 40]
)
def test_patch_invalid_uuid(admin_client: APIClient, value: str) -> None:
    response = admin_client.patch(f"/api/v1/admin/users/{value}", {"token_balance": 1}, format="json")
    assert response.status_code == 400
    assert text(response) == "Invalid UUID format"


def test_patch_unknown_user(admin_client: APIClient) -> None:
    response = admin_client.patch(
        "/api/v1/admin/users/018c5f9a7b2e7a8c9d0e1f2a3b4c5d6e", {"token_balance": 1}, format="json"
    )
    assert response.status_code == 404
    assert text(response) == "User not found"


def test_get_on_a_user_is_405(admin_client: APIClient, user: User) -> None:
    response = admin_client.get(f"/api/v1/admin/users/{user.id.hex}")
    assert response.status_code == 405
    assert text(response) == "Method not allowed"


def test_routes_have_names() -> None:
    assert reverse("admin-users-list") == "/api/v1/admin/users"
    assert reverse("admin-users-detail", kwargs={"uuid": "0" * 32}) == f"/api/v1/admin/users/{'0' * 32}"
    assert reverse("api-schema") == "/api/v1/schema"
    assert reverse("api-docs") == "/api/v1/docs"
