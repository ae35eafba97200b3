"""Celery tasks of files: thin, idempotent wrappers around services."""

from __future__ import annotations

import uuid

from celery import shared_task

from files import services


@shared_task(acks_late=True, ignore_result=True)
def file_convert_task(file_id: str) -> None:
    """Convert an uploaded file (MP3/MP4 + WAV). Safe to run twice; time limits come from the enqueuer."""
    services.file_convert(file_id=uuid.UUID(file_id))
