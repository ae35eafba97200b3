from __future__ import annotations

from django.apps import AppConfig


class WhisperSiteConfig(AppConfig):
    """The project package as an app, for the command that runs the whole service (``manage.py serve``)."""

    name = "whisper_site"
    verbose_name = "Whisper site"
