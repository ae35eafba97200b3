"""Uploads: each part of ``POST /file`` stored as a new file, or the reason it is not."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import IntegrityError, transaction

from files import media
from files.filenames import filename_for_upload
from files.models import File
from files.services.conversion import file_convert_enqueue
from files.services.quotas import QUOTA_EXCEEDED, file_quota_refusal, user_lock
from files.storage import object_prefix, storage_delete, storage_put_upload
from files.uploads import StreamedUpload
from whisper_site.errors import ApplicationError
from whisper_site.identifiers import new_uuid7

if TYPE_CHECKING:
    from accounts.models import User

NO_FILES_MESSAGE = "No files provided. Send one or more multipart parts named 'file'"


@dataclass(frozen=True)
class UploadResult:
    """The outcome for one uploaded part: a row of ``POST /file``'s answer."""

    message: str
    filename: str
    file: File | None = None
    existed: bool = False
    uploaded: bool = False
    error: str | None = None


def _upload_error(filename: str, error: str, message: str) -> UploadResult:
    return UploadResult(message=message, filename=filename, error=error)


class _QuotaExceeded(Exception):
    """Raised inside the inserting transaction to roll it back: a concurrent upload took the room."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def too_long_message() -> str:
    """The upload row's message for media longer than ``MAX_MEDIA_DURATION_SECONDS``."""
    return f"File too long. Maximum duration is {settings.MAX_MEDIA_DURATION_SECONDS} seconds"


def _existed(file: File) -> UploadResult:
    return UploadResult(message="File already exists", filename=file.filename, file=file, existed=True)


def file_upload(*, user: User, part: StreamedUpload) -> UploadResult:
    """Store one uploaded part as a new file of ``user``, or say why not.

    The content decides: the part must hold decodable audio (with or without
    video). Bytes the user already owns (same BLAKE3 digest) are not stored
    again: the existing file is the answer. A file whose conversion failed is
    retried when its bytes are uploaded again. Media longer than
    ``MAX_MEDIA_DURATION_SECONDS`` (as probed) is refused (``file_too_long``),
    and so is a part that would put the user over ``USER_FILE_QUOTA`` or
    ``USER_STORAGE_QUOTA_BYTES`` (``quota_exceeded``). Nothing is left behind
    for a part that is refused.
    """
    filename = filename_for_upload(part.name)
    if part.too_large:
        return _upload_error(filename, "file_too_large", "File too large")
    if part.size == 0:
        return _upload_error(filename, "empty_file", "Empty file")
    try:
        info = media.probe_media(part.temporary_file_path(), limits=media.MediaLimits.from_settings(settings))
    except media.EmptyMedia:
        return _upload_error(filename, "empty_file", "Empty file")
    except media.UnsupportedMedia:
        return _upload_error(filename, "unsupported_content_type", "Unsupported content type")

    digest = part.blake3_hex
    assert digest is not None
    existing = File.objects.filter(owner=user, blake3=digest).first()
    if existing is not None and existing.state != File.State.FAILED:
        return _existed(existing)
    if info.duration > settings.MAX_MEDIA_DURATION_SECONDS:
        return _upload_error(filename, "file_too_long", too_long_message())
    # A first look, before anything is stored; the answer that counts is the
    # one under the user's lock below.
    quota = {"user": user, "size": part.size, "duration": info.duration, "new_file": existing is None}
    refusal = file_quota_refusal(**quota)
    if refusal is not None:
        return _upload_error(filename, QUOTA_EXCEEDED, refusal)

    file_id = existing.id if existing is not None else new_uuid7()
    # A fresh name per upload: a retry racing another retry of the same
    # failed file can never overwrite the other's object.
    original_name = f"{object_prefix(owner_id=user.id, file_id=file_id)}/upload-{secrets.token_hex(8)}"
    stored_name = storage_put_upload(name=original_name, upload=part)
    try:
        with transaction.atomic():
            # Race: two uploads of one user at once near a quota, each checked above
            # before the other's row existed. Under the lock on the user's row the
            # second waits for the first to commit and then counts its file.
            user_lock(user=user)
            refusal = file_quota_refusal(**quota)
            if refusal is not None:
                raise _QuotaExceeded(refusal)
            if existing is not None:
                file = _file_retry(file=existing, original_name=stored_name, info=info, size=part.size)
            else:
                file = File.objects.create(
                    id=file_id,
                    owner=user,
                    filename=filename,
                    kind=info.kind,
                    content_type=media.CONTENT_TYPES[info.kind],
                    blake3=digest,
                    size_bytes=part.size,
                    upload_size=part.size,
                    duration=info.duration,
                    state=File.State.PROCESSING,
                    original_name=stored_name,
                )
            if file is not None:
                file_convert_enqueue(file=file)
    except IntegrityError:
        # Race: the same bytes uploaded by the same user in two requests at
        # once. The unique (owner, blake3) constraint lets one row in; the
        # other request answers with it.
        file = None
    except _QuotaExceeded as exceeded:
        storage_delete([stored_name])
        return _upload_error(filename, QUOTA_EXCEEDED, exceeded.message)
    except BaseException:
        storage_delete([stored_name])
        raise
    if file is None:
        storage_delete([stored_name])
        winner = File.objects.filter(owner=user, blake3=digest).first()
        if winner is None:
            raise ApplicationError("Upload conflicted with a concurrent change; try again", 409)
        return _existed(winner)
    return UploadResult(message="File uploaded successfully", filename=file.filename, file=file, uploaded=True)


def _file_retry(*, file: File, original_name: str, info: media.MediaInfo, size: int) -> File | None:
    # Conditional UPDATE: of two retries of the same failed file, one wins.
    updated = File.objects.filter(id=file.id, state=File.State.FAILED).update(
        state=File.State.PROCESSING,
        error="",
        original_name=original_name,
        kind=info.kind,
        content_type=media.CONTENT_TYPES[info.kind],
        duration=info.duration,
        size_bytes=size,
        upload_size=size,
    )
    if not updated:
        return None
    return File.objects.get(id=file.id)


def file_upload_many(*, user: User, parts: list[StreamedUpload]) -> list[UploadResult]:
    """Store each part of one ``POST /file``; one result per part, in order."""
    if not parts:
        raise ApplicationError(NO_FILES_MESSAGE, 400)
    return [file_upload(user=user, part=part) for part in parts]
