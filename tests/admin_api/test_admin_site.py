"""The Django admin site for operators, driven through Django's test client.

The same flows in a real browser are in test_admin_site_browser.py.
"""

from __future__ import annotations

import html
import itertools

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from accounts import services as account_services
from accounts.models import ApiKey, User, UserSession
from files.models import File
from tests.conftest import PASSWORD
from transcriptions.models import Transcription, TranscriptionUnit
from whisper_site import admin_changelist

pytestmark = pytest.mark.django_db
_n = itertools.count()


@pytest.fixture
def operator(db: None) -> Client:
    admin = User.objects.create(username="operator", password="!", is_admin=True, is_superuser=True)
    client = Client()
    client.force_login(admin)
    return client


@pytest.fixture
def carol(db: None) -> User:
    return User.objects.create(username="carol", password="!")


def add_file(owner: User, **extra: object) -> File:
    values: dict[str, object] = {
        "filename": f"talk{next(_n)}.mp3",
        "kind": "audio",
        "content_type": "audio/mpeg",
        "blake3": f"{next(_n):064x}",
        "size_bytes": 1234,
        "duration": 61.5,
        "state": File.State.READY,
    }
    values.update(extra)
    return File.objects.create(owner=owner, **values)


def add_job(owner: User, file: File, **extra: object) -> Transcription:
    values: dict[str, object] = {"model": "ggml-tiny.en", "format": "srt", "status": "completed"}
    values.update(extra)
    return Transcription.objects.create(owner=owner, file=file, **values)


def test_only_admins_reach_the_admin_site(carol: User) -> None:
    client = Client()
    client.force_login(carol)
    response = client.get("/admin/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_every_operator_page_opens(operator: Client, carol: User) -> None:
    file = add_file(carol)
    job = add_job(carol, file, status="failed", error="Insufficient token balance. Required: 120, Available: 50")
    session = UserSession.objects.create(user=carol)
    key, _ = account_services.api_key_create(user=carol, name="ci key")
    unit = TranscriptionUnit.objects.create(
        batch_id=job.batch_id, owner=carol, file=file, index=0, start=0.0, end=30.0, worker="host-b:4242",
        windows=[{"start": 0.4, "end": 29.8, "speech": []}],
    )  # fmt: skip
    pages = [
        "/admin/",
        "/admin/accounts/user/",
        f"/admin/accounts/user/{carol.pk}/change/",
        "/admin/accounts/usersession/?state=active",
        f"/admin/accounts/usersession/{session.pk}/change/",
        "/admin/accounts/apikey/",
        f"/admin/accounts/apikey/{key.pk}/change/",
        "/admin/files/file/?state__exact=ready&kind__exact=audio",
        f"/admin/files/file/{file.pk}/change/",
        "/admin/transcriptions/transcription/?status__exact=failed",
        f"/admin/transcriptions/transcription/{job.pk}/change/",
        "/admin/transcriptions/transcriptionunit/?status__exact=pending",
        f"/admin/transcriptions/transcriptionunit/{unit.pk}/change/",
    ]
    for page in pages:
        response = operator.get(page)
        assert response.status_code == 200, page
    listing = operator.get("/admin/transcriptions/transcription/?status__exact=failed").content.decode()
    assert "Insufficient token balance" in listing
    units = operator.get(f"/admin/transcriptions/transcriptionunit/?q={job.batch_id}").content.decode()
    assert "host-b:4242" in units
    assert "host-b:4242" not in operator.get("/admin/transcriptions/transcriptionunit/?q=nothing").content.decode()


def test_user_change_page_shows_statistics_and_edits_the_balance(operator: Client, carol: User) -> None:
    file = add_file(carol, size_bytes=4096)
    add_job(carol, file, audio_seconds=42)
    UserSession.objects.create(user=carol)
    page = operator.get(f"/admin/accounts/user/{carol.pk}/change/").content.decode()
    assert 'class="user-statistics"' in page
    assert "<th>Audio seconds transcribed, last 30 days</th><td>42</td>" in page
    assert "<th>Storage used (bytes)</th><td>4096</td>" in page
    assert "<th>Active sessions</th><td>1</td>" in page

    form = {
        "username": "carol",
        "is_active": "on",
        "token_balance": "4321",
        "price_multiplier": "0.75",
        "avatar": "",
    }
    response = operator.post(f"/admin/accounts/user/{carol.pk}/change/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    carol.refresh_from_db()
    assert carol.token_balance == 4321 and float(carol.price_multiplier) == 0.75

    # The database's own check constraint backs the form: no negative balance.
    response = operator.post(f"/admin/accounts/user/{carol.pk}/change/", {**form, "token_balance": "-1"})
    assert response.status_code == 200
    carol.refresh_from_db()
    assert carol.token_balance == 4321


def test_end_sessions_and_revoke_keys(operator: Client, carol: User) -> None:
    session = UserSession.objects.create(user=carol)
    key, _ = account_services.api_key_create(user=carol, name="leaked")
    response = operator.post(
        "/admin/accounts/usersession/", {"action": "end_sessions", "_selected_action": [str(session.pk)]}
    )
    assert response.status_code == 302
    session.refresh_from_db()
    assert session.ended_at is not None
    response = operator.post("/admin/accounts/apikey/", {"action": "revoke_keys", "_selected_action": [str(key.pk)]})
    assert response.status_code == 302
    assert not ApiKey.objects.filter(pk=key.pk).exists()


def test_search_by_owner_or_id(operator: Client, carol: User) -> None:
    dave = User.objects.create(username="dave", password="!")
    carol_file = add_file(carol, filename="carol-only.mp3")
    dave_file = add_file(dave, filename="dave-only.mp3")
    page = operator.get("/admin/files/file/?q=CAR").content.decode()
    assert "carol-only.mp3" in page and "dave-only.mp3" not in page
    page = operator.get(f"/admin/files/file/?q={dave_file.pk.hex}").content.decode()
    assert "dave-only.mp3" in page and "carol-only.mp3" not in page
    job = add_job(dave, dave_file)
    add_job(carol, carol_file)
    page = operator.get(f"/admin/transcriptions/transcription/?q={job.pk}").content.decode()
    assert str(job.pk) in page
    page = operator.get("/admin/transcriptions/transcription/?q=dave").content.decode()
    assert "1 result" in page
    page = operator.get("/admin/accounts/usersession/?q=nobody-at-all").content.decode()
    assert "0 results" in page


def _changelist_queries(client: Client, path: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(path).status_code == 200
    return len(queries)


def test_change_lists_run_a_fixed_number_of_queries(operator: Client, carol: User) -> None:
    def populate(count: int) -> None:
        owners = User.objects.bulk_create(User(username=f"u{next(_n)}", password="!") for _ in range(count))
        for owner in owners:
            add_job(owner, add_file(owner), status="failed", error="boom")
            UserSession.objects.create(user=owner)

    paths = [
        "/admin/files/file/",
        "/admin/transcriptions/transcription/",
        "/admin/accounts/usersession/",
        "/admin/accounts/user/",
    ]
    populate(2)
    few = [_changelist_queries(operator, path) for path in paths]
    populate(30)
    many = [_changelist_queries(operator, path) for path in paths]
    assert few == many


def test_deleting_a_file_in_the_admin_deletes_its_stored_objects(
    operator: Client, carol: User, django_capture_on_commit_callbacks
) -> None:
    media = default_storage.save(f"test/{next(_n)}.mp3", ContentFile(b"ID3 audio"))
    wav = default_storage.save(f"test/{next(_n)}.wav", ContentFile(b"RIFF wave"))
    file = add_file(carol, media_name=media, wav_name=wav)
    add_job(carol, file)
    # Stored objects go once the deletion commits.
    with django_capture_on_commit_callbacks(execute=True):
        response = operator.post(f"/admin/files/file/{file.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not File.objects.filter(pk=file.pk).exists()
    assert not Transcription.objects.filter(file_id=file.pk).exists()
    assert not default_storage.exists(media) and not default_storage.exists(wav)


def test_deleting_a_user_in_the_admin_deletes_their_stored_objects(
    operator: Client, carol: User, django_capture_on_commit_callbacks
) -> None:
    media = default_storage.save(f"test/{next(_n)}.mp3", ContentFile(b"ID3 audio"))
    add_file(carol, media_name=media)
    with django_capture_on_commit_callbacks(execute=True):
        response = operator.post(f"/admin/accounts/user/{carol.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not User.objects.filter(pk=carol.pk).exists()
    assert not default_storage.exists(media)


def test_files_and_jobs_cannot_be_added_by_hand(operator: Client) -> None:
    assert operator.get("/admin/files/file/add/").status_code == 403
    assert operator.get("/admin/transcriptions/transcription/add/").status_code == 403


def test_requeue_failed_transcriptions(operator: Client, carol: User) -> None:
    transcription_services = pytest.importorskip("transcriptions.services")
    if not hasattr(transcription_services, "transcription_requeue"):
        pytest.skip("transcriptions.services.transcription_requeue is not there yet")
    file = add_file(carol)
    failed = add_job(carol, file, status="failed", error="Worker lost")
    done = add_job(carol, file, status="completed")
    response = operator.post(
        "/admin/transcriptions/transcription/",
        {"action": "requeue_failed", "_selected_action": [str(failed.pk), str(done.pk)]},
        follow=True,
    )
    page = response.content.decode()
    assert "Re-queued 1 failed transcription(s)." in page
    assert "Skipped 1 transcription(s) that had not failed." in page
    failed.refresh_from_db()
    done.refresh_from_db()
    assert failed.status != "failed" and failed.error == ""
    assert done.status == "completed"


def test_requeue_action_explains_when_unavailable(
    operator: Client, carol: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    # A None entry in sys.modules makes the import fail, as before the service exists.
    monkeypatch.setitem(sys.modules, "transcriptions.services", None)
    job = add_job(carol, add_file(carol), status="failed")
    response = operator.post(
        "/admin/transcriptions/transcription/",
        {"action": "requeue_failed", "_selected_action": [str(job.pk)]},
        follow=True,
    )
    assert "Re-queueing is not available in this version." in response.content.decode()


def test_large_table_paginator_estimates_only_unfiltered_postgres_lists(
    carol: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    for _ in range(3):
        add_file(carol)
    monkeypatch.setattr(admin_changelist, "EXACT_COUNT_UP_TO", 0)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE files_file")
    paginator = admin_changelist.LargeTablePaginator(File.objects.order_by("-uploaded_at"), 2)
    assert paginator.count == 3  # exact on SQLite; the (fresh) estimate on PostgreSQL
    filtered = admin_changelist.LargeTablePaginator(File.objects.filter(owner=carol).order_by("-uploaded_at"), 2)
    assert filtered.count == 3 and filtered.num_pages == 2


def test_user_statistics_for_a_new_user_form(operator: Client) -> None:
    # The add page has no statistics to show yet.
    assert operator.get("/admin/accounts/user/add/").status_code == 200


# --- passwords --------------------------------------------------------------

NEW_PASSWORD = "Another-G00d-Passw0rd"


def api_login(username: str, password: str) -> int:
    response = APIClient().post("/api/v1/user/login", {"username": username, "password": password}, format="json")
    return response.status_code


def test_user_change_page_shows_the_password_widget_not_the_hash(operator: Client, carol: User) -> None:
    carol.set_password(PASSWORD)
    carol.save()
    page = operator.get(f"/admin/accounts/user/{carol.pk}/change/").content.decode()
    algorithm, _, _ = carol.password.partition("$")
    digest = carol.password.rsplit("$", 1)[1]
    assert carol.password not in page and digest not in page
    assert f"<strong>algorithm</strong>: <bdi>{algorithm}</bdi>" in page
    assert '<a class="button" href="../password/">Reset password</a>' in page
    # No form field carries the hash either: posting the page cannot change it.
    assert 'name="password"' not in page


def test_change_password_page_sets_a_password_the_user_logs_in_with(operator: Client, carol: User) -> None:
    carol.set_password(PASSWORD)
    carol.save()
    session = UserSession.objects.create(user=carol)
    url = f"/admin/accounts/user/{carol.pk}/password/"
    assert operator.get(url).status_code == 200

    weak = {"usable_password": "true", "password1": "Short1!", "password2": "Short1!"}
    response = operator.post(url, weak)
    assert response.status_code == 200
    assert "Password must be at least 12 characters long" in response.content.decode()
    assert api_login("carol", PASSWORD) == 200

    good = {"usable_password": "true", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD}
    response = operator.post(url, good)
    assert response.status_code == 302 and response["Location"] == f"/admin/accounts/user/{carol.pk}/change/"
    assert api_login("carol", NEW_PASSWORD) == 200
    assert api_login("carol", PASSWORD) == 401
    # Whoever held a session from the old password is logged out.
    session.refresh_from_db()
    assert session.ended_at is not None


@pytest.mark.parametrize(
    ("username", "password", "message"),
    [
        ("erin", "Sh0rt!", "Password must be at least 12 characters long"),
        ("erin", "no-uppercase-here-1", "Password must contain at least 1 uppercase letter(s)"),
        ("erin", "No-Digits-At-All!", "Password must contain at least 1 digit(s)"),
        ("erin", "NoSpecial1234", "Password must contain at least 1 special character(s)"),
        ("e r", NEW_PASSWORD, "Invalid username. Must be 3-20 characters"),
        ("CAROL", NEW_PASSWORD, "Username already exists"),
    ],
)
def test_add_user_refuses_what_registration_refuses(
    operator: Client, carol: User, username: str, password: str, message: str
) -> None:
    before = User.objects.count()
    response = operator.post(
        "/admin/accounts/user/add/", {"username": username, "password1": password, "password2": password}
    )
    assert response.status_code == 200
    assert message in html.unescape(response.content.decode())
    assert User.objects.count() == before


def test_add_user_asks_for_the_password_twice(operator: Client) -> None:
    page = operator.get("/admin/accounts/user/add/").content.decode()
    assert 'name="password1"' in page and 'name="password2"' in page
    response = operator.post(
        "/admin/accounts/user/add/", {"username": "erin", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD + "x"}
    )
    assert response.status_code == 200
    assert not User.objects.filter(username="erin").exists()


def test_add_user_with_a_good_password_creates_a_user_who_can_log_in(operator: Client) -> None:
    response = operator.post(
        "/admin/accounts/user/add/", {"username": "erin", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD}
    )
    erin = User.objects.get(username="erin")
    # Django's user admin goes on to the new user's change page.
    assert response.status_code == 302 and response["Location"] == f"/admin/accounts/user/{erin.pk}/change/"
    assert erin.token_balance == 1000 and not erin.is_admin
    assert api_login("erin", NEW_PASSWORD) == 200


# --- the admin login: the API login's password guard ---------------------------------


def admin_login(username: str, password: str, address: str) -> tuple[Client, object]:
    client = Client(REMOTE_ADDR=address)
    response = client.post("/admin/login/?next=/admin/", {"username": username, "password": password})
    return client, response


def logged_in(client: Client) -> bool:
    return client.get("/admin/").status_code == 200


def test_admin_login_failures_are_limited_per_account_and_address(settings) -> None:
    User.objects.create_superuser("admin", PASSWORD)
    for _ in range(settings.LOGIN_MAX_FAILURES):
        client, response = admin_login("admin", "Wrong#Passw0rd1", "127.0.0.2")
        assert response.status_code == 200 and not logged_in(client)
    # Blocked on that address, even with the right password, and the page says why.
    client, response = admin_login("admin", PASSWORD, "127.0.0.2")
    assert response.status_code == 200 and not logged_in(client)
    assert "Too many failed login attempts. Try again later" in response.content.decode()
    # The owner, from another address, gets in.
    client, response = admin_login("admin", PASSWORD, "127.0.0.3")
    assert response.status_code == 302 and logged_in(client)


def test_admin_login_blocks_an_address_guessing_at_many_names(settings) -> None:
    settings.LOGIN_MAX_FAILURES_PER_ADDRESS = 6
    User.objects.create_superuser("admin", PASSWORD)
    for index in range(6):
        admin_login(f"ghost{index}", PASSWORD, "127.0.0.2")
    client, response = admin_login("admin", PASSWORD, "127.0.0.2")
    assert not logged_in(client) and "Too many failed login attempts" in response.content.decode()
    client, _ = admin_login("admin", PASSWORD, "127.0.0.3")
    assert logged_in(client)


def test_admin_and_api_logins_share_the_count(settings) -> None:
    User.objects.create_superuser("admin", PASSWORD)
    api = APIClient()
    for _ in range(settings.LOGIN_MAX_FAILURES - 1):
        api.post(
            "/api/v1/user/login",
            {"username": "admin", "password": "Wrong#Passw0rd1"},
            format="json",
            REMOTE_ADDR="127.0.0.2",
        )
    admin_login("admin", "Wrong#Passw0rd1", "127.0.0.2")
    refused = api.post(
        "/api/v1/user/login", {"username": "admin", "password": PASSWORD}, format="json", REMOTE_ADDR="127.0.0.2"
    )
    assert refused.status_code == 429


def test_admin_login_behind_a_proxy_uses_the_forwarded_address(settings) -> None:
    settings.TRUSTED_PROXY_COUNT = 1
    User.objects.create_superuser("admin", PASSWORD)
    proxy = Client(REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.9")
    for _ in range(settings.LOGIN_MAX_FAILURES):
        proxy.post("/admin/login/", {"username": "admin", "password": "Wrong#Passw0rd1"})
    proxy.post("/admin/login/", {"username": "admin", "password": PASSWORD})
    assert not logged_in(proxy)
    other = Client(REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.5")
    assert other.post("/admin/login/", {"username": "admin", "password": PASSWORD}).status_code == 302
    assert logged_in(other)
