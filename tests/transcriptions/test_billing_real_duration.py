"""Jobs are billed for the audio that is there: the WAV's measured duration, not the upload header's claim.

The liar (tests/files/liars.py) is 33 s of speech in Matroska whose Segment Info says 1 s.
Before the fix it was transcribed in full and charged for 1 s.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from accounts.models import User
from files import media
from files.models import File
from files.tasks import file_convert_audio_task
from tests.files.liars import lying_matroska
from transcriptions.models import Transcription
from transcriptions.services import runs

pytestmark = pytest.mark.django_db

REAL_SECONDS = 33.0
MULTIPLIER = "1.5"
# ceil(ceil(33) x 1.5); the header's 1 s would cost ceil(1 x 1.5) = 2.
REAL_COST = math.ceil(math.ceil(REAL_SECONDS) * 1.5)


@pytest.fixture(scope="module")
def liar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = lying_matroska(tmp_path_factory.mktemp("liar"), real=REAL_SECONDS, claimed=1.0)
    assert media.probe_media(path).duration == pytest.approx(1.0, abs=0.01)
    return path


@pytest.fixture
def payer(user: User) -> User:
    User.objects.filter(pk=user.pk).update(price_multiplier=MULTIPLIER)
    return user


def post_file(client: APIClient, path: Path, capture: Any, *, convert: bool) -> File:
    """POST /file; with ``convert`` the conversion (eager Celery) runs on commit, else the file stays processing."""
    with capture(execute=convert):
        response = client.post(
            "/api/v1/file", {"file": [SimpleUploadedFile(path.name, path.read_bytes())]}, format="multipart"
        )
    return File.objects.get(id=response.json()["files"][0]["uuid"])


def transcribe(client: APIClient, file: File, capture: Any, **body: Any) -> Any:
    with capture(execute=True):
        return client.post("/api/v1/transcribe", {"uuid": file.id.hex, **body}, format="json")


def balance(user: User) -> int:
    return User.objects.values_list("token_balance", flat=True).get(pk=user.pk)


def test_a_liar_is_charged_for_every_second_it_holds(
    payer: User,
    installed_models: Path,
    client_session: APIClient,
    liar: Path,
    django_capture_on_commit_callbacks: Any,
) -> None:
    file = post_file(client_session, liar, django_capture_on_commit_callbacks, convert=True)
    assert file.duration == pytest.approx(REAL_SECONDS, abs=0.05)
    response = transcribe(client_session, file, django_capture_on_commit_callbacks)
    assert response.status_code == 200
    job = Transcription.objects.get()
    assert (job.status, job.cost, job.audio_seconds) == ("completed", REAL_COST, 33)
    assert balance(payer) == 1000 - REAL_COST
    # It was transcribed to the end: what was billed is what was heard.
    assert job.data["segments"][-1]["end"] > 25


def test_jobs_queued_before_the_wav_is_measured_are_charged_the_measured_duration(
    payer: User,
    installed_models: Path,
    client_session: APIClient,
    liar: Path,
    django_capture_on_commit_callbacks: Any,
) -> None:
    file = post_file(client_session, liar, django_capture_on_commit_callbacks, convert=False)
    assert (file.state, file.duration) == ("processing", pytest.approx(1.0, abs=0.01))
    transcribe(client_session, file, django_capture_on_commit_callbacks, format=["verbose_json", "srt"])
    assert set(Transcription.objects.values_list("status", "cost")) == {("pending", 0)}
    # The conversion's phase one stores the WAV with its duration and announces it: the
    # jobs run then, priced from what the WAV holds.
    with django_capture_on_commit_callbacks(execute=True):
        file_convert_audio_task.apply(args=[file.id.hex]).get()
    jobs = list(Transcription.objects.order_by("created_at"))
    assert [(job.status, job.cost, job.audio_seconds) for job in jobs] == [("completed", REAL_COST, 33)] * 2
    assert balance(payer) == 1000 - 2 * REAL_COST


def test_the_claim_reads_the_duration_from_the_database_not_the_instance(
    payer: User, installed_models: Path, client_session: APIClient, liar: Path, django_capture_on_commit_callbacks: Any
) -> None:
    file = post_file(client_session, liar, django_capture_on_commit_callbacks, convert=False)
    transcribe(client_session, file, django_capture_on_commit_callbacks)
    stale = File.objects.get(pk=file.pk)  # read while the header's 1 s was all there was
    with django_capture_on_commit_callbacks(execute=False):
        file_convert_audio_task.apply(args=[file.id.hex]).get()  # WAV and duration, no signal
    job = Transcription.objects.get()
    [claimed] = runs.claim_and_charge(batch_id=job.batch_id, claim_token="task-1", file=stale)
    assert claimed.cost == REAL_COST
    assert stale.duration == pytest.approx(REAL_SECONDS, abs=0.05)
    assert balance(payer) == 1000 - REAL_COST


def test_the_claim_takes_nothing_while_the_file_has_no_wav(
    payer: User, installed_models: Path, client_session: APIClient, liar: Path, django_capture_on_commit_callbacks: Any
) -> None:
    file = post_file(client_session, liar, django_capture_on_commit_callbacks, convert=False)
    transcribe(client_session, file, django_capture_on_commit_callbacks)
    job = Transcription.objects.get()
    assert runs.claim_and_charge(batch_id=job.batch_id, claim_token="task-1", file=file) == []
    job.refresh_from_db()
    assert (job.status, job.cost) == ("pending", 0)
    assert balance(payer) == 1000


def test_a_liar_over_the_maximum_fails_and_its_jobs_cost_nothing(
    payer: User,
    installed_models: Path,
    client_session: APIClient,
    liar: Path,
    settings: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    settings.MAX_MEDIA_DURATION_SECONDS = 20
    file = post_file(client_session, liar, django_capture_on_commit_callbacks, convert=False)
    transcribe(client_session, file, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        file_convert_audio_task.apply(args=[file.id.hex]).get()
    file.refresh_from_db()
    assert file.state == "failed"
    job = Transcription.objects.get()
    assert (job.status, job.error, job.cost) == (
        "failed",
        "File conversion failed: the audio is longer than the maximum of 20 seconds",
        0,
    )
    assert balance(payer) == 1000


def test_the_message_is_timed_for_the_measured_duration(
    payer: User,
    installed_models: Path,
    client_session: APIClient,
    liar: Path,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    from transcriptions.services import time_limits
    from transcriptions.tasks import transcription_run_batch_task

    sent: list[tuple[Any, Any]] = []
    original = transcription_run_batch_task.apply_async

    def send(*args: Any, **options: Any) -> Any:
        # Eager Celery keeps no trace of a message's limits: note them, then send as before.
        sent.append((options.get("soft_time_limit"), options.get("time_limit")))
        return original(*args, **options)

    monkeypatch.setattr(transcription_run_batch_task, "apply_async", send)
    file = post_file(client_session, liar, django_capture_on_commit_callbacks, convert=False)
    transcribe(client_session, file, django_capture_on_commit_callbacks)
    # No message while only the header's duration is known ...
    assert sent == []
    with django_capture_on_commit_callbacks(execute=True):
        file_convert_audio_task.apply(args=[file.id.hex]).get()
    # ... then one, timed for the 33 s the WAV holds.
    assert sent == [time_limits(duration=REAL_SECONDS)]
    assert Transcription.objects.get().status == "completed"
