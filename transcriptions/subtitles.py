"""Subtitle cues that follow timed-text rules, and the SRT and WebVTT files made of them.

The rules are those of Netflix's English Timed Text Style Guide: at most 42 characters a
line, at most 2 lines and at most 7 seconds a cue, at least 5/6 of a second on screen where
the next cue leaves room, cues split at word boundaries and preferably after the end of a
sentence, then after a clause. On top of these: a cue never spans a pause longer than
:data:`MAX_PAUSE_SECONDS` and never mixes two languages or two speakers, and no word is
lost, repeated or changed: the words of the cues, in order, are the words of the
transcript's ``text``. A transcript whose speakers were told apart names the speaker of
each cue: SRT as a ``[SPEAKER_00] `` label at the start of its first line (counted in
that line's 42 characters), WebVTT as a voice tag ``<v SPEAKER_00>``.

Pure functions without Django imports. A result is anything with ``text``, ``language``,
``duration`` and ``segments`` (each with ``start``, ``end``, ``text``, ``language`` and
optionally ``words``: ``word``, ``start``, ``end``), as attributes (the engine's
``TranscriptResult``) or as mapping keys (verbose_json stored as JSON).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

MAX_LINE_CHARS = 42
MAX_LINES = 2
MAX_CUE_SECONDS = 7.0
# Netflix: "minimum duration: 5/6 (five-sixths) of a second per subtitle event".
MIN_CUE_SECONDS = 5 / 6
# A pause longer than this ends a cue: a subtitle should not stay up over a silence.
MAX_PAUSE_SECONDS = 1.5
# Netflix's adult reading speed for English. A cue whose speech is quicker than this is
# left on screen a little longer, into the silence after it (at most LINGER_SECONDS).
READING_CHARS_PER_SECOND = 20.0
LINGER_SECONDS = 0.5

# Netflix's style guides for languages with wider characters: (characters a line,
# characters a second). Any other language gets the English numbers.
_LANGUAGE_LIMITS: dict[str, tuple[int, float]] = {
    "zh": (16, 9.0),
    "yue": (16, 9.0),
    "ja": (13, 4.0),
    "ko": (16, 12.0),
}

# Weights of the cue-splitting cost (see _BlockSplitter). A new cue costs 1; a break after
# a word that ends nothing costs 3 on top, after a comma 1, after a full stop nothing. So a
# cue is ended early at a full stop rather than filled up to the limit mid-clause.
_CUE_COST = 1.0
_LINE_BREAK_WEIGHT = 0.35
# A line break between two plain words costs nothing, a better one less: so that setting a
# cue in two lines is not in itself a reason to end cues earlier.
_PLAIN_BREAK = 3.0
_LINE_BALANCE_WEIGHT = 2.0
_SHORT_CUE_CHARS = 12
# A pause this long between two words is a natural place to end a cue even without punctuation.
_BREATH_SECONDS = 0.5

_SENTENCE_END = frozenset(".?!…。？！‼⁇⁈⁉")
_CLAUSE_END = frozenset(",;:—–、，；：")
# Closing quotes and brackets after a full stop or comma ("Go." or (yes,)) still end it.
_CLOSERS = "\"'”’»)]}」』】）"
# Breaking a line or cue just before these reads well; just after the weak words it does not.
_CONJUNCTIONS = frozenset(
    "and but or nor so yet because although though while whereas which who whom whose that "
    "when where whether if unless until since".split()
)
_WEAK_WORDS = frozenset("a an the of to in on at for with by from into my your his her its our their i".split())

# "--->" must become "->" too, so any run of dashes before ">" is shortened at once.
_ARROW = re.compile(r"-{2,}>")
# How an SRT cue names its speaker, at the start of its first line.
SRT_SPEAKER_LABEL = "[{}] "


@dataclass(frozen=True, slots=True)
class Cue:
    """One subtitle: shown from ``start`` to ``end`` (seconds), one or two ``lines``."""

    start: float
    end: float
    lines: tuple[str, ...]
    speaker: str | None = None


@dataclass(slots=True)
class _Token:
    """A word of the transcript with its times, as the cues are built from it."""

    text: str  # never empty, never containing whitespace
    start: float
    end: float
    space_before: bool  # whether the transcript's text has whitespace before this word
    segment: int
    language: str | None
    speaker: str | None = None


# (text, start, end, whether whitespace precedes it or None when unknown, speaker)
_Piece = tuple[str, float, float, bool | None, str | None]


def build_cues(result: Any, *, label_format: str | None = None) -> list[Cue]:
    """The subtitle cues of a transcript result (attributes or a stored mapping).

    Words and their times come from each segment's ``words``; a segment without words
    (older data) is split at whitespace with times interpolated by characters, and a run of
    Chinese or Japanese longer than a line at characters. Word spacing is taken from the
    result's ``text``, so that the cues' words are exactly that text's words; words of
    scripts written without spaces are joined without one.

    ``label_format`` (``SRT_SPEAKER_LABEL``): how the text of a cue with a speaker begins,
    which its first line makes room for.
    """
    tokens = _tokens(result)
    duration = _field(result, "duration")
    audio_end = float(duration) if isinstance(duration, int | float) and math.isfinite(duration) else math.inf
    spans: list[tuple[int, int, tuple[str, ...]]] = []
    for first, last in _blocks(tokens):
        block = tokens[first:last]
        max_chars = _limits(block[0].language)[0]
        indent = len(label_format.format(block[0].speaker)) if label_format and block[0].speaker else 0
        for i, j, lines in _BlockSplitter(block, max_chars, indent).split():
            spans.append((first + i, first + j, lines))
    return _timed_cues(tokens, spans, audio_end)


def render_srt(cues: Sequence[Cue]) -> str:
    """SubRip text: numbered cues separated by one blank line, no trailing newline.

    "-->" in text is shortened to "->" so that no text line can be taken for a timing
    line; cue lines are never empty, so no cue can end early. No cues give "".
    """
    blocks = []
    for number, cue in enumerate(cues, start=1):
        timing = f"{format_timestamp(cue.start, ',')} --> {format_timestamp(cue.end, ',')}"
        lines = list(cue.lines)
        if cue.speaker:
            lines[0] = SRT_SPEAKER_LABEL.format(cue.speaker) + lines[0]
        text = "\n".join(_ARROW.sub("->", line) for line in lines)
        blocks.append(f"{number}\n{timing}\n{text}")
    return "\n\n".join(blocks)


def render_vtt(cues: Sequence[Cue]) -> str:
    """WebVTT text: the "WEBVTT" header, then cues separated by one blank line, no trailing newline.

    "&", "<" and ">" are escaped as character references as WebVTT requires (which also
    turns "-->" into "--&gt;", so it cannot appear in cue text). No cues give just
    "WEBVTT", a valid empty file.
    """
    blocks = ["WEBVTT"]
    for cue in cues:
        timing = f"{format_timestamp(cue.start, '.')} --> {format_timestamp(cue.end, '.')}"
        # A voice span: WebVTT's own way of naming who speaks (its end tag may be left out).
        voice = f"<v {_escape_vtt(cue.speaker)}>" if cue.speaker else ""
        blocks.append(timing + "\n" + voice + "\n".join(_escape_vtt(line) for line in cue.lines))
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


def _field(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _seconds(value: Any) -> float:
    seconds = float(value)
    if not math.isfinite(seconds):
        raise ValueError(f"Cannot place a subtitle at {value!r} seconds")
    return max(0.0, seconds)


def _limits(language: str | None) -> tuple[int, float]:
    return _LANGUAGE_LIMITS.get(language or "", (MAX_LINE_CHARS, READING_CHARS_PER_SECOND))


# --- Words ---------------------------------------------------------------------------------


def _tokens(result: Any) -> list[_Token]:
    segments = list(_field(result, "segments") or ())
    default_language = _field(result, "language")
    languages = [_field(segment, "language") or default_language for segment in segments]
    reference = _field(result, "text")

    # The segments' words where they have them, else their text; tried against the result's
    # text as one stream, because Whisper may hand a word (with a quote merged into it) to
    # the segment before the one whose text holds it.
    with_words = [
        _segment_pieces(segment, language, use_words=True)
        for segment, language in zip(segments, languages, strict=True)
    ]
    streams = [with_words]
    if any(_field(segment, "words") for segment in segments):
        # Words that do not spell the text (inconsistent data): the text, with times
        # interpolated, keeps every word of it.
        streams.append(
            [_segment_pieces(s, language, use_words=False) for s, language in zip(segments, languages, strict=True)]
        )
    chosen, spacing = with_words, None
    if isinstance(reference, str):
        for stream in streams:
            spacing = _align((piece for pieces in stream for piece in pieces), reference)
            if spacing is not None:
                chosen = stream
                break
    if spacing is None:
        # No text to follow (or one that does not match the segments): the words' own spacing.
        spacing = _own_spacing([piece for pieces in chosen for piece in pieces])

    tokens: list[_Token] = []
    flags = iter(spacing)
    for index, pieces in enumerate(chosen):
        for text, start, end, _, speaker in pieces:
            tokens.append(_Token(text, start, end, next(flags), index, languages[index], speaker))
    _make_monotonic(tokens)
    return _whole_words(tokens)


def _segment_pieces(segment: Any, language: str | None, *, use_words: bool) -> list[_Piece]:
    words = _field(segment, "words") if use_words else None
    speaker = _field(segment, "speaker")
    if words:
        pieces: list[_Piece] = []
        for word in words:
            raw = str(_field(word, "word", "") or "")
            # The engine's words keep Whisper's leading space; stored (stripped) ones do not say.
            leading: bool | None = True if raw[:1].isspace() else (None if isinstance(word, Mapping) else False)
            start, end = _seconds(_field(word, "start")), _seconds(_field(word, "end"))
            pieces.extend(_split_at_whitespace(raw, start, end, leading, _field(word, "speaker") or speaker))
        return pieces
    start = _seconds(_field(segment, "start", 0.0))
    end = max(start, _seconds(_field(segment, "end", start)))
    text = str(_field(segment, "text", "") or "")
    max_chars = _limits(language)[0]
    pieces = []
    for piece in _split_at_whitespace(text, start, end, None, speaker):
        if len(piece[0]) > max_chars and any(_is_cjk(ch) for ch in piece[0]):
            pieces.extend(_interpolate(_split_cjk(piece[0]), piece[1], piece[2], piece[3], speaker))
        else:
            pieces.append(piece)
    return pieces


def _split_at_whitespace(
    raw: str, start: float, end: float, leading: bool | None, speaker: str | None = None
) -> list[_Piece]:
    return _interpolate(raw.split(), start, end, leading, speaker)


def _interpolate(
    parts: list[str], start: float, end: float, leading: bool | None, speaker: str | None = None
) -> list[_Piece]:
    """Give each part a share of start..end in proportion to its characters."""
    total = sum(len(part) for part in parts)
    end = max(start, end)
    pieces: list[_Piece] = []
    done = 0
    for index, part in enumerate(parts):
        part_start = start + (end - start) * done / total
        done += len(part)
        pieces.append(
            (part, part_start, start + (end - start) * done / total, leading if index == 0 else True, speaker)
        )
    return pieces


def _split_cjk(text: str) -> list[str]:
    """Split a run of Chinese or Japanese into characters a line may break between.

    Punctuation and marks stay with the character before, an opening bracket or quote with
    the one after, and runs of other scripts (Latin, digits) stay whole. Thai and other
    scripts that need a dictionary to find words are not split.
    """
    units: list[str] = []
    glue = False
    for ch in text:
        category = unicodedata.category(ch)
        attaches = glue or category in ("Lm", "Pe", "Pf", "Po", "Pd", "Pc") or category.startswith("M")
        same_run = not _is_cjk(ch) and bool(units) and not _is_cjk(units[-1][-1])
        if units and (attaches or same_run):
            units[-1] += ch
        else:
            units.append(ch)
        glue = category in ("Ps", "Pi")
    return units


def _align(pieces: Iterable[_Piece], reference: str) -> list[bool] | None:
    """Whether whitespace precedes each piece in ``reference``, or None if they do not spell it."""
    spacing = []
    position = 0
    for text, *_ in pieces:
        after_space = position
        while after_space < len(reference) and reference[after_space].isspace():
            after_space += 1
        if not reference.startswith(text, after_space):
            return None
        spacing.append(after_space > position)
        position = after_space + len(text)
    if reference[position:].strip():
        return None
    return spacing


def _own_spacing(pieces: list[_Piece]) -> list[bool]:
    spacing = []
    previous = ""
    for text, _, _, leading, _ in pieces:
        if leading is None:
            # Unknown: a space between words, none between two characters of a script
            # written without spaces.
            leading = not (previous and _is_spaceless(previous[-1]) and _is_spaceless(text[0]))
        spacing.append(leading)
        previous = text
    return spacing


def _make_monotonic(tokens: list[_Token]) -> None:
    # Whisper's times are in order, but stored or edited ones need not be: cues built from
    # tokens whose starts and ends never go back cannot overlap.
    previous_start = previous_end = 0.0
    for token in tokens:
        token.start = max(token.start, previous_start)
        token.end = max(token.end, token.start, previous_end)
        previous_start, previous_end = token.start, token.end


def _whole_words(tokens: list[_Token]) -> list[_Token]:
    """Join tokens the text writes together into one, so that no line or cue breaks between them.

    Whisper splits a word at punctuation inside it (" 3" ".5", " e" "-mail"); a break there
    would change the text's words. Between characters of scripts written without spaces a
    break is allowed, except before closing punctuation or after an opening bracket.
    """
    words: list[_Token] = []
    for token in tokens:
        if words and not token.space_before and _written_together(words[-1].text[-1], token.text[0]):
            words[-1].text += token.text
            words[-1].end = max(words[-1].end, token.end)
        else:
            words.append(token)
    return words


def _written_together(before: str, after: str) -> bool:
    if not (_is_spaceless(before) or _is_spaceless(after)):
        return True
    return unicodedata.category(after) in ("Pe", "Pf", "Po") or unicodedata.category(before) in ("Ps", "Pi")


def _is_cjk(ch: str) -> bool:
    code = ord(ch)
    return (
        0x3040 <= code <= 0x30FF  # Hiragana, Katakana
        or 0x31F0 <= code <= 0x31FF
        or 0x3400 <= code <= 0x4DBF  # CJK ideographs, extension A
        or 0x4E00 <= code <= 0x9FFF
        or 0xF900 <= code <= 0xFAFF
        or 0xFF65 <= code <= 0xFF9F  # halfwidth Katakana
        or 0x20000 <= code <= 0x3FFFF
    )


def _is_spaceless(ch: str) -> bool:
    """A character of a script written without spaces between words."""
    code = ord(ch)
    return (
        _is_cjk(ch)
        or 0x3000 <= code <= 0x303F  # CJK punctuation
        or 0xFF00 <= code <= 0xFF64  # fullwidth forms
        or 0x0E00 <= code <= 0x0EFF  # Thai, Lao
        or 0x1000 <= code <= 0x109F  # Myanmar
        or 0x1780 <= code <= 0x17FF  # Khmer
    )


# --- Cues ----------------------------------------------------------------------------------


def _blocks(tokens: list[_Token]) -> list[tuple[int, int]]:
    """Runs of tokens no cue may cross: split at pauses and where the language or the speaker changes."""
    blocks = []
    first = 0
    for index in range(1, len(tokens)):
        previous, token = tokens[index - 1], tokens[index]
        if (
            token.start - previous.end > MAX_PAUSE_SECONDS
            or token.language != previous.language
            or token.speaker != previous.speaker
        ):
            blocks.append((first, index))
            first = index
    if tokens:
        blocks.append((first, len(tokens)))
    return blocks


class _BlockSplitter:
    """Split a block of tokens into cues of at most two lines and MAX_CUE_SECONDS.

    Dynamic programming over the cue boundaries: each cue costs _CUE_COST, plus how bad
    the break after its last word is, plus a little for its length (so that cues share the
    words evenly) and for being very short, plus the cost of its best line break (lines as
    even as possible, breaking after punctuation or before a conjunction). A cue of one
    word is always allowed, even one longer than a line or than MAX_CUE_SECONDS, so there
    is always a solution. ``indent``: characters the first line of each cue starts with
    (its speaker's label), which it makes room for.
    """

    def __init__(self, tokens: list[_Token], max_chars: int, indent: int = 0) -> None:
        self.tokens = tokens
        self.max_chars = max_chars
        self.indent = indent
        self.chars = [0]
        self.spaces = [0]
        for token in tokens:
            self.chars.append(self.chars[-1] + len(token.text))
            self.spaces.append(self.spaces[-1] + token.space_before)
        self.breaks = [_break_badness(tokens, index) for index in range(len(tokens) - 1)]

    def length(self, first: int, last: int) -> int:
        """Characters of tokens first..last (inclusive) on one line."""
        return self.chars[last + 1] - self.chars[first] + self.spaces[last + 1] - self.spaces[first + 1]

    def line_break(self, first: int, last: int) -> tuple[float, int | None] | None:
        """The cost and position (last token of line 1; None for one line) of the best way
        to set tokens first..last in at most two lines, or None when they do not fit."""
        if first == last or self.length(first, last) + self.indent <= self.max_chars:
            return 0.0, None
        best: tuple[float, int | None] | None = None
        for split in range(first, last):
            top, bottom = self.length(first, split) + self.indent, self.length(split + 1, last)
            # A word longer than a line is allowed alone on its line.
            if (top > self.max_chars and split > first) or (bottom > self.max_chars and split + 1 < last):
                continue
            cost = _LINE_BALANCE_WEIGHT * abs(top - bottom) / self.max_chars
            cost += _LINE_BREAK_WEIGHT * (self.breaks[split] - _PLAIN_BREAK)
            if best is None or cost < best[0]:
                best = (cost, split)
        return best

    def split(self) -> list[tuple[int, int, tuple[str, ...]]]:
        tokens, count = self.tokens, len(self.tokens)
        best_cost = [0.0] + [math.inf] * count
        choice: list[tuple[int, int | None]] = [(0, None)] * (count + 1)
        for last in range(count):
            # Going back from `last`, a cue only gets longer: once it does not fit in two
            # lines or in MAX_CUE_SECONDS, no earlier start fits either.
            for first in range(last, -1, -1):
                if first < last and tokens[last].end - tokens[first].start > MAX_CUE_SECONDS:
                    break
                layout = self.line_break(first, last)
                if layout is None:
                    break
                length = self.length(first, last)
                cost = best_cost[first] + _CUE_COST + layout[0]
                cost += (length / (MAX_LINES * self.max_chars)) ** 2
                cost += max(0, _SHORT_CUE_CHARS - length) / _SHORT_CUE_CHARS
                if last + 1 < count:
                    cost += self.breaks[last]
                if cost < best_cost[last + 1]:
                    best_cost[last + 1] = cost
                    choice[last + 1] = (first, layout[1])
        spans = []
        end = count
        while end > 0:
            first, split = choice[end]
            last = end - 1
            if split is None:
                lines: tuple[str, ...] = (self.line(first, last),)
            else:
                lines = (self.line(first, split), self.line(split + 1, last))
            spans.append((first, last, lines))
            end = first
        spans.reverse()
        return spans

    def line(self, first: int, last: int) -> str:
        parts = [self.tokens[first].text]
        for token in self.tokens[first + 1 : last + 1]:
            parts.append(" " + token.text if token.space_before else token.text)
        return "".join(parts)


def _break_badness(tokens: list[_Token], index: int) -> float:
    """How bad a break (of line or cue) is between tokens[index] and the next: 0 after a
    sentence, 1 after a clause, up to 4 after a weak word such as "the"."""
    word = tokens[index].text.rstrip(_CLOSERS)
    following = tokens[index + 1]
    if word and word[-1] in _SENTENCE_END:
        badness = 0.0
    elif word and word[-1] in _CLAUSE_END:
        badness = 1.0
    elif tokens[index].segment != following.segment:
        badness = 1.5
    elif following.text.lower().strip("\"'“‘(") in _CONJUNCTIONS:
        badness = 2.0
    else:
        badness = 3.0
        if word.lower() in _WEAK_WORDS:
            badness += 1.0
    if following.start - tokens[index].end >= _BREATH_SECONDS:
        badness = max(0.0, badness - 1.0)
    return badness


def _timed_cues(tokens: list[_Token], spans: list[tuple[int, int, tuple[str, ...]]], audio_end: float) -> list[Cue]:
    """Cue times: from the first word's start to the last word's end, then lengthened to
    MIN_CUE_SECONDS and to the reading speed (by at most LINGER_SECONDS) where the next cue
    leaves room, never past the next cue nor past MAX_CUE_SECONDS."""
    cues = []
    for index, (first, last, lines) in enumerate(spans):
        start = tokens[first].start
        next_start = tokens[spans[index + 1][0]].start if index + 1 < len(spans) else max(audio_end, tokens[last].end)
        # A single word Whisper stretched over more than MAX_CUE_SECONDS is cut short.
        spoken_end = min(tokens[last].end, next_start, start + MAX_CUE_SECONDS)
        reading = sum(len(line) for line in lines) / _limits(tokens[first].language)[1]
        wanted = max(start + MIN_CUE_SECONDS, min(start + reading, spoken_end + LINGER_SECONDS))
        end = max(spoken_end, min(wanted, next_start, start + MAX_CUE_SECONDS))
        cues.append(Cue(start, end, lines, tokens[first].speaker))
    return cues


def _escape_vtt(text: str) -> str:
    # "&" first, or the other references would be escaped twice.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
