"""Fixtures of the transcription tests: installed models, ready files, reference text."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jiwer
import pytest
from django.conf import settings
from rest_framework.test import APIClient

from accounts.models import User
from files.media import convert_to_wav, ffmpeg_binary
from files.models import File
from files.storage import storage_put
from transcriptions.engine import install_bundled_models

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
JFK_REFERENCE = (
    "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
)


def word_error_rate(reference: str, hypothesis: str) -> float:
    """WER after lower-casing and dropping punctuation."""

    def normalise(text: str) -> str:
        return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())

    return float(jiwer.wer(normalise(reference), normalise(hypothesis)))


def subtitle_text(subtitles: str) -> str:
    """The cue text of an SRT or WebVTT file, every cue line joined with one space."""
    blocks = subtitles.split("\n\n")
    if blocks[0].startswith("WEBVTT"):
        lines = [line for block in blocks[1:] for line in block.split("\n")[1:]]
    else:
        lines = [line for block in blocks if block for line in block.split("\n")[2:]]
    return " ".join(lines)


def ffmpeg(*args: str) -> None:
    """Run the bundled ffmpeg quietly; fail the test with its message."""
    subprocess.run([ffmpeg_binary(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


@pytest.fixture(scope="session")
def installed_models() -> Path:
    """The bundled models in settings.MODELS_DIR, as `make run` installs them (idempotent)."""
    assert install_bundled_models(settings.MODELS_DIR) == ["ggml-tiny.en", "ggml-base"]
    return Path(settings.MODELS_DIR)


@pytest.fixture(scope="session")
def jfk_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/data/jfk.flac as the 16 kHz mono WAV the files app stores."""
    path = tmp_path_factory.mktemp("wav") / "jfk.wav"
    convert_to_wav(DATA_DIR / "jfk.flac", path)
    return path


@pytest.fixture(scope="session")
def silence_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One second of silence: the cheapest real transcription (cost 1 at multiplier 1)."""
    path = tmp_path_factory.mktemp("wav") / "silence.wav"
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "1", "-c:a", "pcm_s16le", str(path))
    return path


MakeFile = Callable[..., File]
Run = Callable[..., Any]


@pytest.fixture
def queue(client_session: APIClient, django_capture_on_commit_callbacks: Any) -> Run:
    """POST /transcribe and run what it queued (eager Celery runs the task on commit)."""

    def post(body: dict[str, Any], client: APIClient | None = None, run: bool = True) -> Any:
        with django_capture_on_commit_callbacks(execute=run):
            return (client or client_session).post("/api/v1/transcribe", body, format="json")

    return post


@pytest.fixture
def make_ready_file(installed_models: Path, jfk_wav: Path, tmp_path: Path) -> MakeFile:
    """Create a converted file row, its WAV in storage, without the upload API (fast)."""
    counter = iter(range(1_000_000))

    def make(
        owner: User,
        *,
        wav: Path | None = None,
        duration: float = 11.0,
        state: str = File.State.READY,
        kind: str = File.Kind.AUDIO,
        error: str = "",
    ) -> File:
        number = next(counter)
        file = File(
            owner=owner,
            filename=f"clip{number}.mp3",
            kind=kind,
            content_type="audio/mpeg",
            blake3=f"{number:064x}",
            duration=duration,
            state=state,
            error=error,
        )
        if state == File.State.READY:
            copy = tmp_path / f"upload{number}.wav"
            shutil.copyfile(wav or jfk_wav, copy)
            file.wav_name = storage_put(name=f"files/{owner.id.hex}/{file.id.hex}/audio.wav", path=copy)
        file.save()
        return file

    return make
