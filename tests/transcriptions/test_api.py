"""The transcription API in eager mode: validation, queueing, results, deletion, models."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.core.files.storage import default_storage
from django.urls import reverse
from rest_framework.test import APIClient

from accounts.models import User
from files.models import File
from files.signals import file_failed, file_ready
from tests.conftest import make_user
from tests.transcriptions.conftest import JFK_REFERENCE, MakeFile, Run, word_error_rate
from transcriptions.models import Transcription

pytestmark = pytest.mark.django_db

FORMATS_MESSAGE = "Must be one of: verbose_json, srt, vtt"
SRT_TIMING = re.compile(r"^\d\d:\d\d:\d\d,\d\d\d --> \d\d:\d\d:\d\d,\d\d\d$")
VTT_TIMING = re.compile(r"^\d\d:\d\d:\d\d\.\d\d\d --> \d\d:\d\d:\d\d\.\d\d\d$")


def text_of(response: Any) -> str:
    assert response["Content-Type"].startswith("text/plain"), response.content
    return response.content.decode()


# --- Validation ----------------------------------------------------------------------


def test_queueing_needs_authentication(anon: APIClient) -> None:
    response = anon.post("/api/v1/transcribe", {"uuid": "0" * 32}, format="json")
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({}, 400, "Missing file uuid"),
        ({"uuid": None}, 400, "Missing file uuid"),
        ({"uuid": ""}, 400, "Missing file uuid"),
        ({"uuid": "not-a-uuid"}, 400, "Invalid UUID format"),
        ({"uuid": 12345}, 400, "Invalid UUID format"),
        ({"uuid": "0" * 32}, 404, "File not found or access denied"),
        (
            {"uuid": "0" * 32, "model": "ggml-base.en"},
            400,
            "Invalid model: ggml-base.en. Must be one of: ggml-base, ggml-tiny.en",
        ),
        ({"uuid": "0" * 32, "model": 3}, 400, "Invalid model: 3. Must be one of: ggml-base, ggml-tiny.en"),
        ({"uuid": "0" * 32, "format": "txt"}, 400, f"Invalid format: txt. {FORMATS_MESSAGE}"),
        ({"uuid": "0" * 32, "format": ["srt", "txt"]}, 400, f"Invalid format: txt. {FORMATS_MESSAGE}"),
        ({"uuid": "0" * 32, "format": []}, 400, "At least one format must be specified"),
        ({"uuid": "0" * 32, "format": ""}, 400, "At least one format must be specified"),
        ({"uuid": "0" * 32, "format": 5}, 400, "Invalid format: must be a string or a list of strings"),
        ({"uuid": "0" * 32, "format": [1]}, 400, "Invalid format: must be a string or a list of strings"),
        ({"uuid": "0" * 32, "language": "xx"}, 400, "Invalid language: xx"),
        ({"uuid": "0" * 32, "language": 7}, 400, "Invalid language: 7"),
        ({"uuid": "0" * 32, "language": "de"}, 400, "Invalid language: de. Model ggml-tiny.en supports only: en"),
        ({"uuid": "0" * 32, "language": "de", "model": "ggml-base"}, 404, "File not found or access denied"),
        # The options beyond the reference.
        ({"uuid": "0" * 32, "formats": ["srt"]}, 400, "Unknown field: formats"),
        ({"uuid": "0" * 32, "temperature": 0.2}, 400, "Unknown field: temperature"),
        ({"uuid": "0" * 32, "timestamp_granularities": ["word"]}, 400, "Unknown field: timestamp_granularities"),
        ({"uuid": "0" * 32, "word_timestamps": "maybe"}, 400, "Invalid word_timestamps: must be true or false"),
        ({"uuid": "0" * 32, "word_timestamps": [True]}, 400, "Invalid word_timestamps: must be true or false"),
        ({"uuid": "0" * 32, "vad_filter": 2}, 400, "Invalid vad_filter: must be true or false"),
        ({"uuid": "0" * 32, "prompt": 5}, 400, "Invalid prompt: must be a string"),
        ({"uuid": "0" * 32, "prompt": "x" * 1001}, 400, "Invalid prompt: at most 1000 characters"),
        (
            {"uuid": "0" * 32, "task": "summarize"},
            400,
            "Invalid task: summarize. Must be one of: transcribe, translate",
        ),
        ({"uuid": "0" * 32, "task": None}, 400, "Invalid task: null. Must be one of: transcribe, translate"),
        ({"uuid": "0" * 32, "task": "translate"}, 400, "Invalid task: translate. Model ggml-tiny.en is English-only"),
        (
            {"uuid": "0" * 32, "task": "translate", "model": "ggml-base", "prompt": "x" * 1000, "vad_filter": None},
            404,
            "File not found or access denied",
        ),
        (
            {"uuid": "0" * 32, "word_timestamps": True, "vad_filter": False, "prompt": None, "task": "transcribe"},
            404,
            "File not found or access denied",
        ),
    ],
)
def test_invalid_requests_get_the_reference_errors(
    installed_models: object, client_session: APIClient, body: dict[str, Any], status: int, message: str
) -> None:
    response = client_session.post("/api/v1/transcribe", body, format="json")
    assert (response.status_code, text_of(response)) == (status, message)
    assert not Transcription.objects.exists()


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        # The request's shape first (the reference's order: the uuid, then the formats), then
        # the service's questions: the model, the language, the file.
        ({"format": "txt", "model": "nope"}, 400, "Missing file uuid"),
        ({"uuid": "nope", "format": "txt"}, 400, "Invalid UUID format"),
        ({"uuid": "0" * 32, "model": "nope", "format": "txt"}, 400, f"Invalid format: txt. {FORMATS_MESSAGE}"),
        ({"uuid": "0" * 32, "model": 3, "format": []}, 400, "At least one format must be specified"),
        ({"uuid": "0" * 32, "format": "txt", "language": 7}, 400, f"Invalid format: txt. {FORMATS_MESSAGE}"),
        ({"uuid": "0" * 32, "model": "nope", "language": 7}, 400, "Invalid language: 7"),
        (
            {"uuid": "0" * 32, "model": "nope", "language": "xx"},
            400,
            "Invalid model: nope. Must be one of: ggml-base, ggml-tiny.en",
        ),
        ({"uuid": "0" * 32, "language": "xx"}, 400, "Invalid language: xx"),
        # Within a list, the first bad item is the one reported.
        ({"uuid": "0" * 32, "format": ["srt", 1, "txt"]}, 400, "Invalid format: must be a string or a list of strings"),
        ({"uuid": "0" * 32, "format": ["txt", 1]}, 400, f"Invalid format: txt. {FORMATS_MESSAGE}"),
        # Null is the default, as omitted is.
        ({"uuid": "0" * 32, "model": None, "format": None, "language": None}, 404, "File not found or access denied"),
        ({"uuid": "0" * 32, "model": True}, 400, "Invalid model: True. Must be one of: ggml-base, ggml-tiny.en"),
        ({"uuid": "0" * 32, "language": ["en"]}, 400, "Invalid language: ['en']"),
        # An unknown field before anything else, the first one in the body's order.
        ({"formatz": "srt", "uuid": "nope", "modell": "x"}, 400, "Unknown field: formatz"),
        ({"uuid": "nope", "task": "translate"}, 400, "Invalid UUID format"),
        ({"uuid": "0" * 32, "task": "x", "language": 7}, 400, "Invalid language: 7"),
        ({"uuid": "0" * 32, "task": "translate", "language": "xx"}, 400, "Invalid language: xx"),
    ],
)
def test_the_order_of_checks(
    installed_models: object, client_session: APIClient, body: dict[str, Any], status: int, message: str
) -> None:
    response = client_session.post("/api/v1/transcribe", body, format="json")
    assert (response.status_code, text_of(response)) == (status, message)


def test_body_must_be_an_object(client_session: APIClient) -> None:
    response = client_session.post("/api/v1/transcribe", ["x"], format="json")
    assert (response.status_code, text_of(response)) == (400, "Request body must be a JSON object")
    response = client_session.post("/api/v1/transcribe", '{"uuid": ', content_type="application/json")
    assert (response.status_code, text_of(response)) == (400, "Malformed request body")
    response = client_session.post("/api/v1/transcribe", "uuid=x", content_type="text/plain")
    assert (response.status_code, text_of(response)) == (415, "Unsupported Content-Type")


def test_another_users_file_and_avatars_are_not_found(
    user: User, make_ready_file: MakeFile, other_client: APIClient, client_session: APIClient
) -> None:
    file = make_ready_file(user)
    response = other_client.post("/api/v1/transcribe", {"uuid": file.id.hex}, format="json")
    assert (response.status_code, text_of(response)) == (404, "File not found or access denied")
    avatar = make_ready_file(user, kind=File.Kind.IMAGE)
    response = client_session.post("/api/v1/transcribe", {"uuid": avatar.id.hex}, format="json")
    assert (response.status_code, text_of(response)) == (404, "File not found or access denied")
    assert not Transcription.objects.exists()


def test_a_file_whose_conversion_failed_is_refused(
    user: User, make_ready_file: MakeFile, client_session: APIClient
) -> None:
    file = make_ready_file(user, state=File.State.FAILED, error="Conversion failed: no audio stream")
    response = client_session.post("/api/v1/transcribe", {"uuid": file.id.hex}, format="json")
    assert (response.status_code, text_of(response)) == (400, "File conversion failed: no audio stream")


# --- Queueing and running ------------------------------------------------------------


def test_three_formats_of_jfk_in_one_run(user: User, make_ready_file: MakeFile, queue: Run, anon: APIClient) -> None:
    file = make_ready_file(user)
    response = queue({"uuid": file.id.hex, "format": ["verbose_json", "srt", "vtt", "srt"]})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["message"] == "Transcription(s) queued successfully"
    assert [(row["format"], row["status"]) for row in body["transcriptions"]] == [
        ("verbose_json", "pending"),
        ("srt", "pending"),
        ("vtt", "pending"),
    ]
    assert all(re.fullmatch(r"[0-9a-f]{32}", row["uuid"]) for row in body["transcriptions"])
    assert all(set(row) == {"uuid", "format", "status"} for row in body["transcriptions"])

    jobs = list(Transcription.objects.order_by("created_at"))
    assert len({job.batch_id for job in jobs}) == 1
    assert [job.status for job in jobs] == ["completed"] * 3
    assert [job.cost for job in jobs] == [11, 11, 11]
    user.refresh_from_db()
    assert user.token_balance == 1000 - 33

    verbose = anon.get(f"/api/v1/transcribe/{jobs[0].id.hex}").json()
    assert list(verbose) == [
        "uuid", "file_uuid", "model", "language", "format", "status", "processed_at",
        "progress", "queue_position", "started_at", "data",
    ]  # fmt: skip
    assert (verbose["progress"], verbose["queue_position"]) == (1.0, None)
    assert verbose["started_at"] != "1970-01-01 00:00:00" and verbose["started_at"] <= verbose["processed_at"]
    assert verbose["file_uuid"] == file.id.hex
    assert verbose["model"] == "ggml-tiny.en"
    assert verbose["language"] == "en"
    assert verbose["status"] == "completed"
    assert verbose["processed_at"] != "1970-01-01 00:00:00"
    data = verbose["data"]
    # The reference's fields and OpenAI's verbose_json fields (PostgreSQL's jsonb keeps no key order).
    assert set(data) == {"text", "segments", "language", "duration", "task"} and data["language"] == "en"
    assert word_error_rate(JFK_REFERENCE, data["text"]) <= 0.1
    assert data["segments"] and all({"start", "end", "text", "id"} <= set(segment) for segment in data["segments"])
    assert data["segments"][-1]["end"] <= 11.0

    srt = anon.get(f"/api/v1/transcribe/{jobs[1].id.hex}").json()["data"]
    assert set(srt) == {"text"}
    lines = srt["text"].split("\n")
    assert lines[0] == "1" and SRT_TIMING.match(lines[1])
    cue_text = [line for line in lines if line and not line.isdigit() and not SRT_TIMING.match(line)]
    assert " ".join(cue_text).split() == data["text"].split()

    vtt = anon.get(f"/api/v1/transcribe/{jobs[2].id.hex}").json()["data"]
    lines = vtt["text"].split("\n")
    assert lines[0] == "WEBVTT" and lines[1] == "" and VTT_TIMING.match(lines[2])
    assert not vtt["text"].endswith("\n")


def test_insufficient_balance_fails_the_job_and_leaves_the_balance(
    make_ready_file: MakeFile, queue: Run, client_session: APIClient
) -> None:
    poor, session = make_user("poor", token_balance=5)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Basic {session.id.hex}")
    file = make_ready_file(poor)
    response = queue({"uuid": file.id.hex}, client=client)
    assert response.status_code == 200
    job_id = response.json()["transcriptions"][0]["uuid"]
    body = client.get(f"/api/v1/transcribe/{job_id}").json()
    assert body["status"] == "failed"
    assert body["error"] == "Insufficient token balance. Required: 11, Available: 5"
    assert body["processed_at"] == "1970-01-01 00:00:00"
    assert "data" not in body
    assert list(body) == [
        "uuid", "file_uuid", "model", "language", "format", "status", "error", "processed_at",
        "progress", "queue_position", "started_at",
    ]  # fmt: skip
    assert (body["progress"], body["queue_position"]) == (0.0, None)
    poor.refresh_from_db()
    assert poor.token_balance == 5


def test_a_balance_for_two_of_three_formats(user: User, make_ready_file: MakeFile, queue: Run) -> None:
    User.objects.filter(pk=user.pk).update(token_balance=25)
    file = make_ready_file(user)
    queue({"uuid": file.id.hex, "format": ["verbose_json", "srt", "vtt"]})
    jobs = list(Transcription.objects.order_by("created_at"))
    assert [job.status for job in jobs] == ["completed", "completed", "failed"]
    assert jobs[2].error == "Insufficient token balance. Required: 11, Available: 3"
    user.refresh_from_db()
    assert user.token_balance == 3


def test_the_price_multiplier_applies(user: User, make_ready_file: MakeFile, queue: Run) -> None:
    User.objects.filter(pk=user.pk).update(price_multiplier="0.7")
    file = make_ready_file(user, duration=10.2)
    queue({"uuid": file.id.hex})
    job = Transcription.objects.get()
    assert (job.status, job.cost, job.audio_seconds) == ("completed", 8, 11)
    user.refresh_from_db()
    assert user.token_balance == 1000 - 8


def test_a_requested_language_is_used_and_reported(
    user: User, make_ready_file: MakeFile, queue: Run, anon: APIClient
) -> None:
    file = make_ready_file(user)
    response = queue({"uuid": file.id.hex, "model": "ggml-base", "language": "EN", "format": "srt"})
    job_id = response.json()["transcriptions"][0]["uuid"]
    body = anon.get(f"/api/v1/transcribe/{job_id}").json()
    assert (body["status"], body["model"], body["language"]) == ("completed", "ggml-base", "en")


def test_ggml_base_detects_the_language(user: User, make_ready_file: MakeFile, queue: Run, anon: APIClient) -> None:
    file = make_ready_file(user)
    response = queue({"uuid": file.id.hex, "model": "ggml-base"})
    job_id = response.json()["transcriptions"][0]["uuid"]
    body = anon.get(f"/api/v1/transcribe/{job_id}").json()
    assert body["status"] == "completed"
    assert body["language"] == "en" and body["data"]["language"] == "en"
    assert word_error_rate(JFK_REFERENCE, body["data"]["text"]) <= 0.1
    assert Transcription.objects.get().language == ""  # nothing was requested


def test_a_lost_wav_fails_the_job_readably_and_refunds(user: User, make_ready_file: MakeFile, queue: Run) -> None:
    file = make_ready_file(user)
    default_storage.delete(file.wav_name)
    queue({"uuid": file.id.hex, "format": ["srt", "vtt"]})
    jobs = list(Transcription.objects.all())
    assert {(job.status, job.error, job.cost) for job in jobs} == {
        ("failed", "Transcription failed: the file's audio is missing from storage", 0)
    }
    user.refresh_from_db()
    assert user.token_balance == 1000


def test_jobs_wait_for_the_conversion(
    user: User, make_ready_file: MakeFile, queue: Run, jfk_wav: Any, django_capture_on_commit_callbacks: Any
) -> None:
    converting = make_ready_file(user, state=File.State.PROCESSING)
    queue({"uuid": converting.id.hex, "format": ["verbose_json", "vtt"]})
    assert set(Transcription.objects.values_list("status", flat=True)) == {"pending"}
    # The conversion finishes (as files' conversion task does: state, WAV, then the signal).
    ready = make_ready_file(user)
    File.objects.filter(pk=converting.pk).update(state=File.State.READY, wav_name=ready.wav_name)
    with django_capture_on_commit_callbacks(execute=True):
        file_ready.send(sender=File, file_id=converting.id)
    assert set(Transcription.objects.values_list("status", flat=True)) == {"completed"}
    user.refresh_from_db()
    assert user.token_balance == 1000 - 22


def test_jobs_run_once_the_wav_is_stored_while_the_mp3_still_converts(
    user: User, make_ready_file: MakeFile, queue: Run
) -> None:
    converting = make_ready_file(user, state=File.State.PROCESSING)
    File.objects.filter(pk=converting.pk).update(wav_name=make_ready_file(user).wav_name)
    queue({"uuid": converting.id.hex})
    assert Transcription.objects.get().status == "completed"


def test_jobs_of_a_failed_conversion_fail_uncharged(user: User, make_ready_file: MakeFile, queue: Run) -> None:
    converting = make_ready_file(user, state=File.State.PROCESSING)
    queue({"uuid": converting.id.hex})
    File.objects.filter(pk=converting.pk).update(state=File.State.FAILED, error="Conversion failed: corrupt stream")
    file_failed.send(sender=File, file_id=converting.id)
    job = Transcription.objects.get()
    assert (job.status, job.error, job.cost) == ("failed", "File conversion failed: corrupt stream", 0)
    user.refresh_from_db()
    assert user.token_balance == 1000


# --- Reading -------------------------------------------------------------------------


def test_reading_by_job_and_by_file_is_public(
    user: User, make_ready_file: MakeFile, queue: Run, anon: APIClient
) -> None:
    file = make_ready_file(user)
    queue({"uuid": file.id.hex, "format": ["verbose_json", "srt"]}, run=False)
    queue({"uuid": file.id.hex, "format": "vtt"}, run=False)
    jobs = list(Transcription.objects.order_by("created_at"))
    listing = anon.get(f"/api/v1/transcribe/{file.id.hex}").json()
    assert [row["uuid"] for row in listing["transcriptions"]] == [job.id.hex for job in jobs]
    assert [row["format"] for row in listing["transcriptions"]] == ["verbose_json", "srt", "vtt"]
    first = listing["transcriptions"][0]
    # An English-only model's language is known before it runs.
    assert (first["status"], first["data"], first["processed_at"], first["language"]) == (
        "pending",
        None,
        "1970-01-01 00:00:00",
        "en",
    )
    # Hyphenated uuids, a trailing slash, and a stale Authorization header all work.
    anon.credentials(HTTP_AUTHORIZATION="Bearer " + "f" * 32)
    single = anon.get(f"/api/v1/transcribe/{jobs[1].id}/")
    assert single.status_code == 200 and single.json()["uuid"] == jobs[1].id.hex


def test_a_file_without_jobs_lists_none(user: User, make_ready_file: MakeFile, anon: APIClient) -> None:
    file = make_ready_file(user)
    assert anon.get(f"/api/v1/transcribe/{file.id.hex}").json() == {"transcriptions": []}


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("nope", 400, "Invalid UUID format"),
        ("job.json", 400, "Invalid UUID format"),
        ("0" * 32, 404, "Transcription not found"),
    ],
)
def test_reading_errors(anon: APIClient, path: str, status: int, message: str) -> None:
    response = anon.get(f"/api/v1/transcribe/{path}")
    assert (response.status_code, text_of(response)) == (status, message)


# --- Deleting ------------------------------------------------------------------------


def test_a_pending_job_deleted_before_it_runs_is_never_run_nor_charged(
    user: User,
    make_ready_file: MakeFile,
    client_session: APIClient,
    django_capture_on_commit_callbacks: Any,
) -> None:
    file = make_ready_file(user)
    with django_capture_on_commit_callbacks() as queued:
        response = client_session.post("/api/v1/transcribe", {"uuid": file.id.hex}, format="json")
    job_id = response.json()["transcriptions"][0]["uuid"]
    deleted = client_session.delete(f"/api/v1/transcribe/{job_id}")
    assert deleted.json() == {
        "message": "Transcription deleted successfully",
        "uuid": job_id,
        "model": "ggml-tiny.en",
        "format": "verbose_json",
    }
    for callback in queued:  # the queue message arrives after the deletion
        callback()
    assert not Transcription.objects.exists()
    user.refresh_from_db()
    assert user.token_balance == 1000


def test_only_the_owner_deletes(
    user: User, make_ready_file: MakeFile, queue: Run, other_client: APIClient, anon: APIClient
) -> None:
    file = make_ready_file(user)
    job_id = queue({"uuid": file.id.hex}, run=False).json()["transcriptions"][0]["uuid"]
    response = other_client.delete(f"/api/v1/transcribe/{job_id}")
    assert (response.status_code, text_of(response)) == (404, "Transcription not found or access denied")
    assert anon.delete(f"/api/v1/transcribe/{job_id}").status_code == 401
    response = other_client.delete("/api/v1/transcribe/xyz")
    assert (response.status_code, text_of(response)) == (400, "Invalid UUID format")
    assert Transcription.objects.filter(id=job_id).exists()


# --- Models --------------------------------------------------------------------------


def test_models_for_users_and_admins(
    installed_models: object, client_session: APIClient, admin_client: APIClient, anon: APIClient
) -> None:
    assert client_session.get("/api/v1/model").json() == {"models": [{"name": "ggml-base"}, {"name": "ggml-tiny.en"}]}
    rows = admin_client.get("/api/v1/model/").json()["models"]
    assert [row["name"] for row in rows] == ["ggml-base", "ggml-tiny.en"]
    assert all(isinstance(row["size"], int) and row["size"] > 70_000_000 for row in rows)
    assert anon.get("/api/v1/model").status_code == 401


# --- Routes and the published schema ---------------------------------------------------


def test_routes_and_their_names() -> None:
    assert reverse("model-list") == "/api/v1/model"
    assert reverse("transcription-list") == "/api/v1/transcribe"
    assert reverse("transcription-detail", kwargs={"uuid": "0" * 32}) == "/api/v1/transcribe/" + "0" * 32


def test_reading_answers_head_too_and_there_is_no_listing(
    user: User, make_ready_file: MakeFile, anon: APIClient, client_session: APIClient
) -> None:
    file = make_ready_file(user)
    response = anon.head(f"/api/v1/transcribe/{file.id.hex}")
    assert response.status_code == 200 and response.content == b""
    response = client_session.get("/api/v1/transcribe")
    assert (response.status_code, text_of(response)) == (405, "Method not allowed")


def test_the_schema_describes_the_transcription_operations(anon: APIClient) -> None:
    document = json.loads(anon.get("/api/v1/schema?format=json").content)
    paths, schemas = document["paths"], document["components"]["schemas"]
    create, detail = paths["/api/v1/transcribe"]["post"], paths["/api/v1/transcribe/{uuid}"]
    assert paths["/api/v1/model"]["get"]["operationId"] == "model_list"
    assert [create["operationId"], detail["get"]["operationId"], detail["delete"]["operationId"]] == [
        "transcription_create",
        "transcription_get",
        "transcription_delete",
    ]

    def errors(operation: dict[str, Any], status: int) -> set[str]:
        content = operation["responses"][str(status)]["content"]["text/plain"]
        return {example["value"] for example in content["examples"].values()}

    content = create["requestBody"]["content"]
    assert list(content) == ["application/json"]
    body = schemas[content["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]]
    assert body["required"] == ["uuid"]
    assert body["properties"]["format"]["default"] == "verbose_json"
    example = next(iter(content["application/json"]["examples"].values()))["value"]
    assert example["model"] in {"ggml-tiny.en", "ggml-base"}  # installed out of the box
    assert {
        "Missing file uuid",
        "Invalid UUID format",
        f"Invalid format: txt. {FORMATS_MESSAGE}",
        "At least one format must be specified",
    } <= errors(create, 400)
    assert errors(create, 404) == {"File not found or access denied"}
    assert errors(create, 415) == {"Unsupported Content-Type"}

    read = detail["get"]
    assert not read.get("security")  # public: no credentials
    options = read["responses"]["200"]["content"]["application/json"]["schema"]
    one_of = schemas[options["$ref"].rsplit("/", 1)[-1]]["oneOf"]
    assert [option["$ref"].rsplit("/", 1)[-1] for option in one_of] == [
        "TranscriptionOutput",
        "FileTranscriptionsOutput",
    ]
    job = schemas["TranscriptionOutput"]
    assert list(job["properties"]) == [
        "uuid", "file_uuid", "model", "language", "format", "status", "error", "processed_at",
        "progress", "queue_position", "started_at", "data",
    ]  # fmt: skip
    assert "error" not in job["required"] and "data" not in job["required"]
    assert errors(read, 404) == {"Transcription not found"}
    assert errors(detail["delete"], 404) == {"Transcription not found or access denied"}
