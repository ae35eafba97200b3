"""Readiness route."""

from __future__ import annotations

from django.urls import re_path

from health import apis

urlpatterns = [
    # One operation on no resource: an APIView, with the routers' optional slash.
    re_path(r"^health/ready/?$", apis.ReadinessApi.as_view(), name="health-ready"),
]
