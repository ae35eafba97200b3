"""Creating and deleting jobs, and sending their batches to the queue.

A request for one file in several formats is one *batch*: one job (row) per format, one queue
message and one inference run for all of them (see :mod:`.runs`).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import User
from files.models import File
from files.selectors import NOT_FOUND_MESSAGE as FILE_NOT_FOUND_MESSAGE
from files.selectors import file_get_owned
from transcriptions import engine
from transcriptions.models import Transcription
from transcriptions.selectors import model_names
from transcriptions.services.prices import audio_seconds, time_limits
from webhooks.services import TRANSCRIPTION_CANCELLED
from whisper_site.errors import ApplicationError
from whisper_site.identifiers import new_uuid7

logger = logging.getLogger(__name__)

Status = Transcription.Status

NOT_FOUND_OR_DENIED_MESSAGE = "Transcription not found or access denied"
# The longest prompt taken: Whisper keeps at most 223 prompt tokens (half its context) anyway.
PROMPT_MAX_CHARS = 1000
MIN_SPEAKERS = 1
SPEAKERS_WITHOUT_DIARIZE_MESSAGE = "Invalid speakers: only with diarize: true"


def speakers_range_message(value: object) -> str:
    """The 400 of a ``speakers`` outside 1-20 (or not a whole number)."""
    return f"Invalid speakers: {value}. Must be from {MIN_SPEAKERS} to {engine.MAX_SPEAKERS}"


@dataclass(frozen=True, slots=True)
class TranscriptOptions:
    """How a request wants its audio transcribed; the same for every job of its batch."""

    word_timestamps: bool = False
    prompt: str = ""
    task: str = Transcription.Task.TRANSCRIBE
    # None: settings.WHISPER_VAD_FILTER.
    vad_filter: bool | None = None
    # None: faster-whisper's fallback schedule from 0.0; t: the schedule from t (OpenAI's meaning).
    temperature: float | None = None
    # Segments and words say which speaker said them; ``speakers``: how many (None: found).
    diarize: bool = False
    speakers: int | None = None


def pending_quota_message() -> str:
    """The 429 of ``POST /transcribe`` for a user at ``USER_PENDING_JOB_QUOTA``."""
    return f"Too many pending transcriptions: at most {settings.USER_PENDING_JOB_QUOTA} per user"


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


def _task_for_model(task: str, model: str) -> str:
    if task not in Transcription.Task.values:
        raise ApplicationError(f"Invalid task: {task}. Must be one of: {', '.join(Transcription.Task.values)}", 400)
    if task == Transcription.Task.TRANSLATE and not engine.is_multilingual_model(model):
        raise ApplicationError(f"Invalid task: {task}. Model {model} is English-only", 400)
    return task


def transcription_request_check(
    *, model: str | None, language: str | None, options: TranscriptOptions
) -> tuple[str, str, str]:
    """The checks of a request that need no file, in order: the model, the language, the task, the prompt, speakers.

    Returns the model's name (``None``: the default model), the language code to use
    ("" to detect) and the task; raises :class:`ApplicationError` (a 400) otherwise.
    """
    model_name = _installed_model(model)
    language_code = _language_for_model(language, model_name)
    task = _task_for_model(options.task, model_name)
    if len(options.prompt) > PROMPT_MAX_CHARS:
        raise ApplicationError(f"Invalid prompt: at most {PROMPT_MAX_CHARS} characters", 400)
    if options.speakers is not None:
        if not MIN_SPEAKERS <= options.speakers <= engine.MAX_SPEAKERS:
            raise ApplicationError(speakers_range_message(options.speakers), 400)
        if not options.diarize:
            raise ApplicationError(SPEAKERS_WITHOUT_DIARIZE_MESSAGE, 400)
    return model_name, language_code, task


def transcription_create(
    *,
    user: User,
    file_id: uuid.UUID,
    model: str | None,
    language: str | None,
    formats: list[str],
    options: TranscriptOptions | None = None,
) -> list[Transcription]:
    """Queue one job per format of one of ``user``'s files, all served by one inference run.

    Checked in this order: the model (an installed one; ``None`` is the default model), the
    language (a Whisper code the model can use; ``None`` or empty means detect, which an
    English-only model does not need), then the task (``translate`` needs a multilingual
    model), the prompt, ``speakers`` (1-20, only with ``diarize``), then the file (the user's own audio or video, not
    failed), then ``USER_PENDING_JOB_QUOTA``: the user's jobs pending or processing, with
    the new ones, must stay within it (else 429, no job created). A file still converting
    is fine: its jobs wait for it. Asking twice for one format is one job.
    """
    options = options or TranscriptOptions()
    model_name, language_code, task = transcription_request_check(model=model, language=language, options=options)
    file = file_get_owned(user=user, file_id=file_id)
    if file is None:
        raise ApplicationError(FILE_NOT_FOUND_MESSAGE, 404)
    if file.state == File.State.FAILED:
        raise ApplicationError(conversion_failed_message(file), 400)

    batch_id = new_uuid7()
    # The upload's duration until the WAV is measured; the claim records what it bills.
    seconds = audio_seconds(file.duration)
    wanted = list(dict.fromkeys(formats))
    with transaction.atomic():
        # Race: two requests of one user at once near the quota, each counting before the
        # other's jobs exist. The lock on the user's row makes the second count after the
        # first commits (SQLite serialises writers with BEGIN IMMEDIATE anyway).
        type(user).objects.select_for_update().only("pk").get(pk=user.pk)
        active = Transcription.objects.filter(owner=user, status__in=[Status.PENDING, Status.PROCESSING]).count()
        if active + len(wanted) > settings.USER_PENDING_JOB_QUOTA:
            raise ApplicationError(pending_quota_message(), 429)
        jobs = [
            Transcription.objects.create(
                owner=user,
                file=file,
                batch_id=batch_id,
                model=model_name,
                language=language_code,
                format=fmt,
                task=task,
                word_timestamps=options.word_timestamps,
                prompt=options.prompt,
                vad_filter=options.vad_filter,
                temperature=options.temperature,
                diarize=options.diarize,
                speakers=options.speakers,
                audio_seconds=seconds,
            )
            for fmt in wanted
        ]
        transcription_batches_enqueue(batches={batch_id: jobs[0]})
    for job in jobs:
        context = job.log_context()
        logger.info("Transcription created: %s with %s %s", job.format, job.model, context.words, extra=context.extra)
    return jobs


def transcription_batches_enqueue(*, batches: dict[uuid.UUID, Transcription]) -> None:
    """Send one message per batch (its id -> one of its jobs) once the transaction commits.

    Also records when, for the recovery. The file is read again after the commit: a batch
    whose file has no WAV yet gets no message, because its duration is still the upload
    header's claim, from which the message's time limits would be computed, and the
    conversion's ``file_audio_ready`` will queue it with the measured one. No batch is
    missed: if this read sees no WAV, the conversion records it after this commit, and
    its receiver, running after its own commit, sees these jobs.
    """
    if not batches:
        return
    from transcriptions.tasks import transcription_run_batch_task  # tasks import this module

    Transcription.objects.filter(batch_id__in=list(batches), status=Status.PENDING).update(queued_at=timezone.now())

    def send() -> None:
        file_ids = {job.file_id for job in batches.values()}
        files = {
            file.id: file for file in File.objects.filter(id__in=file_ids).only("id", "state", "duration", "wav_name")
        }
        for batch_id, job in batches.items():
            file = files.get(job.file_id)
            if file is None:
                continue  # deleted with its jobs
            if file.state == File.State.PROCESSING and not file.wav_name:
                continue  # file_audio_ready queues it
            soft, hard = time_limits(duration=file.duration)
            context = job.batch_log_context()
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
                logger.exception("Transcription batch could not be queued %s", context.words, extra=context.extra)
                continue
            logger.info(
                "Transcription batch queued on %s %s", settings.TRANSCRIPTION_QUEUE, context.words, extra=context.extra
            )

    transaction.on_commit(send)


def transcription_file_ready(*, file_id: uuid.UUID) -> None:
    """Queue the batches waiting for ``file_id``'s conversion (receiver of files' file_ready)."""
    batches: dict[uuid.UUID, Transcription] = {}
    for job in Transcription.objects.filter(file_id=file_id, status=Status.PENDING):
        batches.setdefault(job.batch_id, job)
    with transaction.atomic():
        transcription_batches_enqueue(batches=batches)


# --- Cancelling ----------------------------------------------------------------------

ALREADY_FINISHED_MESSAGE = "Transcription already finished"


def transcription_cancel(*, user: User, transcription_id: uuid.UUID) -> Transcription:
    """Cancel one of ``user``'s jobs that is pending or processing; returns it, cancelled.

    A pending job is never run nor charged. A processing job is refunded in full in the
    transaction of its move to ``cancelled``; the worker decoding its batch sees within
    ``TRANSCRIPTION_PROGRESS_INTERVAL_SECONDS`` that no job of the batch is processing any
    more and stops (another format of the same request goes on). The move is a conditional
    UPDATE naming the state read: if the worker completed or failed the job meanwhile, that
    wins and this is a 409, as for a job already finished; another user's job is a 404.
    """
    from transcriptions.services.runs import refund_and_emit  # runs imports this module

    for _ in range(3):
        job = Transcription.objects.filter(id=transcription_id, owner=user).first()
        if job is None:
            raise ApplicationError(NOT_FOUND_OR_DENIED_MESSAGE, 404)
        if job.is_finished:
            raise ApplicationError(ALREADY_FINISHED_MESSAGE, 409)
        with transaction.atomic():
            moved = Transcription.objects.filter(
                id=job.id, status=job.status, claim_token=job.claim_token, cost=job.cost
            ).update(status=Status.CANCELLED, cost=0)
            if moved:
                refund_and_emit(job=job, event_type=TRANSCRIPTION_CANCELLED)
        if moved:
            context = job.log_context()
            logger.info(
                "Transcription cancelled while %s, %d tokens refunded %s",
                job.status,
                job.cost,
                context.words,
                extra=context.extra,
            )
            job.status, job.cost = Status.CANCELLED, 0
            return job
        # Race: the job moved since the read (claimed, completed, failed): read it again.
    raise ApplicationError(ALREADY_FINISHED_MESSAGE, 409)


# --- Deleting ------------------------------------------------------------------------


def transcription_delete(*, user: User, transcription_id: uuid.UUID) -> Transcription:
    """Delete one of ``user``'s jobs, whatever its state; returns the deleted job.

    A pending job is never run nor charged: its message finds nothing to claim. A job being
    processed is deleted too: its worker stops decoding within
    ``TRANSCRIPTION_PROGRESS_INTERVAL_SECONDS`` once no job of its batch is left, and its
    charge is not refunded (cancel first for a refund).
    """
    job = Transcription.objects.filter(id=transcription_id, owner=user).first()
    if job is None:
        raise ApplicationError(NOT_FOUND_OR_DENIED_MESSAGE, 404)
    Transcription.objects.filter(id=job.id).delete()
    context = job.log_context()
    logger.info("Transcription deleted while %s %s", job.status, context.words, extra=context.extra)
    return job
