"""The upload fast path under gunicorn: its socket source, and a real server end to end."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from gunicorn.http.body import Body, LengthReader
from gunicorn.http.unreader import SocketUnreader

from files.multipart import BodyTimeout, GunicornSocketSource
from tests.files.conftest import HOTWORDS, MINIMAL_PDF, raw_multipart

ROOT = Path(__file__).resolve().parents[2]


def test_the_socket_source_takes_gunicorns_buffer_first_and_keeps_its_count() -> None:
    server, client = socket.socketpair()
    with server, client:
        unreader = SocketUnreader(server)
        # gunicorn read the headers together with the start of the body and
        # the start of a pipelined next request.
        body_bytes = b"0123456789" * 10
        unreader.unread(body_bytes[:30])
        client.sendall(body_bytes[30:] + b"GET /next HTTP/1.1\r\n")
        body = Body(LengthReader(unreader, len(body_bytes)))
        source = GunicornSocketSource.from_environ({"gunicorn.socket": server, "wsgi.input": body})
        assert source is not None
        view = memoryview(bytearray(64))
        received = b""
        while count := source.readinto(view):
            received += bytes(view[:count])
            # gunicorn's count of the body still on the socket stays exact.
            assert body.reader.length == len(body_bytes) - max(30, len(received))
        assert received == body_bytes
        assert body.reader.length == 0
        # What follows the body is still there for gunicorn's next request.
        assert unreader.read().startswith(b"GET /next")


def test_the_socket_source_leaves_the_rest_for_gunicorn_to_drain() -> None:
    server, client = socket.socketpair()
    with server, client:
        unreader = SocketUnreader(server)
        client.sendall(b"x" * 1000)
        body = Body(LengthReader(unreader, 1000))
        source = GunicornSocketSource.from_environ({"gunicorn.socket": server, "wsgi.input": body})
        assert source is not None
        assert source.readinto(memoryview(bytearray(100))) == 100
        # Parsing stopped early (a refused request): gunicorn reads the rest itself.
        assert body.reader.length == 900
        drained = b""
        while data := body.read(8192):
            drained += data
        assert drained == b"x" * 900


def test_the_socket_source_gives_up_on_a_client_that_stops_sending() -> None:
    server, client = socket.socketpair()
    with server, client:
        unreader = SocketUnreader(server)
        client.sendall(b"x" * 100)
        body = Body(LengthReader(unreader, 1000))
        source = GunicornSocketSource.from_environ({"gunicorn.socket": server, "wsgi.input": body}, timeout=0.2)
        assert source is not None
        view = memoryview(bytearray(1000))
        assert source.readinto(view) == 100
        with pytest.raises(BodyTimeout) as raised:
            source.readinto(view)
        assert raised.value.seconds == 0.2
        # gunicorn still knows what never came: it closes rather than reuse the connection.
        assert body.reader.length == 900


def test_other_servers_get_no_socket_source() -> None:
    assert GunicornSocketSource.from_environ({"wsgi.input": object()}) is None
    assert GunicornSocketSource.from_environ({"gunicorn.socket": object(), "wsgi.input": object()}) is None


# --- a real gunicorn -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """gunicorn with ``manage.py serve``'s configuration (its worker), on its own SQLite database and media folder."""
    work = tmp_path_factory.mktemp("gunicorn")
    env = {
        **os.environ,
        "DATA_DIR": str(work),
        "DATABASE_URL": "",
        "S3_BUCKET": "",
        "CELERY_BROKER_URL": "filesystem://",
        "AVATAR_MAX_BYTES": "100000",
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "whisper_site.settings",
    }
    subprocess.run([sys.executable, str(ROOT / "manage.py"), "migrate", "-v", "0"], cwd=work, env=env, check=True)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--config", "python:whisper_site.gunicorn_conf",
         "whisper_site.wsgi:application", "--bind", f"127.0.0.1:{port}",
         "--workers", "1", "--threads", "2", "--log-level", "warning", "--access-logfile", "/dev/null"],
        cwd=work, env=env,
    )  # fmt: skip
    try:
        for _ in range(100):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        yield port, work
    finally:
        process.terminate()
        process.wait(timeout=15)


def request(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, bytes]:  # fmt: skip
    conn.request(method, "/api/v1" + path, body=body, headers=headers or {})
    response = conn.getresponse()
    return response.status, response.read()


def test_uploads_through_gunicorn_keep_the_connection_usable(server: tuple[int, Path]) -> None:
    port, work = server
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    status, raw = request(
        conn, "POST", "/user/register", json.dumps({"username": "gun", "password": "Gunicorn-Passw0rd"}).encode(),
        {"Content-Type": "application/json"},
    )  # fmt: skip
    assert status == 200, raw
    auth = {"Authorization": f"Basic {json.loads(raw)['session_id']}"}

    body, content_type = raw_multipart(
        [
            (b'Content-Disposition: form-data; name="file"; filename="hotwords.mp3"', HOTWORDS.read_bytes()),
            (b'Content-Disposition: form-data; name="file"; filename="doc.pdf"', MINIMAL_PDF),
        ]
    )
    status, raw = request(conn, "POST", "/file", body, {**auth, "Content-Type": content_type})
    assert status == 200, raw
    rows = json.loads(raw)["files"]
    assert [row["status"] for row in rows] == [
        {"existed": False, "uploaded": True},
        {"existed": False, "uploaded": False, "error": "unsupported_content_type"},
    ]
    # The same connection serves the next request: the body was read exactly.
    status, raw = request(conn, "GET", "/file", headers=auth)
    assert status == 200 and json.loads(raw)["pagination"]["total_count"] == 1

    # An avatar refused part-way through its body: gunicorn drains the rest,
    # and the connection still works.
    big, content_type = raw_multipart(
        [(b'Content-Disposition: form-data; name="avatar"; filename="a.png"', b"\x89PNG\r\n\x1a\n" + b"\0" * 100_000)]
    )
    status, raw = request(conn, "PATCH", "/user/me", big, {**auth, "Content-Type": content_type})
    assert (status, raw) == (400, b"Avatar file too large. Maximum size is 98KB")
    status, raw = request(conn, "GET", "/user/me", headers=auth)
    assert status == 200 and json.loads(raw)["username"] == "gun"
    conn.close()
    assert list((work / "tmp").iterdir()) == []
