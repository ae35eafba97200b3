"""Events of a user's jobs, delivered to the user's endpoints with retries (docs/webhooks.md).

An event becomes one :class:`WebhookDelivery` per subscribed endpoint, in the caller's
transaction, and a ``webhooks.deliver`` message per delivery on ``WEBHOOK_QUEUE`` once that
transaction commits: a slow or dead receiver holds a webhook worker, never a
transcription worker, and an event of a job change that rolled back is never sent.

Each attempt claims the delivery with a conditional UPDATE (due, still pending): two
messages for one delivery, or a message and the recovery, never make two attempts at
once. A failed attempt is retried after 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and 10 h;
after the eighth attempt the delivery is failed. Every attempt sends the same body and
``webhook-id``, with a fresh ``webhook-timestamp`` and signature.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import uuid
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from transcriptions.models import Transcription
from webhooks.destinations import PostResult, destination_post, destination_resolve
from webhooks.models import WebhookDelivery, WebhookEndpoint
from webhooks.services.endpoints import EVENT_TYPES
from webhooks.signing import webhook_signature
from whisper_site.errors import ApplicationError
from whisper_site.identifiers import new_uuid7

logger = logging.getLogger(__name__)

# Seconds to wait after failed attempt 1, 2, ... 7; the eighth failure is final.
RETRY_DELAYS_SECONDS = (5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600)
MAX_ATTEMPTS = len(RETRY_DELAYS_SECONDS) + 1
# A countdown message may arrive a little before the time recorded for it (clocks of web,
# worker and database hosts): up to this much early it still counts as due.
CLOCK_SLACK = dt.timedelta(seconds=2)
# How long past an attempt's deadline its claim holds: a worker that died mid-attempt
# leaves the delivery to the recovery after this.
LEASE_MARGIN_SECONDS = 60
USER_AGENT = "whisper-webhooks/1.0"


def job_event_data(*, job: Transcription) -> dict[str, Any]:
    """The job as ``GET /transcribe/:uuid`` shows it, without its ``data`` (the transcript)."""
    # Imported here: transcriptions' API module imports its services, which emit events.
    from transcriptions.apis import TranscriptionOutputSerializer

    body = dict(TranscriptionOutputSerializer(job).data)
    body.pop("data", None)
    return body


def webhook_event_emit(*, job: Transcription, event_type: str) -> list[WebhookDelivery]:
    """Record ``event_type`` of ``job`` for each endpoint of its owner that subscribed to it.

    Call it inside the transaction that changes the job's status (after the change):
    the job is read again from the database, so the event shows the state being
    committed, and the ``webhooks.deliver`` messages are sent only once that transaction
    commits (none if it rolls back). ``event_type`` is one of ``EVENT_TYPES``.

    An owner without endpoints costs one query. A failure here is logged and never undoes
    the caller's change: it runs in a savepoint of its own.
    """
    if event_type not in EVENT_TYPES:
        raise ValueError(f"Unknown webhook event type: {event_type}")
    try:
        with transaction.atomic():
            return _event_record(job=job, event_type=event_type)
    except Exception:
        context = job.log_context()
        logger.exception("Could not record webhook event %s %s", event_type, context.words, extra=context.extra)
        return []


def _event_record(*, job: Transcription, event_type: str) -> list[WebhookDelivery]:
    endpoints = [
        endpoint
        for endpoint in WebhookEndpoint.objects.filter(owner_id=job.owner_id).order_by("created_at")
        # A JSON list is filtered here: SQLite has no JSON "contains" lookup.
        if event_type in endpoint.events
    ]
    if not endpoints:
        return []
    current = Transcription.objects.filter(id=job.id).first() or job
    now = timezone.now()
    payload = {
        "type": event_type,
        # When the event happened, ISO 8601 in UTC as the specification writes it.
        "timestamp": now.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
        "data": job_event_data(job=current),
    }
    body = json.dumps(payload, separators=(",", ":"))
    deliveries = []
    for endpoint in endpoints:
        delivery_id = new_uuid7()
        deliveries.append(
            WebhookDelivery.objects.create(
                id=delivery_id,
                endpoint=endpoint,
                event_type=event_type,
                message_id=f"msg_{delivery_id.hex}",
                payload=body,
                # Due at once: if the message is lost (broker down), the recovery sends it.
                next_retry_at=now,
                created_at=now,
            )
        )
    ids = [delivery.id for delivery in deliveries]

    def enqueue() -> None:
        for delivery_id in ids:
            webhook_delivery_enqueue(delivery_id=delivery_id)

    # robust: a failure to queue never keeps the caller's own on-commit work from running.
    transaction.on_commit(enqueue, robust=True)
    return deliveries


def attempt_time_limits() -> tuple[int, int]:
    """Celery's (soft, hard) time limits of one attempt: well past its own deadline."""
    soft = int(settings.WEBHOOK_TIMEOUT_SECONDS) + 30
    return soft, soft + 30


def webhook_delivery_enqueue(*, delivery_id: uuid.UUID, countdown: float | None = None) -> None:
    """Send a ``webhooks.deliver`` message for the delivery to ``WEBHOOK_QUEUE``.

    A broker that cannot take it is logged, not raised: the delivery stays due and the
    recovery (``webhooks.requeue_due``) sends it later.
    """
    from webhooks.tasks import webhook_deliver_task  # tasks import this module

    soft, hard = attempt_time_limits()
    try:
        webhook_deliver_task.apply_async(
            args=[delivery_id.hex],
            queue=settings.WEBHOOK_QUEUE,
            countdown=countdown,
            soft_time_limit=soft,
            time_limit=hard,
        )
    except Exception:
        if webhook_deliver_task.app.conf.task_always_eager:
            raise  # eager mode runs the task here: its errors are its own
        logger.exception("Could not queue webhook delivery %s", delivery_id.hex)


def webhook_delivery_attempt(*, delivery_id: uuid.UUID) -> WebhookDelivery | None:
    """Make the next attempt of a delivery if it is due, and schedule the one after if it fails.

    None when there is nothing to do: the delivery is gone (its endpoint was deleted),
    finished, not yet due, or being attempted by another worker. Safe to call twice.
    """
    now = timezone.now()
    lease_until = now + dt.timedelta(seconds=settings.WEBHOOK_TIMEOUT_SECONDS + LEASE_MARGIN_SECONDS)
    # The claim: only one caller moves a due delivery's next_retry_at past now.
    claimed = WebhookDelivery.objects.filter(
        id=delivery_id, status=WebhookDelivery.Status.PENDING, next_retry_at__lte=now + CLOCK_SLACK
    ).update(attempts=F("attempts") + 1, last_attempt_at=now, next_retry_at=lease_until)
    if not claimed:
        return None
    delivery = WebhookDelivery.objects.select_related("endpoint").filter(id=delivery_id).first()
    if delivery is None:
        return None
    result = _attempt_send(delivery)
    finished = timezone.now()
    fields: dict[str, Any] = {"last_status_code": result.status_code, "last_error": result.error}
    if result.ok:
        fields.update(status=WebhookDelivery.Status.SUCCEEDED, next_retry_at=None, completed_at=finished)
        retry_in = None
    elif delivery.attempts >= MAX_ATTEMPTS:
        fields.update(status=WebhookDelivery.Status.FAILED, next_retry_at=None, completed_at=finished)
        retry_in = None
    else:
        retry_in = RETRY_DELAYS_SECONDS[delivery.attempts - 1]
        fields.update(next_retry_at=finished + dt.timedelta(seconds=retry_in))
    # Still this attempt's claim (same attempt number): one whose lease ran out and was
    # taken again by the recovery does not overwrite the newer attempt's outcome.
    recorded = WebhookDelivery.objects.filter(
        id=delivery_id, status=WebhookDelivery.Status.PENDING, attempts=delivery.attempts
    ).update(**fields)
    for name, value in fields.items():
        setattr(delivery, name, value)
    logger.info(
        "Webhook %s %s to endpoint %s: attempt %d %s",
        delivery.message_id,
        delivery.event_type,
        delivery.endpoint_id.hex,
        delivery.attempts,
        "succeeded" if result.ok else f"failed ({result.error})",
    )
    if recorded and retry_in is not None:
        webhook_delivery_enqueue(delivery_id=delivery_id, countdown=retry_in)
    return delivery


def _attempt_send(delivery: WebhookDelivery) -> PostResult:
    endpoint = delivery.endpoint
    try:
        # Resolved and checked again now: the name may point elsewhere than at registration.
        destination = destination_resolve(url=endpoint.url, allow_private=settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS)
    except ApplicationError as exc:
        reason = exc.message.removeprefix("Invalid url: ")
        return PostResult(status_code=None, error=f"Refused: {reason}")
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": delivery.message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": webhook_signature(
            secret=endpoint.secret, message_id=delivery.message_id, timestamp=timestamp, body=delivery.payload
        ),
    }
    return destination_post(
        destination=destination,
        body=delivery.payload.encode(),
        headers=headers,
        timeout=settings.WEBHOOK_TIMEOUT_SECONDS,
        max_response_bytes=settings.WEBHOOK_RESPONSE_MAX_BYTES,
    )


def webhook_delivery_requeue_due(*, older_than: float, limit: int = 1000) -> int:
    """Send again the pending deliveries due for ``older_than`` seconds or more; how many were sent.

    Their own countdown message was lost (broker restarted, worker killed mid-attempt,
    enqueue failed): the attempt's claim makes a message that still arrives harmless.
    At most ``limit`` per run, the longest overdue first; the next run takes the rest.
    """
    cutoff = timezone.now() - dt.timedelta(seconds=older_than)
    ids = list(
        WebhookDelivery.objects.filter(status=WebhookDelivery.Status.PENDING, next_retry_at__lte=cutoff)
        .order_by("next_retry_at")
        .values_list("id", flat=True)[:limit]
    )
    for delivery_id in ids:
        webhook_delivery_enqueue(delivery_id=delivery_id)
    if ids:
        logger.info("Re-queued %d overdue webhook deliveries", len(ids))
    return len(ids)
