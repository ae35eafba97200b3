"""The figures of ``GET /admin/metrics``, read from the database and the broker at scrape time.

Jobs are run by Celery workers, often on other machines: a counter kept in a worker
process would be lost when it exits and would need a shared folder to be summed
(prometheus_client's multiprocess mode, one machine only). Every figure here is instead
an aggregate of the rows the workers already write (jobs, files, webhook deliveries),
computed when Prometheus scrapes, so it is right however many processes and hosts run
the work, and nothing is kept in memory between scrapes.

Each scrape is a fixed number of queries whatever the size of the tables: one
``GROUP BY`` per metric family, histogram buckets as conditional counts in the same
query, each on an indexed column (a job's status and creation time, a file's upload
time, a delivery's time-ordered id). Finished work counts over ``METRICS_WINDOW_SECONDS``
(by creation time); pending and processing jobs and pending deliveries count whatever
their age. The figures over a window can fall as well as rise, so they are gauges and
gauge histograms, not counters.

Every label value comes from a bounded set: statuses, kinds and queue names from the
code and the settings, model names from the installed models (a job can only name one),
and failure reasons from :data:`FAILURE_REASONS`, never from the text of an error.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import redis
from django.conf import settings
from django.db.models import Case, Count, F, Func, Q, Sum, Value, When
from django.db.models.fields import CharField, FloatField
from django.utils import timezone
from kombu.transport.redis import PRIORITY_STEPS, Channel
from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from files.models import File
from transcriptions.models import Transcription
from transcriptions.selectors import model_names
from webhooks.models import WebhookDelivery

# Seconds from the start of processing to completion.
DURATION_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
# Processing seconds per second of audio: below 1 is faster than real time.
REAL_TIME_FACTOR_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0)
# (label, how the stored error starts): the messages the transcriptions app writes when a
# job fails (transcriptions/services/runs.py, jobs.py, units.py; accounts' balance).
# The first match wins; anything else is "other". tests/admin_api/test_metrics.py builds
# each message with the code that writes it and checks its label here.
FAILURE_REASONS = (
    ("insufficient_balance", "Insufficient token balance."),
    ("conversion_failed", "File conversion failed"),
    ("timed_out", "Transcription timed out"),
    ("worker_lost", "Transcription failed after "),
    ("audio_missing", "Transcription failed: the file's audio is missing"),
    ("audio_undecodable", "Transcription failed: the file's audio could not be decoded"),
    ("model_missing", "Transcription failed: model "),
    ("out_of_memory", "Transcription failed: out of memory"),
    ("internal_error", "Transcription failed: internal error"),
    ("invalid_language", "Invalid language"),
    ("invalid_task", "Invalid task"),
)
OTHER_REASON = "other"
REDIS_TIMEOUT_SECONDS = 1.0

Status = Transcription.Status
LIVE_STATUSES = (Status.PENDING, Status.PROCESSING)


class ElapsedSeconds(Func):
    """Seconds from the datetime ``start`` to the datetime ``end``, as a float (SQLite and PostgreSQL)."""

    output_field = FloatField()
    arity = 2

    def __init__(self, end: str, start: str) -> None:
        super().__init__(F(end), F(start))

    def _operands(self, compiler: Any) -> tuple[str, str, list[Any]]:
        (end, end_params), (start, start_params) = (compiler.compile(e) for e in self.get_source_expressions())
        return end, start, [*end_params, *start_params]

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        # Django stores datetimes as ISO text on SQLite; julianday() reads it in days.
        end, start, params = self._operands(compiler)
        return f"((julianday({end}) - julianday({start})) * 86400.0)", params

    def as_sql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        end, start, params = self._operands(compiler)
        return f"CAST(EXTRACT(EPOCH FROM ({end} - {start})) AS double precision)", params


def failure_reason_label(error: str) -> str:
    """The bounded label of a stored job error (the same rule as the SQL of :func:`failure_counts`)."""
    for label, prefix in FAILURE_REASONS:
        if error.startswith(prefix):
            return label
    return OTHER_REASON


def uuid7_floor(moment: dt.datetime) -> uuid.UUID:
    """The smallest UUIDv7 of ``moment``'s millisecond: ids at or above it were made at or after it."""
    return uuid.UUID(int=int(moment.timestamp() * 1000) << 80)


# --- The queries -------------------------------------------------------------------------


def job_counts(*, since: dt.datetime) -> dict[tuple[str, str], int]:
    """(status, model) -> jobs: every pending or processing job, and the others created since ``since``."""
    rows = (
        Transcription.objects.filter(Q(status__in=LIVE_STATUSES) | Q(created_at__gte=since))
        .values("status", "model")
        .annotate(jobs=Count("id"))
        .order_by()
    )
    return {(row["status"], row["model"]): row["jobs"] for row in rows}


def completed_job_histograms(*, since: dt.datetime) -> list[dict[str, Any]]:
    """Per model, the duration and real-time factor buckets of the jobs completed that were created since ``since``.

    Each row: ``model``, ``count``, ``seconds`` (their sum), ``le_<i>`` (jobs of at most
    ``DURATION_BUCKETS[i]`` seconds), ``rtf_count``, ``rtf_sum`` and ``rtf_le_<i>`` (over the
    jobs of files with a known duration).
    """
    timed = Q(audio__gt=0)
    buckets = {f"le_{i}": Count("id", filter=Q(elapsed__lte=bound)) for i, bound in enumerate(DURATION_BUCKETS)}
    # elapsed <= bound * audio: the factor's bucket without a division per row.
    rtf_buckets = {
        f"rtf_le_{i}": Count("id", filter=timed & Q(elapsed__lte=F("audio") * bound))
        for i, bound in enumerate(REAL_TIME_FACTOR_BUCKETS)
    }
    rows = (
        Transcription.objects.filter(
            status=Status.COMPLETED, created_at__gte=since, started_at__isnull=False, processed_at__isnull=False
        )
        .alias(elapsed=ElapsedSeconds("processed_at", "started_at"), audio=F("file__duration"))
        .values("model")
        .annotate(
            count=Count("id"),
            seconds=Sum("elapsed"),
            rtf_count=Count("id", filter=timed),
            rtf_sum=Sum(F("elapsed") / F("audio"), filter=timed, output_field=FloatField()),
            **buckets,
            **rtf_buckets,
        )
        .order_by()
    )
    return list(rows)


def failure_counts(*, since: dt.datetime) -> dict[str, int]:
    """Failure reason label -> failed jobs created since ``since``."""
    reason = Case(
        *(When(error__startswith=prefix, then=Value(label)) for label, prefix in FAILURE_REASONS),
        default=Value(OTHER_REASON),
        output_field=CharField(),
    )
    rows = (
        Transcription.objects.filter(status=Status.FAILED, created_at__gte=since)
        .annotate(reason=reason)
        .values("reason")
        .annotate(jobs=Count("id"))
        .order_by()
    )
    return {row["reason"]: row["jobs"] for row in rows}


def upload_totals(*, since: dt.datetime) -> list[dict[str, Any]]:
    """Per (kind, state): files uploaded since ``since`` and the bytes uploaded for them."""
    rows = (
        File.objects.filter(uploaded_at__gte=since)
        .values("kind", "state")
        .annotate(files=Count("id"), bytes=Sum("upload_size"))
        .order_by()
    )
    return list(rows)


def delivery_counts(*, since: dt.datetime) -> dict[str, int]:
    """Status -> webhook deliveries: every pending one, and the others created since ``since``."""
    # Deliveries have no index on their creation time; their ids are UUIDv7, ordered by
    # creation, so the primary key bounds the window.
    rows = (
        WebhookDelivery.objects.filter(Q(status=WebhookDelivery.Status.PENDING) | Q(id__gte=uuid7_floor(since)))
        .values("status")
        .annotate(deliveries=Count("id"))
        .order_by()
    )
    return {row["status"]: row["deliveries"] for row in rows}


def queue_names() -> list[str]:
    """The Celery queues the service sends to, each once."""
    return sorted(
        {
            settings.CELERY_TASK_DEFAULT_QUEUE,
            settings.TRANSCRIPTION_QUEUE,
            settings.CONVERSION_QUEUE,
            settings.WEBHOOK_QUEUE,
        }
    )


def queue_depths(queues: Iterable[str]) -> dict[str, int] | None:
    """Queue -> messages waiting in the broker (not those a worker holds); None when it cannot be read.

    Redis: kombu keeps a queue as one list per priority step (``name``, then
    ``name\\x06\\x163`` ...), summed here. The embedded filesystem broker: one file per
    message in its folder, named ``<time>_<id>.<queue>.msg``. Another broker: None.
    """
    url = settings.CELERY_BROKER_URL
    options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
    if url.startswith(("redis://", "rediss://", "unix://")):
        steps = options.get("priority_steps", PRIORITY_STEPS)
        sep = options.get("sep", Channel.sep)
        prefix = options.get("global_keyprefix", "")
        keys = {
            queue: [f"{prefix}{queue}{sep}{step}" if step else f"{prefix}{queue}" for step in steps] for queue in queues
        }
        try:
            client = redis.Redis.from_url(
                url, socket_connect_timeout=REDIS_TIMEOUT_SECONDS, socket_timeout=REDIS_TIMEOUT_SECONDS
            )
            try:
                pipe = client.pipeline(transaction=False)
                for names in keys.values():
                    for name in names:
                        pipe.llen(name)
                lengths = iter(pipe.execute())
            finally:
                client.close()
        except (redis.RedisError, OSError):
            return None
        return {queue: sum(next(lengths) for _ in names) for queue, names in keys.items()}
    if url.startswith("filesystem://"):
        folder = options.get("data_folder_in")
        if not folder:
            return None
        depths = dict.fromkeys(queues, 0)
        suffixes = {f".{queue}.msg": queue for queue in depths}
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    # <time>_<id>.<queue>.msg: the queue is between the first dot and ".msg".
                    _, dot, rest = entry.name.partition(".")
                    queue = suffixes.get(dot + rest)
                    if queue is not None:
                        depths[queue] += 1
        except OSError:
            return None
        return depths
    return None


# --- The collector -----------------------------------------------------------------------


class ServiceCollector(Collector):
    """Every metric of the service, gathered anew at each ``collect()``."""

    def __init__(self, *, now: dt.datetime | None = None) -> None:
        self.now = now

    def collect(self) -> Iterator[Metric]:
        now = self.now or timezone.now()
        window = settings.METRICS_WINDOW_SECONDS
        since = now - dt.timedelta(seconds=window)
        models = model_names()

        yield GaugeMetricFamily(
            "whisper_metrics_window_seconds",
            "The window over which finished work is counted (METRICS_WINDOW_SECONDS).",
            value=window,
        )

        jobs = GaugeMetricFamily(
            "whisper_transcription_jobs",
            "Jobs by status and model: every pending and processing job, the others created within the window.",
            labels=["status", "model"],
        )
        counts = job_counts(since=since)
        for model in sorted({*models, *(model for _, model in counts)}):
            for status in Status.values:
                jobs.add_metric([status, model], counts.get((status, model), 0))
        yield jobs

        durations = GaugeHistogramMetricFamily(
            "whisper_transcription_duration_seconds",
            "Seconds from the start of processing to completion of the jobs completed within the window, per model.",
            labels=["model"],
        )
        factors = GaugeHistogramMetricFamily(
            "whisper_transcription_real_time_factor",
            "Processing seconds per second of audio of the jobs completed within the window, per model.",
            labels=["model"],
        )
        rows = {row["model"]: row for row in completed_job_histograms(since=since)}
        # An installed model with no job in the window shows empty buckets, not no data.
        empty = {"count": 0, "seconds": 0.0, "rtf_count": 0, "rtf_sum": 0.0}
        for model in models:
            rows.setdefault(model, {"model": model, **empty, **dict.fromkeys(_bucket_keys(), 0)})
        for row in sorted(rows.values(), key=lambda row: row["model"]):
            durations.add_metric(
                [row["model"]],
                _buckets(DURATION_BUCKETS, [row[f"le_{i}"] for i in range(len(DURATION_BUCKETS))], row["count"]),
                gsum_value=float(row["seconds"] or 0.0),
            )
            factors.add_metric(
                [row["model"]],
                _buckets(
                    REAL_TIME_FACTOR_BUCKETS,
                    [row[f"rtf_le_{i}"] for i in range(len(REAL_TIME_FACTOR_BUCKETS))],
                    row["rtf_count"],
                ),
                gsum_value=float(row["rtf_sum"] or 0.0),
            )
        yield durations
        yield factors

        failures = GaugeMetricFamily(
            "whisper_transcription_failures",
            "Jobs failed within the window, by reason (a fixed set of labels read from the error).",
            labels=["reason"],
        )
        failed = failure_counts(since=since)
        for label in [label for label, _ in FAILURE_REASONS] + [OTHER_REASON]:
            failures.add_metric([label], failed.get(label, 0))
        yield failures

        uploads = GaugeMetricFamily(
            "whisper_file_uploads",
            "Files uploaded within the window (a repeated upload of stored bytes is not counted), by kind and state.",
            labels=["kind", "state"],
        )
        uploaded_bytes = GaugeMetricFamily(
            "whisper_file_upload_bytes",
            "Bytes uploaded within the window, by kind of file.",
            labels=["kind"],
        )
        totals = {(row["kind"], row["state"]): row for row in upload_totals(since=since)}
        for kind in File.Kind.values:
            for state in File.State.values:
                row = totals.get((kind, state))
                uploads.add_metric([kind, state], row["files"] if row else 0)
            size = sum(row["bytes"] or 0 for (k, _), row in totals.items() if k == kind)
            uploaded_bytes.add_metric([kind], size)
        yield uploads
        yield uploaded_bytes

        deliveries = GaugeMetricFamily(
            "whisper_webhook_deliveries",
            "Webhook deliveries by outcome: every pending one, the succeeded and failed ones created within the window.",
            labels=["status"],
        )
        delivered = delivery_counts(since=since)
        for status in WebhookDelivery.Status.values:
            deliveries.add_metric([status], delivered.get(status, 0))
        yield deliveries

        queues = queue_names()
        depths = queue_depths(queues)
        yield GaugeMetricFamily(
            "whisper_broker_up",
            "Whether the broker's queues could be read (1) or not (0).",
            value=int(depths is not None),
        )
        if depths is not None:
            depth = GaugeMetricFamily(
                "whisper_queue_messages",
                "Messages waiting in each Celery queue (not yet taken by a worker).",
                labels=["queue"],
            )
            for queue in queues:
                depth.add_metric([queue], depths[queue])
            yield depth


def _bucket_keys() -> list[str]:
    return [f"le_{i}" for i in range(len(DURATION_BUCKETS))] + [
        f"rtf_le_{i}" for i in range(len(REAL_TIME_FACTOR_BUCKETS))
    ]


def _buckets(bounds: Iterable[float], counts: Iterable[int], total: int) -> list[tuple[str, float]]:
    """prometheus_client's cumulative buckets: each bound with its count, then ``+Inf`` with the total."""
    pairs = [(floatToGoString(bound), float(count)) for bound, count in zip(bounds, counts, strict=True)]
    return [*pairs, ("+Inf", float(total))]
