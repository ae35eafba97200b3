"""Every API route lives under ``/api/v1``; the operators' admin site under ``/admin/``."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

api_patterns = [
    path("", include("accounts.urls")),
    path("", include("files.urls")),
    path("", include("transcriptions.urls")),
    path("", include("admin_api.urls")),
]

urlpatterns = [
    path("api/v1/", include(api_patterns)),
    path("admin/", admin.site.urls),
]

handler400 = "whisper_site.errors.bad_request_view"
handler403 = "whisper_site.errors.permission_denied_view"
handler404 = "whisper_site.errors.not_found_view"
handler500 = "whisper_site.errors.server_error_view"
