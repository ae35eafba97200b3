"""The ``openai`` package, unchanged, against ``manage.py serve`` (gunicorn and a real Celery worker).

Each call is an upload, one ordinary job run by the worker, and the answer the request
waited for. jfk.flac (11 s) with ggml-tiny.en is about a second of inference;
hotwords.mp3 (4 s) is the translation's, on the multilingual ggml-base.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.site.conftest import DATA, Served

pytestmark = pytest.mark.served

JFK = DATA / "jfk.flac"
JFK_WORDS = "ask not what your country can do for you"


@pytest.fixture(scope="module")
def account(served: Served) -> tuple[str, str]:
    """A session id and an API key of a new user."""
    return served.register("openai_client")


@pytest.fixture(scope="module")
def client(served: Served, account: tuple[str, str]) -> Iterator[openai.OpenAI]:
    # The SDK's own retries stay on (max_retries=2 by default), as a user's client has them.
    with openai.OpenAI(base_url=served.url + "/api/v1", api_key=account[1], timeout=120) as sdk:
        yield sdk


def balance(served: Served, api_key: str) -> int:
    return served.me(api_key)["token_balance"]


def jfk_cost(served: Served, api_key: str) -> int:
    """What a job on jfk.flac costs this user: its measured duration, rounded up (multiplier 1)."""
    status, raw = served.request("GET", "/api/v1/file", auth=f"Bearer {api_key}")
    assert status == 200, raw
    (row,) = [row for row in json.loads(raw)["files"] if row["filename"] == JFK.name]
    return math.ceil(row["duration"])


def normalised(text: str) -> str:
    return " ".join("".join(c for c in text.lower() if c.isalnum() or c.isspace()).split())


def test_json_is_the_text_and_each_request_is_charged_once(
    served: Served, client: openai.OpenAI, account: tuple[str, str]
) -> None:
    before = balance(served, account[1])
    with JFK.open("rb") as audio:
        result = client.audio.transcriptions.create(file=audio, model="whisper-1")
    assert isinstance(result, openai.types.audio.Transcription)
    assert JFK_WORDS in normalised(result.text)
    cost = jfk_cost(served, account[1])
    assert balance(served, account[1]) == before - cost

    # The same bytes again: the same file, one more job, charged once more.
    with JFK.open("rb") as audio:
        client.audio.transcriptions.create(file=audio, model="ggml-tiny.en", response_format="json")
    assert balance(served, account[1]) == before - 2 * cost
    status, raw = served.request("GET", "/api/v1/file", auth=f"Bearer {account[1]}")
    (file_row,) = json.loads(raw)["files"]
    status, raw = served.request("GET", f"/api/v1/transcribe/{file_row['uuid']}")
    jobs = json.loads(raw)["transcriptions"]
    assert [(job["status"], job["format"], job["model"]) for job in jobs] == [
        ("completed", "verbose_json", "ggml-tiny.en")
    ] * 2


@pytest.mark.parametrize(
    ("response_format", "starts"),
    [("text", "And so"), ("srt", "1\n00:00:00,000 --> "), ("vtt", "WEBVTT\n\n00:00:00.000 --> ")],
)
def test_text_srt_and_vtt_are_plain_text(client: openai.OpenAI, response_format: str, starts: str) -> None:
    with JFK.open("rb") as audio:
        result: Any = client.audio.transcriptions.create(
            file=audio, model="ggml-tiny.en", response_format=response_format
        )
    assert isinstance(result, str)
    assert result.lstrip().startswith(starts), result
    # The words of the cues, without numbers, timings and header.
    cue_words = [
        line for line in result.splitlines() if line and "-->" not in line and not line.isdigit() and line != "WEBVTT"
    ]
    assert JFK_WORDS in normalised(" ".join(cue_words))


def test_verbose_json_with_segments(client: openai.OpenAI) -> None:
    with JFK.open("rb") as audio:
        result = client.audio.transcriptions.create(
            file=audio, model="whisper-1", response_format="verbose_json", language="en", temperature=0.0
        )
    assert isinstance(result, openai.types.audio.TranscriptionVerbose)
    assert (result.language, result.duration) == ("english", 11.0)
    assert JFK_WORDS in normalised(result.text)
    assert result.segments and result.words is None
    assert [segment.id for segment in result.segments] == list(range(len(result.segments)))
    assert result.segments[0].start >= 0 and result.segments[-1].end <= 11.5
    assert normalised(" ".join(segment.text for segment in result.segments)) == normalised(result.text)


def test_verbose_json_with_words_and_segments(client: openai.OpenAI) -> None:
    with JFK.open("rb") as audio:
        result = client.audio.transcriptions.create(
            file=audio,
            model="ggml-tiny.en",
            response_format="verbose_json",
            timestamp_granularities=["word", "segment"],
        )
    assert result.segments and result.words is not None
    assert normalised(" ".join(word.word for word in result.words)) == normalised(result.text)
    assert all(word.start <= word.end for word in result.words)
    with JFK.open("rb") as audio:
        words_only = client.audio.transcriptions.create(
            file=audio, model="ggml-tiny.en", response_format="verbose_json", timestamp_granularities=["word"]
        )
    assert words_only.segments is None and words_only.words is not None


# openai 3.x marks translations.create deprecated (OpenAI is retiring whisper-1); the route is
# OpenAI's all the same, and clients written against it call it.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_translation_into_english(client: openai.OpenAI) -> None:
    with (DATA / "hotwords.mp3").open("rb") as audio:
        result = client.audio.translations.create(file=audio, model="ggml-base", response_format="verbose_json")
    assert result.text.strip()
    assert getattr(result, "task", None) == "translate"


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    ids = [model.id for model in client.models.list()]
    assert ids == ["ggml-base", "ggml-tiny.en", "whisper-1"]
    model = client.models.retrieve("whisper-1")
    assert (model.id, model.object, model.owned_by) == ("whisper-1", "model", "system")
    with pytest.raises(openai.NotFoundError) as raised:
        client.models.retrieve("whisper-2")
    assert raised.value.code == "model_not_found"


def test_an_unknown_model_is_a_bad_request_naming_the_installed_ones(
    served: Served, client: openai.OpenAI, account: tuple[str, str]
) -> None:
    before = balance(served, account[1])
    with JFK.open("rb") as audio, pytest.raises(openai.BadRequestError) as raised:
        client.audio.transcriptions.create(file=audio, model="ggml-base.en")
    error = raised.value
    assert error.status_code == 400 and error.code == "model_not_found" and error.param == "model"
    assert "Invalid model: ggml-base.en. Must be one of: ggml-base, ggml-tiny.en, whisper-1" in error.message
    assert balance(served, account[1]) == before


def test_a_bad_key_is_an_authentication_error(served: Served) -> None:
    with openai.OpenAI(base_url=served.url + "/api/v1", api_key="0" * 32, max_retries=0) as stranger:
        with JFK.open("rb") as audio, pytest.raises(openai.AuthenticationError) as raised:
            stranger.audio.transcriptions.create(file=audio, model="whisper-1")
        assert raised.value.code == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            stranger.models.list()
