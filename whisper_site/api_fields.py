"""Serializer fields and helpers for the API's conventions, shared by every app's ``apis.py``.

Identifiers are 32 lowercase hex digits on the way out and 32 hex digits or the
hyphenated form on the way in; timestamps are UTC ``YYYY-MM-DD HH:MM:SS``; a
fixed ``message`` starts many answers; JSON bodies must be objects.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.request import Request

from whisper_site.errors import ApplicationError
from whisper_site.identifiers import parse_uuid
from whisper_site.openapi import UUID_PATTERN
from whisper_site.parsers import DEPTH_MESSAGE
from whisper_site.request_body import body_object
from whisper_site.timestamps import format_timestamp

# Errors of reading a JSON body, before any field is looked at.
BODY_ERRORS = [
    (400, "Malformed request body"),
    (400, "Request body must be a JSON object"),
    (400, DEPTH_MESSAGE),
    (413, "Request body too large"),
    (415, "Unsupported Content-Type"),
]


@extend_schema_field({"type": "string", "pattern": "^[0-9a-f]{32}$", "example": "018c5f9a7b2e7a8c9d0e1f2a3b4c5d6e"})
class HexIdField(serializers.Field):
    """An identifier as the API writes it: 32 lowercase hex digits."""

    def to_representation(self, value: uuid.UUID) -> str:
        return value.hex


@extend_schema_field(
    {
        "type": "string",
        "pattern": r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$",
        "example": "2025-01-15 10:30:45",
        "description": "UTC, `YYYY-MM-DD HH:MM:SS`.",
    }
)
class TimestampField(serializers.Field):
    """A time as the API writes it: UTC ``YYYY-MM-DD HH:MM:SS``; "not yet" is the Unix epoch."""

    def get_attribute(self, instance: Any) -> str:
        # Formatted here: a None ("not yet") must not reach the serializer's None shortcut.
        return format_timestamp(super().get_attribute(instance))

    def to_representation(self, value: str | dt.datetime) -> str:
        return value if isinstance(value, str) else format_timestamp(value)


@extend_schema_field({"type": "string", "minLength": 1})
class StrictStringField(serializers.Field):
    """A JSON string, passed on as sent: numbers are not turned into text, nothing is trimmed."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return data

    def to_representation(self, value: str) -> str:
        return value


class ConstantField(serializers.Field):
    """A fixed text of an answer (``"Login successful"``), the same in every response."""

    def __init__(self, value: str, **kwargs: Any) -> None:
        self.value = value
        super().__init__(source="*", read_only=True, **kwargs)

    def to_representation(self, instance: Any) -> str:
        return self.value


class ConstantFieldSchema(OpenApiSerializerFieldExtension):
    target_class = ConstantField

    def map_serializer_field(self, auto_schema: AutoSchema, direction: str) -> dict[str, Any]:
        # An example, not an enum: the enum post-processing hook would merge the
        # many different "message" enums into colliding components.
        return {"type": "string", "example": self.target.value}


@extend_schema_field({"type": "string", "pattern": UUID_PATTERN})
class UuidField(serializers.CharField):
    """A UUID written as 32 hex digits or in the hyphenated form."""

    def to_internal_value(self, data: Any) -> uuid.UUID:
        text = super().to_internal_value(data)
        try:
            return parse_uuid(text)
        except ApplicationError:
            self.fail("invalid")


class StrictInputSerializer(serializers.Serializer):
    """An input serializer that refuses fields it does not declare: ``400 Unknown field: NAME``.

    The first unknown field in the body's order is the one reported, before any declared
    field is looked at: a misspelt option ("formats") is an error, never silently ignored.
    """

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            for name in data:
                if name not in self.fields:
                    raise serializers.ValidationError({name: [f"Unknown field: {name}"]})
        return super().to_internal_value(data)


def strict_boolean_field(name: str, **kwargs: Any) -> serializers.BooleanField:
    """A yes/no option: JSON true or false (or the form words DRF reads); null means the default."""
    message = f"Invalid {name}: must be true or false"
    return serializers.BooleanField(error_messages={"invalid": message, "null": message}, **kwargs)


def validated_body(serializer_class: type[serializers.Serializer], request: Request) -> dict[str, Any]:
    """The request body read through ``serializer_class``; the first problem is a 400."""
    serializer = serializer_class(data=body_object(request))
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)
