"""Real Celery workers record their heartbeats, on Redis and on the embedded broker, and readiness reads them."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from rest_framework.test import APIClient

from health.models import WorkerHeartbeat
from health.selectors import live_processes
from tests.conftest import celery_worker_argv, redis_queues_delete
from tests.transcriptions.e2e.conftest import database_url

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("E2E_REDIS_URL", "redis://127.0.0.1:6379/15")
INTERVAL = 0.5
STALE = 3.0


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def start_worker(tmp_path: Path, settings: Any) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start ``celery worker -n NAME -Q QUEUES`` on the test database; each is killed at the end."""
    settings.WORKER_HEARTBEAT_STALE_SECONDS = STALE
    started: list[subprocess.Popen[bytes]] = []

    def start(name: str, queues: list[str], broker: str, concurrency: int = 1) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "DATA_DIR": str(tmp_path / "data"),
            "CELERY_BROKER_URL": broker,
            "WORKER_HEARTBEAT_INTERVAL_SECONDS": str(INTERVAL),
            "WORKER_HEARTBEAT_STALE_SECONDS": str(STALE),
            "PYTHONUNBUFFERED": "1",
        }
        log = (tmp_path / f"{name}.log").open("wb")
        process = subprocess.Popen(
            celery_worker_argv(name=name, queues=queues, concurrency=concurrency),
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def row(name: str) -> WorkerHeartbeat | None:
    return WorkerHeartbeat.objects.filter(name=name).first()


def test_a_worker_beats_while_it_runs_and_removes_its_row_when_it_stops(
    start_worker: Callable[..., subprocess.Popen[bytes]], anon: APIClient, settings: Any
) -> None:
    queue = f"hb-{uuid.uuid4().hex[:10]}"
    settings.CELERY_BROKER_URL = REDIS_URL
    settings.TRANSCRIPTION_QUEUE = settings.CELERY_TASK_DEFAULT_QUEUE = settings.CONVERSION_QUEUE = queue
    settings.WEBHOOK_QUEUE = f"{queue}-webhooks"
    try:
        assert anon.get("/api/v1/health/ready").status_code == 503
        name = f"beating-{queue}@testhost"
        worker = start_worker(name, [queue, f"{queue}-webhooks"], REDIS_URL, concurrency=2)
        first = wait_for(lambda: row(name), "the first heartbeat")
        # Its pool's two processes: a long file's units are planned for them.
        assert (first.pid, first.queues, first.processes) == (worker.pid, sorted([queue, f"{queue}-webhooks"]), 2)
        assert live_processes(queue) == 2
        # It beats again and again.
        wait_for(lambda: row(name).last_seen > first.last_seen, "a second heartbeat")
        response = anon.get("/api/v1/health/ready")
        assert response.status_code == 200, response.json()
        # A clean shutdown (SIGTERM) takes the worker out at once, not after it goes stale.
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
        assert row(name) is None
        body = anon.get("/api/v1/health/ready").json()
        assert body["checks"][f"queue:{queue}"] == "no live consumer: no worker has said it consumes this queue"
    finally:
        redis_queues_delete(REDIS_URL, [queue, f"{queue}-webhooks"])


def test_a_killed_worker_goes_stale_and_the_embedded_broker_carries_heartbeats_too(
    start_worker: Callable[..., subprocess.Popen[bytes]], anon: APIClient, settings: Any, tmp_path: Path
) -> None:
    # The broker of `make run` without Redis: folders under DATA_DIR, as settings make them.
    queue_dir = tmp_path / "data" / "queue"
    for folder in ("out", "processed"):
        (queue_dir / folder).mkdir(parents=True)
    settings.CELERY_BROKER_URL = "filesystem://"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"data_folder_in": str(queue_dir / "out")}
    settings.TRANSCRIPTION_QUEUE = settings.CELERY_TASK_DEFAULT_QUEUE = settings.CONVERSION_QUEUE = "celery"
    settings.WEBHOOK_QUEUE = "webhooks"
    name = "embedded@testhost"
    worker = start_worker(name, ["celery", "webhooks"], "filesystem://")
    wait_for(lambda: row(name), "the first heartbeat")
    wait_for(lambda: anon.get("/api/v1/health/ready").status_code == 200, "readiness")
    # SIGKILL: no word from the worker; its row stays and goes stale.
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    assert row(name) is not None
    response = wait_for(
        lambda: (r := anon.get("/api/v1/health/ready")).status_code == 503 and r, "readiness to fail", timeout=30
    )
    reason = response.json()["checks"]["queue:celery"]
    assert reason.startswith("no live consumer: the last heartbeat came ") and reason.endswith(f"from {name}")
