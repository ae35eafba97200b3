"""End to end with a real worker: webhook events of jobs, signed, retried, verified by `standardwebhooks`."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import User
from tests.transcriptions.conftest import DATA_DIR
from tests.transcriptions.e2e.conftest import E2E, upload, wait_for
from tests.transcriptions.e2e.test_e2e import client_for, transcribe, wait_done
from tests.webhooks.receiver import Reply, WebhookReceiver
from transcriptions.models import Transcription

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("allow_private_networks"),
]


def register(client: APIClient, receiver: WebhookReceiver) -> dict[str, Any]:
    response = client.post(
        "/api/v1/user/webhooks",
        {"url": receiver.url, "events": ["transcription.completed", "transcription.failed"]},
        format="json",
    )
    assert response.status_code == 200, response.content
    return response.json()


def arrival(receiver: WebhookReceiver, count: int) -> None:
    wait_for(lambda: len(receiver.requests) >= count, timeout=60, what=f"{count} webhook deliveries")


def test_a_completed_job_is_delivered_signed_and_retried_with_one_webhook_id(
    e2e: E2E, webhook_receiver: WebhookReceiver
) -> None:
    _, client = client_for("hooked")
    endpoint = register(client, webhook_receiver)
    assert endpoint["secret"].startswith("whsec_")
    webhook_receiver.answer(Reply(status=500))  # the receiver fails once, then answers 200
    (job_id,) = transcribe(client, {"uuid": upload(client, DATA_DIR / "jfk.flac")})
    (body,) = wait_done([job_id])
    assert body["status"] == "completed"
    completed_at = Transcription.objects.values_list("processed_at", flat=True).get(id=job_id)
    arrival(webhook_receiver, 1)
    first_delivery = timezone.now()
    arrival(webhook_receiver, 2)  # the retry, 5 s later

    payloads = webhook_receiver.verified(endpoint["secret"])  # raises if a signature does not verify
    assert len(payloads) == 2 and payloads[0] == payloads[1]
    ids = {request.headers["webhook-id"] for request in webhook_receiver.requests}
    assert len(ids) == 1 and ids.pop().startswith("msg_")
    event = payloads[0]
    assert event["type"] == "transcription.completed"
    assert event["data"]["uuid"] == job_id and event["data"]["status"] == "completed"
    assert "data" not in event["data"]  # the job without its transcript
    # The first delivery follows completion within seconds (the worker sends it on commit).
    assert first_delivery - completed_at < dt.timedelta(seconds=30)

    log = client.get(f"/api/v1/user/webhooks/{endpoint['uuid']}/deliveries").json()
    (delivery,) = log["deliveries"]
    assert (delivery["event"], delivery["attempts"], delivery["status"]) == ("transcription.completed", 2, "succeeded")
    assert delivery["last_status_code"] == 200


def test_a_failed_job_is_delivered_as_transcription_failed(e2e: E2E, webhook_receiver: WebhookReceiver) -> None:
    user, client = client_for("hooked_poor")
    endpoint = register(client, webhook_receiver)
    User.objects.filter(pk=user.pk).update(token_balance=5)
    (job_id,) = transcribe(client, {"uuid": upload(client, DATA_DIR / "jfk.flac")})
    (body,) = wait_done([job_id])
    assert body["status"] == "failed"
    arrival(webhook_receiver, 1)
    (event,) = webhook_receiver.verified(endpoint["secret"])
    assert event["type"] == "transcription.failed"
    assert event["data"]["uuid"] == job_id
    assert event["data"]["error"] == "Insufficient token balance. Required: 11, Available: 5"
