"""A transcript labelled with its speakers: each word to the speaker who said it, segments split where the speaker changes.

Pure functions over the engine's :class:`TranscriptResult` and the diarizer's turns
(:class:`SpeakerTurn`, or mappings with ``start``, ``end`` and ``speaker``, as stored).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from transcriptions.engine.diarization import SpeakerTurn
from transcriptions.engine.inference import Segment, TranscriptResult, Word


def speaker_label(number: int) -> str:
    """``SPEAKER_00``, ``SPEAKER_01``, ...: the API's name of a speaker."""
    return f"SPEAKER_{number:02d}"


def turns_from_json(data: Iterable[Mapping[str, Any]]) -> list[SpeakerTurn]:
    """Turns stored as ``[{"start", "end", "speaker"}]``."""
    return [
        SpeakerTurn(start=float(turn["start"]), end=float(turn["end"]), speaker=int(turn["speaker"])) for turn in data
    ]


def turns_json(turns: Iterable[SpeakerTurn]) -> list[dict[str, Any]]:
    """Turns as stored: ``[{"start", "end", "speaker"}]``."""
    return [{"start": turn.start, "end": turn.end, "speaker": turn.speaker} for turn in turns]


def speaker_at(start: float, end: float, turns: Sequence[SpeakerTurn]) -> int | None:
    """The speaker whose turns overlap ``start``-``end`` most; the nearest turn's when none does.

    None only when there are no turns. Ties go to the speaker of the earlier turn.
    """
    if not turns:
        return None
    overlap: dict[int, float] = {}
    for turn in turns:
        shared = min(end, turn.end) - max(start, turn.start)
        if shared > 0:
            overlap[turn.speaker] = overlap.get(turn.speaker, 0.0) + shared
    if overlap:
        return max(overlap, key=lambda speaker: overlap[speaker])
    middle = (start + end) / 2
    nearest = min(turns, key=lambda turn: max(turn.start - middle, middle - turn.end, 0.0))
    return nearest.speaker


def with_speakers(result: TranscriptResult, turns: Sequence[SpeakerTurn]) -> TranscriptResult:
    """``result`` with a ``speaker`` on every segment and word, segments split at speaker changes.

    Each word goes to the speaker whose turns overlap it most (:func:`speaker_at`); a
    segment whose words are not all one speaker's is split between words into one segment
    per run of a speaker's words: the first part keeps the segment's start, the last its
    end, the cuts fall on the words' own times. Each part keeps the segment's decoding
    figures (language, temperature, avg_logprob, ...); the tokens stay whole on the first
    part, so that the segments' tokens still spell the transcript once. A segment without
    words goes to the speaker who overlaps it most. Speakers are named ``SPEAKER_00``,
    ``SPEAKER_01``, ... in order of first appearance in the transcript; the result's text
    is unchanged. No turns at all (nobody heard): every segment is ``SPEAKER_00``'s.
    """
    ordered = sorted(turns, key=lambda turn: (turn.start, turn.end))
    parts: list[tuple[Segment, int]] = []
    for segment in result.segments:
        if not segment.words:
            speaker = speaker_at(segment.start, segment.end, ordered)
            parts.append((segment, 0 if speaker is None else speaker))
            continue
        runs: list[tuple[int, list[Word]]] = []
        for word in segment.words:
            speaker = speaker_at(word.start, word.end, ordered)
            speaker = 0 if speaker is None else speaker
            if runs and runs[-1][0] == speaker:
                runs[-1][1].append(word)
            else:
                runs.append((speaker, [word]))
        for index, (speaker, words) in enumerate(runs):
            first, last = index == 0, index == len(runs) - 1
            parts.append(
                (
                    dataclasses.replace(
                        segment,
                        start=segment.start if first else words[0].start,
                        end=segment.end if last else words[-1].end,
                        text=segment.text if len(runs) == 1 else "".join(word.word for word in words),
                        tokens=segment.tokens if first else (),
                        words=tuple(words),
                    ),
                    speaker,
                )
            )
    names: dict[int, str] = {}
    for _, speaker in parts:
        names.setdefault(speaker, speaker_label(len(names)))
    segments = []
    for index, (segment, speaker) in enumerate(parts):
        name = names[speaker]
        # A part's words are one run of its speaker's.
        words = None if segment.words is None else tuple(dataclasses.replace(w, speaker=name) for w in segment.words)
        segments.append(dataclasses.replace(segment, id=index, speaker=name, words=words))
    return dataclasses.replace(result, segments=segments)
