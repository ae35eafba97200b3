"""Fixtures of the webhook tests: a real receiver on 127.0.0.1 and finished jobs."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.utils import timezone

from accounts.models import User
from files.models import File
from tests.webhooks.receiver import allow_private_networks, webhook_receiver  # noqa: F401
from transcriptions.models import Transcription

MakeJob = Callable[..., Transcription]


@pytest.fixture
def make_job() -> MakeJob:
    """A job of ``user`` in ``status`` (completed: with a transcript), on a ready file of its own."""

    def make(user: User, status: str = Transcription.Status.COMPLETED, **fields: object) -> Transcription:
        file = File.objects.create(
            owner=user,
            filename="jfk.flac",
            kind=File.Kind.AUDIO,
            content_type="audio/flac",
            blake3=timezone.now().isoformat() + str(File.objects.count()),
            duration=11.0,
            state=File.State.READY,
        )
        if status == Transcription.Status.COMPLETED:
            fields.setdefault("data", {"text": "Ask not.", "segments": [], "language": "en"})
            fields.setdefault("processed_at", timezone.now())
        if status == Transcription.Status.FAILED:
            fields.setdefault("error", "Insufficient token balance. Required: 11, Available: 0")
        return Transcription.objects.create(
            owner=user, file=file, model="ggml-tiny.en", language="en", format="verbose_json", status=status, **fields
        )

    return make
