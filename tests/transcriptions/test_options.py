"""The options of POST /transcribe, through the API to the worker's run (eager mode, real model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rest_framework.test import APIClient

from accounts.models import User
from files.media import convert_to_wav
from tests.transcriptions.conftest import DATA_DIR, JFK_REFERENCE, MakeFile, Run, subtitle_text, word_error_rate
from transcriptions.models import Transcription

pytestmark = pytest.mark.django_db


def result_of(anon: APIClient, job_id: str) -> dict[str, Any]:
    body = anon.get(f"/api/v1/transcribe/{job_id}").json()
    assert body["status"] == "completed", body
    return body["data"]


def srt_cues(text: str) -> list[tuple[str, list[str]]]:
    """(timing line, text lines) of each cue of an SRT file."""
    cues = []
    for block in text.split("\n\n"):
        lines = block.split("\n")
        cues.append((lines[1], lines[2:]))
    return cues


def seconds(timestamp: str) -> float:
    hours, minutes, rest = timestamp.replace(",", ".").split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(rest)


def test_word_timestamps_and_subtitles_share_one_run(
    user: User, make_ready_file: MakeFile, queue: Run, anon: APIClient
) -> None:
    file = make_ready_file(user)
    response = queue({"uuid": file.id.hex, "format": ["verbose_json", "srt", "vtt"], "word_timestamps": True})
    assert response.status_code == 200, response.content
    jobs = list(Transcription.objects.order_by("created_at"))
    assert len({job.batch_id for job in jobs}) == 1
    assert all(job.word_timestamps and job.task == "transcribe" and job.prompt == "" for job in jobs)
    verbose, srt, vtt = (result_of(anon, job.id.hex) for job in jobs)

    # The reference's fields, then what verbose_json adds.
    assert {"text", "segments", "language"} <= set(verbose)
    assert verbose["task"] == "transcribe"
    assert verbose["duration"] == pytest.approx(11.0, abs=0.05)
    assert word_error_rate(JFK_REFERENCE, verbose["text"]) <= 0.1
    segments = verbose["segments"]
    assert [segment["id"] for segment in segments] == list(range(len(segments)))
    for segment in segments:
        assert segment["language"] == "en"
        words = segment["words"]
        assert words and set(words[0]) == {"word", "start", "end", "probability"}
        assert " ".join(word["word"] for word in words).split() == segment["text"].split()
        assert all(segment["start"] - 0.01 <= w["start"] <= w["end"] <= segment["end"] + 0.01 for w in words)

    # The cues hold exactly the words of verbose_json's text, within the timed-text limits.
    cues = srt_cues(srt["text"])
    assert [word for _, lines in cues for line in lines for word in line.split()] == verbose["text"].split()
    for timing, lines in cues:
        start, end = (seconds(part) for part in timing.split(" --> "))
        assert 0 < end - start <= 7.0
        assert 1 <= len(lines) <= 2 and all(len(line) <= 42 for line in lines)
    assert subtitle_text(vtt["text"]).split() == verbose["text"].split()


def test_without_word_timestamps_verbose_json_has_no_words(
    user: User, make_ready_file: MakeFile, queue: Run, anon: APIClient
) -> None:
    file = make_ready_file(user)
    response = queue({"uuid": file.id.hex, "format": ["verbose_json", "srt"]})
    job_id = response.json()["transcriptions"][0]["uuid"]
    segments = result_of(anon, job_id)["segments"]
    assert segments and all("words" not in segment for segment in segments)


@pytest.fixture
def hotwords_file(user: User, make_ready_file: MakeFile, tmp_path: Path) -> Any:
    wav = tmp_path / "hotwords.wav"
    convert_to_wav(DATA_DIR / "hotwords.mp3", wav)
    return make_ready_file(user, wav=wav, duration=4.0)


def test_a_prompt_spells_a_product_name(hotwords_file: Any, queue: Run, anon: APIClient) -> None:
    plain = queue({"uuid": hotwords_file.id.hex}).json()["transcriptions"][0]["uuid"]
    hinted = queue({"uuid": hotwords_file.id.hex, "prompt": "ComfyUI"}).json()["transcriptions"][0]["uuid"]
    # int8 decoding of the tiny model writes it "comfyUI": the spelling is what the hint fixes.
    assert "comfyui" not in result_of(anon, plain)["text"].lower()
    assert "comfyui" in result_of(anon, hinted)["text"].lower()
    assert Transcription.objects.get(id=hinted).prompt == "ComfyUI"


def test_translate_runs_on_a_multilingual_model(
    user: User, make_ready_file: MakeFile, queue: Run, anon: APIClient
) -> None:
    file = make_ready_file(user)
    response = queue({"uuid": file.id.hex, "model": "ggml-base", "task": "translate", "vad_filter": True})
    job = Transcription.objects.get(id=response.json()["transcriptions"][0]["uuid"])
    assert (job.task, job.vad_filter) == ("translate", True)
    data = result_of(anon, job.id.hex)
    assert data["task"] == "translate" and data["language"] == "en"
    assert word_error_rate(JFK_REFERENCE, data["text"]) <= 0.2
