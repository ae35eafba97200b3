"""Account reads: sessions, API keys, and users with their usage statistics."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.apps import apps
from django.db.models import BigIntegerField, Count, OuterRef, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.models import ApiKey, User, UserSession
from whisper_site.search_text import search_text_clean

STATS_WINDOW = dt.timedelta(days=30)


def session_list_active(*, user: User) -> QuerySet[UserSession]:
    """Sessions that have not ended and are within their lifetime, newest first."""
    return UserSession.objects.filter(UserSession.active_q(), user=user).order_by("-created_at")


def api_key_list(*, user: User) -> QuerySet[ApiKey]:
    """The user's API keys, newest first."""
    return ApiKey.objects.filter(user=user).order_by("-created_at")


# --- Usage statistics ------------------------------------------------------------
# Every statistic is a correlated subquery per user row (``Subquery`` over
# ``OuterRef("pk")``), not a join: joining files, transcriptions, sessions and
# keys at once would multiply the rows and inflate every sum, and a loop of
# queries per user would grow with the page. A page of users is therefore one
# query whatever its size, and each subquery runs on an ``owner``/``user`` index.


@dataclass(frozen=True)
class UserStats:
    """What ``GET /admin/users`` and the admin site report about one user."""

    transcriptions_count: int
    total_audio_seconds: int
    files_uploaded: int
    total_storage_bytes: int
    active_sessions: int
    api_keys_count: int

    @classmethod
    def of(cls, user: Any) -> UserStats:
        """The statistics of a user loaded through :func:`user_stats_annotate`."""
        # int(): PostgreSQL sums bigints as numeric, which arrives as Decimal.
        return cls(
            transcriptions_count=int(user.stat_transcriptions_count),
            total_audio_seconds=int(user.stat_total_audio_seconds),
            files_uploaded=int(user.stat_files_uploaded),
            total_storage_bytes=int(user.stat_total_storage_bytes),
            active_sessions=int(user.stat_active_sessions),
            api_keys_count=int(user.stat_api_keys_count),
        )


def _owned_by_outer(queryset: QuerySet[Any], owner_field: str) -> QuerySet[Any]:
    # Grouping by the owner column makes the aggregate one row per outer user;
    # order_by() drops the model's default ordering, which would otherwise
    # join the GROUP BY and split that row.
    return queryset.filter(**{owner_field: OuterRef("pk")}).order_by().values(owner_field)


def _count(queryset: QuerySet[Any], owner_field: str) -> Coalesce:
    rows = _owned_by_outer(queryset, owner_field).annotate(n=Count("pk")).values("n")
    return Coalesce(Subquery(rows), Value(0), output_field=BigIntegerField())


def _sum(queryset: QuerySet[Any], owner_field: str, column: str) -> Coalesce:
    rows = _owned_by_outer(queryset, owner_field).annotate(total=Sum(column)).values("total")
    return Coalesce(Subquery(rows), Value(0), output_field=BigIntegerField())


def user_stats_annotate(queryset: QuerySet[User], *, now: dt.datetime | None = None) -> QuerySet[User]:
    """Annotate each user with the ``stat_*`` values of :class:`UserStats`.

    - transcriptions in the window: completed jobs created in the last 30 days;
      their audio seconds are summed per job, as they are billed (one request
      for three formats counts three jobs);
    - files in the window: audio and video uploads of the last 30 days (avatars
      are profile pictures, not uploads for transcription);
    - storage: the stored bytes of all the user's files, avatars included;
    - active sessions: not ended and within their lifetime;
    - API keys: all of them (a revoked key is deleted).
    """
    # Looked up by name, not imported: files and transcriptions depend on
    # accounts, and accounts' modules import neither of them.
    file_model = apps.get_model("files", "File")
    transcription_model = apps.get_model("transcriptions", "Transcription")
    now = now or timezone.now()
    since = now - STATS_WINDOW
    completed_recently = transcription_model.objects.filter(
        status=transcription_model.Status.COMPLETED, created_at__gte=since
    )
    uploads_recently = file_model.objects.filter(uploaded_at__gte=since).exclude(kind=file_model.Kind.IMAGE)
    active_sessions = UserSession.objects.filter(UserSession.active_q(now))
    return queryset.annotate(
        stat_transcriptions_count=_count(completed_recently, "owner"),
        stat_total_audio_seconds=_sum(completed_recently, "owner", "audio_seconds"),
        stat_files_uploaded=_count(uploads_recently, "owner"),
        stat_total_storage_bytes=_sum(file_model.objects.all(), "owner", "size_bytes"),
        stat_active_sessions=_count(active_sessions, "user"),
        stat_api_keys_count=_count(ApiKey.objects.all(), "user"),
    )


def user_list_with_stats(*, search: str | None = None) -> QuerySet[User]:
    """All users, newest first, optionally those whose username contains ``search``.

    The statistics are annotations: evaluating a page is one query however
    many users it holds (``count()`` drops them and stays cheap).
    """
    queryset = User.objects.all()
    if search:
        queryset = queryset.filter(username__icontains=search_text_clean(search))
    # The id breaks ties between users registered in the same instant
    # (UUIDv7 ids are ordered by creation too), so pages never overlap.
    return user_stats_annotate(queryset.order_by("-registered_at", "-id"))


def user_stats_get(*, user: User) -> UserStats:
    """The statistics of one user (for the admin site's change page)."""
    return UserStats.of(user_stats_annotate(User.objects.filter(pk=user.pk)).get())
