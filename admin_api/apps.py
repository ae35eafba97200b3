from __future__ import annotations

from django.apps import AppConfig


class AdminApiConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "admin_api"

    def ready(self) -> None:
        # Registers the OpenAPI extensions for our auth classes before any
        # schema is generated (also from `manage.py spectacular`).
        from admin_api import schema  # noqa: F401
