"""Load: many users at once registering, uploading and transcribing against the served service.

Run from the repository root (Redis must answer at 127.0.0.1:6379)::

    .venv/bin/python bench/load.py [--users 50] [--seconds 150] [--drain 45]

The service starts as ``make run`` starts it (``manage.py serve`` on a free port, a temporary
``DATA_DIR`` with SQLite, the bundled models, Redis database 14 with queues of its own; the
``Service`` of bench/conversion_isolation.py), with one setting raised: every user registers
from 127.0.0.1, so ``REGISTRATIONS_PER_ADDRESS_PER_HOUR`` is set above the number of users.

Each user is a thread with its own HTTP connection (``requests``) that, until ``--seconds``
have passed: registers (``POST /user/register``), issues an API key (``POST /user/token``),
checks that its balance starts at 1000 (``GET /user/me``), then in turn uploads one of
tests/data/jfk.flac, hotwords.mp3 and multilingual.mp3 (each user's first upload of a file
is stored and converted, later ones are recognised by their digest), asks for its
transcription (``verbose_json``, or the three formats), polls the job every second, reads the
file's results, and reads its balance. Then for ``--drain`` seconds no new work is asked for
while the jobs in hand finish, and any still unfinished is cancelled.

Printed: requests per second, latency percentiles of the API (all requests, and per kind)
measured while the workers are busy, the answers by status (5xx: goal 0), jobs submitted,
completed, failed and cancelled, the transcription queue seen through ``GET /admin/metrics``
during the run, and the load average of the machine beside them (a shared machine: figures
are noisy). Last, each user's balance against 1000 minus the cost of its completed jobs
(``ceil(duration)`` tokens each at multiplier 1), jobs listed by the server, plus the costs
stored in the database: every mismatch is printed.

tests/site/test_load.py runs the same with 10 users for 25 s.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
FILES = [ROOT / "tests" / "data" / name for name in ("jfk.flac", "hotwords.mp3", "multilingual.mp3")]
PASSWORD = "Load-Passw0rd-1!"
STARTING_BALANCE = 1000
POLL_SECONDS = 1.0
REQUEST_TIMEOUT_SECONDS = 60.0
FINISHED = frozenset({"completed", "failed", "cancelled"})


@dataclass
class Tally:
    """Every request of the run: (kind, status, seconds), and when the load phase ended."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: list[tuple[str, int, float]] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    def add(self, kind: str, status: int, seconds: float) -> None:
        with self.lock:
            self.requests.append((kind, status, seconds))

    def error(self, kind: str, exc: Exception) -> None:
        with self.lock:
            self.errors[f"{kind}: {type(exc).__name__}"] += 1


@dataclass
class UserRun:
    """What one user did, for the final accounting."""

    name: str
    api_key: str = ""
    starting_balance: int | None = None
    file_ids: set[str] = field(default_factory=set)
    jobs: set[str] = field(default_factory=set)
    failure: str = ""


class Client:
    """One user's HTTP connection; every request is timed into the tally."""

    def __init__(self, base: str, tally: Tally) -> None:
        self.base = base
        self.tally = tally
        self.http = requests.Session()

    def call(self, kind: str, method: str, path: str, **kwargs: Any) -> requests.Response:
        started = time.perf_counter()
        try:
            response = self.http.request(method, self.base + path, timeout=REQUEST_TIMEOUT_SECONDS, **kwargs)
        except requests.RequestException as exc:
            self.tally.error(kind, exc)
            raise
        self.tally.add(kind, response.status_code, time.perf_counter() - started)
        return response


def expect(response: requests.Response, status: int = 200) -> Any:
    if response.status_code != status:
        raise RuntimeError(f"{response.request.method} {response.url}: {response.status_code} {response.text[:200]}")
    return response.json()


def user_session(
    base: str, tally: Tally, run: UserRun, *, deadline: float, drain_deadline: float, files: list[Path]
) -> None:
    """One user's life: register, key, then upload-transcribe-poll-read until ``deadline``."""
    client = Client(base, tally)
    body = expect(client.call("register", "POST", "/user/register", json={"username": run.name, "password": PASSWORD}))
    session = {"Authorization": f"Basic {body['session_id']}"}
    run.api_key = expect(client.call("token", "POST", "/user/token", json={"name": "load"}, headers=session))["token"]
    auth = {"Authorization": f"Bearer {run.api_key}"}
    run.starting_balance = expect(client.call("me", "GET", "/user/me", headers=auth))["token_balance"]
    turn = 0
    while time.monotonic() < deadline:
        path = files[turn % len(files)]
        formats = ["verbose_json"] if turn % 2 == 0 else ["verbose_json", "srt", "vtt"]
        turn += 1
        with path.open("rb") as handle:
            answer = expect(client.call("upload", "POST", "/file", files={"file": (path.name, handle)}, headers=auth))
        file_id = answer["files"][0]["uuid"]
        run.file_ids.add(file_id)
        queued = expect(
            client.call("transcribe", "POST", "/transcribe", json={"uuid": file_id, "format": formats}, headers=auth)
        )
        job_ids = [row["uuid"] for row in queued["transcriptions"]]
        run.jobs.update(job_ids)
        # Poll one job of the request: they share one inference run.
        while True:
            status = expect(client.call("poll", "GET", f"/transcribe/{job_ids[0]}"))["status"]
            if status in FINISHED:
                break
            if time.monotonic() >= drain_deadline:
                for job_id in job_ids:
                    response = client.call("cancel", "POST", f"/transcribe/{job_id}/cancel", headers=auth)
                    # 409: it finished meanwhile.
                    if response.status_code not in (200, 409):
                        raise RuntimeError(f"cancel: {response.status_code} {response.text[:200]}")
                return
            time.sleep(POLL_SECONDS * random.uniform(0.75, 1.25))
        expect(client.call("result", "GET", f"/transcribe/{file_id}"))
        expect(client.call("me", "GET", "/user/me", headers=auth))


def metrics_sampler(
    base: str, admin_key: str, queue: str, stop: threading.Event, samples: list[dict[str, float]]
) -> None:
    """Every 5 s: the transcription queue's depth and the jobs pending and processing, from /admin/metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    http = requests.Session()
    while not stop.wait(5.0):
        try:
            text = http.get(f"{base}/admin/metrics", headers={"Authorization": f"Bearer {admin_key}"}, timeout=30).text
        except requests.RequestException:
            continue
        sample: dict[str, float] = {"load": os.getloadavg()[0], "queue": 0.0, "pending": 0.0, "processing": 0.0}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == "whisper_queue_messages" and s.labels.get("queue") == queue:
                    sample["queue"] = s.value
                elif s.name == "whisper_transcription_jobs" and s.labels["status"] in ("pending", "processing"):
                    sample[s.labels["status"]] += s.value
        samples.append(sample)


@dataclass
class LoadReport:
    users: int
    seconds: float
    wall: float
    requests: list[tuple[str, int, float]]
    errors: Counter[str]
    jobs: Counter[str]
    balance_mismatches: list[str]
    unfinished_users: list[str]
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    samples: list[dict[str, float]]

    @property
    def server_errors(self) -> int:
        return sum(1 for _, status, _ in self.requests if status >= 500)

    def lines(self) -> list[str]:
        load_phase = self.requests
        latencies = sorted(seconds for _, _, seconds in load_phase)
        statuses = Counter(status for _, status, _ in load_phase)
        out = [
            f"users {self.users}, load phase {self.seconds:.0f} s (+ drain), wall {self.wall:.0f} s; "
            f"load average before {_load(self.load_before)}, after {_load(self.load_after)} ({os.cpu_count()} CPUs)",
            f"requests {len(load_phase)}, {len(load_phase) / self.wall:.1f}/s; answers by status "
            + ", ".join(f"{status}: {count}" for status, count in sorted(statuses.items())),
            f"5xx: {self.server_errors}; transport errors: {sum(self.errors.values())} {dict(self.errors) or ''}",
            f"latency all: p50 {_ms(latencies, 0.5)}, p90 {_ms(latencies, 0.9)}, p99 {_ms(latencies, 0.99)}, "
            f"max {_ms(latencies, 1.0)}",
        ]
        by_kind: dict[str, list[float]] = defaultdict(list)
        for kind, _, seconds in load_phase:
            by_kind[kind].append(seconds)
        for kind, values in sorted(by_kind.items()):
            values.sort()
            out.append(f"  {kind:<10} n={len(values):<6} p50 {_ms(values, 0.5)}  p99 {_ms(values, 0.99)}")
        out.append(
            "jobs submitted {}, completed {}, failed {}, cancelled {}, unfinished {}".format(
                sum(self.jobs.values()),
                self.jobs["completed"],
                self.jobs["failed"],
                self.jobs["cancelled"],
                sum(v for k, v in self.jobs.items() if k not in FINISHED),
            )
        )
        if self.samples:
            out.append(
                "while loaded (GET /admin/metrics every 5 s, {} samples): transcription queue mean {:.1f} max {:.0f}; "
                "jobs pending+processing mean {:.1f} max {:.0f}; load average mean {:.2f}".format(
                    len(self.samples),
                    statistics.mean(s["queue"] for s in self.samples),
                    max(s["queue"] for s in self.samples),
                    statistics.mean(s["pending"] + s["processing"] for s in self.samples),
                    max(s["pending"] + s["processing"] for s in self.samples),
                    statistics.mean(s["load"] for s in self.samples),
                )
            )
        out.append(
            f"balances: {self.users - len(self.balance_mismatches)} of {self.users} equal 1000 minus their completed "
            f"jobs' costs"
            + ("" if not self.balance_mismatches else "; mismatches: " + "; ".join(self.balance_mismatches))
        )
        if self.unfinished_users:
            out.append("users that stopped early: " + "; ".join(self.unfinished_users))
        return out


def _ms(values: list[float], q: float) -> str:
    if not values:
        return "-"
    index = min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))
    return f"{values[index] * 1000:.0f} ms"


def _load(values: tuple[float, float, float]) -> str:
    return "/".join(f"{v:.2f}" for v in values)


def account(base: str, runs: list[UserRun], database: Path | None) -> tuple[Counter[str], list[str]]:
    """Jobs by status as the server lists them, and each user whose balance is not 1000 minus its completed costs."""
    http = requests.Session()
    jobs: Counter[str] = Counter()
    mismatches: list[str] = []
    for run in runs:
        if not run.api_key:
            continue
        auth = {"Authorization": f"Bearer {run.api_key}"}
        if run.starting_balance != STARTING_BALANCE:
            mismatches.append(f"{run.name} started with {run.starting_balance}")
        durations = {
            row["uuid"]: row["duration"]
            for row in http.get(f"{base}/file?limit=100", headers=auth, timeout=60).json()["files"]
        }
        cost = 0
        listed: set[str] = set()
        for file_id in run.file_ids:
            for job in http.get(f"{base}/transcribe/{file_id}", timeout=60).json()["transcriptions"]:
                listed.add(job["uuid"])
                jobs[job["status"]] += 1
                if job["status"] == "completed":
                    cost += math.ceil(durations[file_id])
        if run.jobs - listed:
            mismatches.append(f"{run.name}: jobs asked for but not listed: {sorted(run.jobs - listed)}")
        balance = http.get(f"{base}/user/me", headers=auth, timeout=60).json()["token_balance"]
        if balance != STARTING_BALANCE - cost:
            mismatches.append(f"{run.name}: balance {balance}, expected {STARTING_BALANCE} - {cost}")
        if database is not None:
            with sqlite3.connect(database, timeout=30) as db:
                stored = db.execute(
                    "SELECT COALESCE(SUM(t.cost), 0), SUM(t.status IN ('pending', 'processing')), u.token_balance "
                    "FROM accounts_user u LEFT JOIN transcriptions_transcription t ON t.owner_id = u.id "
                    "WHERE u.username = ? GROUP BY u.id",
                    (run.name,),
                ).fetchone()
            charged, unfinished, stored_balance = stored
            if charged != cost or stored_balance != STARTING_BALANCE - charged or unfinished:
                mismatches.append(
                    f"{run.name}: stored costs {charged}, balance {stored_balance}, unfinished {unfinished} "
                    f"(expected costs {cost})"
                )
    return jobs, mismatches


def run_load(
    base: str,
    *,
    users: int,
    seconds: float,
    drain_seconds: float,
    files: list[Path] = FILES,
    database: Path | None = None,
    admin_key: str | None = None,
    queue: str = "",
    log: Callable[[str], None] = print,
) -> LoadReport:
    """``users`` threads against the API at ``base`` (``http://HOST:PORT/api/v1``) for ``seconds``, then the accounting."""
    tally = Tally()
    tag = uuid.uuid4().hex[:6]
    runs = [UserRun(name=f"load{tag}{number}") for number in range(users)]
    load_before = os.getloadavg()
    started = time.monotonic()
    deadline = started + seconds
    drain_deadline = deadline + drain_seconds
    stop = threading.Event()
    samples: list[dict[str, float]] = []
    sampler = None
    if admin_key:
        sampler = threading.Thread(target=metrics_sampler, args=(base, admin_key, queue, stop, samples), daemon=True)
        sampler.start()

    def life(run: UserRun) -> None:
        try:
            user_session(base, tally, run, deadline=deadline, drain_deadline=drain_deadline, files=files)
        except Exception as exc:
            run.failure = f"{run.name}: {exc}"

    threads = [threading.Thread(target=life, args=(run,), daemon=True) for run in runs]
    for thread in threads:
        thread.start()
    log(f"{users} users started; load for {seconds:.0f} s, then up to {drain_seconds:.0f} s of drain")
    for thread in threads:
        thread.join(timeout=max(1.0, drain_deadline + 2 * REQUEST_TIMEOUT_SECONDS - time.monotonic()))
    wall = time.monotonic() - started
    stop.set()
    load_after = os.getloadavg()
    jobs, mismatches = account(base, runs, database)
    return LoadReport(
        users=users,
        seconds=seconds,
        wall=wall,
        requests=list(tally.requests),
        errors=tally.errors,
        jobs=jobs,
        balance_mismatches=mismatches,
        unfinished_users=[run.failure for run in runs if run.failure],
        load_before=load_before,
        load_after=load_after,
        samples=samples,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=150.0, help="load phase")
    parser.add_argument("--drain", type=float, default=45.0, help="after the load phase: jobs in hand may finish")
    args = parser.parse_args()
    if not 1 <= args.users <= 500 or not 1 <= args.seconds <= 1800 or not 0 <= args.drain <= 600:
        parser.error("--users 1-500, --seconds 1-1800, --drain 0-600")

    sys.path.insert(0, str(ROOT / "bench"))
    from conversion_isolation import Service
    from http_client import installed_models

    models = installed_models()
    with tempfile.TemporaryDirectory(prefix="load-") as work:
        service = Service(
            Path(work),
            models,
            merged=False,
            env={"REGISTRATIONS_PER_ADDRESS_PER_HOUR": str(max(20, 2 * args.users))},
        )
        service.start()
        try:
            admin_key = _admin_key(service)
            report = run_load(
                service.base,
                users=args.users,
                seconds=args.seconds,
                drain_seconds=args.drain,
                database=Path(work) / "data" / "db.sqlite3",
                admin_key=admin_key,
                queue=service.queue,
            )
        finally:
            service.stop()
    print("\n".join(report.lines()))


def _admin_key(service: Any) -> str:
    """An admin's API key on the service, for GET /admin/metrics during the run."""
    import subprocess

    password = "Load-Admin-Passw0rd-1!"
    subprocess.run(
        [sys.executable, "manage.py", "createsuperuser", "--noinput", "--username", "loadadmin"],
        cwd=ROOT,
        env={**service.env, "DJANGO_SUPERUSER_PASSWORD": password},
        check=True,
        capture_output=True,
    )
    http = requests.Session()
    login = http.post(f"{service.base}/user/login", json={"username": "loadadmin", "password": password}, timeout=60)
    session = login.json()["session_id"]
    token = http.post(
        f"{service.base}/user/token",
        json={"name": "metrics"},
        headers={"Authorization": f"Basic {session}"},
        timeout=60,
    )
    return json.loads(token.text)["token"]


if __name__ == "__main__":
    main()
