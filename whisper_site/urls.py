"""Every API route lives under ``/api/v1``; the operators' admin site under ``/admin/``."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework import permissions

api_patterns = [
    path("", include("accounts.urls")),
    path("", include("files.urls")),
    path("", include("transcriptions.urls")),
    path("", include("admin_api.urls")),
    path("", include("webhooks.urls")),
    path("", include("health.urls")),
    # The OpenAPI document of the whole API and its interactive page. Public, like
    # the reference itself: no credentials are read, so a stale Authorization
    # header in a browser never turns the docs into a 401.
    re_path(
        r"^schema/?$",
        SpectacularAPIView.as_view(authentication_classes=[], permission_classes=[permissions.AllowAny]),
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

urlpatterns = [
    path("api/v1/", include(api_patterns)),
    path("admin/", admin.site.urls),
]

handler400 = "whisper_site.errors.bad_request_view"
handler403 = "whisper_site.errors.permission_denied_view"
handler404 = "whisper_site.errors.not_found_view"
handler500 = "whisper_site.errors.server_error_view"
