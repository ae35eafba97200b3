"""Account endpoints: health, register, login, logout, profile, sessions and API keys.

Each action reads its input through an input serializer, calls one service
and answers with an output serializer; the OpenAPI document is generated from
those serializers and the ``extend_schema`` beside each action.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import connection
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, extend_schema, extend_schema_field, extend_schema_serializer
from rest_framework import permissions, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import selectors, services
from accounts.client_address import client_address
from accounts.models import UserSession
from accounts.services.users import USERNAME_PATTERN
from files.uploads import avatar_too_large_message, install_avatar_upload_handler
from whisper_site.api_fields import BODY_ERRORS, ConstantField, HexIdField, TimestampField, UuidField, validated_body
from whisper_site.errors import ApplicationError
from whisper_site.identifiers import parse_uuid
from whisper_site.openapi import AUTH_ERRORS, plain_text_errors, uuid_path_parameter

# --- Serializer fields: the API's conventions --------------------------------------


class StrictCharField(serializers.CharField):
    """A JSON string: a number or a boolean is refused, not turned into text."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


@extend_schema_field(OpenApiTypes.BINARY)
class UploadField(serializers.Field):
    """One uploaded file part; an empty form value is no file."""

    def to_internal_value(self, data: Any) -> UploadedFile | None:
        if data == "":
            return None
        if not isinstance(data, UploadedFile):
            self.fail("invalid")
        return data


# Text without NUL, which DRF refuses ("Null characters are not allowed"): the schema says so.
NO_NUL_PATTERN = "^[^\\u0000]*$"


class PatternCharField(serializers.CharField):
    """A CharField whose documented ``pattern`` (and ``documented`` keywords) the services check.

    They are for the schema only: validating it here would answer before the
    services do, with other words and in another order than the reference's.
    """

    def __init__(self, *, pattern: str, documented: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.pattern = pattern
        self.documented = documented or {}
        super().__init__(**kwargs)


class StrictPatternCharField(StrictCharField, PatternCharField):
    """A JSON string (no number or boolean turned into text) with a documented ``pattern``."""


class PatternCharFieldSchema(OpenApiSerializerFieldExtension):
    target_class = PatternCharField
    match_subclasses = True

    def map_serializer_field(self, auto_schema: AutoSchema, direction: str) -> dict[str, Any]:
        schema = auto_schema._map_serializer_field(self.target, direction, bypass_extensions=True)
        return {**schema, "pattern": self.target.pattern, **self.target.documented}


def text_field(
    *,
    required_message: str,
    invalid_message: str | None = None,
    pattern: str = NO_NUL_PATTERN,
    documented: dict[str, Any] | None = None,
    **kwargs: Any,
) -> serializers.CharField:
    """A non-empty string field whose errors are the reference's messages; ``pattern`` documents its form."""
    invalid = invalid_message or required_message
    return PatternCharField(
        pattern=pattern,
        documented=documented,
        trim_whitespace=False,
        min_length=1,
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


def user_agent(request: Request) -> str:
    return request.META.get("HTTP_USER_AGENT", "")


# --- The OpenAPI document --------------------------------------------------------------

CREDENTIAL_ERRORS = [
    (400, "Missing username"),
    (400, "Invalid username"),
    (400, "Missing password"),
    (400, "Invalid password"),
]
PASSWORD_ERRORS = [
    (400, f"Password must be at least {services.PASSWORD_MIN_LENGTH} characters long"),
    (400, f"Password must be at most {services.PASSWORD_MAX_LENGTH} characters long"),
    (400, "Password must contain at least 1 uppercase letter(s)"),
    (400, "Password must contain at least 1 lowercase letter(s)"),
    (400, "Password must contain at least 1 digit(s)"),
    (400, "Password must contain at least 1 special character(s)"),
]
EXAMPLE_PASSWORD = "SecureP@ssw0rd!"  # meets every password rule


def request_example(value: dict[str, Any]) -> OpenApiExample:
    return OpenApiExample("Request", value=value, request_only=True)


def response_example(value: dict[str, Any]) -> OpenApiExample:
    return OpenApiExample("Response", value=value, response_only=True, status_codes=["200"])


# --- Health ---------------------------------------------------------------------------


class HealthOutputSerializer(serializers.Serializer):
    status = ConstantField("ok")


class HealthApi(APIView):
    """``GET /health``: the server answers and the database does too.

    An APIView, not a ViewSet: one operation on no resource, with nothing for a
    router to derive.
    """

    authentication_classes: list[type] = []
    permission_classes = [permissions.AllowAny]

    @extend_schema(
        operation_id="health",
        summary="Check server and database status",
        description="No authentication. 503 when the database does not answer.",
        tags=["health"],
        auth=[],
        examples=[response_example({"status": "ok"})],
        responses={
            200: HealthOutputSerializer,
            **plain_text_errors((503, "Database unavailable")),
        },
    )
    def get(self, request: Request) -> Response:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        except Exception:  # any failure to reach the database is "down"
            raise ApplicationError("Database unavailable", 503) from None
        return Response(HealthOutputSerializer({}).data)


# --- The current user: /user/register, /user/login, /user/logout, /user/me, /user/sessions


class CredentialsInputSerializer(serializers.Serializer):
    username = text_field(required=True, required_message="Missing username", invalid_message="Invalid username")
    password = text_field(required=True, required_message="Missing password", invalid_message="Invalid password")


class RegisterInputSerializer(CredentialsInputSerializer):
    # The patterns document the rules that user_register applies (with its own messages, in
    # the reference's order); the password's character classes are checked there.
    username = text_field(
        required=True,
        required_message="Missing username",
        invalid_message="Invalid username",
        pattern=f"^{USERNAME_PATTERN.pattern}$",
        help_text="3-20 characters of `A-Z a-z 0-9 _ -`, unique case-insensitively.",
    )
    password = text_field(
        required=True,
        required_message="Missing password",
        invalid_message="Invalid password",
        documented={"minLength": services.PASSWORD_MIN_LENGTH, "maxLength": services.PASSWORD_MAX_LENGTH},
        help_text="12-128 characters with an uppercase and a lowercase letter, a digit and a special character.",
    )


class UserRegisterOutputSerializer(serializers.Serializer):
    message = ConstantField("User registered and logged in successfully")
    username = serializers.CharField(source="user.username")
    uuid = HexIdField(source="user.id")
    session_id = HexIdField(source="session.id", help_text="For `Authorization: Basic <session_id>`.")


class UserLoginOutputSerializer(serializers.Serializer):
    message = ConstantField("Login successful")
    username = serializers.CharField(source="user.username")
    is_admin = serializers.BooleanField(source="user.is_admin")
    session_id = HexIdField(source="session.id", help_text="For `Authorization: Basic <session_id>`.")


class UserLogoutInputSerializer(serializers.Serializer):
    session_id = UuidField(
        required=False,
        help_text="The session to end; without it, the session making the request.",
        error_messages={"invalid": "Invalid session ID format", "blank": "Invalid session ID format"},
    )


class UserLogoutOutputSerializer(serializers.Serializer):
    message = ConstantField("Logged out successfully")


class UserOutputSerializer(serializers.Serializer):
    uuid = HexIdField(source="id")
    username = serializers.CharField()
    is_admin = serializers.BooleanField()
    registered_at = TimestampField()
    token_balance = serializers.IntegerField()
    avatar_uuid = HexIdField(source="avatar_id", allow_null=True, help_text="Fetch it with `GET /file/{uuid}`.")


class UserUpdateInputSerializer(serializers.Serializer):
    # null is "not given", as an absent field.
    username = StrictCharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        trim_whitespace=False,
        help_text="New username.",
        error_messages={"invalid": "Invalid username"},
    )
    password = StrictCharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        trim_whitespace=False,
        help_text="New password (needs `old_password`).",
        error_messages={"invalid": "Invalid password"},
    )
    old_password = StrictCharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        trim_whitespace=False,
        help_text="Current password.",
        error_messages={"invalid": "Invalid old_password"},
    )
    avatar = UploadField(
        required=False,
        allow_null=True,
        help_text="An image (PNG, JPEG, GIF or WebP), at most 10 MB.",
        error_messages={"invalid": "avatar must be an image file upload"},
    )


class UserUpdateOutputSerializer(serializers.Serializer):
    message = ConstantField("Profile updated successfully")
    updated_fields = serializers.ListField(child=serializers.CharField())


class UserDeleteInputSerializer(serializers.Serializer):
    password = text_field(required=True, required_message="Password is required to delete account")


class UserDeleteOutputSerializer(serializers.Serializer):
    message = ConstantField("Account deleted successfully")


class SessionOutputSerializer(serializers.Serializer):
    session_id = HexIdField(source="id")
    started_at = TimestampField(source="created_at")
    user_agent = serializers.CharField()


# many=False: the answer is one object that holds the list.
@extend_schema_serializer(many=False)
class SessionListOutputSerializer(serializers.Serializer):
    sessions = SessionOutputSerializer(many=True)


class UserViewSet(viewsets.ViewSet):
    """The current user: ``/user/register``, ``/user/login``, ``/user/logout``, ``/user/me``, ``/user/sessions``."""

    @extend_schema(
        operation_id="user_register",
        summary="Register new user account",
        description=(
            "Username: 3-20 characters of `A-Z a-z 0-9 _ -`, unique case-insensitively. "
            "Password: 12-128 characters with at least 1 uppercase letter, 1 lowercase letter, "
            "1 digit and 1 special character. A new account starts with the configured token "
            "balance; registering also opens a session. Registrations are limited per client "
            "address (`REGISTRATIONS_PER_ADDRESS_PER_HOUR`, default 20 an hour): past it, 429."
        ),
        tags=["user"],
        auth=[],
        request=RegisterInputSerializer,
        examples=[
            request_example({"username": "john_doe", "password": EXAMPLE_PASSWORD}),
            response_example(
                {
                    "message": "User registered and logged in successfully",
                    "username": "john_doe",
                    "uuid": "018c5f9a7b2e7a8c9d0e1f2a3b4c5d6e",
                    "session_id": "018c5f9a7b2e7a8c9d0e1f2a3b4c5d6f",
                }
            ),
        ],
        responses={
            200: UserRegisterOutputSerializer,
            **plain_text_errors(
                *CREDENTIAL_ERRORS,
                (400, services.USERNAME_MESSAGE),
                *PASSWORD_ERRORS,
                (409, "Username already exists"),
                (429, services.REGISTRATION_BLOCKED_MESSAGE),
                *BODY_ERRORS,
            ),
        },
    )
    @action(detail=False, methods=["post"], authentication_classes=[], permission_classes=[permissions.AllowAny])
    def register(self, request: Request) -> Response:
        data = validated_body(CredentialsInputSerializer, request)
        user, session = services.user_register(
            **data, user_agent=user_agent(request), client_address=client_address(request)
        )
        return Response(UserRegisterOutputSerializer({"user": user, "session": session}).data)

    @extend_schema(
        operation_id="user_login",
        summary="Login with credentials",
        description=(
            "Opens a session valid for 24 hours. A wrong username and a wrong password are the "
            "same 401. Failures are counted per (username, client address) and per client address: "
            "past either limit the answer is 429, even for the right password, until the window "
            "passes. The same account from another address is not blocked."
        ),
        tags=["user"],
        auth=[],
        request=CredentialsInputSerializer,
        examples=[
            request_example({"username": "john_doe", "password": EXAMPLE_PASSWORD}),
            response_example(
                {
                    "message": "Login successful",
                    "username": "john_doe",
                    "is_admin": False,
                    "session_id": "018c5f9a7b2e7a8c9d0e1f2a3b4c5d6f",
                }
            ),
        ],
        responses={
            200: UserLoginOutputSerializer,
            **plain_text_errors(
                *CREDENTIAL_ERRORS,
                (401, "Authentication failed"),
                (429, services.LOGIN_BLOCKED_MESSAGE),
                *BODY_ERRORS,
            ),
        },
    )
    @action(detail=False, methods=["post"], authentication_classes=[], permission_classes=[permissions.AllowAny])
    def login(self, request: Request) -> Response:
        data = validated_body(CredentialsInputSerializer, request)
        user, session = services.user_login(
            **data, user_agent=user_agent(request), client_address=client_address(request)
        )
        return Response(UserLoginOutputSerializer({"user": user, "session": session}).data)

    @extend_schema(
        operation_id="user_logout",
        summary="End current or specified session",
        description=(
            "Session authentication only (`Basic <session_id>`), not an API key. Without a body, "
            "ends the session making the request; with `session_id`, that session of the same user."
        ),
        tags=["user"],
        auth=[{"sessionId": []}],
        request=UserLogoutInputSerializer,
        examples=[
            request_example({"session_id": "018c5f9a7b2e7a8c9d0e1f2a3b4c5d6f"}),
            response_example({"message": "Logged out successfully"}),
        ],
        responses={
            200: UserLogoutOutputSerializer,
            **plain_text_errors(
                (400, "Cannot logout with API key. Use session authentication"),
                (400, "Invalid session ID format"),
                (403, "Cannot logout from another user's session"),
                (404, "Session not found or already ended"),
                *AUTH_ERRORS,
                *BODY_ERRORS,
            ),
        },
    )
    @action(detail=False, methods=["post"])
    def logout(self, request: Request) -> Response:
        # Which credential authenticated the request, checked before the body
        # as the reference lists it first: an API key has no session to end.
        if not isinstance(request.auth, UserSession):
            raise ApplicationError("Cannot logout with API key. Use session authentication", 400)
        data = validated_body(UserLogoutInputSerializer, request)
        services.session_end(user=request.user, current=request.auth, session_id=data.get("session_id"))
        return Response(UserLogoutOutputSerializer({}).data)

    @extend_schema(
        operation_id="user_me_get",
        summary="Get current user profile",
        tags=["user"],
        examples=[
            response_example(
                {
                    "uuid": "018c5f9a7b2e7a8c9d0e1f2a3b4c5d6e",
                    "username": "john_doe",
                    "is_admin": False,
                    "registered_at": "2025-01-15 10:30:45",
                    "token_balance": 1000,
                    "avatar_uuid": "018c5f9a7b2e7a8c9d0e1f2a3b4c5d70",
                }
            )
        ],
        responses={200: UserOutputSerializer, **plain_text_errors(*AUTH_ERRORS)},
    )
    @action(detail=False, methods=["get"])
    def me(self, request: Request) -> Response:
        return Response(UserOutputSerializer(request.user).data)

    @extend_schema(
        operation_id="user_me_update",
        summary="Update user profile",
        description=(
            "All fields optional. Everything is validated before anything is written. A new "
            "password needs `old_password` and ends the user's other sessions (this one stays). "
            "Wrong `old_password`s count with failed logins of the account from the same address: "
            "past the limit the answer is 429, even for the right one, until the window passes."
        ),
        tags=["user"],
        request={"multipart/form-data": UserUpdateInputSerializer},
        examples=[response_example({"message": "Profile updated successfully", "updated_fields": ["username"]})],
        responses={
            200: UserUpdateOutputSerializer,
            **plain_text_errors(
                (400, "Invalid username"),
                (400, "Invalid password"),
                (400, "Invalid old_password"),
                (400, "avatar must be an image file upload"),
                (400, avatar_too_large_message()),
                (400, "Only one avatar file may be uploaded"),
                (400, "No fields to update. Provide username, password or avatar"),
                (400, services.USERNAME_MESSAGE),
                (400, "old_password is required to update password"),
                *PASSWORD_ERRORS,
                (400, "Avatar must be an image (PNG, JPEG, GIF or WebP)"),
                (401, "Incorrect old password"),
                *AUTH_ERRORS,
                (409, "Username already taken"),
                (429, services.PASSWORD_BLOCKED_MESSAGE),
                *BODY_ERRORS,
            ),
        },
    )
    @me.mapping.patch
    def update_me(self, request: Request) -> Response:
        # Before the body is read: the avatar part streams to disk, bounded as it comes.
        install_avatar_upload_handler(request)
        data = validated_body(UserUpdateInputSerializer, request)
        current_session = request.auth if isinstance(request.auth, UserSession) else None
        updated = services.user_update(
            user=request.user, current_session=current_session, client_address=client_address(request), **data
        )
        return Response(UserUpdateOutputSerializer({"updated_fields": updated}).data)

    @extend_schema(
        operation_id="user_me_delete",
        summary="Delete account and all associated data",
        description=(
            "Deletes the user's files (and their stored media), transcriptions, sessions and API keys. "
            "Wrong passwords count with failed logins of the account from the same address: past the "
            "limit the answer is 429, even for the right one, until the window passes."
        ),
        tags=["user"],
        request=UserDeleteInputSerializer,
        examples=[
            request_example({"password": EXAMPLE_PASSWORD}),
            response_example({"message": "Account deleted successfully"}),
        ],
        responses={
            200: UserDeleteOutputSerializer,
            **plain_text_errors(
                (400, "Password is required to delete account"),
                (401, "Incorrect password"),
                *AUTH_ERRORS,
                (429, services.PASSWORD_BLOCKED_MESSAGE),
                *BODY_ERRORS,
            ),
        },
    )
    @me.mapping.delete
    def delete_me(self, request: Request) -> Response:
        data = validated_body(UserDeleteInputSerializer, request)
        services.user_delete(user=request.user, client_address=client_address(request), **data)
        return Response(UserDeleteOutputSerializer({}).data)

    @extend_schema(
        operation_id="user_sessions_list",
        summary="List active sessions for current user",
        description="Only sessions that haven't ended and are within 24 hours of creation, newest first.",
        tags=["user"],
        examples=[
            response_example(
                {
                    "sessions": [
                        {
                            "session_id": "018c5f9a7b2e7a8c9d0e1f2a3b4c5d6f",
                            "started_at": "2025-01-15 10:30:45",
                            "user_agent": "curl/7.84.0",
                        }
                    ]
                }
            )
        ],
        responses={200: SessionListOutputSerializer, **plain_text_errors(*AUTH_ERRORS)},
    )
    @action(detail=False, methods=["get"])
    def sessions(self, request: Request) -> Response:
        rows = selectors.session_list_active(user=request.user)
        return Response(SessionListOutputSerializer({"sessions": rows}).data)


# --- API keys: /user/token --------------------------------------------------------------


class ApiKeyOutputSerializer(serializers.Serializer):
    token_id = HexIdField(source="id")
    token = serializers.CharField(source="masked", help_text="The first and last 4 characters: `018c...5d6f`.")
    name = serializers.CharField()
    created_at = TimestampField()


@extend_schema_serializer(many=False)
class ApiKeyListOutputSerializer(serializers.Serializer):
    tokens = ApiKeyOutputSerializer(many=True)


class ApiKeyCreateInputSerializer(serializers.Serializer):
    name = StrictPatternCharField(
        pattern=NO_NUL_PATTERN,
        required=True,
        allow_blank=True,
        trim_whitespace=False,
        min_length=1,
        max_length=255,
        help_text="1-255 characters.",
        error_messages={
            "required": "Missing 'name' field in request body",
            "null": "Missing 'name' field in request body",
            "invalid": services.TOKEN_NAME_MESSAGE,
            "min_length": services.TOKEN_NAME_MESSAGE,
            "max_length": services.TOKEN_NAME_MESSAGE,
        },
    )


class ApiKeyCreateOutputSerializer(serializers.Serializer):
    message = ConstantField("Token issued successfully")
    token_id = HexIdField(source="api_key.id")
    token = serializers.CharField(source="raw", help_text="The API key itself, shown only in this answer.")
    name = serializers.CharField(source="api_key.name")
    note = ConstantField("Save this token securely. You won't be able to see it again.")


class ApiKeyRevokeOutputSerializer(serializers.Serializer):
    message = ConstantField("Token revoked successfully")
    token_id = HexIdField()
    token_name = serializers.CharField()


class ApiTokenViewSet(viewsets.ViewSet):
    """``/user/token``: list, issue and revoke the current user's API keys."""

    lookup_url_kwarg = "token_id"
    # Anything up to the next slash: a malformed id is the reference's 400, not a 404.
    lookup_value_regex = "[^/]+"

    @extend_schema(
        operation_id="user_token_list",
        summary="List all API tokens for current user",
        description="Newest first; each token is shown masked.",
        tags=["user"],
        examples=[
            response_example(
                {
                    "tokens": [
                        {
                            "token_id": "018c5f9a7b2e7a8c9d0e1f2a3b4c5d6e",
                            "token": "018c...5d6f",
                            "name": "Production API Key",
                            "created_at": "2025-01-15 10:30:45",
                        }
                    ]
                }
            )
        ],
        responses={200: ApiKeyListOutputSerializer, **plain_text_errors(*AUTH_ERRORS)},
    )
    def list(self, request: Request) -> Response:
        rows = selectors.api_key_list(user=request.user)
        return Response(ApiKeyListOutputSerializer({"tokens": rows}).data)

    @extend_schema(
        operation_id="user_token_create",
        summary="Create new API token",
        description="The full token is only shown once. Store it securely.",
        tags=["user"],
        request=ApiKeyCreateInputSerializer,
        examples=[
            request_example({"name": "Production API Key"}),
            response_example(
                {
                    "message": "Token issued successfully",
                    "token_id": "018c5f9a7b2e7a8c9d0e1f2a3b4c5d6e",
                    "token": "018c5f9a7b2e7a8c9d0e1f2a3b4c5d6f",
                    "name": "Production API Key",
                    "note": "Save this token securely. You won't be able to see it again.",
                }
            ),
        ],
        responses={
            200: ApiKeyCreateOutputSerializer,
            **plain_text_errors(
                (400, "Missing 'name' field in request body"),
                (400, services.TOKEN_NAME_MESSAGE),
                (400, f"Maximum number of API tokens reached ({settings.MAX_API_KEYS_PER_USER})"),
                *AUTH_ERRORS,
                *BODY_ERRORS,
            ),
        },
    )
    def create(self, request: Request) -> Response:
        data = validated_body(ApiKeyCreateInputSerializer, request)
        api_key, raw = services.api_key_create(user=request.user, **data)
        return Response(ApiKeyCreateOutputSerializer({"api_key": api_key, "raw": raw}).data)

    @extend_schema(
        operation_id="user_token_revoke",
        summary="Revoke API token",
        tags=["user"],
        parameters=[uuid_path_parameter("token_id", "Token ID (32 hex digits, or hyphenated).")],
        examples=[
            response_example(
                {
                    "message": "Token revoked successfully",
                    "token_id": "018c5f9a7b2e7a8c9d0e1f2a3b4c5d6e",
                    "token_name": "Production API Key",
                }
            )
        ],
        responses={
            200: ApiKeyRevokeOutputSerializer,
            **plain_text_errors(
                (400, "Invalid token ID format"),
                (404, "Token not found or access denied"),
                *AUTH_ERRORS,
            ),
        },
    )
    def destroy(self, request: Request, token_id: str) -> Response:
        key_id = parse_uuid(token_id, "Invalid token ID format")
        api_key = services.api_key_revoke(user=request.user, key_id=key_id)
        # The id parsed from the path: a deleted instance's own id is gone.
        return Response(ApiKeyRevokeOutputSerializer({"token_id": key_id, "token_name": api_key.name}).data)
