"""``manage.py purge_sessions``: delete sessions that can no longer authenticate."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from accounts import services


class Command(BaseCommand):
    help = (
        "Delete every login session that has ended (logout, password change, admin action) or "
        "expired (past SESSION_LIFETIME_HOURS). Active sessions are kept. Safe to run from cron: "
        "a second run finds nothing to delete."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Count what would be deleted; delete nothing.")

    def handle(self, *args: Any, **options: Any) -> None:
        result = services.session_purge(dry_run=options["dry_run"])
        verb = "Would delete" if options["dry_run"] else "Deleted"
        self.stdout.write(f"{verb} {result.total} session(s): {result.ended} ended, {result.expired} expired")
