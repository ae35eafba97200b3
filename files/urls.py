from __future__ import annotations

from django.urls import re_path

from files import apis

urlpatterns = [
    re_path(r"^file/?$", apis.FileViewSet.as_view({"get": "list", "post": "create"}), name="file-list"),
    re_path(
        r"^file/(?P<file_id>[^/]+)/?$",
        apis.FileViewSet.as_view({"get": "retrieve", "patch": "partial_update", "delete": "destroy"}),
        name="file-detail",
    ),
]
