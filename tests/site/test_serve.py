"""``manage.py serve`` (``make run``): one command that runs the whole service and stops it on Ctrl-C."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import redis_queues_delete
from tests.site.conftest import DATA, REDIS_URL, ROOT, Served, alive, descendants, free_port, serve_start

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
        # The conversion worker converts the upload: the MP3 streams once the conversion is done.
        deadline = time.monotonic() + 120
        while (status := served.request("GET", f"/api/v1/file/{file_id}")[0]) != 200:
            assert time.monotonic() < deadline, f"conversion not done: {status}\n{served.log()[-3000:]}"
            time.sleep(0.5)
        assert task_runs(served, "files.convert_audio") == task_runs(served, "files.convert_media") == ["conversion"]
        processes = descendants(served.process.pid)
        # gunicorn's master and workers; each Celery worker's main process and pool; beat.
        assert len(processes) >= 7, processes
        assert set(celery_workers(served)) == {"transcription", "conversion", "webhooks"}
        # The workers' heartbeats reach the database whatever the broker: ready.
        wait_until(lambda: served.request("GET", "/api/v1/health/ready")[0] == 200, "readiness", served)
    finally:
        status = served.stop()
    assert status == 0, served.log()[-3000:]
    assert served.log().rstrip().endswith("Stopped.")
    assert [pid for pid in processes if alive(pid)] == []
    # Everything the run wrote is under DATA_DIR: nothing new in the folder it ran in.
    assert set(ROOT.iterdir()) == before


# --- the workers ---------------------------------------------------------------


def task_runs(served: Served, task: str) -> list[str]:
    """The workers (by the name that starts their lines) that received ``task``, once per message."""
    pattern = rf"^(\w+) *\| .*Task {re.escape(task)}\[[0-9a-f-]+\] received$"
    return re.findall(pattern, served.log(), re.MULTILINE)


def proc_stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name: [0] is field 3 (state), [16] field 19 (nice)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2 :].split()


def nice(pid: int) -> int:
    return int(proc_stat(pid)[16])


def celery_workers(served: Served) -> dict[str, int]:
    """The main process of each Celery worker under ``served``, by its node name's first part."""
    found = {}
    for pid in descendants(served.process.pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"celery" in argv and b"-n" in argv and int(proc_stat(pid)[1]) == served.process.pid:
            found[argv[argv.index(b"-n") + 1].decode().split("@")[0]] = pid
    return found


def pool_processes(pid: int) -> list[int]:
    """A Celery worker's children: its pool processes, and beat where it embeds it."""
    return [child for child in descendants(pid) if int(proc_stat(child)[1]) == pid]


def test_the_conversion_worker_runs_its_pool_at_a_lower_priority_than_the_transcription_worker(
    served: Served,
) -> None:
    workers = celery_workers(served)
    assert set(workers) == {"transcription", "conversion", "webhooks"}
    base = nice(served.process.pid)
    # Two pool processes by default (CONVERSION_WORKER_CONCURRENCY).
    conversion_pool = pool_processes(workers["conversion"])
    transcription_pool = pool_processes(workers["transcription"])
    assert len(conversion_pool) == 2 and len(transcription_pool) >= 1
    assert [nice(pid) for pid in conversion_pool] == [max(base, 10)] * 2
    assert {nice(pid) for pid in transcription_pool} == {base}
    # The main processes, which only take and acknowledge messages, keep serve's priority.
    assert (nice(workers["conversion"]), nice(workers["transcription"])) == (base, base)
    # Both in serve's session: Linux shares the CPU between sessions before nice counts.
    assert {proc_stat(pid)[3] for pid in (*conversion_pool, *transcription_pool)} == {proc_stat(served.process.pid)[3]}


def test_each_line_of_serve_says_which_process_wrote_it(served: Served) -> None:
    log = served.log()
    assert all(served.worker_ready(name) for name in ("transcription", "conversion", "webhooks"))
    prefixed = re.findall(r"^(web|transcription|conversion|webhooks) *\| ", log, re.MULTILINE)
    assert {"web", "transcription", "conversion", "webhooks"} <= set(prefixed)
    # Conversions are on their own queue, transcriptions on theirs.
    assert re.search(r"^conversion *\| .*\.> served-conversions-\w+ +exchange=", log, re.MULTILINE)
    assert re.search(r"^transcription *\| .*\.> served-[0-9a-f]+ +exchange=", log, re.MULTILINE)


def test_with_the_conversion_queue_set_to_the_transcription_queue_one_worker_runs_both(tmp_path: Path) -> None:
    queue = f"served-merged-{uuid.uuid4().hex[:12]}"
    served = serve_start(
        tmp_path / "data",
        workers=("worker",),
        REDIS_URL=REDIS_URL,
        CELERY_TASK_DEFAULT_QUEUE=queue,
        CONVERSION_QUEUE=queue,
        # Webhook deliveries too: everything on one queue is one worker.
        WEBHOOK_QUEUE=queue,
    )
    try:
        assert "One worker for transcriptions and conversions" in served.log()
        assert "Webhook worker" not in served.log()
        _, api_key = served.register("merged")
        file_id = served.upload(DATA / "jfk.flac", api_key)
        deadline = time.monotonic() + 120
        while (status := served.request("GET", f"/api/v1/file/{file_id}")[0]) != 200:
            assert time.monotonic() < deadline, f"conversion not done: {status}\n{served.log()[-3000:]}"
            time.sleep(0.5)
        assert task_runs(served, "files.convert_media") == ["worker"]
        workers = celery_workers(served)
        assert list(workers) == ["worker"]
        # It transcribes too: its pool keeps serve's priority.
        assert {nice(pid) for pid in pool_processes(workers["worker"])} == {nice(served.process.pid)}
    finally:
        status = served.stop()
        redis_queues_delete(REDIS_URL, [queue])
    assert status == 0, served.log()[-3000:]
    assert served.log().rstrip().endswith("Stopped.")


# --- readiness and restarts ------------------------------------------------------


def wait_until(condition: Callable[[], Any], what: str, served: Served, timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}:\n{served.log()[-3000:]}")


def readiness(served: Served) -> tuple[int, dict[str, Any]]:
    status, raw = served.request("GET", "/api/v1/health/ready")
    return status, json.loads(raw)


def test_a_killed_worker_is_started_again_and_takes_jobs(served: Served) -> None:
    # Every queue has its worker: the transcription worker's heartbeat covers the default queue too.
    status, body = wait_until(lambda: (r := readiness(served))[0] == 200 and r, "readiness", served)
    assert set(body["checks"]) == {"database", "broker", *(f"queue:{q}" for q in served_queues(served))}
    old = celery_workers(served)["transcription"]
    old_processes = [old, *descendants(old)]
    ready_lines = len(re.findall(r"^transcription *\| .* ready\.$", served.log(), re.MULTILINE))

    os.kill(old, signal.SIGKILL)
    # One line says so, and the server goes on.
    wait_until(
        lambda: re.search(
            r"^transcription exited with status -9; starting it again in [12] s$", served.log(), re.MULTILINE
        ),
        "the restart line",
        served,
    )
    assert served.process.poll() is None
    wait_until(
        lambda: len(re.findall(r"^transcription *\| .* ready\.$", served.log(), re.MULTILINE)) > ready_lines,
        "the new transcription worker",
        served,
    )
    # What the killed worker left (its pool and embedded beat) went with it.
    assert [pid for pid in old_processes if alive(pid)] == []
    assert celery_workers(served)["transcription"] != old
    assert set(celery_workers(served)) == {"transcription", "conversion", "webhooks"}
    wait_until(lambda: readiness(served)[0] == 200, "readiness after the restart", served)

    _, api_key = served.register("restarted")
    file_id = served.upload(DATA / "jfk.flac", api_key)
    status, raw = served.request("POST", "/api/v1/transcribe", {"uuid": file_id}, auth=f"Bearer {api_key}")
    assert status == 200, raw
    job_id = json.loads(raw)["transcriptions"][0]["uuid"]

    def job_status() -> str | None:
        state = json.loads(served.request("GET", f"/api/v1/transcribe/{job_id}")[1])["status"]
        assert state not in {"failed", "cancelled"}, state
        return state if state == "completed" else None

    wait_until(job_status, "the job to complete", served, timeout=180)
    assert re.search(
        r"^transcription *\| .*Task transcriptions\.\w+\[[0-9a-f-]+\] received$", served.log(), re.MULTILINE
    )


def served_queues(served: Served) -> set[str]:
    """The queues of the session's server, from its environment."""
    return {served.env[name] for name in ("CELERY_TASK_DEFAULT_QUEUE", "CONVERSION_QUEUE", "WEBHOOK_QUEUE")}
