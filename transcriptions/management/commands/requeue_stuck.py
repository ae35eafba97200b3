"""``manage.py requeue_stuck``: queue again the jobs a lost worker or a lost queue left behind."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from files.services import file_requeue_stuck
from transcriptions import services


class Command(BaseCommand):
    help = (
        "Queue again file conversions and transcription jobs left pending or processing by a lost worker or a restarted "
        "Redis, with the database as the source of truth: pending jobs whose last queue message is "
        "older than --older-than seconds, and processing jobs running longer than their hard time "
        "limit plus --older-than. Idempotent and safe beside running workers (a job is only ever run "
        "by the first message that claims it). Celery beat runs the same recovery on a schedule."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            type=float,
            default=float(settings.TRANSCRIPTION_RECOVERY_AFTER_SECONDS),
            metavar="SECONDS",
            help="How old a job's message (pending) or its time limit (processing) must be. "
            "Default: TRANSCRIPTION_RECOVERY_AFTER_SECONDS (%(default)s).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        older_than: float = options["older_than"]
        if older_than < 0:
            raise CommandError("--older-than must be at least 0")
        files = file_requeue_stuck(older_than=older_than)
        count = services.transcription_requeue_stuck(older_than=older_than)
        if options["verbosity"] >= 1:
            self.stdout.write(f"Re-queued {files} file conversion(s)")
            self.stdout.write(f"Re-queued {count} transcription job(s)")
