"""File conversion, in two phases that are two tasks: the WAV, then the MP3/MP4; failure and recovery.

Phase one (``file_convert_audio``, task ``files.convert_audio``) stores the WAV
for transcription and announces it (``file_audio_ready``); once that commits it
queues phase two (``file_convert_media``, task ``files.convert_media``), which
stores the MP3 (audio) or MP4 (video), marks the file ready (``file_ready``) and
deletes the original upload. Any failure fails the file with a reason
(``file_fail``, ``file_failed``) and deletes everything stored for it.

Both phases, and their re-queues, go to ``CONVERSION_QUEUE``, phase one before
phase two in priority, which conversion workers consume (at a lower CPU
priority, ffmpeg on ``CONVERSION_FFMPEG_THREADS`` threads); transcriptions go
to ``TRANSCRIPTION_QUEUE``. Nothing here relies on the order of the two queues:
a transcription needs only the WAV, recorded before anything is queued after
it, and phase two needs only the WAV and the original.
"""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from django.conf import settings
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
from whisper_site.celery import DATABASE_CONNECTION_ERRORS, task_time_limits
from whisper_site.errors import INSUFFICIENT_STORAGE_MESSAGE, NO_SPACE_ERRNOS
from whisper_site.logs import job_log_context

logger = logging.getLogger(__name__)

# Conversion time budget: a fixed part plus a multiple of the media's
# duration (x264 is far slower than MP3 encoding). Celery's soft limit ends
# ffmpeg and records the failure; the hard limit is the backstop. A
# conversion worker runs ffmpeg on one thread at nice 10, and so at about a
# tenth of a core while transcriptions keep every core busy: 1080p H.264
# (veryfast) then took 8.5 s per second of video (0.6 s unloaded; 2 cores),
# hence 12 s. A budget sized for an idle machine would fail such a file,
# its WAV and its waiting jobs with it, only because transcriptions ran.
CONVERT_BASE_SECONDS = 120
CONVERT_SECONDS_PER_MEDIA_SECOND = {File.Kind.AUDIO: 1.0, File.Kind.VIDEO: 12.0}
# The WAV phase only decodes the sound (video is demuxed, not decoded):
# measured 170-530x real time (Opus, MP3, AAC, FLAC; 2 loaded cores), so a
# tenth of a second per second of audio leaves a wide margin. It is applied
# to the longest audio the WAV may hold, not to the upload's duration: that
# duration is the header's claim until the WAV has been measured.
CONVERT_WAV_SECONDS_PER_MEDIA_SECOND = 0.1

# Names of the objects a conversion writes, under the file's prefix: fixed,
# so that a second run of a phase writes the same names.
MEDIA_BASENAME = "media"
WAV_BASENAME = "audio.wav"

QUEUE_FAILED_REASON = "Conversion could not be queued; upload the file again"

# Priorities of the two phases' messages on the conversion queue (Redis takes 0 first,
# 9 last). Phase one only decodes the sound and a transcription waits for it; phase two
# may be a long video's encode, for which only the download waits. So a WAV never waits
# behind encodes still queued, only for a conversion process to be free, which with two
# processes (CONVERSION_WORKER_CONCURRENCY) and one video encoding is at once.
WAV_PHASE_PRIORITY = 0
MEDIA_PHASE_PRIORITY = 9


def convert_time_limits(*, kind: str, duration: float) -> tuple[int, int]:
    """Celery's (soft, hard) time limits of phase two (the MP3/MP4) of a file of ``kind`` and ``duration``.

    Phase two starts once phase one has measured the WAV, so ``duration`` is
    the decoded audio's, not the upload header's. Capped below the broker's
    visibility timeout (``task_time_limits``).
    """
    return task_time_limits(soft=CONVERT_BASE_SECONDS + CONVERT_SECONDS_PER_MEDIA_SECOND.get(kind, 12.0) * duration)


def convert_wav_time_limits() -> tuple[int, int]:
    """Celery's (soft, hard) time limits of phase one (the WAV), the same for every file.

    Sized for the longest WAV phase one may write (``MAX_MEDIA_DURATION_SECONDS``
    plus one second, ffmpeg's ``-t``), not for the duration the upload's header
    claims: a header that says 1 s over an hour of sound would otherwise time
    the conversion out. A WAV that reaches the ``-t`` limit fails the file
    (``_wav_duration_checked``): nothing is ever cut short silently.
    """
    return task_time_limits(
        soft=CONVERT_BASE_SECONDS + CONVERT_WAV_SECONDS_PER_MEDIA_SECOND * _wav_max_seconds(),
    )


def _wav_max_seconds() -> int:
    # One second past the longest accepted audio: a WAV longer than the
    # limit tells a file that is too long from one just at the limit.
    return settings.MAX_MEDIA_DURATION_SECONDS + 1


def convert_recovery_period(*, kind: str, duration: float) -> int:
    """Seconds both phases of a file's conversion may take at most: their hard limits added up."""
    return convert_wav_time_limits()[1] + convert_time_limits(kind=kind, duration=duration)[1]


# --- Queueing ----------------------------------------------------------------


def file_convert_enqueue(*, file: File) -> None:
    """Queue the conversion of ``file`` (phase one, the WAV) once the current transaction commits.

    If the queue cannot take it (broker down), the file fails at once with a
    reason instead of staying ``processing`` for ever.
    """
    from files.tasks import file_convert_audio_task  # tasks import this module

    _enqueue_on_commit(file_convert_audio_task, file, convert_wav_time_limits(), WAV_PHASE_PRIORITY)


def _convert_media_enqueue(file: File) -> None:
    """Queue phase two (the MP3/MP4) of ``file`` once the current transaction commits.

    ``file.duration`` must be the measured one (phase one records it).
    """
    from files.tasks import file_convert_media_task  # tasks import this module

    limits = convert_time_limits(kind=file.kind, duration=file.duration)
    _enqueue_on_commit(file_convert_media_task, file, limits, MEDIA_PHASE_PRIORITY)


def _enqueue_on_commit(task: Any, file: File, limits: tuple[int, int], priority: int) -> None:
    file_id, user_id = file.id, file.owner_id
    soft, hard = limits

    def enqueue() -> None:
        try:
            # The queue is read when the message is sent, as the transcriptions' is.
            task.apply_async(
                args=[file_id.hex],
                queue=settings.CONVERSION_QUEUE,
                priority=priority,
                soft_time_limit=soft,
                time_limit=hard,
            )
        except Exception:
            if task.app.conf.task_always_eager:
                # Eager mode runs the task here: its errors are its own.
                raise
            context = job_log_context(file_id=file_id, user_id=user_id)
            logger.exception("Could not queue %s %s", task.name, context.words, extra=context.extra)
            file_fail(file_id=file_id, reason=QUEUE_FAILED_REASON)

    transaction.on_commit(enqueue)


# --- The two phases ----------------------------------------------------------


def file_convert_audio(*, file_id: uuid.UUID) -> None:
    """Phase one of a conversion: the WAV (PCM s16le, 16 kHz, mono) for transcription.

    The WAV is stored and recorded at once (``File.wav_name``, the file still
    ``processing``) and ``file_audio_ready`` is sent, so that transcription can
    start while a long video is still being encoded. Once that commits, phase
    two is queued on the conversion queue: the transcription the signal queued
    runs on a transcription worker meanwhile, not after the encode. (With
    ``CONVERSION_QUEUE`` set to the transcription queue, one queue again, the
    transcription is queued first and so runs first.)

    The file's duration becomes the WAV's (its samples counted), recorded in
    the same UPDATE as the WAV and so before anything can transcribe it: costs
    and time limits of the file's jobs and of phase two come from the sound
    that is there, not from what the upload's header claimed. ffmpeg stops
    after ``MAX_MEDIA_DURATION_SECONDS`` + 1 s; a WAV longer than the maximum
    fails the file (nothing is charged: no job ran).

    Safe to run twice, also at once: a file that is not processing is left
    alone; a WAV already recorded is not made again (the run only queues phase
    two, so a second delivery goes on where the file is); the WAV's name is
    fixed by the file's id; the WAV is recorded with a conditional UPDATE, and
    a run that finds the file gone or no longer processing deletes what it
    stored. A failure fails the file and deletes everything stored for it.
    """
    file = File.objects.filter(id=file_id, state=File.State.PROCESSING).first()
    if file is None:
        return
    if file.wav_name and storage_exists(file.wav_name):
        _convert_media_enqueue(file)
        return
    with _conversion(file) as conversion:
        soft, _ = convert_wav_time_limits()
        wav = conversion.make(media.convert_to_wav, WAV_BASENAME, timeout=soft, max_seconds=_wav_max_seconds())
        duration = _wav_duration_checked(wav)
        wav_name, _ = conversion.store(wav)
        with transaction.atomic():
            # The duration and the WAV in one conditional UPDATE: no job can
            # see the WAV with the header's duration.
            recorded = File.objects.filter(id=file_id, state=File.State.PROCESSING).update(
                wav_name=wav_name, duration=duration
            )
            if recorded:
                file.wav_name, file.duration = wav_name, duration
                transaction.on_commit(lambda: file_audio_ready.send(sender=File, file_id=file_id))
                # Registered after the signal: on_commit callbacks run in
                # order, so the transcription is queued before phase two.
                # Only one shared queue makes that an order of work; with
                # queues of their own, both run at once, and neither needs
                # the other (see file_convert_media).
                _convert_media_enqueue(file)
        if not recorded:
            conversion.discard_unclaimed()


def file_convert_media(*, file_id: uuid.UUID) -> None:
    """Phase two of a conversion: the MP3 (audio) or MP4 (video) to serve; then the file is ready.

    Needs the WAV of phase one: without it (lost from storage, or a message
    older than the file's last retry) phase one is queued instead, and queues
    this phase again when it is done. Audio becomes MP3 (libmp3lame, 192 kbit/s
    CBR, 44.1 kHz), video MP4 (H.264 veryfast + AAC 192 kbit/s, faststart),
    made from the original upload. Once it is stored the file is marked ready
    with a conditional UPDATE (``file_ready``) and the original deleted once
    that commits.

    Safe to run twice, also at once: a file that is not processing is left
    alone, the MP3/MP4's name is fixed by the file's id, and only the run whose
    conditional UPDATE finds the file still processing keeps what it stored. A
    failure fails the file and deletes everything stored for it, the WAV
    included.

    Runs at the same time as the file's transcriptions (another queue, another
    worker), which read only the WAV: marking the file ready changes nothing
    for them (``file_ready`` queues their batches again if they are still
    pending: a second message, which finds nothing to claim once the first has
    run). A failure here deletes the WAV under a transcription that may be
    reading it: one that has read it completes; one that has not yet opened it
    fails, refunded, as its audio is missing; jobs still pending fail with the
    conversion's reason (``file_failed``).
    """
    file = File.objects.filter(id=file_id, state=File.State.PROCESSING).first()
    if file is None:
        return
    if not file.wav_name or not storage_exists(file.wav_name):
        file_convert_enqueue(file=file)
        return
    with _conversion(file) as conversion:
        convert = media.convert_video_to_mp4 if file.kind == File.Kind.VIDEO else media.convert_audio_to_mp3
        # file.duration is the WAV's, measured in phase one.
        soft, _ = convert_time_limits(kind=file.kind, duration=file.duration)
        output = conversion.make(convert, f"{MEDIA_BASENAME}{media.EXTENSIONS[file.kind]}", timeout=soft)
        media_name, media_size = conversion.store(output)
        with transaction.atomic():
            # Under the row lock: a deletion or another run's UPDATE waits or has happened.
            claimed = (
                File.objects.select_for_update()
                .filter(id=file_id, state=File.State.PROCESSING)
                .exclude(wav_name="")
                .first()
            )
            if claimed is not None:
                File.objects.filter(id=file_id).update(
                    state=File.State.READY,
                    media_name=media_name,
                    original_name="",
                    size_bytes=media_size,
                    error="",
                    converted_at=timezone.now(),
                )
                storage_delete_on_commit([claimed.original_name])
                transaction.on_commit(lambda: file_ready.send(sender=File, file_id=file_id))
                return
        conversion.discard_unclaimed()


class _Conversion:
    """One phase's work on a file: ffmpeg on the original upload, its output stored under the file's prefix.

    Keeps the names it stored, so that a failure or a lost claim deletes them.
    """

    def __init__(self, file: File, folder: Path) -> None:
        self.file = file
        self.folder = folder
        self.stored: list[str] = []

    def make(self, convert: Callable[..., Path], basename: str, *, timeout: float, **options: Any) -> Path:
        """Run ``convert(original, output, timeout=timeout, **options)``; the output, on this worker's disk."""
        output = self.folder / basename
        with storage_local_path(self.file.original_name) as source:
            convert(source, output, timeout=timeout, limits=media.MediaLimits.from_settings(settings), **options)
        return output

    def store(self, output: Path) -> tuple[str, int]:
        """Store ``output`` under the file's prefix, by its base name; its storage name and size."""
        size = output.stat().st_size
        prefix = object_prefix(owner_id=self.file.owner_id, file_id=self.file.id)
        name = storage_put(name=f"{prefix}/{output.name}", path=output)
        self.stored.append(name)
        return name, size

    def discard_unclaimed(self) -> None:
        """The file was deleted meanwhile, or another run got there first: keep only what the row now names."""
        _delete_unclaimed(self.file.id, self.stored)

    def fail(self, reason: str) -> None:
        file_fail(file_id=self.file.id, reason=reason)
        self.discard_unclaimed()


def _wav_duration_checked(wav: Path) -> float:
    """Seconds of sound in the WAV just made; a :class:`media.ConversionError` when it is too long or silent."""
    duration = media.wav_duration(wav)
    maximum = settings.MAX_MEDIA_DURATION_SECONDS
    if duration > maximum:
        # ffmpeg stopped at maximum + 1 s: more sound than accepted, whatever
        # the header said. Failing (rather than keeping the first hours) is
        # what the upload's check would have answered with the true duration.
        raise media.ConversionError(f"the audio is longer than the maximum of {maximum} seconds")
    if duration <= 0:
        raise media.ConversionError("nothing in the file could be converted")
    return duration


@contextmanager
def _conversion(file: File) -> Iterator[_Conversion]:
    """A phase's work on ``file`` in a scratch folder; a failure fails the file and keeps nothing it stored.

    A failure that has a reason (ffmpeg's, a missing original) ends the block
    quietly once the file records it: put all of a phase's work inside the
    block. Anything else is re-raised after the file has failed.
    """
    with tempfile.TemporaryDirectory(prefix="convert-", dir=worker_temp_dir()) as scratch:
        conversion = _Conversion(file, Path(scratch))
        try:
            yield conversion
        except FileNotFoundError:
            # Deleted meanwhile, or another run finished and removed the
            # original: then nothing changes. Otherwise the upload is lost.
            conversion.fail("Conversion failed: the uploaded file is missing from storage")
        except media.ConversionError as exc:
            conversion.fail(f"Conversion failed: {exc.message}")
        except DATABASE_CONNECTION_ERRORS:
            # Not the file's fault, and failing it needs the database: the task runs again
            # (files.tasks), over what this run stored under the same names.
            raise
        except OSError as exc:
            if exc.errno not in NO_SPACE_ERRNOS:
                conversion.fail(f"Conversion failed: {type(exc).__name__}")
                raise
            # The worker's scratch folder or the media disk is full: the file fails with a
            # reason its owner can read (and retries by uploading again).
            conversion.fail(f"Conversion failed: {INSUFFICIENT_STORAGE_MESSAGE.lower()} on the server")
        except Exception as exc:
            # Celery's SoftTimeLimitExceeded lands here too (ffmpeg is
            # already killed), as does a storage that cannot take the outputs.
            conversion.fail(f"Conversion failed: {type(exc).__name__}")
            raise


# --- Failure and recovery ----------------------------------------------------


def file_fail(*, file_id: uuid.UUID, reason: str) -> bool:
    """Mark a processing file failed with ``reason`` and delete everything stored for it.

    Returns whether this call made the change (a file already ready, failed
    or deleted is left alone). Logs a warning naming the file and its owner.
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
    context = job_log_context(file_id=file_id, user_id=file.owner_id)
    logger.warning("File failed (%s) %s", reason, context.words, extra=context.extra)
    return True


# A conversion still unfinished this many times past its time limits has
# been retried enough: the file fails instead of being queued for ever.
CONVERT_RECOVERY_ROUNDS = 3


def file_requeue_stuck(*, older_than: float, now: dt.datetime | None = None) -> int:
    """Queue again the conversions a lost worker or a lost queue left ``processing``; returns how many.

    A conversion runs in two messages (WAV, then MP3/MP4), each within its
    hard time limit. A file still processing longer than both limits
    (``convert_recovery_period``) plus ``older_than`` seconds after its upload
    has lost its worker or its message:
    the phase it is in is queued again (phase two once its WAV is recorded,
    else phase one; both are safe to run twice, even at once). After
    ``CONVERT_RECOVERY_ROUNDS`` such periods it fails with a reason, so that no
    file stays ``processing`` for ever.
    """
    now = now or timezone.now()
    count = 0
    stuck = File.objects.filter(state=File.State.PROCESSING).only(
        "id", "owner", "kind", "duration", "uploaded_at", "wav_name"
    )
    for file in stuck:
        period = dt.timedelta(seconds=convert_recovery_period(kind=file.kind, duration=file.duration) + older_than)
        age = now - file.uploaded_at
        if age <= period:
            continue
        if age > period * CONVERT_RECOVERY_ROUNDS:
            # file_fail logs the failure.
            file_fail(file_id=file.id, reason="Conversion failed: it did not finish in time")
            continue
        context = job_log_context(file_id=file.id, user_id=file.owner_id)
        phase = "MP3/MP4" if file.wav_name else "WAV"
        logger.warning(
            "Conversion unfinished after %d s: its %s phase queued again %s",
            age.total_seconds(),
            phase,
            context.words,
            extra=context.extra,
        )
        if file.wav_name:
            _convert_media_enqueue(file)
        else:
            file_convert_enqueue(file=file)
        count += 1
    return count


def _delete_unclaimed(file_id: uuid.UUID, names: list[str]) -> None:
    # Of ``names``, what a phase stored, keep only what the row now names.
    file = File.objects.filter(id=file_id).first()
    kept = set(file_storage_names(file)) if file is not None else set()
    storage_delete([name for name in names if name not in kept])
