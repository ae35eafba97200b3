"""Renaming a file: ``PATCH /file/:uuid``."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from files.filenames import MAX_FILENAME_CHARS, filename_clean
from files.models import File
from files.selectors import NOT_FOUND_MESSAGE, file_get_owned
from whisper_site.errors import ApplicationError

if TYPE_CHECKING:
    from accounts.models import User

FILENAME_LENGTH_MESSAGE = f"Filename must be between 1 and {MAX_FILENAME_CHARS} characters"


def file_rename(*, user: User, file_id: uuid.UUID, filename: str) -> tuple[File, str]:
    """Rename one of the user's files; returns the file and its old name.

    The new name is cleaned of folders and control characters, then must be
    1-255 characters.
    """
    cleaned = filename_clean(filename)
    if not 1 <= len(cleaned) <= MAX_FILENAME_CHARS:
        raise ApplicationError(FILENAME_LENGTH_MESSAGE, 400)
    file = file_get_owned(user=user, file_id=file_id)
    if file is None:
        raise ApplicationError(NOT_FOUND_MESSAGE, 404)
    old = file.filename
    File.objects.filter(id=file.id).update(filename=cleaned)
    file.filename = cleaned
    return file, old
