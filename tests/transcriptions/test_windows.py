"""Windows of speech with the real VAD, the real bundled models and real audio."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from faster_whisper.vad import VadOptions, get_speech_timestamps

from tests.transcriptions.conftest import DATA_DIR, JFK_REFERENCE, word_error_rate
from transcriptions.engine import (
    InvalidLanguage,
    InvalidTask,
    ModelCache,
    Window,
    WindowTranscript,
    load_audio,
    merge_windows,
    plan_windows,
    transcribe,
    transcribe_windows,
)

RATE = 16000


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * RATE), dtype=np.float32)


def _words(text: str) -> list[str]:
    return re.sub(r"[^\w\s]", " ", text.lower()).split()


@pytest.fixture(scope="module")
def models(installed_models: Path) -> ModelCache:
    return ModelCache(installed_models, max_models=2, cpu_threads=2)


@pytest.fixture(scope="module")
def jfk() -> np.ndarray:
    return load_audio(DATA_DIR / "jfk.flac")


@pytest.fixture(scope="module")
def minute(jfk: np.ndarray) -> np.ndarray:
    """About a minute of English with pauses: JFK, the licence read in English, the ComfyUI phrase, JFK."""
    licence = load_audio(DATA_DIR / "multilingual.mp3")[: round(29.3 * RATE)]
    hotwords = load_audio(DATA_DIR / "hotwords.mp3")
    return np.concatenate([jfk, _silence(2.0), licence, _silence(1.5), hotwords, _silence(2.5), jfk])


def _assert_well_formed(windows: list[Window], audio: np.ndarray, max_seconds: float = 30.0) -> None:
    duration = len(audio) / RATE
    assert windows
    for window in windows:
        bounds = [window.start, *(time for stretch in window.stretches for time in stretch), window.end]
        assert bounds == sorted(bounds)
        assert 0.0 <= window.start < window.end <= duration
        assert all(start < end for start, end in window.stretches)
        assert window.speech_seconds <= max_seconds
    for before, after in zip(windows, windows[1:], strict=False):
        assert before.end <= after.start


# --- Planning --------------------------------------------------------------------------


def test_windows_cover_the_speech_within_30_seconds(minute: np.ndarray) -> None:
    windows = plan_windows(minute)
    _assert_well_formed(windows, minute)
    assert len(windows) >= 2
    # Every stretch of speech the VAD hears is decoded, in one window; the pauses between
    # JFK, the licence and the ComfyUI phrase (2 s, 1.5 s, 2.5 s) are left out.
    options = VadOptions(max_speech_duration_s=30.0, min_silence_duration_ms=160)
    stretches = [stretch for window in windows for stretch in window.stretches]
    for speech in get_speech_timestamps(minute, options):
        start, end = speech["start"] / RATE, speech["end"] / RATE
        assert any(first <= start and end <= last for first, last in stretches), (start, end)
    assert any(len(window.speech) > 1 for window in windows)

    shorter = plan_windows(minute, max_seconds=10.0, vad_options={"min_silence_duration_ms": 160})
    _assert_well_formed(shorter, minute, max_seconds=10.0)
    assert len(shorter) > len(windows)


def test_audio_without_speech_has_no_windows() -> None:
    noise = np.random.default_rng(7).normal(0.0, 0.003, 5 * RATE).astype(np.float32)
    assert plan_windows(_silence(5.0)) == []
    assert plan_windows(noise) == []
    for wrong in (0.0, 30.5):
        with pytest.raises(ValueError, match="max_seconds"):
            plan_windows(noise, max_seconds=wrong)


# --- Decoding --------------------------------------------------------------------------


def test_jfk_through_windows_matches_transcribe(models: ModelCache, jfk: np.ndarray) -> None:
    model = models.get("ggml-tiny.en")
    windows = plan_windows(jfk)
    assert len(windows) == 1
    transcripts = transcribe_windows(model, jfk, windows, language=None)
    result = merge_windows(transcripts, duration=len(jfk) / RATE)
    whole = transcribe(model, DATA_DIR / "jfk.flac", language=None, vad_filter=False)

    assert word_error_rate(JFK_REFERENCE, result.text) <= 0.1
    assert word_error_rate(whole.text, result.text) <= 0.1
    assert (result.language, result.language_probability) == ("en", 1.0)
    assert result.duration == pytest.approx(whole.duration, abs=0.01)
    assert result.task == "transcribe"
    assert [segment.id for segment in result.segments] == list(range(len(result.segments)))
    for segment in result.segments:
        # Sentences timed by their words, which are not kept unless asked for.
        assert windows[0].start <= segment.start < segment.end <= windows[0].end
        assert segment.words is None and segment.language == "en"


def test_words_have_times_in_the_original_audio(models: ModelCache, jfk: np.ndarray) -> None:
    model = models.get("ggml-tiny.en")
    offset = 7.25
    shifted = np.concatenate([_silence(offset), jfk, _silence(2.0)])
    windows = plan_windows(shifted)
    assert len(windows) == 1 and windows[0].start > offset - 1.0

    late = merge_windows(
        transcribe_windows(model, shifted, windows, language=None, word_timestamps=True),
        duration=len(shifted) / RATE,
    )
    early = merge_windows(
        transcribe_windows(model, jfk, plan_windows(jfk), language=None, word_timestamps=True),
        duration=len(jfk) / RATE,
    )
    assert word_error_rate(JFK_REFERENCE, late.text) <= 0.1
    for segment in late.segments:
        assert segment.words
        assert "".join(word.word for word in segment.words).strip() == segment.text
        assert segment.words[0].word.startswith(" ")
        assert windows[0].start <= segment.start <= segment.words[0].start
        assert segment.words[-1].end <= segment.end <= windows[0].end
    late_words = [word for segment in late.segments for word in segment.words or ()]
    early_words = [word for segment in early.segments for word in segment.words or ()]
    assert _words("".join(word.word for word in late_words)) == _words("".join(word.word for word in early_words))
    # Each word at its time plus the offset, give or take the alignment's jitter: heard at
    # another place in its window, a short word may move by up to 0.3 s ("my" on oneDNN).
    shifts = [
        shift
        for moved, word in zip(late_words, early_words, strict=True)
        for shift in (moved.start - word.start - offset, moved.end - word.end - offset)
    ]
    assert all(abs(shift) <= 0.35 for shift in shifts)
    assert sorted(abs(shift) for shift in shifts)[len(shifts) // 2] <= 0.05


def test_each_window_detects_its_language(models: ModelCache) -> None:
    audio = load_audio(DATA_DIR / "multilingual.mp3")
    windows = plan_windows(audio)
    transcripts = transcribe_windows(models.get("ggml-base"), audio, windows, language=None, word_timestamps=True)
    result = merge_windows(transcripts, duration=len(audio) / RATE)

    languages = [segment.language for segment in result.segments]
    switch = languages.index("de")
    assert switch > 0 and languages == ["en"] * switch + ["de"] * (len(languages) - switch)
    assert 28.0 < result.segments[switch].start < 32.0
    english = set(_words(" ".join(s.text for s in result.segments[:switch])))
    german = set(_words(" ".join(s.text for s in result.segments[switch:])))
    assert {"permission", "granted", "charge", "software", "copies", "portions"} <= english
    assert len({"genehmigung", "erteilt", "recht", "verwenden", "veröffentlichen", "verkaufen"} & german) >= 4
    assert all(0.5 < transcript.language_probability <= 1.0 for transcript in transcripts)

    seconds = {code: sum(s.end - s.start for s in result.segments if s.language == code) for code in ("en", "de")}
    assert result.language == max(seconds, key=seconds.__getitem__)
    assert [segment.id for segment in result.segments] == list(range(len(result.segments)))
    for segment in result.segments:
        assert segment.words and "".join(word.word for word in segment.words).strip() == segment.text


def test_a_batch_of_two_languages_is_encoded_once(models: ModelCache, monkeypatch: pytest.MonkeyPatch) -> None:
    # Each language's windows are aligned on their part of the batch's encoder output, which
    # gives what encoding them alone gives.
    model = models.get("ggml-base")
    audio = load_audio(DATA_DIR / "multilingual.mp3")
    windows = plan_windows(audio)
    alone = [transcribe_windows(model, audio, [window], language=None, word_timestamps=True)[0] for window in windows]
    encode = model.encode
    sizes: list[int] = []

    def counted(features: np.ndarray) -> object:
        sizes.append(len(features))
        return encode(features)

    monkeypatch.setattr(model, "encode", counted)
    together = transcribe_windows(model, audio, windows, language=None, word_timestamps=True)

    assert sizes == [len(windows)] and {transcript.language for transcript in together} == {"en", "de"}
    for one, other in zip(alone, together, strict=True):
        assert (one.text, one.language, one.language_probability) == (
            other.text,
            other.language,
            other.language_probability,
        )
        assert [(s.start, s.end, s.text, s.words) for s in one.segments] == [
            (s.start, s.end, s.text, s.words) for s in other.segments
        ]


def test_windows_decoded_apart_merge_like_one_call(models: ModelCache, minute: np.ndarray) -> None:
    # What lets two workers share a file: each half of its windows decoded on its own (and
    # in batches of another size) gives the same segments and words as one call.
    model = models.get("ggml-tiny.en")
    windows = plan_windows(minute)
    half = len(windows) // 2
    duration = len(minute) / RATE

    def run(part: list[Window], batch_size: int) -> list[WindowTranscript]:
        return transcribe_windows(model, minute, part, language=None, word_timestamps=True, batch_size=batch_size)

    together = merge_windows(run(windows, 8), duration=duration)
    apart = merge_windows(run(windows[:half], 1) + run(windows[half:], 2), duration=duration)

    # The same segments and words at the same times; a word's probability may differ in its
    # last digits with the batch's size where CTranslate2 runs on oneDNN (AMD CPUs).
    assert apart.text == together.text and len(apart.segments) == len(together.segments)
    for one, other in zip(apart.segments, together.segments, strict=True):
        assert (one.start, one.end, one.text) == (other.start, other.end, other.text)
        assert [(w.word, w.start, w.end) for w in one.words or ()] == [
            (w.word, w.start, w.end) for w in other.words or ()
        ]
        for word, same in zip(one.words or (), other.words or (), strict=True):
            assert word.probability == pytest.approx(same.probability, abs=1e-4)
    words = [word for segment in together.segments for word in segment.words or ()]
    assert all(a.start <= b.start for a, b in zip(words, words[1:], strict=False))
    # Nothing left out: whatever follows a pause, and the end of every window (where
    # Whisper stops writing early, the rest is decoded again).
    text = together.text.lower()
    assert text.count("ask not what your country") == 2
    assert "permission is hereby granted" in text and "folder again" in text
    for window in windows:
        ends = [s.end for s in together.segments if window.start <= s.start <= window.end]
        assert ends and window.end - max(ends) < 1.5
    with pytest.raises(ValueError, match="order"):
        merge_windows(run(windows[half:], 8) + run(windows[:half], 8), duration=duration)


def test_every_window_is_written_to_its_end(models: ModelCache) -> None:
    # ggml-tiny.en is English-only: on the German half of multilingual.mp3 it falls back to
    # sampling, and some draws write a few words and stop seconds before the window ends
    # (the rest is then decoded again from there). Whichever happens, the window's text
    # reaches its end.
    audio = load_audio(DATA_DIR / "multilingual.mp3")
    windows = plan_windows(audio)
    transcripts = transcribe_windows(models.get("ggml-tiny.en"), audio, windows, language=None)
    for transcript in transcripts:
        window = transcript.window
        assert transcript.segments and window.end - transcript.segments[-1].end < 1.5
        assert all(window.start <= s.start < s.end <= window.end for s in transcript.segments)
    assert {segment.temperature for segment in transcripts[-1].segments} & {0.2, 0.4, 0.6, 0.8, 1.0}


def test_prompt_reaches_every_window(models: ModelCache, jfk: np.ndarray) -> None:
    audio = np.concatenate([jfk, _silence(20.0), load_audio(DATA_DIR / "hotwords.mp3")])
    windows = plan_windows(audio, max_seconds=12.0)
    assert len(windows) == 2
    model = models.get("ggml-tiny.en")
    plain = transcribe_windows(model, audio, windows, language=None)
    hinted = transcribe_windows(model, audio, windows, language=None, prompt="ComfyUI")
    assert "comfy eye" in plain[1].text.lower()
    assert "comfyui" in hinted[1].text.lower()
    assert word_error_rate(JFK_REFERENCE, hinted[0].text) <= 0.1


def test_temperature_starts_the_schedule(models: ModelCache, jfk: np.ndarray) -> None:
    transcripts = transcribe_windows(models.get("ggml-tiny.en"), jfk, plan_windows(jfk), language=None, temperature=0.6)
    assert transcripts[0].segments
    assert {segment.temperature for segment in transcripts[0].segments} <= {0.6, 0.8, 1.0}


def test_requests_the_model_cannot_do_are_refused(models: ModelCache, jfk: np.ndarray) -> None:
    windows = plan_windows(jfk)
    tiny, base = models.get("ggml-tiny.en"), models.get("ggml-base")
    with pytest.raises(InvalidTask):
        transcribe_windows(tiny, jfk, windows, language=None, task="translate")
    with pytest.raises(InvalidLanguage):
        transcribe_windows(base, jfk, windows, language="xx")
    for wrong in (Window(5.0, 12.0), Window(-1.0, 2.0), Window(3.0, 3.0)):
        with pytest.raises(ValueError, match="not a part"):
            transcribe_windows(tiny, jfk, [wrong], language=None)
    long_audio = np.concatenate([jfk, jfk, jfk])
    with pytest.raises(ValueError, match="more than 30 s of speech"):
        transcribe_windows(tiny, long_audio, [Window(0.0, 31.0)], language=None)
    with pytest.raises(ValueError, match="batch_size"):
        transcribe_windows(tiny, jfk, windows, language=None, batch_size=0)


def test_nothing_said_merges_to_an_empty_result() -> None:
    empty = merge_windows([], duration=5.0)
    assert (empty.text, empty.segments, empty.language, empty.language_probability) == ("", [], "en", 0.0)
    assert empty.duration == 5.0
    given = merge_windows([], duration=5.0, task="translate", language="de")
    assert (given.language, given.language_probability, given.task) == ("de", 1.0, "translate")
