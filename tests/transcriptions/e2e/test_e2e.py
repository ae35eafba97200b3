"""End to end through the API, with a real Celery worker on the real Redis."""

from __future__ import annotations

import datetime as dt
import os
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import User
from files.models import File
from tests.conftest import make_user
from tests.transcriptions.conftest import DATA_DIR, JFK_REFERENCE, ffmpeg, subtitle_text, word_error_rate
from tests.transcriptions.e2e.conftest import E2E, E2E_REDIS_URL, upload, wait_for
from transcriptions.models import Transcription, TranscriptionUnit

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

TERMINAL = ("completed", "failed")
CLIP60 = Path(__file__).resolve().parents[3] / "bench" / "data" / "clip60.flac"


def client_for(username: str, **extra: Any) -> tuple[User, APIClient]:
    user, session = make_user(username, **extra)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Basic {session.id.hex}")
    return user, client


def transcribe(client: APIClient, body: dict[str, Any]) -> list[str]:
    response = client.post("/api/v1/transcribe", body, format="json")
    assert response.status_code == 200, response.content
    return [row["uuid"] for row in response.json()["transcriptions"]]


def wait_done(job_ids: list[str], timeout: float = 120.0) -> list[dict[str, Any]]:
    """Poll GET /transcribe/:uuid (public) until every job is completed or failed."""
    reader = APIClient()

    def done() -> list[dict[str, Any]] | None:
        bodies = [reader.get(f"/api/v1/transcribe/{job_id}").json() for job_id in job_ids]
        return bodies if all(body["status"] in TERMINAL for body in bodies) else None

    return wait_for(done, timeout=timeout, what=f"jobs {job_ids}")


def balance(user: User) -> int:
    return User.objects.values_list("token_balance", flat=True).get(pk=user.pk)


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e-media")


def test_jfk_in_three_formats_with_the_tiny_model(e2e: E2E) -> None:
    user, client = client_for("kennedy")
    file_id = upload(client, DATA_DIR / "jfk.flac")
    job_ids = transcribe(client, {"uuid": file_id, "model": "ggml-tiny.en", "format": ["verbose_json", "srt", "vtt"]})
    verbose, srt, vtt = wait_done(job_ids)
    assert [body["status"] for body in (verbose, srt, vtt)] == ["completed"] * 3, (verbose, e2e.worker.log()[-3000:])
    assert word_error_rate(JFK_REFERENCE, verbose["data"]["text"]) <= 0.1
    assert verbose["data"]["language"] == "en" and verbose["language"] == "en"
    srt_lines = srt["data"]["text"].split("\n")
    assert srt_lines[0] == "1" and " --> " in srt_lines[1]
    assert word_error_rate(JFK_REFERENCE, subtitle_text(srt["data"]["text"])) <= 0.1
    assert vtt["data"]["text"].startswith("WEBVTT\n\n00:00:00.000 --> ")
    assert balance(user) == 1000 - 3 * 11
    # One inference run served the three formats.
    assert len(set(Transcription.objects.values_list("batch_id", flat=True))) == 1
    listing = APIClient().get(f"/api/v1/transcribe/{file_id}").json()["transcriptions"]
    assert [row["uuid"] for row in listing] == job_ids


def test_a_user_with_5_tokens_gets_the_insufficient_balance_failure(e2e: E2E) -> None:
    user, client = client_for("frugal", token_balance=5)
    file_id = upload(client, DATA_DIR / "jfk.flac")
    (body,) = wait_done(transcribe(client, {"uuid": file_id}))
    assert body["status"] == "failed"
    assert body["error"] == "Insufficient token balance. Required: 11, Available: 5"
    assert balance(user) == 5


def test_video_and_opus_uploads_transcribe_and_ggml_base_detects_the_language(e2e: E2E, media_dir: Path) -> None:
    video = media_dir / "jfk.mp4"
    ffmpeg(
        "-f", "lavfi", "-i", "color=c=navy:s=160x120:r=10:d=11", "-i", str(DATA_DIR / "jfk.flac"),
        "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-shortest", str(video),
    )  # fmt: skip
    opus = media_dir / "jfk.opus"
    ffmpeg("-i", str(DATA_DIR / "jfk.flac"), "-c:a", "libopus", "-b:a", "32k", str(opus))
    user, client = client_for("media_fan")
    video_jobs = transcribe(client, {"uuid": upload(client, video), "format": "srt"})
    opus_jobs = transcribe(client, {"uuid": upload(client, opus), "model": "ggml-base"})
    video_body, opus_body = wait_done(video_jobs + opus_jobs)
    assert (video_body["status"], opus_body["status"]) == ("completed", "completed"), e2e.worker.log()[-3000:]
    srt_text = subtitle_text(video_body["data"]["text"])
    assert word_error_rate(JFK_REFERENCE, srt_text) <= 0.1
    # Nothing was requested: ggml-base (multilingual) detected the language.
    assert opus_body["model"] == "ggml-base"
    assert opus_body["language"] == "en" and opus_body["data"]["language"] == "en"
    assert word_error_rate(JFK_REFERENCE, opus_body["data"]["text"]) <= 0.1


def test_a_job_survives_its_worker_being_killed_and_is_charged_once(e2e: E2E) -> None:
    # 60 s of varied speech (the benchmark's clip): seconds of inference, time to catch the
    # job processing. (A loop of jfk.flac would send Whisper into fallback decoding.)
    user, client = client_for("survivor")
    file_id = upload(client, CLIP60)
    (job_id,) = transcribe(client, {"uuid": file_id, "format": "verbose_json"})
    wait_for(
        lambda: Transcription.objects.filter(id=job_id, status="processing").exists(),
        what="the job to be processing",
    )
    time.sleep(0.3)  # inside the inference (about 3 s)
    (pool_pid,) = e2e.worker.pool_pids()
    os.kill(pool_pid, signal.SIGKILL)

    (body,) = wait_done([job_id], timeout=180)
    assert body["status"] == "completed", (body, e2e.worker.log()[-3000:])
    job = Transcription.objects.get(id=job_id)
    assert job.attempts == 2  # claimed, killed, retaken by the redelivered message
    assert job.cost == 60
    assert balance(user) == 1000 - 60
    # The clip opens with JFK's sentence (one segment or more, as Whisper punctuates it).
    opening = " ".join(body["data"]["text"].split()[: len(JFK_REFERENCE.split())])
    assert word_error_rate(JFK_REFERENCE, opening) <= 0.1
    assert pool_pid not in e2e.worker.pool_pids()


def test_more_jobs_than_the_balance_covers_never_overdraw_it(e2e: E2E) -> None:
    owner, client = client_for("racer", token_balance=2 * 11)
    file_id = upload(client, DATA_DIR / "jfk.flac")
    # A second worker with two pool processes: three processes claim at once. Each of its
    # processes runs its model on half the cores.
    extra = e2e.start_worker(concurrency=2, name="extra")
    per_process = max(1, (os.cpu_count() or 1) // 2)
    wait_for(lambda: extra.log().count(f", {per_process} threads) in ") == 2, what="the extra worker's models")
    job_ids: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def post() -> None:
        try:
            barrier.wait()
            job_ids.extend(transcribe(client, {"uuid": file_id}))
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=post) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(job_ids) == 6
    try:
        bodies = wait_done(job_ids)
    finally:
        extra.stop()  # the next tests count on the session's one worker
    assert sorted(body["status"] for body in bodies) == ["completed"] * 2 + ["failed"] * 4
    assert {body["error"] for body in bodies if body["status"] == "failed"} == {
        "Insufficient token balance. Required: 11, Available: 0"
    }
    assert balance(owner) == 0


def test_a_lost_queue_message_is_recovered(e2e: E2E) -> None:
    user, client = client_for("unlucky")
    file_id = upload(client, DATA_DIR / "jfk.flac")
    wait_for(lambda: File.objects.filter(id=file_id, state="ready").exists(), what="the conversion")
    # Send the batch where no worker listens, then lose that queue (as a restarted Redis would).
    lost_queue = f"lost-{uuid.uuid4().hex[:8]}"
    queue, settings.TRANSCRIPTION_QUEUE = settings.TRANSCRIPTION_QUEUE, lost_queue
    try:
        (job_id,) = transcribe(client, {"uuid": file_id})
    finally:
        settings.TRANSCRIPTION_QUEUE = queue
    broker = redis.Redis.from_url(E2E_REDIS_URL)
    assert broker.llen(lost_queue) == 1
    broker.delete(lost_queue)
    broker.close()
    time.sleep(1.0)
    assert Transcription.objects.get(id=job_id).status == "pending"

    call_command("requeue_stuck", "--older-than", "0", verbosity=0)
    (body,) = wait_done([job_id])
    assert body["status"] == "completed"
    assert balance(user) == 1000 - 11


def test_a_job_held_by_a_lost_worker_is_recovered_without_a_second_charge(e2e: E2E) -> None:
    user, client = client_for("patient")
    file_id = upload(client, DATA_DIR / "jfk.flac")
    (job_id,) = transcribe(client, {"uuid": file_id})
    wait_done([job_id])
    # What a worker that vanished mid-run (machine lost) leaves behind: the job claimed and
    # charged long ago, processing, its unit (the whole file) too, its message gone.
    long_ago = timezone.now() - dt.timedelta(hours=3)
    lost = "task-of-a-lost-worker"
    Transcription.objects.filter(id=job_id).update(
        status="processing", claim_token=lost, data=None, processed_at=None, started_at=long_ago
    )
    job = Transcription.objects.get(id=job_id)
    assert TranscriptionUnit.objects.filter(batch_id=job.batch_id).update(
        status="processing", claim_token=lost, claimed_at=long_ago, result=None
    )
    charged = balance(user)
    call_command("requeue_stuck", "--older-than", "60", verbosity=0)
    (body,) = wait_done([job_id])
    assert body["status"] == "completed"
    job.refresh_from_db()
    unit = TranscriptionUnit.objects.get(batch_id=job.batch_id)
    assert (unit.status, unit.attempts) == ("done", 2) and unit.claim_token != lost  # decoded again
    assert job.cost == 11
    assert balance(user) == charged == 1000 - 11
