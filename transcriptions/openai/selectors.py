"""The models the OpenAI-compatible routes offer: the installed ones, and ``whisper-1``."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from transcriptions import engine, selectors

# OpenAI's name for its Whisper model: here, the server's default model.
WHISPER_1 = "whisper-1"
OWNED_BY = "system"


@dataclass(frozen=True, slots=True)
class OpenAIModel:
    """OpenAI's model object: ``{"id", "object": "model", "created", "owned_by"}``."""

    id: str
    created: int
    owned_by: str = OWNED_BY
    object: str = "model"


def _created(model: engine.ModelInfo) -> int:
    # When the model was put in place (its weights' modification time), in Unix seconds.
    try:
        return int((model.path / "model.bin").stat().st_mtime)
    except OSError:
        return 0


def openai_model_list() -> list[OpenAIModel]:
    """The installed models by name, then ``whisper-1`` (the default model) while that is installed."""
    models = [OpenAIModel(id=model.name, created=_created(model)) for model in selectors.model_list()]
    default = next((model for model in models if model.id == settings.DEFAULT_MODEL), None)
    if default is not None:
        models.append(OpenAIModel(id=WHISPER_1, created=default.created))
    return models


def openai_model_get(*, model_id: str) -> OpenAIModel | None:
    """One model of :func:`openai_model_list` by id; None when there is no such model."""
    return next((model for model in openai_model_list() if model.id == model_id), None)
