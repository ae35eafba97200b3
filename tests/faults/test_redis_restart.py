"""Redis killed and started again (without persistence) while jobs are queued and one runs."""

from __future__ import annotations

import time
from typing import Any

import pytest
from rest_framework.test import APIClient

from tests.conftest import make_user
from tests.faults.conftest import TEST_DATA, RedisServer, outcome, ready_file, wait_finished, wait_for
from transcriptions.models import Transcription

pytestmark = [pytest.mark.faults, pytest.mark.django_db(transaction=True)]

USERS = 3
JOBS_PER_USER = 2
JFK_COST = 11
REDIS_DOWN_SECONDS = 3.0


def test_jobs_queued_and_running_survive_a_redis_restart(own_redis: RedisServer, stack_for: Any, wav_of: Any) -> None:
    stack = stack_for(own_redis.url)
    worker = stack.start_worker("worker", beat=True)
    wav = wav_of(TEST_DATA / "jfk.flac")
    users, job_ids = [], []
    for number in range(USERS):
        user, session = make_user(f"restart{number}")
        users.append(user)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Basic {session.id.hex}")
        for _ in range(JOBS_PER_USER):
            file = ready_file(user, wav, duration=11.0)
            response = client.post("/api/v1/transcribe", {"uuid": file.id.hex}, format="json")
            assert response.status_code == 200, response.content
            job_ids.extend(row["uuid"] for row in response.json()["transcriptions"])

    # One job running, the others' messages waiting in Redis: then Redis goes.
    wait_for(
        lambda: Transcription.objects.filter(id__in=job_ids, status="processing").exists(),
        timeout=60,
        what="a job to start",
    )
    assert own_redis.keys() > 0
    own_redis.kill()
    waiting = Transcription.objects.filter(id__in=job_ids, status="pending").count()
    time.sleep(REDIS_DOWN_SECONDS)
    own_redis.start()
    # Nothing survived in Redis: what still waited must be found by the recovery.
    assert waiting >= 1

    jobs = wait_finished(job_ids, timeout=60, stack=stack)
    figures = outcome("redis-restart", job_ids, costs={job.id: JFK_COST for job in jobs}, users=users)
    # The recovery (beat) sent the lost batches again.
    requeued = worker.log().count("Transcription queued again")
    print(f"  {waiting} jobs waiting when Redis was killed, down {REDIS_DOWN_SECONDS:g} s, {requeued} sent again")
    assert figures["completed"] == len(job_ids), stack.logs()
    assert requeued >= waiting, worker.log()[-3000:]
    assert worker.process.poll() is None, worker.log()[-3000:]
