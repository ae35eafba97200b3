"""Celery tasks of webhooks: thin wrappers around services."""

from __future__ import annotations

import uuid

from celery import shared_task
from django.conf import settings


# Sent to WEBHOOK_QUEUE (webhooks.services.deliveries). Acknowledged on receipt: an attempt
# lost with its worker is made again by the recovery once its claim's lease runs out, and a
# second message for one delivery finds it claimed or not yet due and does nothing.
@shared_task(name="webhooks.deliver", ignore_result=True)
def webhook_deliver_task(delivery_id: str) -> None:
    """Make the next attempt of one delivery, if it is due."""
    from webhooks import services

    services.webhook_delivery_attempt(delivery_id=uuid.UUID(delivery_id))


# Sent by Celery beat (settings.CELERY_BEAT_SCHEDULE, "webhooks-requeue-due").
@shared_task(name="webhooks.requeue_due", ignore_result=True)
def webhook_requeue_due_task(older_than: float | None = None) -> int:
    """Queue again the deliveries whose next attempt is overdue (their message was lost)."""
    from webhooks import services

    if older_than is None:
        older_than = settings.WEBHOOK_RECOVERY_AFTER_SECONDS
    return services.webhook_delivery_requeue_due(older_than=older_than)
