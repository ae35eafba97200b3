"""What the end-to-end benchmarks share: the installed models, a free port, JSON calls, uploads."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def installed_models() -> Path:
    """``MODELS_DIR`` (default ./var/models) with the bundled models installed, as ``make run`` installs them."""
    env_models = os.environ.get("MODELS_DIR")
    models_dir = Path(env_models) if env_models else ROOT / "var" / "models"
    subprocess.run(
        [sys.executable, "manage.py", "models", "--install", "--verbosity", "0"],
        cwd=ROOT, env={**os.environ, "MODELS_DIR": str(models_dir)}, check=True,
    )  # fmt: skip
    return models_dir


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def call(
    method: str,
    url: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 300,
) -> Any:
    """One request; its JSON answer (None for an empty body). An error status ends the benchmark."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            return json.loads(raw) if raw else None
    except urllib.error.HTTPError as error:
        raise SystemExit(f"{method} {url}: {error.code} {error.read().decode()[:300]}") from None


def multipart(path: Path) -> tuple[bytes, str]:
    """A POST /file body holding ``path`` as its one part, and its Content-Type."""
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return head + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"
