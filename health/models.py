"""The Celery workers' heartbeats, which ``GET /health/ready`` reads (docs/production.md, "Readiness")."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class WorkerHeartbeat(models.Model):
    """One Celery worker, as it last said it was alive, and the queues it consumes.

    Written by the worker every ``WORKER_HEARTBEAT_INTERVAL_SECONDS`` (health.worker) while
    its consumer is connected to the broker; removed when it shuts down. A worker killed
    without warning leaves its row behind, which goes stale after
    ``WORKER_HEARTBEAT_STALE_SECONDS``.
    """

    # Celery's node name (``-n``, ``transcription@host``): one row per worker; a worker
    # restarted under the same name takes its row over.
    name = models.CharField(max_length=255, unique=True)
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    queues = models.JSONField(default=list, help_text="The queues it consumes.")
    processes = models.PositiveIntegerField(default=1, help_text="Its pool's processes: the tasks it runs at once.")
    started_at = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        verbose_name = "worker heartbeat"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
