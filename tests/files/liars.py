"""Media whose header lies about its duration, for the tests of billing and limits by the decoded audio."""

from __future__ import annotations

import struct
from pathlib import Path

from tests.files.conftest import JFK, ffmpeg

# Matroska's Segment Info > Duration element: EBML ID 0x4489, a 4- or 8-byte float
# in TimecodeScale units (ffmpeg writes the default scale, milliseconds).
_DURATION_ID = b"\x44\x89"


def speech_matroska(path: Path, seconds: float) -> Path:
    """``seconds`` of real speech (jfk.flac over and over) as Opus in Matroska, its header telling the truth."""
    loops = int(seconds // 11) + 1
    ffmpeg("-stream_loop", str(loops), "-i", JFK, "-t", f"{seconds:g}", "-c:a", "libopus", "-b:a", "24k", path)
    return path


def claim_duration(source: Path, target: Path, seconds: float) -> Path:
    """A copy of the Matroska file ``source`` at ``target`` whose header says it lasts ``seconds``.

    Only the Segment Info's Duration changes: every packet of sound is still there.
    """
    data = bytearray(source.read_bytes())
    at = data.find(_DURATION_ID)
    assert at >= 0, "no Duration element"
    size_byte = data[at + 2]
    value = at + 3
    if size_byte == 0x88:
        data[value : value + 8] = struct.pack(">d", seconds * 1000)
    elif size_byte == 0x84:
        data[value : value + 4] = struct.pack(">f", seconds * 1000)
    else:
        raise AssertionError(f"unexpected Duration size byte {size_byte:#x}")
    target.write_bytes(bytes(data))
    return target


def lying_matroska(folder: Path, *, real: float, claimed: float = 1.0) -> Path:
    """``real`` seconds of speech in Matroska whose header claims ``claimed`` seconds."""
    honest = speech_matroska(folder / f"speech-{real:g}s.mkv", real)
    return claim_duration(honest, folder / f"liar-{real:g}s-says-{claimed:g}s.mkv", claimed)
