"""Decompression bombs and peak-memory measurements for the bounded-media tests."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.files.conftest import ffmpeg

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MB = 1024 * 1024


def black_png(path: Path, width: int, height: int) -> Path:
    """A black RGB PNG written row by row: decoding it asks for width x height x 3 bytes, writing it for little."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = bytes(1 + width * 3)  # filter byte 0, then black pixels
    deflate = zlib.compressobj(1)
    pixels = b"".join(deflate.compress(row) for _ in range(height)) + deflate.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))
    return path


def video_bomb(path: Path, width: int, height: int) -> Path:
    """One second of sound and one black frame of ``width`` x ``height``: a small file, a large frame."""
    ffmpeg(
        "-f", "lavfi", "-i", f"color=c=black:s={width}x{height}:r=1:d=1", "-f", "lavfi", "-i", "sine=d=1",
        "-c:v", "libx264", "-preset", "ultrafast", "-crf", "51", "-c:a", "aac", path,
    )  # fmt: skip
    return path


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise LookupError(field)


@contextmanager
def peak_rss_growth() -> Iterator[Callable[[], int]]:
    """How far this process's peak resident memory rose above its level at the start, in bytes.

    The kernel's peak (VmHWM) is reset first, so that what earlier tests
    used does not hide what this one uses.
    """
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        pytest.skip("the peak resident memory cannot be reset here (/proc/self/clear_refs)")
    start = _status_bytes("VmRSS")
    yield lambda: _status_bytes("VmHWM") - start


def convert_in_fresh_process(conversion: str, src: Path, dst: Path) -> tuple[str | None, int]:
    """Run ``files.media.<conversion>(src, dst)`` in a new interpreter: its error (or None) and ffmpeg's peak RSS.

    A fresh process, so that its only waited-for child is that ffmpeg, and
    RUSAGE_CHILDREN is ffmpeg's own peak.
    """
    code = (
        "import json, resource, sys\n"
        "from files import media\n"
        "try:\n"
        "    getattr(media, sys.argv[1])(sys.argv[2], sys.argv[3])\n"
        "    error = None\n"
        "except media.ConversionError as exc:\n"
        "    error = exc.message\n"
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024\n"
        "print(json.dumps([error, peak]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run(
        [sys.executable, "-c", code, conversion, str(src), str(dst)],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    error, peak = json.loads(done.stdout.strip().splitlines()[-1])
    return error, peak
