from __future__ import annotations

from rest_framework.routers import SimpleRouter

from files import apis

router = SimpleRouter()
# DRF's routers only know "/" or nothing; paths are written without the slash, as the
# reference does, and one with a trailing slash works too.
router.trailing_slash = "/?"
# GET/POST /file (file-list); GET/HEAD/PATCH/DELETE /file/:uuid (file-detail).
router.register("file", apis.FileViewSet, basename="file")

urlpatterns = router.urls
