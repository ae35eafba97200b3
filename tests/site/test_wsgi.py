"""``whisper_site/wsgi.py``: the client's address behind a trusted proxy."""

from __future__ import annotations

from typing import Any

import pytest

from whisper_site.wsgi import client_address_from_proxy


def remote_addr_seen(allowed: list[str], peer: str, forwarded: str | None) -> str:
    seen: dict[str, Any] = {}

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.update(environ)
        return [b""]

    environ = {"REMOTE_ADDR": peer}
    if forwarded is not None:
        environ["HTTP_X_FORWARDED_FOR"] = forwarded
    client_address_from_proxy(app, allowed)(environ, lambda *args: None)
    return seen["REMOTE_ADDR"]


@pytest.mark.parametrize(
    ("allowed", "peer", "forwarded", "expected"),
    [
        # The proxy's own entry, the last one, names the client.
        (["127.0.0.1"], "127.0.0.1", "203.0.113.7", "203.0.113.7"),
        (["127.0.0.1"], "127.0.0.1", "198.51.100.1, 203.0.113.7", "203.0.113.7"),
        (["172.16.0.0/12"], "172.18.0.5", "2001:db8::1", "2001:db8::1"),
        (["*"], "10.1.2.3", "203.0.113.7", "203.0.113.7"),
        # Anyone else's header is not believed.
        (["127.0.0.1"], "198.51.100.9", "203.0.113.7", "198.51.100.9"),
        ([], "127.0.0.1", "203.0.113.7", "127.0.0.1"),
        # Nothing to take, or not an address.
        (["*"], "10.1.2.3", None, "10.1.2.3"),
        (["*"], "10.1.2.3", "unknown", "10.1.2.3"),
    ],
)
def test_remote_addr_comes_from_a_trusted_proxys_forwarded_for(
    allowed: list[str], peer: str, forwarded: str | None, expected: str
) -> None:
    assert remote_addr_seen(allowed, peer, forwarded) == expected
