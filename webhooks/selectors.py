"""Webhook reads: a user's endpoints and an endpoint's delivery log."""

from __future__ import annotations

import uuid

from django.db.models import QuerySet

from accounts.models import User
from webhooks.models import WebhookDelivery, WebhookEndpoint
from webhooks.services.endpoints import NOT_FOUND_MESSAGE
from whisper_site.errors import ApplicationError


def webhook_endpoint_list(*, user: User) -> list[WebhookEndpoint]:
    """The user's endpoints, newest first."""
    return list(WebhookEndpoint.objects.filter(owner=user).order_by("-created_at", "-id"))


def webhook_endpoint_get(*, user: User, endpoint_id: uuid.UUID) -> WebhookEndpoint:
    """One of the user's endpoints; another user's is as missing as one that never was (404)."""
    endpoint = WebhookEndpoint.objects.filter(id=endpoint_id, owner=user).first()
    if endpoint is None:
        raise ApplicationError(NOT_FOUND_MESSAGE, 404)
    return endpoint


def webhook_delivery_list(*, endpoint: WebhookEndpoint) -> QuerySet[WebhookDelivery]:
    """The endpoint's deliveries, newest first."""
    return WebhookDelivery.objects.filter(endpoint=endpoint).order_by("-created_at", "-id")
