"""A real webhook receiver for tests: an HTTP server on 127.0.0.1 in a thread.

It records every request and answers each with the next scripted :class:`Reply` (200 once
the script runs out). Deliveries to it need ``WEBHOOK_ALLOW_PRIVATE_NETWORKS`` on: the
``allow_private_networks`` fixture. Other test packages use both fixtures by importing
them into their ``conftest.py``::

    from tests.webhooks.receiver import allow_private_networks, webhook_receiver  # noqa: F401

and check what arrived with :meth:`WebhookReceiver.verified`, which verifies each request
with the ``standardwebhooks`` package, as a receiver would.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from standardwebhooks import Webhook


@dataclass(frozen=True)
class Reply:
    """One scripted answer: its status, headers and body, after ``delay`` seconds.

    ``body_size`` streams that many bytes of body instead of ``body`` (a receiver that
    answers far more than anyone should read).
    """

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    body_size: int = 0


@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class WebhookReceiver:
    """The server, what it received, and what it is still to answer."""

    def __init__(self) -> None:
        self.requests: list[ReceivedRequest] = []
        self.replies: list[Reply] = []
        self.bytes_written = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/whisper"

    def answer(self, *replies: Reply) -> None:
        """Answer the next requests with ``replies``, in order."""
        with self._lock:
            self.replies.extend(replies)

    def verified(self, secret: str) -> list[dict[str, Any]]:
        """Each request's payload, verified with ``standardwebhooks`` (raises if any does not verify)."""
        return [Webhook(secret).verify(request.body, request.headers) for request in self.requests]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _next_reply(self) -> Reply:
        with self._lock:
            return self.replies.pop(0) if self.replies else Reply()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802  (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {name.lower(): value for name, value in self.headers.items()}
                with receiver._lock:
                    receiver.requests.append(ReceivedRequest("POST", self.path, headers, body))
                reply = receiver._next_reply()
                if reply.delay:
                    time.sleep(reply.delay)
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    size = reply.body_size or len(reply.body)
                    self.send_header("Content-Length", str(size))
                    self.end_headers()
                    if not reply.body_size:
                        self.wfile.write(reply.body)
                        return
                    chunk = b"x" * 65536
                    while receiver.bytes_written < size:
                        self.wfile.write(chunk)
                        receiver.bytes_written += len(chunk)
                except OSError:
                    pass  # the client went away: what it read was enough

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    receiver.start()
    yield receiver
    receiver.stop()


@pytest.fixture
def allow_private_networks(settings: Any) -> None:
    """Deliveries to this machine (the receiver listens on 127.0.0.1) are allowed."""
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True


def register_receiver(*, user: Any, receiver: WebhookReceiver, events: tuple[str, ...] | None = None) -> Any:
    """Register ``receiver`` as a webhook endpoint of ``user`` (all events unless named): the endpoint, with its secret."""
    from webhooks import services

    return services.webhook_endpoint_create(user=user, url=receiver.url, events=list(events or services.EVENT_TYPES))
