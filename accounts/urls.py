from __future__ import annotations

from django.urls import re_path
from rest_framework.routers import SimpleRouter

from accounts import apis

# SimpleRouter's constructor turns any true trailing_slash into "/": the
# optional slash is set after it.
router = SimpleRouter(trailing_slash=False)
router.trailing_slash = "/?"
router.register("user/token", apis.ApiTokenViewSet, basename="user-token")
router.register("user", apis.UserViewSet, basename="user")

urlpatterns = [
    # One operation on no resource: an APIView, routed with the router's optional slash.
    re_path(r"^health/?$", apis.HealthApi.as_view(), name="health"),
    *router.urls,
]
