"""GET /admin/metrics counts what a worker in another process did: the figures come from the database."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from accounts import services as account_services
from files.models import File
from tests.conftest import make_user
from tests.transcriptions.conftest import DATA_DIR
from tests.transcriptions.e2e.conftest import E2E, E2E_REDIS_URL, upload, wait_for
from transcriptions.models import Transcription

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def scrape(client: APIClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = client.get("/api/v1/admin/metrics")
    assert response.status_code == 200, response.content
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def test_a_job_run_by_the_worker_process_shows_in_the_metrics(e2e: E2E, settings: object) -> None:
    settings.CELERY_BROKER_URL = E2E_REDIS_URL  # type: ignore[attr-defined]
    admin, _ = make_user("metrics_admin", is_admin=True)
    _, key = account_services.api_key_create(user=admin, name="prometheus")
    admin_client = APIClient()
    admin_client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    _, session = make_user("metrics_user")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Basic {session.id.hex}")

    file_id = upload(client, DATA_DIR / "jfk.flac")
    response = client.post("/api/v1/transcribe", {"uuid": file_id, "format": ["srt", "vtt"]}, format="json")
    assert response.status_code == 200, response.content
    # The jobs run once the WAV is made; the file is ready once its MP3 is made too.
    wait_for(
        lambda: (
            Transcription.objects.filter(status="completed").count() == 2
            and File.objects.filter(state="ready").count() == 1
        ),
        what="two completed jobs and the file ready",
        timeout=180,
    )

    samples = scrape(admin_client)
    tiny = "ggml-tiny.en"
    assert samples[("whisper_transcription_jobs", frozenset({("status", "completed"), ("model", tiny)}))] == 2
    assert samples[("whisper_transcription_duration_seconds_gcount", frozenset({("model", tiny)}))] == 2
    assert samples[("whisper_file_uploads", frozenset({("kind", "audio"), ("state", "ready")}))] == 1
    assert samples[("whisper_broker_up", frozenset())] == 1
    # The worker took every message: nothing waits in the session's queues.
    for queue in (e2e.queue, e2e.conversion_queue, e2e.webhook_queue):
        assert samples[("whisper_queue_messages", frozenset({("queue", queue)}))] == 0
