"""`make run` talks to Redis when one answers, and falls back to an embedded broker otherwise."""

from __future__ import annotations

import logging
import socket
import uuid

import pytest
from django.conf import settings
from kombu import Connection

from whisper_site.broker import EMBEDDED_BROKER_URL, broker_url_choose, redis_answers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_redis_on_this_machine_is_chosen_and_carries_messages() -> None:
    url = broker_url_choose(settings.REDIS_URL)
    assert url == settings.REDIS_URL
    # Round-trip a message through the chosen broker: it really is Redis.
    queue = f"probe-{uuid.uuid4().hex}"
    with Connection(url) as conn:
        simple = conn.SimpleQueue(queue)
        simple.put({"hello": "redis"})
        message = simple.get(timeout=5)
        assert message.payload == {"hello": "redis"}
        message.ack()
        simple.queue.delete()
        simple.close()


def test_no_redis_falls_back_with_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    assert not redis_answers(dead, timeout=0.5)
    with caplog.at_level(logging.WARNING, logger="whisper_site.broker"):
        assert broker_url_choose(dead) == EMBEDDED_BROKER_URL
    lines = [record for record in caplog.records if record.name == "whisper_site.broker"]
    assert len(lines) == 1 and "does not answer" in lines[0].getMessage()


def test_garbage_url_is_not_redis() -> None:
    assert not redis_answers("not-a-url")
