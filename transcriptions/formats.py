"""Render a transcript's segments in the formats the API offers: verbose_json, srt and vtt.

Pure functions without Django or model imports, so results stored as JSON can be rendered
again later. A segment is anything with ``start``, ``end`` (seconds) and ``text``, either
as attributes (``transcriptions.engine.Segment``) or as mapping keys (a stored dict).

Every format is returned as a JSON-ready dict; the subtitle formats put the whole file in
``"text"``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Protocol

FORMATS = ("verbose_json", "srt", "vtt")
# What POST /transcribe makes when no format is asked for.
DEFAULT_FORMAT = "verbose_json"


class SegmentLike(Protocol):
    """What the renderers read from a segment."""

    start: float
    end: float
    text: str


class UnknownFormat(ValueError):
    """A format name outside :data:`FORMATS`."""


_WHITESPACE_RUN = re.compile(r"\s+")
# "--->" must become "->" too, so any run of dashes before ">" is shortened at once.
_ARROW = re.compile(r"-{2,}>")


def render(
    result_segments: Sequence[SegmentLike | Mapping[str, Any]],
    text: str,
    language: str | None,
    fmt: str,
) -> dict[str, Any]:
    """Render a transcript in format ``fmt`` (one of :data:`FORMATS`).

    ``verbose_json`` gives ``{"text", "segments": [{"start", "end", "text"}, ...],
    "language"}``; ``srt`` and ``vtt`` give ``{"text": <the subtitle file>}`` (see
    :func:`render_srt` and :func:`render_vtt`). Raises :class:`UnknownFormat`.
    """
    if fmt == "verbose_json":
        return {
            "text": text,
            "segments": [
                {"start": start, "end": end, "text": body} for start, end, body in map(_segment_fields, result_segments)
            ],
            "language": language,
        }
    if fmt == "srt":
        return {"text": render_srt(result_segments)}
    if fmt == "vtt":
        return {"text": render_vtt(result_segments)}
    raise UnknownFormat(f"Unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")


def render_srt(segments: Sequence[SegmentLike | Mapping[str, Any]]) -> str:
    """SubRip text: numbered cues separated by one blank line, no trailing newline.

    Cue text is put on a single line (every run of whitespace, newlines included, becomes
    one space) so that a blank line inside a segment can never end its cue early; players
    wrap long lines themselves. "-->" in text is shortened to "->" so that no text line can
    be taken for a timing line. Segments with no text are left out (and not numbered), and
    no segments at all give "".
    """
    blocks: list[str] = []
    for start, end, text in map(_segment_fields, segments):
        cue_text = _ARROW.sub("->", _single_line(text))
        if not cue_text:
            continue
        timing = f"{format_timestamp(start, ',')} --> {format_timestamp(end, ',')}"
        blocks.append(f"{len(blocks) + 1}\n{timing}\n{cue_text}")
    return "\n\n".join(blocks)


def render_vtt(segments: Sequence[SegmentLike | Mapping[str, Any]]) -> str:
    """WebVTT text: the "WEBVTT" header, then cues separated by one blank line, no trailing newline.

    Cue text is put on a single line as in :func:`render_srt`, and "&", "<" and ">" are
    escaped as character references as WebVTT requires (which also turns "-->" into
    "--&gt;", so it cannot appear in cue text). Segments with no text are left out; no
    segments at all give just "WEBVTT", a valid empty file.
    """
    blocks = ["WEBVTT"]
    for start, end, text in map(_segment_fields, segments):
        cue_text = _escape_vtt(_single_line(text))
        if not cue_text:
            continue
        blocks.append(f"{format_timestamp(start, '.')} --> {format_timestamp(end, '.')}\n{cue_text}")
    return "\n\n".join(blocks)


def format_timestamp(seconds: float, decimal_marker: str) -> str:
    """Format seconds as ``HH:MM:SS<marker>mmm``, rounded half up to the millisecond.

    Hours keep growing past 99 ("100:00:00,000"). Negative times are clamped to zero.
    Rounding goes through the decimal form of the float, so 1.0005 gives 00:00:01,001
    (binary floating point would make it 1000.4999... ms) and 1.9996 gives 00:00:02,000.
    """
    if not math.isfinite(seconds):
        raise ValueError(f"Cannot format a timestamp of {seconds!r} seconds")
    milliseconds = int((Decimal(repr(float(seconds))) * 1000).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    milliseconds = max(0, milliseconds)
    hours, milliseconds = divmod(milliseconds, 3_600_000)
    minutes, milliseconds = divmod(milliseconds, 60_000)
    whole_seconds, milliseconds = divmod(milliseconds, 1000)
    return f"{hours:02d}:{minutes:02d}:{whole_seconds:02d}{decimal_marker}{milliseconds:03d}"


def _segment_fields(segment: SegmentLike | Mapping[str, Any]) -> tuple[float, float, str]:
    if isinstance(segment, Mapping):
        start, end, text = segment["start"], segment["end"], segment["text"]
    else:
        start, end, text = segment.start, segment.end, segment.text
    return float(start), float(end), str(text).strip()


def _single_line(text: str) -> str:
    return _WHITESPACE_RUN.sub(" ", text).strip()


def _escape_vtt(text: str) -> str:
    # "&" first, or the other references would be escaped twice.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
