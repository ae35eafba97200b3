"""Fault tests: real components stopped, killed or starved while jobs run.

Each test starts what it breaks: its own ``redis-server`` on a free port (never the
shared one), its own Celery workers on the test database (as the e2e tests do), moto's
S3 server, or ``manage.py serve`` on a small tmpfs. Each ends with :func:`outcome`,
which checks what every fault must leave behind (no job lost, none still pending or
processing, each completed job charged its cost once, every failed one refunded, each
balance its start minus its completed jobs' costs) and prints one line of figures
(visible with ``-s``, and logged).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings
from django.core.cache import cache

from accounts.models import User
from files.media import convert_to_wav
from files.models import File
from files.storage import storage_put
from tests.conftest import celery_worker_argv, forget_broker_connections
from tests.transcriptions.e2e.conftest import Worker, child_pids, database_url, wait_for
from transcriptions.engine import install_bundled_models
from transcriptions.models import Transcription
from whisper_site.celery import app as celery_app

ROOT = Path(__file__).resolve().parents[2]
TEST_DATA = ROOT / "tests" / "data"
BENCH_DATA = ROOT / "bench" / "data"
START_BALANCE = 1000
WORKER_START_SECONDS = 90.0

logger = logging.getLogger("tests.faults")

__all__ = ["Worker", "child_pids", "wait_for"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "faults: fault tests with real components (own Redis, workers, servers)")
    config.addinivalue_line(
        "markers",
        "served: runs against `manage.py serve` on its own SQLite database, whatever DATABASE_URL the suite runs on",
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


# --- Redis of its own ----------------------------------------------------------------


@dataclass
class RedisServer:
    """A ``redis-server`` without persistence: restarted, it has forgotten every message."""

    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_port(self.port)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=10)

    def keys(self) -> int:
        client = redis.Redis.from_url(self.url)
        try:
            return int(client.dbsize())
        finally:
            client.close()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(port=free_port(), log_path=tmp_path / "redis.log")
    server.start()
    try:
        yield server
    finally:
        server.kill()


# --- Workers -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def installed_models() -> Path:
    """The bundled models in settings.MODELS_DIR, as `make run` installs them."""
    install_bundled_models(settings.MODELS_DIR)
    return Path(settings.MODELS_DIR)


@dataclass
class Stack:
    """Workers of one test on its broker and queue, and this process's Celery sent there."""

    broker_url: str
    queue: str
    base: Path
    env: dict[str, str]
    workers: list[Worker] = field(default_factory=list)

    def start_worker(self, name: str, *, beat: bool = False, **extra_env: str) -> Worker:
        """A Celery worker (one pool process) on the test's queue; ``beat``: with the recovery's beat."""
        data_dir = self.base / name
        data_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.base / f"{name}.log"
        argv = celery_worker_argv(name=f"{name}-{self.queue}@%h", queues=[self.queue])
        if beat:
            argv += ["-B", "--schedule", str(data_dir / "celerybeat-schedule")]
        # Run from a folder of its own, as on a machine of its own: the code through PYTHONPATH.
        env = {"DATA_DIR": str(data_dir), **self.env, "PYTHONPATH": str(ROOT), **extra_env}
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                argv, cwd=data_dir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        worker = Worker(process=process, log_path=log_path)
        self.workers.append(worker)
        worker.wait_ready(WORKER_START_SECONDS)
        return worker

    def logs(self) -> str:
        return "\n".join(f"--- {w.log_path.name}\n{w.log()[-3000:]}" for w in self.workers)


def kill_worker(worker: Worker) -> None:
    """SIGKILL a worker's main process and its pool at once: a machine lost, as far as the rest can tell."""
    os.killpg(worker.process.pid, signal.SIGKILL)
    worker.process.wait(timeout=10)


@pytest.fixture
def stack_for(
    installed_models: Path, tmp_path: Path, settings: Any, django_db_blocker: Any
) -> Iterator[Callable[..., Stack]]:
    """Make the test's :class:`Stack` on ``broker_url``: ``stack_for(broker_url, **worker_env)``."""
    made: list[Stack] = []
    previous = {
        key: celery_app.conf.get(key)
        for key in ("CELERY_BROKER_URL", "CELERY_TASK_DEFAULT_QUEUE", "CELERY_TASK_ALWAYS_EAGER")
    }

    def make(broker_url: str, **worker_env: str) -> Stack:
        queue = f"faults-{uuid.uuid4().hex[:12]}"
        media_root = tmp_path / "media"
        media_root.mkdir(exist_ok=True)
        with django_db_blocker.unblock():
            db_url = database_url()
        env = {
            **os.environ,
            "DATABASE_URL": db_url,
            "MEDIA_ROOT": str(media_root),
            "MODELS_DIR": str(installed_models),
            "CELERY_BROKER_URL": broker_url,
            "CELERY_TASK_DEFAULT_QUEUE": queue,
            "TRANSCRIPTION_QUEUE": queue,
            "CONVERSION_QUEUE": queue,
            "WEBHOOK_QUEUE": queue,
            "CELERY_TASK_ALWAYS_EAGER": "0",
            # The recovery as often as it may run; a worker not heard of for 3 s is lost.
            "TRANSCRIPTION_RECOVERY_INTERVAL_SECONDS": "10",
            "TRANSCRIPTION_RECOVERY_AFTER_SECONDS": "3",
            "TRANSCRIPTION_HEARTBEAT_SECONDS": "0.5",
            "TRANSCRIPTION_LOST_AFTER_SECONDS": "3",
            "PYTHONUNBUFFERED": "1",
            **worker_env,
        }
        stack = Stack(broker_url=broker_url, queue=queue, base=tmp_path / "workers", env=env)
        made.append(stack)
        settings.MEDIA_ROOT = str(media_root)
        settings.TRANSCRIPTION_QUEUE = settings.CONVERSION_QUEUE = settings.WEBHOOK_QUEUE = queue
        celery_app.conf.CELERY_BROKER_URL = broker_url
        celery_app.conf.CELERY_TASK_DEFAULT_QUEUE = queue
        celery_app.conf.CELERY_TASK_ALWAYS_EAGER = False
        forget_broker_connections()
        cache.clear()
        return stack

    try:
        yield make
    finally:
        for stack in made:
            for worker in stack.workers:
                worker.stop()
        for key, value in previous.items():
            setattr(celery_app.conf, key, value)
        forget_broker_connections()


# --- Files and jobs ------------------------------------------------------------------


@pytest.fixture(scope="session")
def wav_of(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Path], Path]:
    """The 16 kHz mono WAV the files app would store for a clip (made once per clip)."""
    folder = tmp_path_factory.mktemp("fault-wavs")
    made: dict[Path, Path] = {}

    def wav(source: Path) -> Path:
        if source not in made:
            made[source] = folder / f"{source.stem}.wav"
            convert_to_wav(source, made[source])
        return made[source]

    return wav


def ready_file(owner: User, wav: Path, *, duration: float) -> File:
    """A converted file of ``owner``: its WAV in the default storage (local or S3), as a conversion leaves it."""
    file = File(
        owner=owner,
        filename=wav.name,
        kind=File.Kind.AUDIO,
        content_type="audio/mpeg",
        blake3=uuid.uuid4().hex * 2,
        duration=duration,
        state=File.State.READY,
    )
    copy = wav.parent / f"{file.id.hex}.wav"
    shutil.copyfile(wav, copy)
    file.wav_name = storage_put(name=f"files/{owner.id.hex}/{file.id.hex}/audio.wav", path=copy)
    file.save()
    return file


TERMINAL = ("completed", "failed", "cancelled")


def wait_finished(job_ids: list[Any], *, timeout: float, stack: Stack | None = None) -> list[Transcription]:
    """Until every job is completed, failed or cancelled; the jobs."""

    def finished() -> list[Transcription] | None:
        jobs = list(Transcription.objects.filter(id__in=job_ids))
        return jobs if len(jobs) == len(job_ids) and all(job.status in TERMINAL for job in jobs) else None

    try:
        return wait_for(finished, timeout=timeout, what="every job to finish")
    except AssertionError:
        states = Counter(Transcription.objects.filter(id__in=job_ids).values_list("status", flat=True))
        raise AssertionError(
            f"jobs not finished after {timeout} s: {dict(states)}\n{stack.logs() if stack else ''}"
        ) from None


def outcome(name: str, job_ids: list[Any], *, costs: dict[Any, int], users: list[User]) -> dict[str, Any]:
    """Check what a fault must leave behind and print its figures; returns them.

    ``costs``: each job's cost when it completes. Every job exists and is finished; a
    completed one carries its cost, a failed one none (refunded); each user's balance is
    the start minus their completed jobs' costs, so no job was charged twice.
    """
    jobs = list(Transcription.objects.filter(id__in=job_ids))
    assert len(jobs) == len(job_ids), f"{len(job_ids) - len(jobs)} jobs lost"
    unfinished = [job for job in jobs if job.status not in TERMINAL]
    assert not unfinished, [(job.id.hex, job.status) for job in unfinished]
    completed = [job for job in jobs if job.status == Transcription.Status.COMPLETED]
    failed = [job for job in jobs if job.status == Transcription.Status.FAILED]
    for job in completed:
        assert job.cost == costs[job.id], (job.id.hex, job.cost, costs[job.id])
        assert job.data, job.id.hex
    for job in failed:
        assert job.cost == 0, (job.id.hex, job.cost, job.error)
    charged_once = True
    for user in users:
        spent = sum(job.cost for job in completed if job.owner_id == user.id)
        balance = User.objects.values_list("token_balance", flat=True).get(pk=user.pk)
        charged_once = charged_once and balance == START_BALANCE - spent
        assert balance == START_BALANCE - spent, (user.username, balance, spent)
    reasons = Counter(job.error for job in failed)
    attempts = Counter(job.attempts for job in jobs)
    figures = {
        "submitted": len(job_ids),
        "completed": len(completed),
        "failed": len(failed),
        "reasons": dict(reasons),
        "charged_once": charged_once,
        "attempts": dict(sorted(attempts.items())),
    }
    line = (
        f"FAULT {name} [{settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]}]: "
        f"{figures['submitted']} jobs submitted, {figures['completed']} completed, {figures['failed']} failed"
        + (f" ({'; '.join(f'{n}x {r}' for r, n in reasons.items())})" if failed else "")
        + f", charged once: {'yes' if charged_once else 'no'}, attempts {figures['attempts']}"
    )
    print(f"\n{line}")
    logger.warning(line)
    return figures
