"""The address of the client behind a request, as far as this deployment can know it.

Every place that counts or limits by address (the password guard, the
registration limit) asks :func:`client_address`, never ``REMOTE_ADDR`` or
``X-Forwarded-For`` itself.
"""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.http import HttpRequest

UNKNOWN_ADDRESS = "unknown"


def client_address(request: HttpRequest) -> str:
    """The client's IP address, normalised (``::ffff:1.2.3.4`` is ``1.2.3.4``).

    ``TRUSTED_PROXY_COUNT`` is the number of proxies in front of the service, each
    appending the address it was reached from to ``X-Forwarded-For``. With 0 (the
    default) the connection's own address (``REMOTE_ADDR``) is the client's and the
    header is ignored: anyone can write it. With N, the last N entries of the
    header were written by those proxies and the Nth from the right is the client;
    whatever stands left of it came from the client and is ignored. A request with
    no header (one that did not pass the proxies) falls back to ``REMOTE_ADDR``.
    """
    proxies = settings.TRUSTED_PROXY_COUNT
    if proxies:
        # Several X-Forwarded-For headers reach META joined with commas. Empty
        # entries can only be in the client's part: a proxy always writes one.
        forwarded = [entry.strip() for entry in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
        forwarded = [entry for entry in forwarded if entry]
        if forwarded:
            # Fewer entries than proxies: all of them were written by proxies, and
            # the leftmost is the furthest address known.
            return _normalised(forwarded[-proxies] if len(forwarded) >= proxies else forwarded[0])
    return _normalised(request.META.get("REMOTE_ADDR", ""))


def _normalised(text: str) -> str:
    """An address as one canonical text, without a port some proxies append."""
    text = text.strip()
    candidates = [text]
    if text.startswith("[") and "]" in text:  # [2001:db8::1]:443
        candidates.append(text[1 : text.index("]")])
    elif text.count(":") == 1:  # 192.0.2.1:443
        candidates.append(text.split(":", 1)[0])
    for candidate in candidates:
        try:
            address = ipaddress.ip_address(candidate)
        except ValueError:
            continue
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(address)
    # Not an address (a Unix socket has none): still one client as far as we can tell.
    return text[:100] or UNKNOWN_ADDRESS
