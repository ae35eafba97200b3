"""File reads: listings, lookups and local access to stored objects."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from django.db.models import QuerySet

from files.models import File
from files.storage import storage_local_path

if TYPE_CHECKING:
    from accounts.models import User

NOT_FOUND_MESSAGE = "File not found or access denied"


def file_list(*, user: User) -> QuerySet[File]:
    """The user's media files, newest first. Avatars are not listed (they stay downloadable)."""
    return File.objects.filter(owner=user).exclude(kind=File.Kind.IMAGE).order_by("-uploaded_at", "-id")


def file_get_owned(*, user: User, file_id: uuid.UUID) -> File | None:
    """One of the user's media files; another user's file or an avatar is ``None``."""
    return File.objects.filter(id=file_id, owner=user).exclude(kind=File.Kind.IMAGE).first()


def file_get_public(*, file_id: uuid.UUID) -> File | None:
    """Any file by uuid, for public downloads."""
    return File.objects.filter(id=file_id).first()


@contextmanager
def file_wav_local_path(file: File) -> Iterator[Path]:
    """A path on this machine of ``file``'s WAV (16 kHz, mono, PCM s16le), for transcription.

    With a storage that has local paths this is the stored object itself: read
    it, never write or delete it. Otherwise (S3) the WAV is streamed to a
    temporary file that is deleted when the block ends.

    Raises ``FileNotFoundError`` when the file has no stored WAV (still
    processing, failed, or the object was lost).
    """
    if not file.wav_name:
        raise FileNotFoundError(f"file {file.id.hex} has no WAV (state {file.state})")
    with storage_local_path(file.wav_name, suffix=".wav") as path:
        yield path
