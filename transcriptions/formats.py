"""Render a transcript in the formats the API offers: verbose_json, srt and vtt.

Pure functions without Django or model imports, so results stored as JSON can be rendered
again later. A result is read by name, either as attributes (the engine's
``TranscriptResult`` with its ``Segment`` and ``Word``) or as mapping keys (verbose_json
stored as a dict); fields that older stored data lacks get neutral defaults.

Every format is returned as a JSON-ready dict; the subtitle formats put the whole file in
``"text"`` (their cues are built by :mod:`transcriptions.subtitles`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from transcriptions.subtitles import SRT_SPEAKER_LABEL, build_cues, format_timestamp, render_srt, render_vtt

__all__ = ["DEFAULT_FORMAT", "FORMATS", "UnknownFormat", "format_timestamp", "render", "verbose_json"]

FORMATS = ("verbose_json", "srt", "vtt")
# What POST /transcribe makes when no format is asked for.
DEFAULT_FORMAT = "verbose_json"


class UnknownFormat(ValueError):
    """A format name outside :data:`FORMATS`."""


def render(result: Any, fmt: str, *, word_timestamps: bool = False) -> dict[str, Any]:
    """Render a transcript result in format ``fmt`` (one of :data:`FORMATS`).

    ``verbose_json`` is :func:`verbose_json`; ``srt`` and ``vtt`` give ``{"text": <the
    subtitle file>}`` whose cues follow timed-text rules (see
    :func:`transcriptions.subtitles.build_cues`); ``word_timestamps`` only decides whether
    verbose_json lists the words, subtitles always use them. Raises :class:`UnknownFormat`.
    """
    if fmt == "verbose_json":
        return verbose_json(result, word_timestamps=word_timestamps)
    if fmt == "srt":
        return {"text": render_srt(build_cues(result, label_format=SRT_SPEAKER_LABEL))}
    if fmt == "vtt":
        return {"text": render_vtt(build_cues(result))}
    raise UnknownFormat(f"Unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")


def verbose_json(result: Any, *, word_timestamps: bool = False) -> dict[str, Any]:
    """``{"text", "segments", "language", "duration", "task"}``.

    Each segment has ``id``, ``seek``, ``start``, ``end``, ``text`` (stripped), ``tokens``,
    ``temperature``, ``avg_logprob``, ``compression_ratio``, ``no_speech_prob`` (OpenAI's
    fields) and its ``language`` (the result's where the segment has none), and with
    ``word_timestamps`` its ``words``: ``[{"word" (stripped), "start", "end",
    "probability"}]`` (empty where the segment has none). A transcript whose speakers were
    told apart has ``speaker`` on each segment and word.
    """
    language = _field(result, "language")
    segments = []
    for index, segment in enumerate(_field(result, "segments") or ()):
        rendered = {
            "id": _field(segment, "id", index),
            "seek": _field(segment, "seek", 0),
            "start": float(_field(segment, "start")),
            "end": float(_field(segment, "end")),
            "text": str(_field(segment, "text", "")).strip(),
            "tokens": list(_field(segment, "tokens", None) or ()),
            "temperature": _field(segment, "temperature", 0.0),
            "avg_logprob": _field(segment, "avg_logprob", 0.0),
            "compression_ratio": _field(segment, "compression_ratio", 0.0),
            "no_speech_prob": _field(segment, "no_speech_prob", 0.0),
            "language": _field(segment, "language", None) or language,
        }
        speaker = _field(segment, "speaker", None)
        if speaker is not None:
            rendered["speaker"] = speaker
        if word_timestamps:
            rendered["words"] = [_word(word) for word in _field(segment, "words", None) or ()]
        segments.append(rendered)
    duration = _field(result, "duration")
    if duration is None:
        # Stored before the duration was recorded: the end of the last segment is the best guess.
        duration = max((segment["end"] for segment in segments), default=0.0)
    return {
        "text": _field(result, "text", ""),
        "segments": segments,
        "language": language,
        "duration": duration,
        "task": _field(result, "task", None) or "transcribe",
    }


def _word(word: Any) -> dict[str, Any]:
    rendered = {
        "word": str(_field(word, "word", "")).strip(),
        "start": float(_field(word, "start")),
        "end": float(_field(word, "end")),
        "probability": _field(word, "probability"),
    }
    speaker = _field(word, "speaker", None)
    if speaker is not None:
        rendered["speaker"] = speaker
    return rendered


def _field(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)
