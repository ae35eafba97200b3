"""Limits on guessing passwords and on registering, counted in the cache.

The password guard counts failed password checks (API login, admin login, the
password confirmations of ``PATCH`` and ``DELETE /user/me``) per (account,
client address) pair and per client address. The pair's limit is low
(``LOGIN_MAX_FAILURES``), so that an account cannot be guessed at from one
address, and it is the pair that blocks: the account's owner, from another
address, still logs in. The address's limit is higher
(``LOGIN_MAX_FAILURES_PER_ADDRESS``): it stops one address spreading guesses
over many accounts without blocking the addresses nobody guessed from.

Each count covers a window of ``LOGIN_FAILURE_WINDOW_SECONDS`` that opens with
the first check it counts (a right password closes its pair's window); once a
count reaches its limit, attempts are refused until its window ends, even with
the right password. IPv6 clients are counted by their /64 network, the block
one subscriber is usually given.

Registrations are counted per client address the same way, over an hour.
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
from dataclasses import dataclass, field

from django.conf import settings
from django.core.cache import cache

from accounts.models import User
from whisper_site.errors import ApplicationError

LOGIN_BLOCKED_MESSAGE = "Too many failed login attempts. Try again later"
PASSWORD_BLOCKED_MESSAGE = "Too many incorrect password attempts. Try again later"
REGISTRATION_BLOCKED_MESSAGE = "Too many registrations from this address. Try again later"
REGISTRATION_WINDOW_SECONDS = 3600


@dataclass(frozen=True)
class _Counter:
    """A count of attempts in the cache: at most ``limit`` in a window of ``window`` seconds.

    A window opens with the first attempt counted and lasts ``window`` seconds,
    whatever happens in it. It is a key of its own, created with ``add`` and never
    written again, so that it ends on time with every cache backend (Django's file
    and database caches give a key the default timeout again at each ``incr``).
    The count lives under a key named by its window: a count from an ended window
    is never read again.
    """

    name: str
    limit: int
    window: int

    @property
    def _window_key(self) -> str:
        return f"{self.name}:window"

    def count(self) -> int:
        """Attempts counted in the open window."""
        opened = cache.get(self._window_key)
        return 0 if opened is None else cache.get(f"{self.name}:{opened}") or 0

    def count_key(self) -> str:
        """The key of the open window's count, opening a window if none is."""
        token = secrets.token_hex(8)
        for _ in range(2):
            if cache.add(self._window_key, token, timeout=self.window):
                break
            opened = cache.get(self._window_key)
            if opened is not None:
                return f"{self.name}:{opened}"
            # The window ended between add and get: open the next one.
        return f"{self.name}:{token}"

    def reset(self) -> None:
        """Close the open window: the next attempt counted opens a new one from zero."""
        cache.delete(self._window_key)


def _increment(key: str, window: int) -> int:
    cache.add(key, 0, timeout=window)
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=window)
        count = 1
    # The file and database caches' incr is a get and a set with the default
    # timeout (and so not atomic: only Redis and the in-memory cache count
    # concurrent attempts exactly). Keep the count at least as long as its window.
    cache.touch(key, window)
    return count


def _decrement(key: str, window: int) -> None:
    try:
        cache.decr(key)
    except ValueError:  # already expired: nothing to give back
        return
    cache.touch(key, window)


@dataclass
class Reservation:
    """Attempts counted before their outcome is known; ``release`` takes them back."""

    taken: list[tuple[str, int]] = field(default_factory=list)

    def release(self) -> None:
        for key, window in self.taken:
            _decrement(key, window)
        self.taken = []


def _reserve(counters: list[_Counter], *, blocked_message: str) -> Reservation:
    """Count one attempt against every counter, or refuse it (429) if any is at its limit.

    Counting before the attempt runs, instead of after it failed, keeps concurrent
    attempts from all passing the check before any of them is counted.
    """
    # Refused attempts are not counted: retrying while blocked does not prolong the block.
    if any(counter.count() >= counter.limit for counter in counters):
        raise ApplicationError(blocked_message, 429)
    reservation = Reservation()
    for counter in counters:
        key = counter.count_key()
        count = _increment(key, counter.window)
        reservation.taken.append((key, counter.window))
        if count > counter.limit:  # a concurrent attempt took the last place
            reservation.release()
            raise ApplicationError(blocked_message, 429)
    return reservation


def _address_group(address: str) -> str:
    """The unit an address is counted in: itself, or its /64 network for IPv6."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "other-" + hashlib.sha256(address.encode()).hexdigest()[:32]
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


@dataclass
class PasswordAttempt:
    """One password check, counted as a failure until :meth:`succeeded` says it was right."""

    _reservation: Reservation
    _pair: _Counter

    def succeeded(self) -> None:
        """The password was right: forget the pair's failures; the address gets this attempt back."""
        # Only this attempt, not the address's count: logging into one's own
        # account must not wipe the guesses made from that address at others.
        pair_prefix = f"{self._pair.name}:"
        self._reservation.taken = [item for item in self._reservation.taken if not item[0].startswith(pair_prefix)]
        self._reservation.release()
        self._pair.reset()


def password_attempt_begin(*, user: User | None, username: str, address: str, blocked_message: str) -> PasswordAttempt:
    """Start a password check of ``user`` (or of the unknown ``username``) from ``address``.

    Raises ``ApplicationError(blocked_message, 429)`` while the (account, address)
    pair or the address is at its limit of failures; otherwise the check counts as
    a failure unless :meth:`PasswordAttempt.succeeded` is called. The pair's
    account is the user's id, so a renamed account keeps its count; an unknown
    name is counted by name (case-insensitively, as usernames are unique).
    """
    window = settings.LOGIN_FAILURE_WINDOW_SECONDS
    if user is not None:
        account = f"user-{user.pk}"
    else:
        account = "name-" + hashlib.sha256(username.lower().encode()).hexdigest()[:32]
    group = _address_group(address)
    pair = _Counter(f"password-failures:pair:{account}:{group}", settings.LOGIN_MAX_FAILURES, window)
    per_address = _Counter(f"password-failures:address:{group}", settings.LOGIN_MAX_FAILURES_PER_ADDRESS, window)
    reservation = _reserve([pair, per_address], blocked_message=blocked_message)
    return PasswordAttempt(reservation, pair)


def registration_reserve(*, address: str) -> Reservation:
    """Count a registration from ``address``, or refuse it (429) past ``REGISTRATIONS_PER_ADDRESS_PER_HOUR``.

    The caller releases the reservation if the registration does not happen.
    """
    counter = _Counter(
        f"registrations:address:{_address_group(address)}",
        settings.REGISTRATIONS_PER_ADDRESS_PER_HOUR,
        REGISTRATION_WINDOW_SECONDS,
    )
    return _reserve([counter], blocked_message=REGISTRATION_BLOCKED_MESSAGE)
