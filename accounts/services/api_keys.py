"""API keys: issued once in the clear, stored as a digest, revoked by deletion."""

from __future__ import annotations

import secrets
import uuid

from django.conf import settings
from django.db import transaction

from accounts.authentication import api_key_digest
from accounts.models import ApiKey, User
from whisper_site.errors import ApplicationError

TOKEN_NAME_MESSAGE = "Token name must be between 1 and 255 characters"


def api_key_create(*, user: User, name: str) -> tuple[ApiKey, str]:
    """Issue an API key; the raw key is returned once and only its digest is stored."""
    if not 1 <= len(name) <= 255:
        raise ApplicationError(TOKEN_NAME_MESSAGE, 400)
    with transaction.atomic():
        # Lock the user row so that concurrent requests cannot pass the cap together.
        User.objects.select_for_update().filter(pk=user.pk).first()
        if ApiKey.objects.filter(user=user).count() >= settings.MAX_API_KEYS_PER_USER:
            raise ApplicationError(f"Maximum number of API tokens reached ({settings.MAX_API_KEYS_PER_USER})", 400)
        raw = secrets.token_hex(16)
        api_key = ApiKey.objects.create(
            user=user, name=name, key_digest=api_key_digest(raw), prefix=raw[:4], suffix=raw[-4:]
        )
    return api_key, raw


def api_key_revoke(*, user: User, key_id: uuid.UUID) -> ApiKey:
    """Revoke (delete) one of the user's API keys."""
    api_key = ApiKey.objects.filter(id=key_id, user=user).first()
    if api_key is None:
        raise ApplicationError("Token not found or access denied", 404)
    api_key.delete()
    return api_key
