"""The running API against its own OpenAPI document: schemathesis on every operation, with every check.

The server is the session's ``served`` (``manage.py serve`` as ``make run``
starts it). The fuzzing user is an admin, so that the admin operations run
too, and owns a converted upload of tests/data/jfk.flac and a transcription of
it, so that schemathesis finds real ids in the listings and follows them.
schemathesis runs as its CLI (``python -m schemathesis.cli run``); its JSON
report decides the test, and its text output, with a curl line that
reproduces each failure, is the assertion message.

Bounded by examples, not by time: ``MAX_EXAMPLES`` per operation and phase,
two client workers, a fixed seed (the same cases every run; pass another with
``SCHEMATHESIS_SEED`` to explore).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.site.conftest import DATA, Served

pytestmark = pytest.mark.served

HOOKS = Path(__file__).with_name("schemathesis_hooks.py")
# The operations where one check is off, each with its reason.
CONFIG = Path(__file__).with_name("schemathesis.toml")
PASSWORD = "Fuzz-Passw0rd-1!"
MAX_EXAMPLES = 25
SEED = os.environ.get("SCHEMATHESIS_SEED", "20261128")
RUN_TIMEOUT_SECONDS = 480


def fuzzing_user(served: Served) -> tuple[str, str]:
    """An admin's session id and API key, with an uploaded file and a transcription of it."""
    created = served.manage("createsuperuser", "--noinput", "--username", "fuzzer", DJANGO_SUPERUSER_PASSWORD=PASSWORD)
    assert created.returncode == 0, created.stderr
    status, raw = served.request("POST", "/api/v1/user/login", {"username": "fuzzer", "password": PASSWORD})
    assert status == 200, raw
    session_id = json.loads(raw)["session_id"]
    status, raw = served.request("POST", "/api/v1/user/token", {"name": "fuzzing"}, auth=f"Basic {session_id}")
    assert status == 200, raw
    api_key = json.loads(raw)["token"]

    file_id = served.upload(DATA / "jfk.flac", api_key)
    deadline = time.monotonic() + 120
    while served.request("GET", f"/api/v1/file/{file_id}")[0] != 200:
        assert time.monotonic() < deadline, "the upload was not converted"
        time.sleep(0.5)
    status, raw = served.request("POST", "/api/v1/transcribe", {"uuid": file_id}, auth=f"Bearer {api_key}")
    assert status == 200, raw
    return session_id, api_key


def test_every_operation_answers_as_the_schema_says(served: Served, tmp_path: Path) -> None:
    session_id, api_key = fuzzing_user(served)
    reports = tmp_path / "reports"
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG),
        "run", f"{served.url}/api/v1/schema",
        # Every operation, every phase (examples, coverage, fuzzing, stateful), and every
        # check: all are on by default, and schemathesis.toml turns one off for six
        # operations (a `--checks all` here would override it).
        "--max-examples", str(MAX_EXAMPLES),
        # One worker: with two threads, Python 3.11's ast.parse (which Hypothesis calls to
        # describe filters) can fail with "AST constructor recursion depth mismatch".
        "--workers", "1",
        "--seed", SEED,
        # No example database: every run starts from the seed alone.
        "--generation-database", "none",
        "--request-timeout", "60",
        "--no-color",
        "--report", "json,ndjson",
        "--report-dir", str(reports),
    ]  # fmt: skip
    env = {
        **os.environ,
        # The API key as the Authorization header, renewed when an operation revokes it (see the hooks).
        "SCHEMATHESIS_HOOKS": str(HOOKS),
        "FUZZ_BASE_URL": f"{served.url}/api/v1",
        "FUZZ_API_KEY": api_key,
        "FUZZ_SESSION_ID": session_id,
    }
    # In a folder of its own: schemathesis keeps a cache beside it.
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS)
    output = result.stdout + result.stderr
    report_paths = sorted(reports.glob("json-*.json"))
    assert report_paths, output[-20000:]
    report = json.loads(report_paths[0].read_text())

    assert report["complete"] and report["stop_reason"] == "completed", output[-20000:]
    assert report["operations"]["tested"] == report["operations"]["total"] > 0, report["operations"]
    failures = [f"{failure['code']} {failure['title']}: {failure['operations']}" for failure in report["failures"]]
    assert (failures, report["errors"]) == ([], []), "\n".join(failures) + "\n\n" + output[-20000:]
    assert result.returncode == 0, output[-20000:]
