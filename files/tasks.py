"""Celery tasks of files: thin, idempotent wrappers around services.

A conversion is two tasks, each queued by the services once the transaction
before it commits: ``files.convert_audio`` (the WAV, which transcription
needs) and then ``files.convert_media`` (the MP3/MP4). Both are safe to run
twice, hence ``acks_late``; their time limits come per message from the
enqueuer (``services.convert_time_limits``). A database connection lost mid-run sends
the task again (``DATABASE_RETRY``).
"""

from __future__ import annotations

import uuid

from celery import shared_task

from files import services
from whisper_site.celery import DATABASE_RETRY


@shared_task(name="files.convert_audio", acks_late=True, ignore_result=True, **DATABASE_RETRY)
def file_convert_audio_task(file_id: str) -> None:
    """Conversion, phase one: store the WAV and announce it, then queue phase two."""
    services.file_convert_audio(file_id=uuid.UUID(file_id))


@shared_task(name="files.convert_media", acks_late=True, ignore_result=True, **DATABASE_RETRY)
def file_convert_media_task(file_id: str) -> None:
    """Conversion, phase two: store the MP3/MP4 and mark the file ready."""
    services.file_convert_media(file_id=uuid.UUID(file_id))


# Kept for one release, then removed: the conversion used to be this one task,
# which queued itself again for its second half. Messages of that name can
# still wait in the broker (Redis keeps them) when workers are upgraded, and a
# worker drops a message whose task it does not know: the file would then wait
# for recovery. Such a message goes to phase one, which makes the WAV or, when
# the WAV is already recorded (the old task's second run), queues phase two.
@shared_task(name="files.tasks.file_convert_task", acks_late=True, ignore_result=True, **DATABASE_RETRY)
def file_convert_task(file_id: str) -> None:
    """The former one-task conversion's name: runs phase one (``file_convert_audio_task``)."""
    services.file_convert_audio(file_id=uuid.UUID(file_id))
