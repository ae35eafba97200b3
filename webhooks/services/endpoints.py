"""Registering and removing a user's webhook endpoints."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import transaction

from accounts.models import User
from webhooks.destinations import destination_resolve, url_parse
from webhooks.models import WebhookEndpoint
from webhooks.signing import webhook_secret_new
from whisper_site.errors import ApplicationError

TRANSCRIPTION_COMPLETED = "transcription.completed"
TRANSCRIPTION_FAILED = "transcription.failed"
TRANSCRIPTION_CANCELLED = "transcription.cancelled"
EVENT_TYPES = (TRANSCRIPTION_COMPLETED, TRANSCRIPTION_FAILED, TRANSCRIPTION_CANCELLED)

NOT_FOUND_MESSAGE = "Webhook not found or access denied"
EVENTS_EMPTY_MESSAGE = "At least one event must be specified"


def unknown_event_message(event: str) -> str:
    return f"Invalid event: {event}. Must be one of: {', '.join(EVENT_TYPES)}"


def endpoint_limit_message() -> str:
    return f"Maximum number of webhooks reached ({settings.WEBHOOK_MAX_ENDPOINTS_PER_USER})"


def webhook_events_clean(*, events: list[str]) -> list[str]:
    """The event types of a registration, each once in the order given; unknown or none is a 400."""
    if not events:
        raise ApplicationError(EVENTS_EMPTY_MESSAGE, 400)
    for event in events:
        if event not in EVENT_TYPES:
            raise ApplicationError(unknown_event_message(event), 400)
    return list(dict.fromkeys(events))


def webhook_endpoint_create(*, user: User, url: str, events: list[str]) -> WebhookEndpoint:
    """Register ``url`` for ``events`` of ``user``'s jobs, with a new secret (``endpoint.secret``).

    Checked in this order: the URL's form, the events, then where the host resolves
    (unless ``WEBHOOK_ALLOW_PRIVATE_NETWORKS``, only to global addresses; the check is made
    again before every delivery), then the cap of ``WEBHOOK_MAX_ENDPOINTS_PER_USER``.
    """
    url_parse(url)
    events = webhook_events_clean(events=events)
    # Outside the transaction: a slow resolver must not hold the user's row locked.
    destination_resolve(url=url, allow_private=settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS)
    with transaction.atomic():
        # The user's row locked: two concurrent registrations cannot pass the cap together.
        User.objects.select_for_update().filter(pk=user.pk).first()
        if WebhookEndpoint.objects.filter(owner=user).count() >= settings.WEBHOOK_MAX_ENDPOINTS_PER_USER:
            raise ApplicationError(endpoint_limit_message(), 400)
        return WebhookEndpoint.objects.create(owner=user, url=url, events=events, secret=webhook_secret_new())


def webhook_endpoint_delete(*, user: User, endpoint_id: uuid.UUID) -> WebhookEndpoint:
    """Remove one of ``user``'s endpoints and its delivery log; deliveries still pending are not sent."""
    endpoint = WebhookEndpoint.objects.filter(id=endpoint_id, owner=user).first()
    if endpoint is None:
        raise ApplicationError(NOT_FOUND_MESSAGE, 404)
    endpoint.delete()
    return endpoint
