"""Webhook endpoints of a user and the deliveries of events to them (docs/webhooks.md)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from whisper_site.identifiers import new_uuid7


class WebhookEndpoint(models.Model):
    """A URL that receives a user's job events, signed as the Standard Webhooks specification says.

    The secret is kept as issued (``whsec_`` + base64): signing needs the key itself, so
    it cannot be stored as a digest the way API keys are. It is shown once, in the answer
    that registers the endpoint, and never again: not by the API, not in the admin.
    """

    id = models.UUIDField(primary_key=True, default=new_uuid7, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_endpoints")
    url = models.CharField(max_length=2048)
    events = models.JSONField(default=list, help_text="The event types it receives.")
    secret = models.CharField(max_length=128, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        verbose_name = "webhook endpoint"
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["owner", "-created_at"], name="webhook_endpoint_owner_idx")]

    def __str__(self) -> str:
        return self.url


class WebhookDelivery(models.Model):
    """One event sent to one endpoint: its body, fixed once, and the state of its attempts.

    ``next_retry_at`` is when the next attempt is due while the delivery is pending; during
    an attempt it is pushed past the attempt's deadline (a lease), so that neither a second
    message nor the recovery starts another attempt meanwhile.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    id = models.UUIDField(primary_key=True, default=new_uuid7, editable=False)
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    event_type = models.CharField(max_length=64)
    # The webhook-id header: the same on every attempt, so that receivers can drop repeats.
    message_id = models.CharField(max_length=64, unique=True, editable=False)
    # The body exactly as sent, the same bytes on every attempt (a JSON column may reorder keys).
    payload = models.TextField(editable=False)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    next_retry_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True, help_text="When it succeeded or was given up.")

    class Meta:
        verbose_name = "webhook delivery"
        verbose_name_plural = "webhook deliveries"
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["endpoint", "-created_at"], name="webhook_delivery_endpoint_idx"),
            models.Index(fields=["status", "next_retry_at"], name="webhook_delivery_due_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status="pending") | models.Q(next_retry_at__isnull=True),
                name="webhook_delivery_retry_only_pending",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.message_id} {self.event_type} {self.status}"
