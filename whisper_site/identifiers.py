"""UUIDv7 identifiers, written as 32 lowercase hex digits."""

from __future__ import annotations

import uuid

import uuid6

from whisper_site.errors import ApplicationError


def new_uuid7() -> uuid.UUID:
    """A new time-ordered UUIDv7 (sorted by creation, friendly to B-tree indexes)."""
    return uuid.UUID(int=uuid6.uuid7().int)


def parse_uuid(value: object, message: str = "Invalid UUID format") -> uuid.UUID:
    """Parse a path parameter or body field: 32 hex digits or the hyphenated form.

    Anything else raises ``ApplicationError(message, 400)``.
    """
    if not isinstance(value, str) or len(value) not in (32, 36):
        raise ApplicationError(message, 400)
    if len(value) == 36 and [len(part) for part in value.split("-")] != [8, 4, 4, 4, 12]:
        raise ApplicationError(message, 400)
    try:
        return uuid.UUID(value)
    except ValueError:
        raise ApplicationError(message, 400) from None
