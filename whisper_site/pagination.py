"""``page``/``limit`` query parameters and the ``pagination`` object."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet
from django.http import QueryDict

from whisper_site.errors import ApplicationError

DEFAULT_LIMIT = 10
MAX_LIMIT = 100


@dataclass(frozen=True)
class PageRequest:
    page: int
    limit: int

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.limit


def _positive_int(raw: str, message: str) -> int:
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9:
        raise ApplicationError(message, 400)
    value = int(raw)
    if value < 1:
        raise ApplicationError(message, 400)
    return value


def page_request(query: QueryDict) -> PageRequest:
    """Parse ``page`` (default 1) and ``limit`` (default 10, at most 100)."""
    page = _positive_int(query.get("page", "1").strip(), "Invalid page. Must be a positive integer")
    limit = _positive_int(
        query.get("limit", str(DEFAULT_LIMIT)).strip(), f"Invalid limit. Must be between 1 and {MAX_LIMIT}"
    )
    if limit > MAX_LIMIT:
        raise ApplicationError(f"Invalid limit. Must be between 1 and {MAX_LIMIT}", 400)
    return PageRequest(page=page, limit=limit)


def paginate(queryset: QuerySet[Any], request: PageRequest) -> tuple[list[Any], dict[str, int]]:
    """One page of ``queryset`` and the reference's ``pagination`` object."""
    total = queryset.count()
    rows = list(queryset[request.offset : request.offset + request.limit])
    return rows, {
        "page": request.page,
        "limit": request.limit,
        "total_count": total,
        "total_pages": math.ceil(total / request.limit) if total else 0,
    }
