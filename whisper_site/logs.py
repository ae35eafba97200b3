"""Log lines an operator can search: job, batch, file and user ids on every line about a job.

``job_log_context`` gives both the ``extra`` of a log call (fields of the JSON
format, ``LOG_FORMAT=json``) and the ``key=value`` words of the plain format, so
that one call serves both:

    context = job_log_context(job_id=..., batch_id=..., file_id=..., user_id=...)
    logger.warning("Transcription failed: %s %s", reason, context.words, extra=context.extra)
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LogContext:
    extra: dict[str, str]

    @property
    def words(self) -> str:
        """``job=… batch=… file=… user=…``, for the plain log format."""
        return " ".join(f"{name.removesuffix('_id')}={value}" for name, value in self.extra.items())


def job_log_context(
    *,
    job_id: uuid.UUID | Any = None,
    batch_id: uuid.UUID | Any = None,
    file_id: uuid.UUID | Any = None,
    user_id: uuid.UUID | Any = None,
) -> LogContext:
    """The ids that name what a log line is about; ``None`` ones are left out."""
    values = {"job_id": job_id, "batch_id": batch_id, "file_id": file_id, "user_id": user_id}
    return LogContext(
        extra={
            name: value.hex if isinstance(value, uuid.UUID) else str(value)
            for name, value in values.items()
            if value is not None
        }
    )
