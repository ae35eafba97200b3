"""Admin endpoints: ``GET /admin/users``, ``PATCH /admin/users/:uuid`` and ``GET /admin/metrics``.

Each users action reads its input through an input serializer, calls one accounts
selector or service and answers with an output serializer; the metrics answer is
prometheus_client's text, from :class:`admin_api.metrics.ServiceCollector`.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from django.http import HttpResponse
from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_serializer,
)
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from rest_framework import renderers, serializers, viewsets
from rest_framework.fields import empty
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import selectors, services
from accounts.models import User
from admin_api.metrics import ServiceCollector
from admin_api.permissions import IsAdmin
from whisper_site.api_fields import BODY_ERRORS, ConstantField, HexIdField, TimestampField, validated_body
from whisper_site.identifiers import parse_uuid
from whisper_site.openapi import ADMIN_ERRORS, AUTH_ERRORS, plain_text_errors, uuid_path_parameter
from whisper_site.pagination import (
    LIMIT_MESSAGE,
    PAGE_MESSAGE,
    PageQuerySerializer,
    PaginationOutputSerializer,
    paginate,
)
from whisper_site.search_text import search_text_clean

# --- GET /admin/users ----------------------------------------------------------------


class SearchTextField(serializers.CharField):
    """Search text: a NUL is dropped (no username holds one), not refused."""

    def run_validation(self, data: Any = empty) -> Any:
        # DRF's NUL validator would refuse the text before it is cleaned.
        if isinstance(data, str):
            data = search_text_clean(data)
        return super().run_validation(data)


class AdminUserListInputSerializer(PageQuerySerializer):
    search = SearchTextField(
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        help_text="Only usernames containing this text (case-insensitive).",
    )
    username = SearchTextField(required=False, allow_blank=True, trim_whitespace=False, help_text="Alias of `search`.")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # `username` stands in for an empty or absent `search`; blank text is no filter.
        search = attrs.pop("search", "")
        alias = attrs.pop("username", "")
        attrs["search"] = (search or alias).strip() or None
        return attrs


class LastThirtyDaysOutputSerializer(serializers.Serializer):
    transcriptions_count = serializers.IntegerField(help_text="Completed jobs created in the last 30 days.")
    total_audio_seconds = serializers.IntegerField(help_text="Audio seconds of those jobs, per job as billed.")
    files_uploaded = serializers.IntegerField(help_text="Audio and video uploads of the last 30 days.")


class AdminUserStatsOutputSerializer(serializers.Serializer):
    last_30_days = LastThirtyDaysOutputSerializer(source="*")
    total_storage_bytes = serializers.IntegerField(help_text="Stored bytes of all the user's files.")
    active_sessions = serializers.IntegerField()
    api_keys_count = serializers.IntegerField()


class AdminUserOutputSerializer(serializers.Serializer):
    uuid = HexIdField(source="id")
    username = serializers.CharField()
    is_admin = serializers.BooleanField()
    registered_at = TimestampField()
    token_balance = serializers.IntegerField()
    price_multiplier = serializers.FloatField()
    avatar_uuid = HexIdField(source="avatar_id", allow_null=True)
    stats = serializers.SerializerMethodField()

    @extend_schema_field(AdminUserStatsOutputSerializer)
    def get_stats(self, user: User) -> dict[str, Any]:
        # The user comes from selectors.user_list_with_stats, annotated with its figures.
        return AdminUserStatsOutputSerializer(selectors.UserStats.of(user)).data


# many=False: the "list" action answers one object that holds the list.
@extend_schema_serializer(many=False)
class AdminUserListOutputSerializer(serializers.Serializer):
    users = AdminUserOutputSerializer(many=True)
    pagination = PaginationOutputSerializer()


# --- PATCH /admin/users/:uuid -----------------------------------------------------------


@extend_schema_field(OpenApiTypes.INT64)
class StrictIntegerField(serializers.Field):
    """A JSON integer: no booleans, no floats (5.0 included), no numeric strings."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return data

    def to_representation(self, value: int) -> int:
        return value


@extend_schema_field(OpenApiTypes.DOUBLE)
class StrictNumberField(serializers.Field):
    """A finite JSON number (integer or decimal), read exactly as written into a Decimal."""

    def to_internal_value(self, data: Any) -> Decimal:
        if isinstance(data, bool) or not isinstance(data, (int, float)):
            self.fail("invalid")
        if isinstance(data, float) and not math.isfinite(data):
            self.fail("invalid")
        # str() first: Decimal(0.1) would carry the binary float's error.
        return Decimal(str(data))

    def to_representation(self, value: Decimal) -> float:
        return float(value)


@extend_schema_field({"type": "integer", "format": "int64", "minimum": 0, "maximum": services.TOKEN_BALANCE_MAX})
class TokenBalanceField(StrictIntegerField):
    """A balance to set: a JSON integer within the bounds ``balance_set`` enforces."""


@extend_schema_field({"type": "number", "minimum": 0, "maximum": int(services.PRICE_MULTIPLIER_MAX)})
class PriceMultiplierField(StrictNumberField):
    """A multiplier to set: a finite JSON number within the bounds ``balance_set`` enforces."""


class AdminUserUpdateInputSerializer(serializers.Serializer):
    token_balance = TokenBalanceField(
        required=False,
        help_text=f"New balance in tokens (set, not added): 0 to {services.TOKEN_BALANCE_MAX}.",
        error_messages={"invalid": "token_balance must be an integer", "null": "token_balance must be an integer"},
    )
    price_multiplier = PriceMultiplierField(
        required=False,
        help_text=(
            f"Factor applied to each job's cost: 0 to {services.PRICE_MULTIPLIER_MAX}, kept to 4 decimal places."
        ),
        error_messages={"invalid": "price_multiplier must be a number", "null": "price_multiplier must be a number"},
    )


class AdminUserUpdateInputSchema(OpenApiSerializerExtension):
    target_class = AdminUserUpdateInputSerializer

    def map_serializer(self, auto_schema: AutoSchema, direction: str) -> dict[str, Any]:
        # At least one of the two: an empty body is "No valid fields to update".
        schema = auto_schema._map_basic_serializer(self.target, direction)
        schema["minProperties"] = 1
        return schema


class AdminUserUpdatedOutputSerializer(serializers.Serializer):
    uuid = HexIdField(source="id")
    username = serializers.CharField()
    token_balance = serializers.IntegerField()
    price_multiplier = serializers.FloatField()


class AdminUserUpdateOutputSerializer(serializers.Serializer):
    message = ConstantField("User updated successfully")
    updated_fields = serializers.ListField(child=serializers.CharField())
    user = AdminUserUpdatedOutputSerializer()


class AdminUserViewSet(viewsets.ViewSet):
    """``/admin/users``: every user with usage statistics, and balance/multiplier changes."""

    permission_classes = [IsAdmin]
    lookup_url_kwarg = "uuid"
    # Anything up to the next slash: a malformed id is the reference's 400, not a 404.
    lookup_value_regex = "[^/]+"

    @extend_schema(
        operation_id="admin_users_list",
        summary="List all users with detailed statistics",
        description=(
            "Newest first. Statistics: completed transcriptions created in the last 30 days and "
            "their audio seconds (per job, as billed); audio and video files uploaded in the last "
            "30 days; stored bytes of all the user's files; active sessions; API keys."
        ),
        tags=["admin"],
        parameters=[AdminUserListInputSerializer],
        examples=[
            OpenApiExample(
                "Users",
                value={
                    "users": [
                        {
                            "uuid": "018c5f9a7b2e7a8c9d0e1f2a3b4c5d6e",
                            "username": "john_doe",
                            "is_admin": False,
                            "registered_at": "2025-01-15 10:30:45",
                            "token_balance": 1000,
                            "price_multiplier": 1.0,
                            "avatar_uuid": "018c5f9a7b2e7a8c9d0e1f2a3b4c5d70",
                            "stats": {
                                "last_30_days": {
                                    "transcriptions_count": 15,
                                    "total_audio_seconds": 3600,
                                    "files_uploaded": 12,
                                },
                                "total_storage_bytes": 524288000,
                                "active_sessions": 2,
                                "api_keys_count": 3,
                            },
                        }
                    ],
                    "pagination": {"page": 1, "limit": 10, "total_count": 42, "total_pages": 5},
                },
                response_only=True,
                status_codes=["200"],
            )
        ],
        responses={
            200: AdminUserListOutputSerializer,
            **plain_text_errors((400, PAGE_MESSAGE), (400, LIMIT_MESSAGE), *AUTH_ERRORS, *ADMIN_ERRORS),
        },
    )
    def list(self, request: Request) -> Response:
        serializer = AdminUserListInputSerializer(data=request.query_params.dict())
        serializer.is_valid(raise_exception=True)
        query = serializer.validated_data
        users, pagination = paginate(
            selectors.user_list_with_stats(search=query["search"]),
            serializer.page_request(),
        )
        return Response(AdminUserListOutputSerializer({"users": users, "pagination": pagination}).data)

    @extend_schema(
        operation_id="admin_users_update",
        summary="Update user settings",
        description=(
            "Sets (not adds) the token balance and/or the price multiplier. Both are validated "
            "before either is written. The multiplier is kept to 4 decimal places."
        ),
        tags=["admin"],
        parameters=[uuid_path_parameter("uuid", "User UUID (32 hex digits, or hyphenated).")],
        request={"application/json": AdminUserUpdateInputSerializer},
        examples=[
            OpenApiExample("Grant tokens", value={"token_balance": 5000, "price_multiplier": 0.5}, request_only=True),
            OpenApiExample(
                "Updated",
                value={
                    "message": "User updated successfully",
                    "updated_fields": ["token_balance", "price_multiplier"],
                    "user": {
                        "uuid": "018c5f9a7b2e7a8c9d0e1f2a3b4c5d6e",
                        "username": "john_doe",
                        "token_balance": 5000,
                        "price_multiplier": 0.5,
                    },
                },
                response_only=True,
                status_codes=["200"],
            ),
        ],
        responses={
            200: AdminUserUpdateOutputSerializer,
            **plain_text_errors(
                (400, "Invalid UUID format"),
                (400, "token_balance must be an integer"),
                (400, "price_multiplier must be a number"),
                (400, "token_balance must be non-negative"),
                (400, f"token_balance must be at most {services.TOKEN_BALANCE_MAX}"),
                (400, "price_multiplier must be non-negative"),
                (400, f"price_multiplier must be at most {services.PRICE_MULTIPLIER_MAX}"),
                (400, "No valid fields to update. Provide token_balance or price_multiplier"),
                (404, "User not found"),
                *AUTH_ERRORS,
                *ADMIN_ERRORS,
                *BODY_ERRORS,
            ),
        },
    )
    def partial_update(self, request: Request, uuid: str) -> Response:
        user_id = parse_uuid(uuid)
        data = validated_body(AdminUserUpdateInputSerializer, request)
        user, updated = services.balance_set(user_id=user_id, **data)
        return Response(AdminUserUpdateOutputSerializer({"updated_fields": updated, "user": user}).data)


# --- GET /admin/metrics ---------------------------------------------------------------


class PrometheusTextRenderer(renderers.BaseRenderer):
    """Prometheus's text exposition format (version 0.0.4), already encoded by prometheus_client."""

    media_type = "text/plain"
    format = "prometheus"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        return data


class OnlyRepresentation(BaseContentNegotiation):
    """The view's one renderer whatever ``Accept`` says: scrapers ask for several formats."""

    def select_parser(self, request: Request, parsers: list[Any]) -> Any:
        return parsers[0] if parsers else None

    def select_renderer(self, request: Request, renderers: list[Any], format_suffix: str | None = None) -> Any:
        return renderers[0], renderers[0].media_type


class AdminMetricsView(APIView):
    """``GET /admin/metrics``: the service's figures for Prometheus, derived from the database."""

    permission_classes = [IsAdmin]
    renderer_classes = [PrometheusTextRenderer]
    content_negotiation_class = OnlyRepresentation

    @extend_schema(
        operation_id="admin_metrics",
        summary="Service metrics for Prometheus",
        description=(
            "Prometheus text format (0.0.4): jobs by status and model, queue depth per queue, job "
            "duration and real-time factor per model (gauge histograms), failures by reason, uploads "
            "and their bytes, webhook deliveries by outcome. Figures are read from the database at "
            "each request, so they cover every worker on every host; finished work counts over "
            "`METRICS_WINDOW_SECONDS`."
        ),
        tags=["admin"],
        responses={
            (200, PrometheusTextRenderer.media_type): OpenApiResponse(
                response=OpenApiTypes.STR,
                description="Prometheus text exposition format.",
                examples=[
                    OpenApiExample(
                        "Metrics",
                        value=(
                            "# HELP whisper_transcription_jobs Jobs by status and model.\n"
                            "# TYPE whisper_transcription_jobs gauge\n"
                            'whisper_transcription_jobs{model="ggml-tiny.en",status="completed"} 12.0\n'
                        ),
                        response_only=True,
                        status_codes=["200"],
                    )
                ],
            ),
            **plain_text_errors(*AUTH_ERRORS, *ADMIN_ERRORS),
        },
    )
    def get(self, request: Request) -> HttpResponse:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(ServiceCollector())
        return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_PLAIN_0_0_4)
