"""A short transcription while a long video converts: the conversion queue keeps it off the transcription worker.

Run from the repository root (Redis must answer at 127.0.0.1:6379)::

    .venv/bin/python bench/conversion_isolation.py [--runs 3] [--no-before] [--keep]

Figure 4 of issue 11. It makes a 3-minute 1280x720 video with the bundled ffmpeg
(testsrc2 and a 440 Hz sine, H.264 + AAC), so that its MP4 re-encode is real work, and
starts the service as ``make run`` does (``manage.py serve`` on a free port, a temporary
``DATA_DIR`` with SQLite, Redis database 14 with queues of its own). User B's job is
tests/data/jfk.flac (11 s) in verbose_json, timed from the start of its upload to
completed (``GET /transcribe/:uuid`` polled every 50 ms), conversion included; B's file is
deleted after each run so that each upload is converted again.

* idle: B's job on the idle service, ``--runs`` times after a warm-up;
* loaded: for each of ``--runs`` runs, user A uploads the video; once its WAV is recorded
  (its MP4 encode then starts), B's job runs as above; then A's conversion is waited for
  and A's file deleted before the next run.

It prints both medians and their ratio (target <= 3), and, unless ``--no-before``, the
same with the conversion queue merged back into the transcription queue
(``CONVERSION_QUEUE`` = the transcription queue: one worker takes everything, ffmpeg on
``MEDIA_THREADS`` threads as before), all in one run of this script. Figures only, no
assertions.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from http_client import call, free_port, installed_models, multipart

ROOT = Path(__file__).resolve().parent.parent
JFK = ROOT / "tests" / "data" / "jfk.flac"
REDIS_URL = "redis://127.0.0.1:6379/14"
POLL_SECONDS = 0.05
PASSWORD = "Bench-Passw0rd!"
# Settings a developer's shell may set that a fresh `make run` would not have.
UNSET_PREFIXES = ("CELERY_", "S3_", "TRANSCRIPTION_", "CONVERSION_", "SQLITE_", "WEBHOOK_")
UNSET = ("DATABASE_URL", "STATIC_ROOT", "MEDIA_ROOT", "CACHE_URL", "PRODUCTION", "DEBUG", "SECRET_KEY")


def make_video(path: Path) -> None:
    """3 minutes of 1280x720 testsrc2 at 25 fps with a 440 Hz tone, H.264 + AAC, as a camera would give it."""
    sys.path.insert(0, str(ROOT))
    from files.media import ffmpeg_binary

    subprocess.run(
        [ffmpeg_binary(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", "testsrc2=s=1280x720:r=25:d=180",
         "-f", "lavfi", "-i", "sine=f=440:d=180:sample_rate=44100",
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-b:a", "128k", "-shortest", str(path)],
        check=True,
    )  # fmt: skip


class Service:
    """``manage.py serve`` on a free port and a temporary DATA_DIR, its output in a log file."""

    def __init__(self, work: Path, models_dir: Path, *, merged: bool, env: dict[str, str] | None = None) -> None:
        self.work = work
        self.merged = merged
        tag = uuid.uuid4().hex[:8]
        self.queue = f"bench-{tag}"
        self.conversion_queue = self.queue if merged else f"bench-conversions-{tag}"
        self.webhook_queue = f"bench-webhooks-{tag}"
        self.env = {k: v for k, v in os.environ.items() if k not in UNSET and not k.startswith(UNSET_PREFIXES)}
        self.env.update(
            DATA_DIR=str(work / "data"),
            MODELS_DIR=str(models_dir),
            REDIS_URL=REDIS_URL,
            CELERY_TASK_DEFAULT_QUEUE=self.queue,
            CONVERSION_QUEUE=self.conversion_queue,
            WEBHOOK_QUEUE=self.webhook_queue,
            PYTHONUNBUFFERED="1",
        )
        if merged:
            # As before conversions had a queue of their own: ffmpeg on MEDIA_THREADS (2).
            self.env["CONVERSION_FFMPEG_THREADS"] = "2"
        self.env.update(env or {})
        self.log_path = work / "serve.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.base = ""

    def start(self) -> None:
        port = free_port()
        self.base = f"http://127.0.0.1:{port}/api/v1"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", "serve", "--port", str(port)],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        workers = ("worker",) if self.merged else ("transcription", "conversion")
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"serve exited:\n{self.log_path.read_text()[-3000:]}")
            log = self.log_path.read_text(errors="replace")
            ready = all(re.search(rf"^{name} *\| .* ready\.$", log, re.MULTILINE) for name in workers)
            try:
                if ready and urllib.request.urlopen(f"{self.base}/health", timeout=2).status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"serve did not start; see {self.log_path}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # Ctrl-C: serve stops its children
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        try:
            import redis

            client = redis.Redis.from_url(REDIS_URL)
            for queue in {self.queue, self.conversion_queue, self.webhook_queue}:
                client.delete(queue, f"{queue}\x06\x169", f"_kombu.binding.{queue}")
        except Exception:  # cleanup only
            pass

    def file_row(self, file_id: str) -> tuple[str, str, str | None] | None:
        """(state, WAV name, converted_at) of a file, from the database; None once deleted."""
        with sqlite3.connect(self.work / "data" / "db.sqlite3", timeout=30) as db:
            return db.execute(
                "SELECT state, wav_name, converted_at FROM files_file WHERE id = ?", (uuid.UUID(file_id).hex,)
            ).fetchone()

    def job_times(self, job_id: str) -> tuple[str | None, str | None]:
        with sqlite3.connect(self.work / "data" / "db.sqlite3", timeout=30) as db:
            return db.execute(
                "SELECT started_at, processed_at FROM transcriptions_transcription WHERE id = ?",
                (uuid.UUID(job_id).hex,),
            ).fetchone()

    def register(self, username: str) -> dict[str, str]:
        session = call(
            "POST",
            f"{self.base}/user/register",
            body=json.dumps({"username": username, "password": PASSWORD}).encode(),
            headers={"Content-Type": "application/json"},
        )["session_id"]
        return {"Authorization": f"Basic {session}"}

    def upload(self, path: Path, auth: dict[str, str]) -> str:
        body, content_type = multipart(path)
        answer = call("POST", f"{self.base}/file", body=body, headers={**auth, "Content-Type": content_type})
        if not answer["files"][0]["status"]["uploaded"]:
            raise SystemExit(f"expected a new upload: {answer}")
        return answer["files"][0]["uuid"]


@dataclass
class JobRun:
    seconds: float
    breakdown: str


def offset(stamp: str | None, started_wall: float) -> str:
    if stamp is None:
        return "(not yet)"
    moment = dt.datetime.fromisoformat(stamp).replace(tzinfo=dt.UTC).timestamp()
    return f"{moment - started_wall:.2f} s"


def b_job(service: Service, auth: dict[str, str]) -> JobRun:
    """B's jfk.flac: upload, queue verbose_json, poll until completed; then delete the file."""
    started = time.perf_counter()
    started_wall = time.time()
    file_id = service.upload(JFK, auth)
    uploaded = time.perf_counter() - started
    queued = call(
        "POST",
        f"{service.base}/transcribe",
        body=json.dumps({"uuid": file_id, "format": "verbose_json"}).encode(),
        headers={**auth, "Content-Type": "application/json"},
    )
    job_id = queued["transcriptions"][0]["uuid"]
    while True:
        job = call("GET", f"{service.base}/transcribe/{job_id}")
        if job["status"] == "completed":
            seconds = time.perf_counter() - started
            break
        if job["status"] == "failed":
            raise SystemExit(f"B's job failed: {job['error']}")
        time.sleep(POLL_SECONDS)
    claimed, done = service.job_times(job_id)
    row = service.file_row(file_id)
    converted = row[2] if row else None
    breakdown = (
        f"upload {uploaded:.2f} s, job started at {offset(claimed, started_wall)}, done at "
        f"{offset(done, started_wall)}, MP3 at {offset(converted, started_wall)}"
    )
    # Its MP3 may still be on its way: let it finish, so that no run leaves work behind.
    while (row := service.file_row(file_id)) is not None and row[0] == "processing":
        time.sleep(0.2)
    call("DELETE", f"{service.base}/file/{file_id}", headers=auth)
    return JobRun(seconds, breakdown)


def wait_for(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


def scenario(service: Service, video: Path, runs: int) -> tuple[list[float], list[float]]:
    """B's idle times and B's times while A's video converts."""
    a_auth = service.register("user-a")
    b_auth = service.register("user-b")
    idle: list[float] = []
    for run in range(runs + 1):
        result = b_job(service, b_auth)
        label = "warm-up" if not run else f"run {run}"
        print(f"  idle {label}: B {result.seconds:.2f} s ({result.breakdown})", flush=True)
        if run:
            idle.append(result.seconds)
    loaded: list[float] = []
    for run in range(1, runs + 1):
        a_started = time.perf_counter()
        a_file = service.upload(video, a_auth)
        a_uploaded = time.perf_counter() - a_started
        # Its WAV recorded: phase one is done, the MP4 encode starts now.
        wait_for(lambda file=a_file: (row := service.file_row(file)) and row[1], 300, "A's WAV")
        a_wav = time.perf_counter() - a_started
        result = b_job(service, b_auth)
        a_row = service.file_row(a_file)
        still = a_row is not None and a_row[0] == "processing"
        wait_for(lambda file=a_file: (row := service.file_row(file)) and row[0] != "processing", 1800, "A's conversion")
        a_done = time.perf_counter() - a_started
        state = service.file_row(a_file)[0]
        print(
            f"  loaded run {run}: B {result.seconds:.2f} s ({result.breakdown}); A's video: uploaded in "
            f"{a_uploaded:.1f} s, WAV at {a_wav:.1f} s, {state} at {a_done:.1f} s; "
            f"A still converting when B completed: {still}",
            flush=True,
        )
        loaded.append(result.seconds)
        call("DELETE", f"{service.base}/file/{a_file}", headers=a_auth)
    return idle, loaded


def report(label: str, idle: list[float], loaded: list[float]) -> None:
    idle_median, loaded_median = statistics.median(idle), statistics.median(loaded)
    runs = ", ".join
    print(f"{label}: B idle    median {idle_median:.2f} s  (runs: {runs(f'{t:.2f}' for t in idle)})")
    print(f"{label}: B loaded  median {loaded_median:.2f} s  (runs: {runs(f'{t:.2f}' for t in loaded)})")
    print(f"{label}: ratio loaded/idle: {loaded_median / idle_median:.2f}  (target <= 3)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each; medians are reported")
    parser.add_argument("--no-before", action="store_true", help="skip the merged-queue ('before') scenario")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs)")
    args = parser.parse_args()

    models_dir = installed_models()
    work = Path(tempfile.mkdtemp(prefix="whisper-bench-conversion-"))
    video = work / "video-720p-180s.mp4"
    started = time.perf_counter()
    make_video(video)
    print(
        f"video: 180 s of 1280x720 H.264 + AAC, {video.stat().st_size / 1e6:.1f} MB, made in "
        f"{time.perf_counter() - started:.1f} s; B: {JFK.name} (11 s), ggml-tiny.en, verbose_json; "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )
    results: dict[str, tuple[list[float], list[float]]] = {}
    scenarios = [("after", False)] + ([] if args.no_before else [("before", True)])
    try:
        for label, merged in scenarios:
            folder = work / label
            folder.mkdir()
            service = Service(folder, models_dir, merged=merged)
            settings_line = (
                "one queue and one worker for everything, ffmpeg on 2 threads"
                if merged
                else "conversions on their own queue and worker (defaults: nice 10, ffmpeg on 1 thread, 2 processes)"
            )
            print(f"{label}: {settings_line}", flush=True)
            try:
                service.start()
                results[label] = scenario(service, video, args.runs)
            finally:
                service.stop()
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    for label, (idle, loaded) in results.items():
        report(label, idle, loaded)
    if "before" in results:
        after, before = (statistics.median(results[k][1]) for k in ("after", "before"))
        print(f"B loaded, before/after: {before / after:.2f}")


if __name__ == "__main__":
    main()
