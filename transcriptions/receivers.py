"""Receivers connected in TranscriptionsConfig.ready(): files finishing conversion, worker start."""

from __future__ import annotations

import uuid
from typing import Any

from transcriptions import services


def on_file_ready(sender: Any, file_id: uuid.UUID, **kwargs: Any) -> None:
    """files.signals.file_ready: the jobs that waited for the conversion can run."""
    services.transcription_file_ready(file_id=file_id)


def on_file_failed(sender: Any, file_id: uuid.UUID, **kwargs: Any) -> None:
    """files.signals.file_failed: the jobs that waited for the conversion fail, uncharged."""
    services.transcription_file_failed(file_id=file_id)
