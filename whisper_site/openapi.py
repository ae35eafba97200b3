"""Pieces of the OpenAPI 3 document served at ``/api/v1/schema`` that every app shares.

drf-spectacular builds the document from the routers, the ViewSets and their
input and output serializers. This module adds what it cannot know:

- security schemes for our two auth classes (``Bearer <api-key>`` and
  ``Basic <session-id>``);
- :func:`plain_text_errors`, the ``extend_schema`` responses of one-line
  ``text/plain`` errors, with the reference's messages as examples;
- :func:`uuid_path_parameter`, a path id with its documented pattern;
- :func:`api_document`, a post-processing hook that writes each path once
  without its optional trailing slash and describes the API as a whole.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse

PLAIN_TEXT = "text/plain"
AUTH_ERRORS = [
    (401, "Missing valid Authorization header with session or API key"),
    (401, "Invalid API key"),
    (401, "Invalid or expired session"),
]
ADMIN_ERRORS = [(403, "Access denied. Admin privileges required")]
# 32 lowercase or uppercase hex digits, or the hyphenated 8-4-4-4-12 form.
UUID_PATTERN = r"^([0-9a-fA-F]{32}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$"


class ApiAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema (``DEFAULT_SCHEMA_CLASS``) with what this API needs beside it.

    - A PATCH's body is required (each names at least one field to change).
    - A public operation says so with an empty ``security`` list (drf-spectacular
      leaves the key out, or writes ``[{}]``, "optionally authenticated").
    - ``DELETE /user/me`` takes the password in its body, as the reference writes
      it; drf-spectacular documents bodies of POST, PUT and PATCH only (OpenAPI
      3.0 gives a DELETE body no defined meaning, but allows it). A DELETE view
      that declares ``request=`` gets its body documented.
    """

    def get_operation(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        operation = super().get_operation(*args, **kwargs)
        if operation is not None and "security" not in operation and not self.get_auth():
            operation["security"] = []
        if operation is not None and self.method == "PATCH" and "requestBody" in operation:
            # A PATCH here changes at least one field: without a body it is a 400.
            operation["requestBody"]["required"] = True
        return operation

    def _get_serializer(self) -> Any:
        # ViewSets here have no serializer_class: each action declares its serializers
        # with extend_schema, and one that declares none has no body to describe.
        view = self.view
        if not any(hasattr(view, name) for name in ("get_serializer", "get_serializer_class", "serializer_class")):
            return None
        return super()._get_serializer()

    def _get_request_body(self, direction: str = "request") -> Any:
        if self.method != "DELETE":
            return super()._get_request_body(direction)
        self.method = "POST"
        try:
            return super()._get_request_body(direction)
        finally:
            self.method = "DELETE"


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key from `POST /user/token`: `Authorization: Bearer <32 hex digits>`.",
        }


class SessionIdAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.SessionIdAuthentication"
    name = "sessionId"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        # Not HTTP Basic: the credential is the raw session id, not base64(user:password).
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "A session from `POST /user/login`: enter `Basic <session_id>` (raw hex, no base64).",
        }


def plain_text_errors(*errors: tuple[int, str]) -> dict[tuple[int, str], OpenApiResponse]:
    """``extend_schema`` responses for one-line ``text/plain`` errors, grouped by status."""
    by_status: dict[int, list[str]] = {}
    for status, message in errors:
        by_status.setdefault(status, []).append(message)
    return {
        (status, PLAIN_TEXT): OpenApiResponse(
            response=OpenApiTypes.STR,
            description="One line of plain text: " + "; ".join(f'"{m}"' for m in messages),
            examples=[
                OpenApiExample(f"{status}-{index}", value=message, status_codes=[str(status)], response_only=True)
                for index, message in enumerate(messages, start=1)
            ],
        )
        for status, messages in sorted(by_status.items())
    }


def uuid_path_parameter(name: str, description: str) -> OpenApiParameter:
    """A path id as the API takes it: 32 hex digits, or the hyphenated form."""
    return OpenApiParameter(
        name,
        OpenApiTypes.STR,
        OpenApiParameter.PATH,
        description=description,
        pattern=UUID_PATTERN,
    )


def api_document(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """``POSTPROCESSING_HOOKS`` entry: one path per route, and the API's own description.

    Routes accept an optional trailing slash; the document writes each path
    once, as the reference does, without it.
    """
    paths: dict[str, Any] = {}
    for path, item in result.get("paths", {}).items():
        paths.setdefault(path.rstrip("/") or "/", {}).update(item)
    result["paths"] = paths
    result.setdefault("info", {})["description"] = (
        "Self-hosted Whisper transcription: accounts, files, transcriptions and admin.\n\n"
        "Every success body is JSON. **Every error is one line of `text/plain`** with the "
        "status code shown (never HTML), except on the OpenAI-compatible routes (tag `openai`: "
        "`/audio/transcriptions`, `/audio/translations`, `/models`), which answer OpenAI's "
        "JSON error objects as OpenAI's clients expect, and `GET /health/ready`, whose 503 is the "
        "same JSON report as its 200, naming the checks that failed. Identifiers are UUIDv7 written as 32 "
        "lowercase hex digits; timestamps are UTC `YYYY-MM-DD HH:MM:SS`.\n\n"
        "Authenticate with `Authorization: Bearer <api-key>` or `Authorization: Basic <session-id>` "
        "(the raw session id, no base64)."
    )
    return result
