"""Slow, idle and early-answered clients against ``manage.py serve`` (``make run``): nobody else waits.

The web server's worker (``whisper_site/gunicorn_worker.py``) receives request
heads and small bodies in its event loop, keeps idle connections there, and
drains or closes what an early answer left unread. These tests hold the
clients that stalled stock gthread and check that ``/api/v1/health`` still
answers every time, within a generous timeout; the latencies are
``bench/slow_clients.py``'s to report.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import string
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.site.conftest import DATA, ROOT, Served, free_port, serve_start

pytestmark = pytest.mark.served

PROBES = 10
PROBE_TIMEOUT = 5.0
BOUNDARY = "slow-clients-test-boundary"
BODY_BYTES = 3 * 1024 * 1024
# A login body that Django reads and the API refuses (400) before any
# credential is checked: no failed login is counted against 127.0.0.1.
INCOMPLETE_LOGIN = json.dumps({"username": "nobody-here"}).encode()


class Client:
    """One raw HTTP/1.1 connection: requests go out as they are written, byte for byte."""

    def __init__(self, served: Served | Front, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", served.port), timeout=timeout)
        self.pending = b""

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _receive(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed by the server after {self.pending[:200]!r}")
        self.pending += chunk

    def response(self) -> tuple[int, dict[str, str], bytes]:
        """The next response (a 1xx one included): status, lower-cased headers, body."""
        while b"\r\n\r\n" not in self.pending:
            self._receive()
        head, _, self.pending = self.pending.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        status = int(lines[0].split()[1])
        length = 0 if status < 200 else int(headers.get("content-length", "0"))
        while len(self.pending) < length:
            self._receive()
        body, self.pending = self.pending[:length], self.pending[length:]
        return status, headers, body

    def until_closed(self, seconds: float) -> bytes:
        """Everything the server sends until it closes the connection, which it must within ``seconds``."""
        self.sock.settimeout(seconds)
        data, self.pending = self.pending, b""
        while chunk := self.sock.recv(65536):
            data += chunk
        return data


def health_request(close: bool = False) -> bytes:
    connection = "Connection: close\r\n" if close else ""
    return f"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n{connection}\r\n".encode()


def probe_health(served: Served | Front, count: int = PROBES) -> list[str]:
    """``count`` health probes, each on a new connection; what went wrong with each (empty: all answered 200)."""
    failures = []
    for index in range(count):
        try:
            with Client(served, PROBE_TIMEOUT) as sock:
                sock.send(health_request(close=True))
                status, _, body = sock.response()
            if status != 200:
                failures.append(f"probe {index}: {status} {body!r}")
        except OSError as exc:
            failures.append(f"probe {index}: {exc!r}")
    return failures


def multipart_head(path: str, length: int, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: OpenAI/Python 1.0\r\n{extra}"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def multipart_body(length: int) -> bytes:
    part = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.mp3"\r\n\r\n'.encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    return part + b"\0" * (length - len(part) - len(tail)) + tail


@pytest.fixture
def held() -> Iterator[list[Client]]:
    """Connections a test opens and keeps open until it ends."""
    sockets: list[Client] = []
    yield sockets
    for sock in sockets:
        sock.close()


# --- the two figures -------------------------------------------------------------


def test_clients_holding_half_sent_requests_stall_nobody(served: Served, held: list[Client]) -> None:
    for index in range(12):
        sock = Client(served)
        if index % 2:
            # Headers without the blank line that ends them.
            sock.send(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow\r\n")
        else:
            sock.send(b"GET /api/v1/hea")  # half a request line
        held.append(sock)
    time.sleep(0.5)
    assert probe_health(served) == []
    # The held requests are still waiting, not refused: finished now, they are served.
    held[1].send(b"\r\n")
    assert held[1].response()[0] == 200


@pytest.mark.parametrize("path", ["/api/v1/no-such-route", "/api/v1/file"])
def test_kept_alive_clients_answered_before_their_body_stall_nobody(
    served: Served, held: list[Client], path: str
) -> None:
    """The ``openai`` package's pattern: a multipart POST answered 404 or 401, its body sent after the answer."""
    body = multipart_body(BODY_BYTES)
    for _ in range(10):
        sock = Client(served)
        held.append(sock)
        sock.send(multipart_head(path, len(body)))
        status, headers, answer = sock.response()
        assert status == (404 if path.endswith("route") else 401), answer
        # Megabytes still to come: the server will not read them, and says so.
        assert headers["connection"] == "close"
        try:
            sock.send(body)
        except OSError:
            pass  # closed after a lingering period: allowed
        # The client's next request, on a new connection since this one closes.
        with Client(served) as other:
            other.send(health_request())
            assert other.response()[0] == 200
    assert probe_health(served) == []


def test_clients_that_send_their_body_before_reading_the_early_answer_get_it(served: Served) -> None:
    """httpx (under ``openai``) writes the whole request, then reads: the answer must still reach it."""
    body = multipart_body(BODY_BYTES)
    sock = Client(served)
    errors: list[OSError] = []

    def send() -> None:
        try:
            sock.send(multipart_head("/api/v1/no-such-route", len(body)) + body)
        except OSError as exc:
            errors.append(exc)

    with sock:
        sender = threading.Thread(target=send)
        sender.start()
        sender.join(timeout=30)
        assert not sender.is_alive()
        # The server read and dropped the body while it closed the connection.
        assert errors == []
        status, headers, _ = sock.response()
        assert (status, headers["connection"]) == (404, "close")
        assert sock.until_closed(10) == b""
    assert probe_health(served, 2) == []


def test_pooling_http_clients_idle_after_early_answers_stall_nobody(served: Served) -> None:
    """``requests`` keeps connections in a pool and writes a whole request before it reads, as httpx does."""
    body = b"\0" * BODY_BYTES
    sessions = [requests.Session() for _ in range(10)]
    try:
        for index, session in enumerate(sessions):
            path, status = ("/api/v1/no-such-route", 404) if index % 2 else ("/api/v1/file", 401)
            answer = session.post(served.url + path, files={"file": ("a.mp3", body)}, timeout=PROBE_TIMEOUT * 2)
            assert answer.status_code == status, answer.text
        # Each client now idles with whatever its pool kept.
        assert probe_health(served) == []
        for session in sessions:
            assert session.get(served.url + "/api/v1/health", timeout=PROBE_TIMEOUT).status_code == 200
    finally:
        for session in sessions:
            session.close()


def test_an_early_answer_to_a_small_body_keeps_the_connection(served: Served) -> None:
    # Small bodies are received whole before a thread takes the request (a
    # client that waited for an answer before sending one would say
    # `Expect: 100-continue`): the body unread by the 401 is dropped.
    body = multipart_body(32 * 1024)
    with Client(served) as sock:
        for _ in range(3):
            sock.send(multipart_head("/api/v1/file", len(body)) + body)
            status, headers, _ = sock.response()
            assert (status, headers["connection"]) == (401, "keep-alive")
        sock.send(health_request())
        assert sock.response()[0] == 200


# --- what the event loop does with requests --------------------------------------


def test_a_request_sent_in_pieces_is_served(served: Served) -> None:
    payload = INCOMPLETE_LOGIN
    request = (
        b"POST /api/v1/user/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    with Client(served) as sock:
        for start in range(0, len(request), 40):
            sock.send(request[start : start + 40])
            time.sleep(0.05)
        status, _, answer = sock.response()
    assert status == 400, answer


def test_pipelined_requests_are_all_answered(served: Served) -> None:
    payload = INCOMPLETE_LOGIN
    login = (
        b"POST /api/v1/user/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    with Client(served) as sock:
        # All in one write: each request is received with the one before it.
        sock.send(health_request() + login + health_request() + login + health_request())
        statuses = [sock.response()[0] for _ in range(5)]
    assert statuses == [200, 400, 200, 400, 200]


def test_expect_100_continue_for_a_small_body_gets_one_interim_answer(served: Served) -> None:
    payload = INCOMPLETE_LOGIN
    with Client(served) as sock:
        sock.send(
            b"POST /api/v1/user/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Expect: 100-continue\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
        )
        assert sock.response()[0] == 100
        sock.send(payload)
        status, _, answer = sock.response()
        assert status == 400, answer
        sock.send(health_request())
        assert sock.response()[0] == 200


def test_a_head_over_64_kib_is_refused_in_one_line_of_text(served: Served) -> None:
    headers = "".join(f"X-Filler-{index}: {'a' * 8000}\r\n" for index in range(10))
    with Client(served) as sock:
        sock.send(f"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n".encode())
        status, response_headers, body = sock.response()
    assert (status, body) == (431, b"Request header fields too large")
    assert response_headers["content-type"] == "text/plain; charset=utf-8"


# --- deadlines -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def impatient(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """``make run`` with one-second deadlines, on the embedded broker."""
    server = serve_start(
        tmp_path_factory.mktemp("impatient") / "data",
        CELERY_BROKER_URL="filesystem://",
        REQUEST_HEADER_TIMEOUT_SECONDS="1",
        REQUEST_BODY_TIMEOUT_SECONDS="1",
    )
    try:
        yield server
    finally:
        server.stop()


def test_a_request_head_not_finished_in_time_is_a_408(impatient: Served) -> None:
    with Client(impatient) as sock:
        sock.send(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        answer = sock.until_closed(5)
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert answer.endswith(b"\r\n\r\nRequest timeout")


def test_a_connection_that_sends_nothing_is_closed(impatient: Served) -> None:
    with Client(impatient) as sock:
        assert sock.until_closed(5) == b""


def test_an_idle_kept_alive_connection_is_closed(impatient: Served) -> None:
    with Client(impatient) as sock:
        sock.send(health_request())
        assert sock.response()[0] == 200
        # gunicorn's keepalive (2 s) later: closed without a word.
        assert sock.until_closed(6) == b""


def test_a_small_body_not_finished_in_time_is_a_408(impatient: Served) -> None:
    with Client(impatient) as sock:
        sock.send(
            b"POST /api/v1/user/login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"username": '
        )
        answer = sock.until_closed(5)
    assert answer.startswith(b"HTTP/1.1 408 ")


def test_an_upload_that_stops_sending_is_a_408_and_leaves_no_file(impatient: Served) -> None:
    _, api_key = impatient.register("stalled")
    body = multipart_body(BODY_BYTES)
    with Client(impatient) as sock:
        sock.send(multipart_head("/api/v1/file", len(body), f"Authorization: Bearer {api_key}\r\n"))
        sock.send(body[: 2 * 1024 * 1024])
        status, headers, answer = sock.response()
        assert (status, answer) == (408, b"Request body timed out: nothing received for 1 s")
        assert headers["connection"] == "close"
    spool = Path(impatient.data_dir) / "tmp"
    assert not spool.exists() or list(spool.iterdir()) == []
    with Client(impatient) as sock:
        sock.send(
            b"GET /api/v1/file HTTP/1.1\r\nHost: 127.0.0.1\r\n" + f"Authorization: Bearer {api_key}\r\n\r\n".encode()
        )
        status, _, answer = sock.response()
    assert status == 200 and json.loads(answer)["pagination"]["total_count"] == 0


# --- behind the compose file's nginx --------------------------------------------------


@dataclass
class Front:
    """nginx with deploy/nginx.conf.template, in front of a served gunicorn."""

    port: int


@pytest.fixture(scope="module")
def nginx_front(served: Served, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    """The template as the nginx image renders it, only the upstream, port and resolver made local."""
    nginx = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)
    if nginx is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light): the compose file's proxy is not run")
    work = tmp_path_factory.mktemp("nginx")
    port = free_port()
    site = string.Template((ROOT / "deploy" / "nginx.conf.template").read_text()).safe_substitute(
        REQUEST_HEADER_TIMEOUT_SECONDS="10",
        REQUEST_BODY_TIMEOUT_SECONDS="30",
        NGINX_BODY_MAX_SIZE="11m",
        NGINX_UPLOAD_MAX_BODY_SIZE="4m",
        NGINX_REAL_IP_FROM="127.0.0.1/32",
    )
    for deployed, local in (
        ("http://web:8000", f"http://127.0.0.1:{served.port}"),
        ("listen 80 default_server", f"listen 127.0.0.1:{port} default_server"),
        ("resolver 127.0.0.11", "resolver 127.0.0.1"),
    ):
        assert deployed in site
        site = site.replace(deployed, local)
    (work / "site.conf").write_text(site)
    temp = "".join(
        f"{kind}_temp_path {work / kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (work / "nginx.conf").write_text(
        ("user root;\n" if os.geteuid() == 0 else "")
        + f"daemon off;\nworker_processes 1;\npid {work / 'nginx.pid'};\nerror_log {work / 'error.log'};\n"
        + "events { worker_connections 256; }\n"
        + f"http {{\naccess_log off;\n{temp}include {work / 'site.conf'};\n}}\n"
    )
    process = subprocess.Popen([nginx, "-c", str(work / "nginx.conf")], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "nginx did not listen"
                time.sleep(0.1)
        yield Front(port)
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_behind_nginx_slow_and_early_answered_clients_stall_nobody(nginx_front: Front, held: list[Client]) -> None:
    for index in range(12):
        sock = Client(nginx_front)
        sock.send(b"GET /api/v1/hea" if index % 2 else b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        held.append(sock)
    body = multipart_body(BODY_BYTES)
    for path, status in (("/api/v1/no-such-route", 404), ("/api/v1/file", 401)):
        for _ in range(5):
            sock = Client(nginx_front)
            held.append(sock)
            try:
                sock.send(multipart_head(path, len(body)) + body)
            except OSError:
                pass  # nginx answered and closed before the whole body went out
            answer = sock.response()
            assert answer[0] == status, answer
    assert probe_health(nginx_front) == []


def test_uploads_stream_through_nginx_and_too_large_ones_are_refused_in_plain_text(
    served: Served, nginx_front: Front
) -> None:
    _, api_key = served.register("behind-nginx")
    source = DATA / "hotwords.mp3"
    # The served site's client, pointed at nginx.
    through_nginx = Served(served.process, nginx_front.port, served.data_dir, served.env, served.log_path)
    assert through_nginx.upload(source, api_key)
    with Client(nginx_front) as sock:
        # Over NGINX_UPLOAD_MAX_BODY_SIZE (4m here): refused before a byte of the body.
        sock.send(multipart_head("/api/v1/file", 5 * 1024 * 1024, f"Authorization: Bearer {api_key}\r\n"))
        status, headers, answer = sock.response()
    assert (status, answer) == (413, b"Request body too large")
    assert headers["content-type"] == "text/plain; charset=utf-8"


def test_behind_nginx_the_client_address_reaches_the_app(served: Served, nginx_front: Front) -> None:
    """nginx believes X-Forwarded-For from NGINX_REAL_IP_FROM (here 127.0.0.1); gunicorn believes nginx."""
    marker = uuid.uuid4().hex
    with Client(nginx_front) as sock:
        sock.send(
            f"GET /api/v1/health?probe={marker} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "X-Forwarded-For: 203.0.113.7\r\n\r\n".encode()
        )
        assert sock.response()[0] == 200
    deadline = time.monotonic() + 10
    while not (lines := [line for line in served.output("web") if marker in line]):
        assert time.monotonic() < deadline, "no access log line"
        time.sleep(0.1)
    # gunicorn's access log names REMOTE_ADDR first.
    assert lines[0].startswith("203.0.113.7 "), lines
