from __future__ import annotations

from django.apps import AppConfig


class HealthConfig(AppConfig):
    """Readiness (``GET /health/ready``) and the Celery workers' heartbeats it reads."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "health"
