"""What a client sends can be refused, never answered with a 500.

Each test sends one kind of hostile or odd input, most of them without
credentials, and checks for the one-line 4xx (or the ordinary answer).
"""

from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.test import APIClient

from accounts.models import User
from files.models import File
from tests.conftest import PASSWORD, make_user
from whisper_site.admin_changelist import search_by_id_or_owner
from whisper_site.parsers import MAX_JSON_DEPTH, json_depth_exceeds
from whisper_site.search_text import search_text_clean

pytestmark = pytest.mark.django_db

DEPTH_LINE = f"Request body nested too deeply: at most {MAX_JSON_DEPTH} levels"


def login(body: str | bytes, **extra: str) -> object:
    return APIClient().post("/api/v1/user/login", body, content_type="application/json", **extra)


def text(response: object) -> str:
    return response.content.decode()  # type: ignore[attr-defined]


# --- JSON nesting ------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "[" * 5000 + "]" * 5000,
        '{"a":' * 3000 + "1" + "}" * 3000,
        '{"username": "x", "password": "y", "z": ' + "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1) + "}",
        # Just under the 1 MiB body limit.
        "[" * 500_000 + "]" * 500_000,
    ],
    ids=["arrays", "objects", "one-past-the-limit", "a-megabyte"],
)
def test_deeply_nested_json_is_a_400(body: str) -> None:
    response = login(body)
    assert response.status_code == 400  # type: ignore[attr-defined]
    assert response["Content-Type"].startswith("text/plain")  # type: ignore[index]
    assert text(response) == DEPTH_LINE


def test_nesting_up_to_the_limit_is_parsed() -> None:
    # 64 levels in all: the body object and 63 below it.
    inner = "[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1)
    response = login('{"username": "nobody", "password": "Wr0ng-password!", "extra": ' + inner + "}")
    assert (response.status_code, text(response)) == (401, "Authentication failed")  # type: ignore[attr-defined]


def test_brackets_inside_strings_are_not_nesting(db: None) -> None:
    make_user("brackets", password="[[[" + PASSWORD + '\\"{{{')
    password = "[" * 40 + "{" * 40
    response = login('{"username": "nobody", "password": "' + password + '", "note": "\\"' + "[" * 500 + '"}')
    assert (response.status_code, text(response)) == (401, "Authentication failed")  # type: ignore[attr-defined]
    response = login('{"username": "brackets", "password": "[[[' + PASSWORD + '\\\\\\"{{{"}')
    assert response.status_code == 200, text(response)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("body", "too_deep"),
    [
        ('["' + "[" * 100 + '"]', False),
        ('["\\"' + "[" * 100 + '"]', False),  # an escaped quote does not end the string
        ('["\\\\"' + ",[" * 70 + "]" * 71, True),  # an escaped backslash does not escape the quote
        ("[[]]" * 1000, False),
        ('{"a":' * 64 + "1" + "}" * 64, False),
        ('{"a":' * 65 + "1" + "}" * 65, True),
    ],
)
def test_depth_scan(body: str, too_deep: bool) -> None:
    assert json_depth_exceeds(body) is too_deep


@pytest.mark.parametrize(
    "body",
    ['{"username": NaN}', '{"username": "x"', "\ufeff{}", '{"username": ' + "1" * 5000 + "}", b'{"username": "\xff"}'],
    ids=["nan", "unterminated", "bom", "long-number", "not-utf8"],
)
def test_malformed_json_keeps_its_message(body: str | bytes) -> None:
    response = login(body)
    assert (response.status_code, text(response)) == (400, "Malformed request body")  # type: ignore[attr-defined]


# --- NUL in search text (PostgreSQL refuses NUL in text values) ----------------------


def test_search_text_clean_drops_nul_only() -> None:
    assert search_text_clean("a\x00b\x00") == "ab"
    assert search_text_clean(" Ünï cödé\t") == " Ünï cödé\t"


@pytest.mark.parametrize("parameter", ["search", "username"])
def test_admin_user_search_with_nul(admin_client: APIClient, parameter: str) -> None:
    make_user("cab")
    response = admin_client.get(f"/api/v1/admin/users?{parameter}=a%00b")
    assert response.status_code == 200, text(response)
    assert [row["username"] for row in response.json()["users"]] == ["cab"]


@pytest.fixture
def operator(db: None) -> Client:
    client = Client()
    client.force_login(User.objects.create(username="operator", password="!", is_admin=True, is_superuser=True))
    return client


@pytest.fixture
def carols_file(db: None) -> File:
    carol = User.objects.create(username="carol", password="!")
    return File.objects.create(
        owner=carol, filename="talk.mp3", kind="audio", content_type="audio/mpeg", blake3="c" * 64
    )


def test_changelist_search_helper_with_nul(carols_file: File) -> None:
    found = search_by_id_or_owner(File.objects.all(), "ca\x00rol", owner_field="owner")
    assert list(found) == [carols_file]


def test_admin_autocomplete_with_nul(operator: Client, carols_file: File) -> None:
    # The autocomplete view hands its term to FileAdmin.get_search_results as given.
    response = operator.get(
        "/admin/autocomplete/",
        {"app_label": "transcriptions", "model_name": "transcription", "field_name": "file", "term": "ca\x00rol"},
    )
    assert response.status_code == 200
    assert [row["id"] for row in response.json()["results"]] == [str(carols_file.pk)]


@pytest.mark.parametrize(
    "path", ["accounts/user", "files/file", "transcriptions/transcription", "accounts/usersession"]
)
def test_admin_change_list_search_with_nul(operator: Client, path: str) -> None:
    # Django's own search form refuses the term ("Null characters are not allowed.").
    assert operator.get(f"/admin/{path}/?q=a%00b").status_code == 200


# --- query strings, paths and headers --------------------------------------------------


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("page=" + "9" * 5000, "Invalid page. Must be a positive integer"),
        ("page=%ff%fe", "Invalid page. Must be a positive integer"),
        ("page=%EF%BC%91", "Invalid page. Must be a positive integer"),  # a full-width 1
        ("limit=1e309", "Invalid limit. Must be between 1 and 100"),
        ("limit=" + "1" * 5000, "Invalid limit. Must be between 1 and 100"),
    ],
    ids=["huge-page", "not-utf8", "full-width", "float-limit", "huge-limit"],
)
def test_bad_page_and_limit_are_400(client_key: APIClient, query: str, message: str) -> None:
    response = client_key.get(f"/api/v1/file?{query}")
    assert (response.status_code, text(response)) == (400, message)


def test_last_possible_page_is_empty(client_key: APIClient) -> None:
    response = client_key.get("/api/v1/file?page=999999999&limit=100")
    assert response.status_code == 200
    assert response.json()["files"] == []


@pytest.mark.parametrize(
    "path", ["/api/v1/file/" + "a" * 10_000, "/api/v1/transcribe/" + "a" * 10_000, "/api/v1/file/%ff%00" + "0" * 30]
)
def test_long_or_odd_path_ids_are_400(anon: APIClient, path: str) -> None:
    response = anon.get(path)
    assert (response.status_code, text(response)) == (400, "Invalid UUID format")


@pytest.mark.parametrize("scheme", ["Basic", "Bearer"])
def test_long_credentials_are_401(anon: APIClient, scheme: str) -> None:
    response = anon.get("/api/v1/user/me", HTTP_AUTHORIZATION=f"{scheme} " + "a" * 100_000)
    assert response.status_code == 401


@pytest.mark.parametrize("content_type", ["application/json", "multipart/form-data; boundary=x"])
@pytest.mark.parametrize("length", ["abc", "-5", "9" * 5000])
def test_content_length_that_is_not_a_size(anon: APIClient, content_type: str, length: str) -> None:
    response = anon.generic("POST", "/api/v1/user/login", b"{}", content_type=content_type, CONTENT_LENGTH=length)
    assert 400 <= response.status_code < 500
    assert response["Content-Type"].startswith("text/plain")
