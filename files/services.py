"""File writes: uploads, conversion, renames, deletes and avatars."""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from accounts.models import User
from files import media
from files.filenames import MAX_FILENAME_CHARS, filename_clean, filename_for_upload
from files.images import ImageInfo, NotAnImage, probe_image
from files.models import File
from files.selectors import NOT_FOUND_MESSAGE, file_get_owned
from files.signals import file_audio_ready, file_failed, file_ready
from files.storage import (
    object_prefix,
    storage_delete,
    storage_exists,
    storage_local_path,
    storage_put,
    storage_put_upload,
    worker_temp_dir,
)
from files.uploads import StreamedUpload, avatar_too_large_message, streamed_upload_from
from whisper_site.celery import task_time_limits
from whisper_site.errors import ApplicationError
from whisper_site.identifiers import new_uuid7

logger = logging.getLogger(__name__)

FILENAME_LENGTH_MESSAGE = f"Filename must be between 1 and {MAX_FILENAME_CHARS} characters"
AVATAR_NOT_IMAGE_MESSAGE = "Avatar must be an image (PNG, JPEG, GIF or WebP)"

# Conversion time budget: a fixed part plus a multiple of the media's
# duration (x264 is far slower than MP3 encoding). Celery's soft limit ends
# ffmpeg and records the failure; the hard limit is the backstop.
CONVERT_BASE_SECONDS = 120
CONVERT_SECONDS_PER_MEDIA_SECOND = {File.Kind.AUDIO: 1.0, File.Kind.VIDEO: 4.0}

# Names of the objects a conversion writes, under the file's prefix: fixed,
# so that a second run of the task writes the same names.
MEDIA_BASENAME = "media"
WAV_BASENAME = "audio.wav"


def file_storage_names(file: File) -> list[str]:
    """Every storage object kept for ``file``."""
    return [name for name in (file.original_name, file.media_name, file.wav_name) if name]


def storage_delete_on_commit(names: list[str]) -> None:
    """Delete storage objects once the surrounding transaction commits."""
    names = [name for name in names if name]
    if names:
        transaction.on_commit(lambda: storage_delete(names))


# --------------------------------------------------------------------------
# Uploads
# --------------------------------------------------------------------------


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


def _existed(file: File) -> UploadResult:
    return UploadResult(message="File already exists", filename=file.filename, file=file, existed=True)


def convert_time_limits(*, kind: str, duration: float) -> tuple[int, int]:
    """Celery's (soft, hard) time limits for converting a file of ``kind`` and ``duration``.

    Capped below the broker's visibility timeout (``task_time_limits``).
    """
    return task_time_limits(soft=CONVERT_BASE_SECONDS + CONVERT_SECONDS_PER_MEDIA_SECOND.get(kind, 4.0) * duration)


def file_convert_enqueue(*, file: File) -> None:
    """Queue the conversion of ``file`` once the current transaction commits.

    If the queue cannot take it (broker down), the file fails at once with a
    reason instead of staying ``processing`` for ever.
    """
    from files.tasks import file_convert_task  # tasks import this module

    file_id, kind, duration = file.id, file.kind, file.duration

    def enqueue() -> None:
        soft, hard = convert_time_limits(kind=kind, duration=duration)
        try:
            file_convert_task.apply_async(args=[file_id.hex], soft_time_limit=soft, time_limit=hard)
        except Exception:
            if file_convert_task.app.conf.task_always_eager:
                # Eager mode runs the task here: its errors are its own.
                raise
            logger.exception("could not queue the conversion of file %s", file_id.hex)
            file_fail(file_id=file_id, reason="Conversion could not be queued; upload the file again")

    transaction.on_commit(enqueue)


def file_upload(*, user: User, part: StreamedUpload) -> UploadResult:
    """Store one uploaded part as a new file of ``user``, or say why not.

    The content decides: the part must hold decodable audio (with or without
    video). Bytes the user already owns (same BLAKE3 digest) are not stored
    again: the existing file is the answer. A file whose conversion failed is
    retried when its bytes are uploaded again. Nothing is left behind for a
    part that is refused.
    """
    filename = filename_for_upload(part.name)
    if part.too_large:
        return _upload_error(filename, "file_too_large", "File too large")
    if part.size == 0:
        return _upload_error(filename, "empty_file", "Empty file")
    try:
        info = media.probe_media(part.temporary_file_path())
    except media.EmptyMedia:
        return _upload_error(filename, "empty_file", "Empty file")
    except media.UnsupportedMedia:
        return _upload_error(filename, "unsupported_content_type", "Unsupported content type")

    digest = part.blake3_hex
    assert digest is not None
    existing = File.objects.filter(owner=user, blake3=digest).first()
    if existing is not None and existing.state != File.State.FAILED:
        return _existed(existing)

    file_id = existing.id if existing is not None else new_uuid7()
    # A fresh name per upload: a retry racing another retry of the same
    # failed file can never overwrite the other's object.
    original_name = f"{object_prefix(owner_id=user.id, file_id=file_id)}/upload-{secrets.token_hex(8)}"
    stored_name = storage_put_upload(name=original_name, upload=part)
    try:
        with transaction.atomic():
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
        raise ApplicationError("No files provided. Send one or more multipart parts named 'file'", 400)
    return [file_upload(user=user, part=part) for part in parts]


# --------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------


def file_fail(*, file_id: uuid.UUID, reason: str) -> bool:
    """Mark a processing file failed with ``reason`` and delete everything stored for it.

    Returns whether this call made the change (a file already ready, failed
    or deleted is left alone).
    """
    with transaction.atomic():
        file = File.objects.select_for_update().filter(id=file_id, state=File.State.PROCESSING).first()
        if file is None:
            return False
        names = file_storage_names(file)
        File.objects.filter(id=file_id).update(
            state=File.State.FAILED, error=reason[:2000], original_name="", media_name="", wav_name=""
        )
        storage_delete_on_commit(names)
        transaction.on_commit(lambda: file_failed.send(sender=File, file_id=file_id))
    return True


def _file_audio_stored(*, file_id: uuid.UUID, wav_name: str) -> bool:
    """Record the WAV of a file still converting; ``False`` if the file is gone or no longer processing."""
    with transaction.atomic():
        updated = File.objects.filter(id=file_id, state=File.State.PROCESSING).update(wav_name=wav_name)
        if updated:
            transaction.on_commit(lambda: file_audio_ready.send(sender=File, file_id=file_id))
    return bool(updated)


def file_convert(*, file_id: uuid.UUID) -> None:
    """Convert a processing file: a WAV for transcription, then MP3 (audio) or MP4 (video).

    The WAV comes first and is recorded as soon as it is stored
    (``file_audio_ready``): transcription can start while a long video is
    still being encoded. Then the MP3/MP4, and the file is ready
    (``file_ready``) and its original upload deleted.

    Safe to run twice, also at the same time: a file that is not processing
    is left alone, outputs go to names fixed by the file's id, a WAV already
    recorded is not made again, and only the run whose conditional UPDATE
    marks the file ready keeps what it stored. A failure deletes everything
    of the file; a file deleted while it converts leaves nothing behind.
    """
    file = File.objects.filter(id=file_id).first()
    if file is None or file.state != File.State.PROCESSING:
        return
    prefix = object_prefix(owner_id=file.owner_id, file_id=file.id)
    soft, _ = convert_time_limits(kind=file.kind, duration=file.duration)
    wav_name = f"{prefix}/{WAV_BASENAME}"
    stored: list[str] = []
    with tempfile.TemporaryDirectory(prefix="convert-", dir=worker_temp_dir()) as scratch:
        folder = Path(scratch)
        try:
            with storage_local_path(file.original_name) as source:
                if file.wav_name != wav_name or not storage_exists(wav_name):
                    media.convert_to_wav(source, folder / WAV_BASENAME, timeout=soft)
                    stored.append(storage_put(name=wav_name, path=folder / WAV_BASENAME))
                    if not _file_audio_stored(file_id=file_id, wav_name=wav_name):
                        _delete_unclaimed(file_id, stored)
                        return
                    # The MP3/MP4 is left to a second run queued behind the
                    # transcription that file_audio_ready just queued: a
                    # one-process worker transcribes first, then encodes.
                    file_convert_enqueue(file=file)
                    return
                media_path = folder / f"{MEDIA_BASENAME}{media.EXTENSIONS[file.kind]}"
                if file.kind == File.Kind.VIDEO:
                    media.convert_video_to_mp4(source, media_path, timeout=soft)
                else:
                    media.convert_audio_to_mp3(source, media_path, timeout=soft)
            media_size = media_path.stat().st_size
            media_name = storage_put(name=f"{prefix}/{media_path.name}", path=media_path)
            stored.append(media_name)
        except FileNotFoundError:
            # Deleted meanwhile, or another run finished and removed the
            # original: then nothing changes. Otherwise the upload is lost.
            file_fail(file_id=file_id, reason="Conversion failed: the uploaded file is missing from storage")
            _delete_unclaimed(file_id, stored)
            return
        except media.ConversionError as exc:
            file_fail(file_id=file_id, reason=f"Conversion failed: {exc.message}")
            _delete_unclaimed(file_id, stored)
            return
        except Exception as exc:
            # Celery's SoftTimeLimitExceeded lands here too (ffmpeg is
            # already killed), as does a storage that cannot take the outputs.
            file_fail(file_id=file_id, reason=f"Conversion failed: {type(exc).__name__}")
            _delete_unclaimed(file_id, stored)
            raise

    with transaction.atomic():
        file = File.objects.select_for_update().filter(id=file_id).first()
        if file is not None and file.state == File.State.PROCESSING:
            original = file.original_name
            File.objects.filter(id=file_id).update(
                state=File.State.READY,
                media_name=media_name,
                wav_name=wav_name,
                original_name="",
                size_bytes=media_size,
                error="",
                converted_at=timezone.now(),
            )
            storage_delete_on_commit([original])
            transaction.on_commit(lambda: file_ready.send(sender=File, file_id=file_id))
            return
    _delete_unclaimed(file_id, stored)


# A conversion still unfinished this many times past its time limits has
# been retried enough: the file fails instead of being queued for ever.
CONVERT_RECOVERY_ROUNDS = 3


def file_requeue_stuck(*, older_than: float, now: dt.datetime | None = None) -> int:
    """Queue again the conversions a lost worker or a lost queue left ``processing``; returns how many.

    A conversion runs in at most two messages (WAV, then MP3/MP4), each within
    its hard time limit. A file still processing longer than twice that plus
    ``older_than`` seconds after its upload has lost its worker or its message:
    it is queued again (conversion is safe to run twice, even at once). After
    ``CONVERT_RECOVERY_ROUNDS`` such periods it fails with a reason, so that no
    file stays ``processing`` for ever.
    """
    now = now or timezone.now()
    count = 0
    for file in File.objects.filter(state=File.State.PROCESSING).only("id", "kind", "duration", "uploaded_at"):
        _, hard = convert_time_limits(kind=file.kind, duration=file.duration)
        period = dt.timedelta(seconds=2 * hard + older_than)
        age = now - file.uploaded_at
        if age <= period:
            continue
        if age > period * CONVERT_RECOVERY_ROUNDS:
            if file_fail(file_id=file.id, reason="Conversion failed: it did not finish in time"):
                logger.warning("File %s never finished converting: failed", file.id.hex)
            continue
        logger.warning("File %s still converting after %s: queued again", file.id.hex, age)
        file_convert_enqueue(file=file)
        count += 1
    return count


def _delete_unclaimed(file_id: uuid.UUID, names: list[str]) -> None:
    # The file was deleted meanwhile, or another run got there first: keep
    # only what the row now names.
    file = File.objects.filter(id=file_id).first()
    kept = set(file_storage_names(file)) if file is not None else set()
    storage_delete([name for name in names if name not in kept])


# --------------------------------------------------------------------------
# Rename and delete
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# Avatars
# --------------------------------------------------------------------------


def _as_streamed(upload: UploadedFile) -> StreamedUpload:
    """An upload that did not come through HashingUploadHandler, hashed onto disk the same way."""
    if isinstance(upload, StreamedUpload):
        return upload
    return streamed_upload_from(upload, limit=settings.AVATAR_MAX_BYTES, name=upload.name or "avatar")


def _avatar_checked(upload: UploadedFile) -> tuple[StreamedUpload, ImageInfo]:
    """``upload`` on disk with its digest, and the picture it holds; 400 when it is no avatar."""
    part = _as_streamed(upload)
    if part.too_large or part.size > settings.AVATAR_MAX_BYTES:
        raise ApplicationError(avatar_too_large_message(), 400)
    if part.size == 0:
        raise ApplicationError(AVATAR_NOT_IMAGE_MESSAGE, 400)
    try:
        image = probe_image(part.temporary_file_path())
    except NotAnImage:
        raise ApplicationError(AVATAR_NOT_IMAGE_MESSAGE, 400) from None
    return part, image


def avatar_validate(*, upload: UploadedFile) -> None:
    """Check an avatar before anything is written: at most ``AVATAR_MAX_BYTES``, a real image."""
    _avatar_checked(upload)


def avatar_replace(*, user: User, upload: UploadedFile) -> File:
    """Store ``upload`` as the user's avatar (a ready file of kind image) and delete the previous one."""
    part, image = _avatar_checked(upload)
    digest = part.blake3_hex
    assert digest is not None

    existing = File.objects.filter(owner=user, blake3=digest, kind=File.Kind.IMAGE).first()
    stored_name = ""
    if existing is None:
        file_id = new_uuid7()
        name = f"{object_prefix(owner_id=user.id, file_id=file_id)}/avatar{image.extension}"
        stored_name = storage_put_upload(name=name, upload=part)
    try:
        with transaction.atomic():
            # Lock the user: two avatar changes at once must not both keep
            # the previous avatar as "not mine to delete".
            locked = User.objects.select_for_update().get(pk=user.pk)
            previous_id = locked.avatar_id
            if existing is None:
                avatar = File.objects.create(
                    id=file_id,
                    owner=user,
                    filename=filename_for_upload(part.name),
                    kind=File.Kind.IMAGE,
                    content_type=image.content_type,
                    blake3=digest,
                    size_bytes=part.size,
                    upload_size=part.size,
                    duration=0.0,
                    state=File.State.READY,
                    media_name=stored_name,
                    converted_at=timezone.now(),
                )
            else:
                avatar = existing
            User.objects.filter(pk=user.pk).update(avatar=avatar)
            if previous_id is not None and previous_id != avatar.id:
                previous = File.objects.filter(id=previous_id, owner=user).first()
                if previous is not None:
                    names = file_storage_names(previous)
                    previous.delete()
                    storage_delete_on_commit(names)
    except IntegrityError:
        # The same picture set twice at once: the other request stored it.
        storage_delete([stored_name])
        raise ApplicationError("Avatar changed concurrently; try again", 409) from None
    except BaseException:
        storage_delete([stored_name])
        raise
    user.avatar = avatar
    return avatar
