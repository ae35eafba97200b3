"""Webhook writes, one module per idea.

- :mod:`~webhooks.services.endpoints`: registering and removing endpoints;
- :mod:`~webhooks.services.deliveries`: recording events (``webhook_event_emit``),
  attempting deliveries with retries, and the recovery of lost messages.

Callers import the public names from ``webhooks.services``.
"""

from __future__ import annotations

from webhooks.services.deliveries import (
    MAX_ATTEMPTS,
    RETRY_DELAYS_SECONDS,
    job_event_data,
    webhook_delivery_attempt,
    webhook_delivery_enqueue,
    webhook_delivery_requeue_due,
    webhook_event_emit,
)
from webhooks.services.endpoints import (
    EVENT_TYPES,
    EVENTS_EMPTY_MESSAGE,
    NOT_FOUND_MESSAGE,
    TRANSCRIPTION_CANCELLED,
    TRANSCRIPTION_COMPLETED,
    TRANSCRIPTION_FAILED,
    endpoint_limit_message,
    unknown_event_message,
    webhook_endpoint_create,
    webhook_endpoint_delete,
    webhook_events_clean,
)

__all__ = [
    "EVENTS_EMPTY_MESSAGE",
    "EVENT_TYPES",
    "MAX_ATTEMPTS",
    "NOT_FOUND_MESSAGE",
    "RETRY_DELAYS_SECONDS",
    "TRANSCRIPTION_CANCELLED",
    "TRANSCRIPTION_COMPLETED",
    "TRANSCRIPTION_FAILED",
    "endpoint_limit_message",
    "job_event_data",
    "unknown_event_message",
    "webhook_delivery_attempt",
    "webhook_delivery_enqueue",
    "webhook_delivery_requeue_due",
    "webhook_endpoint_create",
    "webhook_endpoint_delete",
    "webhook_event_emit",
    "webhook_events_clean",
]
