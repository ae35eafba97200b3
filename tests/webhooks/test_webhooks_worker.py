"""The image's ``webhooks`` role: a Celery worker on WEBHOOK_QUEUE alone (Redis database 13)."""

from __future__ import annotations

import re
import secrets
import subprocess
import time
from pathlib import Path

from tests.admin_api.test_production import ENTRYPOINT, ROOT, image_env
from tests.conftest import redis_queues_delete

REDIS_URL = "redis://127.0.0.1:6379/13"


def test_the_webhooks_role_runs_a_worker_on_the_webhook_queue_alone(tmp_path: Path) -> None:
    queue = f"test-webhooks-{secrets.token_hex(6)}"
    env = image_env(tmp_path, REDIS_URL=REDIS_URL, WEBHOOK_QUEUE=queue, WEBHOOK_WORKER_CONCURRENCY="1")
    log_path = tmp_path / "webhooks.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(ENTRYPOINT), "webhooks"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 90
        while " ready." not in log_path.read_text(errors="replace"):
            assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.25)
        log = log_path.read_text()
        assert re.findall(r"\.> (\S+) +exchange=", log) == [queue]
        assert "webhooks.deliver" in log
    finally:
        process.terminate()
        process.wait(timeout=30)
        redis_queues_delete(REDIS_URL, [queue])
