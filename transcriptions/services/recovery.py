"""Recovery: queueing again the jobs a lost worker or a lost queue left behind, and operators' re-queues."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from files.models import File
from transcriptions.models import Transcription
from transcriptions.services.jobs import conversion_failed_message, transcription_batches_enqueue
from transcriptions.services.prices import time_limits
from transcriptions.services.runs import transcription_pending_fail
from transcriptions.services.units import transcription_unit_batches, transcription_units_requeue_stuck

logger = logging.getLogger(__name__)

Status = Transcription.Status


def transcription_requeue_stuck(*, older_than: float, now: dt.datetime | None = None) -> int:
    """Queue again the jobs a lost worker or a lost queue left behind; returns how many.

    The database is the source of truth, and the queue is only told again:

    * a job ``processing`` for longer than its hard time limit plus ``older_than`` seconds
      has lost its worker (a live one would have been stopped by the limit): it goes back
      to pending, keeping its charge, and its claim token is void, so the old worker, were
      it still there, could not complete it;
    * the units of long batches likewise (:func:`.units.transcription_units_requeue_stuck`):
      a lost worker loses only the units it held;
    * a job ``pending`` whose last message was sent more than ``older_than`` seconds ago is
      sent again (a restarted Redis lost it, or sending failed). A message that was only
      slow is harmless: whichever message comes first claims the job, the other finds
      nothing to do. Jobs of a file whose WAV is not stored yet wait for file_ready; those
      of a file whose conversion failed fail.

    Safe to run from several workers at once: each change is a conditional UPDATE.
    """
    now = now or timezone.now()
    cutoff = now - dt.timedelta(seconds=older_than)
    batches: dict[uuid.UUID, Transcription] = {}
    count = 0

    # A batch cut into units is watched unit by unit (its jobs may wait long for their turn
    # while their units are in flight): transcription_units_requeue_stuck below.
    stale = (
        Transcription.objects.filter(status=Status.PROCESSING, started_at__lt=cutoff)
        .exclude(batch_id__in=transcription_unit_batches())
        .select_related("file")
    )
    for job in stale:
        _, hard = time_limits(duration=job.file.duration)
        if job.started_at is None or job.started_at > cutoff - dt.timedelta(seconds=hard):
            continue
        released = Transcription.objects.filter(
            id=job.id, status=Status.PROCESSING, claim_token=job.claim_token
        ).update(status=Status.PENDING, claim_token="", queued_at=now)
        if released:
            context = job.log_context()
            logger.warning(
                "Transcription lost its worker (task %s): queued again %s",
                job.claim_token,
                context.words,
                extra=context.extra,
            )
            batches[job.batch_id] = job
            count += 1

    waiting = (
        Transcription.objects.filter(status=Status.PENDING)
        .filter(Q(queued_at__lt=cutoff) | Q(queued_at__isnull=True))
        .select_related("file")
    )
    for job in waiting:
        if job.file.state == File.State.FAILED:
            transcription_pending_fail(jobs=[job], error=conversion_failed_message(job.file))
        elif job.file.wav_name:
            context = job.log_context()
            logger.info(
                "Transcription queued again: its last message is over %d s old %s",
                older_than,
                context.words,
                extra=context.extra,
            )
            batches.setdefault(job.batch_id, job)
            count += 1
    with transaction.atomic():
        transcription_batches_enqueue(batches=batches)
    # Units are counted in their own log lines, not as jobs.
    transcription_units_requeue_stuck(older_than=older_than, now=now)
    return count


def transcription_requeue(*, transcription_ids: list[uuid.UUID]) -> int:
    """Queue the given jobs again (operators' action); returns how many were queued.

    Failed jobs start over (pending, no error, attempts reset; their charge was refunded, so
    they are charged again when they run). Jobs pending or processing are treated as stuck:
    processing ones lose their worker's claim (and keep their charge). Completed jobs are
    left alone.
    """
    count = 0
    batches: dict[uuid.UUID, Transcription] = {}
    with transaction.atomic():
        jobs = Transcription.objects.filter(id__in=transcription_ids).exclude(status=Status.COMPLETED)
        for job in jobs.select_related("file"):
            changes: dict[str, Any] = {"status": Status.PENDING, "claim_token": ""}
            if job.status == Status.FAILED:
                changes.update(error="", attempts=0, cost=0)
            moved = Transcription.objects.filter(id=job.id, status=job.status, claim_token=job.claim_token).update(
                **changes
            )
            if moved:
                context = job.log_context()
                logger.info(
                    "Transcription re-queued by an operator (was %s) %s", job.status, context.words, extra=context.extra
                )
                batches[job.batch_id] = job
                count += 1
        transcription_batches_enqueue(batches=batches)
    return count
