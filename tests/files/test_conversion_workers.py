"""Conversions on a queue of their own, away from transcriptions: where each message lands, ffmpeg's threads.

The routing is read from the real broker: with no worker consuming, each message
stays in the Redis list of its queue and priority (database 15, queues named for
this test). kombu keeps a queue's messages of priority 0 in the list named after
the queue and those of priority 9 in ``<queue>\\x06\\x169``; a worker takes from
the first before the second.
How the conversion worker runs (its priority, `manage.py serve` starting it) is
in tests/site/test_serve.py.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from rest_framework.test import APIClient

from files.models import File
from files.services import convert_recovery_period, file_requeue_stuck
from files.tasks import file_convert_audio_task, file_convert_media_task
from tests.conftest import PRIORITY_SUFFIXES, forget_broker_connections, redis_queues_delete, redis_required
from tests.files.conftest import JFK
from transcriptions.engine import install_bundled_models
from whisper_site.celery import app as celery_app

pytestmark = pytest.mark.django_db

REDIS_URL = os.environ.get("E2E_REDIS_URL", "redis://127.0.0.1:6379/15")
LOW = PRIORITY_SUFFIXES[-1]


@dataclass
class Broker:
    """The real Redis broker with a transcription queue and a conversion queue that no worker consumes."""

    client: redis.Redis
    transcription_queue: str
    conversion_queue: str

    def lists(self) -> list[str]:
        """The Redis lists of both queues, each priority's."""
        return [f"{queue}{suffix}" for queue in self.queues for suffix in ("", *PRIORITY_SUFFIXES)]

    @property
    def queues(self) -> tuple[str, str]:
        return (self.transcription_queue, self.conversion_queue)

    def tasks(self, name: str) -> list[dict[str, Any]]:
        """The messages waiting in the Redis list ``name``, oldest first: each one's task name and arguments."""
        found = []
        for raw in reversed(self.client.lrange(name, 0, -1)):  # LPUSHed: the newest comes first
            message = json.loads(raw)
            args, _, _ = json.loads(base64.b64decode(message["body"]))
            found.append({"task": message["headers"]["task"], "args": args})
        return found

    def waiting(self) -> dict[str, list[str]]:
        """Every message waiting, by the Redis list it is in: ``{list: [task, ...]}``."""
        return {name: [task["task"] for task in tasks] for name in self.lists() if (tasks := self.tasks(name))}


@pytest.fixture
def broker(settings: Any) -> Iterator[Broker]:
    redis_required(REDIS_URL)
    client = redis.Redis.from_url(REDIS_URL)
    tag = uuid.uuid4().hex[:12]
    found = Broker(
        client=client, transcription_queue=f"test-transcriptions-{tag}", conversion_queue=f"test-conversions-{tag}"
    )
    settings.TRANSCRIPTION_QUEUE = found.transcription_queue
    settings.CONVERSION_QUEUE = found.conversion_queue
    previous = {key: celery_app.conf.get(key) for key in ("CELERY_BROKER_URL", "CELERY_TASK_ALWAYS_EAGER")}
    celery_app.conf.CELERY_BROKER_URL = REDIS_URL
    celery_app.conf.CELERY_TASK_ALWAYS_EAGER = False
    forget_broker_connections()
    try:
        yield found
    finally:
        for key, value in previous.items():
            setattr(celery_app.conf, key, value)
        forget_broker_connections()
        redis_queues_delete(REDIS_URL, found.queues)
        client.close()


def upload(client: APIClient, path: Path) -> File:
    response = client.post(
        "/api/v1/file", {"file": [SimpleUploadedFile(path.name, path.read_bytes())]}, format="multipart"
    )
    assert response.status_code == 200, response.content
    return File.objects.get(id=response.json()["files"][0]["uuid"])


def test_both_phases_go_to_the_conversion_queue_and_the_transcription_to_its_own(
    broker: Broker, client_key: APIClient, django_capture_on_commit_callbacks: Any, settings: Any
) -> None:
    install_bundled_models(settings.MODELS_DIR)  # idempotent: the default model, for POST /transcribe
    conversions, transcriptions = broker.conversion_queue, broker.transcription_queue
    with django_capture_on_commit_callbacks(execute=True):
        file = upload(client_key, JFK)
    # Phase one at the first priority.
    assert broker.waiting() == {conversions: ["files.convert_audio"]}
    assert broker.tasks(conversions) == [{"task": "files.convert_audio", "args": [file.id.hex]}]

    # A job asked for before the WAV exists waits for it (no message yet).
    with django_capture_on_commit_callbacks(execute=True):
        response = client_key.post("/api/v1/transcribe", {"uuid": str(file.id)}, format="json")
    assert response.status_code == 200, response.content
    assert broker.waiting() == {conversions: ["files.convert_audio"]}

    # Phase one, run here as a conversion worker would run the message: the WAV announced
    # queues the transcription on its queue, and phase two on the conversion queue, last
    # in priority.
    broker.client.delete(conversions)
    with django_capture_on_commit_callbacks(execute=True):
        file_convert_audio_task.apply(args=[file.id.hex]).get()
    assert broker.waiting() == {
        transcriptions: ["transcriptions.run_batch"],
        conversions + LOW: ["files.convert_media"],
    }
    assert broker.tasks(conversions + LOW) == [{"task": "files.convert_media", "args": [file.id.hex]}]


@pytest.mark.parametrize("wav_recorded", [False, True])
def test_the_recovery_queues_a_lost_conversion_on_the_conversion_queue(
    broker: Broker, client_key: APIClient, django_capture_on_commit_callbacks: Any, wav_recorded: bool
) -> None:
    with django_capture_on_commit_callbacks(execute=False):  # its message is lost
        file = upload(client_key, JFK)
    if wav_recorded:
        with django_capture_on_commit_callbacks(execute=False):  # phase two's message is lost
            file_convert_audio_task.apply(args=[file.id.hex]).get()
        file.refresh_from_db()
    period = convert_recovery_period(kind=file.kind, duration=file.duration)
    File.objects.filter(id=file.id).update(uploaded_at=timezone.now() - dt.timedelta(seconds=period + 61))
    with django_capture_on_commit_callbacks(execute=True):
        assert file_requeue_stuck(older_than=60) == 1
    if wav_recorded:
        assert broker.waiting() == {broker.conversion_queue + LOW: ["files.convert_media"]}
    else:
        assert broker.waiting() == {broker.conversion_queue: ["files.convert_audio"]}


def test_phase_two_without_its_wav_queues_phase_one_on_the_conversion_queue(
    broker: Broker, client_key: APIClient, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=False):
        file = upload(client_key, JFK)
    with django_capture_on_commit_callbacks(execute=True):
        file_convert_media_task.apply(args=[file.id.hex]).get()
    assert broker.waiting() == {broker.conversion_queue: ["files.convert_audio"]}
