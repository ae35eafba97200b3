"""Transcription writes: queueing jobs, claiming and charging them, inference, refunds, recovery.

A request for one file in several formats is one *batch*: one job (row) per format, one queue
message and one inference run for all of them. A job moves

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
  job's cost, and only when that UPDATE changed the row (so exactly once).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import uuid
from collections.abc import Iterable
from decimal import ROUND_CEILING, Decimal
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
from files.selectors import NOT_FOUND_MESSAGE as FILE_NOT_FOUND_MESSAGE
from files.selectors import file_get_owned, file_wav_local_path
from transcriptions import engine, formats, worker
from transcriptions.models import Transcription
from transcriptions.selectors import model_names
from whisper_site.celery import task_time_limits
from whisper_site.errors import ApplicationError
from whisper_site.identifiers import new_uuid7

logger = logging.getLogger(__name__)

Status = Transcription.Status

NOT_FOUND_OR_DENIED_MESSAGE = "Transcription not found or access denied"


# --- Prices and limits ---------------------------------------------------------------


def audio_seconds(duration: float) -> int:
    """Whole seconds billed for ``duration``: rounded up, after rounding to the millisecond.

    The millisecond rounding keeps a probe's float noise (11.0000000001 s) from costing a
    whole extra second.
    """
    return math.ceil(round(max(0.0, duration), 3))


def job_cost(*, duration: float, price_multiplier: Decimal) -> int:
    """Tokens for one job: ceil(ceil(duration) x price_multiplier), in exact decimal arithmetic."""
    cost = (Decimal(audio_seconds(duration)) * Decimal(price_multiplier)).to_integral_value(rounding=ROUND_CEILING)
    return int(cost)


def time_limits(*, duration: float) -> tuple[int, int]:
    """Celery's (soft, hard) time limits of an inference run on ``duration`` seconds of audio.

    soft = base + factor x duration, hard = soft + 60 s; both capped so that the hard limit
    stays below the broker's visibility timeout (see docs/transcription.md for the longest
    audio this allows).
    """
    return task_time_limits(
        soft=settings.TRANSCRIPTION_TIME_LIMIT_BASE_SECONDS
        + settings.TRANSCRIPTION_TIME_LIMIT_PER_AUDIO_SECOND * max(0.0, duration)
    )


def conversion_failed_message(file: File) -> str:
    """The error of jobs whose file could not be converted."""
    reason = file.error.strip()
    # The files app already writes "Conversion failed: ..." into File.error.
    prefix = "conversion failed:"
    if reason.lower().startswith(prefix):
        reason = reason[len(prefix) :].strip()
    return f"File conversion failed: {reason or 'unknown reason'}"


# --- Queueing ------------------------------------------------------------------------


def _installed_model(name: str | None) -> str:
    installed = model_names()
    name = settings.DEFAULT_MODEL if name is None else name
    if name not in installed:
        raise ApplicationError(f"Invalid model: {name}. Must be one of: {', '.join(installed)}", 400)
    return name


def _language_for_model(language: str | None, model: str) -> str:
    """The language code to transcribe in; "" to detect it (multilingual models only)."""
    multilingual = engine.is_multilingual_model(model)
    code = (language or "").strip().lower()
    if not code:
        # An English-only model has nothing to detect.
        return "" if multilingual else "en"
    try:
        engine.validate_language(code, multilingual)
    except engine.InvalidLanguage:
        if code in engine.supported_languages(True):
            raise ApplicationError(f"Invalid language: {language}. Model {model} supports only: en", 400) from None
        raise ApplicationError(f"Invalid language: {language}", 400) from None
    return code


def transcription_create(
    *,
    user: User,
    file_id: uuid.UUID,
    model: str | None,
    language: str | None,
    formats: list[str],
) -> list[Transcription]:
    """Queue one job per format of one of ``user``'s files, all served by one inference run.

    Checked in this order: the model (an installed one; ``None`` is the default model), the
    language (a Whisper code the model can use; ``None`` or empty means detect, which an
    English-only model does not need), then the file (the user's own audio or video, not
    failed). A file still converting is fine: its jobs wait for it. Asking twice for one
    format is one job.
    """
    model_name = _installed_model(model)
    language_code = _language_for_model(language, model_name)
    file = file_get_owned(user=user, file_id=file_id)
    if file is None:
        raise ApplicationError(FILE_NOT_FOUND_MESSAGE, 404)
    if file.state == File.State.FAILED:
        raise ApplicationError(conversion_failed_message(file), 400)

    batch_id = new_uuid7()
    seconds = audio_seconds(file.duration)
    with transaction.atomic():
        jobs = [
            Transcription.objects.create(
                owner=user,
                file=file,
                batch_id=batch_id,
                model=model_name,
                language=language_code,
                format=fmt,
                audio_seconds=seconds,
            )
            for fmt in dict.fromkeys(formats)
        ]
        _enqueue_on_commit({batch_id: file.duration})
    return jobs


def _enqueue_on_commit(batches: dict[uuid.UUID, float]) -> None:
    """Send one message per batch (id -> audio duration) once the transaction commits.

    Also records when, for the recovery. The message is sent whatever the file's state: a
    task that finds the file still converting leaves the jobs pending for the file_ready
    receiver, and sending unconditionally closes the gap where the conversion finishes
    between this request's check and its commit.
    """
    if not batches:
        return
    from transcriptions.tasks import transcription_run_batch_task  # tasks import this module

    Transcription.objects.filter(batch_id__in=list(batches), status=Status.PENDING).update(queued_at=timezone.now())

    def send() -> None:
        for batch_id, duration in batches.items():
            soft, hard = time_limits(duration=duration)
            try:
                transcription_run_batch_task.apply_async(
                    args=[batch_id.hex],
                    queue=settings.TRANSCRIPTION_QUEUE,
                    soft_time_limit=soft,
                    time_limit=hard,
                )
            except Exception:
                if transcription_run_batch_task.app.conf.task_always_eager:
                    raise  # eager mode ran the task here: its errors are its own
                # Broker down: the jobs stay pending and the recovery sends them again.
                logger.exception("Could not queue transcription batch %s", batch_id.hex)

    transaction.on_commit(send)


# --- Running a batch -----------------------------------------------------------------


def transcription_batch_run(*, batch_id: uuid.UUID, claim_token: str) -> None:
    """Run the jobs of one batch: claim and charge each, transcribe once, store every format.

    ``claim_token`` is the Celery task id. Safe to run twice and at once: only jobs pending
    (or processing under this same token, a redelivery after the worker died) are taken.
    While the file has no WAV yet nothing happens (the file_ready receiver queues the batch
    again); a failed conversion fails the pending jobs without charging them.
    """
    first = Transcription.objects.filter(batch_id=batch_id).select_related("file").order_by("created_at").first()
    if first is None:
        return  # every job of the batch was deleted
    file = first.file
    if file.state == File.State.PROCESSING and not file.wav_name:
        # Still converting. Only the WAV is needed: once it is stored, the jobs run even
        # while the MP3/MP4 is still being made.
        return
    if file.state == File.State.FAILED:
        _fail_pending(Transcription.objects.filter(batch_id=batch_id), conversion_failed_message(file))
        return

    claimed = _claim_and_charge(batch_id=batch_id, claim_token=claim_token, file=file)
    if not claimed:
        return
    job = claimed[0]
    try:
        result = _transcribe(file=file, model_name=job.model, language=job.language or None)
        rendered = {
            fmt: formats.render(result.segments, result.text, result.language, fmt)
            for fmt in {claimed_job.format for claimed_job in claimed}
        }
    except Exception as exc:
        reason = _failure_reason(exc, file=file, job=job)
        if reason is None:
            logger.exception("Transcription batch %s failed", batch_id.hex)
            reason = "Transcription failed: internal error"
        else:
            logger.warning("Transcription batch %s failed: %s", batch_id.hex, reason)
        transcription_batch_fail(batch_id=batch_id, claim_token=claim_token, error=reason)
        return
    _complete(batch_id=batch_id, claim_token=claim_token, rendered=rendered, language=result.language)


def _claim_and_charge(*, batch_id: uuid.UUID, claim_token: str, file: File) -> list[Transcription]:
    """Claim the batch's jobs for ``claim_token`` and charge those not charged yet.

    Returns the jobs claimed and paid for, to be transcribed.
    """
    claimed: list[Transcription] = []
    now = timezone.now()
    with transaction.atomic():
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
                _fail_and_refund(
                    job,
                    f"Transcription failed after {job.attempts} attempts: the worker stopped before it finished",
                )
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
                cost = job_cost(duration=file.duration, price_multiplier=multiplier)
                if cost > 0 and not _charge(job, cost):
                    continue
            claimed.append(job)
    return claimed


def _charge(job: Transcription, cost: int) -> bool:
    """Take ``cost`` tokens for a job just claimed, or fail it. Call inside the claim's transaction."""
    # Race: two jobs of one user claimed at once by different workers. balance_charge is
    # one conditional UPDATE of the user's row, so the balance never goes below zero.
    try:
        balance_charge(user_id=job.owner_id, amount=cost)
    except InsufficientBalance as short:
        # Nothing was taken: the job fails uncharged ("Insufficient token balance. ...").
        Transcription.objects.filter(id=job.id).update(status=Status.FAILED, error=str(short))
        return False
    Transcription.objects.filter(id=job.id).update(cost=cost)
    job.cost = cost
    return True


def _transcribe(*, file: File, model_name: str, language: str | None) -> engine.TranscriptResult:
    model = worker.model_cache().get(model_name)
    with file_wav_local_path(file) as wav_path:
        return engine.transcribe(model, wav_path, language=language, vad_filter=settings.WHISPER_VAD_FILTER)


def _failure_reason(exc: Exception, *, file: File, job: Transcription) -> str | None:
    """What a user reads for an error of the inference step; None for an unexpected one."""
    if isinstance(exc, SoftTimeLimitExceeded):
        soft, _ = time_limits(duration=file.duration)
        return f"Transcription timed out after {soft} seconds"
    if isinstance(exc, FileNotFoundError):
        return "Transcription failed: the file's audio is missing from storage"
    if isinstance(exc, engine.UnknownModel):
        return f"Transcription failed: model {job.model} is not installed"
    if isinstance(exc, engine.InvalidLanguage):
        return f"Invalid language: {job.language}"
    if isinstance(exc, av.error.FFmpegError):
        return "Transcription failed: the file's audio could not be decoded"
    if isinstance(exc, MemoryError):
        return "Transcription failed: out of memory"
    return None


def _complete(*, batch_id: uuid.UUID, claim_token: str, rendered: dict[str, Any], language: str) -> int:
    now = timezone.now()
    # A job deleted meanwhile, or taken over by the recovery, is not touched: each UPDATE
    # names the state and the claim.
    jobs = Transcription.objects.filter(batch_id=batch_id, status=Status.PROCESSING, claim_token=claim_token)
    with transaction.atomic():
        return sum(
            jobs.filter(format=fmt).update(
                status=Status.COMPLETED, data=data, detected_language=language, processed_at=now, error=""
            )
            for fmt, data in rendered.items()
        )


def transcription_batch_fail(*, batch_id: uuid.UUID, claim_token: str, error: str) -> int:
    """Fail the batch's jobs held by ``claim_token`` with ``error`` and refund their charges.

    Returns how many jobs this call failed.
    """
    with transaction.atomic():
        jobs = Transcription.objects.filter(batch_id=batch_id, status=Status.PROCESSING, claim_token=claim_token)
        return sum(_fail_and_refund(job, error) for job in jobs)


def _fail_and_refund(job: Transcription, error: str) -> bool:
    """Move ``job`` from the state it was read in to failed, refunding its charge. Inside a transaction.

    The UPDATE names the job's state, token and cost as read and zeroes the cost, and the
    refund only follows when it changed the row: of any number of callers, one refunds.
    """
    failed = Transcription.objects.filter(
        id=job.id, status=job.status, claim_token=job.claim_token, cost=job.cost
    ).update(status=Status.FAILED, error=error, cost=0)
    if failed:
        balance_refund(user_id=job.owner_id, amount=job.cost)
    return bool(failed)


def _fail_pending(jobs: Iterable[Transcription], error: str) -> int:
    with transaction.atomic():
        return sum(_fail_and_refund(job, error) for job in jobs if job.status == Status.PENDING)


# --- Files finishing conversion --------------------------------------------------------


def transcription_file_ready(*, file_id: uuid.UUID) -> None:
    """Queue the batches waiting for ``file_id``'s conversion (receiver of files' file_ready)."""
    pending = Transcription.objects.filter(file_id=file_id, status=Status.PENDING)
    batches = {batch_id: duration for batch_id, duration in pending.values_list("batch_id", "file__duration")}
    with transaction.atomic():
        _enqueue_on_commit(batches)


def transcription_file_failed(*, file_id: uuid.UUID) -> None:
    """Fail the jobs waiting for ``file_id``, whose conversion failed (receiver of file_failed)."""
    file = File.objects.filter(id=file_id).first()
    if file is None:
        return
    _fail_pending(Transcription.objects.filter(file_id=file_id, status=Status.PENDING), conversion_failed_message(file))


# --- Deleting ------------------------------------------------------------------------


def transcription_delete(*, user: User, transcription_id: uuid.UUID) -> Transcription:
    """Delete one of ``user``'s jobs, whatever its state; returns the deleted job.

    A pending job is never run nor charged: its message finds nothing to claim. A job being
    processed is deleted too; its worker's result is dropped, and its charge is not refunded
    (the work was done or is under way).
    """
    job = Transcription.objects.filter(id=transcription_id, owner=user).first()
    if job is None:
        raise ApplicationError(NOT_FOUND_OR_DENIED_MESSAGE, 404)
    Transcription.objects.filter(id=job.id).delete()
    return job


# --- Recovery ------------------------------------------------------------------------


def transcription_requeue_stuck(*, older_than: float, now: dt.datetime | None = None) -> int:
    """Queue again the jobs a lost worker or a lost queue left behind; returns how many.

    The database is the source of truth, and the queue is only told again:

    * a job ``processing`` for longer than its hard time limit plus ``older_than`` seconds
      has lost its worker (a live one would have been stopped by the limit): it goes back
      to pending, keeping its charge, and its claim token is void, so the old worker, were
      it still there, could not complete it;
    * a job ``pending`` whose last message was sent more than ``older_than`` seconds ago is
      sent again (a restarted Redis lost it, or sending failed). A message that was only
      slow is harmless: whichever message comes first claims the job, the other finds
      nothing to do. Jobs of a file whose WAV is not stored yet wait for file_ready; those
      of a file whose conversion failed fail.

    Safe to run from several workers at once: each change is a conditional UPDATE.
    """
    now = now or timezone.now()
    cutoff = now - dt.timedelta(seconds=older_than)
    batches: dict[uuid.UUID, float] = {}
    count = 0

    stale = Transcription.objects.filter(status=Status.PROCESSING, started_at__lt=cutoff).select_related("file")
    for job in stale:
        _, hard = time_limits(duration=job.file.duration)
        if job.started_at is None or job.started_at > cutoff - dt.timedelta(seconds=hard):
            continue
        released = Transcription.objects.filter(
            id=job.id, status=Status.PROCESSING, claim_token=job.claim_token
        ).update(status=Status.PENDING, claim_token="", queued_at=now)
        if released:
            logger.warning("Transcription %s lost its worker (task %s): queued again", job.id.hex, job.claim_token)
            batches[job.batch_id] = job.file.duration
            count += 1

    waiting = (
        Transcription.objects.filter(status=Status.PENDING)
        .filter(Q(queued_at__lt=cutoff) | Q(queued_at__isnull=True))
        .select_related("file")
    )
    for job in waiting:
        if job.file.state == File.State.FAILED:
            _fail_pending([job], conversion_failed_message(job.file))
        elif job.file.wav_name:
            batches.setdefault(job.batch_id, job.file.duration)
            count += 1
    with transaction.atomic():
        _enqueue_on_commit(batches)
    return count


def transcription_requeue(*, transcription_ids: list[uuid.UUID]) -> int:
    """Queue the given jobs again (operators' action); returns how many were queued.

    Failed jobs start over (pending, no error, attempts reset; their charge was refunded, so
    they are charged again when they run). Jobs pending or processing are treated as stuck:
    processing ones lose their worker's claim (and keep their charge). Completed jobs are
    left alone.
    """
    count = 0
    batches: dict[uuid.UUID, float] = {}
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
                batches[job.batch_id] = job.file.duration
                count += 1
        _enqueue_on_commit(batches)
    return count
