"""The two ways to authenticate: ``Bearer <api-key>`` and ``Basic <session-id>``.

Both are shaped like DRF's ``TokenAuthentication``: ``None`` when the header is
not theirs, ``AuthenticationFailed`` when it is theirs and wrong. Keep this
module free of view imports: DRF reads these classes at import time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re

from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from accounts.models import ApiKey, User, UserSession

_HEX32 = re.compile(r"[0-9a-f]{32}")
# last_used_at is informative: write it at most once a minute per key.
_LAST_USED_RESOLUTION = dt.timedelta(minutes=1)


def api_key_digest(raw_key: str) -> str:
    """SHA-256 of an API key. Keys carry 128 random bits, so a fast hash suffices."""
    return hashlib.sha256(raw_key.lower().encode("ascii")).hexdigest()


def _credential(request: Request, keyword: bytes) -> str | None:
    parts = get_authorization_header(request).split()
    if not parts or parts[0].lower() != keyword:
        return None
    if len(parts) != 2:
        return ""
    try:
        return parts[1].decode("ascii").lower()
    except UnicodeDecodeError:
        return ""


class ApiKeyAuthentication(BaseAuthentication):
    """``Authorization: Bearer <32 hex digits>``."""

    def authenticate(self, request: Request) -> tuple[User, ApiKey] | None:
        raw = _credential(request, b"bearer")
        if raw is None:
            return None
        if not _HEX32.fullmatch(raw):
            raise exceptions.AuthenticationFailed("Invalid API key")
        api_key = ApiKey.objects.select_related("user").filter(key_digest=api_key_digest(raw)).first()
        if api_key is None or not api_key.user.is_active:
            raise exceptions.AuthenticationFailed("Invalid API key")
        now = timezone.now()
        if api_key.last_used_at is None or now - api_key.last_used_at > _LAST_USED_RESOLUTION:
            ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        return api_key.user, api_key

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'


class SessionIdAuthentication(BaseAuthentication):
    """``Authorization: Basic <32 hex digits>``: the raw session id, no base64."""

    def authenticate(self, request: Request) -> tuple[User, UserSession] | None:
        raw = _credential(request, b"basic")
        if raw is None:
            return None
        raw = raw.replace("-", "") if len(raw) == 36 else raw
        if not _HEX32.fullmatch(raw):
            raise exceptions.AuthenticationFailed("Invalid or expired session")
        session = UserSession.objects.select_related("user").filter(UserSession.active_q(), id=raw).first()
        if session is None or not session.user.is_active:
            raise exceptions.AuthenticationFailed("Invalid or expired session")
        return session.user, session

    def authenticate_header(self, request: Request) -> str:
        return 'Basic realm="api"'
