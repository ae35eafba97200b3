"""Password hashing: Argon2id, with its cost in the settings."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.hashers import Argon2PasswordHasher


class Argon2idPasswordHasher(Argon2PasswordHasher):
    """Django's Argon2id hasher (hashes read ``argon2$argon2id$v=19$m=…,t=…,p=…$…``),
    with ``ARGON2_TIME_COST``, ``ARGON2_MEMORY_COST`` (KiB) and ``ARGON2_PARALLELISM``
    read from the settings at each use.

    Production keeps Django's costs (the settings' defaults); the tests lower them.
    Each hash records its own parameters, so a hash made under other costs still
    verifies, and is made again with the current ones at the user's next login.
    """

    @property
    def time_cost(self) -> int:
        return settings.ARGON2_TIME_COST

    @property
    def memory_cost(self) -> int:
        return settings.ARGON2_MEMORY_COST

    @property
    def parallelism(self) -> int:
        return settings.ARGON2_PARALLELISM
