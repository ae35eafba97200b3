"""File conversion: the WAV for transcription, the MP3/MP4 to serve, failure and recovery."""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
import uuid
from pathlib import Path

from django.db import transaction
from django.utils import timezone

from files import media
from files.models import File
from files.services.deletion import file_storage_names, storage_delete_on_commit
from files.signals import file_audio_ready, file_failed, file_ready
from files.storage import (
    object_prefix,
    storage_delete,
    storage_exists,
    storage_local_path,
    storage_put,
    worker_temp_dir,
)
from whisper_site.celery import task_time_limits

logger = logging.getLogger(__name__)

# Conversion time budget: a fixed part plus a multiple of the media's
# duration (x264 is far slower than MP3 encoding). Celery's soft limit ends
# ffmpeg and records the failure; the hard limit is the backstop.
CONVERT_BASE_SECONDS = 120
CONVERT_SECONDS_PER_MEDIA_SECOND = {File.Kind.AUDIO: 1.0, File.Kind.VIDEO: 4.0}

# Names of the objects a conversion writes, under the file's prefix: fixed,
# so that a second run of the task writes the same names.
MEDIA_BASENAME = "media"
WAV_BASENAME = "audio.wav"


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
