"""Account reads."""

from __future__ import annotations

from django.db.models import QuerySet

from accounts.models import ApiKey, User, UserSession


def session_list_active(*, user: User) -> QuerySet[UserSession]:
    """Sessions that have not ended and are within their lifetime, newest first."""
    return UserSession.objects.filter(UserSession.active_q(), user=user).order_by("-created_at")


def api_key_list(*, user: User) -> QuerySet[ApiKey]:
    """The user's API keys, newest first."""
    return ApiKey.objects.filter(user=user).order_by("-created_at")
