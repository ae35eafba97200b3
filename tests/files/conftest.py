"""Fixtures of the files tests: real media made with ffmpeg, upload helpers, folder checks."""

from __future__ import annotations

import os
import random
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from files import media

DATA = Path(__file__).resolve().parent.parent / "data"
JFK = DATA / "jfk.flac"
HOTWORDS = DATA / "hotwords.mp3"

MINIMAL_PDF = (
    b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
    b"2 0 obj << /Type /Pages /Kids [3 0 R] /Count 1 >> endobj\n"
    b"3 0 obj << /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >> endobj\n"
    b"trailer << /Size 4 /Root 1 0 R >>\n%%EOF\n"
)


def ffmpeg(*args: str | os.PathLike[str]) -> None:
    subprocess.run(
        [media.ffmpeg_binary(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *map(str, args)],
        check=True,
        timeout=120,
    )


@pytest.fixture(scope="session")
def media_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every input the tests upload, made once per session; read-only for tests."""
    folder = tmp_path_factory.mktemp("upload-inputs")
    p = {name: folder / name for name in (
        "speech.mp4", "noise.mp4", "tone.wav", "speech.opus", "silence.mp3", "doc.pdf", "random.mp3", "empty.mp3",
        "red.png", "red.jpg", "red.gif", "red.webp", "huge.png", "truncated.png",
    )}  # fmt: skip
    # 3 s of H.264 whose sound track is speech (the start of jfk.flac), at
    # 44.1 kHz stereo: AAC cannot reach 192 kbit/s on 16 kHz mono.
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc=s=64x48:r=10:d=3", "-t", "3", "-i", JFK,
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "96k", "-ar", "44100", "-ac", "2", "-shortest", p["speech.mp4"],
    )  # fmt: skip
    # Busy stereo sound, which the AAC encoder spends its whole 192 kbit/s on.
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc=s=64x48:r=10:d=3", "-f", "lavfi", "-i", "anoisesrc=d=3:c=pink:r=44100",
        "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-ac", "2", "-shortest", p["noise.mp4"],
    )  # fmt: skip
    ffmpeg("-f", "lavfi", "-i", "sine=f=440:d=2", "-c:a", "pcm_s16le", p["tone.wav"])
    ffmpeg("-t", "2", "-i", JFK, "-c:a", "libopus", "-b:a", "32k", "-f", "ogg", p["speech.opus"])
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=44100:cl=mono", "-t", "2", "-c:a", "libmp3lame", p["silence.mp3"])
    p["doc.pdf"].write_bytes(MINIMAL_PDF)
    p["random.mp3"].write_bytes(random.Random(7).randbytes(200_000))
    p["empty.mp3"].write_bytes(b"")
    for name in ("red.png", "red.jpg", "red.gif", "red.webp"):
        ffmpeg("-f", "lavfi", "-i", "color=red:s=32x24", "-frames:v", "1", p[name])
    ffmpeg("-f", "lavfi", "-i", "color=red:s=5000x8", "-frames:v", "1", p["huge.png"])
    p["truncated.png"].write_bytes(p["red.png"].read_bytes()[:40])
    return p


@pytest.fixture(autouse=True)
def upload_temp_dir(settings: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Each test's upload temporary files go to a folder of its own, to check they are all gone."""
    # Not inside tmp_path: some tests list that folder.
    folder = tmp_path_factory.mktemp("upload-tmp")
    settings.FILE_UPLOAD_TEMP_DIR = str(folder)
    return folder


@pytest.fixture
def media_root(settings: Any) -> Path:
    return Path(settings.MEDIA_ROOT)


def stored_files(root: Path) -> list[str]:
    """Every stored object under MEDIA_ROOT, relative names, sorted."""
    if not root.exists():
        return []
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


def as_upload(
    path: Path, name: str | None = None, content_type: str = "application/octet-stream"
) -> SimpleUploadedFile:
    return SimpleUploadedFile(name or path.name, path.read_bytes(), content_type=content_type)


Upload = Callable[..., Any]


@pytest.fixture
def upload(django_capture_on_commit_callbacks: Any) -> Upload:
    """POST /file with parts named ``file`` and run what it queued (eager Celery) on commit."""

    def post(client: APIClient, *parts: Path | SimpleUploadedFile, **extra: Any) -> Any:
        files = [as_upload(part) if isinstance(part, Path) else part for part in parts]
        with django_capture_on_commit_callbacks(execute=True):
            return client.post("/api/v1/file", {"file": files}, format="multipart", **extra)

    return post


def raw_multipart(parts: list[tuple[bytes, bytes]], boundary: bytes = b"XyZbOuNdArY") -> tuple[bytes, str]:
    """A multipart body from (header block, content) pairs, written byte for byte."""
    body = b"".join(
        b"--" + boundary + b"\r\n" + headers + b"\r\n\r\n" + content + b"\r\n" for headers, content in parts
    )
    body += b"--" + boundary + b"--\r\n"
    return body, f"multipart/form-data; boundary={boundary.decode()}"


def audio_format(path: Path) -> dict[str, Any]:
    """What PyAV reads from a file: container, first audio (and video) stream parameters."""
    with av.open(str(path)) as container:
        audio = container.streams.audio[0]
        info: dict[str, Any] = {
            "format": container.format.name,
            "codec": audio.codec_context.codec.canonical_name,
            "sample_rate": audio.codec_context.sample_rate,
            "channels": audio.codec_context.channels,
            "bit_rate": audio.bit_rate or audio.codec_context.bit_rate,
            "sample_format": audio.codec_context.format.name if audio.codec_context.format else None,
            "duration": container.duration / av.time_base if container.duration else None,
        }
        if container.streams.video:
            info["video_codec"] = container.streams.video[0].codec_context.codec.canonical_name
        return info


@pytest.fixture
def no_leftovers(upload_temp_dir: Path) -> Iterator[None]:
    """Fails the test if any upload temporary file is left behind."""
    yield
    assert list(upload_temp_dir.iterdir()) == []
