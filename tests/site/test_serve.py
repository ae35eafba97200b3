"""``manage.py serve`` (``make run``): one command that runs the whole service and stops it on Ctrl-C."""

from __future__ import annotations

import http.client
import socket
import time
from pathlib import Path

import pytest

from tests.site.conftest import DATA, ROOT, Served, alive, descendants, free_port, serve_start

pytestmark = pytest.mark.served

FULL_LINE = 8190  # gunicorn's largest request line (whisper_site/gunicorn_conf.py)


def raw_request(served: Served, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` as it is; the status, headers and body of the answer."""
    with socket.create_connection(("127.0.0.1", served.port), timeout=30) as sock:
        sock.sendall(request)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


def assert_one_line_of_text(status: int, headers: dict[str, str], body: bytes) -> None:
    assert 400 <= status < 500
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert body and b"\n" not in body and b"<" not in body, body


def test_a_request_line_up_to_gunicorns_limit_reaches_django(served: Served) -> None:
    path = "/api/v1/nothing-here?q="
    path += "a" * (FULL_LINE - len(f"GET {path} HTTP/1.1") - 1)
    status, headers, body = raw_request(served, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    # Django's own plain-text 404, not gunicorn's refusal.
    assert (status, body) == (404, b"Not found")


def test_an_over_long_request_line_is_refused_in_one_line_of_text(served: Served) -> None:
    path = "/api/v1/health?q=" + "a" * FULL_LINE
    status, headers, body = raw_request(served, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert status == 400
    assert_one_line_of_text(status, headers, body)


def test_an_over_long_header_is_refused_in_one_line_of_text(served: Served) -> None:
    header = "X-Long: " + "a" * 9000
    status, headers, body = raw_request(served, f"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n{header}\r\n\r\n".encode())
    assert status == 431
    assert_one_line_of_text(status, headers, body)


def test_a_malformed_request_line_is_refused_in_one_line_of_text(served: Served) -> None:
    status, headers, body = raw_request(served, b"GET /api/v1/health HTTP/9.9\r\nHost: x\r\n\r\n")
    assert_one_line_of_text(status, headers, body)


@pytest.mark.parametrize(
    ("method", "path", "status", "body"),
    [
        ("GET", "/nothing-here", 404, b"Not found"),
        ("GET", "/api/v1/nothing-here", 404, b"Not found"),
        ("PUT", "/api/v1/health", 405, b"Method not allowed"),
        ("DELETE", "/api/v1/user/register", 405, b"Method not allowed"),
    ],
)
def test_unknown_paths_and_methods_answer_in_plain_text(
    served: Served, method: str, path: str, status: int, body: bytes
) -> None:
    answer = raw_request(served, f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    assert (answer[0], answer[2]) == (status, body)
    assert answer[1]["content-type"] == "text/plain; charset=utf-8"


def test_without_redis_the_embedded_broker_carries_the_work_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    # No Redis answers at this URL: serve falls back to the embedded broker.
    dead = f"redis://127.0.0.1:{free_port()}/0"
    before = set(ROOT.iterdir())
    served = serve_start(tmp_path / "data", REDIS_URL=dead)
    try:
        assert "Broker: filesystem://" in served.log()
        _, api_key = served.register("offline")
        file_id = served.upload(DATA / "jfk.flac", api_key)
        # The worker converts the upload: the MP3 streams once the conversion is done.
        deadline = time.monotonic() + 120
        while (status := served.request("GET", f"/api/v1/file/{file_id}")[0]) != 200:
            assert time.monotonic() < deadline, f"conversion not done: {status}\n{served.log()[-3000:]}"
            time.sleep(0.5)
        processes = descendants(served.process.pid)
        # gunicorn's master and workers, Celery's main process, pool and beat.
        assert len(processes) >= 5, processes
    finally:
        status = served.stop()
    assert status == 0, served.log()[-3000:]
    assert served.log().rstrip().endswith("Stopped.")
    assert [pid for pid in processes if alive(pid)] == []
    # Everything the run wrote is under DATA_DIR: nothing new in the folder it ran in.
    assert set(ROOT.iterdir()) == before
