"""Transcript renderers: verbose_json's shape, exact SRT/VTT output, timestamps, escaping and empty transcripts.

The cue-building rules themselves are tested in test_subtitles.py; here the segments mostly
have no words (older data), whose cues fall back to the segments' text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from transcriptions.formats import FORMATS, UnknownFormat, format_timestamp, render


@dataclass(frozen=True)
class _Word:
    word: str
    start: float
    end: float
    probability: float


@dataclass(frozen=True)
class _Segment:
    start: float
    end: float
    text: str
    id: int = 0
    language: str = "en"
    words: tuple[_Word, ...] | None = None
    seek: int = 0
    tokens: tuple[int, ...] = ()
    temperature: float = 0.0
    avg_logprob: float = 0.0
    compression_ratio: float = 0.0
    no_speech_prob: float = 0.0


@dataclass(frozen=True)
class _Result:
    text: str
    segments: list[_Segment] = field(default_factory=list)
    language: str = "en"
    language_probability: float = 1.0
    duration: float = 10.0
    task: str = "transcribe"


def _result(*segments: _Segment, text: str | None = None, language: str = "en") -> _Result:
    return _Result(
        text=" ".join(s.text.strip() for s in segments) if text is None else text,
        segments=list(segments),
        language=language,
    )


TWO_SEGMENTS = _result(
    _Segment(0.0, 3.5, "First segment text.", id=0), _Segment(3.5, 8.2, "Second segment text.", id=1)
)

REFERENCE_SRT = (
    "1\n00:00:00,000 --> 00:00:03,500\nFirst segment text.\n\n2\n00:00:03,500 --> 00:00:08,200\nSecond segment text."
)
REFERENCE_VTT = (
    "WEBVTT\n\n00:00:00.000 --> 00:00:03.500\nFirst segment text.\n\n"
    "00:00:03.500 --> 00:00:08.200\nSecond segment text."
)


def _stored(result: _Result, *, word_timestamps: bool) -> dict[str, Any]:
    """The result as the job stores it: its verbose_json."""
    return render(result, "verbose_json", word_timestamps=word_timestamps)


def test_formats_lists_the_three_formats() -> None:
    assert FORMATS == ("verbose_json", "srt", "vtt")


def test_srt_matches_reference() -> None:
    # 8.2 s of speech is too long for one cue: it is split after the first full stop.
    assert render(TWO_SEGMENTS, "srt") == {"text": REFERENCE_SRT}


def test_vtt_matches_reference() -> None:
    assert render(TWO_SEGMENTS, "vtt") == {"text": REFERENCE_VTT}


def test_verbose_json_keeps_the_reference_fields_and_adds_openais() -> None:
    assert render(TWO_SEGMENTS, "verbose_json") == {
        "text": "First segment text. Second segment text.",
        "segments": [
            {
                "id": 0,
                "seek": 0,
                "start": 0.0,
                "end": 3.5,
                "text": "First segment text.",
                "tokens": [],
                "temperature": 0.0,
                "avg_logprob": 0.0,
                "compression_ratio": 0.0,
                "no_speech_prob": 0.0,
                "language": "en",
            },
            {
                "id": 1,
                "seek": 0,
                "start": 3.5,
                "end": 8.2,
                "text": "Second segment text.",
                "tokens": [],
                "temperature": 0.0,
                "avg_logprob": 0.0,
                "compression_ratio": 0.0,
                "no_speech_prob": 0.0,
                "language": "en",
            },
        ],
        "language": "en",
        "duration": 10.0,
        "task": "transcribe",
    }


WITH_WORDS = _Result(
    text="Ask not. Fragen Sie nicht.",
    segments=[
        _Segment(
            0.0,
            1.2,
            "Ask not.",
            id=0,
            language="en",
            words=(_Word(" Ask", 0.0, 0.5, 0.9), _Word(" not.", 0.5, 1.2, 0.8)),
            seek=0,
            tokens=(50364, 12320, 406, 13),
            temperature=0.2,
            avg_logprob=-0.25,
            compression_ratio=1.1,
            no_speech_prob=0.01,
        ),
        _Segment(
            1.5,
            3.0,
            "Fragen Sie nicht.",
            id=1,
            language="de",
            words=(_Word(" Fragen", 1.5, 2.0, 0.7), _Word(" Sie", 2.0, 2.3, 0.95), _Word(" nicht.", 2.3, 3.0, 0.6)),
            seek=150,
        ),
    ],
    language="de",
    duration=3.5,
    task="translate",
)


def test_verbose_json_words_only_when_asked_and_stripped() -> None:
    without = render(WITH_WORDS, "verbose_json")
    assert all("words" not in segment for segment in without["segments"])
    with_words = render(WITH_WORDS, "verbose_json", word_timestamps=True)
    assert with_words["segments"][0]["words"] == [
        {"word": "Ask", "start": 0.0, "end": 0.5, "probability": 0.9},
        {"word": "not.", "start": 0.5, "end": 1.2, "probability": 0.8},
    ]
    assert [w["word"] for w in with_words["segments"][1]["words"]] == ["Fragen", "Sie", "nicht."]
    first = with_words["segments"][0]
    assert (first["id"], first["seek"], first["tokens"], first["temperature"]) == (0, 0, [50364, 12320, 406, 13], 0.2)
    assert (first["avg_logprob"], first["compression_ratio"], first["no_speech_prob"]) == (-0.25, 1.1, 0.01)
    assert [s["language"] for s in with_words["segments"]] == ["en", "de"]
    assert (with_words["language"], with_words["duration"], with_words["task"]) == ("de", 3.5, "translate")


def test_verbose_json_segment_without_words_gets_an_empty_list() -> None:
    rendered = render(TWO_SEGMENTS, "verbose_json", word_timestamps=True)
    assert [segment["words"] for segment in rendered["segments"]] == [[], []]


@pytest.mark.parametrize("result", [TWO_SEGMENTS, WITH_WORDS], ids=["no words", "words"])
def test_results_stored_as_verbose_json_render_the_same(result: _Result) -> None:
    stored = _stored(result, word_timestamps=True)
    for fmt in FORMATS:
        assert render(stored, fmt, word_timestamps=True) == render(result, fmt, word_timestamps=True)


def test_old_stored_data_without_the_new_fields_still_renders() -> None:
    old = {
        "text": "First segment text. Second segment text.",
        "segments": [
            {"start": 0.0, "end": 3.5, "text": "First segment text."},
            {"start": 3.5, "end": 8.2, "text": "Second segment text."},
        ],
        "language": "en",
    }
    assert render(old, "srt") == {"text": REFERENCE_SRT}
    rendered = render(old, "verbose_json")
    assert [s["id"] for s in rendered["segments"]] == [0, 1]
    assert [s["language"] for s in rendered["segments"]] == ["en", "en"]
    assert (rendered["duration"], rendered["task"]) == (8.2, "transcribe")


def test_unknown_format() -> None:
    with pytest.raises(UnknownFormat):
        render(TWO_SEGMENTS, "txt")


@pytest.mark.parametrize(
    ("seconds", "srt", "vtt"),
    [
        (0.0, "00:00:00,000", "00:00:00.000"),
        (3725.5, "01:02:05,500", "01:02:05.500"),
        (360_000.25, "100:00:00,250", "100:00:00.250"),
        (1.9996, "00:00:02,000", "00:00:02.000"),
        (59.9999, "00:01:00,000", "00:01:00.000"),
        (3599.9995, "01:00:00,000", "01:00:00.000"),
        (1.0005, "00:00:01,001", "00:00:01.001"),
        (1.0004, "00:00:01,000", "00:00:01.000"),
        (8.2, "00:00:08,200", "00:00:08.200"),
        (-0.01, "00:00:00,000", "00:00:00.000"),
    ],
)
def test_timestamps(seconds: float, srt: str, vtt: str) -> None:
    assert format_timestamp(seconds, ",") == srt
    assert format_timestamp(seconds, ".") == vtt


def test_timestamp_rejects_nan() -> None:
    with pytest.raises(ValueError):
        format_timestamp(float("nan"), ",")


def test_srt_and_vtt_past_one_hour() -> None:
    result = _result(_Segment(3725.5, 3727.25, "Later."))
    assert render(result, "srt")["text"] == "1\n01:02:05,500 --> 01:02:07,250\nLater."
    assert render(result, "vtt")["text"] == "WEBVTT\n\n01:02:05.500 --> 01:02:07.250\nLater."


def test_blank_lines_in_text_do_not_break_cues() -> None:
    result = _result(
        _Segment(0.0, 1.0, "one\n\ntwo\r\n  three\n"), _Segment(1.0, 2.0, "four"), text="one\n\ntwo\r\n  three four"
    )
    assert render(result, "srt")["text"] == "1\n00:00:00,000 --> 00:00:02,000\none two three four"
    assert render(result, "vtt")["text"] == "WEBVTT\n\n00:00:00.000 --> 00:00:02.000\none two three four"


def test_vtt_escapes_markup_and_arrows() -> None:
    result = _result(_Segment(0.0, 1.0, "a < b && c > d --> e <i>f</i>"))
    cue_text = render(result, "vtt")["text"].split("\n")[-1]
    assert cue_text == "a &lt; b &amp;&amp; c &gt; d --&gt; e &lt;i&gt;f&lt;/i&gt;"
    assert "-->" not in cue_text


def test_srt_neutralises_arrows() -> None:
    result = _result(_Segment(0.0, 1.0, "go --> there ---> and ----> back -> ok"))
    cue_text = render(result, "srt")["text"].split("\n")[-1]
    assert cue_text == "go -> there -> and -> back -> ok"


def test_segments_without_text_are_left_out_and_numbering_stays_dense() -> None:
    result = _result(_Segment(0.0, 1.0, "  "), _Segment(1.0, 2.0, "Only cue."), text="Only cue.")
    assert render(result, "srt")["text"] == "1\n00:00:01,000 --> 00:00:02,000\nOnly cue."
    assert render(result, "vtt")["text"] == "WEBVTT\n\n00:00:01.000 --> 00:00:02.000\nOnly cue."


def test_empty_transcript() -> None:
    empty = _Result(text="", segments=[], duration=0.0)
    assert render(empty, "srt") == {"text": ""}
    assert render(empty, "vtt") == {"text": "WEBVTT"}
    assert render(empty, "verbose_json") == {
        "text": "",
        "segments": [],
        "language": "en",
        "duration": 0.0,
        "task": "transcribe",
    }
