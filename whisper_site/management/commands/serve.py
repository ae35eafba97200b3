"""``manage.py serve``: the API on gunicorn and a Celery worker, stopped together."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from whisper_site.bind_host import EMBEDDED_SECRET_KEY, embedded_secret_key_refusal
from whisper_site.broker import broker_url_choose

STOP_GRACE_SECONDS = 15


class Command(BaseCommand):
    help = (
        "Migrate, then serve the API with gunicorn on 127.0.0.1:PORT and run a Celery worker. "
        "Uses Redis at REDIS_URL when it answers, else an embedded broker. Ctrl-C or SIGTERM stops both."
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
            "worker": [
                python,
                "-m",
                "celery",
                "-A",
                "whisper_site",
                "worker",
                "--loglevel",
                "INFO",
                "--concurrency",
                str(settings.CELERY_WORKER_CONCURRENCY),
                "--without-mingle",
                "--without-gossip",
                # One embedded beat for the job recovery schedule: `make run`
                # starts one worker (compose runs beat as its own service).
                "-B",
                "--schedule",
                str(settings.DATA_DIR / "celerybeat-schedule"),
            ],
        }
        children: dict[str, subprocess.Popen[bytes]] = {}
        stopping = False

        def stop(signum: int, frame: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            for name, argv in commands.items():
                # Own process groups: a terminal's Ctrl-C reaches us, and we
                # stop the children in order instead of all at once.
                children[name] = subprocess.Popen(argv, env=env, start_new_session=True)
            self.stdout.write(f"Serving http://{bind}/api/v1 (Ctrl-C stops)")
            while not stopping:
                for name, child in children.items():
                    if child.poll() is not None:
                        self.stderr.write(f"{name} exited with status {child.returncode}; stopping")
                        stopping = True
                time.sleep(0.5)
        finally:
            self._stop_children(children)

    def _install_models(self) -> None:
        try:
            call_command("models", "--install", verbosity=0)
        except Exception as exc:  # the API still serves without models; jobs will say why
            self.stderr.write(f"Bundled models not installed: {exc}")

    def _stop_children(self, children: dict[str, subprocess.Popen[bytes]]) -> None:
        for child in children.values():
            if child.poll() is None:
                # The main processes stop their own workers (Celery finishes
                # the task in hand; an unfinished one is redelivered).
                child.terminate()
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for child in children.values():
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
        self.stdout.write("Stopped.")
