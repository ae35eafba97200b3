"""Operators' view of webhook endpoints and their delivery log, read-only.

Endpoints are registered by their owners through the API (the secret is shown to them
once and never here); deliveries are written by the webhook workers only.
"""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from webhooks.models import WebhookDelivery, WebhookEndpoint
from whisper_site.admin_changelist import LargeTablePaginator, search_by_id_or_owner

ERROR_PREVIEW_CHARS = 80


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    list_display = ("url", "owner", "events", "created_at", "delivery_log")
    search_fields = ("url",)  # enables the search box; see get_search_results
    search_help_text = "An endpoint UUID, or part of the owner's username."
    list_select_related = ("owner",)
    ordering = ("-created_at",)
    show_full_result_count = False
    # Never the secret: it was shown to its owner once.
    fields = ("id", "owner", "url", "events", "created_at", "delivery_log")
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[WebhookEndpoint]:
        return super().get_queryset(request).annotate(delivery_count=Count("deliveries"))

    @admin.display(description="deliveries")
    def delivery_log(self, obj: WebhookEndpoint) -> str:
        url = reverse("admin:webhooks_webhookdelivery_changelist") + f"?endpoint__id__exact={obj.pk}"
        return format_html('<a href="{}">{} deliveries</a>', url, getattr(obj, "delivery_count", "all"))

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint], search_term: str
    ) -> tuple[QuerySet[WebhookEndpoint], bool]:
        return search_by_id_or_owner(queryset, search_term, owner_field="owner"), False

    def has_add_permission(self, request: HttpRequest) -> bool:
        # An endpoint is registered by its owner (POST /user/webhooks), who alone sees its secret.
        return False

    def has_change_permission(self, request: HttpRequest, obj: WebhookEndpoint | None = None) -> bool:
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = (
        "message_id",
        "event_type",
        "status",
        "attempts",
        "last_status_code",
        "error_preview",
        "next_retry_at",
        "created_at",
        "endpoint",
    )
    # Choice fields only; the endpoint filter comes from the endpoint's "deliveries" link.
    list_filter = ("status", "event_type")
    search_fields = ("message_id",)
    search_help_text = "A webhook-id (msg_...)."
    list_select_related = ("endpoint",)
    ordering = ("-created_at",)
    paginator = LargeTablePaginator
    show_full_result_count = False
    fields = (
        "id",
        "endpoint",
        "event_type",
        "message_id",
        "status",
        "attempts",
        "last_status_code",
        "last_error",
        "next_retry_at",
        "created_at",
        "last_attempt_at",
        "completed_at",
        "payload",
    )
    readonly_fields = fields

    @admin.display(description="last error")
    def error_preview(self, obj: WebhookDelivery) -> str:
        if len(obj.last_error) <= ERROR_PREVIEW_CHARS:
            return obj.last_error
        return obj.last_error[: ERROR_PREVIEW_CHARS - 1] + "…"

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[WebhookDelivery], search_term: str
    ) -> tuple[QuerySet[WebhookDelivery], bool]:
        # The webhook-id a receiver reports, exactly (unique, indexed), instead of a substring scan.
        term = search_term.strip()
        return (queryset.filter(message_id=term) if term else queryset), False

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        # The endpoint's "deliveries" link filters by endpoint without a sidebar filter.
        return lookup == "endpoint__id__exact" or super().lookup_allowed(lookup, value, request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: WebhookDelivery | None = None) -> bool:
        return False
