"""OpenAI's audio API under /api/v1, in process: fields, errors, the wait, and answers from stored jobs.

Jobs run eagerly as in the other tests. The tests whose job must run use a transactional
database: the upload's conversion and the job's message are sent once their transaction
commits, which the test-wrapping transaction of the others never does (so there a job
stays pending: the 504 test needs exactly that).
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from accounts.models import User
from files.models import File
from tests.conftest import make_user
from tests.transcriptions.conftest import DATA_DIR, JFK_REFERENCE, word_error_rate
from transcriptions.engine.language_names import LANGUAGE_NAMES, language_name
from transcriptions.models import Transcription
from transcriptions.openai.errors import failed_job_error
from transcriptions.openai.responses import openai_transcription_response, verbose_json
from transcriptions.openai.services import AudioRequest

TRANSCRIPTIONS = "/api/v1/audio/transcriptions"
TRANSLATIONS = "/api/v1/audio/translations"
JFK = DATA_DIR / "jfk.flac"


def audio(path: Path = JFK, name: str | None = None) -> io.BytesIO:
    upload = io.BytesIO(path.read_bytes())
    upload.name = name or path.name
    return upload


def post(client: APIClient, fields: dict[str, Any], path: str = TRANSCRIPTIONS, **extra: Any) -> Any:
    body = {"file": audio(), "model": "ggml-tiny.en", **fields}
    body = {name: value for name, value in body.items() if value is not None}
    return client.post(path, body, format="multipart", **extra)


def openai_error(response: Any, status: int) -> dict[str, Any]:
    """The error object of ``response``, after checking that it is one with ``status``."""
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json", response.content
    body = json.loads(response.content)
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


def balance(user: User) -> int:
    user.refresh_from_db()
    return user.token_balance


@pytest.fixture
def key_client(client_key: APIClient, installed_models: Path) -> APIClient:
    return client_key


# --- Models ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_models_are_the_installed_ones_and_whisper_1(key_client: APIClient) -> None:
    response = key_client.get("/api/v1/models")
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    assert [model["id"] for model in body["data"]] == ["ggml-base", "ggml-tiny.en", "whisper-1"]
    for model in body["data"]:
        assert set(model) == {"id", "object", "created", "owned_by"}
        assert model["object"] == "model" and isinstance(model["created"], int) and model["created"] > 0
    default = next(model for model in body["data"] if model["id"] == settings.DEFAULT_MODEL)
    assert body["data"][-1]["created"] == default["created"]

    for name in ("ggml-tiny.en", "whisper-1", "ggml-base"):
        response = key_client.get(f"/api/v1/models/{name}")
        assert response.status_code == 200
        assert response.json()["id"] == name
    error = openai_error(key_client.get("/api/v1/models/ggml-base.en"), 404)
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert "ggml-base, ggml-tiny.en, whisper-1" in error["message"]


# --- Authentication and errors outside the views --------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "path"),
    [("post", TRANSCRIPTIONS), ("post", TRANSLATIONS), ("get", "/api/v1/models"), ("get", "/api/v1/models/whisper-1")],
)
def test_every_route_wants_an_api_key_as_an_openai_error(
    anon: APIClient, client_session: APIClient, method: str, path: str
) -> None:
    error = openai_error(getattr(anon, method)(path), 401)
    assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_api_key")
    assert error["message"].startswith("Missing API key")
    bad = APIClient()
    bad.credentials(HTTP_AUTHORIZATION="Bearer " + "0" * 32)
    response = getattr(bad, method)(path)
    error = openai_error(response, 401)
    assert (error["message"], error["code"]) == ("Invalid API key", "invalid_api_key")
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    # A session is not an OpenAI credential.
    assert openai_error(getattr(client_session, method)(path), 401)["code"] == "invalid_api_key"


@pytest.mark.django_db
def test_unknown_paths_and_methods_under_the_openai_routes_are_openai_errors(key_client: APIClient) -> None:
    for path in ("/api/v1/audio/speech", "/api/v1/audio", "/api/v1/models/ggml-base/extra"):
        error = openai_error(key_client.post(path), 404)
        assert error["message"] == f"Invalid URL (POST {path})"
    error = openai_error(key_client.get(TRANSCRIPTIONS), 405)
    assert error["message"] == "Method not allowed: GET"
    openai_error(key_client.delete("/api/v1/models/whisper-1"), 405)
    # Everywhere else errors stay one line of plain text.
    response = key_client.get("/api/v1/nothing-here")
    assert (response.status_code, response.content) == (404, b"Not found")
    assert response["Content-Type"] == "text/plain; charset=utf-8"


@pytest.mark.django_db
def test_a_body_refused_before_the_view_is_an_openai_error_there_only(key_client: APIClient) -> None:
    big = b'{"a": "' + b"x" * settings.DATA_UPLOAD_MAX_MEMORY_SIZE + b'"}'
    error = openai_error(key_client.post(TRANSCRIPTIONS, big, content_type="application/json"), 413)
    assert error["message"] == "Request body too large"
    response = key_client.post("/api/v1/transcribe", big, content_type="application/json")
    assert (response.status_code, response.content) == (413, b"Request body too large")


# --- Fields ----------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fields", "param", "message"),
    [
        ({"file": None}, "file", "Missing required parameter: 'file'"),
        ({"model": None}, "model", "Missing required parameter: 'model'"),
        ({"model": ""}, "model", "Missing required parameter: 'model'"),
        (
            {"model": "ggml-base.en"},
            "model",
            "Invalid model: ggml-base.en. Must be one of: ggml-base, ggml-tiny.en, whisper-1",
        ),
        (
            {"response_format": "txt"},
            "response_format",
            "Invalid response_format: txt. Must be one of: json, text, srt, verbose_json, vtt, diarized_json",
        ),
        ({"temperature": "2"}, "temperature", "Invalid temperature: must be a number from 0 to 1"),
        ({"temperature": "warm"}, "temperature", "Invalid temperature: must be a number from 0 to 1"),
        ({"temperature": "nan"}, "temperature", "Invalid temperature: must be a number from 0 to 1"),
        (
            {"timestamp_granularities[]": "word"},
            "timestamp_granularities[]",
            "response_format must be verbose_json when timestamp_granularities[] is given",
        ),
        (
            {"timestamp_granularities[]": "char", "response_format": "verbose_json"},
            "timestamp_granularities[]",
            "Invalid timestamp_granularities[]: char. Must be segment or word",
        ),
        ({"language": "xx"}, "language", "Invalid language: xx"),
        ({"language": "de"}, "language", "Invalid language: de. Model ggml-tiny.en supports only: en"),
        ({"prompt": "x" * 1001}, "prompt", "Invalid prompt: at most 1000 characters"),
    ],
)
def test_bad_fields_are_400s_naming_the_field_and_store_nothing(
    key_client: APIClient, user: User, fields: dict[str, Any], param: str, message: str
) -> None:
    error = openai_error(post(key_client, fields), 400)
    assert (error["type"], error["param"], error["message"]) == ("invalid_request_error", param, message)
    assert not File.objects.exists() and not Transcription.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("model", ["ggml-tiny.en", "whisper-1"])
def test_translating_needs_a_multilingual_model(key_client: APIClient, model: str) -> None:
    error = openai_error(post(key_client, {"model": model}, path=TRANSLATIONS), 400)
    assert error["param"] == "model"
    assert error["message"] == "Invalid task: translate. Model ggml-tiny.en is English-only"
    assert not File.objects.exists()


@pytest.mark.django_db
def test_the_body_must_be_one_multipart_file(key_client: APIClient) -> None:
    error = openai_error(key_client.post(TRANSCRIPTIONS, {"model": "whisper-1"}, format="json"), 415)
    assert error["message"] == "Unsupported Content-Type: send multipart/form-data"
    response = key_client.post(
        TRANSCRIPTIONS, {"file": [audio(), audio(name="again.flac")], "model": "whisper-1"}, format="multipart"
    )
    error = openai_error(response, 400)
    assert error["message"] == "Only one file per request: send one part named 'file'"


@pytest.mark.django_db
def test_an_upload_the_files_app_refuses_is_a_400_on_file(key_client: APIClient, tmp_path: Path) -> None:
    text = tmp_path / "notes.mp3"
    text.write_text("not audio at all\n" * 100)
    error = openai_error(key_client.post(TRANSCRIPTIONS, {"file": audio(text), "model": "whisper-1"}), 400)
    assert (error["param"], error["code"]) == ("file", "unsupported_content_type")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    error = openai_error(key_client.post(TRANSCRIPTIONS, {"file": audio(empty), "model": "whisper-1"}), 400)
    assert (error["param"], error["code"]) == ("file", "empty_file")
    assert not File.objects.exists()


@pytest.mark.django_db
def test_an_upload_over_the_limit_is_a_413(key_client: APIClient, settings: Any) -> None:
    settings.UPLOAD_MAX_FILE_BYTES = 1000
    error = openai_error(post(key_client, {}), 413)
    assert (error["param"], error["message"]) == ("file", "File too large. Maximum size is 1000 bytes")


# --- The wait ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_job_not_done_in_time_is_a_504_naming_it_and_goes_on(
    key_client: APIClient, anon: APIClient, user: User, settings: Any
) -> None:
    # In the test's transaction nothing is sent to the queue: the job stays pending.
    settings.OPENAI_WAIT_SECONDS = 0.3
    before = balance(user)
    response = post(key_client, {"response_format": "verbose_json"})
    error = openai_error(response, 504)
    assert response["x-should-retry"] == "false"
    job = Transcription.objects.get()
    assert job.id.hex in error["message"] and f"GET /api/v1/transcribe/{job.id.hex}" in error["message"]
    assert error["type"] == "server_error"
    # The job is an ordinary one, visible in the native API, and still waiting.
    shown = anon.get(f"/api/v1/transcribe/{job.id.hex}").json()
    assert (shown["status"], shown["format"], shown["model"]) == ("pending", "verbose_json", "ggml-tiny.en")
    assert key_client.get("/api/v1/file").json()["files"][0]["uuid"] == job.file_id.hex
    assert balance(user) == before


# --- Whole requests, with their jobs run --------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_every_format_is_one_charged_job_of_one_stored_file(installed_models: Path) -> None:
    user, _ = make_user("openai_user")
    from accounts import services as account_services

    _, key = account_services.api_key_create(user=user, name="openai")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    cost = math.ceil(11.0)
    start = balance(user)

    response = post(client, {"model": "whisper-1", "stream": "true", "include[]": "logprobs"})
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"text"} and word_error_rate(JFK_REFERENCE, body["text"]) < 0.2
    assert balance(user) == start - cost

    response = post(
        client, {"response_format": "verbose_json", "timestamp_granularities[]": ["word", "segment"], "language": "en"}
    )
    assert response.status_code == 200, response.content
    verbose = response.json()
    assert set(verbose) == {"task", "language", "duration", "text", "segments", "words"}
    assert (verbose["task"], verbose["language"], verbose["duration"]) == ("transcribe", "english", 11.0)
    assert [segment["id"] for segment in verbose["segments"]] == list(range(len(verbose["segments"])))
    for segment in verbose["segments"]:
        assert {"seek", "start", "end", "text", "tokens", "temperature", "avg_logprob"} <= set(segment)
    assert all(set(word) == {"word", "start", "end"} for word in verbose["words"])
    assert " ".join(word["word"] for word in verbose["words"]).split() == verbose["text"].split()
    assert balance(user) == start - 2 * cost

    for fmt, head in (("text", "And so"), ("srt", "1\n00:00:00,000 --> "), ("vtt", "WEBVTT\n\n00:00:00.000 --> ")):
        response = post(client, {"response_format": fmt})
        assert response.status_code == 200, response.content
        assert response["Content-Type"] == "text/plain; charset=utf-8"
        text = response.content.decode()
        assert text.lstrip().startswith(head) and text.endswith("\n"), text

    # One stored file (the same bytes each time), five ordinary jobs, each charged once.
    assert File.objects.filter(owner=user).count() == 1
    jobs = Transcription.objects.filter(owner=user)
    assert sorted(job.format for job in jobs) == ["srt", "verbose_json", "verbose_json", "verbose_json", "vtt"]
    assert all(job.status == "completed" and job.cost == cost for job in jobs)
    assert balance(user) == start - 5 * cost
    word_jobs = [job for job in jobs if job.word_timestamps]
    assert len(word_jobs) == 1 and word_jobs[0].language == "en"


@pytest.mark.django_db(transaction=True)
def test_a_job_that_fails_for_want_of_tokens_is_a_429_insufficient_quota(installed_models: Path) -> None:
    user, _ = make_user("poor_user", token_balance=3)
    from accounts import services as account_services

    _, key = account_services.api_key_create(user=user, name="openai")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    response = post(client, {})
    error = openai_error(response, 429)
    assert (error["type"], error["code"]) == ("insufficient_quota", "insufficient_quota")
    assert error["message"].startswith("Insufficient token balance. Required: 11, Available: 3")
    assert response["x-should-retry"] == "false"
    assert balance(user) == 3
    assert Transcription.objects.get(owner=user).status == "failed"


# --- Answers from stored jobs ------------------------------------------------------------


def stored_job(data: dict[str, Any], **fields: Any) -> Transcription:
    file = File(duration=11.0)
    return Transcription(file=file, format="verbose_json", status="completed", data=data, **fields)


OLD_DATA = {"text": "Hello there.", "segments": [{"start": 0.0, "end": 1.5, "text": "Hello there."}], "language": "en"}
NEW_SEGMENT = {
    "id": 0,
    "seek": 0,
    "start": 0.0,
    "end": 1.5,
    "text": "Hello there.",
    "tokens": [50364, 2425],
    "temperature": 0.2,
    "avg_logprob": -0.3,
    "compression_ratio": 0.9,
    "no_speech_prob": 0.05,
    "language": "de",
    "words": [
        {"word": "Hello", "start": 0.0, "end": 0.6, "probability": 0.9},
        {"word": "there.", "start": 0.7, "end": 1.5, "probability": 0.8},
    ],
}
NEW_DATA = {"text": "Hello there.", "segments": [NEW_SEGMENT], "language": "de", "duration": 1.6, "task": "translate"}


def test_verbose_json_reads_the_stored_fields() -> None:
    body = verbose_json(stored_job(NEW_DATA), AudioRequest(model="whisper-1", granularities=("segment", "word")))
    assert (body["task"], body["language"], body["duration"], body["text"]) == (
        "translate",
        "german",
        1.6,
        "Hello there.",
    )
    (segment,) = body["segments"]
    assert segment == {key: value for key, value in NEW_SEGMENT.items() if key not in ("language", "words")}
    assert body["words"] == [{"word": "Hello", "start": 0.0, "end": 0.6}, {"word": "there.", "start": 0.7, "end": 1.5}]
    # Only words asked: no segments, as OpenAI answers.
    words_only = verbose_json(stored_job(NEW_DATA), AudioRequest(model="whisper-1", granularities=("word",)))
    assert "segments" not in words_only and len(words_only["words"]) == 2
    # Nothing asked: segments, no words.
    plain = verbose_json(stored_job(NEW_DATA), AudioRequest(model="whisper-1"))
    assert "words" not in plain and len(plain["segments"]) == 1


def test_verbose_json_of_data_stored_before_the_new_fields() -> None:
    body = verbose_json(stored_job(OLD_DATA, task="transcribe"), AudioRequest(model="whisper-1"))
    assert (body["task"], body["language"], body["duration"]) == ("transcribe", "english", 11.0)
    (segment,) = body["segments"]
    assert (segment["id"], segment["seek"], segment["tokens"], segment["text"]) == (0, 0, [], "Hello there.")


def test_json_and_text_answers_read_the_stored_text() -> None:
    job = stored_job(NEW_DATA)
    response = openai_transcription_response(job, AudioRequest(model="whisper-1"))
    assert json.loads(response.content) == {"text": "Hello there."}
    response = openai_transcription_response(job, AudioRequest(model="whisper-1", response_format="text"))
    assert (response.content, response["Content-Type"]) == (b"Hello there.\n", "text/plain; charset=utf-8")


@pytest.mark.parametrize(
    ("error", "status", "param"),
    [
        ("Insufficient token balance. Required: 5, Available: 1", 429, None),
        ("File conversion failed: no audio stream", 400, "file"),
        ("Transcription failed: the file's audio could not be decoded", 400, "file"),
        ("Invalid language: xx", 400, "language"),
        ("Transcription timed out after 150 seconds", 500, None),
        ("Transcription failed: internal error", 500, None),
    ],
)
def test_a_failed_jobs_error_keeps_its_text_with_openais_status(error: str, status: int, param: str | None) -> None:
    job = Transcription(error=error, status="failed")
    mapped = failed_job_error(job)
    assert (mapped.status, mapped.param) == (status, param)
    assert mapped.message == f"{error} (transcription {job.id.hex})"


def test_every_whisper_language_has_its_english_name() -> None:
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    assert set(LANGUAGE_NAMES) == set(_LANGUAGE_CODES)
    assert (language_name("en"), language_name("de"), language_name("yue")) == ("english", "german", "cantonese")
    assert language_name(None) is None
