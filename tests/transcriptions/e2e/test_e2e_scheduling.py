"""End to end with real workers: a long file's units decoded by two worker processes and merged."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from django.conf import settings

from tests.transcriptions.conftest import JFK_REFERENCE, ffmpeg, word_error_rate
from tests.transcriptions.e2e.conftest import E2E, upload, wait_for
from tests.transcriptions.e2e.test_e2e import CLIP60, balance, client_for, transcribe, wait_done
from transcriptions.models import Transcription, TranscriptionUnit

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def clip130(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """clip60.flac and 5 s of silence, twice: 130 s, two units of 65 s with the default settings.

    The cut falls in the silence: the stand-in's fixed cuts do not look for one (the
    engine's VAD-bounded windows will).
    """
    path = tmp_path_factory.mktemp("long") / "clip130.flac"
    clip = str(CLIP60)
    ffmpeg(
        "-i", clip, "-i", clip,
        "-filter_complex", "[0:a]apad=pad_dur=5[a];[1:a]apad=pad_dur=5[b];[a][b]concat=n=2:v=0:a=1",
        "-ar", "16000", "-ac", "1", str(path),
    )  # fmt: skip
    return path


def test_a_long_file_runs_on_two_workers_and_is_merged_in_order(e2e: E2E, clip130: Path) -> None:
    assert settings.TRANSCRIPTION_UNIT_SECONDS == 120  # the workers' default too
    helper = e2e.start_worker(concurrency=1, name="units")
    try:
        wait_for(lambda: "Loaded model" in helper.log(), what="the second worker's model")
        user, client = client_for("long_form")
        (job_id,) = transcribe(client, {"uuid": upload(client, clip130), "format": "verbose_json"})
        (body,) = wait_done([job_id], timeout=240)
        assert body["status"] == "completed", (body, e2e.worker.log()[-3000:], helper.log()[-3000:])
        job = Transcription.objects.get(id=job_id)
        units = list(TranscriptionUnit.objects.filter(batch_id=job.batch_id).order_by("index"))
        assert [(unit.start, unit.end, unit.status, unit.attempts) for unit in units] == [
            (0.0, 65.0, "done", 1),
            (65.0, 130.0, "done", 1),
        ]
        # Two tasks, one in each worker process (each was idle while the other decoded).
        assert units[0].claim_token != units[1].claim_token
        decoded = f"batch={job.batch_id.hex}"
        for worker in (e2e.worker, helper):
            assert any(decoded in line and "Transcription unit" in line for line in worker.log().splitlines())
        assert job.cost == 130 and balance(user) == 1000 - 130
        segments = body["data"]["segments"]
        starts = [segment["start"] for segment in segments]
        assert starts == sorted(starts) and segments[-1]["end"] <= 130.0
        # Each copy of the clip opens with jfk.flac: once from 0 s, once from 65 s.
        openings = [segment for segment in segments if word_error_rate(JFK_REFERENCE, segment["text"]) <= 0.2]
        assert [round(segment["start"]) for segment in openings] == [0, 65], [
            (segment["start"], segment["text"])
            for segment in segments
            if 50 < segment["start"] < 75 or segment["id"] < 2
        ]
    finally:
        helper.stop()


def test_a_worker_killed_in_a_unit_loses_that_unit_only_and_the_job_is_charged_once(e2e: E2E, clip130: Path) -> None:
    user, client = client_for("unit_survivor")
    (job_id,) = transcribe(client, {"uuid": upload(client, clip130), "format": "verbose_json"})
    job = wait_for(
        lambda: Transcription.objects.filter(id=job_id, status="processing").first(), what="the job to be processing"
    )
    wait_for(
        lambda: TranscriptionUnit.objects.filter(batch_id=job.batch_id, status="processing").exists(),
        what="a unit to be processing",
    )
    time.sleep(0.5)  # inside the unit's inference (seconds)
    (pool_pid,) = e2e.worker.pool_pids()
    os.kill(pool_pid, signal.SIGKILL)

    (body,) = wait_done([job_id], timeout=240)
    assert body["status"] == "completed", (body, e2e.worker.log()[-3000:])
    units = list(TranscriptionUnit.objects.filter(batch_id=job.batch_id).order_by("index"))
    # The unit in hand was retaken by the redelivered message; the other ran once.
    assert sorted(unit.attempts for unit in units) == [1, 2]
    assert {unit.status for unit in units} == {"done"}
    job.refresh_from_db()
    assert job.cost == 130 and balance(user) == 1000 - 130
    openings = [
        segment for segment in body["data"]["segments"] if word_error_rate(JFK_REFERENCE, segment["text"]) <= 0.2
    ]
    assert [round(segment["start"]) for segment in openings] == [0, 65]
    assert pool_pid not in e2e.worker.pool_pids()
