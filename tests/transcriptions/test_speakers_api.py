"""Speakers through POST /transcribe and the OpenAI-compatible route: options, price, refunds, results."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.db import transaction
from rest_framework.test import APIClient

from accounts.models import User
from files.media import convert_to_wav
from tests.transcriptions.conftest import DATA_DIR, MakeFile, Run
from transcriptions.models import Transcription, TranscriptionUnit
from transcriptions.services import job_cost, runs

pytestmark = pytest.mark.django_db

REFERENCE = json.loads((DATA_DIR / "speakers.json").read_text())


@pytest.fixture(scope="module")
def speakers_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/data/speakers.opus (four voices taking turns, 47.5 s) as the WAV the files app stores."""
    path = tmp_path_factory.mktemp("wav") / "speakers.wav"
    convert_to_wav(DATA_DIR / "speakers.opus", path)
    return path


def balance(user: User) -> int:
    return User.objects.values_list("token_balance", flat=True).get(pk=user.pk)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"diarize": "maybe"}, "Invalid diarize: must be true or false"),
        ({"diarize": True, "speakers": 0}, "Invalid speakers: 0. Must be from 1 to 20"),
        ({"diarize": True, "speakers": 21}, "Invalid speakers: 21. Must be from 1 to 20"),
        ({"diarize": True, "speakers": -3}, "Invalid speakers: -3. Must be from 1 to 20"),
        ({"diarize": True, "speakers": "2"}, "Invalid speakers: must be a whole number from 1 to 20"),
        ({"diarize": True, "speakers": 2.5}, "Invalid speakers: must be a whole number from 1 to 20"),
        ({"diarize": True, "speakers": True}, "Invalid speakers: must be a whole number from 1 to 20"),
        ({"speakers": 2}, "Invalid speakers: only with diarize: true"),
        ({"diarize": False, "speakers": 2}, "Invalid speakers: only with diarize: true"),
    ],
)
def test_bad_speaker_options_are_plain_400s_and_store_nothing(
    user: User, make_ready_file: MakeFile, queue: Run, body: dict[str, Any], message: str
) -> None:
    file = make_ready_file(user)
    response = queue({"uuid": file.id.hex, **body})
    assert (response.status_code, response["Content-Type"], response.content.decode()) == (
        400,
        "text/plain; charset=utf-8",
        message,
    )
    assert not Transcription.objects.exists()
    assert balance(user) == 1000


def test_the_price_of_speakers_is_the_job_cost_times_the_factor_rounded_up(settings: Any) -> None:
    assert job_cost(duration=11.0, price_multiplier=Decimal("1.0"), diarize=True) == 17  # ceil(11 x 1.5)
    assert job_cost(duration=10.2, price_multiplier=Decimal("0.7"), diarize=True) == 12  # ceil(ceil(11 x 0.7) x 1.5)
    assert job_cost(duration=11.0, price_multiplier=Decimal("1.0")) == 11
    settings.DIARIZATION_PRICE_FACTOR = 2.0
    assert job_cost(duration=11.0, price_multiplier=Decimal("1.0"), diarize=True) == 22


def test_one_known_speaker_needs_no_model_and_costs_the_factor(
    user: User, make_ready_file: MakeFile, queue: Run, anon: APIClient
) -> None:
    file = make_ready_file(user)
    response = queue(
        {
            "uuid": file.id.hex,
            "format": ["verbose_json", "srt"],
            "diarize": True,
            "speakers": 1,
            "word_timestamps": True,
        }
    )
    assert response.status_code == 200, response.content
    jobs = list(Transcription.objects.order_by("created_at"))
    assert {(job.diarize, job.speakers, job.status, job.cost) for job in jobs} == {(True, 1, "completed", 17)}
    assert balance(user) == 1000 - 2 * 17
    assert not TranscriptionUnit.objects.filter(kind=TranscriptionUnit.Kind.SPEAKERS).exists()
    verbose = anon.get(f"/api/v1/transcribe/{jobs[0].id.hex}").json()["data"]
    assert {segment["speaker"] for segment in verbose["segments"]} == {"SPEAKER_00"}
    assert {word["speaker"] for segment in verbose["segments"] for word in segment["words"]} == {"SPEAKER_00"}
    srt = anon.get(f"/api/v1/transcribe/{jobs[1].id.hex}").json()["data"]["text"]
    assert all(block.split("\n")[2].startswith("[SPEAKER_00] ") for block in srt.split("\n\n"))


def test_a_failed_diarized_job_is_refunded_what_it_was_charged(user: User, make_ready_file: MakeFile) -> None:
    file = make_ready_file(user)
    job = Transcription.objects.create(
        owner=user, file=file, model="ggml-tiny.en", language="en", format="verbose_json", diarize=True
    )
    with transaction.atomic():
        (claimed,) = runs.claim_and_charge(batch_id=job.batch_id, claim_token="task-1", file=file)
    assert claimed.cost == 17 and balance(user) == 983
    assert runs.transcription_batch_fail(batch_id=job.batch_id, claim_token="task-1", error="boom") == 1
    job.refresh_from_db()
    assert (job.status, job.cost, balance(user)) == ("failed", 0, 1000)


def test_a_lost_wav_fails_a_diarized_job_readably_and_refunds(
    user: User, make_ready_file: MakeFile, queue: Run
) -> None:
    from django.core.files.storage import default_storage

    file = make_ready_file(user)
    default_storage.delete(file.wav_name)
    queue({"uuid": file.id.hex, "diarize": True})
    job = Transcription.objects.get()
    assert (job.status, job.error, job.cost) == (
        "failed",
        "Transcription failed: the file's audio is missing from storage",
        0,
    )
    assert balance(user) == 1000


def test_four_voices_are_labelled_across_the_units_of_a_long_file(
    user: User, make_ready_file: MakeFile, queue: Run, anon: APIClient, speakers_wav: Path, settings: Any
) -> None:
    # Units of at most 20 s of speech: the 47.5 s clip is decoded in three, its speakers found once.
    settings.TRANSCRIPTION_UNIT_SECONDS = 20.0
    file = make_ready_file(user, wav=speakers_wav, duration=REFERENCE["duration"])
    response = queue({"uuid": file.id.hex, "format": ["verbose_json", "vtt"], "diarize": True})
    assert response.status_code == 200, response.content
    verbose_job, vtt_job = Transcription.objects.order_by("created_at")
    units = list(TranscriptionUnit.objects.filter(batch_id=verbose_job.batch_id).order_by("index"))
    kinds = [unit.kind for unit in units]
    assert kinds.count("transcribe") >= 2 and kinds[-1] == "speakers" and kinds.count("speakers") == 1
    body = anon.get(f"/api/v1/transcribe/{verbose_job.id.hex}").json()
    assert (body["status"], verbose_job.cost) == ("completed", 72)  # ceil(48 x 1.5)
    segments = body["data"]["segments"]
    assert "words" not in segments[0]  # word timestamps were only used to split
    # Named in order of first appearance, four of them; each reference turn's segments one speaker's.
    names = list(dict.fromkeys(segment["speaker"] for segment in segments))
    assert names == [f"SPEAKER_{n:02d}" for n in range(4)]
    person_of: dict[str, set[str]] = {}
    for turn in REFERENCE["turns"]:
        inside = [s for s in segments if turn["start"] - 0.3 <= (s["start"] + s["end"]) / 2 <= turn["end"] + 0.3]
        for segment in inside:
            person_of.setdefault(turn["speaker"], set()).add(segment["speaker"])
    wrong = sum(len(labels) - 1 for labels in person_of.values())
    assert wrong <= 1 and len(person_of) == 4, person_of
    vtt = anon.get(f"/api/v1/transcribe/{vtt_job.id.hex}").json()["data"]["text"]
    assert {line.split(">")[0] + ">" for line in vtt.split("\n") if line.startswith("<v ")} == {
        f"<v {name}>" for name in names
    }


# --- The OpenAI-compatible route -------------------------------------------------------------


def openai_client(user: User) -> APIClient:
    from accounts import services as account_services

    _, key = account_services.api_key_create(user=user, name="openai")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def openai_post(client: APIClient, path: str, **fields: Any) -> Any:
    with (DATA_DIR / "jfk.flac").open("rb") as audio:
        return client.post(path, {"file": audio, "model": "whisper-1", **fields}, format="multipart")


@pytest.mark.django_db(transaction=True)
def test_diarized_json_answers_as_openais_diarizing_model(installed_models: Path) -> None:
    from tests.conftest import make_user

    user, _ = make_user("diarized")
    client = openai_client(user)
    response = openai_post(client, "/api/v1/audio/transcriptions", response_format="diarized_json")
    assert (response.status_code, response["Content-Type"]) == (200, "application/json"), response.content
    body = response.json()
    assert set(body) == {"task", "duration", "text", "segments"}
    assert (body["task"], body["duration"]) == ("transcribe", 11.0)
    assert body["segments"] and [s["id"] for s in body["segments"]] == [
        f"seg_{n}" for n in range(len(body["segments"]))
    ]
    for segment in body["segments"]:
        assert set(segment) == {"type", "id", "start", "end", "text", "speaker"}
        assert segment["type"] == "transcript.text.segment" and segment["speaker"] == "A"  # one voice: A
    assert " ".join(s["text"] for s in body["segments"]).split() == body["text"].split()
    job = Transcription.objects.get(owner=user)
    assert (job.format, job.diarize, job.word_timestamps, job.cost) == ("verbose_json", True, False, 17)
    assert balance(user) == 1000 - 17


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "fields", "message"),
    [
        (
            "/api/v1/audio/transcriptions",
            {"response_format": "diarized_json", "timestamp_granularities[]": "word"},
            "response_format must be verbose_json when timestamp_granularities[] is given",
        ),
        (
            "/api/v1/audio/translations",
            {"response_format": "diarized_json"},
            "Invalid response_format: diarized_json. Must be one of: json, text, srt, verbose_json, vtt",
        ),
    ],
)
def test_diarized_json_is_for_transcriptions_without_granularities(
    user: User, installed_models: Path, path: str, fields: dict[str, Any], message: str
) -> None:
    response = openai_post(openai_client(user), path, **fields)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["message"] == message
    assert not Transcription.objects.exists()


# --- Recovery of the speakers unit -------------------------------------------------------------


def diarized_batch_with_lost_speakers(user: User, make_ready_file: MakeFile, queue: Run, *, attempts: int) -> Any:
    """A diarized jfk.flac batch whose speakers unit's worker died mid-run ``attempts`` claims ago."""
    import datetime as dt

    from django.utils import timezone

    file = make_ready_file(user)
    assert queue({"uuid": file.id.hex, "diarize": True, "speakers": 2}).status_code == 200
    job = Transcription.objects.get()
    assert job.status == "completed"
    # As it was before the speakers were stored: the jobs processing, the unit held by a dead task.
    Transcription.objects.update(status="processing", data=None, progress=0.5)
    TranscriptionUnit.objects.filter(kind="speakers").update(
        status="processing",
        claim_token="dead-task",
        result=None,
        attempts=attempts,
        claimed_at=timezone.now() - dt.timedelta(days=1),
    )
    return job


def test_a_speakers_unit_whose_worker_died_is_sent_again_and_completes_the_batch(
    user: User, make_ready_file: MakeFile, queue: Run, anon: APIClient, django_capture_on_commit_callbacks: Any
) -> None:
    from transcriptions.services import transcription_units_requeue_stuck

    job = diarized_batch_with_lost_speakers(user, make_ready_file, queue, attempts=1)
    with django_capture_on_commit_callbacks(execute=True):
        # Its own message, sent again (eager: run at once, by a new task).
        assert transcription_units_requeue_stuck(older_than=600) == 1
    unit = TranscriptionUnit.objects.get(kind="speakers")
    assert (unit.status, unit.attempts) == ("done", 2) and unit.claim_token != "dead-task"
    body = anon.get(f"/api/v1/transcribe/{job.id.hex}").json()
    assert body["status"] == "completed"
    assert {segment["speaker"] for segment in body["data"]["segments"]} <= {"SPEAKER_00", "SPEAKER_01"}
    assert balance(user) == 1000 - 17  # charged once


def test_a_speakers_unit_lost_too_often_fails_its_batch_refunded(
    user: User, make_ready_file: MakeFile, queue: Run, django_capture_on_commit_callbacks: Any, settings: Any
) -> None:
    from transcriptions.services import transcription_units_requeue_stuck

    job = diarized_batch_with_lost_speakers(user, make_ready_file, queue, attempts=settings.TRANSCRIPTION_MAX_ATTEMPTS)
    with django_capture_on_commit_callbacks(execute=True):
        transcription_units_requeue_stuck(older_than=600)
    job.refresh_from_db()
    assert (job.status, job.cost) == ("failed", 0)
    assert job.error == "Transcription failed after 3 attempts: the worker stopped before it finished"
    assert balance(user) == 1000
    assert not TranscriptionUnit.objects.exists()


def test_a_speakers_unit_of_cancelled_jobs_is_dropped_unrun(user: User, make_ready_file: MakeFile, queue: Run) -> None:
    from transcriptions.services import transcription_speakers_run

    diarized_batch_with_lost_speakers(user, make_ready_file, queue, attempts=1)
    Transcription.objects.update(status="cancelled", cost=0)
    unit = TranscriptionUnit.objects.get(kind="speakers")
    TranscriptionUnit.objects.filter(id=unit.id).update(status="pending", claim_token="")
    assert transcription_speakers_run(unit_id=unit.id, claim_token="task-2") is False
    assert not TranscriptionUnit.objects.exists()


def test_a_speakers_unit_that_still_beats_is_left_to_its_worker_past_a_units_limit(
    user: User, make_ready_file: MakeFile, queue: Run, django_capture_on_commit_callbacks: Any
) -> None:
    import datetime as dt

    from django.utils import timezone

    from files.models import File
    from transcriptions.services import transcription_units_requeue_stuck

    diarized_batch_with_lost_speakers(user, make_ready_file, queue, attempts=1)
    # An hour of audio, diarized for half an hour so far: far past a transcribing unit's
    # hard limit, well within the whole file's, and its heartbeat heard 10 s ago.
    File.objects.update(duration=3600.0)
    now = timezone.now()
    speakers = TranscriptionUnit.objects.filter(kind="speakers")
    speakers.update(claimed_at=now - dt.timedelta(minutes=30), heartbeat_at=now - dt.timedelta(seconds=10))
    with django_capture_on_commit_callbacks(execute=True):
        assert transcription_units_requeue_stuck(older_than=600, now=now) == 0
    assert speakers.get().status == "processing"
    # Its worker goes silent: the unit is sent again and run by another task.
    speakers.update(heartbeat_at=now - dt.timedelta(minutes=10))
    with django_capture_on_commit_callbacks(execute=True):
        assert transcription_units_requeue_stuck(older_than=600, now=now) == 1
    assert (speakers.get().status, speakers.get().attempts) == ("done", 2)
    assert set(Transcription.objects.values_list("status", flat=True)) == {"completed"}
