"""``GET /health/ready``: the database, the broker and a live consumer of every queue, each named when it fails."""

from __future__ import annotations

import datetime
import os
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from health.models import WorkerHeartbeat
from health.selectors import live_processes
from health.services import worker_heartbeat_record, worker_heartbeat_remove

pytestmark = pytest.mark.django_db
REDIS_URL = os.environ.get("E2E_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture
def queues(settings: Any) -> list[str]:
    """Queues of this test's own, on the real Redis; the default queue is the transcription queue."""
    name = uuid.uuid4().hex[:8]
    settings.CELERY_BROKER_URL = REDIS_URL
    settings.TRANSCRIPTION_QUEUE = settings.CELERY_TASK_DEFAULT_QUEUE = f"t-{name}"
    settings.CONVERSION_QUEUE = f"c-{name}"
    settings.WEBHOOK_QUEUE = f"w-{name}"
    settings.WORKER_HEARTBEAT_STALE_SECONDS = 30.0
    return [f"t-{name}", f"c-{name}", f"w-{name}"]


def beat(name: str, queues: list[str], pid: int = 4242, processes: int = 1) -> None:
    worker_heartbeat_record(
        name=name, hostname="host", pid=pid, queues=queues, started_at=timezone.now(), processes=processes
    )


def ready(anon: APIClient) -> tuple[int, dict[str, Any]]:
    response = anon.get("/api/v1/health/ready")
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "no-store"
    return response.status_code, response.json()


def test_ready_when_every_queue_has_a_live_consumer(anon: APIClient, queues: list[str]) -> None:
    beat("transcription@host", [queues[0]])
    beat("conversion@host", [queues[1]])
    beat("webhooks@host", [queues[2]])
    status, body = ready(anon)
    assert (status, body) == (
        200,
        {"status": "ok", "checks": {"database": "ok", "broker": "ok", **{f"queue:{q}": "ok" for q in queues}}},
    )
    # The liveness probe says no more than it did.
    response = anon.get("/api/v1/health")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_no_heartbeat_for_a_queue_is_a_503_naming_it(anon: APIClient, queues: list[str]) -> None:
    # One worker takes transcriptions and conversions; none takes webhook deliveries.
    beat("worker@host", queues[:2])
    status, body = ready(anon)
    assert status == 503
    assert body["status"] == "unavailable"
    failing = {check: reason for check, reason in body["checks"].items() if reason != "ok"}
    assert failing == {f"queue:{queues[2]}": "no live consumer: no worker has said it consumes this queue"}
    # Without any heartbeat, every queue fails, the database and the broker still pass.
    WorkerHeartbeat.objects.all().delete()
    status, body = ready(anon)
    assert status == 503
    assert {check for check, reason in body["checks"].items() if reason != "ok"} == {f"queue:{q}" for q in queues}


def test_a_stale_heartbeat_is_no_live_consumer(anon: APIClient, queues: list[str], settings: Any) -> None:
    beat("worker@host", queues)
    assert ready(anon)[0] == 200
    WorkerHeartbeat.objects.update(last_seen=timezone.now() - datetime.timedelta(seconds=31))
    status, body = ready(anon)
    assert status == 503
    for queue in queues:
        reason = body["checks"][f"queue:{queue}"]
        assert reason.startswith("no live consumer: the last heartbeat came 3") and reason.endswith("from worker@host")
    # Within WORKER_HEARTBEAT_STALE_SECONDS it counts again.
    settings.WORKER_HEARTBEAT_STALE_SECONDS = 120.0
    assert ready(anon)[0] == 200
    # Another worker's fresh heartbeat for one queue is enough for that queue.
    settings.WORKER_HEARTBEAT_STALE_SECONDS = 30.0
    beat("other@host", [queues[1]])
    body = ready(anon)[1]
    assert body["checks"][f"queue:{queues[1]}"] == "ok"
    assert body["checks"][f"queue:{queues[0]}"] != "ok"


def test_a_worker_that_shuts_down_removes_its_own_row_only(queues: list[str]) -> None:
    beat("worker@host", queues, pid=1)
    # The same node name started again (a restart): the new process takes the row over.
    beat("worker@host", queues, pid=2)
    assert list(WorkerHeartbeat.objects.values_list("name", "pid")) == [("worker@host", 2)]
    worker_heartbeat_remove(name="worker@host", pid=1)
    assert WorkerHeartbeat.objects.count() == 1
    worker_heartbeat_remove(name="worker@host", pid=2)
    assert WorkerHeartbeat.objects.count() == 0


def test_a_closed_broker_port_is_a_503_naming_the_broker(anon: APIClient, queues: list[str], settings: Any) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens there any more.
    settings.CELERY_BROKER_URL = f"redis://:secret@127.0.0.1:{port}/0"
    beat("worker@host", queues)
    status, body = ready(anon)
    assert status == 503
    failing = {check: reason for check, reason in body["checks"].items() if reason != "ok"}
    assert failing == {"broker": f"the broker at redis://127.0.0.1:{port}/0 does not answer: ConnectionError"}


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts connections and never answers, like a hung broker."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


def test_a_broker_that_never_answers_is_a_503_within_the_timeout(
    anon: APIClient, queues: list[str], settings: Any, silent_server: int
) -> None:
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{silent_server}/0"
    settings.READINESS_TIMEOUT_SECONDS = 0.5
    beat("worker@host", queues)
    started = time.monotonic()
    status, body = ready(anon)
    # Bounded by the timeout, not by the operating system's (minutes): no hang.
    assert time.monotonic() - started < 10
    assert status == 503
    assert (
        body["checks"]["broker"] == f"the broker at redis://127.0.0.1:{silent_server}/0 does not answer: TimeoutError"
    )


def test_the_embedded_broker_is_its_folder(anon: APIClient, queues: list[str], settings: Any, tmp_path: Any) -> None:
    folder = tmp_path / "queue" / "out"
    settings.CELERY_BROKER_URL = "filesystem://"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"data_folder_in": str(folder), "data_folder_out": str(folder)}
    beat("worker@host", queues)
    status, body = ready(anon)
    assert status == 503
    assert body["checks"]["broker"] == f"the embedded broker's folder {folder} is missing or not writable"
    folder.mkdir(parents=True)
    assert ready(anon)[0] == 200


def test_live_processes_add_up_the_fresh_workers_of_a_queue(queues: list[str], settings: Any) -> None:
    transcription, conversion, _ = queues
    assert live_processes(transcription) == 0
    beat("one@host", [transcription], processes=2)
    beat("two@host", [transcription, conversion], processes=3)
    beat("converter@host", [conversion], processes=4)
    assert (live_processes(transcription), live_processes(conversion)) == (5, 7)
    WorkerHeartbeat.objects.filter(name="two@host").update(last_seen=timezone.now() - datetime.timedelta(seconds=31))
    assert (live_processes(transcription), live_processes(conversion)) == (2, 4)  # a stale worker takes nothing
