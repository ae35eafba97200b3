"""The embedded SECRET_KEY and ``ALLOWED_HOSTS=*`` serve loopback only.

Settings are loaded in fresh processes, with the environment a user would
give them: ``BIND_HOST`` is what ``manage.py serve`` and the image's web role
export.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from whisper_site.bind_host import EMBEDDED_SECRET_KEY, bind_host_is_loopback

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "deploy" / "entrypoint.sh"
SHOW_SETTINGS = (
    "import django; django.setup(); from django.conf import settings; "
    "print(settings.SECRET_KEY); print(','.join(settings.ALLOWED_HOSTS))"
)


def plain_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The test runner's environment without any of the settings under test."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"SECRET_KEY", "ALLOWED_HOSTS", "PRODUCTION", "BIND_HOST", "HOST", "DATABASE_URL"}
    }
    env.update(DJANGO_SETTINGS_MODULE="whisper_site.settings", DATA_DIR=str(tmp_path / "data"))
    env.update(extra)
    return env


def settings_of(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SHOW_SETTINGS], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def refusal_line(host: str) -> str:
    return (
        f"django.core.exceptions.ImproperlyConfigured: SECRET_KEY is not set and BIND_HOST={host} is not loopback: "
        "set SECRET_KEY, or bind to 127.0.0.1 for local use"
    )


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.1:8000", True),
        ("127.1.2.3", True),
        ("localhost", True),
        ("LOCALHOST:8000", True),
        ("::1", True),
        ("[::1]:8000", True),
        ("0.0.0.0", False),
        ("0.0.0.0:8000", False),
        ("::", False),
        ("[::]:8000", False),
        ("10.0.0.5", False),
        ("api.example.com", False),
        ("unix:/run/whisper.sock", False),
        ("", False),
    ],
)
def test_what_counts_as_loopback(host: str, loopback: bool) -> None:
    assert bind_host_is_loopback(host) is loopback


@pytest.mark.parametrize("host", ["0.0.0.0", "[::]:8000"])
def test_off_loopback_without_secret_key_refuses_to_start(tmp_path: Path, host: str) -> None:
    result = settings_of(plain_env(tmp_path, BIND_HOST=host))
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == refusal_line(host)


@pytest.mark.parametrize("host", [None, "127.0.0.1"])
def test_loopback_starts_on_the_embedded_defaults(tmp_path: Path, host: str | None) -> None:
    env = plain_env(tmp_path) if host is None else plain_env(tmp_path, BIND_HOST=host)
    result = settings_of(env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [EMBEDDED_SECRET_KEY, "*"]


def test_off_loopback_with_a_secret_key_serves_local_names_unless_told(tmp_path: Path) -> None:
    env = plain_env(tmp_path, BIND_HOST="0.0.0.0", SECRET_KEY="k" * 60)
    result = settings_of(env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["k" * 60, "localhost,127.0.0.1"]
    result = settings_of({**env, "ALLOWED_HOSTS": "api.example.com"})
    assert result.stdout.split() == ["k" * 60, "api.example.com"]


def test_serve_off_loopback_refuses_before_starting_anything(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = plain_env(tmp_path, CELERY_BROKER_URL="filesystem://")
    serve = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "serve", "--host", "0.0.0.0", "--port", str(port), "--web-workers", "1"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _, stderr = serve.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        # It started its servers: SIGTERM makes serve stop them before it exits.
        serve.send_signal(signal.SIGTERM)
        serve.communicate(timeout=60)
        pytest.fail("serve started off loopback on the embedded SECRET_KEY")
    assert serve.returncode == 1
    assert stderr.strip() == "CommandError: " + refusal_line("0.0.0.0").split(": ", 1)[1]
    # Nothing was migrated or installed.
    assert not (tmp_path / "data" / "db.sqlite3").exists()
    assert not (tmp_path / "data" / "models").exists()


def fake_bin(tmp_path: Path, *, real_python: bool) -> Path:
    """``python`` (the test's interpreter, or a stub) and a ``gunicorn`` stub that says how it was started."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    python = f'exec "{sys.executable}" "$@"' if real_python else "exit 0"
    (bin_dir / "python").write_text(f"#!/bin/sh\n{python}\n")
    (bin_dir / "gunicorn").write_text('#!/bin/sh\necho "gunicorn BIND_HOST=$BIND_HOST $*"\n')
    for stub in bin_dir.iterdir():
        stub.chmod(0o755)
    return bin_dir


def entrypoint_web(env: dict[str, str], bin_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**env, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run([str(ENTRYPOINT), "web"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_image_web_role_without_secret_key_refuses_before_migrating(tmp_path: Path) -> None:
    # A plain `docker run` of the image: the web role, no SECRET_KEY, no PRODUCTION.
    result = entrypoint_web(plain_env(tmp_path), fake_bin(tmp_path, real_python=True))
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == refusal_line("0.0.0.0")
    assert "gunicorn" not in result.stdout
    assert not (tmp_path / "data" / "db.sqlite3").exists()


@pytest.mark.parametrize(("host", "bind"), [(None, "0.0.0.0:8000"), ("127.0.0.1", "127.0.0.1:8000")])
def test_image_web_role_binds_where_it_says(tmp_path: Path, host: str | None, bind: str) -> None:
    env = plain_env(tmp_path, PORT="8000")
    if host is not None:
        env["BIND_HOST"] = host
    result = entrypoint_web(env, fake_bin(tmp_path, real_python=False))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(
        f"gunicorn BIND_HOST={bind.rsplit(':', 1)[0]} whisper_site.wsgi:application --bind {bind} "
        "--config python:whisper_site.gunicorn_conf "
    )
