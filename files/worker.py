"""The conversion worker's processes: below the transcription worker's CPU priority.

A worker that consumes ``CONVERSION_QUEUE`` and not ``TRANSCRIPTION_QUEUE`` is a
conversion worker (``manage.py serve``'s second worker, compose's ``converter``).
Its pool processes lower their priority to ``CONVERSION_NICE`` as they start;
the ffmpeg processes they run inherit it. On a machine that also transcribes, an
encode then takes only the CPU that transcription leaves, instead of half of
it. Done here rather than with ``nice`` on the command line so that every way of
starting a worker (``manage.py serve``, the image's ``converter`` role, a
``celery worker -Q conversion`` by hand) gets it, and a worker that consumes
both queues (one worker for everything) is left alone: its transcriptions must
not run niced.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from django.conf import settings

from whisper_site.celery import worker_consumes

logger = logging.getLogger(__name__)


def conversion_only_worker() -> bool:
    """Whether this process belongs to a worker that takes conversions and no transcriptions."""
    return bool(worker_consumes(settings.CONVERSION_QUEUE)) and worker_consumes(settings.TRANSCRIPTION_QUEUE) is False


def on_worker_process_init(**kwargs: Any) -> None:
    """Celery ``worker_process_init``: a conversion worker's pool process goes to nice ``CONVERSION_NICE``.

    Only ever raises the niceness (a process started under a higher one keeps
    it): lowering it again needs privileges a worker should not have.
    """
    if not conversion_only_worker():
        return
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if current < settings.CONVERSION_NICE:
        os.setpriority(os.PRIO_PROCESS, 0, settings.CONVERSION_NICE)
    logger.info("Conversion worker process %d at nice %d", os.getpid(), os.getpriority(os.PRIO_PROCESS, 0))
