"""Admin endpoints: ``GET /admin/users`` and ``PATCH /admin/users/:uuid``."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    extend_schema,
    extend_schema_field,
    extend_schema_serializer,
)
from rest_framework import permissions, serializers, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from accounts import selectors, services
from accounts.models import User
from whisper_site.identifiers import parse_uuid
from whisper_site.openapi import AUTH_ERRORS, plain_text_errors
from whisper_site.pagination import page_request, paginate
from whisper_site.request_body import body_object
from whisper_site.timestamps import format_timestamp

ADMIN_REQUIRED = "Access denied. Admin privileges required"


class IsAdmin(permissions.BasePermission):
    """Authenticated users with ``is_admin``; others get 403 (401 without credentials)."""

    message = ADMIN_REQUIRED

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        return bool(user is not None and user.is_authenticated and user.is_admin)


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


class AdminUserUpdateSerializer(serializers.Serializer):
    token_balance = StrictIntegerField(
        required=False,
        help_text=f"New balance in tokens (set, not added): 0 to {services.TOKEN_BALANCE_MAX}.",
        error_messages={"invalid": "token_balance must be an integer", "null": "token_balance must be an integer"},
    )
    price_multiplier = StrictNumberField(
        required=False,
        help_text="Factor applied to each job's cost: 0 to 1000, kept to 4 decimal places.",
        error_messages={
            "invalid": "price_multiplier must be a number",
            "null": "price_multiplier must be a number",
        },
    )


# Response shapes, for the schema; the bodies themselves are built below.
class LastThirtyDaysSerializer(serializers.Serializer):
    transcriptions_count = serializers.IntegerField(help_text="Completed jobs created in the last 30 days.")
    total_audio_seconds = serializers.IntegerField(help_text="Audio seconds of those jobs, per job as billed.")
    files_uploaded = serializers.IntegerField(help_text="Audio and video uploads of the last 30 days.")


class AdminUserStatsSerializer(serializers.Serializer):
    last_30_days = LastThirtyDaysSerializer()
    total_storage_bytes = serializers.IntegerField(help_text="Stored bytes of all the user's files.")
    active_sessions = serializers.IntegerField()
    api_keys_count = serializers.IntegerField()


class AdminUserSerializer(serializers.Serializer):
    uuid = serializers.CharField()
    username = serializers.CharField()
    is_admin = serializers.BooleanField()
    registered_at = serializers.CharField(help_text="UTC, YYYY-MM-DD HH:MM:SS")
    token_balance = serializers.IntegerField()
    price_multiplier = serializers.FloatField()
    avatar_uuid = serializers.CharField(allow_null=True)
    stats = AdminUserStatsSerializer()


class PaginationSerializer(serializers.Serializer):
    page = serializers.IntegerField()
    limit = serializers.IntegerField()
    total_count = serializers.IntegerField()
    total_pages = serializers.IntegerField()


# many=False: the "list" action answers one object that holds the list.
@extend_schema_serializer(many=False)
class AdminUserListSerializer(serializers.Serializer):
    users = AdminUserSerializer(many=True)
    pagination = PaginationSerializer()


class AdminUserUpdatedSerializer(serializers.Serializer):
    uuid = serializers.CharField()
    username = serializers.CharField()
    token_balance = serializers.IntegerField()
    price_multiplier = serializers.FloatField()


class AdminUserUpdateResponseSerializer(serializers.Serializer):
    message = serializers.CharField()
    updated_fields = serializers.ListField(child=serializers.CharField())
    user = AdminUserUpdatedSerializer()


def admin_user_body(user: User) -> dict[str, Any]:
    stats = selectors.UserStats.of(user)
    return {
        "uuid": user.id.hex,
        "username": user.username,
        "is_admin": user.is_admin,
        "registered_at": format_timestamp(user.registered_at),
        "token_balance": user.token_balance,
        "price_multiplier": float(user.price_multiplier),
        "avatar_uuid": user.avatar_id.hex if user.avatar_id else None,
        "stats": {
            "last_30_days": {
                "transcriptions_count": stats.transcriptions_count,
                "total_audio_seconds": stats.total_audio_seconds,
                "files_uploaded": stats.files_uploaded,
            },
            "total_storage_bytes": stats.total_storage_bytes,
            "active_sessions": stats.active_sessions,
            "api_keys_count": stats.api_keys_count,
        },
    }


ADMIN_ERRORS = plain_text_errors(*AUTH_ERRORS, (403, ADMIN_REQUIRED))


class AdminUserViewSet(viewsets.ViewSet):
    """``/admin/users``: every user with usage statistics, and balance/multiplier changes."""

    permission_classes = [IsAdmin]

    @extend_schema(
        operation_id="admin_users_list",
        summary="List all users with detailed statistics",
        description=(
            "Newest first. Statistics: completed transcriptions created in the last 30 days and "
            "their audio seconds (per job, as billed); audio and video files uploaded in the last "
            "30 days; stored bytes of all the user's files; active sessions; API keys."
        ),
        tags=["admin"],
        parameters=[
            OpenApiParameter("page", int, description="Page number, from 1 (default 1)."),
            OpenApiParameter("limit", int, description="Users per page, 1-100 (default 10)."),
            OpenApiParameter("search", str, description="Only usernames containing this text (case-insensitive)."),
            OpenApiParameter("username", str, description="Alias of `search`."),
        ],
        responses={
            200: AdminUserListSerializer,
            **plain_text_errors(
                (400, "Invalid page. Must be a positive integer"),
                (400, "Invalid limit. Must be between 1 and 100"),
            ),
            **ADMIN_ERRORS,
        },
    )
    def list(self, request: Request) -> Response:
        page = page_request(request.query_params)
        search = (request.query_params.get("search") or request.query_params.get("username") or "").strip()
        users, pagination = paginate(selectors.user_list_with_stats(search=search or None), page)
        return Response({"users": [admin_user_body(user) for user in users], "pagination": pagination})

    @extend_schema(
        operation_id="admin_users_update",
        summary="Update user settings",
        description=(
            "Sets (not adds) the token balance and/or the price multiplier. Both are validated "
            "before either is written. The multiplier is kept to 4 decimal places."
        ),
        tags=["admin"],
        parameters=[OpenApiParameter("uuid", str, OpenApiParameter.PATH, description="User UUID (32 hex digits).")],
        request={"application/json": AdminUserUpdateSerializer},
        examples=[
            OpenApiExample("Grant tokens", value={"token_balance": 5000, "price_multiplier": 0.5}, request_only=True)
        ],
        responses={
            200: AdminUserUpdateResponseSerializer,
            **plain_text_errors(
                (400, "Invalid UUID format"),
                (400, "token_balance must be an integer"),
                (400, "token_balance must be non-negative"),
                (400, f"token_balance must be at most {services.TOKEN_BALANCE_MAX}"),
                (400, "price_multiplier must be a number"),
                (400, "price_multiplier must be non-negative"),
                (400, "price_multiplier must be at most 1000"),
                (400, "No valid fields to update. Provide token_balance or price_multiplier"),
                (404, "User not found"),
            ),
            **ADMIN_ERRORS,
        },
    )
    def partial_update(self, request: Request, uuid: str) -> Response:
        user_id = parse_uuid(uuid)
        serializer = AdminUserUpdateSerializer(data=body_object(request))
        serializer.is_valid(raise_exception=True)
        user, updated = services.balance_set(
            user_id=user_id,
            token_balance=serializer.validated_data.get("token_balance"),
            price_multiplier=serializer.validated_data.get("price_multiplier"),
        )
        return Response(
            {
                "message": "User updated successfully",
                "updated_fields": updated,
                "user": {
                    "uuid": user.id.hex,
                    "username": user.username,
                    "token_balance": user.token_balance,
                    "price_multiplier": float(user.price_multiplier),
                },
            }
        )
