"""gunicorn's ``gthread`` worker, changed so that slow and idle clients never hold its threads.

Stock ``gthread`` hands a connection to a thread as soon as one byte of it
arrives, and that thread then blocks on the socket, with no timeout, until the
request head and body are in. A client that sends half a request holds a thread
for good: with ``manage.py serve``'s 2 processes of 4 threads, a handful stall
the API. Kept-alive connections fare no better after an answer given before the
body was read (a 404 or a 401 to a multipart POST, as the ``openai`` package
meets them): the next thread to take the connection reads the body, then waits
for the next request for as long as the client keeps the connection idle.

So this worker does in its event loop what a buffering proxy does in front:

- The request head, and a body of up to ``DATA_UPLOAD_MAX_MEMORY_SIZE`` bytes
  (every JSON or form body Django accepts), are received without blocking;
  only a complete request is handed to a thread. The head must arrive within
  ``REQUEST_HEADER_TIMEOUT_SECONDS`` of the connection (or of its first byte
  on a kept-alive one), such a body within ``REQUEST_BODY_TIMEOUT_SECONDS``
  of its head; past that the client gets a 408 and the connection is closed.
  At most ``BUFFER_BUDGET_BYTES`` of bodies are held per process; past that a
  body is read by its thread, as a larger one is.
- A larger body (an upload) is read by the thread, each read waiting at most
  ``REQUEST_BODY_TIMEOUT_SECONDS`` (the socket's timeout, which also bounds
  each write of the answer).
- An answer given before the body was read: what is left of the body is read
  and dropped if it is in memory already or at most ``DRAIN_BYTES`` more, and
  the connection is kept alive. Otherwise the answer says ``Connection:
  close``, and the event loop reads and drops what the client still sends for
  up to ``LINGER_SECONDS`` before closing (a "lingering close", as nginx
  does), so that the client reads the answer rather than a reset.
- Kept-alive connections wait in the event loop, never in a thread, and are
  closed after gunicorn's ``keepalive`` seconds.

Written against gunicorn 23.0 (pinned in requirements.txt): it replaces the
methods of ``gthread.ThreadWorker`` that move connections between the event
loop and the threads, and reads the request's body reader to know what is left
of a body. ``tests/site/test_slow_clients.py`` runs each of these paths against
``manage.py serve``.
"""

from __future__ import annotations

import errno
import io
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from gunicorn.http.body import ChunkedReader, LengthReader
from gunicorn.http.unreader import SocketUnreader
from gunicorn.workers.gthread import TConn, ThreadWorker

# Past this a request head is refused (431). gunicorn's own limits
# (gunicorn_conf.py) refuse a long request line or header field sooner.
HEAD_MAX_BYTES = 64 * 1024
RECV_BYTES = 64 * 1024
# Bodies held in memory by one process at once, waiting to be complete.
BUFFER_BUDGET_BYTES = 64 * 1024 * 1024
# What may still be read of an unread body after its answer, keeping the connection.
DRAIN_BYTES = 64 * 1024
DRAIN_SECONDS = 1.0
LINGER_SECONDS = 5.0
# How often the event loop looks for connections past their deadline.
REAP_SECONDS = 0.25

# Where a connection waits in the event loop.
HEAD = "head"  # for the rest of a request head
BODY = "body"  # for the rest of a body it buffers
IDLE = "idle"  # kept alive, for the first byte of the next request
LINGER = "linger"  # closing: the client's bytes are dropped


class BufferedConn(TConn):
    """A client connection, with what the event loop has received of its next request."""

    def __init__(self, cfg: Any, sock: socket.socket, client: Any, server: Any) -> None:
        super().__init__(cfg, sock, client, server)
        self.received = bytearray()
        self.state = HEAD
        self.deadline = 0.0
        # Index in `received` where the buffered body ends.
        self.body_end = 0
        # Bytes of the process's buffer budget this connection holds.
        self.reserved = 0
        # Close with a lingering close: the client may still be sending a body.
        self.linger = False


class BufferingThreadWorker(ThreadWorker):
    """``gthread``, except that a thread only ever waits on a client for a large body; see the module docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Every connection waiting in the event loop. gthread's handle_request
        # counts them (its `_keep`) to stop keeping connections alive past
        # worker_connections - threads.
        self._keep: dict[BufferedConn, None] = {}  # type: ignore[assignment]
        self._ready: list[BufferedConn] = []
        self._buffered_bytes = 0
        self._next_reap = 0.0
        self._current = threading.local()
        self.header_timeout = 10.0
        self.body_timeout = 30.0
        self.body_buffer_bytes = 1024 * 1024

    @classmethod
    def check_config(cls, cfg: Any, log: Any) -> None:
        super().check_config(cfg, log)
        if cfg.is_ssl:
            # Raw bytes are read before TLS would unwrap them; TLS ends at the proxy.
            raise RuntimeError("BufferingThreadWorker does not serve TLS: terminate it in a proxy")

    def load_wsgi(self) -> None:
        super().load_wsgi()
        self.wsgi = self._closing_unread_bodies(self.wsgi)

    def run(self) -> None:
        # The application (Django) is loaded by now.
        from django.conf import settings

        self.header_timeout = float(settings.REQUEST_HEADER_TIMEOUT_SECONDS)
        self.body_timeout = float(settings.REQUEST_BODY_TIMEOUT_SECONDS)
        self.body_buffer_bytes = int(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
        # Wakes the event loop for a request a thread left buffered (pipelined).
        self._wakeup_in, self._wakeup_out = socket.socketpair()
        self._wakeup_in.setblocking(False)
        self._wakeup_out.setblocking(False)
        self.poller.register(self._wakeup_in, selectors.EVENT_READ, self._on_wakeup)
        super().run()

    # -- the event loop (main thread) -----------------------------------------

    def accept(self, server: Any, listener: socket.socket) -> None:
        try:
            sock, client = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        conn = BufferedConn(self.cfg, sock, client, server)
        self.nr_conns += 1
        self._park(conn, HEAD, self.header_timeout)

    def _on_readable(self, conn: BufferedConn, sock: socket.socket) -> None:
        if conn not in self._keep:
            return
        if conn.state == LINGER:
            self._discard(conn)
            return
        try:
            data = conn.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return
        if conn.state == IDLE:
            conn.state, conn.deadline = HEAD, time.monotonic() + self.header_timeout
        conn.received += data
        self._advance(conn)

    def _advance(self, conn: BufferedConn) -> None:
        """Hand ``conn`` to a thread once what it received is a request it can serve without waiting."""
        if conn.state == HEAD:
            end = conn.received.find(b"\r\n\r\n", 0, HEAD_MAX_BYTES)
            if end < 0:
                if len(conn.received) >= HEAD_MAX_BYTES:
                    self._refuse(conn, "431 Request Header Fields Too Large", "Request header fields too large")
                return
            head = bytes(conn.received[: end + 4])
            length, expects_continue = body_framing(head)
            if length is None or length > self.body_buffer_bytes or not self._reserve(conn, length):
                # Streamed (an upload, a chunked body) or refused by gunicorn: the thread reads it.
                self._dispatch(conn)
                return
            if expects_continue:
                # Answered here, so the client sends the body we buffer; gunicorn
                # must not answer it a second time.
                conn.received[: end + 4] = without_expect(head)
                end = conn.received.find(b"\r\n\r\n")
                self._write(conn, b"HTTP/1.1 100 Continue\r\n\r\n")
            conn.body_end = end + 4 + length
            conn.state, conn.deadline = BODY, time.monotonic() + self.body_timeout
        if conn.state == BODY and len(conn.received) >= conn.body_end:
            self._dispatch(conn)

    def _dispatch(self, conn: BufferedConn) -> None:
        self._unpark(conn)
        conn.init()
        if not isinstance(conn.parser.unreader, ReceivedFirstUnreader):
            # First request of the connection: no message holds the old reader yet.
            conn.parser.unreader = ReceivedFirstUnreader(conn.sock)
        conn.parser.unreader.hand_over(bytes(conn.received))
        conn.received = bytearray()
        conn.sock.settimeout(self.body_timeout)
        future = self.tpool.submit(self.handle, conn)
        self._wrap_future(future, conn)

    def _discard(self, conn: BufferedConn) -> None:
        for _ in range(16):
            try:
                if not conn.sock.recv(RECV_BYTES):
                    break
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                break
        else:
            return
        self._drop(conn)

    def _refuse(self, conn: BufferedConn, status: str, message: str) -> None:
        body = message.encode()
        head = f"HTTP/1.1 {status}\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n"
        self._write(conn, f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        self._release(conn)
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._drop(conn)
            return
        conn.state, conn.deadline = LINGER, time.monotonic() + LINGER_SECONDS

    def murder_keepalived(self) -> None:
        """Close what waited past its deadline (gthread calls this on every turn of its loop)."""
        now = time.monotonic()
        if now < self._next_reap:
            return
        self._next_reap = now + REAP_SECONDS
        with self._lock:
            expired = [conn for conn in self._keep if conn.deadline <= now]
        for conn in expired:
            if conn.state in (HEAD, BODY) and conn.received:
                self._write(conn, b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n" + TIMEOUT_TAIL)
                self.log.debug("Request from %s timed out in its %s", conn.client, conn.state)
            self._drop(conn)

    def _on_wakeup(self, sock: socket.socket) -> None:
        try:
            while sock.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        with self._lock:
            ready, self._ready = self._ready, []
        for conn in ready:
            if conn in self._keep:
                self._advance(conn)

    # -- connections between the loop and the threads --------------------------

    def _park(self, conn: BufferedConn, state: str, seconds: float) -> None:
        conn.state, conn.deadline = state, time.monotonic() + seconds
        with self._lock:
            self._keep[conn] = None
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, conn))

    def _unpark(self, conn: BufferedConn) -> None:
        with self._lock:
            if self._keep.pop(conn, False) is not False:
                try:
                    self.poller.unregister(conn.sock)
                except (KeyError, ValueError, OSError):
                    pass

    def _drop(self, conn: BufferedConn) -> None:
        self._unpark(conn)
        self._release(conn)
        self.nr_conns -= 1
        conn.close()

    def _reserve(self, conn: BufferedConn, length: int) -> bool:
        if length == 0:
            return True
        with self._lock:
            if self._buffered_bytes + length > BUFFER_BUDGET_BYTES:
                return False
            self._buffered_bytes += length
        conn.reserved = length
        return True

    def _release(self, conn: BufferedConn) -> None:
        if conn.reserved:
            with self._lock:
                self._buffered_bytes -= conn.reserved
            conn.reserved = 0

    def _write(self, conn: BufferedConn, data: bytes) -> None:
        """Best effort, never blocking: for answers the event loop gives itself."""
        try:
            conn.sock.send(data)
        except OSError:
            pass

    def finish_request(self, fs: Any) -> None:
        """In the thread that served the request: park the connection again, or close it."""
        conn: BufferedConn = fs.conn
        keepalive = False
        if not fs.cancelled():
            try:
                keepalive = fs.result()[0]
            except Exception:
                keepalive = False
        self._release(conn)
        if not self.alive or fs.cancelled():
            self._drop(conn)
        elif keepalive:
            conn.sock.setblocking(False)
            # A pipelined next request gunicorn read past this one.
            pipelined = conn.parser.unreader.take()
            conn.received = bytearray(pipelined)
            if not pipelined:
                self._park(conn, IDLE, self.cfg.keepalive)
                return
            self._park(conn, HEAD, self.header_timeout)
            with self._lock:
                self._ready.append(conn)
            try:
                self._wakeup_out.send(b"\0")
            except OSError:
                pass  # a byte is waiting already
        elif conn.linger:
            try:
                conn.sock.shutdown(socket.SHUT_WR)
                conn.sock.setblocking(False)
            except OSError:
                self._drop(conn)
                return
            self._park(conn, LINGER, LINGER_SECONDS)
        else:
            self._drop(conn)

    # -- in a thread ---------------------------------------------------------------

    def handle_request(self, req: Any, conn: BufferedConn) -> bool:
        self._current.req = req
        try:
            keepalive = super().handle_request(req, conn)
        except TimeoutError:
            # The client stopped reading the answer, or sending a body Django read.
            self.log.info("Closing %s: no progress in %s s", conn.client, self.body_timeout)
            raise StopIteration() from None  # gthread closes the connection quietly
        finally:
            self._current.req = None
        if not keepalive:
            conn.linger = body_left_on_socket(req) != 0
            return False
        return self._drain(req, conn)

    def _drain(self, req: Any, conn: BufferedConn) -> bool:
        """Read and drop what is left of ``req``'s body (in memory, or a little more): whether that worked."""
        deadline = time.monotonic() + DRAIN_SECONDS
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                conn.sock.settimeout(remaining)
                if not req.body.read(RECV_BYTES):
                    return True
        except Exception:  # a timeout, a reset, a malformed chunk: the connection is done
            pass
        conn.linger = True
        return False

    def _closing_unread_bodies(self, app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
        """``app``, its answers saying ``Connection: close`` when too much of the request body is unread.

        The app calls start_response once it is done with the request (Django
        reads what it needs of a body before the view returns), before the
        headers are sent: the last moment gunicorn can still be told to close.
        """
        current = self._current

        def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
                req = getattr(current, "req", None)
                if req is not None:
                    left = body_left_on_socket(req)
                    if left is None or left > DRAIN_BYTES:
                        req.force_close()
                return start_response(status, headers, exc_info)

            return app(environ, start)

        return application


TIMEOUT_TAIL = b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 15\r\n\r\nRequest timeout"


def body_framing(head: bytes) -> tuple[int | None, bool]:
    """The body length a request head announces (``None``: not one to buffer), and whether it expects 100-continue.

    Chunked bodies, repeated or malformed lengths are left to the thread:
    gunicorn refuses the malformed ones itself.
    """
    lengths: list[bytes] = []
    chunked = False
    expects_continue = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            lengths.append(value.strip())
        elif name == b"transfer-encoding":
            chunked = True
        elif name == b"expect":
            expects_continue = value.strip().lower() == b"100-continue"
    if chunked or len(lengths) > 1 or (lengths and not lengths[0].isdigit()):
        return None, False
    return (int(lengths[0]) if lengths else 0), expects_continue


def without_expect(head: bytes) -> bytes:
    """``head`` less its ``Expect`` header."""
    lines = head.split(b"\r\n")
    kept = [line for line in lines[1:] if line.partition(b":")[0].strip().lower() != b"expect"]
    return b"\r\n".join([lines[0], *kept])


def body_left_on_socket(req: Any) -> int | None:
    """Bytes of ``req``'s body not received from the client yet; ``None`` when unknown (a chunked body)."""
    reader = req.body.reader
    if isinstance(reader, LengthReader):
        return max(0, reader.length - req.unreader.buffered_bytes())
    if isinstance(reader, ChunkedReader):
        return 0 if reader.parser is None else None
    return None


class ReceivedFirstUnreader(SocketUnreader):
    """gunicorn's socket reader, handing out what the event loop received before it reads the socket.

    In pieces of gunicorn's own read size, as the socket would: gunicorn's
    body reader copies what is left of a piece on each 1 KiB it takes, which
    over a whole buffered body at once would be quadratic.
    ``files.multipart.GunicornSocketSource`` takes ``received`` at once.
    """

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        self.received = memoryview(b"")

    def hand_over(self, data: bytes) -> None:
        self.received = memoryview(bytes(self.received) + data)

    def chunk(self) -> bytes:
        if self.received:
            piece, self.received = self.received[: self.mxchunk], self.received[self.mxchunk :]
            return bytes(piece)
        return super().chunk()

    def buffered_bytes(self) -> int:
        return self.buf.seek(0, io.SEEK_END) + len(self.received)

    def take(self) -> bytes:
        """Everything received and not read yet, taken out."""
        data = self.buf.getvalue() + bytes(self.received)
        self.buf = io.BytesIO()
        self.received = memoryview(b"")
        return data
