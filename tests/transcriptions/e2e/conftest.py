"""End-to-end fixtures: a real Celery worker process on the real Redis, sharing the test database.

The worker is started once per session with the test database (the SQLite file or the
PostgreSQL database pytest-django created), a media folder shared with this process, a
dedicated Redis database (never db 0, where a developer's `make run` may listen) and queues
of its own: one for transcriptions, one for conversions and one for webhook deliveries, all
consumed by the worker (each under another name, so that a task sent to the wrong queue is
never run).
While these tests run, this process sends its tasks there instead of running them eagerly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import cache
from django.db import connection
from rest_framework.test import APIClient

from tests.conftest import celery_worker_argv, forget_broker_connections, redis_queues_delete, redis_required
from tests.webhooks.receiver import allow_private_networks, webhook_receiver  # noqa: F401  (fixtures)
from whisper_site.celery import app as celery_app

ROOT = Path(__file__).resolve().parents[3]
E2E_REDIS_URL = os.environ.get("E2E_REDIS_URL", "redis://127.0.0.1:6379/15")
E2E_UNIT_SECONDS = 30.0
WORKER_START_SECONDS = 90.0


def database_url() -> str:
    """The test database as a DATABASE_URL for the worker's settings."""
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    credentials = db["USER"] or ""
    if db.get("PASSWORD"):
        credentials += f":{db['PASSWORD']}"
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    return f"postgres://{credentials}@{host}:{port}/{db['NAME']}"


def child_pids(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (Celery's pool processes of a worker's main process)."""
    children: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces: fields follow the last ")".
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid:
            children.append(int(entry.name))
    return children


@dataclass
class Worker:
    """A Celery worker subprocess and its log."""

    process: subprocess.Popen[bytes]
    log_path: Path
    _offset: int = field(default=0)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = WORKER_START_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            if " ready." in self.log():
                return
            time.sleep(0.1)
        raise RuntimeError(f"worker not ready after {timeout} s:\n{self.log()[-4000:]}")

    def pool_pids(self) -> list[int]:
        return child_pids(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # warm shutdown: finish the task in hand
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@dataclass(frozen=True)
class E2E:
    """What the e2e tests share: the queues, the media folder, and a way to start workers."""

    queue: str
    conversion_queue: str
    webhook_queue: str
    media_root: Path
    worker: Worker
    start_worker: Callable[..., Worker]


@pytest.fixture(scope="session")
def e2e(
    django_db_setup: None,
    django_db_blocker: Any,
    installed_models: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[E2E]:
    """Start the session's worker (concurrency 1) and point this process's Celery at it."""
    redis_required(E2E_REDIS_URL)
    queue = f"e2e-transcriptions-{uuid.uuid4().hex[:12]}"
    conversion_queue = f"e2e-conversions-{uuid.uuid4().hex[:12]}"
    webhook_queue = f"e2e-webhooks-{uuid.uuid4().hex[:12]}"
    base = tmp_path_factory.mktemp("e2e")
    media_root = base / "media"
    media_root.mkdir()
    with django_db_blocker.unblock():
        db_url = database_url()
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "MEDIA_ROOT": str(media_root),
        "MODELS_DIR": str(installed_models),
        "CELERY_BROKER_URL": E2E_REDIS_URL,
        "CELERY_TASK_DEFAULT_QUEUE": queue,
        "TRANSCRIPTION_QUEUE": queue,
        "CONVERSION_QUEUE": conversion_queue,
        "WEBHOOK_QUEUE": webhook_queue,
        # The tests' webhook receivers listen on 127.0.0.1.
        "WEBHOOK_ALLOW_PRIVATE_NETWORKS": "1",
        "CELERY_TASK_ALWAYS_EAGER": "0",
        # Units of at most one window (30 s of speech), so that a file of a few readings of
        # jfk.flac is cut into several (test_e2e_scheduling).
        "TRANSCRIPTION_UNIT_SECONDS": str(E2E_UNIT_SECONDS),
        "PYTHONUNBUFFERED": "1",
    }
    workers: list[Worker] = []

    def start_worker(concurrency: int = 1, name: str = "worker") -> Worker:
        log_path = base / f"{name}-{len(workers)}.log"
        log = log_path.open("wb")
        process = subprocess.Popen(
            celery_worker_argv(
                name=f"{name}{len(workers)}-{queue}@%h",
                queues=(queue, conversion_queue, webhook_queue),
                concurrency=concurrency,
            ),
            cwd=ROOT,
            env={**env, "CELERY_WORKER_CONCURRENCY": str(concurrency)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        started = Worker(process=process, log_path=log_path)
        workers.append(started)
        started.wait_ready()
        return started

    previous = {
        key: celery_app.conf.get(key)
        for key in ("CELERY_BROKER_URL", "CELERY_TASK_DEFAULT_QUEUE", "CELERY_TASK_ALWAYS_EAGER")
    }
    try:
        main = start_worker()
        celery_app.conf.CELERY_BROKER_URL = E2E_REDIS_URL
        celery_app.conf.CELERY_TASK_DEFAULT_QUEUE = queue
        forget_broker_connections()
        yield E2E(
            queue=queue,
            conversion_queue=conversion_queue,
            webhook_queue=webhook_queue,
            media_root=media_root,
            worker=main,
            start_worker=start_worker,
        )
    finally:
        for started in workers:
            started.stop()
        for key, value in previous.items():
            setattr(celery_app.conf, key, value)
        forget_broker_connections()
        redis_queues_delete(E2E_REDIS_URL, [queue, conversion_queue, webhook_queue])


@pytest.fixture(autouse=True)
def _isolated_media(e2e: E2E, settings: Any) -> Iterator[None]:
    """Overrides the per-test media folder: the worker must see what this process stores."""
    settings.MEDIA_ROOT = str(e2e.media_root)
    settings.TRANSCRIPTION_QUEUE = e2e.queue
    settings.CONVERSION_QUEUE = e2e.conversion_queue
    settings.WEBHOOK_QUEUE = e2e.webhook_queue
    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def _eager_celery(e2e: E2E) -> Iterator[None]:
    """Overrides the eager default: tasks go to the real worker."""
    celery_app.conf.CELERY_TASK_ALWAYS_EAGER = False
    yield


def wait_for(condition: Callable[[], Any], *, timeout: float = 120.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def upload(client: APIClient, path: Path) -> str:
    """``POST /file`` one file; returns its uuid."""
    with path.open("rb") as handle:
        response = client.post("/api/v1/file", {"file": handle}, format="multipart")
    assert response.status_code == 200, response.content
    row = response.json()["files"][0]
    assert row["status"]["uploaded"] or row["status"]["existed"], row
    return row["uuid"]
