"""The Celery app: JSON tasks, autodiscovered from each app's ``tasks.py``."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import worker_init
from django.db import InterfaceError, OperationalError

from health.worker import WorkerHeartbeatStep

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "whisper_site.settings")

app = Celery("whisper_site")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Every worker records a heartbeat in the database while it consumes (health.worker).
app.steps["consumer"].add(WorkerHeartbeatStep)

# The queues the worker this process belongs to consumes: recorded by the worker's main
# process at worker_init (once -Q is applied, before the pool forks) and inherited by its
# pool processes. None outside a worker.
_worker_queues: frozenset[str] | None = None


@worker_init.connect(weak=False, dispatch_uid="whisper_site.worker_queues")
def _record_worker_queues(sender: Any, **kwargs: Any) -> None:
    # sender: the worker (WorkController), whose queues -Q has selected by now.
    global _worker_queues
    _worker_queues = frozenset(sender.app.amqp.queues.consume_from)


def worker_consumes(queue: str) -> bool | None:
    """Whether this process's worker consumes ``queue`` (its ``-Q``, else the default queue).

    None outside a worker, or where the worker's queues are not known.
    """
    if _worker_queues is None:
        return None
    return queue in _worker_queues


# The hard time limit is this much longer than the soft one: time for the soft limit's
# handler to record the failure before the process is killed.
HARD_LIMIT_EXTRA_SECONDS = 60
# The visibility timeout must stay this much longer than the hard time limit, so that Redis
# never hands a task that is still running to a second worker.
VISIBILITY_MARGIN_SECONDS = 60


def task_time_limits(*, soft: float) -> tuple[int, int]:
    """Celery's (soft, hard) time limits of a task given ``soft`` seconds: hard = soft + 60 s.

    Both are capped so that the hard limit stays below the broker's visibility timeout
    (``acks_late`` tasks): past it Redis would hand the unacknowledged message to a second
    worker while the first still runs.
    """
    from django.conf import settings

    visibility = int(settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("visibility_timeout", 3600))
    ceiling = visibility - VISIBILITY_MARGIN_SECONDS - HARD_LIMIT_EXTRA_SECONDS
    capped = max(1, min(int(soft), ceiling))
    return capped, capped + HARD_LIMIT_EXTRA_SECONDS


# A database connection lost in the middle of a task (the server restarted or failed over,
# an operator's pg_terminate_backend, a network cut). Django reconnects only between
# tasks: Celery's Django fixup closes a broken connection before the next one starts.
DATABASE_CONNECTION_ERRORS = (OperationalError, InterfaceError)
# For tasks that are safe to run twice (their claims are conditional UPDATEs): on such an
# error the task is sent again under the same id, so it keeps its claims, after 1, 2, 4,
# 8, 16 s; a sixth loss in a row ends it (the recovery then finds what it held).
DATABASE_RETRY: dict[str, Any] = {
    "autoretry_for": DATABASE_CONNECTION_ERRORS,
    "retry_backoff": 1,
    "retry_backoff_max": 30,
    "retry_jitter": False,
    "max_retries": 5,
}
