"""End to end with a real worker: progress while a job runs, queue positions, cancelling a running job."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from files.models import File
from tests.transcriptions.conftest import DATA_DIR, ffmpeg
from tests.transcriptions.e2e.conftest import E2E, upload, wait_for
from tests.transcriptions.e2e.test_e2e import balance, client_for, transcribe, wait_done
from tests.transcriptions.e2e.test_e2e_scheduling import readings  # noqa: F401  (fixture)
from transcriptions.models import Transcription, TranscriptionUnit

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def twice_read(readings: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    """The five readings of jfk.flac twice: 310 s, long enough to be cancelled while it runs."""
    path = tmp_path_factory.mktemp("twice") / "twice.flac"
    ffmpeg("-i", str(readings), "-i", str(readings), "-filter_complex", "[0:a][1:a]concat=n=2:v=0:a=1", str(path))
    return path


def converted(client: APIClient, path: Path) -> str:
    file_id = upload(client, path)
    wait_for(lambda: File.objects.filter(id=file_id).exclude(wav_name="").exists(), what="the conversion")
    return file_id


def test_progress_positions_and_a_running_job_cancelled_and_refunded(e2e: E2E, twice_read: Path) -> None:
    owner, client = client_for("watcher")
    _, second = client_for("second_in_line")
    _, third = client_for("third_in_line")
    waiting = [converted(other, DATA_DIR / "jfk.flac") for other in (second, third)]
    # 310 s without the VAD: spans of at most 30 s (E2E_UNIT_SECONDS), decoded one after another.
    (job_id,) = transcribe(
        client, {"uuid": upload(client, twice_read), "model": "ggml-base", "language": "en", "vad_filter": False}
    )
    wait_for(lambda: Transcription.objects.filter(id=job_id, status="processing").exists(), what="the long job")
    queued = [transcribe(other, {"uuid": file_id})[0] for other, file_id in zip((second, third), waiting, strict=True)]
    positions = [client.get(f"/api/v1/transcribe/{queued_id}").json()["queue_position"] for queued_id in queued]
    assert positions == [1, 2]  # the worker is on the long job's first span (seconds)

    # Progress while it runs: strictly between 0 and 1, never going back.
    seen: list[float] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (seen and 0 < seen[-1] < 1 and len(set(seen)) >= 2):
        seen.append(client.get(f"/api/v1/transcribe/{job_id}").json()["progress"])
        time.sleep(0.2)
    assert any(0 < value < 1 for value in seen) and seen == sorted(seen), seen
    for body in wait_done(queued):
        assert body["status"] == "completed"  # the two short jobs went before the long job's other spans

    # Cancelled while its worker decodes it: the worker stops within seconds, the charge comes back.
    batch_id = Transcription.objects.get(id=job_id).batch_id
    wait_for(
        lambda: TranscriptionUnit.objects.filter(batch_id=batch_id, status="processing").exists(),
        what="a span of the long job in hand",
    )
    cancelled_at = timezone.now()
    response = client.post(f"/api/v1/transcribe/{job_id}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    wait_for(lambda: not TranscriptionUnit.objects.filter(batch_id=batch_id).exists(), timeout=15, what="units dropped")
    (next_id,) = transcribe(second, {"uuid": waiting[0]})
    (body,) = wait_done([next_id])
    assert body["status"] == "completed"
    next_started = Transcription.objects.get(id=next_id).started_at
    assert (next_started - cancelled_at).total_seconds() < 15  # the worker was free for it
    job = Transcription.objects.get(id=job_id)
    assert (job.status, job.cost, balance(owner)) == ("cancelled", 0, 1000)
    # Stopped mid-span at its next progress write, or, where the span in hand ended first,
    # the next one dropped unclaimed: either way no more of it was decoded.
    log = e2e.worker.log()
    assert "its jobs were cancelled or deleted" in log or f"{batch_id.hex} dropped: its jobs are gone" in log
    assert client.post(f"/api/v1/transcribe/{job_id}/cancel").status_code == 409
