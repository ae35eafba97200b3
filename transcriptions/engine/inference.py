"""Transcribing an audio file with a loaded model."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from faster_whisper import WhisperModel

from transcriptions.engine.errors import InvalidLanguage
from transcriptions.engine.languages import validate_language


@dataclass(frozen=True, slots=True)
class Segment:
    """One timed piece of a transcript; times in seconds, rounded to milliseconds."""

    start: float
    end: float
    text: str


@dataclass(frozen=True, slots=True)
class TranscriptResult:
    """Everything a transcription produced, independent of the output format."""

    text: str
    segments: list[Segment]
    language: str
    language_probability: float
    duration: float


def transcribe(
    model: WhisperModel,
    audio_path: str | Path,
    *,
    language: str | None,
    vad_filter: bool,
    beam_size: int = 5,
) -> TranscriptResult:
    """Transcribe an audio file (WAV, FLAC, MP3, ... anything PyAV decodes) to completion.

    ``language`` None means: "en" for an English-only model, detection otherwise. Raises
    :class:`InvalidLanguage` for a code the model cannot use.

    Decoding does not condition on the previous window's text: on a 60 s clip of varied
    speech the English text came out nearly the same either way, but conditioning is what
    lets one bad window turn into a repetition loop across the following ones, and without
    it segments stay short (about 5 s, better subtitles) instead of growing to 13 s. The
    cost: a window the model cannot decode (speech in another language than the one set)
    goes through all fallback temperatures instead of being dropped as silence.
    """
    multilingual = model.model.is_multilingual
    if language is None and not multilingual:
        # Language detection is meaningless for an English-only model.
        language = "en"
    if language is not None:
        validate_language(language, multilingual)
    try:
        raw_segments, info = model.transcribe(
            str(audio_path),
            language=language,
            vad_filter=vad_filter,
            beam_size=beam_size,
            condition_on_previous_text=False,
        )
    except ValueError as error:
        # faster-whisper reports a language it does not know with a plain ValueError.
        if "language" in str(error):
            raise InvalidLanguage(str(error)) from error
        raise
    # Segments are produced lazily: decoding happens while this list is built.
    raw_texts: list[str] = []
    segments: list[Segment] = []
    for raw in raw_segments:
        raw_texts.append(raw.text)
        segments.append(Segment(start=round(raw.start, 3), end=round(raw.end, 3), text=raw.text.strip()))
    return TranscriptResult(
        text=join_segment_texts(raw_texts),
        segments=segments,
        language=info.language,
        language_probability=float(info.language_probability),
        duration=float(info.duration),
    )


def join_segment_texts(raw_texts: Iterable[str]) -> str:
    """Join Whisper's segment texts into one text, keeping the model's own word spacing.

    Whisper starts a segment with a space where a word boundary is (every segment in
    English, German, ...) and with none in scripts written without spaces (Chinese,
    Japanese, Thai). So a segment is joined with one space when it started with whitespace
    and with nothing otherwise: " ".join would put spaces into Chinese text, and a plain
    "".join could leave double spaces when a segment also ends with one.
    """
    pieces: list[str] = []
    for raw in raw_texts:
        text = raw.strip()
        if not text:
            continue
        if pieces and raw[:1].isspace():
            pieces.append(" ")
        pieces.append(text)
    return "".join(pieces)
