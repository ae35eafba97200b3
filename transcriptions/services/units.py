"""Units of scheduling: the work of every batch, claimed by any free worker in the fair order.

The job stays the unit of billing, status and results (:mod:`.runs`). Below it, a batch is
cut into :class:`TranscriptionUnit` rows when a worker claims it: one unit for a file of
at most ``TRANSCRIPTION_UNIT_SECONDS``, decoded whole; for a longer one, groups of the
engine's windows of speech (:func:`window_groups`), each decoded in batches by
``engine.transcribe_windows``. A queue message only says "there is work": its task claims
the next work in the fair order, whatever batch the message was sent for (a pending unit,
or a batch waiting to be claimed, planned and charged), decodes one unit and stores its
segments; the task that stores a batch's last unit merges the units in order and
completes the jobs. A unit moves

    pending -> processing -> done

by conditional UPDATEs, as jobs do: claiming names ``pending`` (PostgreSQL also skips rows
another claimer has locked), storing names ``processing`` and the claimer's token. A batch
that fails (one unit failed, or was lost too often) has its jobs failed and refunded once
(:func:`.runs.transcription_batch_fail`) and its units dropped; so do a batch's units once
its jobs are gone (deleted).

**Speakers.** A batch that tells speakers apart (``diarize``) has one more unit, of kind
``speakers``: the whole file's speaker turns, found once so that a speaker keeps one
name across the file. It is not claimed in the fair order but by a message of its own
(``transcriptions.run_speakers``), whose time limits are those of the file's duration
(the diarizer goes through the whole file in one run), and so runs beside the batch's
other units on any free worker; the units are merged, and the turns applied to the
transcript, when the last of them all is done (:func:`units_merge`,
``engine.with_speakers``).

**Fair order.** The next work is the oldest of the user served the fewest audio seconds
(units processing or done, claimed in the last ``TRANSCRIPTION_FAIRNESS_WINDOW_SECONDS``);
ties go to the user whose waiting job is oldest. Claiming a unit counts at once, so users
take turns (round robin), and a user's work goes oldest job first, in audio order.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import logging
import math
import os
import socket
import tempfile
import threading
import time
import uuid
import wave
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import Count, F, Min, Q, QuerySet, Sum
from django.utils import timezone

from files.models import File
from files.selectors import file_wav_local_path
from health.selectors import live_processes
from transcriptions import engine, formats, worker
from transcriptions.models import Transcription, TranscriptionUnit
from transcriptions.selectors import unit_served_seconds
from transcriptions.services import runs
from transcriptions.services.jobs import conversion_failed_message
from transcriptions.services.prices import time_limits
from whisper_site.celery import DATABASE_CONNECTION_ERRORS, worker_consumes

logger = logging.getLogger(__name__)

Status = Transcription.Status
UnitStatus = TranscriptionUnit.Status
UnitKind = TranscriptionUnit.Kind
# How many times a claimer tries again after another claimer took the unit it chose.
CLAIM_TRIES = 20
# Scripts written without spaces between words: a span's text joins the next one's directly.
SPACELESS_LANGUAGES = frozenset({"zh", "yue", "ja", "th", "lo", "km", "my", "bo"})


# --- Planning --------------------------------------------------------------------------


def unit_spans(
    *, windows: Sequence[tuple[float, float]], duration: float, unit_seconds: float
) -> list[tuple[float, float]]:
    """The spans (start, end) in seconds a file of ``duration`` seconds is cut into, in silences.

    ``windows`` are the file's stretches of speech (start, end), in order, each at most 30 s
    (those of :func:`engine.plan_windows`' windows). A span takes consecutive windows while they fit within
    ``unit_seconds`` and ends halfway through the pause after its last one (never later
    than ``unit_seconds`` from its start), so that no word is cut in two. Where a pause is
    too long for the next window to fit after it, the span starts later, within the pause:
    silence no span holds is never decoded. A file where the VAD heard nothing is cut into
    equal spans, since there is no word to cut.
    """
    if not windows:
        count = max(1, math.ceil(duration / unit_seconds - 1e-9))
        step = duration / count
        return [
            (round(step * index, 3), round(duration if index == count - 1 else step * (index + 1), 3))
            for index in range(count)
        ]
    spans: list[tuple[float, float]] = []
    done = 0.0
    index = 0
    while index < len(windows):
        # No earlier than the previous span's end; late enough that this window fits (but
        # never after its start, should a window be longer than unit_seconds).
        start = min(max(done, windows[index][1] - unit_seconds), windows[index][0])
        last = index
        while last + 1 < len(windows) and windows[last + 1][1] - start <= unit_seconds:
            last += 1
        if last + 1 < len(windows):
            end = min((windows[last][1] + windows[last + 1][0]) / 2, start + unit_seconds)
        else:
            end = min(duration, start + unit_seconds)
        spans.append((round(start, 3), round(end, 3)))
        done = end
        index = last + 1
    return spans


def window_groups(
    *, windows: Sequence[engine.Window], unit_seconds: float, workers: int = 1
) -> list[list[engine.Window]]:
    """Consecutive windows grouped into units of at most ``unit_seconds`` of speech, as even as they allow.

    The fewest units that hold the windows (at least one window each), rounded up to a
    multiple of ``workers`` (the transcription processes that can take them) while there
    are windows enough, so that a long file keeps every process busy to its end instead of
    leaving one to decode the last unit alone. The windows are then cut where the speech so
    far comes nearest each unit's even share: 10 windows of about 29 s in units of 120 s
    on 2 processes make 3, 2, 3 and 2 windows (each process 5), not 4, 4 and 2 (one
    process 8, the other 4 and then nothing). A unit's windows are decoded together, as one batch: the more
    it holds, the better a worker's CPU is used, and the longer the next user waits for
    that worker.
    """
    if not windows:
        return []
    speech = [window.speech_seconds for window in windows]
    fewest = 0
    filled = math.inf
    for seconds in speech:  # filling each unit in turn gives the fewest units
        filled += seconds
        if filled > unit_seconds + 1e-9:
            fewest += 1
            filled = seconds
    step = max(1, workers)
    count = min(len(windows), -(-fewest // step) * step)
    while True:
        groups = _even_groups(speech, count)
        if count == len(windows) or all(sum(speech[start:end]) <= unit_seconds + 1e-9 for start, end in groups):
            return [list(windows[start:end]) for start, end in groups]
        count = min(len(windows), count + step)


def _even_groups(speech: Sequence[float], count: int) -> list[tuple[int, int]]:
    """``speech`` (seconds per window) cut into ``count`` runs of windows of about equal speech."""
    totals = list(itertools.accumulate(speech, initial=0.0))
    bounds = [0]
    for part in range(1, count):
        target = totals[-1] * part / count
        # At least one window in this run and in each of the runs after it.
        candidates = range(bounds[-1] + 1, len(speech) - (count - part) + 1)
        # Ties go to the longer run first: units are taken in order, so a process that took a
        # short one takes the next while the others still decode theirs.
        bounds.append(min(candidates, key=lambda index: (abs(totals[index] - target), -index)))
    bounds.append(len(speech))
    return list(itertools.pairwise(bounds))


@dataclasses.dataclass(frozen=True, slots=True)
class PlannedUnit:
    start: float
    end: float
    # The windows decoded together, as stored in TranscriptionUnit.windows; None: the span.
    windows: list[dict[str, Any]] | None


def _window_json(window: engine.Window) -> dict[str, Any]:
    return {"start": window.start, "end": window.end, "speech": [list(stretch) for stretch in window.speech]}


def _window_from_json(data: dict[str, Any]) -> engine.Window:
    return engine.Window(
        start=data["start"], end=data["end"], speech=tuple((start, end) for start, end in data.get("speech") or ())
    )


def decodes_by_windows(job: Transcription) -> bool:
    """Whether a long batch's units are the engine's windows of speech, decoded in batches.

    Windows are what the VAD heard as speech, so a request that turned the VAD off
    (``vad_filter=false``) is cut into spans that are decoded whole, pauses included.
    """
    return job.vad_filter is not False


def transcription_units_planned(*, file: File, job: Transcription) -> list[PlannedUnit]:
    """How ``job``'s batch is cut into units (the VAD runs over the file's WAV for a long one).

    A file of at most ``TRANSCRIPTION_UNIT_SECONDS`` is one unit, decoded whole as before.
    A longer one is cut into groups of the engine's windows of speech
    (:func:`window_groups`, as many as the live transcription processes can share evenly), or, for a request without VAD, into spans cut in the pauses
    between them (:func:`unit_spans`). A long file where the VAD heard nothing is one unit
    with no window: nothing to decode.
    """
    if not transcription_batch_is_long(file=file):
        return [PlannedUnit(start=0.0, end=file.duration, windows=None)]
    with file_wav_local_path(file) as wav_path:
        audio = engine.load_audio(wav_path)
    unit_seconds = settings.TRANSCRIPTION_UNIT_SECONDS
    # A unit holds at most unit_seconds of speech, so a window does too.
    windows = engine.plan_windows(audio, max_seconds=min(engine.MAX_WINDOW_SECONDS, unit_seconds))
    if decodes_by_windows(job):
        if not windows:
            return [PlannedUnit(start=0.0, end=file.duration, windows=[])]
        return [
            PlannedUnit(
                start=round(group[0].start, 3),
                end=round(group[-1].end, 3),
                windows=[_window_json(window) for window in group],
            )
            for group in window_groups(
                windows=windows, unit_seconds=unit_seconds, workers=live_processes(settings.TRANSCRIPTION_QUEUE)
            )
        ]
    stretches = [stretch for window in windows for stretch in window.stretches]
    return [
        PlannedUnit(start=start, end=end, windows=None)
        for start, end in unit_spans(windows=stretches, duration=file.duration, unit_seconds=unit_seconds)
    ]


def transcription_batch_is_long(*, file: File) -> bool:
    """Whether ``file``'s batches are cut into several units (else one unit decodes them whole)."""
    return file.duration > settings.TRANSCRIPTION_UNIT_SECONDS


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def transcription_units_enqueue(*, count: int) -> None:
    """Send ``count`` "there is work" messages once the transaction commits."""
    if count <= 0:
        return
    from transcriptions.tasks import transcription_run_unit_task  # tasks import the services

    soft, hard = time_limits(duration=settings.TRANSCRIPTION_UNIT_SECONDS)

    def send() -> None:
        for _ in range(count):
            try:
                transcription_run_unit_task.apply_async(
                    queue=settings.TRANSCRIPTION_QUEUE, soft_time_limit=soft, time_limit=hard
                )
            except Exception:
                if transcription_run_unit_task.app.conf.task_always_eager:
                    raise  # eager mode ran the task here: its errors are its own
                # Broker down: the units stay pending and the recovery sends for them.
                logger.exception("Transcription unit message could not be queued")
                return

    transaction.on_commit(send)


# --- Claiming --------------------------------------------------------------------------


def transcription_unit_claim(*, claim_token: str, now: dt.datetime | None = None) -> TranscriptionUnit | None:
    """Claim the next unit for ``claim_token`` in the fair order; None when there is no work.

    The work is the pending units and the batches waiting to be planned (pending jobs whose
    file has its WAV): claiming a batch claims and charges its jobs
    (:func:`.runs.claim_and_charge`), cuts it into units and takes the first.

    Work already held by ``claim_token`` comes first: this is a redelivery of the task whose
    worker was killed while on it (a unit, or a batch's jobs claimed before any unit was
    stored). A unit lost that way ``TRANSCRIPTION_MAX_ATTEMPTS`` times fails its batch.
    """
    now = now or timezone.now()
    own = (
        TranscriptionUnit.objects.filter(status=UnitStatus.PROCESSING, claim_token=claim_token)
        .exclude(kind=UnitKind.SPEAKERS)
        .first()
    )
    if own is not None:
        if own.attempts >= settings.TRANSCRIPTION_MAX_ATTEMPTS:
            _fail_batch(
                batch_id=own.batch_id,
                error=runs.lost_worker_message(own.attempts),
            )
        else:
            with transaction.atomic():
                taken = TranscriptionUnit.objects.filter(
                    id=own.id, status=UnitStatus.PROCESSING, claim_token=claim_token
                ).update(claimed_at=now, heartbeat_at=now, attempts=F("attempts") + 1, worker=_worker_name())
                # The jobs this task holds count the try too.
                Transcription.objects.filter(
                    batch_id=own.batch_id, status=Status.PROCESSING, claim_token=claim_token
                ).update(attempts=F("attempts") + 1)
            if taken:
                own.claimed_at, own.attempts = now, own.attempts + 1
                return own
    held = (
        Transcription.objects.filter(status=Status.PROCESSING, claim_token=claim_token)
        .exclude(batch_id__in=TranscriptionUnit.objects.values("batch_id"))
        .values_list("batch_id", flat=True)
        .first()
    )
    if held is not None:
        unit = _claim_batch(batch_id=held, claim_token=claim_token, now=now)
        if unit is not None:
            return unit
    for _ in range(CLAIM_TRIES):
        owners = _owners_in_fair_order(now=now)
        if not owners:
            return None
        for owner_id in owners:
            unit = _claim_next_of(owner_id=owner_id, claim_token=claim_token, now=now)
            if unit is not None:
                return unit
        # Everything looked at was taken by another claimer meanwhile: look again.
    return None


def _waiting_batches() -> Any:
    """Pending jobs whose batch can be claimed: their file's WAV is stored.

    Their batch is not planned yet, or was planned before and its jobs were put back to
    pending (an operator's re-queue): claiming them again keeps the units.
    """
    return (
        Transcription.objects.filter(status=Status.PENDING)
        .exclude(file__wav_name="")
        .exclude(file__state=File.State.FAILED)
    )


def _owners_in_fair_order(*, now: dt.datetime) -> list[Any]:
    """The users with work waiting, least served first, then oldest waiting job first."""
    served = unit_served_seconds(now=now)
    oldest: dict[Any, dt.datetime] = {}
    for rows in (
        TranscriptionUnit.objects.filter(status=UnitStatus.PENDING)
        .exclude(kind=UnitKind.SPEAKERS)
        .values("owner_id")
        .annotate(oldest=Min("created_at"))
        .values_list("owner_id", "oldest"),
        _waiting_batches().values("owner_id").annotate(oldest=Min("created_at")).values_list("owner_id", "oldest"),
    ):
        for owner, created_at in rows:
            oldest[owner] = min(created_at, oldest.get(owner, created_at))
    return sorted(oldest, key=lambda owner: (served.get(owner) or 0.0, oldest[owner]))


def _claim_next_of(*, owner_id: Any, claim_token: str, now: dt.datetime) -> TranscriptionUnit | None:
    """Claim ``owner_id``'s oldest work: a pending unit, or the batch of its oldest waiting job."""
    unit_created = (
        TranscriptionUnit.objects.filter(owner_id=owner_id, status=UnitStatus.PENDING)
        .exclude(kind=UnitKind.SPEAKERS)
        .order_by("created_at")
        .values_list("created_at", flat=True)
        .first()
    )
    batch = (
        _waiting_batches()
        .filter(owner_id=owner_id)
        .order_by("created_at", "id")
        .values_list("batch_id", "created_at")
        .first()
    )
    # A re-queued batch's jobs come before its own units: they must be claimed to complete.
    if batch is not None and (unit_created is None or batch[1] <= unit_created):
        return _claim_batch(batch_id=batch[0], claim_token=claim_token, now=now)
    return _claim_oldest_unit_of(owner_id=owner_id, claim_token=claim_token, now=now)


def _claim_oldest_unit_of(*, owner_id: Any, claim_token: str, now: dt.datetime) -> TranscriptionUnit | None:
    """Claim ``owner_id``'s oldest pending unit that no other claimer holds; None if none."""
    with transaction.atomic():
        # PostgreSQL: FOR UPDATE SKIP LOCKED, so that concurrent claimers each take another
        # unit instead of queueing on one row. SQLite ignores it (it serialises writers);
        # there the conditional UPDATE below is what stops a second claimer.
        unit = (
            TranscriptionUnit.objects.select_for_update(skip_locked=True)
            .filter(owner_id=owner_id, status=UnitStatus.PENDING)
            .exclude(kind=UnitKind.SPEAKERS)
            .order_by("created_at", "batch_id", "index")
            .first()
        )
        if unit is None:
            return None
        # Race: another claimer took it since the read (SQLite): the UPDATE names pending.
        return _take_unit(unit, claim_token=claim_token, now=now, where={"status": UnitStatus.PENDING})


def _take_unit(
    unit: TranscriptionUnit, *, claim_token: str, now: dt.datetime, where: dict[str, Any]
) -> TranscriptionUnit | None:
    """Mark ``unit`` processing for ``claim_token`` where its row still matches ``where``; None if not.

    The conditional UPDATE of a claim made from an earlier read: a claimer whose read is out of date
    (the row moved since) takes nothing.
    """
    taken = TranscriptionUnit.objects.filter(id=unit.id, **where).update(
        status=UnitStatus.PROCESSING,
        claim_token=claim_token,
        claimed_at=now,
        heartbeat_at=now,
        attempts=F("attempts") + 1,
        worker=_worker_name(),
    )
    if not taken:
        return None
    unit.status, unit.claim_token, unit.claimed_at = UnitStatus.PROCESSING, claim_token, now
    unit.attempts += 1
    return unit


def _claim_batch(*, batch_id: uuid.UUID, claim_token: str, now: dt.datetime) -> TranscriptionUnit | None:
    """Claim and charge a batch's jobs, cut it into units and claim the first; None if none was claimed.

    The cut is worked out before the claim (the VAD is not run inside a transaction); a
    batch planned before (an operator's re-queue) keeps its units, done ones included.
    One message per other pending unit lets free workers join; a batch that tells speakers
    apart gets its speakers unit last, with its own message.
    """
    first = Transcription.objects.filter(batch_id=batch_id).select_related("file").order_by("created_at").first()
    if first is None:
        return None  # every job of the batch was deleted
    file = first.file
    if file.state == File.State.FAILED:
        runs.transcription_pending_fail(
            jobs=Transcription.objects.filter(batch_id=batch_id), error=conversion_failed_message(file)
        )
        return None
    if not file.wav_name:
        return None  # still converting: file_audio_ready queues it
    planned_before = TranscriptionUnit.objects.filter(batch_id=batch_id).exists()
    try:
        planned = [] if planned_before else transcription_units_planned(file=file, job=first)
    except Exception:
        # The WAV is missing or unreadable: one unit, whose decoding fails the batch with
        # the reason a user reads, refunded (a planning error must not leave it pending).
        logger.warning("Transcription batch %s could not be planned: decoded whole", batch_id.hex, exc_info=True)
        planned = [PlannedUnit(start=0.0, end=file.duration, windows=None)]
    kinds = [UnitKind.TRANSCRIBE] * len(planned)
    if planned and needs_speakers_unit(first):
        planned.append(PlannedUnit(start=0.0, end=file.duration, windows=None))
        kinds.append(UnitKind.SPEAKERS)
    with transaction.atomic():
        claimed = runs.claim_and_charge(batch_id=batch_id, claim_token=claim_token, file=file)
        if not claimed:
            return None
        job = claimed[0]
        created_at = min(claimed_job.created_at for claimed_job in claimed)
        worker_name = _worker_name()
        # Race: two tasks planning one batch (a redelivery beside a re-queue): the unique
        # (batch_id, index) keeps one row per unit, and only one claim of the jobs wins.
        TranscriptionUnit.objects.bulk_create(
            [
                TranscriptionUnit(
                    batch_id=batch_id,
                    owner_id=job.owner_id,
                    file_id=file.id,
                    index=index,
                    kind=kind,
                    start=unit.start,
                    end=unit.end,
                    windows=unit.windows,
                    created_at=created_at,
                    queued_at=now,
                    **(
                        {
                            "status": UnitStatus.PROCESSING,
                            "claim_token": claim_token,
                            "claimed_at": now,
                            "heartbeat_at": now,
                            "attempts": 1,
                            "worker": worker_name,
                        }
                        if index == 0
                        else {}
                    ),
                )
                for index, (unit, kind) in enumerate(zip(planned, kinds, strict=True))
            ],
            ignore_conflicts=True,
        )
        pending = TranscriptionUnit.objects.filter(batch_id=batch_id, status=UnitStatus.PENDING)
        transcription_units_enqueue(count=pending.exclude(kind=UnitKind.SPEAKERS).count())
        speakers_units_enqueue(units=pending.filter(kind=UnitKind.SPEAKERS).select_related("file"))
    if len(planned) > 1:
        context = job.batch_log_context()
        logger.info(
            "Transcription batch planned: %d units of at most %.0f s %s",
            len(planned),
            settings.TRANSCRIPTION_UNIT_SECONDS,
            context.words,
            extra=context.extra,
        )
    if planned_before:
        # Every unit may be done already (a re-queue after the last one was stored).
        _finish_if_done(batch_id=batch_id)
        return None
    return TranscriptionUnit.objects.filter(
        batch_id=batch_id, index=0, status=UnitStatus.PROCESSING, claim_token=claim_token
    ).first()


# --- Decoding ----------------------------------------------------------------------------


def transcription_unit_run_next(*, claim_token: str) -> bool:
    """Claim the next unit in the fair order, decode it, store it; returns whether one ran.

    Units of a batch whose jobs are gone (deleted) are dropped and the next is claimed.
    The task that stores a batch's last unit completes the batch's jobs.
    """
    while True:
        unit = transcription_unit_claim(claim_token=claim_token)
        if unit is None:
            return False
        jobs = list(_live_jobs(batch_id=unit.batch_id))
        if not jobs:
            dropped, _ = TranscriptionUnit.objects.filter(batch_id=unit.batch_id).delete()
            logger.info("Transcription units of batch %s dropped: its jobs are gone (%d)", unit.batch_id.hex, dropped)
            continue
        _run_unit(unit=unit, jobs=jobs, claim_token=claim_token)
        return True


class BatchStopped(Exception):
    """Every job of the batch being decoded was cancelled or deleted: its worker stops."""


class _BatchWatch:
    """A unit's progress written to its batch's jobs, and the decoding stopped once they are gone.

    Called by the engine with the share of the unit decoded (0.0 to 1.0); at most every
    ``TRANSCRIPTION_PROGRESS_INTERVAL_SECONDS`` it costs one UPDATE, which never lowers a
    job's ``progress`` (1.0 is written with the result), and one check that a job of the
    batch is still processing, else :class:`BatchStopped` ends the decoding.
    """

    def __init__(self, *, unit: TranscriptionUnit) -> None:
        self.unit = unit
        seconds = F("end") - F("start")
        totals = TranscriptionUnit.objects.filter(batch_id=unit.batch_id).aggregate(
            total=Sum(seconds), done=Sum(seconds, filter=Q(status=UnitStatus.DONE))
        )
        self.total = totals["total"] or unit.seconds or 1.0
        self.done = totals["done"] or 0.0
        self.last = time.monotonic()

    def __call__(self, share: float) -> None:
        now = time.monotonic()
        if now - self.last < settings.TRANSCRIPTION_PROGRESS_INTERVAL_SECONDS:
            return
        self.last = now
        self.report(share)
        if not Transcription.objects.filter(batch_id=self.unit.batch_id, status=Status.PROCESSING).exists():
            raise BatchStopped

    def seconds(self, decoded: float) -> None:
        """The engine's sequential decoding reports seconds of the unit's audio."""
        self(decoded / self.unit.seconds if self.unit.seconds > 0 else 0.0)

    def report(self, share: float) -> None:
        value = round(min((self.done + max(0.0, min(share, 1.0)) * self.unit.seconds) / self.total, 0.999), 4)
        Transcription.objects.filter(batch_id=self.unit.batch_id, status=Status.PROCESSING, progress__lt=value).update(
            progress=value
        )


class _Heartbeat:
    """While a worker decodes a unit, a thread records every ``TRANSCRIPTION_HEARTBEAT_SECONDS`` that it is still on it.

    The recovery puts back a unit not heard of for ``TRANSCRIPTION_LOST_AFTER_SECONDS``:
    its worker is gone (a machine lost, a whole worker killed), and nothing else would
    hand its message to another worker before the broker's visibility timeout. A thread
    rather than the decoding's progress reports, which a model's load or a batch of
    windows can hold back for longer. It writes through a database connection of its own
    (Django's are per thread), closed when it stops; a write that fails (the database
    away for a moment) is tried again at the next beat. Only inside a worker: a unit run
    in a test's or a command's process (eager Celery) is never lost to another process.
    """

    def __init__(self, *, unit: TranscriptionUnit, claim_token: str) -> None:
        self.unit_id = unit.id
        self.claim_token = claim_token
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> _Heartbeat:
        if worker_consumes(settings.TRANSCRIPTION_QUEUE) is not None:
            self._thread = threading.Thread(target=self._beat, name="unit-heartbeat", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()

    def _beat(self) -> None:
        try:
            while not self._stopped.wait(settings.TRANSCRIPTION_HEARTBEAT_SECONDS):
                try:
                    TranscriptionUnit.objects.filter(
                        id=self.unit_id, status=UnitStatus.PROCESSING, claim_token=self.claim_token
                    ).update(heartbeat_at=timezone.now())
                except DatabaseError as exc:
                    logger.warning("Transcription unit heartbeat not recorded: %s", exc)
                    _close_quietly()
        finally:
            _close_quietly()


def _close_quietly() -> None:
    """Close this thread's database connection, broken or not."""
    try:
        connection.close()
    except DatabaseError:
        pass


def _run_unit(*, unit: TranscriptionUnit, jobs: list[Transcription], claim_token: str) -> None:
    job = jobs[0]
    file = job.file
    context = job.batch_log_context()
    wanted = {claimed.format for claimed in jobs}
    # Subtitle cues are cut at word boundaries, and a segment is split between the words of
    # two speakers, so both need the words' times.
    word_timestamps = job.word_timestamps or bool(wanted & runs.SUBTITLES) or job.diarize
    # The whole file in one piece: a batch of at most TRANSCRIPTION_UNIT_SECONDS.
    whole = unit.windows is None and unit.start <= 0.0 and unit.end >= file.duration
    watch = _BatchWatch(unit=unit)
    started = time.perf_counter()
    try:
        with _Heartbeat(unit=unit, claim_token=claim_token):
            if unit.windows is not None:
                result = _transcribe_windows(
                    file=file, job=job, unit=unit, word_timestamps=word_timestamps, on_progress=watch
                )
            elif whole:
                result = runs.transcribe_file(
                    file=file, job=job, word_timestamps=word_timestamps, on_progress=watch.seconds
                )
            else:
                result = _transcribe_span(
                    file=file,
                    job=job,
                    start=unit.start,
                    end=unit.end,
                    word_timestamps=word_timestamps,
                    on_progress=watch.seconds,
                )
    except BatchStopped:
        # Cancelled or deleted while decoding: the worker is free at once.
        logger.info(
            "Transcription unit %d stopped after %.1f s: its jobs were cancelled or deleted %s",
            unit.index,
            time.perf_counter() - started,
            context.words,
            extra=context.extra,
        )
        _drop_if_gone(batch_id=unit.batch_id)
        return
    except DATABASE_CONNECTION_ERRORS:
        # The database connection was lost (progress is written while decoding): not the
        # job's fault, and failing it would need the database too. The task is sent again
        # under the same id (transcriptions.tasks), which retakes this unit.
        raise
    except Exception as exc:
        reason = runs.failure_reason(exc, file=file, job=job, duration=unit.seconds)
        if reason is None:
            logger.exception(
                "Transcription unit %d failed: internal error %s", unit.index, context.words, extra=context.extra
            )
            reason = "Transcription failed: internal error"
        _fail_batch(batch_id=unit.batch_id, error=reason)
        return
    stored = TranscriptionUnit.objects.filter(id=unit.id, status=UnitStatus.PROCESSING, claim_token=claim_token).update(
        status=UnitStatus.DONE, result=_result_json(result)
    )
    if not stored:
        return  # dropped (the batch failed or its jobs were deleted) or taken over meanwhile
    if not whole:
        watch.report(1.0)
    if whole:
        logger.info(
            "Transcription batch ran %.1f s of audio in %.1f s with %s %s",
            file.duration,
            time.perf_counter() - started,
            job.model,
            context.words,
            extra=context.extra,
        )
    else:
        logger.info(
            "Transcription unit %d (%.1f-%.1f s%s) ran in %.1f s with %s %s",
            unit.index,
            unit.start,
            unit.end,
            "" if unit.windows is None else f", {len(unit.windows)} windows",
            time.perf_counter() - started,
            job.model,
            context.words,
            extra=context.extra,
        )
    _finish_if_done(batch_id=unit.batch_id)


def _read_wav(path: Path, *, start: float, end: float) -> tuple[np.ndarray, int]:
    """The samples of ``start``-``end`` s of a 16 kHz mono s16le WAV as float32, and the first one's index."""
    with wave.open(str(path), "rb") as source:
        rate = source.getframerate()
        first = min(int(math.floor(start * rate)), source.getnframes())
        source.setpos(first)
        frames = source.readframes(max(int(math.ceil(end * rate)) - first, 0))
    return np.frombuffer(frames, dtype=np.int16).astype(np.float32) / 32768.0, first


def _transcribe_windows(
    *,
    file: File,
    job: Transcription,
    unit: TranscriptionUnit,
    word_timestamps: bool,
    on_progress: Callable[[float], None] | None = None,
) -> engine.TranscriptResult:
    """Decode a unit's windows together (``engine.transcribe_windows``); times from the file's start.

    Only the unit's part of the WAV is read, as the float samples the engine decodes the
    whole file into, so a window gives the same words whichever unit or worker decodes it.
    """
    windows = [_window_from_json(data) for data in unit.windows or []]
    if not windows:
        return engine.TranscriptResult(
            text="", segments=[], language=job.language or "en", language_probability=0.0, duration=unit.seconds
        )
    model = worker.model_cache().get(job.model)
    with file_wav_local_path(file) as wav_path:
        audio, first = _read_wav(wav_path, start=unit.start, end=unit.end)
    offset = first / engine.SAMPLING_RATE
    local = [
        engine.Window(
            start=window.start - offset,
            end=window.end - offset,
            speech=tuple((start - offset, end - offset) for start, end in window.speech),
        )
        for window in windows
    ]
    transcripts = engine.transcribe_windows(
        model,
        audio,
        local,
        language=job.language or None,
        word_timestamps=word_timestamps,
        prompt=job.prompt,
        task=job.task,
        temperature=job.temperature,
        batch_size=settings.TRANSCRIPTION_BATCH_SIZE,
        on_progress=on_progress,
    )
    merged = engine.merge_windows(transcripts, duration=unit.seconds, task=job.task, language=job.language or None)
    return _placed(merged, offset=offset, space_before=bool(transcripts) and transcripts[0].text[:1].isspace())


def _transcribe_span(
    *,
    file: File,
    job: Transcription,
    start: float,
    end: float,
    word_timestamps: bool,
    on_progress: Callable[[float], None] | None = None,
) -> engine.TranscriptResult:
    """Decode ``start``-``end`` s of ``file`` as one piece with ``job``'s options; times from the file's start.

    The span is copied out of the WAV (16 kHz mono s16le, so no decoding) and given to
    :func:`engine.transcribe`: what a long request without the VAD is cut into.
    """
    model = worker.model_cache().get(job.model)
    with file_wav_local_path(file) as wav_path, tempfile.TemporaryDirectory() as folder:
        span_path = Path(folder) / "span.wav"
        with wave.open(str(wav_path), "rb") as source, wave.open(str(span_path), "wb") as target:
            rate = source.getframerate()
            first = min(int(round(start * rate)), source.getnframes())
            source.setpos(first)
            frames = source.readframes(max(int(round(end * rate)) - first, 0))
            target.setparams(source.getparams())
            target.writeframes(frames)
        result = engine.transcribe(
            model,
            span_path,
            language=job.language or None,
            vad_filter=False,
            word_timestamps=word_timestamps,
            prompt=job.prompt,
            task=job.task,
            temperature=job.temperature,
            on_progress=on_progress,
        )
    # A span's text joins the next one's with a space, except in scripts written without.
    return _placed(result, offset=start, space_before=result.language not in SPACELESS_LANGUAGES)


def _placed(result: engine.TranscriptResult, *, offset: float, space_before: bool) -> engine.TranscriptResult:
    """A unit's result with times from the file's start, its text starting with a space where
    it joins the previous unit's at a word boundary (:func:`units_merge` joins them)."""
    return dataclasses.replace(
        result,
        text=(" " if space_before else "") + result.text,
        segments=[_shifted(segment, offset) for segment in result.segments],
    )


def _shifted(segment: engine.Segment, offset: float) -> engine.Segment:
    words = None
    if segment.words is not None:
        words = tuple(
            dataclasses.replace(word, start=round(word.start + offset, 3), end=round(word.end + offset, 3))
            for word in segment.words
        )
    return dataclasses.replace(
        segment, start=round(segment.start + offset, 3), end=round(segment.end + offset, 3), words=words
    )


# --- Speakers ------------------------------------------------------------------------------


def needs_speakers_unit(job: Transcription) -> bool:
    """Whether ``job``'s batch finds its speakers with the diarizer.

    One speaker known in advance needs no model: every segment is ``SPEAKER_00``'s.
    """
    return job.diarize and job.speakers != 1


def speakers_units_enqueue(*, units: Any) -> None:
    """Send each speakers unit of ``units`` its own message once the transaction commits.

    Its time limits are those of an inference run on the whole file: it diarizes the file
    in one run, where a "there is work" message is timed for ``TRANSCRIPTION_UNIT_SECONDS``.
    """
    from transcriptions.tasks import transcription_speakers_task  # tasks import the services

    messages = [(unit.id, unit.file.duration) for unit in units]
    if not messages:
        return

    def send() -> None:
        for unit_id, duration in messages:
            soft, hard = time_limits(duration=duration)
            try:
                transcription_speakers_task.apply_async(
                    args=[unit_id.hex], queue=settings.TRANSCRIPTION_QUEUE, soft_time_limit=soft, time_limit=hard
                )
            except Exception:
                if transcription_speakers_task.app.conf.task_always_eager:
                    raise
                # Broker down: the unit stays pending and the recovery sends for it.
                logger.exception("Transcription speakers message could not be queued")
                return

    transaction.on_commit(send)


def _claim_speakers_unit(*, unit_id: uuid.UUID, claim_token: str, now: dt.datetime) -> TranscriptionUnit | None:
    """Claim the speakers unit ``unit_id`` for ``claim_token``: pending, or already its own (a redelivery)."""
    unit = TranscriptionUnit.objects.filter(id=unit_id, kind=UnitKind.SPEAKERS).select_related("file").first()
    if unit is None or unit.status == UnitStatus.DONE:
        return None
    if unit.status == UnitStatus.PROCESSING and unit.claim_token != claim_token:
        return None  # another message's (one sent again by the recovery while this one waited)
    if unit.status == UnitStatus.PROCESSING and unit.attempts >= settings.TRANSCRIPTION_MAX_ATTEMPTS:
        _fail_batch(batch_id=unit.batch_id, error=runs.lost_worker_message(unit.attempts))
        return None
    # Race: the recovery or another message moved it since the read: the UPDATE names its state.
    where = {"status": unit.status, "claim_token": unit.claim_token}
    return _take_unit(unit, claim_token=claim_token, now=now, where=where)


def transcription_speakers_run(*, unit_id: uuid.UUID, claim_token: str) -> bool:
    """Find the speaker turns of a speakers unit's file and store them; returns whether it ran.

    Claimed by this message alone (:func:`_claim_speakers_unit`); the jobs' progress is
    written and a cancel stops it, as for any unit; the worker that stores the batch's last
    unit, this one or a transcribing one, completes the jobs.
    """
    unit = _claim_speakers_unit(unit_id=unit_id, claim_token=claim_token, now=timezone.now())
    if unit is None:
        return False
    jobs = list(_live_jobs(batch_id=unit.batch_id))
    if not jobs:
        TranscriptionUnit.objects.filter(batch_id=unit.batch_id).delete()
        return False
    job = jobs[0]
    file = job.file
    context = job.batch_log_context()
    watch = _BatchWatch(unit=unit)
    started = time.perf_counter()
    try:
        with _Heartbeat(unit=unit, claim_token=claim_token):
            with file_wav_local_path(file) as wav_path:
                audio, _ = _read_wav(wav_path, start=0.0, end=file.duration)
            turns = worker.diarizer().diarize(audio, speakers=job.speakers, on_progress=watch)
    except BatchStopped:
        logger.info(
            "Transcription speakers stopped after %.1f s: the jobs were cancelled or deleted %s",
            time.perf_counter() - started,
            context.words,
            extra=context.extra,
        )
        _drop_if_gone(batch_id=unit.batch_id)
        return True
    except DATABASE_CONNECTION_ERRORS:
        raise  # not the job's fault: the task is sent again under the same id, as _run_unit's
    except Exception as exc:
        reason = runs.failure_reason(exc, file=file, job=job, duration=file.duration)
        if reason is None:
            logger.exception("Transcription speakers failed: internal error %s", context.words, extra=context.extra)
            reason = "Transcription failed: internal error"
        _fail_batch(batch_id=unit.batch_id, error=reason)
        return True
    stored = TranscriptionUnit.objects.filter(id=unit.id, status=UnitStatus.PROCESSING, claim_token=claim_token).update(
        status=UnitStatus.DONE, result={"turns": engine.turns_json(turns)}
    )
    if not stored:
        return True
    watch.report(1.0)
    logger.info(
        "Transcription speakers: %d turns of %d speakers in %.1f s of audio, %.1f s %s",
        len(turns),
        len({turn.speaker for turn in turns}),
        file.duration,
        time.perf_counter() - started,
        context.words,
        extra=context.extra,
    )
    _finish_if_done(batch_id=unit.batch_id)
    return True


# --- Merging and completing ---------------------------------------------------------------


def _result_json(result: engine.TranscriptResult) -> dict[str, Any]:
    return {
        "text": result.text,
        "language": result.language,
        "language_probability": result.language_probability,
        "segments": [dataclasses.asdict(segment) for segment in result.segments],
    }


def _segment_from_json(data: dict[str, Any], index: int) -> engine.Segment:
    words = data.get("words")
    return engine.Segment(
        **{
            **data,
            "id": index,
            "tokens": tuple(data.get("tokens") or ()),
            "words": None if words is None else tuple(engine.Word(**word) for word in words),
        }
    )


def units_merge(*, results: list[dict[str, Any]], duration: float, task: str) -> engine.TranscriptResult:
    """One transcript from the stored results of a batch's units, in audio order.

    Segments keep their times (already from the file's start) and are numbered again; the
    texts are joined as the engine joins segments (a unit's text starts with a space where
    a word boundary is, none in scripts written without spaces). A single unit's result is
    the batch's as it is; for several, the language is the one spoken longest, its
    probability the duration-weighted mean of the units' confidence in it.
    """
    segments: list[engine.Segment] = []
    for result in results:
        segments.extend(_segment_from_json(segment, len(segments)) for segment in result["segments"])
    text = engine.join_segment_texts(result["text"] for result in results)
    if len(results) == 1:
        only = results[0]
        return engine.TranscriptResult(
            text=text,
            segments=segments,
            language=only["language"],
            language_probability=only["language_probability"],
            duration=duration,
            task=task,
        )
    seconds: defaultdict[str, float] = defaultdict(float)
    for segment in segments:
        seconds[segment.language] += max(segment.end - segment.start, 0.0)
    language = max(seconds, key=seconds.__getitem__) if seconds else results[0]["language"]
    weights = [
        (sum(max(s["end"] - s["start"], 0.0) for s in result["segments"]), result["language_probability"])
        for result in results
        if result["language"] == language
    ]
    total = sum(weight for weight, _ in weights)
    probability = sum(weight * p for weight, p in weights) / total if total > 0 else 0.0
    return engine.TranscriptResult(
        text=text,
        segments=segments,
        language=language,
        language_probability=probability,
        duration=duration,
        task=task,
    )


def _finish_if_done(*, batch_id: uuid.UUID) -> int:
    """Complete the batch's jobs if every unit of it is done; returns how many were completed.

    Two tasks storing the last two units at once may both get here: each job is completed
    by a conditional UPDATE, so by one of them.
    """
    units = list(TranscriptionUnit.objects.filter(batch_id=batch_id).order_by("index"))
    if not units or any(unit.status != UnitStatus.DONE for unit in units):
        return 0
    jobs = list(
        Transcription.objects.filter(batch_id=batch_id, status=Status.PROCESSING)
        .select_related("file")
        .order_by("created_at")
    )
    if not jobs:
        return 0  # deleted, failed, or completed by the other task; or pending again (re-queued)
    job = jobs[0]
    merged = units_merge(
        results=[unit.result for unit in units if unit.kind != UnitKind.SPEAKERS],
        duration=job.file.duration,
        task=job.task,
    )
    if job.diarize:
        turns = [turn for unit in units if unit.kind == UnitKind.SPEAKERS for turn in unit.result["turns"]]
        merged = engine.with_speakers(merged, engine.turns_from_json(turns))
    rendered = {
        claimed.format: formats.render(merged, claimed.format, word_timestamps=job.word_timestamps) for claimed in jobs
    }
    completed = 0
    for token in {claimed.claim_token for claimed in jobs}:
        completed += runs.transcription_batch_complete(
            batch_id=batch_id, claim_token=token, rendered=rendered, language=merged.language
        )
    if len(units) == 1:
        return completed
    context = job.batch_log_context()
    logger.info(
        "Transcription batch merged %d units (%.1f s of audio) %s",
        len(units),
        job.file.duration,
        context.words,
        extra=context.extra,
    )
    return completed


def _live_jobs(*, batch_id: uuid.UUID) -> QuerySet[Transcription]:
    """The batch's pending and processing jobs, oldest first, with their files."""
    return (
        Transcription.objects.filter(batch_id=batch_id, status__in=[Status.PENDING, Status.PROCESSING])
        .select_related("file")
        .order_by("created_at", "id")
    )


def _drop_if_gone(*, batch_id: uuid.UUID) -> int:
    """Drop a batch's units once none of its jobs is pending or processing; returns how many went."""
    if _live_jobs(batch_id=batch_id).exists():
        return 0
    dropped, _ = TranscriptionUnit.objects.filter(batch_id=batch_id).delete()
    return dropped


def _fail_batch(*, batch_id: uuid.UUID, error: str) -> int:
    """Fail the batch's processing jobs (refunded once) and drop its units; returns how many failed."""
    failed = 0
    with transaction.atomic():
        tokens = set(
            Transcription.objects.filter(batch_id=batch_id, status=Status.PROCESSING).values_list(
                "claim_token", flat=True
            )
        )
        for token in tokens:
            failed += runs.transcription_batch_fail(batch_id=batch_id, claim_token=token, error=error)
        TranscriptionUnit.objects.filter(batch_id=batch_id).delete()
    return failed


# --- Recovery ----------------------------------------------------------------------------


def transcription_units_requeue_stuck(*, older_than: float, now: dt.datetime | None = None) -> int:
    """Put back the units lost workers held, and send again for units whose message was lost.

    A unit processing for longer than a unit's hard time limit plus ``older_than`` seconds,
    or whose worker has not said it is on it (:class:`_Heartbeat`) for
    ``TRANSCRIPTION_LOST_AFTER_SECONDS``, lost its worker: it goes back to pending (its
    claim token void), or fails its batch after ``TRANSCRIPTION_MAX_ATTEMPTS`` claims. A unit pending whose last message is
    older than ``older_than`` seconds gets a new message. Units of batches whose jobs are
    gone are dropped, and a batch whose units are all done but whose jobs are still
    processing (its last task died before completing them) is completed. Returns how many
    units were queued again.
    """
    now = now or timezone.now()
    cutoff = now - dt.timedelta(seconds=older_than)
    _, hard = time_limits(duration=settings.TRANSCRIPTION_UNIT_SECONDS)
    lost_before = cutoff - dt.timedelta(seconds=hard)
    alive = Transcription.objects.filter(status__in=[Status.PENDING, Status.PROCESSING]).values("batch_id")
    TranscriptionUnit.objects.exclude(batch_id__in=alive).exclude(status=UnitStatus.DONE).delete()
    # Done units count as service for the fairness window, then go.
    served_before = now - dt.timedelta(seconds=settings.TRANSCRIPTION_FAIRNESS_WINDOW_SECONDS)
    TranscriptionUnit.objects.exclude(batch_id__in=alive).filter(claimed_at__lt=served_before).delete()
    silent_before = now - dt.timedelta(seconds=settings.TRANSCRIPTION_LOST_AFTER_SECONDS)
    count = 0
    speakers: list[TranscriptionUnit] = []
    lost = (
        TranscriptionUnit.objects.filter(status=UnitStatus.PROCESSING)
        .filter(Q(claimed_at__lt=lost_before) | Q(heartbeat_at__lt=silent_before))
        .select_related("file")
    )
    for unit in lost:
        silent = unit.heartbeat_at is not None and unit.heartbeat_at < silent_before
        if unit.kind == UnitKind.SPEAKERS and not silent:
            # Timed for the whole file (speakers_units_enqueue), not for a unit: while it
            # beats, it is lost only past the whole file's hard limit.
            _, whole_hard = time_limits(duration=unit.file.duration)
            if unit.claimed_at is None or unit.claimed_at >= cutoff - dt.timedelta(seconds=whole_hard):
                continue
        if unit.attempts >= settings.TRANSCRIPTION_MAX_ATTEMPTS:
            _fail_batch(
                batch_id=unit.batch_id,
                error=runs.lost_worker_message(unit.attempts),
            )
            continue
        released = TranscriptionUnit.objects.filter(
            id=unit.id, status=UnitStatus.PROCESSING, claim_token=unit.claim_token
        ).update(status=UnitStatus.PENDING, claim_token="", queued_at=now)
        if released:
            logger.warning(
                "Transcription unit %d of batch %s lost its worker %s (task %s, last heard of %s): queued again",
                unit.index,
                unit.batch_id.hex,
                unit.worker or "?",
                unit.claim_token,
                unit.heartbeat_at or unit.claimed_at,
            )
            if unit.kind == UnitKind.SPEAKERS:
                speakers.append(unit)
            else:
                count += 1
    waiting = TranscriptionUnit.objects.filter(status=UnitStatus.PENDING, queued_at__lt=cutoff)
    speakers.extend(waiting.filter(kind=UnitKind.SPEAKERS).select_related("file"))
    count += waiting.exclude(kind=UnitKind.SPEAKERS).update(queued_at=now)
    TranscriptionUnit.objects.filter(id__in=[unit.id for unit in speakers]).update(queued_at=now)
    # A task killed between storing a batch's last unit and completing its jobs: its
    # redelivery claims other work, so the batch is finished here.
    processing = Transcription.objects.filter(status=Status.PROCESSING).values("batch_id")
    finished = (
        TranscriptionUnit.objects.filter(batch_id__in=processing)
        .values("batch_id")
        .annotate(open=Count("id", filter=~Q(status=UnitStatus.DONE)))
        .filter(open=0)
        .values_list("batch_id", flat=True)
    )
    for batch_id in list(finished):
        _finish_if_done(batch_id=batch_id)
    if count or speakers:
        logger.info("Transcription units queued again: %d, and %d speakers units", count, len(speakers))
    with transaction.atomic():
        transcription_units_enqueue(count=count)
        speakers_units_enqueue(units=speakers)
    return count + len(speakers)


def transcription_unit_batches() -> Any:
    """The ids of the batches cut into units (a queryset of ``batch_id``), for the job recovery."""
    return TranscriptionUnit.objects.values("batch_id")
