"""Which address a request comes from: REMOTE_ADDR, or X-Forwarded-For behind trusted proxies."""

from __future__ import annotations

import pytest
from django.test import RequestFactory

from accounts.client_address import client_address


def request_from(remote_addr: str, forwarded_for: str | None = None):
    extra = {"REMOTE_ADDR": remote_addr}
    if forwarded_for is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded_for
    return RequestFactory().get("/", **extra)


def test_without_trusted_proxies_the_header_is_not_believed(settings) -> None:
    settings.TRUSTED_PROXY_COUNT = 0
    assert client_address(request_from("192.0.2.10", "203.0.113.1")) == "192.0.2.10"
    assert client_address(request_from("192.0.2.10")) == "192.0.2.10"


@pytest.mark.parametrize(
    ("proxies", "forwarded_for", "expected"),
    [
        # The one proxy appended the address that reached it; the rest is the client's own text.
        (1, "203.0.113.7", "203.0.113.7"),
        (1, "198.51.100.66, 203.0.113.7", "203.0.113.7"),
        (1, "anything, at all,, 203.0.113.7", "203.0.113.7"),
        # Two proxies: the nearest wrote the farther proxy's address.
        (2, "198.51.100.66, 203.0.113.7, 10.0.0.2", "203.0.113.7"),
        # Fewer entries than proxies: every entry is a proxy's, the leftmost is the client.
        (2, "203.0.113.7", "203.0.113.7"),
        # Normalised: IPv4 in IPv6, ports, case and zero runs of IPv6.
        (1, "::ffff:203.0.113.7", "203.0.113.7"),
        (1, "203.0.113.7:51234", "203.0.113.7"),
        (1, "[2001:DB8:0:0::1]:443", "2001:db8::1"),
    ],
)
def test_behind_trusted_proxies_the_nth_address_from_the_right(
    settings, proxies: int, forwarded_for: str, expected: str
) -> None:
    settings.TRUSTED_PROXY_COUNT = proxies
    assert client_address(request_from("10.0.0.1", forwarded_for)) == expected


def test_behind_trusted_proxies_a_request_without_the_header_is_its_connection(settings) -> None:
    settings.TRUSTED_PROXY_COUNT = 1
    assert client_address(request_from("192.0.2.10")) == "192.0.2.10"
    assert client_address(request_from("192.0.2.10", " , ")) == "192.0.2.10"


def test_a_connection_without_an_address_is_one_unknown_client(settings) -> None:
    settings.TRUSTED_PROXY_COUNT = 0
    assert client_address(request_from("")) == "unknown"
