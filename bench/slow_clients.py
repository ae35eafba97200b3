"""Whether slow and idle clients stall the API: ``/api/v1/health`` latency beside them.

Run from the repository root::

    .venv/bin/python bench/slow_clients.py [--port 18950] [--probes 10] [--url http://127.0.0.1:P]

It starts ``manage.py serve --port P`` as ``make run`` does (on a temporary
``DATA_DIR`` with SQLite and the embedded filesystem broker, so that no Redis
queue is touched), unless ``--url`` names a server already running, and then
times ``--probes`` requests to ``GET /api/v1/health``, each on a connection of
its own, in three situations:

- ``idle``: nothing else connected (the baseline);
- ``half-sent``: 12 clients hold requests they never finish, 6 with half a
  request line and 6 with their headers but not the blank line that ends them;
- ``early-error``: 10 kept-alive clients, 5 of which POST a 3 MiB multipart
  body to a route that does not exist (404) and 5 to ``POST /api/v1/file``
  without credentials (401), as the ``openai`` package does: each reads the
  answer, then sends the body, then keeps the connection open and idle.

Each probe waits up to ``--timeout`` seconds (5). It prints every probe's
latency, how many answered within 1 s, and the slowest. Figures only, no
assertions: ``tests/site/test_slow_clients.py`` asserts the outcome. All
traffic goes to 127.0.0.1 and ends with the script.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
BODY_BYTES = 3 * MIB
BOUNDARY = "bench-slow-clients-0123456789"
# Settings a developer's shell may hold that `make run` on a fresh clone has not.
UNSET = ("DATABASE_URL", "STATIC_ROOT", "MEDIA_ROOT", "MODELS_DIR", "CACHE_URL", "PRODUCTION", "DEBUG", "SECRET_KEY")
UNSET_PREFIXES = ("CELERY_", "S3_", "TRANSCRIPTION_", "SQLITE_", "DJANGO_")


def probe(port: int, timeout: float) -> float | None:
    """Seconds until ``GET /api/v1/health`` answered 200 on a new connection; ``None`` if it did not."""
    started = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.settimeout(max(0.01, timeout - (time.perf_counter() - started)))
            sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            head = sock.recv(64)
    except OSError:
        return None
    return time.perf_counter() - started if head.startswith(b"HTTP/1.1 200") else None


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response with a Content-Length from ``sock``: status, lower-cased headers, body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response head")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def multipart_head(path: str, port: int, body_bytes: int) -> bytes:
    """The head of a multipart POST of one ``body_bytes`` file part (the body follows separately)."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: OpenAI/Python\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {body_bytes}\r\n\r\n"
    ).encode()


def multipart_body(body_bytes: int) -> bytes:
    part = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.mp3"\r\n\r\n'.encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    return part + b"\0" * (body_bytes - len(part) - len(tail)) + tail


def half_sent_clients(port: int, held: list[socket.socket]) -> None:
    """12 connections holding requests they never finish."""
    for index in range(12):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        if index % 2:
            sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow\r\n")
        else:
            sock.sendall(b"GET /api/v1/hea")
        held.append(sock)


def early_error_client(port: int, path: str, held: list[socket.socket]) -> int:
    """A kept-alive client answered before it sent its body; it sends the body, then idles. The status."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    held.append(sock)
    body = multipart_body(BODY_BYTES)
    sock.sendall(multipart_head(path, port, len(body)))
    status, _, _ = read_response(sock)
    try:
        sock.sendall(body)
    except OSError:
        pass  # the server closed the connection rather than drain the body: allowed
    return status


def early_error_clients(port: int, held: list[socket.socket]) -> None:
    statuses = []
    for index in range(10):
        status = early_error_client(port, "/api/v1/no-such-route" if index % 2 else "/api/v1/file", held)
        statuses.append(status)
    print(f"  early-error clients answered {sorted(statuses)}")


def run_probes(port: int, label: str, count: int, timeout: float) -> list[float | None]:
    results = []
    for _ in range(count):
        results.append(probe(port, timeout))
    answered = [r for r in results if r is not None]
    within = sum(1 for r in answered if r <= 1.0)
    shown = " ".join("--" if r is None else f"{r * 1000:.0f}" for r in results)
    slowest = f"{max(answered) * 1000:.0f} ms" if answered else "-"
    print(f"{label:<12} within 1 s: {within}/{count}   answered: {len(answered)}/{count}   slowest: {slowest}")
    print(f"{'':<12} each (ms, -- = no answer in {timeout:g} s): {shown}")
    return results


@contextmanager
def serve(port: int) -> Iterator[None]:
    """``manage.py serve --port P`` as ``make run`` runs it, on a temporary data folder."""
    work = Path(tempfile.mkdtemp(prefix="whisper-slow-clients-"))
    env = {k: v for k, v in os.environ.items() if k not in UNSET and not k.startswith(UNSET_PREFIXES)}
    env.update(DATA_DIR=str(work / "data"), CELERY_BROKER_URL="filesystem://", PYTHONUNBUFFERED="1")
    log = (work / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--port", str(port)], cwd=ROOT, env=env, stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                raise SystemExit(f"serve exited:\n{(work / 'serve.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("serve did not answer in 180 s") from None
                time.sleep(0.3)
        yield
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        shutil.rmtree(work, ignore_errors=True)


def scenario(
    port: int, label: str, clients: Callable[[int, list[socket.socket]], None], probes: int, timeout: float
) -> None:
    held: list[socket.socket] = []
    opened = threading.Event()

    def open_them() -> None:
        try:
            clients(port, held)
        except OSError as exc:
            print(f"  {label}: a client failed: {exc!r}")
        finally:
            opened.set()

    # Opened beside the probes' thread: a stalled server must not stall the script.
    threading.Thread(target=open_them, daemon=True).start()
    opened.wait(30)
    time.sleep(0.5)
    try:
        run_probes(port, label, probes, timeout)
    finally:
        for sock in held:
            sock.close()
    # Let the server notice the closed connections before the next scenario.
    time.sleep(1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=18950)
    parser.add_argument("--url", help="a server already running, e.g. http://127.0.0.1:8000 (127.0.0.1 only)")
    parser.add_argument("--probes", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds a probe waits")
    args = parser.parse_args()

    def measure(port: int) -> None:
        run_probes(port, "idle", args.probes, args.timeout)
        scenario(port, "half-sent", half_sent_clients, args.probes, args.timeout)
        scenario(port, "early-error", early_error_clients, args.probes, args.timeout)

    if args.url:
        host, _, port = args.url.removeprefix("http://").rstrip("/").partition(":")
        if host not in {"127.0.0.1", "localhost"}:
            raise SystemExit("load goes to 127.0.0.1 only")
        measure(int(port or 80))
        return
    with serve(args.port):
        measure(args.port)


if __name__ == "__main__":
    main()
