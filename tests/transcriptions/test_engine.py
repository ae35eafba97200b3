"""Inference layer with the real bundled models and real audio: registry, cache, transcription."""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import wave
from collections.abc import Iterator
from pathlib import Path

import jiwer
import numpy as np
import pytest
from faster_whisper import WhisperModel
from faster_whisper.audio import decode_audio

from transcriptions import engine
from transcriptions.engine import (
    BUNDLED_MODELS,
    DEFAULT_TEMPERATURES,
    BundledModel,
    InvalidLanguage,
    InvalidTask,
    ModelCache,
    PackageFile,
    TranscriptResult,
    UnknownModel,
    available_models,
    default_cpu_threads,
    install_bundled_models,
    is_multilingual_model,
    join_segment_texts,
    temperature_schedule,
    transcribe,
    validate_language,
    validate_task,
)

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
SHARED_JFK = Path("/work/shared/audio/jfk.flac")
JFK_REFERENCE = (
    "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
)


def _normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def _word_error_rate(reference: str, hypothesis: str) -> float:
    return float(jiwer.wer(_normalise(reference), _normalise(hypothesis)))


@pytest.fixture(scope="session")
def jfk_flac() -> Path:
    """The 11 s JFK recording; tests/data normally has it already."""
    path = DATA_DIR / "jfk.flac"
    if not path.exists():
        if not SHARED_JFK.exists():
            pytest.skip("tests/data/jfk.flac is missing")
        path.parent.mkdir(parents=True, exist_ok=True)
        # Someone else may copy the same file at the same moment: copy aside, then rename.
        temp = path.with_name(f".jfk.flac.{os.getpid()}.tmp")
        shutil.copyfile(SHARED_JFK, temp)
        os.replace(temp, path)
    return path


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Bundled models installed once per run (assembling ggml-base writes 145 MB)."""
    directory = tmp_path_factory.mktemp("models")
    assert install_bundled_models(directory) == ["ggml-tiny.en", "ggml-base"]
    return directory


@pytest.fixture(scope="session")
def model_cache(models_dir: Path) -> ModelCache:
    return ModelCache(models_dir, max_models=2, cpu_threads=2)


@pytest.fixture(scope="session")
def multilingual_mp3() -> Path:
    """60 s: the MIT licence read in English (to about 29 s), then in German."""
    path = DATA_DIR / "multilingual.mp3"
    if not path.exists():
        pytest.skip("tests/data/multilingual.mp3 is missing")
    return path


def _write_wav(path: Path, samples: np.ndarray) -> Path:
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(16000)
        writer.writeframes((np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes())
    return path


@pytest.fixture(scope="session")
def tiny_en_jfk(model_cache: ModelCache, jfk_flac: Path) -> TranscriptResult:
    return transcribe(model_cache.get("ggml-tiny.en"), jfk_flac, language=None, vad_filter=False)


class _CountingCache(ModelCache):
    """Counts real loads, to tell a cache hit from a reload."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.loads: list[str] = []

    def _load(self, name: str) -> WhisperModel:
        self.loads.append(name)
        return super()._load(name)


class _ManualClock:
    """A clock the test moves forward, so idle expiry needs no sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- Bundled models and registry ------------------------------------------------------


def test_available_models_lists_both_bundled_models_with_sizes(models_dir: Path) -> None:
    models = available_models(models_dir)
    assert list(models) == ["ggml-base", "ggml-tiny.en"]
    for name, info in models.items():
        assert info.name == name
        assert info.path == models_dir / name
        assert info.size_bytes == sum(item.stat().st_size for item in info.path.iterdir())
    parts = BUNDLED_MODELS["ggml-base"].weight_parts
    base_weights = sum(part.locate().stat().st_size for part in parts)  # type: ignore[union-attr]
    assert (models_dir / "ggml-base" / "model.bin").stat().st_size == base_weights
    assert models["ggml-base"].size_bytes > base_weights > 140_000_000
    assert models["ggml-tiny.en"].size_bytes > 75_000_000


def test_install_is_idempotent(models_dir: Path) -> None:
    before = {name: (models_dir / name / "model.bin").stat() for name in BUNDLED_MODELS}
    assert install_bundled_models(models_dir) == ["ggml-tiny.en", "ggml-base"]
    for name, stat in before.items():
        after = (models_dir / name / "model.bin").stat()
        assert (after.st_ino, after.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)


def test_interrupted_install_is_repaired(tmp_path: Path) -> None:
    install_bundled_models(tmp_path)
    # What a crash can leave: a half-written temporary file; and what a non-atomic writer
    # could have left: a truncated model.bin.
    stray = tmp_path / f".ggml-base.model.bin{engine.models._TEMP_MARKER}deadbeef.tmp"
    stray.write_bytes(b"\0" * 4096)
    target = tmp_path / "ggml-base" / "model.bin"
    expected_size = target.stat().st_size
    with target.open("r+b") as handle:
        handle.truncate(1024)

    assert install_bundled_models(tmp_path) == ["ggml-tiny.en", "ggml-base"]
    assert target.stat().st_size == expected_size
    assert list(available_models(tmp_path)) == ["ggml-base", "ggml-tiny.en"]
    assert stray.exists(), "a young temporary file may belong to a running install"

    install_bundled_models(tmp_path, stale_temp_seconds=0)
    assert not stray.exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ggml-base", "ggml-tiny.en"]


def test_install_copies_where_hard_links_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A models folder on another filesystem than site-packages: a fault this machine
    # cannot cause, so os.link is made to fail as it would there (EXDEV).
    def cross_device(source: object, target: object) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(engine.models.os, "link", cross_device)
    assert install_bundled_models(tmp_path) == ["ggml-tiny.en", "ggml-base"]
    (part,) = BUNDLED_MODELS["ggml-tiny.en"].weight_parts
    original = part.locate()
    assert original is not None
    installed = tmp_path / "ggml-tiny.en" / "model.bin"
    assert installed.read_bytes() == original.read_bytes()
    assert not installed.samefile(original)  # a copy, not a link
    assert list(available_models(tmp_path)) == ["ggml-base", "ggml-tiny.en"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ggml-base", "ggml-tiny.en"]


def test_concurrent_installs_are_safe(tmp_path: Path) -> None:
    barrier = threading.Barrier(3)
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def install() -> None:
        barrier.wait()
        try:
            results.append(install_bundled_models(tmp_path))
        except BaseException as error:  # collected so the test reports it
            errors.append(error)

    threads = [threading.Thread(target=install) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert results == [["ggml-tiny.en", "ggml-base"]] * 3
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ggml-base", "ggml-tiny.en"]
    assert (tmp_path / "ggml-base" / "model.bin").stat().st_size > 140_000_000


def test_missing_package_is_skipped_with_a_warning(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    absent = BundledModel(
        name="ggml-small",
        metadata_files=(PackageFile("no_such_model_package", "data/config.json", "0" * 64),),
        weight_parts=(PackageFile("no_such_model_package", "data/model.bin", "0" * 64),),
    )
    monkeypatch.setitem(BUNDLED_MODELS, "ggml-small", absent)
    with caplog.at_level(logging.WARNING, logger="transcriptions.engine"):
        assert install_bundled_models(models_dir) == ["ggml-tiny.en", "ggml-base"]
    assert "ggml-small" in caplog.text
    assert not (models_dir / "ggml-small").exists()


def test_available_models_ignores_what_is_not_a_model(tmp_path: Path) -> None:
    for name in ("ggml-small.en", "whisper-small", "ggml-no-weights", "ggml bad name"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
    (tmp_path / "ggml-small.en" / "model.bin").write_bytes(b"x" * 10)
    (tmp_path / "whisper-small" / "model.bin").write_bytes(b"x")
    (tmp_path / "ggml bad name" / "model.bin").write_bytes(b"x")
    (tmp_path / "ggml-file").write_text("not a folder")

    models = available_models(tmp_path)
    assert list(models) == ["ggml-small.en"]
    assert models["ggml-small.en"].size_bytes == 12
    assert available_models(tmp_path / "missing") == {}


def test_multilingual_names() -> None:
    assert is_multilingual_model("ggml-base")
    assert is_multilingual_model("ggml-large-v3")
    assert not is_multilingual_model("ggml-tiny.en")


# --- Languages ------------------------------------------------------------------------


def test_validate_language() -> None:
    validate_language("en", multilingual=False)
    validate_language("de", multilingual=True)
    validate_language("yue", multilingual=True)
    for code, multilingual in (("xx", True), ("EN", True), ("", True), ("de", False), ("xx", False)):
        with pytest.raises(InvalidLanguage):
            validate_language(code, multilingual)


def test_transcribe_rejects_unusable_languages(model_cache: ModelCache, jfk_flac: Path) -> None:
    with pytest.raises(InvalidLanguage, match="xx"):
        transcribe(model_cache.get("ggml-base"), jfk_flac, language="xx", vad_filter=False)
    with pytest.raises(InvalidLanguage, match="English-only"):
        transcribe(model_cache.get("ggml-tiny.en"), jfk_flac, language="de", vad_filter=False)
    assert issubclass(InvalidLanguage, ValueError)


# --- Transcription --------------------------------------------------------------------


def test_tiny_en_transcribes_jfk(tiny_en_jfk: TranscriptResult) -> None:
    result = tiny_en_jfk
    assert _word_error_rate(JFK_REFERENCE, result.text) <= 0.1
    assert result.text == result.text.strip()
    assert result.language == "en"
    assert result.language_probability == 1.0
    assert result.duration == pytest.approx(11.0, abs=0.05)
    assert result.segments
    previous_end = 0.0
    for segment in result.segments:
        assert previous_end <= segment.start < segment.end <= result.duration + 0.01
        assert segment.text == segment.text.strip() and segment.text
        assert round(segment.start, 3) == segment.start and round(segment.end, 3) == segment.end
        previous_end = segment.end
    assert result.text == " ".join(segment.text for segment in result.segments)


def test_transcribe_accepts_a_16k_mono_wav(
    model_cache: ModelCache, jfk_flac: Path, tmp_path: Path, tiny_en_jfk: TranscriptResult
) -> None:
    wav_path = _write_wav(tmp_path / "jfk.wav", decode_audio(str(jfk_flac), sampling_rate=16000))

    result = transcribe(model_cache.get("ggml-tiny.en"), wav_path, language="en", vad_filter=True)
    assert _word_error_rate(JFK_REFERENCE, result.text) <= 0.1
    assert result.duration == pytest.approx(tiny_en_jfk.duration, abs=0.01)


def test_base_detects_english(model_cache: ModelCache, jfk_flac: Path) -> None:
    result = transcribe(model_cache.get("ggml-base"), str(jfk_flac), language=None, vad_filter=False)
    assert result.language == "en"
    assert 0.5 < result.language_probability <= 1.0
    assert _word_error_rate(JFK_REFERENCE, result.text) <= 0.1


def test_segments_carry_whisper_fields(tiny_en_jfk: TranscriptResult) -> None:
    result = tiny_en_jfk
    assert result.task == "transcribe"
    assert [segment.id for segment in result.segments] == list(range(len(result.segments)))
    for segment in result.segments:
        assert segment.language == "en"
        assert segment.words is None
        assert segment.tokens and all(isinstance(token, int) for token in segment.tokens)
        assert segment.temperature == 0.0
        assert segment.avg_logprob < 0.0
        assert segment.compression_ratio > 0.0
        assert 0.0 <= segment.no_speech_prob <= 1.0
        assert segment.seek == 0  # one window


def test_word_timestamps_join_to_segment_text(model_cache: ModelCache, jfk_flac: Path) -> None:
    result = transcribe(
        model_cache.get("ggml-tiny.en"), jfk_flac, language=None, vad_filter=False, word_timestamps=True
    )
    assert _word_error_rate(JFK_REFERENCE, result.text) <= 0.1
    assert [segment.id for segment in result.segments] == list(range(len(result.segments)))
    for segment in result.segments:
        assert segment.words
        # Whisper's leading spaces are kept, so the words are the segment's text as written.
        assert "".join(word.word for word in segment.words).strip() == segment.text
        assert all(word.word.startswith(" ") for word in segment.words)
        previous_end = segment.start
        for word in segment.words:
            assert previous_end <= word.start <= word.end <= segment.end
            assert round(word.start, 3) == word.start and round(word.end, 3) == word.end
            assert type(word.start) is float and type(segment.start) is float  # not numpy's
            assert 0.0 <= word.probability <= 1.0
            previous_end = word.end


def test_translate_needs_a_multilingual_model(model_cache: ModelCache, jfk_flac: Path) -> None:
    with pytest.raises(InvalidTask, match="English-only"):
        transcribe(model_cache.get("ggml-tiny.en"), jfk_flac, language=None, vad_filter=False, task="translate")
    with pytest.raises(InvalidTask, match="summarize"):
        transcribe(model_cache.get("ggml-base"), jfk_flac, language=None, vad_filter=False, task="summarize")
    validate_task("translate", multilingual=True)
    validate_task("transcribe", multilingual=False)
    assert issubclass(InvalidTask, ValueError)


def test_prompt_fixes_spelling(model_cache: ModelCache) -> None:
    model = model_cache.get("ggml-tiny.en")
    hotwords = DATA_DIR / "hotwords.mp3"
    plain = transcribe(model, hotwords, language=None, vad_filter=False)
    assert "comfy eye" in plain.text.lower()
    hinted = transcribe(model, hotwords, language=None, vad_filter=False, prompt="ComfyUI")
    # int8 tiny.en writes "comfyUI" here (float32 "ComfyUI"): the hint makes it one word.
    assert "comfyui" in hinted.text.lower()
    assert "comfy eye" not in hinted.text.lower()


def test_prompt_reaches_every_window(model_cache: ModelCache, jfk_flac: Path, tmp_path: Path) -> None:
    # JFK, 20 s of silence, then the hinted words in the second 30 s window. Whisper's
    # initial prompt, which only the first window sees when the previous text is not carried
    # over, left them "comfyu eye" there.
    jfk = decode_audio(str(jfk_flac), sampling_rate=16000)
    hotwords = decode_audio(str(DATA_DIR / "hotwords.mp3"), sampling_rate=16000)
    silence = np.zeros(20 * 16000, dtype=np.float32)
    path = _write_wav(tmp_path / "late-hotwords.wav", np.concatenate([jfk, silence, hotwords]))
    result = transcribe(model_cache.get("ggml-tiny.en"), path, language=None, vad_filter=False, prompt="ComfyUI")
    late = [segment.text for segment in result.segments if segment.seek > 0]
    assert late and "comfyui" in " ".join(late).lower()  # int8 may write the c lower-case
    assert _word_error_rate(JFK_REFERENCE, result.segments[0].text) <= 0.1


def test_temperature_schedule() -> None:
    assert temperature_schedule(None) == DEFAULT_TEMPERATURES == (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    assert temperature_schedule(0.0) == DEFAULT_TEMPERATURES
    assert temperature_schedule(0.3) == (0.3, 0.5, 0.7, 0.9)
    assert temperature_schedule(0.6) == (0.6, 0.8, 1.0)
    assert temperature_schedule(1.0) == (1.0,)
    for wrong in (-0.1, 1.01, float("nan")):
        with pytest.raises(ValueError, match="temperature"):
            temperature_schedule(wrong)


def test_temperature_starts_the_schedule(model_cache: ModelCache, jfk_flac: Path) -> None:
    result = transcribe(model_cache.get("ggml-tiny.en"), jfk_flac, language=None, vad_filter=False, temperature=0.6)
    assert result.segments
    assert {segment.temperature for segment in result.segments} <= {0.6, 0.8, 1.0}


def test_a_given_language_is_every_segments(model_cache: ModelCache, jfk_flac: Path) -> None:
    result = transcribe(model_cache.get("ggml-base"), jfk_flac, language="de", vad_filter=False)
    assert result.segments
    assert {segment.language for segment in result.segments} == {"de"}
    assert (result.language, result.language_probability) == ("de", 1.0)


_GERMAN_WORDS = {"genehmigung", "erteilt", "recht", "verwenden", "veröffentlichen", "verkaufen", "übertragen"}
_ENGLISH_WORDS = {"permission", "granted", "charge", "software", "copies", "portions"}


def test_mixed_languages_keep_each_segments_language(model_cache: ModelCache, multilingual_mp3: Path) -> None:
    model = model_cache.get("ggml-base")
    result = transcribe(model, multilingual_mp3, language=None, vad_filter=False, word_timestamps=True)

    languages = [segment.language for segment in result.segments]
    switch = languages.index("de")
    assert switch > 0 and languages == ["en"] * switch + ["de"] * (len(languages) - switch)
    english = _normalise(" ".join(segment.text for segment in result.segments[:switch])).split()
    german = _normalise(" ".join(segment.text for segment in result.segments[switch:])).split()
    assert len(_ENGLISH_WORDS & set(english)) == len(_ENGLISH_WORDS)
    assert len(_GERMAN_WORDS & set(german)) >= 5, german
    # The window where German is detected starts with the end of the English reading
    # ("... substantial portions of the software"): those segments stay English.
    assert not {"copies", "portions", "included"} & set(german)
    assert 24.0 < result.segments[switch].start < 32.0

    seconds = {code: sum(s.end - s.start for s in result.segments if s.language == code) for code in ("en", "de")}
    assert result.language == max(seconds, key=seconds.__getitem__)
    assert 0.5 < result.language_probability <= 1.0
    assert [segment.id for segment in result.segments] == list(range(len(result.segments)))
    for segment in result.segments:
        assert segment.words and "".join(word.word for word in segment.words).strip() == segment.text
    # The run's recorder stood in on a copy of the model only: the shared model is untouched.
    assert type(model.model).__name__ == "Whisper"


def test_join_segment_texts_keeps_whisper_spacing() -> None:
    assert join_segment_texts([" And so,", " ask not."]) == "And so, ask not."
    assert join_segment_texts([" trailing ", " space", "  ", ""]) == "trailing space"
    # Scripts without spaces between words get none between segments either.
    assert join_segment_texts(["那些美國人", "不讓他們"]) == "那些美國人不讓他們"
    assert join_segment_texts([]) == ""


# --- Model cache ----------------------------------------------------------------------


def test_cache_defaults() -> None:
    assert default_cpu_threads(1) == max(1, os.cpu_count() or 1)
    assert default_cpu_threads(10_000) == 1
    cache = ModelCache(Path("/nonexistent"), concurrency=2)
    assert cache.compute_type == "int8"
    assert cache.cpu_threads == default_cpu_threads(2)
    assert ModelCache(Path("/nonexistent"), device="cuda").compute_type == "default"


def test_cache_loads_a_model_once(models_dir: Path) -> None:
    cache = _CountingCache(models_dir, cpu_threads=1)
    barrier = threading.Barrier(4)
    got: list[WhisperModel] = []

    def get() -> None:
        barrier.wait()
        got.append(cache.get("ggml-tiny.en"))

    threads = [threading.Thread(target=get) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert cache.loads == ["ggml-tiny.en"]
    assert len(got) == 4 and all(model is got[0] for model in got)
    assert cache.get("ggml-tiny.en") is got[0]
    assert cache.loads == ["ggml-tiny.en"]


def test_cache_evicts_least_recently_used(models_dir: Path, tmp_path: Path) -> None:
    one = _CountingCache(models_dir, max_models=1, cpu_threads=1)
    tiny = one.get("ggml-tiny.en")
    one.get("ggml-base")
    assert one.loaded() == ["ggml-base"]
    assert one.get("ggml-tiny.en") is not tiny
    assert one.loads == ["ggml-tiny.en", "ggml-base", "ggml-tiny.en"]

    # A third model (the tiny.en folder under another name) to see which of two is evicted.
    (tmp_path / "ggml-tiny.en").symlink_to(models_dir / "ggml-tiny.en")
    (tmp_path / "ggml-tiny-copy.en").symlink_to(models_dir / "ggml-tiny.en")
    (tmp_path / "ggml-base").symlink_to(models_dir / "ggml-base")
    two = _CountingCache(tmp_path, max_models=2, cpu_threads=1)
    first = two.get("ggml-tiny.en")
    two.get("ggml-base")
    assert two.get("ggml-tiny.en") is first  # now ggml-base is the least recently used
    two.get("ggml-tiny-copy.en")
    assert two.loaded() == ["ggml-tiny.en", "ggml-tiny-copy.en"]
    assert two.loads == ["ggml-tiny.en", "ggml-base", "ggml-tiny-copy.en"]


def test_cache_unloads_idle_models(models_dir: Path) -> None:
    clock = _ManualClock()
    cache = _CountingCache(models_dir, idle_seconds=10, cpu_threads=1, clock=clock)
    model = cache.get("ggml-tiny.en")
    clock.now += 9
    assert cache.unload_idle() == []
    assert cache.get("ggml-tiny.en") is model  # an access restarts the idle time
    clock.now += 9
    assert cache.unload_idle() == []
    clock.now += 1
    assert cache.unload_idle() == ["ggml-tiny.en"]
    assert cache.loaded() == []

    # Expiry is also checked on access: the next get reloads.
    reloaded = cache.get("ggml-tiny.en")
    clock.now += 60
    assert cache.get("ggml-tiny.en") is not reloaded
    assert cache.loads == ["ggml-tiny.en"] * 3


@pytest.mark.parametrize("name", ["ggml-small", "tiny.en", "ggml-../ggml-tiny.en", "../ggml-tiny.en", "ggml-.."])
def test_cache_rejects_unknown_models(models_dir: Path, name: str) -> None:
    with pytest.raises(UnknownModel):
        ModelCache(models_dir).get(name)


@pytest.fixture(autouse=True)
def _no_stray_temp_files(models_dir: Path) -> Iterator[None]:
    yield
    leftovers = [path.name for path in models_dir.iterdir() if path.name.startswith(".")]
    assert leftovers == []
