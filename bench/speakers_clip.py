"""Build tests/data/speakers.opus and speakers.json: four real voices taking turns, with known turns.

The voices are those of the recordings in ../shared/audio (README there): John F. Kennedy
(jfk.flac), the speaker of hotwords.mp3, and the two people of stereo_diarization.wav,
one per channel. Pieces of them, cut between words, are joined one after another with a
pause between turns, as a conversation of 2-5 s turns; each turn's time in the clip is
where its speech is (the piece trimmed to its first and last 10 ms of speech by energy),
so that the reference of who spoke when is exact to 10 ms; pauses within a turn count as
the speaker's, as a listener would mark them.

    .venv/bin/python bench/speakers_clip.py [SHARED_AUDIO_DIR]

It runs once, by hand; the tests and bench/diarization.py read the files it wrote.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import imageio_ffmpeg
import numpy as np

RATE = 16000
ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "tests" / "data"
PAUSE_SECONDS = 0.6
FRAME = RATE // 100  # 10 ms
# Energy above this (RMS of a 10 ms frame) is speech.
SPEECH_RMS = 0.01

# (speaker, file, channel (None: the mix), start, end) in the source, cut between words.
PIECES = [
    ("A", "jfk.flac", None, 0.0, 2.6),  # And so my fellow Americans,
    ("B", "hotwords.mp3", None, 0.0, 4.0),  # Then you go into your ComfyUI folder again, in the ComfyUI.
    ("C", "stereo_diarization.wav", 0, 0.0, 5.0),
    ("A", "jfk.flac", None, 3.1, 8.1),  # ask not what your country can do for you,
    ("D", "stereo_diarization.wav", 1, 0.0, 2.8),
    ("B", "hotwords.mp3", None, 0.0, 2.45),  # Then you go into your ComfyUI folder
    ("C", "stereo_diarization.wav", 0, 0.0, 5.0),
    ("A", "jfk.flac", None, 8.1, 11.0),  # ask what you can do for your country.
    ("D", "stereo_diarization.wav", 1, 0.0, 2.8),
    ("B", "hotwords.mp3", None, 0.0, 4.0),
    ("A", "jfk.flac", None, 0.0, 2.6),
    ("C", "stereo_diarization.wav", 0, 0.0, 5.0),
]


def decode(path: Path, channel: int | None) -> np.ndarray:
    args = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path)]
    if channel is not None:
        args += ["-af", f"pan=mono|c0=c{channel}"]
    args += ["-ac", "1", "-ar", str(RATE), "-f", "s16le", "-"]
    raw = subprocess.run(args, capture_output=True, check=True).stdout
    return np.frombuffer(raw, dtype=np.int16).astype(np.float32) / 32768.0


def speech_span(samples: np.ndarray) -> tuple[float, float]:
    """First and last moment of speech in ``samples`` (seconds), by frame energy."""
    frames = samples[: len(samples) // FRAME * FRAME].reshape(-1, FRAME)
    loud = np.flatnonzero(np.sqrt((frames**2).mean(axis=1)) > SPEECH_RMS)
    if not len(loud):
        return 0.0, 0.0
    return loud[0] * FRAME / RATE, (loud[-1] + 1) * FRAME / RATE


def turns_joined(pieces: Iterable[tuple[str, float, np.ndarray]]) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Pieces (speaker, pause before it in seconds, samples), each trimmed to its speech, one after another.

    Returns the clip and its turns: each piece's speaker, start and end in the clip.
    """
    parts: list[np.ndarray] = []
    turns: list[dict[str, Any]] = []
    position = 0.0
    for speaker, pause, audio in pieces:
        first, last = speech_span(audio)
        audio = audio[int(first * RATE) : int(last * RATE)]
        parts.append(np.zeros(int(pause * RATE), dtype=np.float32))
        position += pause
        turns.append({"speaker": speaker, "start": round(position, 2), "end": round(position + len(audio) / RATE, 2)})
        parts.append(audio)
        position += len(audio) / RATE
    return np.concatenate(parts), turns


def write_clip(clip: np.ndarray, turns: list[dict[str, Any]], *, path: Path, bitrate: str, sources: str) -> None:
    """``clip`` as Opus at ``path``, and its reference (duration, speakers, sources, turns) beside it as JSON."""
    with tempfile.TemporaryDirectory() as folder:
        raw = Path(folder) / "clip.raw"
        (np.clip(clip, -1, 1) * 32767).astype(np.int16).tofile(raw)
        subprocess.run(
            [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "s16le", "-ar", str(RATE), "-ac", "1"]
            + ["-i", str(raw), "-c:a", "libopus", "-b:a", bitrate, str(path)],
            check=True,
        )
    reference = {
        "duration": round(len(clip) / RATE, 2),
        "speakers": len({turn["speaker"] for turn in turns}),
        "sources": sources,
        "turns": turns,
    }
    path.with_suffix(".json").write_text(json.dumps(reference, indent=1) + "\n")
    print(f"{reference['duration']} s, {len(turns)} turns -> {path}")


def main(shared: Path) -> None:
    clip, turns = turns_joined(
        (speaker, PAUSE_SECONDS if index else 0.0, decode(shared / name, channel)[int(start * RATE) : int(end * RATE)])
        for index, (speaker, name, channel, start, end) in enumerate(PIECES)
    )
    write_clip(
        clip,
        turns,
        path=TARGET / "speakers.opus",
        bitrate="32k",
        sources="A: jfk.flac; B: hotwords.mp3; C: stereo_diarization.wav left; D: stereo_diarization.wav right",
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "audio")
