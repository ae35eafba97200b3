"""End-to-end transcription time of the service against a bare faster-whisper call.

Run from the repository root (Redis must answer at 127.0.0.1:6379)::

    .venv/bin/python bench/transcribe.py [--runs 3] [--model ggml-tiny.en] [--keep]

It starts the service as ``manage.py serve`` does (gunicorn with 2 gthread workers and
a Celery worker with the default ``CELERY_WORKER_CONCURRENCY``) on a temporary ``DATA_DIR`` with SQLite and Redis
database 14 (a queue of its own), registers a user, and for one warm-up run and
``--runs`` timed runs: uploads bench/data/clip60.flac (``POST /file``), queues
verbose_json (``POST /transcribe``) and polls ``GET /transcribe/:uuid`` every 50 ms
until it is completed. The time is upload start to completed, conversion included;
the file is deleted after each run, so each upload is converted again. Beside each run, in
this process, it times the same transcription of the same FLAC (decoding included)
with the same model loaded beforehand with the same device, compute type and threads
as the worker (the runs alternate, so both see the same machine). It prints both medians and their ratio (target
<= 1.10). Figures only, no assertions.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
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
from pathlib import Path

import http_client
from http_client import free_port, installed_models, multipart

call = functools.partial(http_client.call, timeout=120)

ROOT = Path(__file__).resolve().parent.parent
CLIP = ROOT / "bench" / "data" / "clip60.flac"
REDIS_URL = "redis://127.0.0.1:6379/14"
POLL_SECONDS = 0.05


class Service:
    """gunicorn + a Celery worker on a temporary DATA_DIR, as `manage.py serve` starts them."""

    def __init__(self, work: Path, models_dir: Path) -> None:
        self.work = work
        self.queue = f"bench-{uuid.uuid4().hex[:8]}"
        self.env = {
            **os.environ,
            "DATA_DIR": str(work / "data"),
            "MODELS_DIR": str(models_dir),
            "DATABASE_URL": "",
            "S3_BUCKET": "",
            "CELERY_BROKER_URL": REDIS_URL,
            "CELERY_TASK_DEFAULT_QUEUE": self.queue,
            "TRANSCRIPTION_QUEUE": self.queue,
            # One worker takes the clip's conversion too: nothing else runs beside it.
            "CONVERSION_QUEUE": self.queue,
            "CELERY_TASK_ALWAYS_EAGER": "0",
            "DJANGO_SETTINGS_MODULE": "whisper_site.settings",
            "PYTHONPATH": str(ROOT),
        }
        self.processes: list[subprocess.Popen[bytes]] = []
        self.base = ""

    def start(self) -> None:
        python = sys.executable
        subprocess.run([python, "manage.py", "migrate", "--verbosity", "0"], cwd=ROOT, env=self.env, check=True)
        port = free_port()
        self.base = f"http://127.0.0.1:{port}/api/v1"
        worker_log = (self.work / "worker.log").open("wb")
        self.processes.append(
            subprocess.Popen(
                [python, "-m", "celery", "-A", "whisper_site", "worker", "--loglevel", "INFO",
                 "-Q", self.queue, "--without-mingle", "--without-gossip"],
                cwd=ROOT, env=self.env, stdout=worker_log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        )  # fmt: skip
        self.processes.append(
            subprocess.Popen(
                [python, "-m", "gunicorn", "whisper_site.wsgi:application", "--bind", f"127.0.0.1:{port}",
                 "--workers", "2", "--worker-class", "gthread", "--threads", "4", "--timeout", "120",
                 "--log-level", "warning"],
                cwd=ROOT, env=self.env, start_new_session=True,
            )
        )  # fmt: skip
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.base}/health", timeout=2).read()
                if " ready." in (self.work / "worker.log").read_text(errors="replace"):
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"the service did not start; see {self.work / 'worker.log'}")

    def timeline(self, file_id: str, job_id: str, started: float) -> str:
        """Conversion done, job started and job done, in seconds after the upload started (from the database)."""
        with sqlite3.connect(self.work / "data" / "db.sqlite3") as db:
            converted = db.execute(
                "SELECT converted_at FROM files_file WHERE id = ?", (uuid.UUID(file_id).hex,)
            ).fetchone()[0]
            claimed, done = db.execute(
                "SELECT started_at, processed_at FROM transcriptions_transcription WHERE id = ?",
                (uuid.UUID(job_id).hex,),
            ).fetchone()

        def offset(stamp: str | None) -> str:
            if stamp is None:  # the MP3/MP4 may still be converting when the job is done
                return "(not yet)"
            moment = dt.datetime.fromisoformat(stamp).replace(tzinfo=dt.UTC).timestamp()
            return f"{moment - started:.2f} s"

        return f"converted at {offset(converted)}, job started at {offset(claimed)}, done at {offset(done)}"

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        try:
            import redis

            redis.Redis.from_url(REDIS_URL).delete(self.queue)
        except Exception:  # cleanup only
            pass


def service_run(service: Service, auth: dict[str, str], model: str) -> tuple[float, str, str]:
    """Upload, queue verbose_json, poll until completed: (seconds, text, where the time went)."""
    base = service.base
    body, content_type = multipart(CLIP)
    started = time.perf_counter()
    started_wall = time.time()
    answer = call("POST", f"{base}/file", body=body, headers={**auth, "Content-Type": content_type})
    uploaded = time.perf_counter() - started
    file_id = answer["files"][0]["uuid"]
    if not answer["files"][0]["status"]["uploaded"]:
        raise SystemExit(f"expected a new upload: {answer}")
    queued = call(
        "POST",
        f"{base}/transcribe",
        body=json.dumps({"uuid": file_id, "model": model, "format": "verbose_json"}).encode(),
        headers={**auth, "Content-Type": "application/json"},
    )
    job_id = queued["transcriptions"][0]["uuid"]
    while True:
        job = call("GET", f"{base}/transcribe/{job_id}")
        if job["status"] == "completed":
            elapsed = time.perf_counter() - started
            break
        if job["status"] == "failed":
            raise SystemExit(f"job failed: {job['error']}")
        time.sleep(POLL_SECONDS)
    breakdown = f"upload {uploaded:.2f} s, " + service.timeline(file_id, job_id, started_wall)
    # A new upload next time (the same bytes would be answered with the converted file).
    call("DELETE", f"{base}/file/{file_id}", headers=auth)
    return elapsed, job["data"]["text"], breakdown


class Bare:
    """The same model, device, compute type, threads and decoding options as the worker, in this process."""

    def __init__(self, models_dir: Path, model_name: str) -> None:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "whisper_site.settings")
        sys.path.insert(0, str(ROOT))
        import django

        django.setup()
        from django.conf import settings
        from faster_whisper import WhisperModel

        from transcriptions import worker

        self.vad_filter = settings.WHISPER_VAD_FILTER
        self.model = WhisperModel(
            str(models_dir / model_name),
            device=settings.WHISPER_DEVICE,
            compute_type=settings.WHISPER_COMPUTE_TYPE,
            cpu_threads=worker.cpu_threads(),
            num_workers=1,
            local_files_only=True,
        )
        # As engine.transcribe: an English-only model is told the language.
        self.language = None if self.model.model.is_multilingual else "en"

    def run(self) -> tuple[float, str]:
        started = time.perf_counter()
        segments, _ = self.model.transcribe(
            str(CLIP),
            language=self.language,
            vad_filter=self.vad_filter,
            beam_size=5,
            condition_on_previous_text=False,
        )
        text = " ".join(segment.text.strip() for segment in segments)
        return time.perf_counter() - started, text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each; medians are reported")
    parser.add_argument("--model", default="ggml-tiny.en")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs)")
    args = parser.parse_args()

    models_dir = installed_models()
    work = Path(tempfile.mkdtemp(prefix="whisper-bench-transcribe-"))
    service = Service(work, models_dir)
    # Loaded before anything is timed, as the worker preloads its default model.
    bare = Bare(models_dir, args.model)
    service_times: list[float] = []
    bare_times: list[float] = []
    try:
        service.start()
        session = call(
            "POST",
            f"{service.base}/user/register",
            body=json.dumps({"username": "bench", "password": "Bench-Passw0rd!"}).encode(),
            headers={"Content-Type": "application/json"},
        )["session_id"]
        auth = {"Authorization": f"Basic {session}"}
        # Runs alternate between the two, so that both see the same machine (other load,
        # clock changes) as far as possible. The first of each is a warm-up.
        for run in range(args.runs + 1):
            seconds, service_text, breakdown = service_run(service, auth, args.model)
            bare_seconds, bare_text = bare.run()
            label = "warm-up" if not run else f"run {run}"
            print(f"{label}: service {seconds:.2f} s ({breakdown}); bare {bare_seconds:.2f} s", flush=True)
            if run:
                service_times.append(seconds)
                bare_times.append(bare_seconds)
    finally:
        service.stop()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    service_median = statistics.median(service_times)
    bare_median = statistics.median(bare_times)
    print(f"clip: {CLIP.name} (60 s), model {args.model}, verbose_json")
    print(f"service (upload -> completed): median {service_median:.2f} s  (runs: "
          f"{', '.join(f'{t:.2f}' for t in service_times)})")  # fmt: skip
    print(f"bare faster-whisper:           median {bare_median:.2f} s  (runs: "
          f"{', '.join(f'{t:.2f}' for t in bare_times)})")  # fmt: skip
    print(f"ratio service/bare: {service_median / bare_median:.2f}  (target <= 1.10)")
    # Each service run beside the bare run that followed it: steadier when other work
    # shares the machine, since both of a pair ran under about the same load.
    paired = statistics.median(service / bare for service, bare in zip(service_times, bare_times, strict=True))
    print(f"median of the runs' own ratios: {paired:.2f}")
    print(f"same text: {' '.join(service_text.split()) == ' '.join(bare_text.split())}")


if __name__ == "__main__":
    main()
