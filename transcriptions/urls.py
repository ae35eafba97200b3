from __future__ import annotations

from django.urls import re_path
from rest_framework.routers import SimpleRouter

from transcriptions import apis
from transcriptions.openai import apis as openai_apis

router = SimpleRouter()
# DRF's routers only know "/" or nothing; paths are written without the slash, as the
# reference does, and one with a trailing slash works too.
router.trailing_slash = "/?"
# GET /model (model-list).
router.register("model", apis.TranscriptionModelViewSet, basename="model")
# POST /transcribe (transcription-list); GET/HEAD/DELETE /transcribe/:uuid (transcription-detail).
router.register("transcribe", apis.TranscriptionViewSet, basename="transcription")
# OpenAI's audio API, for OpenAI clients with base URL http://HOST:PORT/api/v1 (docs/openai.md):
# POST /audio/transcriptions, POST /audio/translations, GET /models, GET /models/{model}.
router.register("audio/transcriptions", openai_apis.AudioTranscriptionViewSet, basename="openai-transcription")
router.register("audio/translations", openai_apis.AudioTranslationViewSet, basename="openai-translation")
router.register("models", openai_apis.OpenAIModelViewSet, basename="openai-model")

urlpatterns = [
    *router.urls,
    # Any other path under audio/ or models/ is OpenAI's 404 error object, not plain text.
    re_path(r"^(?:audio|models)(?:/.*)?$", openai_apis.OpenAINotFoundView.as_view(), name="openai-not-found"),
]
