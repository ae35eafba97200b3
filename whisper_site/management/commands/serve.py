"""``manage.py serve``: the API on gunicorn, a transcription worker and a conversion worker, stopped together.

A Celery worker that exits is started again (one line says so), after a pause that doubles
with each quick exit in a row, so that a worker that cannot start does not spin; gunicorn
exiting stops everything, as Ctrl-C does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import IO, Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from whisper_site.bind_host import EMBEDDED_SECRET_KEY, embedded_secret_key_refusal
from whisper_site.broker import broker_url_choose

STOP_GRACE_SECONDS = 15
# Deliveries at once under `make run` (compose runs its own webhooks service).
SERVE_WEBHOOK_THREADS = 4
# How long the relay of a child's output may go on once the child has exited: its own
# children (ffmpeg, the media zygote) may hold the pipe a moment longer.
RELAY_GRACE_SECONDS = 5
# The pause before a worker that exited starts again: RESTART_FIRST_DELAY_SECONDS, doubled
# for each exit in a row that came within RESTART_QUICK_EXIT_SECONDS of its start, up to
# RESTART_MAX_DELAY_SECONDS. A worker that ran longer than that starts again after the first pause.
RESTART_FIRST_DELAY_SECONDS = 1.0
RESTART_MAX_DELAY_SECONDS = 60.0
RESTART_QUICK_EXIT_SECONDS = 60.0


@dataclass
class _Child:
    """A process serve runs, and when to start it again when it is a worker that exited."""

    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    quick_exits: int = 0
    restart_at: float | None = None


class Command(BaseCommand):
    help = (
        "Migrate, then serve the API with gunicorn on 127.0.0.1:PORT and run a transcription worker "
        "(TRANSCRIPTION_QUEUE) and a conversion worker (CONVERSION_QUEUE). Uses Redis at REDIS_URL when it "
        "answers, else an embedded broker. Each line of their output starts with its process's name. "
        "A worker that exits is started again; Ctrl-C or SIGTERM stops them all."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--web-workers", type=int, default=int(os.environ.get("WEB_WORKERS", "2")))
        parser.add_argument("--no-migrate", action="store_true", help="Skip migrations.")

    def handle(self, *args: Any, **options: Any) -> None:
        # The embedded SECRET_KEY serves loopback only: refuse before starting anything.
        # The children's settings check the same from BIND_HOST.
        if settings.SECRET_KEY == EMBEDDED_SECRET_KEY and (refusal := embedded_secret_key_refusal(options["host"])):
            raise CommandError(refusal)
        os.environ["BIND_HOST"] = options["host"]
        # The folders a first run writes to (the SQLite file, upload spool).
        for folder in (settings.DATA_DIR, settings.FILE_UPLOAD_TEMP_DIR):
            os.makedirs(folder, exist_ok=True)
        if not options["no_migrate"]:
            call_command("migrate", interactive=False, verbosity=0)
        self._install_models()

        env = os.environ.copy()
        if "CELERY_BROKER_URL" not in env:
            env["CELERY_BROKER_URL"] = broker_url_choose(settings.REDIS_URL)
        # Their output goes through a pipe to the relay: unbuffered, so lines come as written.
        env["PYTHONUNBUFFERED"] = "1"
        broker = env["CELERY_BROKER_URL"]
        self.stdout.write(f"Broker: {broker.split('@')[-1]}")

        python = sys.executable
        bind = f"{options['host']}:{options['port']}"
        commands = {
            # The image's web role runs gunicorn with the same configuration file.
            # No proxy stands in front here: the configuration's worker
            # (whisper_site/gunicorn_worker.py) receives request heads and small
            # bodies in its event loop, so slow or idle clients hold no thread.
            "web": [
                python,
                "-m",
                "gunicorn",
                "--config",
                "python:whisper_site.gunicorn_conf",
                "--bind",
                bind,
                "--workers",
                str(options["web_workers"]),
                "whisper_site.wsgi:application",
            ],
            **self._worker_commands(python),
        }
        children = {name: _Child(argv) for name, argv in commands.items()}
        relays: list[threading.Thread] = []
        width = max(map(len, commands))
        output_lock = threading.Lock()
        stopping = False

        def stop(signum: int, frame: object) -> None:
            nonlocal stopping
            stopping = True

        def start(name: str) -> None:
            child = children[name]
            # Own process groups: a terminal's Ctrl-C reaches us, and we
            # stop the children in order instead of all at once. In our
            # session, not sessions of their own: Linux divides the CPU
            # between sessions (autogroups) before nice values count, so
            # the conversion worker's nice only holds within one session.
            # No terminal input for a background process group (it would stop them).
            process = subprocess.Popen(
                child.argv,
                env=env,
                process_group=0,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            child.process, child.started_at, child.restart_at = process, time.monotonic(), None
            prefix = f"{name:<{width}} | "
            for source, target in ((process.stdout, sys.stdout), (process.stderr, sys.stderr)):
                relay = threading.Thread(target=_relay_lines, args=(source, target, prefix, output_lock), daemon=True)
                relay.start()
                relays.append(relay)

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            for name in children:
                start(name)
            self.stdout.write(f"Serving http://{bind}/api/v1 (Ctrl-C stops)")
            while not stopping:
                now = time.monotonic()
                for name, child in children.items():
                    if child.restart_at is not None:
                        if now >= child.restart_at:
                            start(name)
                        continue
                    assert child.process is not None
                    status = child.process.poll()
                    if status is None:
                        continue
                    if name == "web":
                        self.stderr.write(f"web exited with status {status}; stopping")
                        stopping = True
                        break
                    delay = self._schedule_restart(child, now)
                    self.stderr.write(f"{name} exited with status {status}; starting it again in {delay:g} s")
                time.sleep(0.5)
        finally:
            self._stop_children([child.process for child in children.values() if child.process is not None])
            deadline = time.monotonic() + RELAY_GRACE_SECONDS
            for relay in relays:
                relay.join(timeout=max(0.1, deadline - time.monotonic()))
            self.stdout.write("Stopped.")

    def _schedule_restart(self, child: _Child, now: float) -> float:
        """Set when ``child``, a worker that exited, starts again; the pause in seconds."""
        assert child.process is not None
        # What it leaves behind goes with it: pool processes that outlived it (SIGKILL
        # gives them no word) and its embedded beat, which must not run twice.
        _kill_group(child.process.pid)
        child.quick_exits = child.quick_exits + 1 if now - child.started_at < RESTART_QUICK_EXIT_SECONDS else 0
        delay = min(RESTART_MAX_DELAY_SECONDS, RESTART_FIRST_DELAY_SECONDS * 2**child.quick_exits)
        child.restart_at = now + delay
        return delay

    def _worker_commands(self, python: str) -> dict[str, list[str]]:
        """The Celery workers to run, by name: one for transcriptions, one for conversions, one for webhooks.

        The transcription worker also takes the default queue (the recovery that its
        embedded beat sends there). Where ``CONVERSION_QUEUE`` is one of its queues,
        one worker takes everything, as before conversions had a queue of their own.
        """
        transcription_queues = list(dict.fromkeys([settings.TRANSCRIPTION_QUEUE, settings.CELERY_TASK_DEFAULT_QUEUE]))
        beat = [
            # One embedded beat for the job recovery schedule (compose runs
            # beat as its own service).
            "-B",
            "--schedule",
            str(settings.DATA_DIR / "celerybeat-schedule"),
        ]
        webhooks: dict[str, list[str]] = {}
        if settings.WEBHOOK_QUEUE not in {*transcription_queues, settings.CONVERSION_QUEUE}:
            # Deliveries wait on users' servers (up to WEBHOOK_TIMEOUT_SECONDS each): threads
            # in one light process, never a transcription or conversion slot.
            webhooks["webhooks"] = _celery_worker(
                python, "webhooks", [settings.WEBHOOK_QUEUE], SERVE_WEBHOOK_THREADS
            ) + ["--pool", "threads"]
            self.stdout.write(f"Webhook worker: {SERVE_WEBHOOK_THREADS} threads, queue {settings.WEBHOOK_QUEUE}")
        if settings.CONVERSION_QUEUE in transcription_queues:
            worker = _celery_worker(python, "worker", transcription_queues, settings.CELERY_WORKER_CONCURRENCY)
            self.stdout.write(
                f"One worker for transcriptions and conversions: {settings.CELERY_WORKER_CONCURRENCY} process(es), "
                f"queues {', '.join(transcription_queues)}"
            )
            return {"worker": worker + beat, **webhooks}
        self.stdout.write(
            f"Transcription worker: {settings.CELERY_WORKER_CONCURRENCY} process(es), "
            f"queues {', '.join(transcription_queues)}; conversion worker: "
            f"{settings.CONVERSION_WORKER_CONCURRENCY} process(es) at nice {settings.CONVERSION_NICE}, "
            f"queue {settings.CONVERSION_QUEUE}, ffmpeg on {settings.CONVERSION_FFMPEG_THREADS} thread(s)"
        )
        transcription = _celery_worker(
            python, "transcription", transcription_queues, settings.CELERY_WORKER_CONCURRENCY
        )
        # Niced by files.worker in each pool process, as any conversion-only worker is.
        conversion = _celery_worker(
            python, "conversion", [settings.CONVERSION_QUEUE], settings.CONVERSION_WORKER_CONCURRENCY
        )
        return {"transcription": transcription + beat, "conversion": conversion, **webhooks}

    def _install_models(self) -> None:
        try:
            call_command("models", "--install", verbosity=0)
        except Exception as exc:  # the API still serves without models; jobs will say why
            self.stderr.write(f"Bundled models not installed: {exc}")

    def _stop_children(self, processes: list[subprocess.Popen[bytes]]) -> None:
        for process in processes:
            if process.poll() is None:
                # The main processes stop their own workers (Celery finishes
                # the task in hand; an unfinished one is redelivered).
                process.terminate()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for process in processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _kill_group(process.pid)
                process.wait()


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:  # nothing of it is left
        pass


def _celery_worker(python: str, name: str, queues: list[str], concurrency: int) -> list[str]:
    return [
        python,
        "-m",
        "celery",
        "-A",
        "whisper_site",
        "worker",
        # Node names of their own: two workers of one host must not share one.
        "-n",
        f"{name}@%h",
        "-Q",
        ",".join(queues),
        "--loglevel",
        "INFO",
        "--concurrency",
        str(concurrency),
        "--without-mingle",
        "--without-gossip",
    ]


def _relay_lines(source: IO[bytes], target: IO[str], prefix: str, lock: threading.Lock) -> None:
    """Copy ``source`` to ``target`` line by line, each line after ``prefix``, until ``source`` ends."""
    with source:
        for raw in iter(source.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with lock:
                target.write(f"{prefix}{line}\n")
                target.flush()
