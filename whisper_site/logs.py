"""Log lines an operator can search: job, batch, file and user ids on every line about a job.

``job_log_context`` gives both the ``extra`` of a log call (fields of the JSON
format, ``LOG_FORMAT=json``) and the ``key=value`` words of the plain format, so
that one call serves both:

    context = job_log_context(job_id=..., batch_id=..., file_id=..., user_id=...)
    logger.warning("Transcription failed: %s %s", reason, context.words, extra=context.extra)

``JsonLogFormatter`` writes the JSON format: the ``console`` handler of
``LOGGING`` uses it when ``LOG_FORMAT=json`` (whisper_site/settings.py).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
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


# Attributes every LogRecord has (3.12 adds taskName); anything else on a
# record came from a log call's ``extra``.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonLogFormatter(logging.Formatter):
    """One JSON object a line, for log collectors (``LOG_FORMAT=json``).

    Keys: ``timestamp`` (UTC, ISO 8601, milliseconds), ``level``, ``logger``,
    ``message``, then every ``extra`` field of the call (``job_id``,
    ``batch_id``, ``file_id``, ``user_id`` from :func:`job_log_context`, or any
    other), and ``exception`` (the traceback text) or ``stack`` when the record
    has one. A value JSON cannot write is written as its ``str()``.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": dt.datetime.fromtimestamp(record.created, tz=dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in vars(record).items():
            # An extra named like one of the four keys above does not replace it.
            if name not in _RECORD_ATTRIBUTES and name not in entry:
                entry[name] = value
        if record.exc_info:
            # Cached on the record, as logging.Formatter does, for other handlers.
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # json.dumps escapes newlines: a traceback stays on its entry's one line.
        return json.dumps(entry, default=str)
