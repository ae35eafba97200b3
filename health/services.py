"""Writes of the workers' heartbeats: each worker records itself, and removes itself when it stops."""

from __future__ import annotations

import datetime

from django.utils import timezone

from health.models import WorkerHeartbeat

# Rows of workers gone for this long are deleted by any worker's heartbeat: a fleet whose
# containers get new host names each time would otherwise keep every name it ever had.
FORGET_AFTER = datetime.timedelta(days=1)


def worker_heartbeat_record(
    *,
    name: str,
    hostname: str,
    pid: int,
    queues: list[str],
    started_at: datetime.datetime,
    processes: int = 1,
) -> None:
    """Record that worker ``name`` (Celery's node name) is alive now and consumes ``queues`` with ``processes`` processes."""
    now = timezone.now()
    # update_or_create: a worker restarted under the same name (same host, new pid) takes
    # its row over; two first beats at once are settled by the unique name.
    WorkerHeartbeat.objects.update_or_create(
        name=name,
        defaults={
            "hostname": hostname,
            "pid": pid,
            "queues": sorted(queues),
            "processes": max(1, processes),
            "started_at": started_at,
            "last_seen": now,
        },
    )
    WorkerHeartbeat.objects.filter(last_seen__lt=now - FORGET_AFTER).delete()


def worker_heartbeat_remove(*, name: str, pid: int) -> None:
    """Forget worker ``name`` as it shuts down; a later worker of the same name (another pid) keeps its row."""
    WorkerHeartbeat.objects.filter(name=name, pid=pid).delete()
