"""Two workers as on two machines (data folders of their own, media on S3): one is SIGKILLed mid-job."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from rest_framework.test import APIClient

from tests.conftest import make_user
from tests.faults.conftest import (
    BENCH_DATA,
    RedisServer,
    Stack,
    child_pids,
    free_port,
    kill_worker,
    outcome,
    ready_file,
    wait_finished,
    wait_for,
    wait_port,
)
from transcriptions.models import Transcription, TranscriptionUnit

pytestmark = [pytest.mark.faults, pytest.mark.django_db(transaction=True)]

BUCKET = "faults-media"
S3_KEYS = {"S3_ACCESS_KEY_ID": "testing", "S3_SECRET_ACCESS_KEY": "testing", "S3_REGION": "us-east-1"}
# clip60.flac: 60 s of speech, cut into units of at most 10 s of it.
UNIT_SECONDS = 10
CLIP_COST = 60


@pytest.fixture
def s3_media(settings: Any, tmp_path: Path) -> Iterator[str]:
    """moto's S3 server as a separate process, a bucket on it, and the default storage there."""
    port = free_port()
    with (tmp_path / "moto.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_port(port)
        boto3.client("s3", endpoint_url=endpoint, **_boto_keys()).create_bucket(Bucket=BUCKET)
        settings.STORAGES = {
            **settings.STORAGES,
            "default": {
                "BACKEND": "storages.backends.s3.S3Storage",
                "OPTIONS": {
                    "bucket_name": BUCKET,
                    "endpoint_url": endpoint,
                    "access_key": "testing",
                    "secret_key": "testing",
                    "region_name": "us-east-1",
                    "file_overwrite": True,
                    "querystring_auth": False,
                },
            },
        }
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=10)


def _boto_keys() -> dict[str, str]:
    return {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}


def files_under(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file() and "celerybeat" not in path.name]


def test_a_worker_killed_mid_unit_leaves_its_unit_to_the_other(
    own_redis: RedisServer, stack_for: Any, s3_media: str, wav_of: Any
) -> None:
    s3_env = {"S3_BUCKET": BUCKET, "S3_ENDPOINT_URL": s3_media, **S3_KEYS}
    stack: Stack = stack_for(own_redis.url, TRANSCRIPTION_UNIT_SECONDS=str(UNIT_SECONDS), **s3_env)
    # Each with its own data folder (and so its own media and scratch folders) and its own
    # working folder: what one has on disk, the other never sees. The survivor runs beat.
    doomed = stack.start_worker("doomed")
    survivor = stack.start_worker("survivor", beat=True)
    user, session = make_user("long_form")
    file = ready_file(user, wav_of(BENCH_DATA / "clip60.flac"), duration=60.0)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Basic {session.id.hex}")
    response = client.post(
        "/api/v1/transcribe", {"uuid": file.id.hex, "format": ["verbose_json", "srt"]}, format="json"
    )
    assert response.status_code == 200, response.content
    job_ids = [row["uuid"] for row in response.json()["transcriptions"]]

    # The doomed worker's pool process holds a unit: kill the whole worker, as a machine lost.
    (pool_pid,) = child_pids(doomed.process.pid)
    held_by = f"{socket.gethostname()}:{pool_pid}"
    held = wait_for(
        lambda: TranscriptionUnit.objects.filter(file=file, status="processing", worker=held_by).first(),
        timeout=60,
        what="the doomed worker to hold a unit",
    )
    kill_worker(doomed)

    jobs = wait_finished(job_ids, timeout=60, stack=stack)
    figures = outcome("lost-worker-s3", job_ids, costs={job.id: CLIP_COST for job in jobs}, users=[user])
    units = list(TranscriptionUnit.objects.filter(file=file).order_by("index"))
    print(
        f"  {len(units)} units; unit {held.index} held by the killed worker, retaken "
        f"(attempts {next(u.attempts for u in units if u.id == held.id)}) by {units[held.index].worker}"
    )
    assert figures["completed"] == 2, stack.logs()
    retaken = next(unit for unit in units if unit.id == held.id)
    assert retaken.status == "done" and retaken.attempts == 2 and retaken.worker != held_by
    assert all(unit.status == "done" for unit in units) and len(units) > 2
    assert "lost its worker" in survivor.log()
    # The result is whole: the clip's words from its first second to its last.
    data = Transcription.objects.get(id=job_ids[0]).data
    assert data["segments"][0]["start"] < 2.0 and data["segments"][-1]["end"] > 55.0
    # Every byte on S3: neither worker's data folder kept any media.
    for worker_dir in (stack.base / "doomed", stack.base / "survivor"):
        assert [path.name for path in files_under(worker_dir) if path.suffix in {".wav", ".mp3"}] == []
