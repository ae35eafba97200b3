"""Admin API routes, and the API's OpenAPI schema and interactive documentation."""

from __future__ import annotations

from django.urls import re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework import permissions

from admin_api import apis

urlpatterns = [
    re_path(r"^admin/users/?$", apis.AdminUserViewSet.as_view({"get": "list"}), name="admin-users"),
    re_path(
        r"^admin/users/(?P<uuid>[^/]+)/?$",
        apis.AdminUserViewSet.as_view({"patch": "partial_update"}),
        name="admin-users-detail",
    ),
    # Public, like the reference itself: no credentials are read, so a stale
    # Authorization header in a browser never turns the docs into a 401.
    re_path(
        r"^schema/?$",
        SpectacularAPIView.as_view(
            authentication_classes=[],
            permission_classes=[permissions.AllowAny],
        ),
        name="api-schema",
    ),
    re_path(
        r"^docs/?$",
        SpectacularSwaggerView.as_view(
            url_name="api-schema", authentication_classes=[], permission_classes=[permissions.AllowAny]
        ),
        name="api-docs",
    ),
]
