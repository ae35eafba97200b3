from __future__ import annotations

from rest_framework.routers import SimpleRouter

from webhooks import apis

router = SimpleRouter(trailing_slash=False)
# Paths are written without the slash, as the reference does; one with a trailing slash works too.
router.trailing_slash = "/?"
# GET/POST /user/webhooks; DELETE /user/webhooks/:uuid; GET /user/webhooks/:uuid/deliveries.
router.register("user/webhooks", apis.WebhookViewSet, basename="user-webhook")

urlpatterns = router.urls
