"""Subtitle cues follow timed-text rules: 42 characters a line, 2 lines, 7 s a cue, split at words.

Every file is parsed back (a small SRT and WebVTT reader below) and checked against the
words it was made from: no word lost, repeated or changed against the transcript's text,
lines and cues starting and ending at word boundaries, cue times from the words' times.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest

from transcriptions.engine import join_segment_texts
from transcriptions.formats import render
from transcriptions.subtitles import (
    LINGER_SECONDS,
    MAX_CUE_SECONDS,
    MAX_LINE_CHARS,
    MAX_PAUSE_SECONDS,
    MIN_CUE_SECONDS,
    Cue,
    build_cues,
)

# The engine's data classes, duck-typed (transcriptions.engine's Word, Segment, TranscriptResult).


@dataclass(frozen=True)
class Word:
    word: str  # with Whisper's leading space where the text has one
    start: float
    end: float
    probability: float = 0.9


@dataclass(frozen=True)
class Segment:
    id: int
    start: float
    end: float
    text: str
    language: str
    words: tuple[Word, ...] | None = None


@dataclass(frozen=True)
class Result:
    text: str
    segments: list[Segment]
    language: str
    duration: float
    language_probability: float = 1.0
    task: str = "transcribe"


LINE_LIMITS = {"ja": 13, "zh": 16}
SPACELESS = {"ja", "zh"}


def make_result(segment_words: list[tuple[str, list[Word]]], *, duration: float | None = None) -> Result:
    """A result from (language, words) per segment, texts made from the words as Whisper does."""
    segments = []
    for index, (language, words) in enumerate(segment_words):
        raw = "".join(w.word for w in words)
        start, end = (words[0].start, words[-1].end) if words else (0.0, 0.0)
        segments.append(Segment(index, start, end, raw.strip(), language, tuple(words)))
    raws = ["".join(w.word for w in words) for _, words in segment_words]
    last_end = max((s.end for s in segments), default=0.0)
    language = segments[0].language if segments else "en"
    return Result(join_segment_texts(raws), segments, language, last_end + 1.0 if duration is None else duration)


def spoken(text: str, *, start: float = 0.0, seconds_per_char: float = 0.06, gap: float = 0.05) -> list[Word]:
    """Words of an English text spoken at an even pace (about 15 characters a second)."""
    words = []
    time = start
    for token in text.split():
        length = max(0.1, len(token) * seconds_per_char)
        words.append(Word(" " + token, round(time, 3), round(time + length, 3)))
        time += length + gap
    return words


def as_stored(result: Result) -> dict[str, Any]:
    """The result as a job stores it: verbose_json with stripped words."""
    return render(result, "verbose_json", word_timestamps=True)


# --- Reading the files back ---------------------------------------------------------------


@dataclass(frozen=True)
class ParsedCue:
    start: int  # milliseconds
    end: int
    lines: tuple[str, ...]


_TIMING = re.compile(r"^(\d{2,}):(\d{2}):(\d{2})([,.])(\d{3}) --> (\d{2,}):(\d{2}):(\d{2})([,.])(\d{3})$")


def _timing(line: str, marker: str) -> tuple[int, int]:
    match = _TIMING.match(line)
    assert match, f"not a timing line: {line!r}"
    h1, m1, s1, d1, ms1, h2, m2, s2, d2, ms2 = match.groups()
    assert d1 == d2 == marker
    start = ((int(h1) * 60 + int(m1)) * 60 + int(s1)) * 1000 + int(ms1)
    end = ((int(h2) * 60 + int(m2)) * 60 + int(s2)) * 1000 + int(ms2)
    return start, end


def parse_srt(text: str) -> list[ParsedCue]:
    if text == "":
        return []
    assert not text.endswith("\n") and "\n\n\n" not in text
    cues = []
    for number, block in enumerate(text.split("\n\n"), start=1):
        lines = block.split("\n")
        assert lines[0] == str(number)
        start, end = _timing(lines[1], ",")
        body = tuple(lines[2:])
        assert body and all(line.strip() == line and line for line in body)
        assert not any("-->" in line for line in body)
        cues.append(ParsedCue(start, end, body))
    return cues


def parse_vtt(text: str) -> list[ParsedCue]:
    blocks = text.split("\n\n")
    assert blocks[0] == "WEBVTT"
    assert not text.endswith("\n") and "\n\n\n" not in text
    cues = []
    for block in blocks[1:]:
        lines = block.split("\n")
        start, end = _timing(lines[0], ".")
        body = lines[1:]
        assert body and all(line.strip() == line and line for line in body)
        for line in body:
            assert "-->" not in line and "<" not in line and ">" not in line
            assert re.fullmatch(r"([^&]|&amp;|&lt;|&gt;)*", line), line
        cues.append(ParsedCue(start, end, tuple(_unescape_vtt(line) for line in body)))
    return cues


def _unescape_vtt(line: str) -> str:
    return line.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def cues_of(result: Any, fmt: str = "srt") -> list[ParsedCue]:
    text = render(result, fmt)["text"]
    return parse_srt(text) if fmt == "srt" else parse_vtt(text)


def ms(seconds: float) -> int:
    """Seconds in milliseconds as the files write them: rounded half up."""
    return int((Decimal(repr(float(seconds))) * 1000).quantize(Decimal(1), rounding=ROUND_HALF_UP))


# --- The rules, checked on a parsed file against the words it was made from -----------------


@dataclass
class Unit:
    """A word as the cues must keep it: its text without spaces, its times and language."""

    text: str
    start: float
    end: float
    language: str


def units_of(result: Result) -> list[Unit]:
    units = []
    for segment in result.segments:
        if segment.words is not None:
            units.extend(
                Unit(w.word.strip(), w.start, w.end, segment.language) for w in segment.words if w.word.strip()
            )
        else:
            # Older data: words at whitespace, times interpolated by characters.
            parts = segment.text.split()
            total = sum(len(p) for p in parts)
            done = 0
            for part in parts:
                start = segment.start + (segment.end - segment.start) * done / total
                done += len(part)
                units.append(
                    Unit(part, start, segment.start + (segment.end - segment.start) * done / total, segment.language)
                )
    return units


def check_rules(result: Result, cues: list[ParsedCue]) -> None:
    """Every rule of the timed-text style the subtitles promise."""
    units = units_of(result)
    text = " ".join(result.text.split())

    # No word lost, repeated or changed, and no space added or dropped: each line is the
    # transcript's text from where the previous line ended, after its whitespace if any.
    position = 0
    for cue in cues:
        for line in cue.lines:
            while position < len(text) and text[position] == " ":
                position += 1
            assert text.startswith(line, position), (line, text[position : position + 60])
            position += len(line)
    assert text[position:].strip() == ""
    if not any(u.language in SPACELESS for u in units):
        assert " ".join(" ".join(cue.lines) for cue in cues).split() == result.text.split()

    # Lines and cues begin and end at word boundaries: map characters (without spaces) to words.
    boundary_to_unit = {}
    chars = 0
    for index, unit in enumerate(units):
        chars += len(unit.text)
        boundary_to_unit[chars] = index
    chars = 0
    first_unit = 0
    spans = []
    for cue in cues:
        assert 1 <= len(cue.lines) <= 2, cue
        line_units = []
        for line in cue.lines:
            chars += len("".join(line.split()))
            assert chars in boundary_to_unit, f"line {line!r} ends inside a word"
            last_unit = boundary_to_unit[chars]
            line_units.append((first_unit, last_unit))
            first_unit = last_unit + 1
        spans.append((line_units[0][0], line_units[-1][1]))
        for line, (a, b) in zip(cue.lines, line_units, strict=True):
            limit = LINE_LIMITS.get(units[a].language, MAX_LINE_CHARS)
            # A word longer than a line is never cut: it gets the line to itself (in a
            # language with spaces, a word may be several of Whisper's words).
            one_word = a == b or (units[a].language not in SPACELESS and " " not in line)
            assert len(line) <= limit or one_word, (line, len(line))

    for index, (cue, (a, b)) in enumerate(zip(cues, spans, strict=True)):
        duration_ms = cue.end - cue.start
        assert 0 <= duration_ms <= ms(MAX_CUE_SECONDS), cue
        # One language a cue, and never over a long silence.
        assert len({u.language for u in units[a : b + 1]}) == 1, cue
        for before, after in zip(units[a:b], units[a + 1 : b + 1], strict=True):
            assert after.start - before.end <= MAX_PAUSE_SECONDS + 1e-9, cue
        # From the first word's start to the last word's end, lengthened a little at most.
        assert cue.start == ms(units[a].start), cue
        next_start = cues[index + 1].start if index + 1 < len(cues) else ms(max(result.duration, units[b].end))
        assert cue.end >= min(ms(units[b].end), cue.start + ms(MAX_CUE_SECONDS)) - 1, cue
        assert cue.end <= max(ms(units[b].end) + ms(LINGER_SECONDS), cue.start + ms(MIN_CUE_SECONDS)) + 1, cue
        # On screen at least 5/6 s unless the next cue comes sooner; never overlapping it.
        assert cue.end >= min(cue.start + ms(MIN_CUE_SECONDS), next_start) - 1, cue
        assert cue.end <= next_start, cue
    assert spans == [] or (spans[0][0] == 0 and spans[-1][1] == len(units) - 1)


def check_both(result: Result) -> tuple[list[ParsedCue], list[ParsedCue]]:
    srt, vtt = cues_of(result, "srt"), cues_of(result, "vtt")
    check_rules(result, srt)
    check_rules(result, vtt)
    assert srt == vtt
    return srt, vtt


def texts(cues: list[ParsedCue]) -> list[str]:
    return ["\n".join(cue.lines) for cue in cues]


# --- Hand-made cases ----------------------------------------------------------------------


def test_a_short_sentence_is_one_cue_of_one_line_timed_by_its_words() -> None:
    result = make_result([("en", spoken("And so my fellow Americans.", start=1.25))])
    (cue,), _ = check_both(result)
    assert cue.lines == ("And so my fellow Americans.",)
    assert cue.start == 1250
    assert cue.end >= ms(result.segments[0].words[-1].end)


def test_a_long_sentence_is_split_into_cues_of_two_balanced_lines() -> None:
    sentence = (
        "The committee met on a cold Tuesday morning in the old town hall to discuss the new budget "
        "for the public library and the swimming pool that everybody in the village wanted repaired soon"
    )
    cues, _ = check_both(make_result([("en", spoken(sentence))]))
    assert len(cues) == 3
    for cue in cues:
        assert len(cue.lines) == 2
        top, bottom = (len(line) for line in cue.lines)
        assert abs(top - bottom) <= 16, cue.lines


def test_cues_end_at_sentence_ends_when_the_sentences_fit() -> None:
    sentences = [
        "This first sentence is about fifty characters long.",
        "The second one is a good deal longer than the first, at sixty-five.",
        "The third is short.",
        "And the fourth closes the paragraph without any hurry at all.",
    ]
    cues, _ = check_both(make_result([("en", spoken(" ".join(sentences)))]))
    assert [" ".join(cue.lines) for cue in cues] == sentences[:2] + [" ".join(sentences[2:])]


def test_a_clause_break_is_preferred_to_a_break_between_any_two_words() -> None:
    sentence = (
        "Because the bridge was closed for repairs all through the winter, "
        "the children had to walk around the lake to get to school every day"
    )
    cues, _ = check_both(make_result([("en", spoken(sentence))]))
    assert len(cues) == 2
    assert " ".join(cues[0].lines).endswith("winter,")


def test_a_line_break_falls_after_punctuation_when_it_keeps_the_lines_even_enough() -> None:
    cues, _ = check_both(make_result([("en", spoken("Well, I suppose so. We could try again next week if you like."))]))
    assert cues[0].lines == ("Well, I suppose so.", "We could try again next week if you like.")


def test_a_word_longer_than_a_line_gets_a_line_of_its_own() -> None:
    long_word = "Pneumonoultramicroscopicsilicovolcanoconiosis-and-its-cousins"  # 61 characters
    assert len(long_word) > MAX_LINE_CHARS
    result = make_result([("en", spoken(f"The doctor said {long_word} was rare."))])
    cues, _ = check_both(result)
    lines = [line for cue in cues for line in cue.lines]
    assert long_word in lines
    assert all(len(line) <= MAX_LINE_CHARS for line in lines if line != long_word)


def test_a_long_pause_starts_a_new_cue() -> None:
    words = spoken("Hello there.") + spoken("General Kenobi.", start=0.8 + MAX_PAUSE_SECONDS + 0.5)
    cues, _ = check_both(make_result([("en", words)]))
    assert texts(cues) == ["Hello there.", "General Kenobi."]


def test_a_short_pause_does_not() -> None:
    words = spoken("Hello there.") + spoken("General Kenobi.", start=1.8)
    cues, _ = check_both(make_result([("en", words)]))
    assert texts(cues) == ["Hello there. General Kenobi."]


def test_slow_speech_is_split_at_seven_seconds() -> None:
    # About ten seconds for 61 characters: short enough for one cue's text, too long for its time.
    words = spoken("I am speaking very slowly so that everyone here can follow me", seconds_per_char=0.17, gap=0.2)
    assert words[-1].end - words[0].start > MAX_CUE_SECONDS
    cues, _ = check_both(make_result([("en", words)]))
    assert len(cues) == 2
    assert all(cue.end - cue.start <= ms(MAX_CUE_SECONDS) for cue in cues)


def test_a_single_word_stretched_over_ten_seconds_is_shown_for_seven() -> None:
    result = make_result([("en", [Word(" Hmm.", 2.0, 12.0)])], duration=20.0)
    (cue,), _ = check_both(result)
    assert (cue.start, cue.end) == (2000, 9000)


def test_a_short_cue_stays_five_sixths_of_a_second_unless_the_next_comes_sooner() -> None:
    lone = make_result([("en", [Word(" Yes.", 1.0, 1.2)]), ("en", [Word(" No.", 5.0, 5.2)])], duration=5.3)
    first, last = cues_of(lone)
    check_both(lone)
    assert (first.start, first.end) == (1000, 1000 + ms(MIN_CUE_SECONDS))
    assert (last.start, last.end) == (5000, 5300)  # not past the end of the audio
    crowded = make_result([("de", [Word(" Ja.", 1.0, 1.2)]), ("en", [Word(" Yes.", 1.5, 1.7)])])
    first, second = cues_of(crowded)
    check_both(crowded)
    assert (first.end, second.start) == (1500, 1500)


def test_quick_speech_lingers_a_little_for_reading() -> None:
    # 40 characters in one second: the reader needs two, the cue stays half a second longer.
    words = spoken("Quickly now, everybody get into the van!", seconds_per_char=0.02, gap=0.0)
    (cue,), _ = check_both(make_result([("en", words)], duration=10.0))
    assert cue.end == ms(words[-1].end + LINGER_SECONDS)


def test_a_cue_never_mixes_two_languages() -> None:
    result = make_result([("en", spoken("Ask not.")), ("de", spoken("Fragen Sie nicht.", start=0.8))])
    cues, _ = check_both(result)
    assert texts(cues) == ["Ask not.", "Fragen Sie nicht."]


def test_segments_of_one_language_share_cues() -> None:
    result = make_result([("en", spoken("So this is")), ("en", spoken("how it ends.", start=0.8))])
    cues, _ = check_both(result)
    assert texts(cues) == ["So this is how it ends."]


def test_japanese_is_joined_without_spaces_and_counted_in_characters() -> None:
    # Whisper's Japanese words: a few characters each, without leading spaces.
    tokens = "今日は|とても|いい|天気|です|ね。|明日|も|晴れ|る|と|いい|です|ね。|公園|に|行き|ましょう|か。"
    words, time = [], 0.0
    for index, token in enumerate(tokens.split("|")):
        words.append(Word((" " if index == 0 else "") + token, round(time, 3), round(time + 0.3, 3)))
        time += 0.35
    result = make_result([("ja", words)])
    cues, _ = check_both(result)
    lines = [line for cue in cues for line in cue.lines]
    assert " " not in "".join(lines)
    assert "".join(lines) == result.text
    assert all(len(line) <= LINE_LIMITS["ja"] for line in lines)
    assert [cue.lines[-1][-2:] for cue in cues] == ["ね。", "か。"]  # cues end at sentence ends


def test_chinese_without_words_is_split_between_characters() -> None:
    text = "我们今天讨论的是城市公共交通的发展，以及它对环境和居民生活质量的长期影响。"
    result = Result(text, [Segment(0, 0.0, 6.0, text, "zh")], "zh", 6.0)
    cues = cues_of(result)
    lines = [line for cue in cues for line in cue.lines]
    assert "".join(lines) == text
    assert all(len(line) <= LINE_LIMITS["zh"] for line in lines)
    assert all(not line.startswith(("，", "。")) for line in lines)


def test_english_words_inside_japanese_keep_their_spaces() -> None:
    words = [
        Word(" 新しい", 0.0, 0.4),
        Word(" iPhone", 0.4, 0.9),
        Word(" を", 0.9, 1.0),
        Word("買い", 1.0, 1.3),
        Word("ました。", 1.3, 1.8),
    ]
    result = make_result([("ja", words)])
    cues, _ = check_both(result)
    assert result.text == "新しい iPhone を買いました。"
    assert " ".join(" ".join(cue.lines) for cue in cues).replace("\n", "") in {
        result.text,
        result.text.replace(" を", "\nを"),
    }


def test_a_word_whisper_hands_to_the_previous_segment_keeps_its_place_and_time() -> None:
    # Whisper merges an opening quote into the next word, and may then list that word with
    # the segment before the one whose text holds it.
    first = Segment(
        0, 0.0, 1.6, 'He said, "', "en", (Word(" He", 0.0, 0.3), Word(" said,", 0.3, 0.8), Word(' "Hello', 0.9, 1.6))
    )
    second = Segment(1, 1.6, 2.4, 'Hello there."', "en", (Word(' there."', 1.7, 2.4),))
    result = Result(join_segment_texts([' He said, "', 'Hello there."']), [first, second], "en", 3.0)
    assert result.text == 'He said, "Hello there."'
    (cue,) = cues_of(result)
    assert cue.lines == ('He said, "Hello there."',)
    assert (cue.start, cue.end) == (0, 2400)


def test_words_that_do_not_spell_the_text_give_way_to_the_text() -> None:
    # Inconsistent data (a word missing): the cues keep the text's words, timed by characters.
    segment = Segment(0, 0.0, 2.0, "One two three.", "en", (Word(" One", 0.0, 0.5), Word(" three.", 1.2, 2.0)))
    result = Result("One two three.", [segment], "en", 2.0)
    (cue,) = cues_of(result)
    assert cue.lines == ("One two three.",)
    assert (cue.start, cue.end) == (0, 2000)


def test_segments_without_words_fall_back_to_their_text() -> None:
    text = "Old data has no words, so the text is split at its spaces and timed by its characters instead of words."
    result = Result(text, [Segment(0, 10.0, 16.0, text, "en")], "en", 20.0)
    cues, _ = check_both(result)
    assert len(cues) == 2
    assert cues[0].start == 10000 and cues[-1].end >= 16000


def test_stored_verbose_json_renders_the_same_cues() -> None:
    result = make_result(
        [("en", spoken("So this is")), ("en", spoken("how it ends, with a long sentence.", start=0.8))]
    )
    for fmt in ("srt", "vtt"):
        assert render(as_stored(result), fmt) == render(result, fmt)


def test_a_word_whisper_splits_at_punctuation_is_never_split_by_a_line_or_cue() -> None:
    # Whisper's words for "3.5" are " 3" and ".5"; a break between them would change the text.
    sentence = "The price went up from 3 .5 to 4 .25 per cent , said Dr . O 'Brien of the U .S . central bank"
    for filler in range(12):
        # Each number of words in front moves the line and cue breaks; none may split a word.
        tokens = ["well"] * filler + sentence.split()
        pieces = [token if token[0] in ".'," else " " + token for token in tokens]
        words = [Word(piece, round(0.2 * index, 3), round(0.2 * index + 0.15, 3)) for index, piece in enumerate(pieces)]
        result = make_result([("en", words)])
        assert "3.5" in result.text and "O'Brien" in result.text
        for fmt in ("srt", "vtt"):
            cues = cues_of(result, fmt)
            assert " ".join(" ".join(cue.lines) for cue in cues).split() == result.text.split()


def test_overlapping_or_unordered_word_times_never_give_overlapping_cues() -> None:
    words = [Word(" one.", 0.0, 3.0), Word(" two", 1.0, 1.5), Word(" three.", 0.5, 9.0), Word(" four.", 8.0, 8.5)]
    result = Result(
        "one. two three. four.", [Segment(0, 0.0, 9.0, "one. two three. four.", "en", tuple(words))], "en", 10.0
    )
    cues = build_cues(result)
    assert " ".join(" ".join(cue.lines) for cue in cues) == result.text
    for before, after in zip(cues, cues[1:], strict=False):
        assert before.start <= before.end <= after.start
    assert all(cue.end - cue.start <= MAX_CUE_SECONDS for cue in cues)


def test_markup_in_words_is_escaped_in_vtt_and_arrows_shortened_in_srt() -> None:
    result = make_result([("en", spoken("if a < b --> swap & go"))])
    (vtt,) = cues_of(result, "vtt")
    assert vtt.lines == ("if a < b --> swap & go",)
    assert render(result, "vtt")["text"].endswith("if a &lt; b --&gt; swap &amp; go")
    assert render(result, "srt")["text"].endswith("if a < b -> swap & go")


def test_no_segments_give_empty_files() -> None:
    empty = Result("", [], "en", 0.0)
    assert build_cues(empty) == []
    assert render(empty, "srt") == {"text": ""}
    assert render(empty, "vtt") == {"text": "WEBVTT"}


def test_cues_are_plain_data() -> None:
    (cue,) = build_cues(make_result([("en", [Word(" Hi.", 0.5, 0.9)])], duration=5.0))
    assert cue == Cue(0.5, 0.5 + MIN_CUE_SECONDS, ("Hi.",))


# --- Random word streams ------------------------------------------------------------------

VOCABULARY = (
    "the a of and to in is you that it he was for on are as with his they I at be this have from or one had by "
    "word but not what all were we when your can said there use an each which she do how their if will up other "
    "about out many then them these so some her would make like him into time has look two more write go see "
    "number no way could people my than first water been call who oil its now find long down day did get come "
    "made may part Zürich naïve café O'Brien e-mail 3.5 100% C++ Dr. U.S. rock'n'roll"
).split()
PUNCTUATION = ["", "", "", "", "", ",", ",", ".", "?", "!", ";", ":", "...", '."', "),", "—"]
KANA = "あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめもやゆよらりるれろわをん"
HAN = "日本語中文字学生時間会社今年明後天气我们的是不了人在有他这为之大来以个"


def random_token(rng: random.Random, language: str) -> str:
    if language in SPACELESS:
        alphabet = KANA + HAN if language == "ja" else HAN
        token = "".join(rng.choice(alphabet) for _ in range(rng.choice([1, 1, 2, 2, 3, 4])))
        return token + rng.choice(
            ["", "", "", "、", "。", "？", "，"] if language == "zh" else ["", "", "", "、", "。", "？"]
        )
    if rng.random() < 0.01:
        return "x" * rng.randint(43, 70)  # longer than a line
    return rng.choice(VOCABULARY) + rng.choice(PUNCTUATION)


def random_result(rng: random.Random, *, with_words: bool = True) -> Result:
    language_sets = [["en"], ["en"], ["en", "de"], ["ja"], ["zh"], ["en", "zh"]]
    languages = rng.choice(language_sets)
    time = rng.uniform(0.0, 5.0)
    segments = []
    raws = []
    for index in range(rng.randint(0, 8)):
        language = rng.choice(languages)
        pace = rng.choice([0.03, 0.06, 0.06, 0.1, 0.3])  # seconds a character: quick to very slow
        words: list[Word] = []
        for position in range(rng.choice([0, 1, 3, 10, 25, 40, 60])):
            token = random_token(rng, language)
            spaced = language not in SPACELESS or rng.random() < 0.1 or (position == 0 and rng.random() < 0.5)
            if rng.random() < 0.1:
                time += rng.choice([0.3, 0.6, 1.0, 1.4, 1.6, 2.5, 5.0])  # a pause
            length = rng.choice([len(token) * pace, 0.02, rng.uniform(0.1, 1.0)])
            if rng.random() < 0.005:
                length = rng.uniform(7.5, 12.0)  # a word Whisper stretched over a silence
            pieces = [token]
            if language not in SPACELESS and len(token) > 2 and rng.random() < 0.1:
                # Whisper splits a word at punctuation inside it: " 3" ".5", " O" "'Brien".
                cut = rng.randint(1, len(token) - 1)
                pieces = [token[:cut], token[cut:]]
            for number, piece in enumerate(pieces):
                share = length * len(piece) / len(token)
                words.append(
                    Word((" " if spaced and number == 0 else "") + piece, round(time, 3), round(time + share, 3))
                )
                time += share
            time += rng.choice([0.0, 0.0, 0.02, 0.1])
        raw = "".join(w.word for w in words)
        raws.append(raw)
        start, end = (words[0].start, words[-1].end) if words else (time, time)
        keep_words = with_words or rng.random() < 0.5
        segments.append(Segment(index, start, end, raw.strip(), language, tuple(words) if keep_words else None))
        time += rng.choice([0.0, 0.1, 0.5, 2.0])
    last_end = max((s.end for s in segments), default=0.0)
    return Result(
        join_segment_texts(raws),
        segments,
        segments[0].language if segments else "en",
        last_end + rng.choice([0.0, 0.5, 3.0]),
    )


@pytest.mark.parametrize("seed", range(40))
def test_random_word_streams_follow_every_rule(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(10):
        result = random_result(rng)
        check_both(result)
        stored = as_stored(result)
        assert render(stored, "srt") == render(result, "srt")
        assert render(stored, "vtt") == render(result, "vtt")


@pytest.mark.parametrize("seed", range(10))
def test_random_streams_with_segments_without_words_follow_every_rule(seed: int) -> None:
    rng = random.Random(1000 + seed)
    for _ in range(10):
        result = random_result(rng, with_words=False)
        # Spaceless text without words is split between characters, which units_of does not model.
        if any(s.words is None and s.language in SPACELESS for s in result.segments):
            cues = cues_of(result)
            assert "".join("".join(line.split()) for cue in cues for line in cue.lines) == "".join(result.text.split())
            continue
        check_both(result)
