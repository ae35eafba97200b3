"""Webhook endpoints of the current user: ``/user/webhooks`` and its deliveries.

Each action reads its input through an input serializer, calls one service or selector
and answers with an output serializer; the OpenAPI document is generated from those
serializers and the ``extend_schema`` beside each action.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.utils import OpenApiExample, extend_schema, extend_schema_field, extend_schema_serializer
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from webhooks import selectors, services
from webhooks.destinations import (
    URL_BLOCKED_MESSAGE,
    URL_CREDENTIALS_MESSAGE,
    URL_FORM_MESSAGE,
    URL_LENGTH_MESSAGE,
    URL_MAX_LENGTH,
    URL_PATTERN,
    URL_UNRESOLVED_MESSAGE,
)
from webhooks.models import WebhookDelivery
from whisper_site.api_fields import (
    BODY_ERRORS,
    ConstantField,
    HexIdField,
    StrictInputSerializer,
    StrictStringField,
    TimestampField,
    validated_body,
)
from whisper_site.identifiers import parse_uuid
from whisper_site.openapi import AUTH_ERRORS, plain_text_errors, uuid_path_parameter
from whisper_site.pagination import (
    LIMIT_MESSAGE,
    PAGE_MESSAGE,
    PageQuerySerializer,
    PaginationOutputSerializer,
    paginate,
)
from whisper_site.timestamps import format_timestamp

MISSING_URL_MESSAGE = "Missing 'url' field in request body"
MISSING_EVENTS_MESSAGE = "Missing 'events' field in request body"
EVENTS_TYPE_MESSAGE = "Invalid events: must be a list of event types"
INVALID_ID_MESSAGE = "Invalid webhook ID format"
EXAMPLE_URL = "https://example.com/hooks/whisper"

# --- Fields --------------------------------------------------------------------------


@extend_schema_field({"type": "string", "maxLength": URL_MAX_LENGTH, "pattern": URL_PATTERN, "example": EXAMPLE_URL})
class WebhookUrlField(StrictStringField):
    """The receiver's URL as sent; its form and where it resolves are the service's questions."""

    default_error_messages = {
        "required": MISSING_URL_MESSAGE,
        "null": MISSING_URL_MESSAGE,
        "invalid": URL_FORM_MESSAGE,
    }


@extend_schema_field(
    {
        "type": "array",
        "items": {"type": "string", "enum": list(services.EVENT_TYPES)},
        "minItems": 1,
        "example": list(services.EVENT_TYPES),
    }
)
class WebhookEventsField(serializers.Field):
    """A list of event type names; which names are known is the service's question."""

    default_error_messages = {
        "required": MISSING_EVENTS_MESSAGE,
        "null": MISSING_EVENTS_MESSAGE,
        "invalid": EVENTS_TYPE_MESSAGE,
    }

    def to_internal_value(self, data: Any) -> list[str]:
        if not isinstance(data, list) or not all(isinstance(item, str) for item in data):
            self.fail("invalid")
        return data

    def to_representation(self, value: list[str]) -> list[str]:
        return value


@extend_schema_field(
    {
        "type": "string",
        "nullable": True,
        "pattern": r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$",
        "example": "2025-01-15 10:35:25",
        "description": "UTC, `YYYY-MM-DD HH:MM:SS`; null when no attempt is scheduled.",
    }
)
class OptionalTimestampField(serializers.Field):
    """A time that may not exist (null), unlike "not yet" (the epoch) of :class:`TimestampField`."""

    def to_representation(self, value: Any) -> str:
        return format_timestamp(value)


# --- Serializers ---------------------------------------------------------------------


class WebhookCreateInputSerializer(StrictInputSerializer):
    # Declared in the order their errors are reported (after any unknown field).
    url = WebhookUrlField(
        help_text=(
            f"Where events are POSTed: `http` or `https`, at most {URL_MAX_LENGTH} characters of printable "
            "ASCII, no credentials; the host must resolve to global addresses only."
        )
    )
    events = WebhookEventsField(help_text="The events to receive: one or more of " + ", ".join(services.EVENT_TYPES))


class WebhookOutputSerializer(serializers.Serializer):
    uuid = HexIdField(source="id")
    url = serializers.CharField()
    events = serializers.ListField(child=serializers.CharField())
    created_at = TimestampField()


@extend_schema_serializer(many=False)
class WebhookListOutputSerializer(serializers.Serializer):
    webhooks = WebhookOutputSerializer(many=True, help_text="Newest first; secrets are never shown again.")


class WebhookCreateOutputSerializer(serializers.Serializer):
    message = ConstantField("Webhook registered successfully")
    uuid = HexIdField(source="id")
    url = serializers.CharField()
    events = serializers.ListField(child=serializers.CharField())
    created_at = TimestampField()
    secret = serializers.CharField(
        help_text="`whsec_` + base64: the signing secret, shown only in this answer (Standard Webhooks)."
    )
    note = ConstantField("Save this secret securely. You won't be able to see it again.")


class WebhookDeleteOutputSerializer(serializers.Serializer):
    message = ConstantField("Webhook deleted successfully")
    uuid = HexIdField(source="id")


class WebhookDeliveryOutputSerializer(serializers.Serializer):
    uuid = HexIdField(source="id")
    webhook_id = serializers.CharField(source="message_id", help_text="The `webhook-id` header, the same on retries.")
    event = serializers.CharField(source="event_type")
    status = serializers.ChoiceField(choices=WebhookDelivery.Status.choices, help_text="pending, succeeded or failed.")
    attempts = serializers.IntegerField()
    last_status_code = serializers.IntegerField(
        allow_null=True, help_text="The HTTP status of the last answer; null when none came."
    )
    last_error = serializers.CharField(help_text="Why the last attempt failed; empty after a success.")
    next_retry_at = OptionalTimestampField(help_text="When the next attempt is due; null once finished.")
    created_at = TimestampField()
    last_attempt_at = TimestampField(help_text="1970-01-01 00:00:00 until the first attempt.")


@extend_schema_serializer(many=False)
class WebhookDeliveryListOutputSerializer(serializers.Serializer):
    deliveries = WebhookDeliveryOutputSerializer(many=True, help_text="Newest first.")
    pagination = PaginationOutputSerializer()


# --- The OpenAPI document ------------------------------------------------------------

WEBHOOK_ID = uuid_path_parameter("uuid", "Webhook ID (32 hex digits, or hyphenated).")
EXAMPLE_WEBHOOK = {
    "uuid": "018c5f9a7b2e7a8c9d0e1f2a3b4c5d6e",
    "url": EXAMPLE_URL,
    "events": ["transcription.completed", "transcription.failed"],
    "created_at": "2025-01-15 10:30:45",
}


def response_example(value: dict[str, Any]) -> OpenApiExample:
    return OpenApiExample("Response", value=value, response_only=True, status_codes=["200"])


# --- The ViewSet ---------------------------------------------------------------------


class WebhookViewSet(viewsets.ViewSet):
    """``/user/webhooks``: register, list and remove the current user's webhook endpoints."""

    lookup_field = "uuid"
    # Anything up to the next slash: a malformed id is a 400, not a 404.
    lookup_value_regex = "[^/]+"

    @extend_schema(
        operation_id="user_webhooks_list",
        summary="List webhook endpoints of the current user",
        description="Newest first. The secrets are not shown: only the answer that registers an endpoint has it.",
        tags=["webhooks"],
        examples=[response_example({"webhooks": [EXAMPLE_WEBHOOK]})],
        responses={200: WebhookListOutputSerializer, **plain_text_errors(*AUTH_ERRORS)},
    )
    def list(self, request: Request) -> Response:
        rows = selectors.webhook_endpoint_list(user=request.user)
        return Response(WebhookListOutputSerializer({"webhooks": rows}).data)

    @extend_schema(
        operation_id="user_webhooks_create",
        summary="Register a webhook endpoint",
        description=(
            "Events of the user's transcriptions are POSTed to `url` as the Standard Webhooks "
            "specification says: a JSON body `{type, timestamp, data}` (`data`: the job as "
            "`GET /transcribe/{uuid}` shows it, without its `data`) with `webhook-id`, "
            "`webhook-timestamp` and `webhook-signature` headers, signed with the `secret` of this "
            "answer (shown only here). A delivery succeeds on any 2xx within 10 s; redirects are not "
            "followed; failures are retried after 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and 10 h. The "
            "host must resolve to global addresses only (no loopback, private, link-local, multicast "
            "or reserved address), checked here and before every delivery. At most "
            f"{settings.WEBHOOK_MAX_ENDPOINTS_PER_USER} endpoints per user (`WEBHOOK_MAX_ENDPOINTS_PER_USER`)."
        ),
        tags=["webhooks"],
        request=WebhookCreateInputSerializer,
        examples=[
            OpenApiExample(
                "Request",
                value={"url": EXAMPLE_URL, "events": ["transcription.completed", "transcription.failed"]},
                request_only=True,
            ),
            response_example(
                {
                    "message": "Webhook registered successfully",
                    **EXAMPLE_WEBHOOK,
                    "secret": "whsec_xtrntj0WTRL71DVWm4WtS1dOoCODQAvHwqoXeubQvoo=",
                    "note": "Save this secret securely. You won't be able to see it again.",
                }
            ),
        ],
        responses={
            200: WebhookCreateOutputSerializer,
            **plain_text_errors(
                (400, "Unknown field: event"),
                (400, MISSING_URL_MESSAGE),
                (400, URL_FORM_MESSAGE),
                (400, MISSING_EVENTS_MESSAGE),
                (400, EVENTS_TYPE_MESSAGE),
                (400, URL_LENGTH_MESSAGE),
                (400, URL_CREDENTIALS_MESSAGE),
                (400, services.EVENTS_EMPTY_MESSAGE),
                (400, services.unknown_event_message("transcription.started")),
                (400, URL_UNRESOLVED_MESSAGE),
                (400, URL_BLOCKED_MESSAGE),
                (400, services.endpoint_limit_message()),
                *AUTH_ERRORS,
                *BODY_ERRORS,
            ),
        },
    )
    def create(self, request: Request) -> Response:
        data = validated_body(WebhookCreateInputSerializer, request)
        endpoint = services.webhook_endpoint_create(user=request.user, **data)
        return Response(WebhookCreateOutputSerializer(endpoint).data)

    @extend_schema(
        operation_id="user_webhooks_delete",
        summary="Remove a webhook endpoint",
        description="Its delivery log goes with it; deliveries not yet made are not sent.",
        tags=["webhooks"],
        parameters=[WEBHOOK_ID],
        request=None,
        examples=[
            response_example({"message": "Webhook deleted successfully", "uuid": "018c5f9a7b2e7a8c9d0e1f2a3b4c5d6e"})
        ],
        responses={
            200: WebhookDeleteOutputSerializer,
            **plain_text_errors((400, INVALID_ID_MESSAGE), *AUTH_ERRORS, (404, services.NOT_FOUND_MESSAGE)),
        },
    )
    def destroy(self, request: Request, uuid: str) -> Response:
        endpoint_id = parse_uuid(uuid, INVALID_ID_MESSAGE)
        endpoint = services.webhook_endpoint_delete(user=request.user, endpoint_id=endpoint_id)
        # The id parsed from the path: a deleted instance's own id is gone.
        return Response(WebhookDeleteOutputSerializer({"id": endpoint_id, "endpoint": endpoint}).data)

    @extend_schema(
        operation_id="user_webhooks_deliveries",
        summary="List recent deliveries to a webhook endpoint",
        description=(
            "Newest first: each event sent (or being sent) to the endpoint, its attempts, the last "
            "answer's status code or error, and when the next attempt is due."
        ),
        tags=["webhooks"],
        parameters=[WEBHOOK_ID, PageQuerySerializer],
        examples=[
            response_example(
                {
                    "deliveries": [
                        {
                            "uuid": "018c5f9b1a2b3c4d5e6f7a8b9c0d1e2f",
                            "webhook_id": "msg_018c5f9b1a2b3c4d5e6f7a8b9c0d1e2f",
                            "event": "transcription.completed",
                            "status": "pending",
                            "attempts": 1,
                            "last_status_code": 500,
                            "last_error": "HTTP 500",
                            "next_retry_at": "2025-01-15 10:35:25",
                            "created_at": "2025-01-15 10:35:20",
                            "last_attempt_at": "2025-01-15 10:35:20",
                        }
                    ],
                    "pagination": {"page": 1, "limit": 10, "total_count": 1, "total_pages": 1},
                }
            )
        ],
        responses={
            200: WebhookDeliveryListOutputSerializer,
            **plain_text_errors(
                (400, INVALID_ID_MESSAGE),
                (400, PAGE_MESSAGE),
                (400, LIMIT_MESSAGE),
                *AUTH_ERRORS,
                (404, services.NOT_FOUND_MESSAGE),
            ),
        },
    )
    @action(detail=True, methods=["get"])
    def deliveries(self, request: Request, uuid: str) -> Response:
        endpoint_id = parse_uuid(uuid, INVALID_ID_MESSAGE)
        query = PageQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        endpoint = selectors.webhook_endpoint_get(user=request.user, endpoint_id=endpoint_id)
        rows, pagination = paginate(selectors.webhook_delivery_list(endpoint=endpoint), query.page_request())
        return Response(WebhookDeliveryListOutputSerializer({"deliveries": rows, "pagination": pagination}).data)
