"""A short load: 10 users at once registering, uploading and transcribing against ``make run``'s server.

The engine is bench/load.py's (its full form: 50 users for a few minutes, with figures).
Here it runs bounded (10 users, 25 s of load, 20 s to finish or cancel what is in hand) on
a server of its own, and checks what must hold under any load, never timings: no 5xx, no
request lost, every job finished, and each balance exactly 1000 minus the costs of the
user's completed jobs, by the API and in the database.
"""

from __future__ import annotations

import importlib.util
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from django.conf import settings

from tests.conftest import redis_queues_delete
from tests.site.conftest import REDIS_URL, ROOT, Served, serve_start
from transcriptions.engine import install_bundled_models

pytestmark = pytest.mark.served

USERS = 10
LOAD_SECONDS = 25.0
DRAIN_SECONDS = 20.0


def bench_load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_load", ROOT / "bench" / "load.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up by name.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def loaded_server(tmp_path: Path) -> Iterator[tuple[Served, str]]:
    """``manage.py serve`` with queues of its own; every user registers from 127.0.0.1, so their limit is raised."""
    install_bundled_models(settings.MODELS_DIR)
    tag = uuid.uuid4().hex[:12]
    queues = (f"load-{tag}", f"load-conversions-{tag}", f"load-webhooks-{tag}")
    server = serve_start(
        tmp_path / "data",
        REDIS_URL=REDIS_URL,
        MODELS_DIR=str(settings.MODELS_DIR),
        CELERY_TASK_DEFAULT_QUEUE=queues[0],
        CONVERSION_QUEUE=queues[1],
        WEBHOOK_QUEUE=queues[2],
        REGISTRATIONS_PER_ADDRESS_PER_HOUR=str(4 * USERS),
    )
    try:
        yield server, queues[0]
    finally:
        server.stop()
        redis_queues_delete(REDIS_URL, queues)


def test_ten_users_at_once_get_no_server_error_and_exact_balances(loaded_server: tuple[Served, str]) -> None:
    served, queue = loaded_server
    report = bench_load().run_load(
        f"{served.url}/api/v1",
        users=USERS,
        seconds=LOAD_SECONDS,
        drain_seconds=DRAIN_SECONDS,
        database=served.data_dir / "db.sqlite3",
        log=lambda line: None,
    )
    summary = "\n".join(report.lines()) + "\n" + served.log()[-3000:]
    assert report.server_errors == 0, summary
    assert not report.errors and not report.unfinished_users, summary
    # Every answer a success, but a cancel that came after its job finished (409).
    refused = [(kind, status) for kind, status, _ in report.requests if status != 200]
    assert all((kind, status) == ("cancel", 409) for kind, status in refused), summary
    assert report.balance_mismatches == [], summary
    assert report.jobs["completed"] > 0, summary
    assert set(report.jobs) <= {"completed", "failed", "cancelled"}, summary
    assert report.jobs["failed"] == 0, summary
