"""Readiness: whether this deployment can take work now (``GET /health/ready``).

Three kinds of check, each bounded by ``READINESS_TIMEOUT_SECONDS`` or by a single query:
the database answers; the broker answers; and every queue the service sends work to has a
worker that consumes it and has sent a heartbeat within ``WORKER_HEARTBEAT_STALE_SECONDS``.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import redis
from django.conf import settings
from django.db import connection
from django.utils import timezone

from health.models import WorkerHeartbeat

OK = "ok"


@dataclass(frozen=True, slots=True)
class Readiness:
    """Each check by name (``database``, ``broker``, ``queue:<name>``): ``ok`` or why not."""

    checks: dict[str, str]

    @property
    def ready(self) -> bool:
        return all(result == OK for result in self.checks.values())


def readiness_queues() -> list[str]:
    """The queues some worker must consume: where the service sends transcriptions, conversions and
    webhook deliveries, and the default queue, where beat sends the recovery of lost jobs."""
    return list(
        dict.fromkeys(
            [
                settings.TRANSCRIPTION_QUEUE,
                settings.CONVERSION_QUEUE,
                settings.WEBHOOK_QUEUE,
                settings.CELERY_TASK_DEFAULT_QUEUE,
            ]
        )
    )


def readiness_get() -> Readiness:
    """Every check of readiness, in order: the database, the broker, then each queue's consumers."""
    checks = {"database": database_check(), "broker": broker_check(settings.CELERY_BROKER_URL)}
    queues = readiness_queues()
    if checks["database"] == OK:
        checks.update({f"queue:{queue}": reason for queue, reason in queue_checks(queues).items()})
    else:
        checks.update({f"queue:{queue}": "unknown: the database does not answer" for queue in queues})
    return Readiness(checks=checks)


def database_check() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # any failure to reach the database is "down"
        return f"the database does not answer: {type(exc).__name__}"
    return OK


def broker_check(url: str) -> str:
    """Whether the Celery broker at ``url`` answers within ``READINESS_TIMEOUT_SECONDS``."""
    timeout = settings.READINESS_TIMEOUT_SECONDS
    scheme = urlsplit(url).scheme
    where = _without_credentials(url)
    if scheme in {"redis", "rediss"}:
        try:
            client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
            try:
                client.ping()
            finally:
                client.close()
        except (redis.RedisError, OSError) as exc:
            return f"the broker at {where} does not answer: {type(exc).__name__}"
        return OK
    if scheme == "filesystem":
        # The embedded broker of `manage.py serve`: a folder of message files on this machine.
        folder = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("data_folder_in", "")
        if not (folder and os.path.isdir(folder) and os.access(folder, os.W_OK | os.X_OK)):
            return f"the embedded broker's folder {folder or '(unset)'} is missing or not writable"
        return OK
    return _kombu_broker_check(url, where, timeout)


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def _kombu_broker_check(url: str, where: str, timeout: float) -> str:
    # Any other transport Celery knows (AMQP, SQS, ...): one connection attempt, no retries.
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=timeout) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=timeout)
    except Exception as exc:
        return f"the broker at {where} does not answer: {type(exc).__name__}"
    return OK


def queue_checks(queues: list[str]) -> dict[str, str]:
    """For each of ``queues``: ``ok`` when a worker that consumes it sent a heartbeat lately, else why not."""
    stale_after = datetime.timedelta(seconds=settings.WORKER_HEARTBEAT_STALE_SECONDS)
    now = timezone.now()
    live: set[str] = set()
    last_seen: dict[str, tuple[datetime.datetime, str]] = {}
    # One row per worker: a deployment has tens of them, not thousands.
    for name, queues_of_worker, seen in WorkerHeartbeat.objects.values_list("name", "queues", "last_seen"):
        for queue in queues_of_worker if isinstance(queues_of_worker, list) else []:
            if now - seen <= stale_after:
                live.add(queue)
            elif queue not in last_seen or seen > last_seen[queue][0]:
                last_seen[queue] = (seen, name)
    results: dict[str, str] = {}
    for queue in queues:
        if queue in live:
            results[queue] = OK
        elif queue in last_seen:
            seen, name = last_seen[queue]
            ago = int((now - seen).total_seconds())
            results[queue] = f"no live consumer: the last heartbeat came {ago} s ago from {name}"
        else:
            results[queue] = "no live consumer: no worker has said it consumes this queue"
    return results


def live_processes(queue: str) -> int:
    """How many tasks of ``queue`` the workers that sent a heartbeat lately can run at once (their pools' processes)."""
    since = timezone.now() - datetime.timedelta(seconds=settings.WORKER_HEARTBEAT_STALE_SECONDS)
    return sum(
        processes
        for queues, processes in WorkerHeartbeat.objects.filter(last_seen__gte=since).values_list("queues", "processes")
        if isinstance(queues, list) and queue in queues
    )
