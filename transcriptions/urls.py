from __future__ import annotations

from rest_framework.routers import SimpleRouter

from transcriptions import apis

router = SimpleRouter()
# DRF's routers only know "/" or nothing; paths are written without the slash, as the
# reference does, and one with a trailing slash works too.
router.trailing_slash = "/?"
# GET /model (model-list).
router.register("model", apis.TranscriptionModelViewSet, basename="model")
# POST /transcribe (transcription-list); GET/HEAD/DELETE /transcribe/:uuid (transcription-detail).
router.register("transcribe", apis.TranscriptionViewSet, basename="transcription")

urlpatterns = router.urls
