"""``manage.py set_price_multiplier USERNAME VALUE``: set what a user's jobs cost."""

from __future__ import annotations

from argparse import ArgumentTypeError
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts import services
from whisper_site.errors import ApplicationError


def multiplier(raw: str) -> Decimal:
    """argparse type: a decimal number, read exactly (no binary float rounding)."""
    try:
        value = Decimal(raw.strip())
    except InvalidOperation:
        raise ArgumentTypeError(f"VALUE must be a number, got {raw!r}") from None
    if not value.is_finite():
        raise ArgumentTypeError(f"VALUE must be a number, got {raw!r}")
    return value


class Command(BaseCommand):
    help = (
        "Set USERNAME's price multiplier to VALUE (0 to 1000, kept to 4 decimal places): each job "
        "costs ceil(ceil(seconds) x VALUE) tokens. Setting the same value again changes nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username", metavar="USERNAME", help="The user, matched case-insensitively.")
        parser.add_argument("value", metavar="VALUE", type=multiplier, help="The multiplier, e.g. 0.5 or 1.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            user, previous = services.price_multiplier_set(
                username=options["username"], price_multiplier=options["value"]
            )
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        if previous == user.price_multiplier:
            self.stdout.write(f"{user.username}: price multiplier already {user.price_multiplier.normalize()}")
        else:
            self.stdout.write(
                f"{user.username}: price multiplier {previous.normalize()} -> {user.price_multiplier.normalize()}"
            )
