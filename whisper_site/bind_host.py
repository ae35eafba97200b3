"""Where the web server listens, and whether the embedded SECRET_KEY may serve there.

Read by the settings (from ``BIND_HOST``) and by ``manage.py serve`` (from
``--host``, before it starts anything). Plain functions: nothing here reads
the environment.
"""

from __future__ import annotations

import ipaddress

# Public in this repository: fine for a server only this machine can reach.
EMBEDDED_SECRET_KEY = "insecure-embedded-default-key-set-SECRET_KEY-in-production-0123456789"


def bind_host_is_loopback(host: str) -> bool:
    """Whether a server listening on ``host`` (``127.0.0.1``, ``[::1]:8000``, ``0.0.0.0``...) is local only.

    A name other than ``localhost``, a Unix socket (``unix:/path``, usually
    behind a public proxy) or an unparsable value counts as reachable.
    """
    host = host.strip().lower()
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def embedded_secret_key_refusal(bind_host: str) -> str | None:
    """The one-line reason a server on ``bind_host`` may not run on the embedded key, or ``None``."""
    if bind_host_is_loopback(bind_host):
        return None
    return f"SECRET_KEY is not set and BIND_HOST={bind_host} is not loopback: set SECRET_KEY, or bind to 127.0.0.1 for local use"
