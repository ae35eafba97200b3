"""Deleting files: their rows, their transcriptions (cascade) and every stored object."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from django.db import transaction
from django.db.models import QuerySet

from files.models import File
from files.selectors import NOT_FOUND_MESSAGE
from files.storage import storage_delete
from whisper_site.errors import ApplicationError

if TYPE_CHECKING:
    from accounts.models import User


def file_storage_names(file: File) -> list[str]:
    """Every storage object kept for ``file``."""
    return [name for name in (file.original_name, file.media_name, file.wav_name) if name]


def storage_delete_on_commit(names: list[str]) -> None:
    """Delete storage objects once the surrounding transaction commits."""
    names = [name for name in names if name]
    if names:
        transaction.on_commit(lambda: storage_delete(names))


def file_delete(*, user: User, file_id: uuid.UUID) -> File:
    """Delete one of the user's files: its row, its transcriptions and every stored object.

    Objects go once the deletion commits; a conversion still running notices
    the row is gone and removes what it wrote.
    """
    with transaction.atomic():
        file = File.objects.select_for_update().filter(id=file_id, owner=user).exclude(kind=File.Kind.IMAGE).first()
        if file is None:
            raise ApplicationError(NOT_FOUND_MESSAGE, 404)
        names = file_storage_names(file)
        file.delete()
        # delete() clears the primary key; the answer still names the file.
        file.id = file_id
        storage_delete_on_commit(names)
    return file


def file_delete_many(*, files: QuerySet[File]) -> None:
    """Delete ``files`` with their transcriptions; their stored objects go once the deletion commits."""
    names: list[str] = []
    for file in files.only("original_name", "media_name", "wav_name"):
        names.extend(file_storage_names(file))
    files.delete()
    storage_delete_on_commit(names)


def file_delete_all_for_user(*, user: User) -> None:
    """Delete every file of ``user`` (avatar included) with its stored objects and transcriptions."""
    file_delete_many(files=File.objects.filter(owner=user))
