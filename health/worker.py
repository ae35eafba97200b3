"""The heartbeat of each Celery worker: a row in the database, renewed by a thread of the worker's main process.

Why the database, and not Celery's own means of finding workers (``inspect ping``, events):
the embedded broker of ``manage.py serve`` (``filesystem://``) has no broadcast, so no
remote control and no events, while every worker, on this host or another, already reaches
the database. A row also outlives the broker: readiness can say which queue lost its last
consumer, and when, even while the broker is down.

The beat runs in a thread, not on the worker's event loop: a database that hangs delays
the next heartbeat (and so, rightly, turns readiness off) but never the taking of tasks.
It starts once the consumer has connected to the broker and declared its queues (a
consumer bootstep after ``Tasks``), and stops when the consumer loses the broker, so that a
worker cut off from the broker goes stale too.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Any

from celery import bootsteps
from django.utils import timezone

logger = logging.getLogger(__name__)

# No fork (the prefork pool replacing a process) while a beat holds a database
# connection: a pool process must not inherit an open connection of this process.
_fork_guard = threading.Lock()
os.register_at_fork(before=_fork_guard.acquire, after_in_parent=_fork_guard.release, after_in_child=_fork_guard.release)


class WorkerHeartbeatThread(threading.Thread):
    """Records ``name`` with its queues every ``interval`` seconds until stopped."""

    def __init__(self, *, name: str, queues: list[str], interval: float, processes: int = 1) -> None:
        super().__init__(name="worker-heartbeat", daemon=True)
        self.worker_name = name
        self.queues = queues
        self.processes = processes
        self.interval = interval
        self.pid = os.getpid()
        self.hostname = socket.gethostname()
        self.started_at = timezone.now()
        self._stopped = threading.Event()
        self._failing = False

    def run(self) -> None:
        while True:
            self.beat()
            if self._stopped.wait(self.interval):
                return

    def beat(self) -> None:
        from django.db import connection

        from health.services import worker_heartbeat_record

        with _fork_guard:
            try:
                worker_heartbeat_record(
                    name=self.worker_name,
                    hostname=self.hostname,
                    pid=self.pid,
                    queues=self.queues,
                    started_at=self.started_at,
                    processes=self.processes,
                )
            except Exception as exc:  # the database is down or not migrated yet: try again next time
                if not self._failing:
                    logger.warning("Worker heartbeat not recorded (will retry): %s", exc)
                self._failing = True
            else:
                if self._failing:
                    logger.info("Worker heartbeat recorded again")
                self._failing = False
            finally:
                # One connection per beat: none stays open between beats (see _fork_guard).
                connection.close()

    def stop(self) -> None:
        """Stop beating (again: nothing)."""
        self._stopped.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=self.interval + 10)

    def forget(self) -> None:
        """Remove this worker's row, as it shuts down cleanly."""
        from django.db import connection

        from health.services import worker_heartbeat_remove

        with _fork_guard:
            try:
                worker_heartbeat_remove(name=self.worker_name, pid=self.pid)
            except Exception as exc:  # its row goes stale instead
                logger.warning("Worker heartbeat not removed: %s", exc)
            finally:
                connection.close()


class WorkerHeartbeatStep(bootsteps.StartStopStep):
    """Consumer bootstep: the heartbeat thread, from the consumer's start to its stop."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        self.thread: WorkerHeartbeatThread | None = None
        super().__init__(parent, **kwargs)

    def start(self, parent: Any) -> None:
        from django.conf import settings

        queues = sorted(queue.name for queue in parent.task_consumer.queues)
        # The pool's size (--concurrency): how many units of a long file it decodes at once.
        processes = getattr(parent.controller, "concurrency", None)
        self.thread = WorkerHeartbeatThread(
            name=parent.hostname,
            queues=queues,
            interval=settings.WORKER_HEARTBEAT_INTERVAL_SECONDS,
            processes=processes if isinstance(processes, int) and processes > 0 else 1,
        )
        self.thread.start()

    def stop(self, parent: Any) -> None:
        # The consumer lost the broker (it starts again once connected) or the worker stops.
        if self.thread is not None:
            self.thread.stop()

    def shutdown(self, parent: Any) -> None:
        # The worker stops: readiness must not count it a moment longer.
        thread, self.thread = self.thread, None
        if thread is not None:
            thread.stop()
            thread.forget()
