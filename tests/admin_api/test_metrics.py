"""GET /admin/metrics: Prometheus text derived from the database and the broker at scrape time."""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from kombu import Connection
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from accounts import services as account_services
from accounts.services import InsufficientBalance
from admin_api import metrics
from files.models import File
from tests.conftest import make_user, redis_queues_delete, redis_required
from transcriptions import engine
from transcriptions.models import Transcription
from transcriptions.services import runs
from transcriptions.services.jobs import conversion_failed_message
from webhooks.models import WebhookDelivery, WebhookEndpoint

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("installed_models")]

JFK = Path(__file__).resolve().parents[1] / "data" / "jfk.flac"
E2E_REDIS_URL = "redis://127.0.0.1:6379/15"
METRICS = "/api/v1/admin/metrics"
TINY = "ggml-tiny.en"
_numbers = itertools.count()

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def admin_client() -> APIClient:
    admin, _ = make_user(f"root{next(_numbers)}", is_admin=True)
    _, key = account_services.api_key_create(user=admin, name="prometheus")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def scrape(client: APIClient) -> Samples:
    """Every sample of one scrape, parsed by prometheus_client's own parser."""
    response = client.get(METRICS)
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def label_values(samples: Samples, name: str, label: str) -> set[str]:
    return {dict(labels)[label] for sample_name, labels in samples if sample_name == name}


def upload(client: APIClient, capture: Any) -> File:
    """POST /file tests/data/jfk.flac, converted in this process (eager Celery) on commit."""
    with capture(execute=True):
        response = client.post(
            "/api/v1/file", {"file": [SimpleUploadedFile(JFK.name, JFK.read_bytes())]}, format="multipart"
        )
    assert response.status_code == 200, response.content
    return File.objects.get(id=response.json()["files"][0]["uuid"])


def transcribe(client: APIClient, file: File, capture: Any, **body: Any) -> None:
    with capture(execute=True):
        response = client.post("/api/v1/transcribe", {"uuid": file.id.hex, **body}, format="json")
    assert response.status_code == 200, response.content


def user_client(**extra: Any) -> APIClient:
    _, session = make_user(f"user{next(_numbers)}", **extra)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Basic {session.id.hex}")
    return client


# --- Who may read them -------------------------------------------------------------------


def test_without_credentials_it_is_a_401_in_plain_text(anon: APIClient) -> None:
    response = anon.get(METRICS)
    assert response.status_code == 401
    assert response.content == b"Missing valid Authorization header with session or API key"


def test_a_user_who_is_not_an_admin_gets_the_admin_403(client_key: APIClient) -> None:
    response = client_key.get(METRICS)
    assert (response.status_code, response.content) == (403, b"Access denied. Admin privileges required")
    assert response["Content-Type"] == "text/plain; charset=utf-8"


def test_an_admin_session_works_too_and_any_accept_header_gets_the_text() -> None:
    admin, session = make_user("rootsession", is_admin=True)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Basic {session.id.hex}")
    # Prometheus asks for OpenMetrics first; a browser for HTML; both get the text format.
    for accept in ("application/openmetrics-text;version=1.0.0,text/plain;q=0.5", "application/json", "text/html"):
        response = client.get(METRICS, HTTP_ACCEPT=accept)
        assert response.status_code == 200
        assert response.content.startswith(b"# HELP ")


# --- Values after real jobs ---------------------------------------------------------------


def test_jobs_durations_real_time_factors_failures_and_uploads_after_real_jobs(
    django_capture_on_commit_callbacks: Any,
) -> None:
    admin = admin_client()
    empty = scrape(admin)
    assert value(empty, "whisper_transcription_jobs", status="completed", model=TINY) == 0

    payer = user_client()
    file = upload(payer, django_capture_on_commit_callbacks)
    transcribe(payer, file, django_capture_on_commit_callbacks, format=["verbose_json", "srt", "vtt"])
    poor = user_client(token_balance=5)
    poor_file = upload(poor, django_capture_on_commit_callbacks)
    transcribe(poor, poor_file, django_capture_on_commit_callbacks)
    completed = list(Transcription.objects.filter(status="completed"))
    assert len(completed) == 3 and Transcription.objects.filter(status="failed").count() == 1

    samples = scrape(admin)
    assert value(samples, "whisper_transcription_jobs", status="completed", model=TINY) == 3
    assert value(samples, "whisper_transcription_jobs", status="failed", model=TINY) == 1
    assert value(samples, "whisper_transcription_jobs", status="pending", model=TINY) == 0
    # Every installed model is listed, with zeros.
    assert value(samples, "whisper_transcription_jobs", status="completed", model="ggml-base") == 0

    # The histograms hold exactly what the rows say.
    elapsed = [(job.processed_at - job.started_at).total_seconds() for job in completed]
    factors = [seconds / file.duration for seconds in elapsed]
    for bound in metrics.DURATION_BUCKETS:
        expected = sum(seconds <= bound for seconds in elapsed)
        assert value(samples, "whisper_transcription_duration_seconds_bucket", model=TINY, le=_le(bound)) == expected
    for bound in metrics.REAL_TIME_FACTOR_BUCKETS:
        expected = sum(factor <= bound for factor in factors)
        assert value(samples, "whisper_transcription_real_time_factor_bucket", model=TINY, le=_le(bound)) == expected
    assert value(samples, "whisper_transcription_duration_seconds_bucket", model=TINY, le="+Inf") == 3
    assert value(samples, "whisper_transcription_duration_seconds_gcount", model=TINY) == 3
    # SQLite's date functions count in milliseconds: up to 2 ms a job.
    assert value(samples, "whisper_transcription_duration_seconds_gsum", model=TINY) == pytest.approx(
        sum(elapsed), abs=2e-3 * len(elapsed)
    )
    assert value(samples, "whisper_transcription_real_time_factor_gsum", model=TINY) == pytest.approx(
        sum(factors), abs=1e-3
    )
    assert all(seconds > 0 for seconds in elapsed)

    assert value(samples, "whisper_transcription_failures", reason="insufficient_balance") == 1
    assert sum(v for (name, _), v in samples.items() if name == "whisper_transcription_failures") == 1

    assert value(samples, "whisper_file_uploads", kind="audio", state="ready") == 2
    assert value(samples, "whisper_file_upload_bytes", kind="audio") == 2 * JFK.stat().st_size
    assert value(samples, "whisper_file_uploads", kind="video", state="ready") == 0


def _le(bound: float) -> str:
    return metrics.floatToGoString(bound)


def test_finished_work_counts_over_the_window_and_live_jobs_whatever_their_age(settings: Any) -> None:
    settings.METRICS_WINDOW_SECONDS = 3600
    owner, _ = make_user("owner")
    file = File.objects.create(owner=owner, filename="a.mp3", kind="audio", content_type="audio/mpeg", blake3="a" * 64)
    old = timezone.now() - dt.timedelta(hours=2)
    for status in ("pending", "processing", "completed", "failed"):
        Transcription.objects.create(owner=owner, file=file, model=TINY, format="srt", status=status, created_at=old)
    Transcription.objects.create(owner=owner, file=file, model=TINY, format="srt", status="completed")
    samples = scrape(admin_client())
    assert value(samples, "whisper_metrics_window_seconds") == 3600
    counts = {
        status: value(samples, "whisper_transcription_jobs", status=status, model=TINY)
        for status in ("pending", "processing", "completed", "failed")
    }
    assert counts == {"pending": 1, "processing": 1, "completed": 1, "failed": 0}


def test_webhook_deliveries_by_outcome() -> None:
    owner, _ = make_user("hooked")
    endpoint = WebhookEndpoint.objects.create(owner=owner, url="https://example.com/h", events=[], secret="whsec_x")
    statuses = ["succeeded", "succeeded", "failed", "pending"]
    for status in statuses:
        WebhookDelivery.objects.create(
            endpoint=endpoint,
            event_type="transcription.completed",
            message_id=uuid.uuid4().hex,
            payload="{}",
            status=status,
        )
    # Created three hours ago (its UUIDv7 says so): outside the window, unless pending.
    for status in ("succeeded", "pending"):
        past = int((timezone.now() - dt.timedelta(hours=3)).timestamp() * 1000)
        WebhookDelivery.objects.create(
            id=uuid.UUID(int=(past << 80) | (7 << 76) | (2 << 62) | next(_numbers)),
            endpoint=endpoint,
            event_type="transcription.completed",
            message_id=uuid.uuid4().hex,
            payload="{}",
            status=status,
        )
    samples = scrape(admin_client())
    counts = {
        status: value(samples, "whisper_webhook_deliveries", status=status)
        for status in ("pending", "succeeded", "failed")
    }
    assert counts == {"pending": 2, "succeeded": 2, "failed": 1}


# --- Failure reasons: a fixed set of labels ----------------------------------------------------


def failure_messages(file: File, job: Transcription) -> dict[str, str]:
    """Each reason's message, built by the code that writes it."""
    reasons = {
        "timed_out": runs.failure_reason(SoftTimeLimitExceeded(), file=file, job=job, duration=30),
        "audio_missing": runs.failure_reason(FileNotFoundError(), file=file, job=job, duration=30),
        "model_missing": runs.failure_reason(engine.UnknownModel("x"), file=file, job=job, duration=30),
        "invalid_language": runs.failure_reason(engine.InvalidLanguage("x"), file=file, job=job, duration=30),
        "invalid_task": runs.failure_reason(engine.InvalidTask("x"), file=file, job=job, duration=30),
        "audio_undecodable": runs.failure_reason(av.error.InvalidDataError(1, "x"), file=file, job=job, duration=30),
        "out_of_memory": runs.failure_reason(MemoryError(), file=file, job=job, duration=30),
    }
    return {
        **reasons,
        "insufficient_balance": str(InsufficientBalance(required=11, available=5)),
        "conversion_failed": conversion_failed_message(file),
        "worker_lost": runs.lost_worker_message(3),
        "internal_error": "Transcription failed: internal error",
    }


def test_every_failure_the_code_writes_has_its_own_label_and_anything_else_is_other() -> None:
    owner, _ = make_user("failing")
    file = File.objects.create(
        owner=owner, filename="a.mp3", kind="audio", content_type="audio/mpeg", blake3="b" * 64,
        state="failed", error="Conversion failed: not audio",
    )  # fmt: skip
    job = Transcription(owner=owner, file=file, model=TINY, language="xx", task="translate", format="srt")
    messages = failure_messages(file, job)
    assert set(messages) == {label for label, _ in metrics.FAILURE_REASONS}
    # Anything else, such as text a user wrote, is "other": never a label of its own.
    messages_and_others = [*messages.items(), ("other", 'Weird "error"\n{le="1"} <b>'), ("other", "")]
    for label, message in messages_and_others:
        assert metrics.failure_reason_label(message) == label, message
        Transcription.objects.create(owner=owner, file=file, model=TINY, format="srt", status="failed", error=message)

    samples = scrape(admin_client())
    reasons = label_values(samples, "whisper_transcription_failures", "reason")
    assert reasons == {label for label, _ in metrics.FAILURE_REASONS} | {"other"}
    for label in messages:
        assert value(samples, "whisper_transcription_failures", reason=label) == 1
    assert value(samples, "whisper_transcription_failures", reason="other") == 2


def test_labels_come_from_fixed_sets_whatever_the_rows_hold() -> None:
    owner, _ = make_user("labels")
    file = File.objects.create(
        owner=owner, filename="<x>.mp3", kind="audio", content_type="audio/mpeg", blake3="c" * 64
    )
    Transcription.objects.create(owner=owner, file=file, model=TINY, format="srt", status="failed", error="x" * 5000)
    samples = scrape(admin_client())
    assert label_values(samples, "whisper_transcription_jobs", "status") == set(Transcription.Status.values)
    assert label_values(samples, "whisper_transcription_jobs", "model") == {"ggml-base", TINY}
    assert label_values(samples, "whisper_file_uploads", "kind") == set(File.Kind.values)
    assert label_values(samples, "whisper_file_uploads", "state") == set(File.State.values)
    assert label_values(samples, "whisper_webhook_deliveries", "status") == set(WebhookDelivery.Status.values)


def test_a_scrape_is_a_fixed_number_of_queries_whatever_the_rows() -> None:
    admin = admin_client()
    scrape(admin)  # the API key's last-used time is written at most once a minute

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            scrape(admin)
        return len(captured)

    few = queries()
    owner, _ = make_user("many")
    for number in range(30):
        file = File.objects.create(
            owner=owner, filename=f"{number}.mp3", kind="audio", content_type="audio/mpeg", blake3=f"{number:064x}",
            duration=11.0, state="ready", upload_size=1000,
        )  # fmt: skip
        now = timezone.now()
        Transcription.objects.create(
            owner=owner, file=file, model=TINY, format="srt", status="completed",
            started_at=now - dt.timedelta(seconds=number), processed_at=now,
        )  # fmt: skip
    assert queries() == few <= 8


# --- Queue depth ----------------------------------------------------------------------------


@pytest.fixture
def redis_queues(settings: Any) -> Iterator[tuple[str, str]]:
    """Queues of this test's own on Redis database 15, as the broker of the settings."""
    redis_required(E2E_REDIS_URL)
    tag = uuid.uuid4().hex[:12]
    transcriptions, conversions = f"metrics-t-{tag}", f"metrics-c-{tag}"
    settings.CELERY_BROKER_URL = E2E_REDIS_URL
    settings.CELERY_TASK_DEFAULT_QUEUE = settings.TRANSCRIPTION_QUEUE = transcriptions
    settings.CONVERSION_QUEUE = conversions
    settings.WEBHOOK_QUEUE = conversions
    try:
        yield transcriptions, conversions
    finally:
        redis_queues_delete(E2E_REDIS_URL, [transcriptions, conversions])


def test_queue_depth_counts_the_messages_waiting_in_redis_at_every_priority(redis_queues: tuple[str, str]) -> None:
    transcriptions, conversions = redis_queues
    with Connection(E2E_REDIS_URL) as broker:
        waiting = broker.SimpleQueue(transcriptions)
        for number in range(3):
            waiting.put({"n": number})
        urgent = broker.SimpleQueue(conversions)
        urgent.put({"n": 0})
        urgent.put({"n": 1}, priority=9)
        waiting.close()
        urgent.close()
    samples = scrape(admin_client())
    assert value(samples, "whisper_broker_up") == 1
    assert value(samples, "whisper_queue_messages", queue=transcriptions) == 3
    assert value(samples, "whisper_queue_messages", queue=conversions) == 2
    assert label_values(samples, "whisper_queue_messages", "queue") == {transcriptions, conversions}


def test_a_broker_that_does_not_answer_is_said_and_the_rest_still_answers(settings: Any) -> None:
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:9/0"
    samples = scrape(admin_client())
    assert value(samples, "whisper_broker_up") == 0
    assert not label_values(samples, "whisper_queue_messages", "queue")
    assert value(samples, "whisper_transcription_jobs", status="pending", model=TINY) == 0


def test_queue_depth_with_the_embedded_filesystem_broker(settings: Any, tmp_path: Path) -> None:
    folder = tmp_path / "queue"
    folder.mkdir()
    options = {"data_folder_in": str(folder), "data_folder_out": str(folder), "control_folder": str(tmp_path / "c")}
    settings.CELERY_BROKER_URL = "filesystem://"
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {**options, "visibility_timeout": 3600}
    settings.CELERY_TASK_DEFAULT_QUEUE = settings.TRANSCRIPTION_QUEUE = "celery"
    settings.CONVERSION_QUEUE, settings.WEBHOOK_QUEUE = "conversion", "webhooks"
    with Connection("filesystem://", transport_options=options) as broker:
        for queue, count in (("celery", 2), ("conversion", 1)):
            simple = broker.SimpleQueue(queue)
            for number in range(count):
                simple.put({"n": number})
            simple.close()
    samples = scrape(admin_client())
    assert value(samples, "whisper_broker_up") == 1
    depths = {
        queue: value(samples, "whisper_queue_messages", queue=queue) for queue in ("celery", "conversion", "webhooks")
    }
    assert depths == {"celery": 2, "conversion": 1, "webhooks": 0}


def test_the_duration_expression_agrees_with_python() -> None:
    owner, _ = make_user("clock")
    file = File.objects.create(
        owner=owner, filename="a.mp3", kind="audio", content_type="audio/mpeg", blake3="d" * 64, duration=4.0
    )
    start = timezone.now() - dt.timedelta(minutes=5)
    spans = [0.25, 1.5, 59.999, 4000.0]
    for span in spans:
        Transcription.objects.create(
            owner=owner, file=file, model=TINY, format="srt", status="completed",
            started_at=start, processed_at=start + dt.timedelta(seconds=span),
        )  # fmt: skip
    (row,) = metrics.completed_job_histograms(since=start - dt.timedelta(hours=1))
    assert row["seconds"] == pytest.approx(sum(spans), abs=1e-3)
    assert row["rtf_sum"] == pytest.approx(sum(spans) / 4.0, abs=1e-3)
    assert [row[f"le_{i}"] for i in range(len(metrics.DURATION_BUCKETS))] == [
        sum(span <= bound for span in spans) for bound in metrics.DURATION_BUCKETS
    ]
    assert row["count"] == 4
