"""Transcription reads: installed models, jobs by id, jobs of a file, where pending jobs stand."""

from __future__ import annotations

import datetime as dt
import heapq
import math
import uuid
from collections import defaultdict, deque
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.db.models import F, Min, Sum
from django.utils import timezone

from files.models import File
from transcriptions import engine
from transcriptions.models import Transcription, TranscriptionUnit


def model_list() -> list[engine.ModelInfo]:
    """The models installed under ``MODELS_DIR``, sorted by name."""
    return list(engine.available_models(settings.MODELS_DIR).values())


def model_names() -> list[str]:
    """Names of the installed models, sorted."""
    return [model.name for model in model_list()]


def transcription_get(*, transcription_id: uuid.UUID) -> Transcription | None:
    """Any job by id (reading results is public: the uuid is the secret)."""
    return Transcription.objects.filter(id=transcription_id).first()


def transcription_list_for_file(*, file_id: uuid.UUID) -> list[Transcription] | None:
    """The jobs of a media file, oldest first (a request's formats in the order asked for).

    ``None`` when there is no such audio or video file (an avatar image has no jobs).
    """
    if not File.objects.filter(id=file_id).exclude(kind=File.Kind.IMAGE).exists():
        return None
    return list(Transcription.objects.filter(file_id=file_id).order_by("created_at", "id"))


def unit_served_seconds(*, now: dt.datetime) -> dict[Any, float]:
    """Audio seconds each user was served lately: units processing or done claimed in the fairness window."""
    since = now - dt.timedelta(seconds=settings.TRANSCRIPTION_FAIRNESS_WINDOW_SECONDS)
    return dict(
        TranscriptionUnit.objects.filter(
            status__in=[TranscriptionUnit.Status.PROCESSING, TranscriptionUnit.Status.DONE], claimed_at__gte=since
        )
        .values("owner_id")
        .annotate(seconds=Sum(F("end") - F("start")))
        .values_list("owner_id", "seconds")
    )


def transcription_queue_positions(*, batch_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, int]:
    """Where the pending batches ``batch_ids`` stand: 1 for the next to start, 2 for the one after, ...

    The scheduler's fair order (docs/transcription.md, "Scheduling") played forward from now
    over the work waiting: the pending units of batches under way, and the pending batches,
    each taken as units of ``TRANSCRIPTION_UNIT_SECONDS`` until it is planned. An estimate:
    a job queued later by a user served less can still go ahead. A few queries whatever the
    number of jobs asked about.
    """
    wanted = set(batch_ids)
    if not wanted:
        return {}
    now = timezone.now()
    served: defaultdict[Any, float] = defaultdict(float, unit_served_seconds(now=now))
    # Each user's work, oldest job first: (created_at, batch_id, position in the batch, seconds, starts it).
    work: defaultdict[Any, list[tuple[dt.datetime, str, int, float, bool]]] = defaultdict(list)
    # A speakers unit is not in the fair order (it has a message of its own).
    for owner, created_at, batch_id, index, start, end in (
        TranscriptionUnit.objects.filter(status=TranscriptionUnit.Status.PENDING)
        .exclude(kind=TranscriptionUnit.Kind.SPEAKERS)
        .values_list("owner_id", "created_at", "batch_id", "index", "start", "end")
    ):
        work[owner].append((created_at, batch_id.hex, index, end - start, False))
    unit_seconds = settings.TRANSCRIPTION_UNIT_SECONDS
    batches = (
        Transcription.objects.filter(status=Transcription.Status.PENDING)
        .values("batch_id", "owner_id")
        .annotate(created_at=Min("created_at"), duration=Min("file__duration"))
    )
    for row in batches:
        duration = max(float(row["duration"] or 0.0), 0.0)
        count = max(1, math.ceil(duration / unit_seconds - 1e-9))
        for index in range(count):
            seconds = min(unit_seconds, duration - index * unit_seconds) if duration else 0.0
            work[row["owner_id"]].append((row["created_at"], row["batch_id"].hex, index, seconds, index == 0))
    queues = {owner: deque(sorted(items)) for owner, items in work.items()}
    heap = [(served[owner], items[0][0], str(owner)) for owner, items in queues.items()]
    heapq.heapify(heap)
    owners = {str(owner): owner for owner in queues}
    positions: dict[uuid.UUID, int] = {}
    started = 0
    while heap and len(positions) < len(wanted):
        _, _, key = heapq.heappop(heap)
        owner = owners[key]
        created_at, batch_hex, _, seconds, starts = queues[owner].popleft()
        if starts:
            started += 1
            batch_id = uuid.UUID(batch_hex)
            if batch_id in wanted:
                positions[batch_id] = started
        served[owner] += seconds
        if queues[owner]:
            heapq.heappush(heap, (served[owner], queues[owner][0][0], key))
    return positions
