"""Scheduling figures of the served service: fairness, long-form speed, one file on two workers.

Run from the repository root (Redis must answer at 127.0.0.1:6379)::

    .venv/bin/python bench/scheduling.py [--runs 2] [--only fairness,long,parallel] [--env NAME=VALUE] [--keep]

Each part starts the service as ``make run`` does (``manage.py serve`` on a free port, a
temporary ``DATA_DIR`` with SQLite, Redis database 14 with queues of its own; the
``Service`` of bench/conversion_isolation.py) with the worker settings it names, and uses
bench/data/english-5min.opus (five minutes of English read by espeak-ng; its text in
english-5min.txt) with ggml-tiny.en. Files are uploaded and converted before the clock
starts, except in the long-form part, which times upload to completed.

1. **fairness**: user A queues three jobs of five minutes each (three distinct files: the
   recording with 0.5, 1 and 1.5 s of silence before it), 1 s later user B queues
   tests/data/jfk.flac (11 s). Printed: B's time from its request to completed, over A's
   backlog (A's first request to A's last job completed); the issue's target <= 0.2.
2. **long**: the recording from the start of its upload to completed (verbose_json), over
   bare sequential faster-whisper (``WhisperModel.transcribe`` with its defaults, the model
   loaded int8 on every core, as the issue times it) on the same file
   in this process, runs alternating; over the same on one thread (faster on some CPUs);
   and over ``engine.transcribe`` (the service's sequential decoding before units). WER of each against the reference text. Target <= 0.45, WER
   at most 1.0 point above the bare decoding's.
3. **parallel**: a 10-minute file (the recording twice) with two transcription worker
   processes of one thread each, against one process of one thread: wall times and their
   ratio, which worker processes decoded the job's units (from the units table), and the
   two transcripts compared word by word (same words in order, start times within 0.1 s).

4. **watch**: the 5-minute recording with progress written every second against not at all
   (``TRANSCRIPTION_PROGRESS_INTERVAL_SECONDS``, two services, runs alternating); a job
   cancelled while a unit is decoded and another user's jfk.flac queued at once: the time
   from the cancel to that job's start; and the time from a job's completion to the first
   webhook delivery to a receiver in this process.

Figures only, no assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import jiwer
from conversion_isolation import Service
from http_client import call, installed_models

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RECORDING = ROOT / "bench" / "data" / "english-5min.opus"
REFERENCE = ROOT / "bench" / "data" / "english-5min.txt"
JFK = ROOT / "tests" / "data" / "jfk.flac"
MODEL = "ggml-tiny.en"
POLL_SECONDS = 0.05


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def wer(reference: str, text: str) -> float:
    return float(jiwer.wer(normalise(reference), normalise(text)))


def ffmpeg(*args: str) -> None:
    from files.media import ffmpeg_binary

    subprocess.run([ffmpeg_binary(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def delayed(work: Path, seconds: float) -> Path:
    """The recording with ``seconds`` of silence before it (a distinct file, so no upload is deduplicated)."""
    path = work / f"english-5min-{seconds:g}.opus"
    ms = int(seconds * 1000)
    ffmpeg("-i", str(RECORDING), "-af", f"adelay={ms}:all=1", "-c:a", "libopus", "-b:a", "24k", str(path))
    return path


def twice(work: Path) -> Path:
    path = work / "english-10min.opus"
    ffmpeg(
        "-i", str(RECORDING), "-i", str(RECORDING), "-filter_complex", "[0:a][1:a]concat=n=2:v=0:a=1",
        "-c:a", "libopus", "-b:a", "24k", str(path),
    )  # fmt: skip
    return path


def converted(service: Service, path: Path, auth: dict[str, str]) -> str:
    """Upload ``path`` and wait for its WAV; its uuid."""
    file_id = service.upload(path, auth)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        row = service.file_row(file_id)
        if row and row[1]:
            return file_id
        time.sleep(0.1)
    raise SystemExit(f"{path.name} was not converted")


def queue(service: Service, file_id: str, auth: dict[str, str], fmt: str = "verbose_json") -> str:
    answer = call(
        "POST",
        f"{service.base}/transcribe",
        body=json.dumps({"uuid": file_id, "format": fmt, "model": MODEL}).encode(),
        headers={**auth, "Content-Type": "application/json"},
    )
    return answer["transcriptions"][0]["uuid"]


def wait_completed(service: Service, job_id: str) -> dict[str, Any]:
    while True:
        job = call("GET", f"{service.base}/transcribe/{job_id}")
        if job["status"] == "completed":
            return job
        if job["status"] == "failed":
            raise SystemExit(f"job failed: {job['error']}")
        time.sleep(POLL_SECONDS)


def units_of(service: Service, job_id: str) -> list[tuple[int, float, float, str]]:
    with sqlite3.connect(service.work / "data" / "db.sqlite3", timeout=30) as db:
        return db.execute(
            'SELECT u."index", u.start, u."end", u.worker FROM transcriptions_transcriptionunit u '
            'JOIN transcriptions_transcription t ON t.batch_id = u.batch_id WHERE t.id = ? ORDER BY u."index"',
            (uuid.UUID(job_id).hex,),
        ).fetchall()


# Settings given with --env, for every service started (the parallel part's own win).
EXTRA_ENV: dict[str, str] = {}


def started(work: Path, name: str, models_dir: Path, env: dict[str, str]) -> Service:
    folder = work / name
    folder.mkdir()
    service = Service(folder, models_dir, merged=False, env={**EXTRA_ENV, **env})
    service.start()
    return service


# --- 1. Fairness ---------------------------------------------------------------------------


def fairness(work: Path, models_dir: Path, runs: int) -> None:
    print("\n== 1. fairness: A queues three 5-minute jobs, 1 s later B queues jfk.flac (11 s) ==", flush=True)
    files = [delayed(work, seconds) for seconds in (0.5, 1.0, 1.5)]
    ratios: list[float] = []
    for run in range(1, runs + 1):
        service = started(work, f"fairness-{run}", models_dir, {})
        try:
            a_auth, b_auth = service.register("user-a"), service.register("user-b")
            a_files = [converted(service, path, a_auth) for path in files]
            b_file = converted(service, JFK, b_auth)
            completed: dict[str, float] = {}

            def watch(job_id: str, service: Service = service, completed: dict[str, float] = completed) -> None:
                wait_completed(service, job_id)
                completed[job_id] = time.perf_counter()

            t0 = time.perf_counter()
            a_jobs = [queue(service, file_id, a_auth) for file_id in a_files]
            threads = [threading.Thread(target=watch, args=(job,)) for job in a_jobs]
            for thread in threads:
                thread.start()
            time.sleep(max(0.0, t0 + 1.0 - time.perf_counter()))
            b_requested = time.perf_counter()
            b_job = queue(service, b_file, b_auth)
            watch(b_job)
            for thread in threads:
                thread.join()
            b_time = completed[b_job] - b_requested
            backlog = max(completed[job] for job in a_jobs) - t0
            a_done = ", ".join(f"{completed[job] - t0:.1f}" for job in a_jobs)
            ratios.append(b_time / backlog)
            print(
                f"  run {run}: B {b_time:.2f} s (done at {completed[b_job] - t0:.1f} s); A's jobs done at "
                f"{a_done} s; backlog {backlog:.1f} s; ratio {b_time / backlog:.3f}",
                flush=True,
            )
        finally:
            service.stop()
    print(f"fairness: B's time / A's backlog, median {statistics.median(ratios):.3f} (target <= 0.2)")


# --- 2. Long-form speed ----------------------------------------------------------------------


def long_form(work: Path, models_dir: Path, runs: int) -> None:
    from faster_whisper import WhisperModel

    from transcriptions import engine

    print("\n== 2. long form: english-5min.opus upload to completed, against bare faster-whisper ==", flush=True)
    threads = engine.default_cpu_threads()
    cache = engine.ModelCache(models_dir, cpu_threads=threads)
    ours = cache.get(MODEL)
    bare_model = WhisperModel(
        str(engine.resolve_model_path(models_dir, MODEL)), device="cpu", compute_type="int8", cpu_threads=threads
    )
    reference = REFERENCE.read_text()

    def bare() -> str:
        segments, _ = bare_model.transcribe(str(RECORDING))
        return "".join(segment.text for segment in segments)

    # The same on one thread: on some CPUs the sequential decode is faster so.
    one_thread_model = WhisperModel(
        str(engine.resolve_model_path(models_dir, MODEL)), device="cpu", compute_type="int8", cpu_threads=1
    )

    def bare_one_thread() -> str:
        segments, _ = one_thread_model.transcribe(str(RECORDING))
        return "".join(segment.text for segment in segments)

    def sequential() -> str:
        return engine.transcribe(ours, RECORDING, language=None, vad_filter=False).text

    service = started(work, "long", models_dir, {})
    times: dict[str, list[float]] = {
        "service": [],
        "bare faster-whisper": [],
        "bare, 1 thread": [],
        "engine.transcribe": [],
    }
    texts: dict[str, str] = {}
    try:
        users = iter(range(1_000_000))

        def served() -> str:
            # A user of their own per run: 301 tokens a run, 1000 to a new account.
            auth = service.register(f"user-long-{next(users)}")
            file_id = service.upload(RECORDING, auth)
            job = wait_completed(service, queue(service, file_id, auth, "verbose_json"))
            units = units_of(service, job["uuid"])
            call("DELETE", f"{service.base}/file/{file_id}", headers=auth)
            served.units = units  # type: ignore[attr-defined]
            return job["data"]["text"]

        steps = {
            "service": served,
            "bare faster-whisper": bare,
            "bare, 1 thread": bare_one_thread,
            "engine.transcribe": sequential,
        }
        for run in range(runs + 1):
            row = []
            for label, step in list(steps.items()) if run % 2 else list(steps.items())[::-1]:
                began = time.perf_counter()
                texts[label] = step()
                seconds = time.perf_counter() - began
                row.append(f"{label} {seconds:.2f} s")
                if run:
                    times[label].append(seconds)
            print(f"  {'warm-up' if not run else f'run {run}'}: {'; '.join(row)}", flush=True)
        print(f"  the service's units: {served.units}")  # type: ignore[attr-defined]
    finally:
        service.stop()
    base = statistics.median(times["bare faster-whisper"])
    base_wer = wer(reference, texts["bare faster-whisper"])
    for label, values in times.items():
        value = statistics.median(values)
        error = wer(reference, texts[label])
        print(
            f"long: {label:20} median {value:6.2f} s  ratio to bare {value / base:.3f}  "
            f"WER {error:.2%} ({(error - base_wer) * 100:+.2f} pt)"
        )
    sequential_median = statistics.median(times["engine.transcribe"])
    print(f"long: service over engine.transcribe: {statistics.median(times['service']) / sequential_median:.3f}")
    fastest = min(statistics.median(times[label]) for label in ("bare faster-whisper", "bare, 1 thread"))
    print(f"long: service over the faster bare decoding: {statistics.median(times['service']) / fastest:.3f}")
    print(f"long: target: service / bare <= 0.45, WER <= bare + 1.0 pt (bare on {threads} threads)")


# --- 3. Parallel ---------------------------------------------------------------------------------


def parallel(work: Path, models_dir: Path, runs: int) -> None:
    print("\n== 3. parallel: a 10-minute file, two worker processes of one thread against one ==", flush=True)
    path = twice(work)
    results: dict[str, tuple[list[float], dict[str, Any], list[Any]]] = {}
    for label, processes in (("one process", 1), ("two processes", 2)):
        env = {"CELERY_WORKER_CONCURRENCY": str(processes), "WHISPER_CPU_THREADS": "1"}
        service = started(work, f"parallel-{processes}", models_dir, env)
        seconds: list[float] = []
        try:
            for run in range(runs + 1):
                # A user of their own per run: 601 tokens a run, 1000 to a new account.
                auth = service.register(f"user-parallel-{run}")
                file_id = converted(service, path, auth)
                began = time.perf_counter()
                job = wait_completed(service, queue(service, file_id, auth, "verbose_json"))
                elapsed = time.perf_counter() - began
                units = units_of(service, job["uuid"])
                workers = sorted({unit[3] for unit in units})
                print(
                    f"  {label}, {'warm-up' if not run else f'run {run}'}: {elapsed:.2f} s, {len(units)} units "
                    f"decoded by {len(workers)} process(es): {workers}",
                    flush=True,
                )
                if run:
                    seconds.append(elapsed)
            results[label] = (seconds, job["data"], units)
        finally:
            service.stop()
    one, two = (statistics.median(results[label][0]) for label in ("one process", "two processes"))
    print(f"parallel: one process {one:.2f} s, two processes {two:.2f} s, ratio two/one {two / one:.3f}")
    segments = {label: result["segments"] for label, (_, result, _) in results.items()}
    a, b = segments["one process"], segments["two processes"]
    same_text = [s["text"] for s in a] == [s["text"] for s in b]
    drift = max((abs(x["start"] - y["start"]) for x, y in zip(a, b, strict=False)), default=0.0)
    print(
        f"parallel: merged transcripts: {len(a)} and {len(b)} segments, same text in order: {same_text}, "
        f"largest start difference {drift:.3f} s; texts equal: {results['one process'][1]['text'] == results['two processes'][1]['text']}"
    )


# --- 4. Jobs people watch: progress's cost, cancel to a free worker, completion to a webhook ------


def job_row(service: Service, job_id: str) -> tuple[str | None, str | None]:
    """(started_at, processed_at) of a job, from the database."""
    return service.job_times(job_id)


def stamp(value: str | None) -> float:
    import datetime as dt

    if value is None:
        raise SystemExit("expected a time in the database")
    return dt.datetime.fromisoformat(value).replace(tzinfo=dt.UTC).timestamp()


def watching(work: Path, models_dir: Path, runs: int) -> None:
    import http.server

    print("\n== 4. jobs people watch: progress's cost, cancel, webhooks ==", flush=True)
    quiet = started(work, "no-progress", models_dir, {"TRANSCRIPTION_PROGRESS_INTERVAL_SECONDS": "1000000"})
    service = started(work, "progress", models_dir, {"WEBHOOK_ALLOW_PRIVATE_NETWORKS": "1"})
    try:
        # Progress written every second against not at all (the same decoding otherwise), alternating.
        times: dict[str, list[float]] = {"progress every 1 s": [], "no progress": []}
        for run in range(runs + 1):
            for label, target in (("progress every 1 s", service), ("no progress", quiet))[:: 1 if run % 2 else -1]:
                auth = target.register(f"watch-{label[:2]}-{run}")
                began = time.perf_counter()
                wait_completed(target, queue(target, target.upload(RECORDING, auth), auth))
                if run:
                    times[label].append(time.perf_counter() - began)
        with_progress, without = (statistics.median(times[k]) for k in times)
        print(
            f"watch: 5-minute file upload to completed: progress every 1 s {with_progress:.2f} s, none "
            f"{without:.2f} s, ratio {with_progress / without:.3f} (runs: {times})"
        )

        # Cancel while a unit is decoded: how soon the worker takes the next job.
        delays: list[float] = []
        for run in range(runs):
            auth = service.register(f"cancel-{run}")
            other = service.register(f"next-{run}")
            short = converted(service, JFK, other)
            long_job = queue(service, service.upload(RECORDING, auth), auth)
            while (job := call("GET", f"{service.base}/transcribe/{long_job}"))["progress"] <= 0.0:
                time.sleep(POLL_SECONDS)
            cancelled_at = time.time()
            call("POST", f"{service.base}/transcribe/{long_job}/cancel", headers=auth)
            next_job = queue(service, short, other)
            wait_completed(service, next_job)
            delays.append(stamp(job_row(service, next_job)[0]) - cancelled_at)
            print(
                f"  cancel run {run + 1}: at progress {job['progress']:.2f}, next job started "
                f"{delays[-1]:.2f} s after the cancel",
                flush=True,
            )
        print(f"watch: cancel to the next job started: median {statistics.median(delays):.2f} s")

        # Completion to the first webhook delivery, to a receiver on this machine.
        arrivals: list[float] = []

        class Receiver(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                arrivals.append(time.time())
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            auth = service.register("hooked")
            call(
                "POST",
                f"{service.base}/user/webhooks",
                body=json.dumps({"url": f"http://127.0.0.1:{server.server_address[1]}/hook",
                                 "events": ["transcription.completed"]}).encode(),
                headers={**auth, "Content-Type": "application/json"},
            )  # fmt: skip
            file_id = converted(service, JFK, auth)
            latencies: list[float] = []
            for _ in range(runs + 1):
                before = len(arrivals)
                job_id = queue(service, file_id, auth)
                wait_completed(service, job_id)
                deadline = time.monotonic() + 30
                while len(arrivals) == before and time.monotonic() < deadline:
                    time.sleep(0.01)
                latencies.append(arrivals[-1] - stamp(job_row(service, job_id)[1]))
            print(f"watch: completion to the first webhook delivery: {', '.join(f'{t:.3f}' for t in latencies)} s")
        finally:
            server.shutdown()
    finally:
        service.stop()
        quiet.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--only", default="fairness,long,parallel,watch")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs)")
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="a setting of the services started"
    )
    args = parser.parse_args()
    EXTRA_ENV.update(item.split("=", 1) for item in args.env)
    if EXTRA_ENV:
        print(f"service settings: {EXTRA_ENV}")
    models_dir = installed_models()
    print(f"{os.cpu_count()} CPUs; load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    work = Path(tempfile.mkdtemp(prefix="whisper-bench-scheduling-"))
    parts = {"fairness": fairness, "long": long_form, "parallel": parallel, "watch": watching}
    try:
        for name in args.only.split(","):
            parts[name](work, models_dir, args.runs)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
