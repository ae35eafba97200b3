"""Login sessions: opened at register and login, ended at logout, purged once dead."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from django.db.models import Q
from django.utils import timezone

from accounts.models import User, UserSession
from whisper_site.errors import ApplicationError

USER_AGENT_MAX_LENGTH = 512
PURGE_BATCH_SIZE = 5000


def session_create(*, user: User, user_agent: str) -> UserSession:
    """Open a 24-hour session that records the client's User-Agent."""
    # PostgreSQL refuses NUL in text; a header may carry one under servers that pass it.
    return UserSession.objects.create(user=user, user_agent=user_agent.replace("\x00", "")[:USER_AGENT_MAX_LENGTH])


def session_end(*, user: User, current: UserSession, session_id: uuid.UUID | None) -> UserSession:
    """End the current session, or another active session of the same user."""
    if session_id is None or session_id == current.id:
        target = current
    else:
        found = UserSession.objects.filter(id=session_id).first()
        if found is None or not found.is_active():
            raise ApplicationError("Session not found or already ended", 404)
        if found.user_id != user.id:
            raise ApplicationError("Cannot logout from another user's session", 403)
        target = found
    # Conditional UPDATE: a concurrent logout of the same session ends it once.
    ended = UserSession.objects.filter(id=target.id, ended_at__isnull=True).update(ended_at=timezone.now())
    if not ended:
        raise ApplicationError("Session not found or already ended", 404)
    return target


@dataclass(frozen=True)
class PurgeResult:
    ended: int
    expired: int

    @property
    def total(self) -> int:
        return self.ended + self.expired


def session_purge(*, dry_run: bool = False) -> PurgeResult:
    """Delete sessions that can never authenticate again: ended or past their lifetime.

    Deleted in batches of ids, so that a large backlog never holds one long
    lock on the sessions table while users are logging in.
    """
    cutoff = timezone.now() - UserSession.lifetime()
    ended = UserSession.objects.filter(ended_at__isnull=False)
    expired = UserSession.objects.filter(ended_at__isnull=True, created_at__lte=cutoff)
    result = PurgeResult(ended=ended.count(), expired=expired.count())
    if dry_run:
        return result
    stale = UserSession.objects.filter(Q(ended_at__isnull=False) | Q(created_at__lte=cutoff)).order_by()
    while True:
        ids = list(stale.values_list("pk", flat=True)[:PURGE_BATCH_SIZE])
        if not ids:
            break
        UserSession.objects.filter(pk__in=ids).delete()
    return result
