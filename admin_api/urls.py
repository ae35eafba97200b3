"""Admin API routes."""

from __future__ import annotations

from django.urls import re_path
from rest_framework.routers import SimpleRouter

from admin_api import apis

# SimpleRouter's constructor turns any true trailing_slash into "/": the
# optional slash is set after it.
router = SimpleRouter(trailing_slash=False)
router.trailing_slash = "/?"
router.register("admin/users", apis.AdminUserViewSet, basename="admin-users")

urlpatterns = [
    *router.urls,
    re_path(r"^admin/metrics/?$", apis.AdminMetricsView.as_view(), name="admin-metrics"),
]
