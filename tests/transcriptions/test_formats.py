"""Transcript renderers: exact SRT/VTT output, timestamps, escaping and empty transcripts."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from transcriptions.formats import FORMATS, UnknownFormat, format_timestamp, render


@dataclass
class _Segment:
    start: float
    end: float
    text: str


TWO_SEGMENTS = [_Segment(0.0, 3.5, "First segment text."), _Segment(3.5, 8.2, "Second segment text.")]
TWO_SEGMENTS_TEXT = "First segment text. Second segment text."

REFERENCE_SRT = (
    "1\n00:00:00,000 --> 00:00:03,500\nFirst segment text.\n\n2\n00:00:03,500 --> 00:00:08,200\nSecond segment text."
)
REFERENCE_VTT = (
    "WEBVTT\n\n00:00:00.000 --> 00:00:03.500\nFirst segment text.\n\n"
    "00:00:03.500 --> 00:00:08.200\nSecond segment text."
)


def test_formats_lists_the_three_formats() -> None:
    assert FORMATS == ("verbose_json", "srt", "vtt")


def test_srt_matches_reference() -> None:
    assert render(TWO_SEGMENTS, TWO_SEGMENTS_TEXT, "en", "srt") == {"text": REFERENCE_SRT}


def test_vtt_matches_reference() -> None:
    assert render(TWO_SEGMENTS, TWO_SEGMENTS_TEXT, "en", "vtt") == {"text": REFERENCE_VTT}


def test_verbose_json() -> None:
    assert render(TWO_SEGMENTS, TWO_SEGMENTS_TEXT, "en", "verbose_json") == {
        "text": TWO_SEGMENTS_TEXT,
        "segments": [
            {"start": 0.0, "end": 3.5, "text": "First segment text."},
            {"start": 3.5, "end": 8.2, "text": "Second segment text."},
        ],
        "language": "en",
    }


def test_segments_stored_as_dicts_render_the_same() -> None:
    stored = [{"start": s.start, "end": s.end, "text": s.text} for s in TWO_SEGMENTS]
    for fmt in FORMATS:
        assert render(stored, TWO_SEGMENTS_TEXT, "en", fmt) == render(TWO_SEGMENTS, TWO_SEGMENTS_TEXT, "en", fmt)


def test_unknown_format() -> None:
    with pytest.raises(UnknownFormat):
        render(TWO_SEGMENTS, TWO_SEGMENTS_TEXT, "en", "txt")


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
    segments = [_Segment(3725.5, 3727.25, "Later.")]
    assert render(segments, "Later.", "en", "srt")["text"] == "1\n01:02:05,500 --> 01:02:07,250\nLater."
    assert render(segments, "Later.", "en", "vtt")["text"] == "WEBVTT\n\n01:02:05.500 --> 01:02:07.250\nLater."


def test_blank_lines_in_text_do_not_break_cues() -> None:
    segments = [_Segment(0.0, 1.0, "one\n\ntwo\r\n  three\n"), _Segment(1.0, 2.0, "four")]
    srt = render(segments, "", "en", "srt")["text"]
    vtt = render(segments, "", "en", "vtt")["text"]
    assert srt == "1\n00:00:00,000 --> 00:00:01,000\none two three\n\n2\n00:00:01,000 --> 00:00:02,000\nfour"
    assert vtt == "WEBVTT\n\n00:00:00.000 --> 00:00:01.000\none two three\n\n00:00:01.000 --> 00:00:02.000\nfour"


def test_vtt_escapes_markup_and_arrows() -> None:
    segments = [_Segment(0.0, 1.0, "a < b && c > d --> e <i>f</i>")]
    cue_text = render(segments, "", "en", "vtt")["text"].split("\n")[-1]
    assert cue_text == "a &lt; b &amp;&amp; c &gt; d --&gt; e &lt;i&gt;f&lt;/i&gt;"
    assert "-->" not in cue_text


def test_srt_neutralises_arrows() -> None:
    segments = [_Segment(0.0, 1.0, "go --> there ---> and ----> back -> ok")]
    cue_text = render(segments, "", "en", "srt")["text"].split("\n")[-1]
    assert cue_text == "go -> there -> and -> back -> ok"


def test_segments_without_text_are_left_out_and_numbering_stays_dense() -> None:
    segments = [_Segment(0.0, 1.0, "  "), _Segment(1.0, 2.0, "Only cue.")]
    assert render(segments, "Only cue.", "en", "srt")["text"] == "1\n00:00:01,000 --> 00:00:02,000\nOnly cue."
    assert render(segments, "Only cue.", "en", "vtt")["text"] == "WEBVTT\n\n00:00:01.000 --> 00:00:02.000\nOnly cue."


def test_empty_transcript() -> None:
    assert render([], "", "en", "srt") == {"text": ""}
    assert render([], "", "en", "vtt") == {"text": "WEBVTT"}
    assert render([], "", None, "verbose_json") == {"text": "", "segments": [], "language": None}
