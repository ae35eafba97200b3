"""``manage.py grant_tokens USERNAME AMOUNT``: add tokens to a user's balance."""

from __future__ import annotations

from argparse import ArgumentTypeError
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts import services
from whisper_site.errors import ApplicationError


def positive_int(raw: str) -> int:
    """argparse type: a whole number of tokens, at least 1."""
    try:
        value = int(raw)
    except ValueError:
        raise ArgumentTypeError(f"AMOUNT must be a positive integer, got {raw!r}") from None
    if value < 1:
        raise ArgumentTypeError(f"AMOUNT must be a positive integer, got {raw!r}")
    return value


class Command(BaseCommand):
    help = (
        "Add AMOUNT tokens to USERNAME's balance in one atomic UPDATE (jobs charged at the same "
        "moment are never lost) and print the new balance. A grant adds each time it runs: pass "
        "--expect-balance with the balance you saw to make a retry safe."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username", metavar="USERNAME", help="The user, matched case-insensitively.")
        parser.add_argument("amount", metavar="AMOUNT", type=positive_int, help="Tokens to add, at least 1.")
        parser.add_argument(
            "--expect-balance",
            type=int,
            metavar="N",
            help="Only grant while the balance is exactly N (a rerun after success then grants nothing).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            user = services.balance_grant(
                username=options["username"], amount=options["amount"], expect_balance=options["expect_balance"]
            )
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(f"Granted {options['amount']} tokens to {user.username}: balance {user.token_balance}")
