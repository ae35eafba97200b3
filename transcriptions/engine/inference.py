"""Transcribing an audio file with a loaded model."""

from __future__ import annotations

import copy
import logging
import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.audio import decode_audio
from faster_whisper.transcribe import Segment as RawSegment

from transcriptions.engine.errors import InvalidLanguage
from transcriptions.engine.languages import validate_language, validate_task

logger = logging.getLogger(__name__)

SAMPLING_RATE = 16000
# faster-whisper's own fallback schedule: a window is decoded again one step hotter while
# its text looks like a repetition loop (compression ratio) or unlikely (average log-prob).
DEFAULT_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
TEMPERATURE_STEP = 0.2
# A segment shorter than this is not worth an encoder pass of its own to tell its language:
# Whisper's guess on a fraction of a word is no better than the window's.
MIN_LANGUAGE_DETECTION_SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class Word:
    """One word with its time, as Whisper's alignment gives it; times in seconds, rounded to ms.

    ``word`` keeps Whisper's leading space (" Americans,"), so that the words of a segment
    joined with "" are its text as the model wrote it, in scripts with and without spaces.
    """

    word: str
    start: float
    end: float
    probability: float
    # Who said it (``SPEAKER_00``, ...), once speakers are told apart (engine.speakers).
    speaker: str | None = None


@dataclass(frozen=True, slots=True)
class Segment:
    """One timed piece of a transcript; times in seconds, rounded to milliseconds.

    ``language`` is the ISO code of this segment's language: detected for each segment when
    the model is multilingual and no language was given, else the run's language. ``words``
    is None unless word timestamps were asked for. The decoding figures (``seek``, ``tokens``,
    ``temperature``, ``avg_logprob``, ``compression_ratio``, ``no_speech_prob``) are
    Whisper's, as OpenAI's verbose_json reports them.
    """

    id: int
    start: float
    end: float
    text: str
    language: str
    words: tuple[Word, ...] | None = None
    seek: int = 0
    tokens: tuple[int, ...] = ()
    temperature: float = 0.0
    avg_logprob: float = 0.0
    compression_ratio: float = 0.0
    no_speech_prob: float = 0.0
    # Who says it (``SPEAKER_00``, ...), once speakers are told apart (engine.speakers).
    speaker: str | None = None


@dataclass(frozen=True, slots=True)
class TranscriptResult:
    """Everything a transcription produced, independent of the output format.

    ``language`` is the language spoken longest (the sum of its segments' durations);
    ``language_probability`` is Whisper's confidence in it (see :func:`transcribe`).
    """

    text: str
    segments: list[Segment]
    language: str
    language_probability: float
    duration: float
    task: str = "transcribe"


def temperature_schedule(temperature: float | None) -> tuple[float, ...]:
    """The temperatures a window may be decoded at, in the order they are tried.

    None is faster-whisper's default, (0.0, 0.2, ..., 1.0). A temperature ``t`` has OpenAI's
    documented meaning: start at ``t`` and fall back upwards, (t, t + 0.2, ..., <= 1.0), so
    0.0 is the default schedule and 1.0 samples at 1.0 only. Raises ValueError outside
    [0, 1] (the services check the request's value first).
    """
    if temperature is None:
        return DEFAULT_TEMPERATURES
    if not 0.0 <= temperature <= 1.0:
        raise ValueError(f"temperature must be between 0 and 1, not {temperature!r}")
    steps = math.floor((1.0 - temperature) / TEMPERATURE_STEP + 1e-9)
    return tuple(round(temperature + TEMPERATURE_STEP * step, 6) for step in range(steps + 1))


def transcribe(
    model: WhisperModel,
    audio_path: str | Path,
    *,
    language: str | None,
    vad_filter: bool,
    word_timestamps: bool = False,
    prompt: str = "",
    task: str = "transcribe",
    temperature: float | None = None,
    beam_size: int = 5,
    on_progress: Callable[[float], None] | None = None,
) -> TranscriptResult:
    """Transcribe (or translate into English) an audio file (WAV, FLAC, MP3, ... anything PyAV decodes).

    ``on_progress``, when given, is called with the seconds of audio decoded so far after
    each segment; an exception it raises stops the decoding and comes out of this call.

    ``language`` None means: "en" for an English-only model, else each segment's language
    is detected (see below). Raises :class:`InvalidLanguage` for a code the model cannot use
    and :class:`InvalidTask` for a task other than "transcribe" or "translate", or
    "translate" on an English-only model.

    Decoding does not condition on the previous window's text: on a 60 s clip of varied
    speech the English text came out nearly the same either way, but conditioning is what
    lets one bad window turn into a repetition loop across the following ones, and without
    it segments stay short (about 5 s, better subtitles) instead of growing to 13 s. The
    cost: a window the model cannot decode (speech in another language than the one set)
    goes through all fallback temperatures instead of being dropped as silence.

    ``prompt`` (vocabulary and spelling hints) is given as faster-whisper's ``hotwords``:
    the same tokens as Whisper's initial prompt, but in front of every 30 s window. The
    initial prompt would only reach the first window, since the previous text is not
    carried over: with ggml-tiny.en and the prompt "ComfyUI", hotwords.mp3 alone (one
    window) comes out "comfyUI" either way instead of "comfy eye" (int8; float32 writes
    "ComfyUI"), but after 11 s of speech and 20 s of silence, in the second window, the
    same words came out "ComfyUI" with hotwords and "comfyu eye" with the initial prompt.
    Whisper also copies a prompt's style: a prompt without punctuation tends to give text
    without punctuation.

    ``temperature``: see :func:`temperature_schedule`.

    **Each segment's language.** faster-whisper's ``multilingual=True`` detects the language
    of every 30 s window before decoding it, but its segments do not say which language was
    detected. The run therefore uses a shallow copy of ``model`` (this call's own, so
    concurrent calls stay apart) whose CTranslate2 model is :class:`_DetectionRecorder`, a
    proxy that remembers the last detection; segments are produced lazily, each window's
    segments before the next window's detection, so the language recorded when a segment
    arrives is its window's. A window where the language changes usually starts with the
    end of the previous language (on multilingual.mp3 the 30 s window with German detected
    starts with 5 s of English): there, segment after segment from the window's start, the
    segment's own audio is asked for its language until one is in the window's language.
    That costs an encoder pass per segment checked (0.65 s with ggml-base on two cores), only
    where the language changes. The top-level language is the one spoken longest, and its
    probability the duration-weighted mean of Whisper's confidence in it over its segments
    (1.0 when the language was given or the model is English-only).
    """
    language = run_language(model, language, task)
    temperatures = temperature_schedule(temperature)
    # Decoded here rather than by faster-whisper (which would do the same), so that a
    # segment's own audio can be asked for its language.
    audio = decode_audio(str(audio_path), sampling_rate=SAMPLING_RATE)
    languages = _SegmentLanguages(model, audio) if language is None else None
    try:
        raw_segments, info = (languages.run_model if languages else model).transcribe(
            audio,
            language=language,
            task=task,
            multilingual=languages is not None,
            vad_filter=vad_filter,
            beam_size=beam_size,
            temperature=list(temperatures),
            condition_on_previous_text=False,
            word_timestamps=word_timestamps,
            hotwords=prompt.strip() or None,
        )
    except ValueError as error:
        # faster-whisper reports a language it does not know with a plain ValueError.
        if "language" in str(error):
            raise InvalidLanguage(str(error)) from error
        raise
    # Segments are produced lazily: decoding happens while this list is built.
    raw_texts: list[str] = []
    segments: list[Segment] = []
    probabilities: list[float] = []
    for raw in raw_segments:
        if languages is None:
            segment_language, probability = info.language, float(info.language_probability)
        else:
            segment_language, probability = languages.of(raw)
        raw_texts.append(raw.text)
        probabilities.append(probability)
        segments.append(_segment(len(segments), raw, segment_language or info.language))
        if on_progress is not None:
            on_progress(float(raw.end))
    top_language, top_probability = spoken_longest(segments, probabilities)
    if top_language is None or languages is None:
        top_language, top_probability = info.language, float(info.language_probability)
    return TranscriptResult(
        text=join_segment_texts(raw_texts),
        segments=segments,
        language=top_language,
        language_probability=top_probability,
        duration=float(info.duration),
        task=task,
    )


def run_language(model: WhisperModel, language: str | None, task: str) -> str | None:
    """The language a run decodes in: ``language``, "en" on an English-only model, or None to detect it.

    Raises :class:`InvalidTask` for a task the model cannot do and :class:`InvalidLanguage`
    for a code it cannot use.
    """
    multilingual = model.model.is_multilingual
    validate_task(task, multilingual)
    if language is None and not multilingual:
        # Language detection is meaningless for an English-only model.
        language = "en"
    if language is not None:
        validate_language(language, multilingual)
    return language


def _segment(index: int, raw: RawSegment, language: str) -> Segment:
    words = None
    if raw.words is not None:
        words = tuple(
            Word(
                word=word.word,
                start=rounded_seconds(word.start),
                end=rounded_seconds(word.end),
                probability=float(word.probability),
            )
            for word in raw.words
        )
    return Segment(
        id=index,
        start=rounded_seconds(raw.start),
        end=rounded_seconds(raw.end),
        text=raw.text.strip(),
        language=language,
        words=words,
        seek=int(raw.seek),
        tokens=tuple(int(token) for token in raw.tokens),
        temperature=float(raw.temperature or 0.0),
        avg_logprob=float(raw.avg_logprob),
        compression_ratio=float(raw.compression_ratio),
        no_speech_prob=float(raw.no_speech_prob),
    )


def rounded_seconds(value: float) -> float:
    """Seconds as a plain float rounded to the millisecond, as results report times."""
    # faster-whisper's times are numpy floats once word timestamps moved them: plain floats
    # keep results comparable and printable as the numbers they are.
    return round(float(value), 3)


def spoken_longest(segments: list[Segment], probabilities: list[float]) -> tuple[str | None, float]:
    """The language with the longest total segment time, and the mean confidence in it."""
    seconds: defaultdict[str, float] = defaultdict(float)
    weighted: defaultdict[str, float] = defaultdict(float)
    for segment, probability in zip(segments, probabilities, strict=True):
        duration = max(segment.end - segment.start, 0.0)
        seconds[segment.language] += duration
        weighted[segment.language] += duration * probability
    if not seconds:
        return None, 0.0
    # On a tie the language heard first wins (dicts keep insertion order).
    language = max(seconds, key=seconds.__getitem__)
    if seconds[language] <= 0.0:
        return language, 0.0
    return language, weighted[language] / seconds[language]


class _DetectionRecorder:
    """Stands in for a WhisperModel's CTranslate2 model and remembers its last language detection.

    Everything but ``detect_language`` is the wrapped model's own, so encoding and decoding
    run on the shared weights unchanged.
    """

    def __init__(self, model: Any) -> None:
        self._model = model
        self.language: str | None = None
        self.probability = 0.0

    def detect_language(self, *args: Any, **kwargs: Any) -> Any:
        results = self._model.detect_language(*args, **kwargs)
        # One list per batch item of (token, probability), most likely first: "<|de|>".
        token, probability = results[0][0]
        self.language, self.probability = token[2:-2], float(probability)
        return results

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


class _SegmentLanguages:
    """The language of each segment of one ``multilingual=True`` run (see :func:`transcribe`)."""

    def __init__(self, model: WhisperModel, audio: np.ndarray) -> None:
        self._model = model
        self._audio = audio
        self._detections = _DetectionRecorder(model.model)
        # A shallow copy: the weights, tokenizer and feature extractor are shared; only the
        # copy's CTranslate2 model is this run's recorder.
        self.run_model = copy.copy(model)
        self.run_model.model = self._detections
        self._window_seek: int | None = None
        self._window: tuple[str | None, float] = (None, 0.0)
        self._checking = False

    def of(self, raw: RawSegment) -> tuple[str | None, float]:
        """``raw``'s language and Whisper's confidence in it; call once per segment, in order."""
        if raw.seek != self._window_seek:
            # The first segment of a new window: the recorder holds that window's detection.
            previous_language = self._window[0]
            self._window_seek = raw.seek
            self._window = (self._detections.language, self._detections.probability)
            self._checking = previous_language is not None and self._window[0] != previous_language
        if not self._checking:
            return self._window
        own = self._detect(raw.start, raw.end)
        if own is None:
            return self._window
        if own[0] == self._window[0]:
            self._checking = False
        logger.debug("Segment %.2f-%.2f s: window language %s, own %s", raw.start, raw.end, self._window[0], own[0])
        return own

    def _detect(self, start: float, end: float) -> tuple[str, float] | None:
        if end - start < MIN_LANGUAGE_DETECTION_SECONDS:
            return None
        samples = self._audio[int(start * SAMPLING_RATE) : int(math.ceil(end * SAMPLING_RATE))]
        # The shared model, not the run's copy: this detection is not a window's.
        language, probability, _ = self._model.detect_language(audio=samples)
        return language, float(probability)


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
