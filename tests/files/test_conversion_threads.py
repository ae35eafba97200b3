"""ffmpeg's threads: CONVERSION_FFMPEG_THREADS on every conversion command, MEDIA_THREADS for probes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from files import media
from files.models import File

pytestmark = pytest.mark.django_db


def test_the_conversion_command_runs_ffmpeg_on_the_conversion_threads_only(tmp_path: Path) -> None:
    limits = media.MediaLimits(threads=4, conversion_threads=1)
    argv = media.ffmpeg_command(tmp_path / "in.flac", tmp_path / "out.wav", ["-f", "wav"], limits)
    values = {argv[i + 1] for i, arg in enumerate(argv) if arg in {"-threads", "-filter_threads"}}
    assert argv.count("-threads") == 2 and "-filter_threads" in argv
    assert values == {"1"}
    # The decoders' -threads is an input option, the encoders' an output option.
    assert argv.index("-threads") < argv.index("-i") < len(argv) - 1 - argv[::-1].index("-threads")


def test_the_settings_give_conversions_and_probes_their_own_threads(settings: Any) -> None:
    settings.MEDIA_THREADS = 3
    settings.CONVERSION_FFMPEG_THREADS = 1
    limits = media.MediaLimits.from_settings(settings)
    assert (limits.threads, limits.conversion_threads) == (3, 1)


@pytest.fixture
def ffmpeg_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The real ffmpeg behind a script that writes down each command line it is given."""
    log = tmp_path / "ffmpeg-calls"
    script = tmp_path / "ffmpeg"
    script.write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec {media.ffmpeg_binary()} "$@"\n')
    script.chmod(0o755)
    monkeypatch.setenv("FFMPEG_BINARY", str(script))
    media.ffmpeg_binary.cache_clear()
    yield log
    media.ffmpeg_binary.cache_clear()


@pytest.mark.parametrize("threads", [1, 3])
def test_a_conversion_runs_ffmpeg_with_conversion_ffmpeg_threads(
    ffmpeg_calls: Path,
    client_key: APIClient,
    django_capture_on_commit_callbacks: Any,
    media_files: dict[str, Path],
    settings: Any,
    threads: int,
) -> None:
    settings.CONVERSION_FFMPEG_THREADS = threads
    settings.MEDIA_THREADS = 2
    path = media_files["speech.mp4"]
    with django_capture_on_commit_callbacks(execute=True):  # both phases, eagerly
        response = client_key.post(
            "/api/v1/file", {"file": [SimpleUploadedFile(path.name, path.read_bytes())]}, format="multipart"
        )
    file = File.objects.get(id=response.json()["files"][0]["uuid"])
    assert file.state == "ready", file.error
    calls = ffmpeg_calls.read_text().splitlines()
    assert len(calls) == 2  # the WAV, then the MP4
    for call in calls:
        argv = call.split()
        values = [argv[i + 1] for i, arg in enumerate(argv) if arg in {"-threads", "-filter_threads"}]
        assert values == [str(threads)] * 3, call
