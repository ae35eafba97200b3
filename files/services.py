"""File writes. (Uploads and conversion arrive with the files work.)"""

from __future__ import annotations

from django.core.files.storage import default_storage
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction

from accounts.models import User
from files.models import File
from whisper_site.errors import ApplicationError


def file_storage_names(file: File) -> list[str]:
    """Every storage object kept for ``file``."""
    return [name for name in (file.original_name, file.media_name, file.wav_name) if name]


def storage_delete_on_commit(names: list[str]) -> None:
    """Delete storage objects once the surrounding transaction commits."""

    def delete() -> None:
        for name in names:
            default_storage.delete(name)

    transaction.on_commit(delete)


def file_delete_all_for_user(*, user: User) -> None:
    """Delete every file of ``user`` with its stored objects and transcriptions."""
    names: list[str] = []
    for file in File.objects.filter(owner=user).only("original_name", "media_name", "wav_name"):
        names.extend(file_storage_names(file))
    File.objects.filter(owner=user).delete()
    storage_delete_on_commit(names)


def avatar_replace(*, user: User, upload: UploadedFile) -> File:
    """Store ``upload`` as the user's avatar."""
    raise ApplicationError("Avatar upload is not available yet", 400)
