from __future__ import annotations

from django.urls import re_path

from transcriptions import apis

urlpatterns = [
    re_path(r"^model/?$", apis.TranscriptionModelViewSet.as_view({"get": "list"}), name="model-list"),
    re_path(r"^transcribe/?$", apis.TranscriptionViewSet.as_view({"post": "create"}), name="transcribe"),
    re_path(
        r"^transcribe/(?P<transcription_id>[^/]+)/?$",
        apis.TranscriptionViewSet.as_view({"get": "retrieve", "delete": "destroy"}),
        name="transcribe-detail",
    ),
]
