"""Timestamps as the API writes them: ``YYYY-MM-DD HH:MM:SS`` in UTC."""

from __future__ import annotations

import datetime as dt

NOT_YET = "1970-01-01 00:00:00"


def format_timestamp(value: dt.datetime | None) -> str:
    """UTC ``YYYY-MM-DD HH:MM:SS``; ``None`` ("not yet") is the Unix epoch."""
    if value is None:
        return NOT_YET
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
