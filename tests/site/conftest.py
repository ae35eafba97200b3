"""The service as ``make run`` starts it: ``manage.py serve --port P`` in a subprocess.

``served`` is one such server for the session: a temporary ``DATA_DIR`` (its own
SQLite database, media, models and cache), real gunicorn, and the real Celery
workers, one for transcriptions (with embedded beat) and one for conversions,
on the real Redis (database 15, never a developer's database 0, and queues of
their own so that no other worker takes their messages). Nothing else differs from ``make run``: in particular no static
files are collected, as ``make run`` collects none.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import redis_queues_delete, redis_required

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
REDIS_URL = os.environ.get("E2E_REDIS_URL", "redis://127.0.0.1:6379/15")
PORTS = range(18300, 18400)
START_SECONDS = 180.0
STOP_SECONDS = 30.0
PASSWORD = "Served-Passw0rd!"

# Settings a developer's or CI's shell may set that `make run` on a fresh
# clone would not have: the server under test gets the embedded defaults.
UNSET = ("DATABASE_URL", "STATIC_ROOT", "MEDIA_ROOT", "MODELS_DIR", "CACHE_URL", "PRODUCTION", "DEBUG", "SECRET_KEY")
UNSET_PREFIXES = ("CELERY_", "S3_", "TRANSCRIPTION_", "CONVERSION_", "SQLITE_", "WEBHOOK_")
# The Celery workers `manage.py serve` starts, by the name that starts each line of theirs.
WORKERS = ("transcription", "conversion", "webhooks")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "served: runs against `manage.py serve` on its own SQLite database, whatever DATABASE_URL the suite runs on",
    )


def free_port() -> int:
    """A free port in the range these tests may use."""
    for port in random.sample(PORTS, len(PORTS)):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {PORTS}")


def serve_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in UNSET and not key.startswith(UNSET_PREFIXES)}
    env.update(DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1", **extra)
    return env


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (gunicorn's and Celery's workers included)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # The command name is in parentheses and may hold spaces: fields follow the last ")".
            parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    found: list[int] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        found.extend(children)
        frontier.extend(children)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"


@dataclass
class Served:
    """A running ``manage.py serve`` and what the tests need to talk to it."""

    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    env: dict[str, str]
    log_path: Path
    workers: tuple[str, ...] = WORKERS

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def output(self, name: str) -> list[str]:
        """The lines process ``name`` (``web``, ``transcription``, ``conversion``) wrote, without serve's prefix."""
        return re.findall(rf"^{re.escape(name)} *\| (.*)$", self.log(), re.MULTILINE)

    def worker_ready(self, name: str) -> bool:
        """Whether the worker ``name`` said it is ready, on a line of its own output."""
        return re.search(rf"^{re.escape(name)} *\| .* ready\.$", self.log(), re.MULTILINE) is not None

    def wait_ready(self, timeout: float = START_SECONDS) -> None:
        """Until gunicorn answers /api/v1/health and every worker says it is ready."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            if all(map(self.worker_ready, self.workers)):
                try:
                    if self.request("GET", "/api/v1/health")[0] == 200:
                        return
                except OSError:
                    pass
            time.sleep(0.25)
        raise RuntimeError(f"serve not ready after {timeout} s:\n{self.log()[-4000:]}")

    def stop(self) -> int:
        """Ctrl-C, as a terminal sends it to ``make run``; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                for pid in descendants(self.process.pid):
                    os.kill(pid, signal.SIGKILL)
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def manage(self, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        """A management command on the server's database."""
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env={**self.env, **extra_env},
            capture_output=True,
            text=True,
            timeout=120,
        )

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        auth: str | None = None,
        content_type: str | None = None,
        timeout: float = 30,
    ) -> tuple[int, bytes]:
        """One request over real HTTP; a JSON body for a dict, bytes as they are (of ``content_type``)."""
        headers: dict[str, str] = {}
        data: bytes | None = None
        if isinstance(body, dict):
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        elif body is not None:
            data = body
            if content_type:
                headers["Content-Type"] = content_type
        if auth:
            headers["Authorization"] = auth
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def register(self, username: str) -> tuple[str, str]:
        """A new user's session id and a new API key of theirs."""
        status, raw = self.request("POST", "/api/v1/user/register", {"username": username, "password": PASSWORD})
        assert status == 200, raw
        session_id = json.loads(raw)["session_id"]
        status, raw = self.request(
            "POST", "/api/v1/user/token", {"name": f"{username}'s key"}, auth=f"Basic {session_id}"
        )
        assert status == 200, raw
        return session_id, json.loads(raw)["token"]

    def me(self, api_key: str) -> dict[str, Any]:
        """``GET /user/me`` with ``api_key``."""
        status, raw = self.request("GET", "/api/v1/user/me", auth=f"Bearer {api_key}")
        assert status == 200, raw
        return json.loads(raw)

    def post_file(self, path: Path, api_key: str, *, timeout: float = 120) -> tuple[int, bytes]:
        """``POST /file`` one file as multipart; the status and body, whatever they are."""
        boundary = uuid.uuid4().hex
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + path.read_bytes()
            + f"\r\n--{boundary}--\r\n".encode()
        )
        content_type = f"multipart/form-data; boundary={boundary}"
        return self.request(
            "POST", "/api/v1/file", body, auth=f"Bearer {api_key}", content_type=content_type, timeout=timeout
        )

    def upload(self, path: Path, api_key: str) -> str:
        """``POST /file`` one file as multipart; its uuid."""
        status, raw = self.post_file(path, api_key)
        assert status == 200, raw
        row = json.loads(raw)["files"][0]
        assert row["status"]["uploaded"] or row["status"]["existed"], row
        return row["uuid"]


def serve_start(data_dir: Path, workers: tuple[str, ...] = WORKERS, **extra_env: str) -> Served:
    """``manage.py serve --port P`` from the repository root, as ``make run`` runs it; ``workers``: its workers."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = serve_env(data_dir, **extra_env)
    log_path = data_dir.parent / f"{data_dir.name}-serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    served = Served(process=process, port=port, data_dir=data_dir, env=env, log_path=log_path, workers=workers)
    try:
        served.wait_ready()
    except BaseException:
        served.stop()
        raise
    return served


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One ``make run`` server for the session, on Redis database 15 with queues of its own."""
    redis_required(REDIS_URL)
    queue = f"served-{uuid.uuid4().hex[:12]}"
    conversion_queue = f"served-conversions-{uuid.uuid4().hex[:12]}"
    webhook_queue = f"served-webhooks-{uuid.uuid4().hex[:12]}"
    server = serve_start(
        tmp_path_factory.mktemp("served") / "data",
        REDIS_URL=REDIS_URL,
        CELERY_TASK_DEFAULT_QUEUE=queue,
        CONVERSION_QUEUE=conversion_queue,
        WEBHOOK_QUEUE=webhook_queue,
    )
    try:
        yield server
    finally:
        server.stop()
        redis_queues_delete(REDIS_URL, [queue, conversion_queue, webhook_queue])
