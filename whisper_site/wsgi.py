"""The WSGI application gunicorn serves, behind whatever proxy the deployment puts in front.

Behind the compose file's nginx every connection comes from nginx: the
client's address arrives in ``X-Forwarded-For``. Where the connection comes
from an address in ``FORWARDED_ALLOW_IPS`` (gunicorn's own setting of that
name decides the same for ``X-Forwarded-Proto``), the last address of that
header, the one the proxy added, becomes ``REMOTE_ADDR``: what the login
throttle counts failures by. From any other address the header is ignored.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Iterable
from typing import Any

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "whisper_site.settings")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def proxy_trusted(allowed: list[str]) -> Callable[[str], bool]:
    """Whether a peer address is one of ``allowed`` (addresses, networks, or ``*`` for any)."""
    if "*" in allowed:
        return lambda address: True
    networks = [ipaddress.ip_network(entry, strict=False) for entry in allowed]

    def trusted(address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in networks)

    return trusted


def client_address_from_proxy(app: WSGIApp, allowed: list[str]) -> WSGIApp:
    """``app``, with ``REMOTE_ADDR`` taken from ``X-Forwarded-For`` when a trusted proxy sent the request."""
    trusted = proxy_trusted(allowed)

    def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        forwarded = environ.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded and trusted(environ.get("REMOTE_ADDR", "")):
            client = forwarded.rsplit(",", 1)[-1].strip()
            try:
                environ["REMOTE_ADDR"] = str(ipaddress.ip_address(client))
            except ValueError:
                pass  # not an address: the proxy's stays
        return app(environ, start_response)

    return application


def _application() -> WSGIApp:
    django_app = get_wsgi_application()
    from django.conf import settings

    return client_address_from_proxy(django_app, settings.FORWARDED_ALLOW_IPS)


application = _application()
