"""Cancelling jobs, their progress and queue positions, in eager mode (the worker's side is in e2e)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import User
from tests.conftest import make_user
from tests.transcriptions.conftest import MakeFile
from tests.transcriptions.test_jobs import balance, make_job, run_batch
from transcriptions import selectors, services
from transcriptions.models import Transcription, TranscriptionUnit
from transcriptions.services import units
from webhooks.models import WebhookDelivery
from webhooks.services import webhook_endpoint_create

pytestmark = pytest.mark.django_db

Status = Transcription.Status


def client_of(user: User) -> APIClient:
    client = APIClient()
    client.force_authenticate(user=user)
    return client


def cancel(client: APIClient, job: Transcription) -> Any:
    return client.post(f"/api/v1/transcribe/{job.id.hex}/cancel")


def test_a_pending_job_is_cancelled_and_never_run_nor_charged(user: User, make_ready_file: MakeFile) -> None:
    job = make_job(user, make_ready_file(user))
    response = cancel(client_of(user), job)
    assert response.status_code == 200
    assert response.json() == {"message": "Transcription cancelled", "uuid": job.id.hex, "status": "cancelled"}
    run_batch(job.batch_id, "task-1")  # its message arrives: nothing to run
    job.refresh_from_db()
    assert (job.status, job.cost, job.started_at, balance(user)) == ("cancelled", 0, None, 1000)
    assert not TranscriptionUnit.objects.exists()
    body = APIClient().get(f"/api/v1/transcribe/{job.id.hex}").json()
    assert (body["status"], body["progress"], body["queue_position"], body["data"]) == ("cancelled", 0.0, None, None)


def test_a_processing_job_is_refunded_in_full_and_the_other_formats_go_on(
    user: User, make_ready_file: MakeFile
) -> None:
    file = make_ready_file(user)
    job = make_job(user, file, status=Status.PROCESSING, claim_token="task-1", attempts=1, cost=11)
    srt = make_job(
        user, file, format="srt", batch_id=job.batch_id, status=Status.PROCESSING, claim_token="task-1", cost=11
    )
    User.objects.filter(pk=user.pk).update(token_balance=1000 - 22)
    endpoint = webhook_endpoint_create(user=user, url="https://93.184.215.14/hook", events=["transcription.cancelled"])
    assert cancel(client_of(user), job).status_code == 200
    job.refresh_from_db()
    srt.refresh_from_db()
    assert (job.status, job.cost, srt.status, srt.cost) == ("cancelled", 0, "processing", 11)
    assert balance(user) == 1000 - 11
    (delivery,) = WebhookDelivery.objects.filter(endpoint=endpoint)
    assert delivery.event_type == "transcription.cancelled"


@pytest.mark.parametrize("status", ["completed", "failed", "cancelled"])
def test_a_finished_job_is_a_409(user: User, make_ready_file: MakeFile, status: str) -> None:
    job = make_job(user, make_ready_file(user), status=status)
    response = cancel(client_of(user), job)
    assert (response.status_code, response.content.decode()) == (409, "Transcription already finished")


def test_another_users_job_is_a_404_and_a_stranger_a_401(user: User, make_ready_file: MakeFile) -> None:
    job = make_job(user, make_ready_file(user))
    other, _ = make_user("mallory")
    response = cancel(client_of(other), job)
    assert (response.status_code, response.content.decode()) == (404, "Transcription not found or access denied")
    assert cancel(APIClient(), job).status_code == 401
    assert APIClient().post("/api/v1/transcribe/not-a-uuid/cancel").status_code in (400, 401)
    job.refresh_from_db()
    assert job.status == "pending"


def test_a_completed_job_reports_full_progress(user: User, make_ready_file: MakeFile) -> None:
    job = make_job(user, make_ready_file(user))
    run_batch(job.batch_id, "task-1")
    job.refresh_from_db()
    assert (job.status, job.progress) == ("completed", 1.0)


def test_queue_positions_follow_the_fair_order(make_ready_file: MakeFile) -> None:
    a, _ = make_user("busy")
    b, _ = make_user("quiet")
    t0 = timezone.now() - dt.timedelta(minutes=5)
    backlog = [make_job(a, make_ready_file(a), created_at=t0 + dt.timedelta(seconds=n)) for n in range(3)]
    late = make_job(b, make_ready_file(b), created_at=t0 + dt.timedelta(seconds=10))
    done = make_job(a, make_ready_file(a), status=Status.COMPLETED, created_at=t0)
    anonymous = APIClient()
    positions = [anonymous.get(f"/api/v1/transcribe/{job.id.hex}").json()["queue_position"] for job in backlog]
    # A's first job, then B's (served nothing yet), then A's other two.
    assert positions == [1, 3, 4]
    assert anonymous.get(f"/api/v1/transcribe/{late.id.hex}").json()["queue_position"] == 2
    assert anonymous.get(f"/api/v1/transcribe/{done.id.hex}").json()["queue_position"] is None
    # A file's list answers every pending job's position from one reckoning.
    listing = anonymous.get(f"/api/v1/transcribe/{backlog[1].file_id.hex}").json()["transcriptions"]
    assert [row["queue_position"] for row in listing] == [3]
    # A user served lately waits behind one who was not.
    TranscriptionUnit.objects.create(
        batch_id=done.batch_id, owner=a, file=done.file, index=0, start=0.0, end=600.0,
        status="done", claimed_at=timezone.now(),
    )  # fmt: skip
    assert selectors.transcription_queue_positions(batch_ids=[late.batch_id, backlog[0].batch_id]) == {
        late.batch_id: 1,
        backlog[0].batch_id: 2,
    }


def test_a_decoding_writes_progress_forward_only_and_stops_once_its_jobs_are_gone(
    user: User, make_ready_file: MakeFile, settings: Any
) -> None:
    settings.TRANSCRIPTION_PROGRESS_INTERVAL_SECONDS = 0
    file = make_ready_file(user, duration=100.0)
    job = make_job(user, file, status=Status.PROCESSING, claim_token="task-1", cost=100)
    srt = make_job(user, file, format="srt", batch_id=job.batch_id, status=Status.PROCESSING, claim_token="task-1")
    TranscriptionUnit.objects.create(
        batch_id=job.batch_id, owner=user, file=file, index=0, start=0.0, end=40.0, status="done"
    )
    unit = TranscriptionUnit.objects.create(
        batch_id=job.batch_id, owner=user, file=file, index=1, start=50.0, end=100.0, status="processing"
    )
    watch = units._BatchWatch(unit=unit)
    watch(0.5)  # half of the second unit: (40 + 25) / 90
    job.refresh_from_db()
    assert job.progress == round(65 / 90, 4)
    watch.seconds(10.0)  # a retaken unit starting over: progress does not go back
    job.refresh_from_db()
    assert job.progress == round(65 / 90, 4)
    watch(1.0)  # never 1.0 before the result is stored
    job.refresh_from_db()
    assert job.progress == 0.999
    services.transcription_delete(user=user, transcription_id=job.id)
    watch(1.0)  # the srt job still wants it
    assert services.transcription_cancel(user=user, transcription_id=srt.id).status == "cancelled"
    with pytest.raises(units.BatchStopped):
        watch(1.0)
