"""Windows of speech: a recording cut where nobody speaks, and its windows decoded in batches.

A window is up to 30 s of speech (Whisper's input): stretches of speech found with
faster-whisper's Silero VAD as its ``BatchedInferencePipeline`` finds them, one after
another, the longer pauses between them left out; it is cut only in silences. Windows are
the unit the scheduler hands out: each is decoded on its own, so that any group of them, on
any worker, in any batch, gives the same segments as one run over the whole file, and
:func:`merge_windows` puts the pieces together in order. (On CPU, CTranslate2's int8 encoder
and beam search give a batch item the same numbers whatever else is in the batch, to the bit
with Intel MKL on Intel CPUs; with oneDNN, which it uses on other CPUs, the last digits of a
word's probability may differ with the batch's size, never a word or, in the test
recordings, its time.)
The exception is a window whose beam search fails the quality checks and is sampled again
at a higher temperature: CTranslate2's random generator belongs to its thread and is seeded
once, so such a window's text may differ from one decoding to the next, as it does with
faster-whisper's own fallback.

- :func:`plan_windows`: the windows of a 16 kHz mono recording (:func:`load_audio`);
- :func:`transcribe_windows`: windows decoded together, ``batch_size`` at a time: one
  batched encoder pass, each window's language detected on the encoder output where
  needed, one batched beam search, one batched word alignment (the windows sampled again
  at a higher temperature, and each language's windows in a batch of several, take their
  part of the batch's encoder output: on CPU nothing is encoded twice);
- :func:`merge_windows`: the :class:`WindowTranscript` pieces in window order to the one
  :class:`TranscriptResult` the formats render.

A window is decoded without timestamps, as the batched pipeline decodes its chunks, and its
text is then aligned to its audio word by word: the words time the window's sentences,
which are its segments, and show where Whisper stopped writing, so that speech it left out
at the end of a window is decoded again (see :class:`_BatchDecoder`). An earlier version of
this module decoded with timestamps, as the sequential decoder does: Whisper then ends most
windows at the end of a segment seconds before the end of the speech and leaves the rest to
another decoding from there, which took 1.8 times the CPU time on the 5-minute benchmark
recording for no better text (WER 14.9 % against 13.5 % with ggml-tiny.en).

Otherwise decoding follows :func:`transcribe`: the same temperature fallback (a window
whose text looks like a repetition loop or unlikely is decoded again, one step hotter,
which the pipeline does not do), the same no-speech rule, the prompt given as hotwords to
every window. Unlike the pipeline, nothing carries over from one window to the next (its
word timing takes the end of the previous window's speech into account), so that a
window's words do not depend on which windows were decoded before it.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import itertools
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.audio import decode_audio, pad_or_trim
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import get_compression_ratio, get_suppressed_tokens
from faster_whisper.utils import get_end
from faster_whisper.vad import VadOptions, get_speech_timestamps

from transcriptions.engine.inference import (
    SAMPLING_RATE,
    Segment,
    TranscriptResult,
    Word,
    join_segment_texts,
    rounded_seconds,
    run_language,
    spoken_longest,
    temperature_schedule,
)

logger = logging.getLogger(__name__)

# Whisper hears 30 s at a time: the longest a window can be.
MAX_WINDOW_SECONDS = 30.0
# The batched pipeline's VAD setting: a pause of 160 ms already ends a stretch of speech, so
# that windows can be cut in short pauses too (faster-whisper's own default is 2 s).
MIN_SILENCE_MS = 160
# A window may end a sample or so past the audio through float rounding.
_EDGE_SECONDS = 1e-3

# faster-whisper's defaults for WhisperModel.transcribe, which engine.transcribe keeps.
BEST_OF = 5
PATIENCE = 1.0
LENGTH_PENALTY = 1.0
COMPRESSION_RATIO_THRESHOLD = 2.4
LOG_PROB_THRESHOLD = -1.0
NO_SPEECH_THRESHOLD = 0.6
# Where more than this of a window follows the last word Whisper wrote, the rest is decoded
# again from there (see _BatchDecoder). The VAD pads speech with 0.4 s: in the test and
# benchmark recordings, windows whose text was complete ended 0.2-0.6 s after their last word.
TAIL_SECONDS = 1.5
PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"


@dataclass(frozen=True, slots=True)
class Window:
    """A part of a recording decoded as one piece; seconds from the start of the original audio.

    ``speech`` lists the stretches of speech within ``start`` to ``end`` that are decoded,
    one after another, as one piece of audio of at most 30 s: the silences between them are
    left out. Empty means the whole window is (:attr:`stretches`).
    """

    start: float
    end: float
    speech: tuple[tuple[float, float], ...] = ()

    @property
    def stretches(self) -> tuple[tuple[float, float], ...]:
        return self.speech or ((self.start, self.end),)

    @property
    def speech_seconds(self) -> float:
        """How long the audio decoded for this window is."""
        return sum(end - start for start, end in self.stretches)


@dataclass(frozen=True, slots=True)
class WindowTranscript:
    """What one window gave: its segments with times in the original audio, and its language.

    ``text`` is the window's segments joined as :func:`join_segment_texts` joins them, with
    the leading space Whisper put before the first one kept (none in scripts written without
    spaces), so that joining windows' texts the same way gives the text of the whole file.
    ``language`` is detected on this window's own audio when the model is multilingual and
    no language was given (``language_probability`` is Whisper's confidence in it), else the
    run's language (probability 1.0). A window where Whisper heard nothing has no segments.
    """

    window: Window
    segments: tuple[Segment, ...]
    text: str
    language: str
    language_probability: float


def load_audio(path: str | Path) -> np.ndarray:
    """A recording (WAV, FLAC, MP3, ... anything PyAV decodes) as 16 kHz mono float32 samples."""
    return decode_audio(str(path), sampling_rate=SAMPLING_RATE)


def plan_windows(
    audio: np.ndarray,
    *,
    max_seconds: float = MAX_WINDOW_SECONDS,
    vad_options: VadOptions | Mapping[str, Any] | None = None,
) -> list[Window]:
    """The windows of speech of ``audio`` (16 kHz mono float32), in order: [] where nobody speaks.

    Silero VAD finds the stretches of speech as faster-whisper's batched pipeline does: a
    pause of 160 ms ends a stretch, each stretch is padded with up to 400 ms of the audio
    around it (touching the next where the pause was shorter than 800 ms) and is at most
    ``max_seconds`` long. Consecutive stretches then go into one window while their speech
    adds up to at most ``max_seconds`` (0 < max_seconds <= 30), as the pipeline's chunks:
    a window spans from its first stretch's start to its last one's end, and a longer pause
    within it (a gap between two stretches) is not decoded. Windows never overlap. Stretches
    that touch are listed as one. ``vad_options``: faster-whisper's :class:`VadOptions` or a
    dict of its fields; their ``max_speech_duration_s`` is capped at ``max_seconds``.

    Why pauses are left out: a window costs mostly its encoder pass over a full 30 s (on
    two cores, 0.6 CPU-seconds a window with ggml-tiny.en against 0.3 for the beam search
    of its words), so windows are filled with speech, as the pipeline fills its chunks: 10
    windows for the 5-minute benchmark recording instead of 11 with the pauses kept, and 28
    (twice the CPU time) if windows were cut at every pause over about 1.3 s. A pause left
    out is heard as 0.8 s: the 0.4 s of padding on either side of it.
    """
    if not 0.0 < max_seconds <= MAX_WINDOW_SECONDS:
        raise ValueError(f"max_seconds must be in (0, {MAX_WINDOW_SECONDS:g}], not {max_seconds!r}")
    if vad_options is None:
        options = VadOptions(max_speech_duration_s=max_seconds, min_silence_duration_ms=MIN_SILENCE_MS)
    else:
        options = vad_options if isinstance(vad_options, VadOptions) else VadOptions(**vad_options)
        options = dataclasses.replace(options, max_speech_duration_s=min(options.max_speech_duration_s, max_seconds))
    limit = round(max_seconds * SAMPLING_RATE)
    windows: list[list[tuple[int, int]]] = []
    for speech in get_speech_timestamps(audio, options, sampling_rate=SAMPLING_RATE):
        for start, end in _pieces(speech["start"], speech["end"], limit):
            if windows and sum(e - s for s, e in windows[-1]) + end - start <= limit:
                last_start, last_end = windows[-1][-1]
                if start <= last_end:
                    windows[-1][-1] = (last_start, end)
                else:
                    windows[-1].append((start, end))
            else:
                windows.append([(start, end)])
    return [
        Window(
            start=stretches[0][0] / SAMPLING_RATE,
            end=stretches[-1][1] / SAMPLING_RATE,
            speech=tuple((s / SAMPLING_RATE, e / SAMPLING_RATE) for s, e in stretches) if len(stretches) > 1 else (),
        )
        for stretches in windows
    ]


def _pieces(start: int, end: int, limit: int) -> list[tuple[int, int]]:
    # The VAD keeps stretches under its maximum; VadOptions with a wider padding than the
    # default could still give a longer one, which is then cut into equal parts.
    count = -(-(end - start) // limit)
    bounds = [start + (end - start) * index // count for index in range(count + 1)]
    return list(itertools.pairwise(bounds))


def transcribe_windows(
    model: WhisperModel,
    audio: np.ndarray,
    windows: Sequence[Window],
    *,
    language: str | None,
    word_timestamps: bool = False,
    prompt: str = "",
    task: str = "transcribe",
    temperature: float | None = None,
    batch_size: int = 8,
    beam_size: int = 5,
    on_progress: Callable[[float], None] | None = None,
) -> list[WindowTranscript]:
    """Decode ``windows`` of ``audio`` (16 kHz mono float32, the whole recording), ``batch_size`` at a time.

    Returns one :class:`WindowTranscript` per window, in the order given; segment ids run
    in that order from 0 (:func:`merge_windows` numbers them again for the whole file).
    A window's segments are its sentences, each from its first word's start to its last
    word's end in seconds of the original audio (rounded to ms; a word is placed within the
    stretch of speech it was heard in). With ``word_timestamps`` they carry their words,
    with Whisper's leading space (a segment's words joined are its text); without, the
    words are still aligned, to time the sentences, but not kept. ``language``, ``task``,
    ``prompt`` (as hotwords, before every window) and ``temperature`` (see
    :func:`temperature_schedule`) mean what they mean for :func:`transcribe` and raise the
    same errors; when the model is multilingual and ``language`` is None each window's
    language is detected on its own audio (one batched call on the encoder output) and every
    segment of the window carries it. Raises ValueError for a window outside the audio or
    with more than 30 s of speech.

    A window is decoded independently of the others: the result of a window does not depend
    on the other windows of the call, nor on the batch it falls in, so a file's windows may
    be shared between calls and workers and merged afterwards.

    ``on_progress``, when given, is called after each batch with the share (0.0 to 1.0) of
    the windows' speech decoded so far; an exception it raises stops the decoding and comes
    out of this call.
    """
    language = run_language(model, language, task)
    temperatures = temperature_schedule(temperature)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size!r}")
    duration = len(audio) / SAMPLING_RATE
    for window in windows:
        bounds = [window.start, *(time for stretch in window.stretches for time in stretch), window.end]
        ordered = all(a <= b for a, b in itertools.pairwise(bounds))
        if not (ordered and 0.0 <= window.start < window.end <= duration + _EDGE_SECONDS):
            raise ValueError(f"{window} is not a part of the {duration:.3f} s of audio")
        if not all(start < end for start, end in window.stretches):
            raise ValueError(f"{window} has an empty stretch of speech")
        if window.speech_seconds > MAX_WINDOW_SECONDS + _EDGE_SECONDS:
            raise ValueError(f"{window} has more than {MAX_WINDOW_SECONDS:g} s of speech")
    decoder = _BatchDecoder(
        model,
        language=language,
        task=task,
        hotwords=prompt.strip() or None,
        temperatures=temperatures,
        beam_size=beam_size,
        word_timestamps=word_timestamps,
    )
    transcripts = decoder.decode(audio, windows, batch_size, on_progress)
    ids = itertools.count()
    return [
        dataclasses.replace(
            transcript, segments=tuple(dataclasses.replace(s, id=next(ids)) for s in transcript.segments)
        )
        for transcript in transcripts
    ]


def merge_windows(
    transcripts: Iterable[WindowTranscript],
    *,
    duration: float,
    task: str = "transcribe",
    language: str | None = None,
) -> TranscriptResult:
    """The one result of a recording from its windows' transcripts, given in window order.

    Segments keep their times and languages and are numbered again from 0; the text is the
    windows' texts joined as :func:`join_segment_texts` joins segments; the top-level
    language is the one spoken longest, with the duration-weighted mean of Whisper's
    confidence in it, as :func:`transcribe` reports them. Where no segment was heard, the
    language is ``language`` (the run's, if one was given) or else "en", with probability
    1.0 or 0.0. ``duration`` is the whole recording's, ``task`` the run's. Raises ValueError
    for windows out of order or overlapping.
    """
    transcripts = list(transcripts)
    for before, after in itertools.pairwise(transcripts):
        if after.window.start < before.window.end - _EDGE_SECONDS:
            raise ValueError(f"windows out of order or overlapping: {before.window}, then {after.window}")
    segments: list[Segment] = []
    probabilities: list[float] = []
    for transcript in transcripts:
        for segment in transcript.segments:
            segments.append(dataclasses.replace(segment, id=len(segments)))
            probabilities.append(transcript.language_probability)
    top_language, top_probability = spoken_longest(segments, probabilities)
    if top_language is None:
        top_language, top_probability = (language, 1.0) if language else ("en", 0.0)
    return TranscriptResult(
        text=join_segment_texts(transcript.text for transcript in transcripts),
        segments=segments,
        language=top_language,
        language_probability=top_probability,
        duration=float(duration),
        task=task,
    )


@dataclass(slots=True)
class _Decoded:
    """One window's chosen decoding."""

    tokens: list[int]
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    temperature: float

    def needs_fallback(self) -> bool:
        # WhisperModel.generate_with_fallback's rule: too repetitive or too unlikely, unless
        # it is silence (no speech heard and unlikely text), which no temperature improves.
        if self.no_speech_prob > NO_SPEECH_THRESHOLD and self.avg_logprob < LOG_PROB_THRESHOLD:
            return False
        return self.compression_ratio > COMPRESSION_RATIO_THRESHOLD or self.avg_logprob < LOG_PROB_THRESHOLD

    def is_silence(self) -> bool:
        # WhisperModel.generate_segments skips such a window.
        return self.no_speech_prob > NO_SPEECH_THRESHOLD and self.avg_logprob <= LOG_PROB_THRESHOLD


@dataclass(slots=True)
class _Progress:
    """One window's decoding so far."""

    window: Window
    # The window's stretches of speech one after another: the audio Whisper hears.
    samples: np.ndarray
    frames: int
    # Where the next decoding starts, in frames (10 ms) of ``samples``.
    seek: int = 0
    language: str | None = None
    probability: float = 1.0
    # The end of the last word so far (seconds of ``samples``), for faster-whisper's word timing.
    last_speech: float = 0.0
    pieces: list[tuple[dict[str, Any], _Decoded]] = dataclasses.field(default_factory=list)


@dataclass(slots=True)
class _Pass:
    """One decoding of a window from its seek: what it heard, and the timed sentences it wrote."""

    progress: _Progress
    features: np.ndarray
    frames: int
    pieces: list[dict[str, Any]] = dataclasses.field(default_factory=list)


class _BatchDecoder:
    """Decodes windows in batches with faster-whisper's parts; nothing passes between windows.

    Every decoding is aligned to its audio, word by word: that times the sentences, and it
    shows where Whisper stopped. Decoded without timestamps, Whisper sometimes ends its text
    seconds before the window's speech ends, and faster-whisper's pipeline leaves the rest
    unheard: with the log-mel padded with zeros (see :meth:`_decode_once`), 2 windows of 10
    of the 5-minute benchmark recording lost their last 6-7 s with ggml-tiny.en, and the
    second window of clip60.flac its last 11 s (German, which tiny.en stops writing). Here,
    where more than :data:`TAIL_SECONDS` of the window follows the last word, the rest is
    decoded again from that word's end, as the sequential decoder goes on from its last
    timestamp: a queue of decodings, taken ``batch_size`` at a time, at most one of each
    window in a batch. (Padded with silence, the benchmark recordings need no second
    decoding; clip60.flac needs one.)
    """

    def __init__(
        self,
        model: WhisperModel,
        *,
        language: str | None,
        task: str,
        hotwords: str | None,
        temperatures: tuple[float, ...],
        beam_size: int,
        word_timestamps: bool,
    ) -> None:
        self.model = model
        self.language = language
        self.task = task
        self.hotwords = hotwords
        self.temperatures = temperatures
        self.beam_size = beam_size
        self.word_timestamps = word_timestamps
        self._tokenizers: dict[str, Tokenizer] = {}
        self._prompts: dict[str, list[int]] = {}
        self.suppress_tokens = list(get_suppressed_tokens(self.tokenizer(language or "en"), [-1]))

    def tokenizer(self, language: str) -> Tokenizer:
        if language not in self._tokenizers:
            multilingual = self.model.model.is_multilingual
            self._tokenizers[language] = Tokenizer(
                self.model.hf_tokenizer, multilingual, task=self.task, language=language if multilingual else None
            )
        return self._tokenizers[language]

    def prompt(self, language: str, previous: Sequence[int] = ()) -> list[int]:
        """The prompt of a decoding: the hotwords, then ``previous`` (text tokens), then the start sequence."""
        if previous:
            return self.model.get_prompt(
                self.tokenizer(language), list(previous), without_timestamps=True, hotwords=self.hotwords
            )
        if language not in self._prompts:
            self._prompts[language] = self.model.get_prompt(
                self.tokenizer(language), [], without_timestamps=True, hotwords=self.hotwords
            )
        return self._prompts[language]

    def decode(
        self,
        audio: np.ndarray,
        windows: Sequence[Window],
        batch_size: int,
        on_progress: Callable[[float], None] | None = None,
    ) -> list[WindowTranscript]:
        samples_per_frame = self.model.feature_extractor.hop_length
        progress = []
        for window in windows:
            samples = np.concatenate([audio[_sample(start) : _sample(end)] for start, end in window.stretches])
            progress.append(_Progress(window=window, samples=samples, frames=len(samples) // samples_per_frame))
        queue = collections.deque(item for item in progress if item.frames > 0)
        total = sum(item.frames for item in progress)
        while queue:
            batch = [queue.popleft() for _ in range(min(batch_size, len(queue)))]
            queue.extend(item for item in self._decode_once(batch) if item.seek < item.frames)
            if on_progress is not None and total:
                on_progress(sum(min(item.seek, item.frames) for item in progress) / total)
        return [self._transcript(item) for item in progress]

    def _decode_once(self, batch: list[_Progress]) -> list[_Progress]:
        """Decode each window of ``batch`` from its seek: one encoder pass, one beam search, one alignment."""
        model = self.model
        samples_per_frame = model.feature_extractor.hop_length
        passes = []
        for item in batch:
            # Padded to 30 s with silence before the log-mel (as OpenAI's Whisper pads its
            # input) rather than the log-mel with zeros after (as faster-whisper does): on
            # three 5-minute recordings read by espeak-ng, WER 13.3, 10.6 and 14.1 % against
            # 14.1, 11.2 and 16.7 % with ggml-tiny.en (sequential engine.transcribe: 12.6,
            # 13.9 and 18.9 %), and a window of JFK's 11 s, a 2 s pause and 18 s more of
            # speech no longer came out as JFK's words alone.
            rest = item.samples[item.seek * samples_per_frame :]
            frames = min(model.feature_extractor.nb_max_frames, len(rest) // samples_per_frame, item.frames - item.seek)
            padded = np.pad(rest, (0, max(0, model.feature_extractor.n_samples - len(rest))))
            # The extractor gives one frame more than the samples fill (the pipeline drops it too).
            features = model.feature_extractor(padded)[..., :-1]
            passes.append(_Pass(progress=item, features=pad_or_trim(features), frames=frames))
        features = np.stack([one.features for one in passes])
        encoder_output = model.encode(features)
        if any(item.language is None for item in batch):
            if self.language is None:
                # A window's language is detected on its first decoding, on its own audio.
                # One list per window of (token, probability), most likely first: "<|de|>".
                detected = model.model.detect_language(encoder_output)
                for item, ((token, probability), *_) in zip(batch, detected, strict=True):
                    if item.language is None:
                        item.language, item.probability = token[2:-2], float(probability)
            else:
                for item in batch:
                    item.language = self.language
        languages = [item.language or "en" for item in batch]
        # A window decoded again from its last word (a tail) is prompted with its own text
        # so far, as the sequential decoder prompts each 30 s with the text before it: on
        # its own, the few seconds left at the end of a window often fail the quality
        # checks at every temperature (5 samplings of 5), where with the sentence it
        # continues Whisper writes them at once. Nothing passes between windows.
        previous = [
            [token for piece, _ in item.pieces for token in piece["tokens"] if token < self.tokenizer(language).eot]
            for item, language in zip(batch, languages, strict=True)
        ]
        decoded = self._generate(features, encoder_output, languages, previous)

        for one, result, language in zip(passes, decoded, languages, strict=True):
            if not result.is_silence():
                # Timed below from their words: a placeholder start and end make
                # add_word_timestamps take the first and the last word's.
                start = one.progress.seek / model.frames_per_second
                end = start + one.frames / model.frames_per_second
                one.pieces = [
                    {"seek": one.progress.seek, "start": start, "end": end, "tokens": tokens}
                    for tokens in _sentences(self.tokenizer(language), result.tokens)
                ]
        self._add_words(features, encoder_output, languages, passes)

        for one, result in zip(passes, decoded, strict=True):
            item = one.progress
            item.pieces += [(piece, result) for piece in one.pieces]
            seek = item.seek + one.frames
            last_word_end = get_end(one.pieces)
            if last_word_end is not None:
                item.last_speech = last_word_end
                rest = round(last_word_end * model.frames_per_second)
                # Only a rest long enough to hold speech, and only a second or more on: a
                # decoding that ends where it started would be repeated forever.
                tail = seek - rest > TAIL_SECONDS * model.frames_per_second
                if tail and rest >= item.seek + model.frames_per_second:
                    seek = rest
            item.seek = seek
        return batch

    def _generate(
        self, features: np.ndarray, encoder_output: Any, languages: list[str], previous: list[list[int]]
    ) -> list[_Decoded]:
        """Each decoding at the first temperature, those that fail it again one step hotter.

        ``previous``: each decoding's prompt text (:meth:`prompt`). CTranslate2 decodes a
        batch together only where the start sequence is at the same place in every
        prompt, so decodings with a prompt text of another length go in a call of their own.
        """
        model = self.model
        chosen: list[_Decoded | None] = [None] * len(languages)
        tried: list[list[_Decoded]] = [[] for _ in languages]
        pending = list(range(len(languages)))
        for temperature in self.temperatures:
            if temperature > 0:
                options: dict[str, Any] = {
                    "beam_size": 1,
                    "num_hypotheses": BEST_OF,
                    "sampling_topk": 0,
                    "sampling_temperature": temperature,
                }
            else:
                options = {"beam_size": self.beam_size, "patience": PATIENCE}
            prompts = {index: self.prompt(languages[index], previous[index]) for index in pending}
            calls: dict[int, list[int]] = {}  # where the start sequence is: the decodings
            for index in pending:
                calls.setdefault(prompts[index].index(self.tokenizer(languages[index]).sot), []).append(index)
            results: dict[int, Any] = {}
            for indexes in calls.values():
                # The whole batch's encoder output where all of it is decoded, else its part.
                output = self._part(features, encoder_output, indexes)
                generated = model.model.generate(
                    output,
                    [prompts[index] for index in indexes],
                    length_penalty=LENGTH_PENALTY,
                    max_length=model.max_length,
                    return_scores=True,
                    return_no_speech_prob=True,
                    suppress_blank=True,
                    suppress_tokens=self.suppress_tokens,
                    **options,
                )
                results.update(zip(indexes, generated, strict=True))
            still_pending = []
            for index in pending:
                result = results[index]
                tokens = list(result.sequences_ids[0])
                # faster-whisper's way back from the length-penalised score to the mean log-prob.
                avg_logprob = result.scores[0] * (len(tokens) ** LENGTH_PENALTY) / (len(tokens) + 1)
                text = self.tokenizer(languages[index]).decode(tokens).strip()
                attempt = _Decoded(
                    tokens=tokens,
                    avg_logprob=float(avg_logprob),
                    compression_ratio=get_compression_ratio(text),
                    no_speech_prob=float(result.no_speech_prob),
                    temperature=temperature,
                )
                tried[index].append(attempt)
                if attempt.needs_fallback():
                    still_pending.append(index)
                else:
                    chosen[index] = attempt
            pending = still_pending
            if not pending:
                break
        for index in pending:
            # Every temperature failed: faster-whisper keeps the likeliest attempt that is not
            # a repetition loop (or the likeliest of all), reporting the last temperature.
            attempts = tried[index]
            candidates = [a for a in attempts if a.compression_ratio <= COMPRESSION_RATIO_THRESHOLD] or attempts
            best = max(candidates, key=lambda attempt: attempt.avg_logprob)
            chosen[index] = dataclasses.replace(best, temperature=self.temperatures[-1])
        return [attempt for attempt in chosen if attempt is not None]

    def _add_words(self, features: np.ndarray, encoder_output: Any, languages: list[str], passes: list[_Pass]) -> None:
        """Words and their times for the passes' pieces (in place), aligned a batch at a time."""
        model = self.model
        for language in dict.fromkeys(languages):
            indexes = [index for index, other in enumerate(languages) if other == language]
            tokenizer = self.tokenizer(language)
            # The alignment starts with the language's start sequence: one call per language,
            # each on its windows' part of the encoder output.
            output = self._part(features, encoder_output, indexes)
            text_tokens = [
                [token for piece in passes[index].pieces for token in piece["tokens"] if token < tokenizer.eot]
                for index in indexes
            ]
            alignments = model.find_alignment(
                tokenizer, text_tokens, output, [passes[index].frames for index in indexes]
            )
            for index, alignment in zip(indexes, alignments, strict=True):
                one = passes[index]
                if not one.pieces:
                    continue
                # faster-whisper's own word timing, on this window's speech alone.
                WhisperModel.add_word_timestamps(
                    _AlignedWindow(model.frames_per_second, alignment),  # type: ignore[arg-type]
                    [one.pieces],
                    tokenizer,
                    None,
                    one.frames,
                    PREPEND_PUNCTUATIONS,
                    APPEND_PUNCTUATIONS,
                    one.progress.last_speech,
                )

    def _part(self, features: np.ndarray, encoder_output: Any, indexes: list[int]) -> Any:
        """The encoder output of the batch's windows at ``indexes`` (in that order).

        On CPU, those windows' rows of the batch's output, copied: the same numbers as
        encoding them again, since a window's encoding does not depend on the rest of its
        batch. Elsewhere the output is not in host memory (nor in a type NumPy has, with a
        bfloat16 compute type), and they are encoded again.
        """
        if indexes == list(range(len(features))):
            return encoder_output
        if self.model.model.device == "cpu" and encoder_output.dtype in _NUMPY_TYPES:
            return ctranslate2.StorageView.from_array(np.asarray(encoder_output)[indexes])
        return self.model.encode(features[indexes])

    def _transcript(self, item: _Progress) -> WindowTranscript:
        window = item.window
        language = item.language or self.language or "en"
        tokenizer = self.tokenizer(language)
        timeline = _Timeline(window)
        raw_texts: list[str] = []
        segments: list[Segment] = []
        for piece, result in item.pieces:
            text = tokenizer.decode(piece["tokens"])
            if piece["start"] == piece["end"] or not text.strip():
                continue
            raw_texts.append(text)
            words = tuple(timeline.word(word) for word in piece.get("words", ()))
            if words:
                start, end = words[0].start, words[-1].end
            else:
                start, end = timeline.original(piece["start"]), timeline.original(piece["end"])
            segments.append(
                Segment(
                    id=0,
                    start=rounded_seconds(start),
                    end=rounded_seconds(end),
                    text=text.strip(),
                    language=language,
                    words=words if self.word_timestamps else None,
                    seek=round(
                        timeline.original(piece["seek"] / self.model.frames_per_second) * self.model.frames_per_second
                    ),
                    tokens=tuple(int(token) for token in piece["tokens"]),
                    temperature=result.temperature,
                    avg_logprob=result.avg_logprob,
                    compression_ratio=result.compression_ratio,
                    no_speech_prob=result.no_speech_prob,
                )
            )
        first = next((text for text in raw_texts if text.strip()), "")
        return WindowTranscript(
            window=window,
            segments=tuple(segments),
            text=(" " if first[:1].isspace() else "") + join_segment_texts(raw_texts),
            language=language,
            language_probability=item.probability,
        )


_NUMPY_TYPES = frozenset({ctranslate2.DataType.float32, ctranslate2.DataType.float16})


class _Timeline:
    """Times in a window's decoded audio (its stretches of speech one after another) as times of the recording."""

    def __init__(self, window: Window) -> None:
        self.stretches = window.stretches
        self.offsets: list[float] = []
        decoded = 0
        for start, end in self.stretches:
            self.offsets.append(decoded / SAMPLING_RATE)
            decoded += _sample(end) - _sample(start)

    def original(self, seconds: float, stretch: int | None = None) -> float:
        """``seconds`` into the decoded audio, in the recording, within ``stretch`` (default: the one it falls in)."""
        if stretch is None:
            stretch = max(bisect.bisect_right(self.offsets, seconds) - 1, 0)
        start, end = self.stretches[stretch]
        return min(max(start + float(seconds) - self.offsets[stretch], start), end)

    def word(self, word: dict[str, Any]) -> Word:
        # A word is placed in the stretch its middle falls in, as faster-whisper's pipeline
        # places it, so that it never spans a pause that was left out.
        stretch = max(bisect.bisect_right(self.offsets, (word["start"] + word["end"]) / 2) - 1, 0)
        return Word(
            word=word["word"],
            start=rounded_seconds(self.original(word["start"], stretch)),
            end=rounded_seconds(self.original(word["end"], stretch)),
            probability=float(word["probability"]),
        )


def _sample(seconds: float) -> int:
    return round(seconds * SAMPLING_RATE)


class _AlignedWindow:
    """Stands in for the WhisperModel in ``WhisperModel.add_word_timestamps`` for one decoding.

    That method aligns the words of the decodings it is given and then times them, passing
    the end of one decoding's speech on to the next. Here a batch's alignment is computed in
    one call beforehand, and the method is run on each decoding alone with its alignment and
    the end of its own window's speech so far: faster-whisper's timing rules, with nothing
    passed from one window to another.
    """

    def __init__(self, frames_per_second: float, alignment: list[dict[str, Any]]) -> None:
        self.frames_per_second = frames_per_second
        self._alignment = alignment

    def find_alignment(self, *args: Any, **kwargs: Any) -> list[list[dict[str, Any]]]:
        return [self._alignment]


def _sentences(tokenizer: Tokenizer, tokens: list[int]) -> list[list[int]]:
    """A window's text tokens cut after each sentence, as the segments of the window.

    Words are cut as faster-whisper's word alignment cuts them (at spaces, or at each
    character in scripts without spaces); a sentence ends with a word ending in . ? ! (or
    their CJK forms), closing quotes and brackets after it included, except after a title
    ("Mr.") or an initial ("F."), which a full stop follows without ending anything.
    """
    text_tokens = [token for token in tokens if token < tokenizer.eot]
    if not text_tokens:
        return []
    words, word_tokens = tokenizer.split_to_word_tokens(text_tokens)
    sentences: list[list[int]] = [[]]
    for index, (word, part) in enumerate(zip(words, word_tokens, strict=True)):
        if not sentences[-1] and word.strip() and all(char in _CLOSERS for char in word.strip()) and len(sentences) > 1:
            # A closing quote after the end of a sentence belongs to that sentence.
            sentences[-2] += part
            continue
        sentences[-1] += part
        stripped = word.strip().rstrip(_CLOSERS)
        if not stripped or stripped[-1] not in _SENTENCE_END or index == len(words) - 1:
            continue
        before = stripped[:-1].strip() or (words[index - 1].strip() if index else "")
        if before.lower() in _TITLES or (len(before) == 1 and before.isupper()):
            continue
        sentences.append([])
    return [sentence for sentence in sentences if sentence]


_SENTENCE_END = frozenset(".?!…。？！")
_CLOSERS = "\"'”’»)]}」』】）"
_TITLES = frozenset({"mr", "mrs", "ms", "dr", "st", "prof", "sr", "jr"})
