"""Where a webhook may go, and how it is sent there: the SSRF guard and a pinned HTTP POST.

A webhook URL is chosen by a user, and the server, not the user, connects to it: without
a guard anyone could make the server call its own admin ports, the cloud's metadata
service (169.254.169.254) or hosts of the private network. So:

- only ``http`` and ``https``, printable ASCII, no credentials in the URL;
- the host is resolved (every address ``getaddrinfo`` gives) and refused if any address
  is loopback, private, link-local, multicast, reserved, unspecified or otherwise not
  global (IPv4 inside IPv6 included), at registration and again before every attempt;
- the connection goes to an address that was just checked, never to the name again: a
  name that resolves elsewhere a moment later (DNS rebinding) cannot slip between the
  check and the connection. The request still carries the URL's ``Host`` and, over TLS,
  its name for SNI and for checking the certificate;
- redirects are never followed (a 3xx is a failed attempt), at most a few KB of the
  answer are read, and the whole exchange has one deadline.

``WEBHOOK_ALLOW_PRIVATE_NETWORKS`` lifts the address rule only (development, tests).
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit

from whisper_site.errors import ApplicationError

URL_MAX_LENGTH = 2048
URL_PATTERN = "^[Hh][Tt][Tt][Pp][Ss]?://[!-~]+$"
URL_FORM_MESSAGE = "Invalid url: must be an http or https URL"
URL_LENGTH_MESSAGE = f"Invalid url: at most {URL_MAX_LENGTH} characters"
URL_CREDENTIALS_MESSAGE = "Invalid url: credentials in the URL are not allowed"
URL_UNRESOLVED_MESSAGE = "Invalid url: the host does not resolve"
URL_BLOCKED_MESSAGE = "Invalid url: the host resolves to a loopback, private, link-local, multicast or reserved address"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# NAT64 (RFC 6052): 64:ff9b::a.b.c.d reaches the IPv4 address a.b.c.d through a gateway.
NAT64_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")


@dataclass(frozen=True)
class Destination:
    """A checked webhook URL: where to connect (``addresses``) and what to ask for."""

    scheme: str
    host: str
    port: int
    target: str
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class PostResult:
    """One attempt's outcome: the status code when an answer came, and why it failed ("" if not)."""

    status_code: int | None
    error: str

    @property
    def ok(self) -> bool:
        return not self.error


def url_parse(url: str) -> SplitResult:
    """The parts of a webhook URL, or ``ApplicationError(400)`` when it cannot be one."""
    if len(url) > URL_MAX_LENGTH:
        raise ApplicationError(URL_LENGTH_MESSAGE, 400)
    # Printable ASCII only: no spaces or control characters to smuggle into the request line
    # (an international name is written in its xn-- form).
    if not url or any(not 0x21 <= ord(char) <= 0x7E for char in url):
        raise ApplicationError(URL_FORM_MESSAGE, 400)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError for a port out of range)
    except ValueError:
        raise ApplicationError(URL_FORM_MESSAGE, 400) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ApplicationError(URL_FORM_MESSAGE, 400)
    if "@" in parts.netloc:
        raise ApplicationError(URL_CREDENTIALS_MESSAGE, 400)
    return parts


def address_refused(address: IPAddress) -> bool:
    """Whether a webhook may not be sent to ``address``: anything but a global unicast address.

    An IPv6 address that carries an IPv4 one (mapped, 6to4, Teredo, NAT64) is refused when
    the IPv4 address would be.
    """
    candidates: list[IPAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            candidates.append(address.ipv4_mapped)
        if address.sixtofour is not None:
            candidates.append(address.sixtofour)
        if address.teredo is not None:
            candidates.extend(address.teredo)
        if address in NAT64_PREFIX:
            candidates.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return any(
        candidate.is_loopback
        or candidate.is_private
        or candidate.is_link_local
        or candidate.is_multicast
        or candidate.is_reserved
        or candidate.is_unspecified
        or not candidate.is_global
        for candidate in candidates
    )


def host_addresses(host: str, port: int) -> tuple[str, ...]:
    """Every address ``host`` resolves to now, in the resolver's order, without repeats."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError):
        # UnicodeError: a label longer than 63 characters cannot even be looked up.
        raise ApplicationError(URL_UNRESOLVED_MESSAGE, 400) from None
    # A link-local IPv6 address comes with its zone ("fe80::1%eth0"); the address is before it.
    addresses = tuple(dict.fromkeys(str(info[4][0]).split("%", 1)[0] for info in infos))
    if not addresses:
        raise ApplicationError(URL_UNRESOLVED_MESSAGE, 400)
    return addresses


def destination_resolve(*, url: str, allow_private: bool) -> Destination:
    """Check ``url`` and resolve its host now: the :class:`Destination` to connect to.

    Raises ``ApplicationError(400)`` with the reason when the URL cannot be used: its form,
    a host that does not resolve, or (unless ``allow_private``) a host any of whose
    addresses is not a global one. Every address must pass: a name that also resolves to
    a private address could be made to reach it.
    """
    parts = url_parse(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses = host_addresses(host, port)
    if not allow_private and any(address_refused(ipaddress.ip_address(address)) for address in addresses):
        raise ApplicationError(URL_BLOCKED_MESSAGE, 400)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Destination(scheme=parts.scheme, host=host, port=port, target=target, addresses=addresses)


def destination_post(
    *,
    destination: Destination,
    body: bytes,
    headers: dict[str, str],
    timeout: float,
    max_response_bytes: int,
) -> PostResult:
    """POST ``body`` to ``destination`` on one of its checked addresses; a 2xx within ``timeout`` is success.

    The connection and the whole exchange share one deadline of ``timeout`` seconds: at
    the deadline the socket is shut down, so that a receiver that trickles its answer a
    byte at a time cannot hold the worker longer. Redirects are not followed. Of the
    answer, only the status and the first ``max_response_bytes`` of a failure's body (for
    the delivery log) are read.
    """
    connection: http.client.HTTPConnection
    if destination.scheme == "https":
        # The URL's host name for SNI and the certificate check, whatever address is dialled.
        connection = http.client.HTTPSConnection(
            destination.host, destination.port, timeout=timeout, context=ssl.create_default_context()
        )
    else:
        connection = http.client.HTTPConnection(destination.host, destination.port, timeout=timeout)

    def connect_pinned(address: Any, connect_timeout: Any, source_address: Any = None) -> socket.socket:
        # http.client dials through this attribute (with the host name it was given):
        # dial the checked addresses instead, and never resolve the name again.
        last_error: OSError = OSError("no address to connect to")
        for candidate in destination.addresses:
            try:
                return socket.create_connection((candidate, destination.port), connect_timeout, source_address)
            except OSError as exc:
                last_error = exc
        raise last_error

    connection._create_connection = connect_pinned  # type: ignore[attr-defined]

    deadline_passed = threading.Event()

    def cut() -> None:
        deadline_passed.set()
        sock = connection.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    timer = threading.Timer(timeout, cut)
    timer.daemon = True
    timer.start()
    status: int | None = None
    snippet = b""
    try:
        connection.request("POST", destination.target, body=body, headers={**headers, "Connection": "close"})
        response = connection.getresponse()
        status = response.status
        if not 200 <= status < 300 and max_response_bytes > 0:
            snippet = response.read(max_response_bytes)
    except (OSError, http.client.HTTPException) as exc:
        if deadline_passed.is_set() or isinstance(exc, TimeoutError):
            return PostResult(status_code=status, error=f"Timed out after {timeout:g} s")
        return PostResult(status_code=status, error=_connection_error(exc))
    finally:
        timer.cancel()
        connection.close()
    if deadline_passed.is_set():
        return PostResult(status_code=status, error=f"Timed out after {timeout:g} s")
    if 200 <= status < 300:
        return PostResult(status_code=status, error="")
    reason = f"HTTP {status}"
    if 300 <= status < 400:
        reason += " (redirects are not followed)"
    text = " ".join(snippet.decode("utf-8", "replace").split())[:200]
    return PostResult(status_code=status, error=f"{reason}: {text}" if text else reason)


def _connection_error(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return "Connection refused"
    if isinstance(exc, OSError):
        return f"Connection failed: {exc.strerror or exc}"
    return f"Invalid HTTP answer: {type(exc).__name__}"
