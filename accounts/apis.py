"""Account endpoints: register, login, logout, profile, API keys, sessions, health."""

from __future__ import annotations

from typing import Any

from django.db import connection
from django.http import HttpResponse
from rest_framework import permissions, serializers, viewsets
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import selectors, services
from accounts.models import ApiKey, User, UserSession
from files.uploads import install_avatar_upload_handler
from whisper_site.errors import ApplicationError, plain_text_response
from whisper_site.identifiers import parse_uuid
from whisper_site.request_body import body_object
from whisper_site.timestamps import format_timestamp


def text_field(*, required_message: str, invalid_message: str | None = None, **kwargs: Any) -> serializers.CharField:
    """A string field whose errors are the reference's messages."""
    invalid = invalid_message or required_message
    return serializers.CharField(
        trim_whitespace=False,
        error_messages={
            "required": required_message,
            "null": invalid,
            "invalid": invalid,
            "blank": required_message,
            "max_length": invalid,
            "min_length": invalid,
        },
        **kwargs,
    )


def validated(serializer_class: type[serializers.Serializer], request: Request) -> dict[str, Any]:
    serializer = serializer_class(data=body_object(request))
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def user_agent(request: Request) -> str:
    return request.META.get("HTTP_USER_AGENT", "")


def client_ip(request: Request) -> str:
    return request.META.get("REMOTE_ADDR", "") or "unknown"


def user_body(user: User) -> dict[str, Any]:
    return {
        "uuid": user.id.hex,
        "username": user.username,
        "is_admin": user.is_admin,
        "registered_at": format_timestamp(user.registered_at),
        "token_balance": user.token_balance,
        "avatar_uuid": user.avatar_id.hex if user.avatar_id else None,
    }


class CredentialsSerializer(serializers.Serializer):
    username = text_field(required_message="Missing username", invalid_message="Invalid username")
    password = text_field(required_message="Missing password", invalid_message="Invalid password")


class HealthView(APIView):
    """``GET /health``: the server answers and the database does too."""

    authentication_classes: list[type] = []
    permission_classes = [permissions.AllowAny]

    def get(self, request: Request) -> Response | HttpResponse:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        except Exception:  # any failure to reach the database is "down"
            return plain_text_response("Database unavailable", 503)
        return Response({"status": "ok"})


class RegisterView(APIView):
    """``POST /user/register``."""

    authentication_classes: list[type] = []
    permission_classes = [permissions.AllowAny]

    def post(self, request: Request) -> Response:
        data = validated(CredentialsSerializer, request)
        user, session = services.user_register(
            username=data["username"], password=data["password"], user_agent=user_agent(request)
        )
        return Response(
            {
                "message": "User registered and logged in successfully",
                "username": user.username,
                "uuid": user.id.hex,
                "session_id": session.id.hex,
            }
        )


class LoginView(APIView):
    """``POST /user/login``."""

    authentication_classes: list[type] = []
    permission_classes = [permissions.AllowAny]

    def post(self, request: Request) -> Response:
        data = validated(CredentialsSerializer, request)
        user, session = services.user_login(
            username=data["username"],
            password=data["password"],
            user_agent=user_agent(request),
            client_ip=client_ip(request),
        )
        return Response(
            {
                "message": "Login successful",
                "username": user.username,
                "is_admin": user.is_admin,
                "session_id": session.id.hex,
            }
        )


class LogoutSerializer(serializers.Serializer):
    session_id = serializers.CharField(
        required=False, error_messages={"invalid": "Invalid session ID format", "blank": "Invalid session ID format"}
    )


class PasswordSerializer(serializers.Serializer):
    password = text_field(required_message="Password is required to delete account")


class UserViewSet(viewsets.ViewSet):
    """The current user: ``/user/me``, ``/user/logout`` and ``/user/sessions``."""

    def me(self, request: Request) -> Response:
        return Response(user_body(request.user))

    def update_me(self, request: Request) -> Response:
        # Before the body is read: the avatar part streams to disk, bounded as it comes.
        install_avatar_upload_handler(request)
        data = body_object(request)
        fields: dict[str, str] = {}
        for name in ("username", "password", "old_password"):
            value = data.get(name)
            if value is None:
                continue
            if not isinstance(value, str):
                raise ApplicationError(f"Invalid {name}", 400)
            fields[name] = value
        avatar = request.FILES.get("avatar") if hasattr(request, "FILES") else None
        if avatar is None and data.get("avatar") not in (None, ""):
            raise ApplicationError("avatar must be an image file upload", 400)
        session = request.auth if isinstance(request.auth, UserSession) else None
        updated = services.user_update(user=request.user, avatar=avatar, current_session=session, **fields)
        return Response({"message": "Profile updated successfully", "updated_fields": updated})

    def delete_me(self, request: Request) -> Response:
        data = validated(PasswordSerializer, request)
        services.user_delete(user=request.user, password=data["password"])
        return Response({"message": "Account deleted successfully"})

    def logout(self, request: Request) -> Response:
        if isinstance(request.auth, ApiKey):
            raise ApplicationError("Cannot logout with API key. Use session authentication", 400)
        data = validated(LogoutSerializer, request)
        session_id = None
        if data.get("session_id") is not None:
            session_id = parse_uuid(data["session_id"], "Invalid session ID format")
        services.session_end(user=request.user, current=request.auth, session_id=session_id)
        return Response({"message": "Logged out successfully"})

    def sessions(self, request: Request) -> Response:
        rows = selectors.session_list_active(user=request.user)
        return Response(
            {
                "sessions": [
                    {
                        "session_id": session.id.hex,
                        "started_at": format_timestamp(session.created_at),
                        "user_agent": session.user_agent,
                    }
                    for session in rows
                ]
            }
        )


class TokenNameSerializer(serializers.Serializer):
    name = serializers.CharField(
        trim_whitespace=False,
        allow_blank=True,
        error_messages={
            "required": "Missing 'name' field in request body",
            "null": "Missing 'name' field in request body",
            "invalid": services.TOKEN_NAME_MESSAGE,
        },
    )

    def to_internal_value(self, data: Any) -> Any:
        # CharField would turn a number into a string: a name must be text.
        if "name" in data and data["name"] is not None and not isinstance(data["name"], str):
            raise serializers.ValidationError({"name": [services.TOKEN_NAME_MESSAGE]})
        return super().to_internal_value(data)


class ApiTokenViewSet(viewsets.ViewSet):
    """``/user/token``: list, issue and revoke API keys."""

    def list(self, request: Request) -> Response:
        return Response(
            {
                "tokens": [
                    {
                        "token_id": key.id.hex,
                        "token": key.masked,
                        "name": key.name,
                        "created_at": format_timestamp(key.created_at),
                    }
                    for key in selectors.api_key_list(user=request.user)
                ]
            }
        )

    def create(self, request: Request) -> Response:
        data = validated(TokenNameSerializer, request)
        api_key, raw = services.api_key_create(user=request.user, name=data["name"])
        return Response(
            {
                "message": "Token issued successfully",
                "token_id": api_key.id.hex,
                "token": raw,
                "name": api_key.name,
                "note": "Save this token securely. You won't be able to see it again.",
            }
        )

    def destroy(self, request: Request, token_id: str) -> Response:
        key_id = parse_uuid(token_id, "Invalid token ID format")
        api_key = services.api_key_revoke(user=request.user, key_id=key_id)
        return Response({"message": "Token revoked successfully", "token_id": key_id.hex, "token_name": api_key.name})
