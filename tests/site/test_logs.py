"""Log lines: the JSON format of LOG_FORMAT=json and the ids job_log_context adds to it."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from whisper_site.logs import JsonLogFormatter, job_log_context

BASE_DIR = Path(__file__).resolve().parents[2]


@pytest.fixture
def json_log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLogFormatter())
    logger = logging.getLogger(f"tests.logs.{uuid.uuid4().hex}")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    yield logger, stream
    logger.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_record_with_job_ids_is_one_json_line(json_log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = json_log
    job, user = uuid.uuid4(), uuid.uuid4()
    context = job_log_context(job_id=job, batch_id="b-1", user_id=user)
    logger.warning("Transcription failed:\n%s", "timed out", extra={**context.extra, "attempt": 2})

    assert stream.getvalue().count("\n") == 1
    [entry] = lines(stream)
    assert entry["level"] == "WARNING"
    assert entry["logger"] == logger.name
    assert entry["message"] == "Transcription failed:\ntimed out"
    assert entry["job_id"] == job.hex and entry["batch_id"] == "b-1" and entry["user_id"] == user.hex
    assert "file_id" not in entry  # not given: left out, not null
    assert entry["attempt"] == 2
    stamp = dt.datetime.fromisoformat(str(entry["timestamp"]))
    assert stamp.utcoffset() == dt.timedelta(0)
    assert abs(dt.datetime.now(dt.UTC) - stamp) < dt.timedelta(minutes=1)
    # The record's own attributes are not repeated as fields.
    assert not {"args", "msg", "levelno", "pathname", "exc_info"} & entry.keys()


def test_an_exception_is_a_field_of_the_same_line(json_log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = json_log
    try:
        raise ValueError("the WAV is gone")
    except ValueError:
        logger.exception("Transcription failed", extra=job_log_context(file_id="f-1").extra)

    assert stream.getvalue().count("\n") == 1
    [entry] = lines(stream)
    assert entry["level"] == "ERROR" and entry["message"] == "Transcription failed"
    assert entry["file_id"] == "f-1"
    assert str(entry["exception"]).startswith("Traceback (most recent call last):")
    assert "ValueError: the WAV is gone" in str(entry["exception"])


def test_values_json_cannot_write_are_text_and_extras_never_replace_a_key(
    json_log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = json_log
    job = uuid.uuid4()
    logger.info("queued", extra={"job": job, "level": "not the level"})
    [entry] = lines(stream)
    assert entry["job"] == str(job)
    assert entry["level"] == "INFO"  # an extra does not replace one of the four keys


def test_log_format_json_switches_the_console_handler() -> None:
    # The real settings in a fresh process, as the web server and the workers load them.
    script = (
        "import django, logging; django.setup(); "
        "logging.getLogger('transcriptions.services').warning('claimed', extra={'job_id': 'abc'})"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "whisper_site.settings", "LOG_FORMAT": "json"}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=120, check=True
    )
    [line] = result.stderr.splitlines()
    entry = json.loads(line)
    assert entry["logger"] == "transcriptions.services" and entry["message"] == "claimed"
    assert entry["job_id"] == "abc"

    env["LOG_FORMAT"] = "xml"
    refused = subprocess.run([sys.executable, "-c", script], cwd=BASE_DIR, env=env, capture_output=True, text=True)
    assert refused.returncode != 0 and "LOG_FORMAT must be plain or json" in refused.stderr
