"""Events of jobs delivered to a real receiver on 127.0.0.1: bodies, signatures, retries, limits."""

from __future__ import annotations

import base64
import datetime as dt
import json
import socket
import time
from typing import Any

import pytest
import redis
from django.db import transaction
from django.utils import timezone
from rest_framework.test import APIClient
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from accounts.models import User
from tests.conftest import make_user
from tests.webhooks.conftest import MakeJob
from tests.webhooks.receiver import Reply, WebhookReceiver, register_receiver
from transcriptions.apis import TranscriptionOutputSerializer
from transcriptions.models import Transcription
from webhooks import services
from webhooks.models import WebhookDelivery, WebhookEndpoint
from webhooks.tasks import webhook_deliver_task, webhook_requeue_due_task
from whisper_site.celery import app as celery_app

COMPLETED = "transcription.completed"
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("allow_private_networks")]


def emit(job: Transcription, event_type: str, capture: Any) -> list[WebhookDelivery]:
    """Emit inside a transaction, as the job's status change does, and run what it queues on commit."""
    with capture(execute=True), transaction.atomic():
        deliveries = services.webhook_event_emit(job=job, event_type=event_type)
    return deliveries


def make_due(delivery: WebhookDelivery) -> None:
    """Time passes: the next attempt is due now."""
    WebhookDelivery.objects.filter(id=delivery.id).update(next_retry_at=timezone.now())


def test_an_event_is_one_delivery_per_subscribed_endpoint_sent_after_commit(
    user: User, make_job: MakeJob, django_capture_on_commit_callbacks: Any
) -> None:
    completed = WebhookEndpoint.objects.create(owner=user, url="http://127.0.0.1:9/a", events=[COMPLETED], secret="x")
    WebhookEndpoint.objects.create(owner=user, url="http://127.0.0.1:9/b", events=["transcription.failed"], secret="x")
    bob, _ = make_user("bob")
    WebhookEndpoint.objects.create(owner=bob, url="http://127.0.0.1:9/c", events=[COMPLETED], secret="x")
    job = make_job(user)
    with django_capture_on_commit_callbacks(execute=False) as callbacks, transaction.atomic():
        [delivery] = services.webhook_event_emit(job=job, event_type=COMPLETED)
    # Nothing is sent before the job's change commits.
    assert len(callbacks) == 1
    assert (delivery.endpoint_id, delivery.status, delivery.attempts) == (completed.id, "pending", 0)
    assert delivery.message_id == f"msg_{delivery.id.hex}"
    body = json.loads(delivery.payload)
    assert set(body) == {"type", "timestamp", "data"}
    assert body["type"] == COMPLETED
    assert dt.datetime.fromisoformat(body["timestamp"]).tzinfo is not None
    expected = dict(TranscriptionOutputSerializer(job).data)
    del expected["data"]
    assert body["data"] == expected
    assert body["data"]["uuid"] == job.id.hex and body["data"]["status"] == "completed"


def test_a_failed_job_carries_its_error(user: User, make_job: MakeJob, django_capture_on_commit_callbacks: Any) -> None:
    WebhookEndpoint.objects.create(owner=user, url="http://127.0.0.1:9/", events=["transcription.failed"], secret="x")
    job = make_job(user, status=Transcription.Status.FAILED)
    with django_capture_on_commit_callbacks(execute=False):
        [delivery] = services.webhook_event_emit(job=job, event_type="transcription.failed")
    data = json.loads(delivery.payload)["data"]
    assert (data["status"], data["error"]) == ("failed", job.error)
    assert "data" not in data


def test_an_event_rolled_back_with_its_job_is_never_sent(
    user: User, make_job: MakeJob, webhook_receiver: WebhookReceiver, django_capture_on_commit_callbacks: Any
) -> None:
    register_receiver(user=user, receiver=webhook_receiver)
    job = make_job(user)
    with django_capture_on_commit_callbacks(execute=True):
        with pytest.raises(RuntimeError), transaction.atomic():
            services.webhook_event_emit(job=job, event_type=COMPLETED)
            raise RuntimeError("the job's change failed")
    assert not WebhookDelivery.objects.exists()
    assert webhook_receiver.requests == []


def test_no_endpoint_no_delivery_and_unknown_events_are_a_programming_error(user: User, make_job: MakeJob) -> None:
    job = make_job(user)
    assert services.webhook_event_emit(job=job, event_type=COMPLETED) == []
    with pytest.raises(ValueError):
        services.webhook_event_emit(job=job, event_type="transcription.started")


def test_a_500_is_retried_with_the_same_webhook_id_and_both_verify(
    user: User,
    client_session: APIClient,
    make_job: MakeJob,
    webhook_receiver: WebhookReceiver,
    django_capture_on_commit_callbacks: Any,
) -> None:
    endpoint = register_receiver(user=user, receiver=webhook_receiver)
    webhook_receiver.answer(Reply(status=500, body=b"database is down"), Reply(status=204))
    job = make_job(user)
    before = timezone.now()
    [delivery] = emit(job, COMPLETED, django_capture_on_commit_callbacks)

    # The first attempt ran once the transaction committed, and failed; the next is due in 5 s.
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("pending", 1, 500)
    assert delivery.last_error == "HTTP 500: database is down"
    assert before + dt.timedelta(seconds=4) < delivery.next_retry_at < timezone.now() + dt.timedelta(seconds=6)
    # Its own message is not due yet: a task that comes early does nothing.
    webhook_deliver_task(delivery.id.hex)
    assert len(webhook_receiver.requests) == 1

    make_due(delivery)
    webhook_deliver_task(delivery.id.hex)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("succeeded", 2, 204)
    assert delivery.last_error == "" and delivery.next_retry_at is None and delivery.completed_at is not None

    first, second = webhook_receiver.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == delivery.message_id
    assert first.body == second.body
    assert first.headers["content-type"] == "application/json"
    payloads = webhook_receiver.verified(endpoint.secret)
    assert payloads[0] == payloads[1] == json.loads(delivery.payload)
    # Another secret does not verify.
    other = services.webhook_endpoint_create(user=user, url=webhook_receiver.url, events=[COMPLETED])
    with pytest.raises(WebhookVerificationError):
        Webhook(other.secret).verify(first.body, first.headers)

    log = client_session.get(f"/api/v1/user/webhooks/{endpoint.id.hex}/deliveries").json()["deliveries"]
    assert len(log) == 1
    assert {key: log[0][key] for key in ("webhook_id", "event", "status", "attempts", "last_status_code")} == {
        "webhook_id": delivery.message_id,
        "event": COMPLETED,
        "status": "succeeded",
        "attempts": 2,
        "last_status_code": 204,
    }
    assert log[0]["next_retry_at"] is None


def test_retries_follow_the_schedule_then_the_delivery_fails(
    user: User, make_job: MakeJob, webhook_receiver: WebhookReceiver, django_capture_on_commit_callbacks: Any
) -> None:
    register_receiver(user=user, receiver=webhook_receiver)
    webhook_receiver.answer(*[Reply(status=503)] * services.MAX_ATTEMPTS)
    [delivery] = emit(make_job(user), COMPLETED, django_capture_on_commit_callbacks)
    delays = []
    for attempt in range(1, services.MAX_ATTEMPTS + 1):
        delivery.refresh_from_db()
        assert delivery.attempts == attempt
        if attempt < services.MAX_ATTEMPTS:
            assert delivery.status == "pending"
            delays.append(round((delivery.next_retry_at - delivery.last_attempt_at).total_seconds()))
            make_due(delivery)
            webhook_deliver_task(delivery.id.hex)
    assert delays == [5, 300, 1800, 7200, 18000, 36000, 36000]
    assert (delivery.status, delivery.next_retry_at, delivery.last_status_code) == ("failed", None, 503)
    assert len(webhook_receiver.requests) == services.MAX_ATTEMPTS == 8
    # A failed delivery is finished: nothing makes another attempt.
    webhook_deliver_task(delivery.id.hex)
    assert len(webhook_receiver.requests) == 8


def test_a_redirect_is_a_failure_and_is_not_followed(
    user: User, make_job: MakeJob, webhook_receiver: WebhookReceiver, django_capture_on_commit_callbacks: Any
) -> None:
    register_receiver(user=user, receiver=webhook_receiver)
    webhook_receiver.answer(Reply(status=302, headers={"Location": f"http://127.0.0.1:{webhook_receiver.port}/x"}))
    [delivery] = emit(make_job(user), COMPLETED, django_capture_on_commit_callbacks)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("pending", 1, 302)
    assert delivery.last_error == "HTTP 302 (redirects are not followed)"
    assert [request.path for request in webhook_receiver.requests] == ["/hooks/whisper"]


def test_a_slow_receiver_times_out(
    user: User,
    make_job: MakeJob,
    webhook_receiver: WebhookReceiver,
    django_capture_on_commit_callbacks: Any,
    settings: Any,
) -> None:
    settings.WEBHOOK_TIMEOUT_SECONDS = 0.5
    register_receiver(user=user, receiver=webhook_receiver)
    webhook_receiver.answer(Reply(status=200, delay=3.0))
    started = time.monotonic()
    [delivery] = emit(make_job(user), COMPLETED, django_capture_on_commit_callbacks)
    assert time.monotonic() - started < 2.0
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("pending", 1, None)
    assert delivery.last_error == "Timed out after 0.5 s"


def test_only_the_start_of_an_answer_is_read(
    user: User,
    make_job: MakeJob,
    webhook_receiver: WebhookReceiver,
    django_capture_on_commit_callbacks: Any,
    settings: Any,
) -> None:
    settings.WEBHOOK_RESPONSE_MAX_BYTES = 1024
    register_receiver(user=user, receiver=webhook_receiver)
    size = 200 * 1024 * 1024
    webhook_receiver.answer(Reply(status=500, body_size=size))
    started = time.monotonic()
    [delivery] = emit(make_job(user), COMPLETED, django_capture_on_commit_callbacks)
    assert time.monotonic() - started < 5.0
    delivery.refresh_from_db()
    assert (delivery.last_status_code, delivery.last_error) == (500, "HTTP 500: " + "x" * 200)
    # The connection was closed after the first KB: the receiver could not write its 200 MB.
    deadline = time.monotonic() + 5
    while webhook_receiver.bytes_written < size and time.monotonic() < deadline:
        before = webhook_receiver.bytes_written
        time.sleep(0.2)
        if webhook_receiver.bytes_written == before:
            break
    assert webhook_receiver.bytes_written < size


def test_a_closed_port_is_a_failed_attempt(
    user: User, make_job: MakeJob, django_capture_on_commit_callbacks: Any
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    services.webhook_endpoint_create(user=user, url=f"http://127.0.0.1:{port}/", events=[COMPLETED])
    [delivery] = emit(make_job(user), COMPLETED, django_capture_on_commit_callbacks)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("pending", 1, "Connection refused")


def test_the_recovery_sends_overdue_deliveries_only(
    user: User, make_job: MakeJob, webhook_receiver: WebhookReceiver, settings: Any
) -> None:
    settings.WEBHOOK_RECOVERY_AFTER_SECONDS = 120
    register_receiver(user=user, receiver=webhook_receiver)
    # Recorded, but their messages were lost (the transaction's on-commit never ran here).
    job = make_job(user)
    lost, recent = (services.webhook_event_emit(job=job, event_type=COMPLETED)[0] for _ in range(2))
    WebhookDelivery.objects.filter(id=lost.id).update(next_retry_at=timezone.now() - dt.timedelta(minutes=10))
    assert webhook_requeue_due_task() == 1
    lost.refresh_from_db()
    recent.refresh_from_db()
    assert (lost.status, lost.attempts) == ("succeeded", 1)
    assert (recent.status, recent.attempts) == ("pending", 0)
    assert [request.headers["webhook-id"] for request in webhook_receiver.requests] == [lost.message_id]


def test_a_deleted_endpoints_deliveries_are_dropped(
    user: User, make_job: MakeJob, webhook_receiver: WebhookReceiver
) -> None:
    endpoint = register_receiver(user=user, receiver=webhook_receiver)
    [delivery] = services.webhook_event_emit(job=make_job(user), event_type=COMPLETED)
    services.webhook_endpoint_delete(user=user, endpoint_id=endpoint.id)
    webhook_deliver_task(delivery.id.hex)
    assert webhook_receiver.requests == []


@pytest.mark.django_db(transaction=True)
def test_deliveries_are_queued_on_the_webhook_queue(user: User, make_job: MakeJob, settings: Any) -> None:
    """Through a real Redis broker (database 13): the message goes to WEBHOOK_QUEUE, not a transcription queue."""
    url = "redis://127.0.0.1:6379/13"
    client = redis.Redis.from_url(url)
    client.flushdb()
    settings.WEBHOOK_QUEUE = "webhooks-test"
    WebhookEndpoint.objects.create(owner=user, url="http://127.0.0.1:9/", events=[COMPLETED], secret="x")
    job = make_job(user)
    previous = (celery_app.conf.CELERY_TASK_ALWAYS_EAGER, celery_app.conf.CELERY_BROKER_URL)
    celery_app.conf.CELERY_TASK_ALWAYS_EAGER = False
    celery_app.conf.CELERY_BROKER_URL = url
    celery_app._after_fork()  # connection pools made for another broker are dropped
    try:
        with transaction.atomic():
            [delivery] = services.webhook_event_emit(job=job, event_type=COMPLETED)
            assert client.llen("webhooks-test") == 0
        [raw] = client.lrange("webhooks-test", 0, -1)
    finally:
        celery_app.conf.CELERY_TASK_ALWAYS_EAGER, celery_app.conf.CELERY_BROKER_URL = previous
        celery_app._after_fork()
        client.flushdb()
    message = json.loads(raw)
    assert message["headers"]["task"] == "webhooks.deliver"
    args, _, _ = json.loads(base64.b64decode(message["body"]))
    assert args == [delivery.id.hex]
    assert message["properties"]["delivery_info"]["routing_key"] == "webhooks-test"
