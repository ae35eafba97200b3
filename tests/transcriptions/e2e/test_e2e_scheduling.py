"""End to end with real workers: a long file's units decoded by two worker processes and merged."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

from tests.transcriptions.conftest import DATA_DIR, ffmpeg
from tests.transcriptions.e2e.conftest import E2E, E2E_UNIT_SECONDS, upload, wait_for
from tests.transcriptions.e2e.test_e2e import balance, client_for, transcribe, wait_done
from transcriptions.models import Transcription, TranscriptionUnit

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


READINGS = 5
# jfk.flac (11 s, about 9.5 s of it speech as the VAD hears it) and 20 s of silence,
# READINGS times: 155 s, two units of at most E2E_UNIT_SECONDS (30 s) of speech.
READING_EVERY = 31.0


@pytest.fixture(scope="module")
def readings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """jfk.flac read five times, 20 s of silence after each: 155 s of audio, 55 s of speech."""
    path = tmp_path_factory.mktemp("long") / "readings.flac"
    inputs = [arg for _ in range(READINGS) for arg in ("-i", str(DATA_DIR / "jfk.flac"))]
    padded = "".join(f"[{i}:a]apad=whole_dur={READING_EVERY}[r{i}];" for i in range(READINGS))
    joined = "".join(f"[r{i}]" for i in range(READINGS)) + f"concat=n={READINGS}:v=0:a=1"
    ffmpeg(*inputs, "-filter_complex", padded + joined, "-ar", "16000", "-ac", "1", str(path))
    return path


def assert_every_reading(segments: list[dict]) -> None:
    """jfk.flac read READINGS times, each at its place, every word of it there."""
    text = " ".join(re.sub(r"[^a-z ]", " ", segment["text"].lower()) for segment in segments)
    assert " ".join(text.split()).count("ask not what your country can do for you") == READINGS, text
    # Each reading's first word where it is read (a segment may start in the silence before).
    words = [word for segment in segments for word in segment["words"]]
    openings = [word["start"] for word in words if word["word"].strip(" ,.").lower() == "fellow"]
    assert len(openings) == READINGS, [(s["start"], s["text"]) for s in segments]
    for index, start in enumerate(openings):
        assert abs(start - (index * READING_EVERY + 0.9)) <= 1.0, openings


def test_a_long_file_runs_on_two_workers_and_is_merged_in_order(e2e: E2E, readings: Path) -> None:

    helper = e2e.start_worker(concurrency=1, name="units")
    try:
        wait_for(lambda: "Loaded model" in helper.log(), what="the second worker's model")
        user, client = client_for("long_form")
        (job_id,) = transcribe(
            client, {"uuid": upload(client, readings), "format": "verbose_json", "word_timestamps": True}
        )
        (body,) = wait_done([job_id], timeout=240)
        assert body["status"] == "completed", (body, e2e.worker.log()[-3000:], helper.log()[-3000:])
        job = Transcription.objects.get(id=job_id)
        units = list(TranscriptionUnit.objects.filter(batch_id=job.batch_id).order_by("index"))
        # Two units of at most 30 s of speech each, cut in a pause (windows may touch).
        assert [(unit.status, unit.attempts) for unit in units] == [("done", 1), ("done", 1)]
        assert units[0].start <= 0.4 and units[0].end <= units[1].start
        assert units[1].end >= 4 * READING_EVERY + 10.5
        for unit in units:
            stretches = [tuple(s) for w in unit.windows for s in (w["speech"] or [(w["start"], w["end"])])]
            assert 0 < sum(end - start for start, end in stretches) <= E2E_UNIT_SECONDS
        # Two tasks, one in each worker process (each was idle while the other decoded).
        assert units[0].claim_token != units[1].claim_token
        decoded = f"batch={job.batch_id.hex}"
        for worker in (e2e.worker, helper):
            assert any(decoded in line and "Transcription unit" in line for line in worker.log().splitlines())
        assert job.cost == 155 and balance(user) == 1000 - 155
        segments = body["data"]["segments"]
        starts = [segment["start"] for segment in segments]
        assert starts == sorted(starts) and segments[-1]["end"] <= 155.0
        # Each copy of the clip opens with jfk.flac: once from 0 s, once from 65 s.
        assert_every_reading(segments)
    finally:
        helper.stop()


def test_a_worker_killed_in_a_unit_loses_that_unit_only_and_the_job_is_charged_once(e2e: E2E, readings: Path) -> None:
    user, client = client_for("unit_survivor")
    (job_id,) = transcribe(
        client, {"uuid": upload(client, readings), "format": "verbose_json", "word_timestamps": True}
    )
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
    assert job.cost == 155 and balance(user) == 1000 - 155
    assert_every_reading(body["data"]["segments"])
    assert pool_pid not in e2e.worker.pool_pids()
