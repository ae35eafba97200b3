"""Celery tasks of transcriptions: thin wrappers around services."""

from __future__ import annotations

import uuid
from typing import Any

from celery import Task, shared_task
from django.conf import settings

from files.services import file_requeue_stuck
from transcriptions import services
from whisper_site.celery import DATABASE_RETRY

# The options of the three tasks that hold work (batch, unit, speakers), explained below.
RETAKEN_BY_ID: dict[str, Any] = {
    "bind": True,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "ignore_result": True,
    **DATABASE_RETRY,
}


# acks_late + reject_on_worker_lost: a message is only acknowledged once the batch is
# finished, and a pool process killed mid-run (SIGKILL, out of memory) puts the message back
# at once, so the batch is retaken by the same task id (see services: claims). Safe because
# running a batch twice is harmless. The time limits are set per message from the audio's
# duration (services.time_limits). A database connection lost mid-run sends the task again
# under the same id (DATABASE_RETRY), which retakes what it held in the same way.
@shared_task(
    name="transcriptions.run_batch",
    **RETAKEN_BY_ID,
)
def transcription_run_batch_task(self: Task, batch_id: str) -> None:
    """Transcribe one batch (all formats of one request) under this task's id as claim token."""
    services.transcription_batch_run(batch_id=uuid.UUID(batch_id), claim_token=self.request.id)


# "There is work": claims the next unit of a long batch in the fair order, whatever batch it
# belongs to (services.units). acks_late + reject_on_worker_lost as above: a redelivery
# keeps the task id, and so retakes the unit its killed worker held; so does a retry after
# a lost database connection.
@shared_task(
    name="transcriptions.run_unit",
    **RETAKEN_BY_ID,
)
def transcription_run_unit_task(self: Task) -> None:
    """Decode the next unit in the fair order under this task's id as claim token."""
    services.transcription_unit_run_next(claim_token=self.request.id)


# The speaker turns of one diarized batch's file (services.units, "Speakers"): its own
# message, timed for the whole file. acks_late + reject_on_worker_lost and DATABASE_RETRY
# as above: the same task id retakes the speakers unit it held.
@shared_task(
    name="transcriptions.run_speakers",
    **RETAKEN_BY_ID,
)
def transcription_speakers_task(self: Task, unit_id: str) -> None:
    """Find the speakers of one batch's file under this task's id as claim token."""
    services.transcription_speakers_run(unit_id=uuid.UUID(unit_id), claim_token=self.request.id)


# Sent by Celery beat (settings.CELERY_BEAT_SCHEDULE). Acknowledged on receipt: a lost run
# is simply replaced by the next one.
@shared_task(name="transcriptions.requeue_stuck", ignore_result=True)
def transcription_requeue_stuck_task(older_than: float | None = None) -> int:
    """Queue again the jobs left behind by a lost worker or a lost queue."""
    if older_than is None:
        older_than = settings.TRANSCRIPTION_RECOVERY_AFTER_SECONDS
    # Conversions first: jobs wait for their file's WAV.
    file_requeue_stuck(older_than=older_than)
    return services.transcription_requeue_stuck(older_than=older_than)
