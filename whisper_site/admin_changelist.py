"""Helpers that keep the Django admin's change lists fast on large tables.

Used by the ``admin.py`` of accounts, files and transcriptions: the admin site
is this service's operator console, and its tables (files, transcriptions,
sessions) grow without bound.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib.auth import get_user_model
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import QuerySet
from django.utils.functional import cached_property

from whisper_site.search_text import search_text_clean

# Below this many rows an exact COUNT(*) is cheap; above it an unfiltered change
# list shows PostgreSQL's planner estimate instead of scanning the whole table.
EXACT_COUNT_UP_TO = 100_000
# A search term matches at most this many users (by username); more than that
# and the term is too vague to be a useful owner filter.
OWNER_SEARCH_LIMIT = 500


class LargeTablePaginator(Paginator):
    """A paginator whose unfiltered count is an estimate on large PostgreSQL tables.

    Filtered lists (a status, a search, an owner) are counted exactly: the
    filters run on indexed columns and narrow the scan.
    """

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if isinstance(queryset, QuerySet) and not queryset.query.where:
            estimate = _estimated_rows(queryset)
            if estimate is not None and estimate > EXACT_COUNT_UP_TO:
                return estimate
        return super().count


def _estimated_rows(queryset: QuerySet[Any]) -> int | None:
    connection = connections[queryset.db]
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)", [queryset.model._meta.db_table]
        )
        row = cursor.fetchone()
    # -1 means "never analysed": count exactly.
    return int(row[0]) if row and row[0] is not None and row[0] >= 0 else None


def search_by_id_or_owner(queryset: QuerySet[Any], term: str, *, owner_field: str) -> QuerySet[Any]:
    """Rows whose id is ``term`` (a UUID), or owned by users whose username contains it.

    Both lookups use an index of the large table (its primary key, or the
    owner foreign key); the substring match only scans the users table, which
    is small beside files or transcriptions.
    """
    term = search_text_clean(term).strip()
    if not term:
        return queryset
    try:
        return queryset.filter(pk=uuid.UUID(term))
    except ValueError:
        pass
    owner_ids = list(
        get_user_model()
        .objects.filter(username__icontains=term)
        .order_by()
        .values_list("pk", flat=True)[:OWNER_SEARCH_LIMIT]
    )
    return queryset.filter(**{f"{owner_field}__in": owner_ids})
