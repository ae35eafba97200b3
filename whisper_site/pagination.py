"""``page``/``limit`` query parameters and the ``pagination`` object."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet
from rest_framework import serializers
from rest_framework.fields import empty

DEFAULT_LIMIT = 10
MAX_LIMIT = 100
# Page numbers are at most 9 digits: a larger one is no page of any listing.
MAX_PAGE = 999_999_999


@dataclass(frozen=True)
class PageRequest:
    page: int
    limit: int

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.limit


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


PAGE_MESSAGE = "Invalid page. Must be a positive integer"
LIMIT_MESSAGE = f"Invalid limit. Must be between 1 and {MAX_LIMIT}"


class QueryPositiveIntegerField(serializers.IntegerField):
    """A positive integer in a query string: ASCII digits only (no sign, no decimals), at most 9."""

    def get_value(self, dictionary: Any) -> Any:
        # Present but empty (``?page=``) is invalid, not the default.
        return dictionary.get(self.field_name, empty)

    def to_internal_value(self, data: Any) -> int:
        text = str(data).strip()
        if not (text.isascii() and text.isdigit() and len(text) <= 9):
            self.fail("invalid")
        return int(text)


class PageQuerySerializer(serializers.Serializer):
    """``page`` and ``limit`` of a listing's query string; subclasses add their filters."""

    # Declared in the order they are checked: a bad page is reported before a bad limit.
    page = QueryPositiveIntegerField(
        default=1,
        min_value=1,
        max_value=MAX_PAGE,
        help_text="Page number, from 1.",
        error_messages={"invalid": PAGE_MESSAGE, "min_value": PAGE_MESSAGE, "max_value": PAGE_MESSAGE},
    )
    limit = QueryPositiveIntegerField(
        default=DEFAULT_LIMIT,
        min_value=1,
        max_value=MAX_LIMIT,
        help_text=f"Rows per page, 1-{MAX_LIMIT}.",
        error_messages={"invalid": LIMIT_MESSAGE, "min_value": LIMIT_MESSAGE, "max_value": LIMIT_MESSAGE},
    )

    def page_request(self) -> PageRequest:
        return PageRequest(page=self.validated_data["page"], limit=self.validated_data["limit"])


class PaginationOutputSerializer(serializers.Serializer):
    page = serializers.IntegerField()
    limit = serializers.IntegerField()
    total_count = serializers.IntegerField()
    total_pages = serializers.IntegerField()
