"""PostgreSQL ends every connection of the workers (``pg_terminate_backend``) in the middle of jobs."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from rest_framework.test import APIClient

from tests.conftest import make_user
from tests.faults.conftest import BENCH_DATA, TEST_DATA, RedisServer, outcome, ready_file, wait_finished, wait_for
from transcriptions.models import Transcription

pytestmark = [
    pytest.mark.faults,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql",
        reason="pg_terminate_backend is PostgreSQL's; SQLite has no server connections to kill",
    ),
]

CLIP_COST = 60
JFK_COST = 11


def terminate_other_connections() -> int:
    """End every other session on the test database, as an operator or a failover would; how many."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return int(cursor.fetchone()[0])


def test_workers_survive_their_database_connections_being_killed_mid_job(
    own_redis: RedisServer, stack_for: Any, wav_of: Any
) -> None:
    # No lost-worker recovery within the test (a worker not heard of for 10 minutes): the
    # workers must carry on by themselves.
    stack = stack_for(own_redis.url, TRANSCRIPTION_LOST_AFTER_SECONDS="600")
    worker = stack.start_worker("worker", beat=True)
    clip, jfk = wav_of(BENCH_DATA / "clip60.flac"), wav_of(TEST_DATA / "jfk.flac")
    user, session = make_user("unplugged")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Basic {session.id.hex}")
    costs: dict[Any, int] = {}
    job_ids: list[Any] = []
    # Two long jobs (each killed mid-decoding) and a short one waiting behind them.
    for wav, duration, cost in ((clip, 60.0, CLIP_COST), (clip, 60.0, CLIP_COST), (jfk, 11.0, JFK_COST)):
        file = ready_file(user, wav, duration=duration)
        response = client.post("/api/v1/transcribe", {"uuid": file.id.hex}, format="json")
        assert response.status_code == 200, response.content
        for row in response.json()["transcriptions"]:
            job_ids.append(row["uuid"])
            costs[Transcription.objects.get(id=row["uuid"]).id] = cost

    killed = []
    for job_id in job_ids[:2]:
        # Into the decoding: its progress is being written.
        wait_for(
            lambda job_id=job_id: Transcription.objects.filter(id=job_id, status="processing", progress__gt=0).exists(),
            timeout=60,
            what="the job's decoding",
        )
        killed.append(terminate_other_connections())

    wait_finished(job_ids, timeout=60, stack=stack)
    figures = outcome("postgres-connections-killed", job_ids, costs=costs, users=[user])
    retries = worker.log().count("Retry in")
    print(f"  connections terminated: {killed}; task retries after a lost connection: {retries}")
    assert all(count >= 1 for count in killed)
    assert figures["completed"] == len(job_ids), stack.logs()
    # Each killed job was taken up again by its own task, sent again under the same id.
    assert [Transcription.objects.get(id=job_id).attempts for job_id in job_ids] == [2, 2, 1]
    assert worker.process.poll() is None
