"""USER_PENDING_JOB_QUOTA: how many of one user's transcriptions may be pending or processing at once."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from django.db import connection
from rest_framework.test import APIClient

from accounts.models import User
from files.models import File
from tests.conftest import make_user
from tests.transcriptions.conftest import MakeFile
from transcriptions.models import Transcription
from transcriptions.services import transcription_create

pytestmark = pytest.mark.django_db

Status = Transcription.Status


def transcribe(client: APIClient, capture: Any, file: File, formats: list[str]) -> Any:
    with capture(execute=True):
        return client.post("/api/v1/transcribe", {"uuid": file.id.hex, "format": formats}, format="json")


def test_past_the_quota_the_request_is_a_429_and_creates_nothing(
    user: User,
    make_ready_file: MakeFile,
    client_session: APIClient,
    settings: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    settings.USER_PENDING_JOB_QUOTA = 3
    converting = make_ready_file(user, state=File.State.PROCESSING)  # its jobs stay pending
    capture = django_capture_on_commit_callbacks
    assert transcribe(client_session, capture, converting, ["verbose_json", "srt"]).status_code == 200
    # Two more would make four: the whole request is refused, not part of it.
    response = transcribe(client_session, capture, converting, ["srt", "vtt"])
    assert response.status_code == 429
    assert response["Content-Type"].startswith("text/plain")
    assert response.content.decode() == "Too many pending transcriptions: at most 3 per user"
    assert Transcription.objects.count() == 2
    assert transcribe(client_session, capture, converting, ["vtt"]).status_code == 200
    assert Transcription.objects.count() == 3


def test_finished_jobs_do_not_count(
    user: User,
    make_ready_file: MakeFile,
    client_session: APIClient,
    settings: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    settings.USER_PENDING_JOB_QUOTA = 1
    ready = make_ready_file(user)
    capture = django_capture_on_commit_callbacks
    for _ in range(2):
        assert transcribe(client_session, capture, ready, ["srt"]).status_code == 200  # runs at once (eager)
    assert list(Transcription.objects.values_list("status", flat=True)) == ["completed", "completed"]
    converting = make_ready_file(user, state=File.State.PROCESSING)
    assert transcribe(client_session, capture, converting, ["srt"]).status_code == 200
    assert transcribe(client_session, capture, ready, ["srt"]).status_code == 429


def test_the_quota_is_per_user(
    user: User,
    make_ready_file: MakeFile,
    client_session: APIClient,
    other_client: APIClient,
    settings: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    settings.USER_PENDING_JOB_QUOTA = 1
    capture = django_capture_on_commit_callbacks
    mine = make_ready_file(user, state=File.State.PROCESSING)
    assert transcribe(client_session, capture, mine, ["srt"]).status_code == 200
    bob = User.objects.get(username="bob")
    theirs = make_ready_file(bob, state=File.State.PROCESSING)
    assert transcribe(other_client, capture, theirs, ["srt"]).status_code == 200


def test_invalid_requests_are_answered_before_the_quota(
    user: User,
    make_ready_file: MakeFile,
    client_session: APIClient,
    settings: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    settings.USER_PENDING_JOB_QUOTA = 1
    capture = django_capture_on_commit_callbacks
    converting = make_ready_file(user, state=File.State.PROCESSING)
    transcribe(client_session, capture, converting, ["srt"])
    response = client_session.post("/api/v1/transcribe", {"uuid": "0" * 32}, format="json")
    assert (response.status_code, response.content.decode()) == (404, "File not found or access denied")


@pytest.mark.django_db(transaction=True)
def test_requests_at_once_cannot_together_pass_the_quota(make_ready_file: MakeFile, settings: Any) -> None:
    settings.USER_PENDING_JOB_QUOTA = 2
    owner, _ = make_user("racer")
    converting = make_ready_file(owner, state=File.State.PROCESSING)
    barrier = threading.Barrier(6)
    outcomes: list[str] = []
    errors: list[BaseException] = []

    def run() -> None:
        from whisper_site.errors import ApplicationError

        try:
            barrier.wait()
            transcription_create(user=owner, file_id=converting.id, model=None, language=None, formats=["srt"])
            outcomes.append("queued")
        except ApplicationError as refused:
            outcomes.append(f"{refused.status} {refused.message}")
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sorted(outcomes) == ["429 Too many pending transcriptions: at most 2 per user"] * 4 + ["queued"] * 2
    assert Transcription.objects.filter(owner=owner, status=Status.PENDING).count() == 2


def test_the_schema_lists_the_429(anon: APIClient) -> None:
    document = json.loads(anon.get("/api/v1/schema?format=json").content)
    responses = document["paths"]["/api/v1/transcribe"]["post"]["responses"]
    examples = responses["429"]["content"]["text/plain"]["examples"].values()
    assert [example["value"] for example in examples] == ["Too many pending transcriptions: at most 100 per user"]
