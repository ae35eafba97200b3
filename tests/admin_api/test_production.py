"""The production deployment: compose file, image recipe and production settings.

No Docker engine is needed: the compose file is parsed and checked here, and
``docker compose config`` runs too where the compose CLI exists. The
production settings are checked by Django's own ``check --deploy`` in a fresh
process, with the environment the compose file gives the containers.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
APP_SERVICES = ("web", "worker", "beat", "worker-gpu")


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


def test_collectstatic_builds_what_whitenoise_serves(tmp_path: Path) -> None:
    # The image runs this at build time (Dockerfile).
    env = production_env(tmp_path)
    result = manage(env, "collectstatic", "--noinput", "--verbosity", "0")
    assert result.returncode == 0, result.stderr
    static = tmp_path / "static"
    assert (static / "admin" / "css" / "base.css").exists()
    assert any(static.glob("drf_spectacular_sidecar/**/swagger-ui-bundle.js")) or not _has_sidecar()


def _has_sidecar() -> bool:
    import importlib.util

    return importlib.util.find_spec("drf_spectacular_sidecar") is not None


# --- compose file ----------------------------------------------------------------


def test_compose_has_the_services_of_a_deployment(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"postgres", "redis", "web", "worker", "beat", "minio"} <= set(services)
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["redis"]["image"].startswith("redis:7")
    # A restarted Redis keeps its queue.
    assert services["redis"]["command"][-2:] == ["--appendonly", "yes"]
    assert services["web"]["command"] == ["web"]
    assert services["worker"]["command"] == ["worker"]
    assert services["beat"]["command"] == ["beat"]


def test_every_long_running_service_has_a_health_check(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("postgres", "redis", "web", "worker", "worker-gpu", "minio"):
        test = services[name]["healthcheck"]["test"]
        assert test and test[0] in {"CMD", "CMD-SHELL"}, name
    assert any("/api/v1/health" in part for part in services["web"]["healthcheck"]["test"])
    assert "inspect ping" in services["worker"]["healthcheck"]["test"][1]


def test_workers_scale(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        # A fixed name would make `--scale worker=N` fail.
        assert "container_name" not in service, name
    worker = compose["services"]["worker"]
    assert "ports" not in worker
    assert worker["depends_on"]["web"]["condition"] == "service_healthy"
    assert worker["depends_on"]["postgres"]["condition"] == "service_healthy"


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
    assert {"data", "postgres", "redis", "minio"} <= declared
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
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


def test_dockerfile_builds_a_non_root_image_with_static_files() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", dockerfile, re.M)
    assert "pip install -r requirements.txt" in dockerfile
    assert "collectstatic --noinput" in dockerfile
    users = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert users and users[-1] not in {"root", "0"}
    assert 'ENTRYPOINT ["/app/deploy/entrypoint.sh"]' in dockerfile


def test_entrypoint_roles() -> None:
    entrypoint = ROOT / "deploy" / "entrypoint.sh"
    assert os.access(entrypoint, os.X_OK)
    assert subprocess.run(["sh", "-n", str(entrypoint)]).returncode == 0
    text = entrypoint.read_text()
    web = text.split("web)", 1)[1].split(";;", 1)[0]
    worker = text.split("worker)", 1)[1].split(";;", 1)[0]
    # Only the web role migrates; both serve through exec (signals reach them).
    assert "migrate --noinput" in web and "migrate" not in worker
    assert "exec gunicorn whisper_site.wsgi:application" in web and "gthread" in web
    assert "exec celery -A whisper_site worker" in worker


def test_entrypoint_runs_management_commands(tmp_path: Path) -> None:
    # The "manage" role as the image runs it, here on the host's interpreter.
    entrypoint = ROOT / "deploy" / "entrypoint.sh"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # A wrapper, not a symlink: the virtual environment is found from the real path.
    wrapper = bin_dir / "python"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "DATA_DIR": str(tmp_path)}
    result = subprocess.run(
        [str(entrypoint), "manage", "grant_tokens", "--help"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "USERNAME AMOUNT" in result.stdout


def test_dockerignore_keeps_local_state_out_of_the_image() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "var", ".env"} <= ignored
