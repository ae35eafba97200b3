"""The data folder's disk full under ``manage.py serve``: small tmpfs mounts as its spool and media folders."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import redis_queues_delete, redis_required
from tests.faults.conftest import BENCH_DATA, START_BALANCE, logger
from tests.site.conftest import REDIS_URL, Served, serve_start

pytestmark = [pytest.mark.faults, pytest.mark.served]

# 1.8 MB of FLAC: more than either disk holds. 417 KB of Opus whose 5 minutes make a 9.6 MB WAV.
LARGE = BENCH_DATA / "clip60.flac"
SMALL_LONG = BENCH_DATA / "english-5min.opus"
DISK = "1m"


def mount_tmpfs(folder: Path, size: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True, capture_output=True
    )


def unmount(folder: Path) -> None:
    subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def files_in(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


@pytest.fixture
def full_disks(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """The spool (DATA_DIR/tmp) and media (DATA_DIR/media) folders, each a tmpfs of 1 MiB."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    data_dir = tmp_path / "data"
    spool, media = data_dir / "tmp", data_dir / "media"
    mounted: list[Path] = []
    try:
        for folder in (spool, media):
            try:
                mount_tmpfs(folder, DISK)
            except (subprocess.CalledProcessError, FileNotFoundError) as exc:
                pytest.skip(f"cannot mount a tmpfs here: {getattr(exc, 'stderr', b'') or exc}")
            mounted.append(folder)
        yield spool, media
    finally:
        for folder in mounted:
            unmount(folder)


@pytest.fixture
def server(full_disks: tuple[Path, Path]) -> Iterator[Served]:
    redis_required(REDIS_URL)
    queue = f"faults-disk-{uuid.uuid4().hex[:12]}"
    spool, _ = full_disks
    served = serve_start(
        spool.parent,
        REDIS_URL=REDIS_URL,
        CELERY_TASK_DEFAULT_QUEUE=queue,
        CONVERSION_QUEUE=queue,
        WEBHOOK_QUEUE=queue,
        workers=("worker",),
    )
    try:
        yield served
    finally:
        served.stop()
        redis_queues_delete(REDIS_URL, [queue])


def test_a_full_disk_refuses_uploads_with_507_and_fails_conversions_uncharged(
    server: Served, full_disks: tuple[Path, Path]
) -> None:
    spool, media = full_disks
    _, api_key = server.register("diskfull")
    auth = f"Bearer {api_key}"

    # The spool fills while the part streams in.
    status, body = server.post_file(LARGE, api_key)
    assert (status, body) == (507, b"Insufficient storage")
    assert files_in(spool) == [] and files_in(media) == []

    # Room in the spool, none in the media folder: the copy into storage fills it.
    subprocess.run(["mount", "-o", "remount,size=64m", str(spool)], check=True)
    status, body = server.post_file(LARGE, api_key)
    assert (status, body) == (507, b"Insufficient storage")
    assert files_in(spool) == [] and files_in(media) == []
    assert json.loads(server.request("GET", "/api/v1/file", auth=auth)[1])["files"] == []

    # The upload fits; its WAV (9.6 MB) does not: the file fails, and so does its job, uncharged.
    status, body = server.post_file(SMALL_LONG, api_key)
    assert status == 200, body
    file_id = json.loads(body)["files"][0]["uuid"]
    status, body = server.request("POST", "/api/v1/transcribe", {"uuid": file_id}, auth=auth)
    jobs = [row["uuid"] for row in json.loads(body)["transcriptions"]] if status == 200 else []
    if status != 200:
        # The conversion failed first: the request is refused with its reason.
        assert (status, body) == (400, b"File conversion failed: insufficient storage on the server")
    deadline = time.monotonic() + 60
    while True:
        file_row = next(row for row in json.loads(server.request("GET", "/api/v1/file", auth=auth)[1])["files"])
        bodies = [json.loads(server.request("GET", f"/api/v1/transcribe/{job}")[1]) for job in jobs]
        if file_row["status"] != "processing" and all(b["status"] in {"completed", "failed"} for b in bodies):
            break
        assert time.monotonic() < deadline, (file_row, bodies, server.log()[-3000:])
        time.sleep(0.5)
    assert (file_row["status"], file_row["error"]) == (
        "failed",
        "Conversion failed: insufficient storage on the server",
    )
    for job in bodies:
        assert (job["status"], job["error"]) == ("failed", "File conversion failed: insufficient storage on the server")
    assert server.me(api_key)["token_balance"] == START_BALANCE
    # Nothing of the file is left on either disk.
    deadline = time.monotonic() + 10
    while files_in(media) or files_in(spool):
        assert time.monotonic() < deadline, (files_in(media), files_in(spool))
        time.sleep(0.2)
    line = (
        f"FAULT disk-full [served, sqlite3]: 3 uploads (2 refused 507, 1 stored), {len(jobs)} jobs submitted, "
        f"0 completed, {len(jobs)} failed (conversion: insufficient storage), charged once: yes (balance "
        f"{START_BALANCE}), nothing left on disk"
    )
    print(f"\n{line}")
    logger.warning(line)
