"""Running a batch: claiming and charging its jobs, completing or failing them.

Which batch a worker runs, and how its audio is cut and decoded, is :mod:`.units`' (the
fair order, units of scheduling); this module holds the jobs' side of it.

A job moves

    pending -> processing -> completed | failed

and every move is a conditional UPDATE that names the state it leaves, so that two workers
(a redelivered message, a recovery run, an operator's re-queue) can never both make it:

* claiming: ``pending -> processing`` records the Celery task id as ``claim_token``; a job
  already ``processing`` under the same token may be taken again by a redelivery of that very
  task (its worker was killed), never one under another token;
* charging happens in the claim's transaction, through accounts' ``balance_charge`` (an
  UPDATE that only succeeds while the balance covers the cost; the CHECK constraint
  ``token_balance >= 0`` is the backstop);
* completing and failing only touch jobs still ``processing`` under the caller's token, and a
  failure refunds (``balance_refund``) in the same transaction as the UPDATE that zeroes the
  job's cost, and only when that UPDATE changed the row (so exactly once);
* each job completed or failed records its webhook event (``webhook_event_emit``) in the
  transaction of the UPDATE that made the change, so once, and only if it commits.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

import av
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from accounts.models import User
from accounts.services import InsufficientBalance, balance_charge, balance_refund
from files.models import File
from files.selectors import file_wav_local_path
from transcriptions import engine, worker
from transcriptions.models import Transcription
from transcriptions.services.jobs import conversion_failed_message
from transcriptions.services.prices import audio_seconds, job_cost, time_limits
from webhooks.services import TRANSCRIPTION_COMPLETED, TRANSCRIPTION_FAILED, webhook_event_emit

logger = logging.getLogger(__name__)

Status = Transcription.Status
# The formats whose cues are cut from word timestamps.
SUBTITLES = frozenset({Transcription.Format.SRT, Transcription.Format.VTT})


def transcription_batch_run(*, batch_id: uuid.UUID, claim_token: str) -> None:
    """A batch's message: the next work in the fair order, for ``claim_token`` (the Celery task id).

    A message says that there is work, not whose: this batch's jobs are claimed when they
    are next in the fair order, by this message or another (:mod:`.units`), so that a short
    job never waits behind everything queued before it. While the batch's file has no WAV
    nothing is run for it (the file_audio_ready receiver queues the batch again); a failed
    conversion fails its pending jobs without charging them.
    """
    first = Transcription.objects.filter(batch_id=batch_id).select_related("file").order_by("created_at").first()
    if first is not None and first.file.state == File.State.FAILED:
        transcription_pending_fail(
            jobs=Transcription.objects.filter(batch_id=batch_id), error=conversion_failed_message(first.file)
        )
    from transcriptions.services import units  # units imports this module

    units.transcription_unit_run_next(claim_token=claim_token)


def claim_and_charge(*, batch_id: uuid.UUID, claim_token: str, file: File) -> list[Transcription]:
    """Claim the batch's jobs for ``claim_token`` and charge those not charged yet.

    Pending jobs are claimed, and jobs processing under ``claim_token`` itself (a
    redelivery of the task whose worker was killed) are taken again, counting the attempt.
    Returns the jobs claimed and paid for, to be transcribed. ``file.duration`` and
    ``file.wav_name`` are read again from the database here, in the claim's transaction,
    and ``file`` is updated with them: the cost is computed from the duration recorded with
    the WAV (the conversion writes both in one UPDATE), never from a value read before the
    WAV was there. Nothing is claimed when the file has no WAV (any more).
    """
    claimed: list[Transcription] = []
    now = timezone.now()
    with transaction.atomic():
        current = File.objects.filter(id=file.id).values("duration", "wav_name").first()
        if current is None or not current["wav_name"]:
            # Deleted, failed, or retried after a failure since the caller's read: the
            # file_failed / file_audio_ready receivers take it from here.
            return []
        # Once the WAV is recorded the duration no longer changes (only a failure, which
        # clears the WAV, and a retry reset it): no lock on the file is needed.
        file.duration, file.wav_name = current["duration"], current["wav_name"]
        candidates = list(
            Transcription.objects.filter(batch_id=batch_id)
            .filter(Q(status=Status.PENDING) | Q(status=Status.PROCESSING, claim_token=claim_token))
            .order_by("created_at", "id")
        )
        multiplier: Decimal | None = None
        for job in candidates:
            if job.attempts >= settings.TRANSCRIPTION_MAX_ATTEMPTS:
                # Its worker died (killed, out of memory, hard time limit) this many times
                # already: the next try would most likely end the same way.
                _fail_and_refund(job, lost_worker_message(job.attempts))
                continue
            # The claim. It names the state read above: a job deleted or claimed by another
            # task since then is left alone.
            taken = Transcription.objects.filter(id=job.id, status=job.status, claim_token=job.claim_token).update(
                status=Status.PROCESSING,
                claim_token=claim_token,
                started_at=now,
                attempts=F("attempts") + 1,
                error="",
            )
            if not taken:
                continue
            job.status, job.claim_token, job.started_at = Status.PROCESSING, claim_token, now
            job.attempts += 1
            if job.cost == 0:
                # Not charged yet (a job retaken after its worker died keeps its charge).
                if multiplier is None:
                    multiplier = User.objects.values_list("price_multiplier", flat=True).get(pk=job.owner_id)
                cost = job_cost(duration=file.duration, price_multiplier=multiplier, diarize=job.diarize)
                if cost > 0 and not _charge(job, cost):
                    continue
                # What was billed, for the statistics: the measured seconds.
                job.audio_seconds = audio_seconds(file.duration)
                Transcription.objects.filter(id=job.id).update(audio_seconds=job.audio_seconds)
            claimed.append(job)
    for job in claimed:
        context = job.log_context()
        logger.info(
            "Transcription started: attempt %d, %d tokens charged %s",
            job.attempts,
            job.cost,
            context.words,
            extra=context.extra,
        )
    return claimed


def lost_worker_message(attempts: int) -> str:
    """The error of a job (or a unit's batch) whose worker died ``attempts`` times."""
    return f"Transcription failed after {attempts} attempts: the worker stopped before it finished"


def _charge(job: Transcription, cost: int) -> bool:
    """Take ``cost`` tokens for a job just claimed, or fail it. Call inside the claim's transaction."""
    # Race: two jobs of one user claimed at once by different workers. balance_charge is
    # one conditional UPDATE of the user's row, so the balance never goes below zero.
    try:
        balance_charge(user_id=job.owner_id, amount=cost)
    except InsufficientBalance as short:
        # Nothing was taken: the job fails uncharged ("Insufficient token balance. ...").
        Transcription.objects.filter(id=job.id).update(status=Status.FAILED, error=str(short))
        _log_failure_on_commit(job, str(short))
        webhook_event_emit(job=job, event_type=TRANSCRIPTION_FAILED)
        return False
    Transcription.objects.filter(id=job.id).update(cost=cost)
    job.cost = cost
    return True


def transcribe_file(
    *,
    file: File,
    job: Transcription,
    word_timestamps: bool,
    on_progress: Callable[[float], None] | None = None,
) -> engine.TranscriptResult:
    """One inference run with the options of ``job``'s batch (every job of a batch has the same)."""
    model = worker.model_cache().get(job.model)
    with file_wav_local_path(file) as wav_path:
        return engine.transcribe(
            model,
            wav_path,
            language=job.language or None,
            vad_filter=settings.WHISPER_VAD_FILTER if job.vad_filter is None else job.vad_filter,
            word_timestamps=word_timestamps,
            prompt=job.prompt,
            task=job.task,
            temperature=job.temperature,
            on_progress=on_progress,
        )


def failure_reason(exc: Exception, *, file: File, job: Transcription, duration: float) -> str | None:
    """What a user reads for an error of the inference step; None for an unexpected one.

    ``duration``: the seconds of audio the message was timed for (the file, or a unit).
    """
    if isinstance(exc, SoftTimeLimitExceeded):
        soft, _ = time_limits(duration=duration)
        return f"Transcription timed out after {soft} seconds"
    if isinstance(exc, FileNotFoundError):
        return "Transcription failed: the file's audio is missing from storage"
    if isinstance(exc, engine.UnknownModel):
        return f"Transcription failed: model {job.model} is not installed"
    if isinstance(exc, engine.InvalidLanguage):
        return f"Invalid language: {job.language}"
    if isinstance(exc, engine.InvalidTask):
        return f"Invalid task: {job.task}. Model {job.model} is English-only"
    if isinstance(exc, av.error.FFmpegError):
        return "Transcription failed: the file's audio could not be decoded"
    if isinstance(exc, MemoryError):
        return "Transcription failed: out of memory"
    return None


def transcription_batch_complete(
    *, batch_id: uuid.UUID, claim_token: str, rendered: dict[str, Any], language: str
) -> int:
    """Store each job's result (format -> rendered) held by ``claim_token``; returns how many this call completed."""
    now = timezone.now()
    completed: list[Transcription] = []
    with transaction.atomic():
        for job in Transcription.objects.filter(batch_id=batch_id, status=Status.PROCESSING, claim_token=claim_token):
            if job.format not in rendered:
                continue
            # A job deleted meanwhile, or taken over by the recovery, is not touched: the
            # UPDATE names the state and the claim.
            done = Transcription.objects.filter(id=job.id, status=Status.PROCESSING, claim_token=claim_token).update(
                status=Status.COMPLETED,
                progress=1.0,
                data=rendered[job.format],
                detected_language=language,
                processed_at=now,
                error="",
            )
            if done:
                completed.append(job)
                webhook_event_emit(job=job, event_type=TRANSCRIPTION_COMPLETED)
    for job in completed:
        context = job.log_context()
        logger.info("Transcription completed %s", context.words, extra=context.extra)
    return len(completed)


def transcription_batch_fail(*, batch_id: uuid.UUID, claim_token: str, error: str) -> int:
    """Fail the batch's jobs held by ``claim_token`` with ``error`` and refund their charges.

    Returns how many jobs this call failed.
    """
    with transaction.atomic():
        jobs = Transcription.objects.filter(batch_id=batch_id, status=Status.PROCESSING, claim_token=claim_token)
        return sum(_fail_and_refund(job, error) for job in jobs)


def refund_and_emit(*, job: Transcription, event_type: str) -> None:
    """After a job's conditional move to failed or cancelled (which zeroed its cost): give its charge back and record the event.

    Inside the transaction of that move: the refund and the event happen once, with it.
    """
    if job.cost:
        balance_refund(user_id=job.owner_id, amount=job.cost)
    webhook_event_emit(job=job, event_type=event_type)


def _fail_and_refund(job: Transcription, error: str) -> bool:
    """Move ``job`` from the state it was read in to failed, refunding its charge. Inside a transaction.

    The UPDATE names the job's state, token and cost as read and zeroes the cost, and the
    refund only follows when it changed the row: of any number of callers, one refunds.
    """
    failed = Transcription.objects.filter(
        id=job.id, status=job.status, claim_token=job.claim_token, cost=job.cost
    ).update(status=Status.FAILED, error=error, cost=0)
    if failed:
        _log_failure_on_commit(job, error)
        refund_and_emit(job=job, event_type=TRANSCRIPTION_FAILED)
    return bool(failed)


def _log_failure_on_commit(job: Transcription, error: str) -> None:
    """A WARNING with the reason, once the job's failure is committed (a rolled-back one never happened)."""
    context = job.log_context()
    transaction.on_commit(
        lambda: logger.warning("Transcription failed: %s %s", error, context.words, extra=context.extra)
    )


def transcription_pending_fail(*, jobs: Iterable[Transcription], error: str) -> int:
    """Fail the ``jobs`` still pending with ``error``; none of them was charged. Returns how many."""
    with transaction.atomic():
        return sum(_fail_and_refund(job, error) for job in jobs if job.status == Status.PENDING)


# --- Files whose conversion failed -----------------------------------------------------


def transcription_file_failed(*, file_id: uuid.UUID) -> None:
    """Fail the jobs waiting for ``file_id``, whose conversion failed (receiver of file_failed)."""
    file = File.objects.filter(id=file_id).first()
    if file is None:
        return
    transcription_pending_fail(
        jobs=Transcription.objects.filter(file_id=file_id, status=Status.PENDING), error=conversion_failed_message(file)
    )
