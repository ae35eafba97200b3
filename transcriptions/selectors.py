"""Transcription reads: installed models, jobs by id, jobs of a file."""

from __future__ import annotations

import uuid

from django.conf import settings

from files.models import File
from transcriptions import engine
from transcriptions.models import Transcription


def model_list() -> list[engine.ModelInfo]:
    """The models installed under ``MODELS_DIR``, sorted by name."""
    return list(engine.available_models(settings.MODELS_DIR).values())


def model_names() -> list[str]:
    """Names of the installed models, sorted."""
    return [model.name for model in model_list()]


def transcription_get(*, transcription_id: uuid.UUID) -> Transcription | None:
    """Any job by id (reading results is public: the uuid is the secret)."""
    return Transcription.objects.filter(id=transcription_id).first()


def transcription_list_for_file(*, file_id: uuid.UUID) -> list[Transcription] | None:
    """The jobs of a media file, oldest first (a request's formats in the order asked for).

    ``None`` when there is no such audio or video file (an avatar image has no jobs).
    """
    if not File.objects.filter(id=file_id).exclude(kind=File.Kind.IMAGE).exists():
        return None
    return list(Transcription.objects.filter(file_id=file_id).order_by("created_at", "id"))
