"""The production deployment: compose file, image entrypoint and production settings.

No Docker engine is needed: the compose file is parsed and checked here, and
``docker compose config`` runs too where the compose CLI exists. The
production settings are checked by Django's own ``check --deploy`` in a fresh
process, with the environment the compose file gives the containers, and the
image's entrypoint runs its roles on the host's interpreter.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import redis_queues_delete
from tests.site.conftest import REDIS_URL, descendants, free_port

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENTRYPOINT = ROOT / "deploy" / "entrypoint.sh"
APP_SERVICES = ("web", "worker", "converter", "beat", "worker-gpu")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def production_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "SECRET_KEY", "DEBUG", "PRODUCTION", "ALLOWED_HOSTS", "DATABASE_URL"))
    }
    env.update(
        PRODUCTION="1",
        DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(64),
        ALLOWED_HOSTS="example.com",
        DATA_DIR=str(tmp_path / "data"),
        STATIC_ROOT=str(tmp_path / "static"),
    )
    env.update(extra)
    return env


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


# --- settings -----------------------------------------------------------------


def test_production_settings_pass_check_deploy(tmp_path: Path) -> None:
    result = manage(production_env(tmp_path), "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout
    assert "WARNING" not in result.stderr


def test_production_refuses_to_start_without_a_secret_key(tmp_path: Path) -> None:
    env = production_env(tmp_path)
    del env["SECRET_KEY"]
    result = manage(env, "check")
    assert result.returncode != 0
    assert "SECRET_KEY is required when PRODUCTION=1" in result.stderr


def test_production_serves_no_debug_pages(tmp_path: Path) -> None:
    script = (
        "import django; django.setup(); from django.conf import settings; "
        "print(settings.DEBUG, settings.SESSION_COOKIE_SECURE, settings.SECURE_SSL_REDIRECT)"
    )
    env = production_env(tmp_path, DJANGO_SETTINGS_MODULE="whisper_site.settings")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.stdout.split() == ["False", "True", "True"], result.stderr


# --- compose file ----------------------------------------------------------------


def test_compose_has_the_services_of_a_deployment(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"postgres", "redis", "web", "worker", "converter", "beat", "minio"} <= set(services)
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["redis"]["image"].startswith("redis:7")
    # A restarted Redis keeps its queue.
    assert services["redis"]["command"][-2:] == ["--appendonly", "yes"]
    assert services["web"]["command"] == ["web"]
    assert services["worker"]["command"] == ["worker"]
    assert services["converter"]["command"] == ["converter"]
    assert services["beat"]["command"] == ["beat"]
    # A one-shot migration that the others wait for.
    assert (services["migrate"]["command"], services["migrate"]["restart"]) == (["migrate"], "no")


def test_every_long_running_service_has_a_health_check(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("postgres", "redis", "web", "worker", "converter", "worker-gpu", "minio"):
        test = services[name]["healthcheck"]["test"]
        assert test and test[0] in {"CMD", "CMD-SHELL"}, name
    # The web service is healthy once it is ready: database, broker and a live consumer of every queue.
    assert any("/api/v1/health/ready" in part for part in services["web"]["healthcheck"]["test"])
    assert "inspect ping" in services["worker"]["healthcheck"]["test"][1]
    assert "inspect ping" in services["converter"]["healthcheck"]["test"][1]


def test_workers_scale(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        # A fixed name would make `--scale worker=N` fail.
        assert "container_name" not in service, name
    for name in ("worker", "converter"):
        worker = compose["services"][name]
        assert "ports" not in worker, name
        assert worker["depends_on"]["postgres"]["condition"] == "service_healthy", name
    # Nothing waits for the web service's readiness that readiness waits for: every app
    # service waits for the migration instead.
    for name in (*APP_SERVICES, "webhooks"):
        depends_on = compose["services"][name]["depends_on"]
        assert depends_on["migrate"]["condition"] == "service_completed_successfully", name
        assert "web" not in depends_on, name


def test_conversions_have_workers_of_their_own_that_yield_the_cpu(compose: dict[str, Any]) -> None:
    services = compose["services"]
    # Every app service sends conversions to the same queue; only the converter takes it.
    for name in APP_SERVICES:
        assert services[name]["environment"]["CONVERSION_QUEUE"] == "${CONVERSION_QUEUE:-conversion}", name
    assert services["worker"]["environment"]["WORKER_QUEUES"] == "${WORKER_QUEUES:-}"
    converter = services["converter"]
    assert "WHISPER_DEVICE" not in converter["environment"]
    # nice orders processes within a container only: across containers the CPU is shared
    # by weight, the converter's below the workers' default (1024).
    assert converter["cpu_shares"] == "${CONVERTER_CPU_SHARES:-128}"
    assert "cpu_shares" not in services["worker"]
    assert converter["environment"]["CONVERSION_FFMPEG_THREADS"] == "${CONVERSION_FFMPEG_THREADS:-1}"


def test_settings_come_from_the_environment(compose: dict[str, Any]) -> None:
    for name in APP_SERVICES:
        env = compose["services"][name]["environment"]
        assert env["PRODUCTION"] == "1" and env["DEBUG"] == "0", name
        assert env["SECRET_KEY"].startswith("${SECRET_KEY:?"), name
        assert env["DATABASE_URL"].startswith("postgres://"), name
        assert env["REDIS_URL"].startswith("redis://"), name
        assert {"S3_BUCKET", "S3_ENDPOINT_URL", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY"} <= set(env), name
        assert "data:/data" in compose["services"][name]["volumes"], name
    assert "${POSTGRES_PASSWORD:?" in compose["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"]


def test_volumes_are_named_and_declared(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    assert {"data", "postgres", "redis", "minio", "prometheus"} <= declared
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                # A configuration file of this repository, read-only.
                assert source.startswith("./deploy/") and volume.endswith(":ro"), f"{name}: {volume}"
                assert (ROOT / source).is_file(), f"{name}: {volume}"
                continue
            assert source in declared, f"{name}: {volume}"


def test_optional_services_sit_behind_profiles(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["minio"]["profiles"] == ["s3"]
    assert services["minio-init"]["profiles"] == ["s3"]
    assert services["worker-gpu"]["profiles"] == ["gpu"]
    gpu = services["worker-gpu"]
    assert gpu["environment"]["WHISPER_DEVICE"] == "cuda"
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    # Internal services publish on a private address only (localhost unless set).
    for name in ("postgres", "redis", "minio"):
        for port in services[name]["ports"]:
            assert port.startswith("${PRIVATE_BIND_ADDRESS:-127.0.0.1}:"), name


def test_prometheus_sits_behind_a_profile_and_scrapes_the_metrics_with_an_admin_key(compose: dict[str, Any]) -> None:
    services = compose["services"]
    prometheus = services["prometheus"]
    assert prometheus["profiles"] == ["metrics"]
    assert prometheus["ports"] == ["${PRIVATE_BIND_ADDRESS:-127.0.0.1}:9090:9090"]
    assert "./deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    # The key comes from the environment as a secret file, never written in the repository.
    assert prometheus["secrets"] == ["metrics_api_key"]
    assert compose["secrets"]["metrics_api_key"] == {"environment": "METRICS_API_KEY"}
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/api/v1/admin/metrics"
    assert job["authorization"] == {"type": "Bearer", "credentials_file": "/run/secrets/metrics_api_key"}
    (target,) = job["static_configs"][0]["targets"]
    host, port = target.split(":")
    assert host in services and port == "8000"
    # Django answers the web service under the name Prometheus uses.
    assert services["web"]["environment"]["ALLOWED_HOSTS"].split(",")[-1] == host


def test_a_scrape_over_the_compose_network_is_answered_not_redirected(tmp_path: Path) -> None:
    # Production settings redirect plain HTTP to HTTPS, but not the metrics route that
    # Prometheus reaches inside the deployment: the key is checked (401 without one).
    script = (
        "import django; django.setup(); from django.core.management import call_command; "
        "call_command('migrate', verbosity=0); from django.test import Client; "
        "r = Client().get('/api/v1/admin/metrics', HTTP_HOST='web:8000'); print(r.status_code); "
        "r = Client().get('/api/v1/user/me', HTTP_HOST='web:8000'); print(r.status_code)"
    )
    env = production_env(tmp_path, DJANGO_SETTINGS_MODULE="whisper_site.settings", ALLOWED_HOSTS="example.com,web")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.stdout.split() == ["401", "301"], result.stderr


def test_only_nginx_is_published_and_gunicorn_sits_behind_it(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert "ports" not in services["web"]
    proxy = services["proxy"]
    assert proxy["image"].startswith("nginx:")
    assert proxy["ports"] == ["${WEB_PORT:-8000}:80"]
    assert proxy["depends_on"]["web"]["condition"] == "service_healthy"
    assert "./deploy/nginx.conf.template:/etc/nginx/templates/default.conf.template:ro" in proxy["volumes"]
    assert (ROOT / "deploy" / "nginx.conf.template").is_file()
    # Every ${NAME} of the template is given to nginx's container.
    lines = (ROOT / "deploy" / "nginx.conf.template").read_text().splitlines()
    names = {name for line in lines if not line.lstrip().startswith("#") for name in re.findall(r"\$\{(\w+)\}", line)}
    assert names and names <= set(proxy["environment"])
    # The same timeouts reach gunicorn's worker, and it believes nginx's X-Forwarded-For.
    web = services["web"]["environment"]
    for name in ("REQUEST_HEADER_TIMEOUT_SECONDS", "REQUEST_BODY_TIMEOUT_SECONDS"):
        assert proxy["environment"][name] == web[name], name
    assert web["FORWARDED_ALLOW_IPS"] == "*"


def _compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if docker is None:
        return None
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True)
    return [docker, "compose"] if probe.returncode == 0 else None


def test_docker_compose_config_accepts_the_file() -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("the docker compose CLI is not installed: the file is checked by parsing above")
    env = {**os.environ, "SECRET_KEY": "x" * 50, "POSTGRES_PASSWORD": "pw"}
    args = [*cli, "-f", str(COMPOSE), "--profile", "s3", "--profile", "gpu", "config", "--quiet"]
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    env.pop("SECRET_KEY")
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode != 0 and "SECRET_KEY is required" in result.stderr


# --- image ----------------------------------------------------------------------
# No Docker engine here: the image's entrypoint runs on the host's interpreter,
# with the environment the Dockerfile and the compose file give the container.


def image_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = production_env(tmp_path, **extra)
    # `python` and `gunicorn` on PATH are this virtual environment's, as the image's are its own.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


def http_request(url: str, headers: dict[str, str], json_body: dict[str, Any] | None = None) -> tuple[int, str, bytes]:
    """GET, or POST ``json_body``; the status, Content-Type and body."""
    data = None if json_body is None else json.dumps(json_body).encode()
    if data is not None:
        headers = {**headers, "Content-Type": "application/json"}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=30) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


def test_the_web_role_serves_the_api_and_the_static_files_collected_at_build(tmp_path: Path) -> None:
    port = free_port()
    env = image_env(tmp_path, PORT=str(port), ALLOWED_HOSTS="127.0.0.1", WEB_WORKERS="1")
    # What the Dockerfile runs at build time, into the STATIC_ROOT it sets.
    collected = manage(env, "collectstatic", "--noinput", "--verbosity", "0")
    assert collected.returncode == 0, collected.stderr
    log_path = tmp_path / "web.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([str(ENTRYPOINT), "web"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    # Behind the TLS proxy of a deployment (PRODUCTION redirects plain HTTP).
    https = {"X-Forwarded-Proto": "https"}
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, log_path.read_text()
            try:
                if http_request(f"{url}/api/v1/health", {})[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.25)
        # Readiness over plain HTTP too (no redirect to HTTPS), as the container's health
        # check asks it: no worker runs here, so not ready, and it says why.
        status, content_type, body = http_request(f"{url}/api/v1/health/ready", {})
        assert (status, content_type, json.loads(body)["status"]) == (503, "application/json", "unavailable")
        # Migrated: a user can register.
        account = {"username": "imaged", "password": "Image-Passw0rd!"}
        status, _, body = http_request(f"{url}/api/v1/user/register", https, account)
        assert status == 200, body
        status, content_type, _ = http_request(f"{url}/static/admin/css/base.css", https)
        assert (status, content_type.split(";")[0]) == (200, "text/css")
        status, _, _ = http_request(f"{url}/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js", https)
        assert status == 200
        # The gunicorn configuration of `manage.py serve`: refusals in one line of text.
        status, content_type, body = http_request(f"{url}/api/v1/health?q={'a' * 9000}", https)
        assert (status, content_type) == (400, "text/plain; charset=utf-8") and b"\n" not in body
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_the_converter_role_runs_a_worker_on_the_conversion_queue_alone_at_a_lower_priority(tmp_path: Path) -> None:
    queue = f"test-converter-{secrets.token_hex(6)}"
    env = image_env(tmp_path, REDIS_URL=REDIS_URL, CONVERSION_QUEUE=queue, CONVERSION_WORKER_CONCURRENCY="1")
    log_path = tmp_path / "converter.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(ENTRYPOINT), "converter"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 90
        while " ready." not in log_path.read_text(errors="replace"):
            assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.25)
        log = log_path.read_text()
        # Its queues: the conversion queue and nothing else.
        assert re.findall(r"\.> (\S+) +exchange=", log) == [queue]
        (pool,) = [pid for pid in descendants(process.pid) if int(_stat(pid)[1]) == process.pid]
        base = int(_stat(process.pid)[16])
        assert int(_stat(pool)[16]) == max(base, 10)
        # No model is loaded where no transcription runs (a transcription worker's pool
        # loads its default model within a second or two of being ready).
        time.sleep(3)
        assert "Loaded model" not in log_path.read_text()
    finally:
        process.terminate()
        process.wait(timeout=30)
        redis_queues_delete(REDIS_URL, [queue])


def _stat(pid: int) -> list[str]:
    # /proc/PID/stat after the command name: [1] is the parent, [16] the nice value.
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2 :].split()


def test_the_manage_role_runs_management_commands(tmp_path: Path) -> None:
    env = image_env(tmp_path, DJANGO_SUPERUSER_PASSWORD="Operat0r-Passw0rd!")
    for command in (["migrate", "--noinput"], ["createsuperuser", "--noinput", "--username", "operator"]):
        result = subprocess.run(
            [str(ENTRYPOINT), "manage", *command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
    with sqlite3.connect(tmp_path / "data" / "db.sqlite3") as db:
        rows = db.execute("SELECT is_admin, is_superuser FROM accounts_user WHERE username = 'operator'").fetchall()
    assert rows == [(1, 1)]


def test_the_migrate_role_migrates_and_exits(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(ENTRYPOINT), "migrate"], cwd=ROOT, env=image_env(tmp_path), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(tmp_path / "data" / "db.sqlite3") as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"accounts_user", "health_workerheartbeat"} <= tables


def test_dockerignore_keeps_local_state_out_of_the_image() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "var", ".env"} <= ignored
