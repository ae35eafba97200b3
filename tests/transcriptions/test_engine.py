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
    BundledModel,
    InvalidLanguage,
    ModelCache,
    PackageFile,
    TranscriptResult,
    UnknownModel,
    available_models,
    default_cpu_threads,
    install_bundled_models,
    is_multilingual_model,
    join_segment_texts,
    transcribe,
    validate_language,
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
        metadata=PackageFile("no_such_model_package", "data/config.json"),
        weight_parts=(PackageFile("no_such_model_package", "data/model.bin"),),
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
    samples = decode_audio(str(jfk_flac), sampling_rate=16000)
    wav_path = tmp_path / "jfk.wav"
    with wave.open(str(wav_path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(16000)
        writer.writeframes((np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes())

    result = transcribe(model_cache.get("ggml-tiny.en"), wav_path, language="en", vad_filter=True)
    assert _word_error_rate(JFK_REFERENCE, result.text) <= 0.1
    assert result.duration == pytest.approx(tiny_en_jfk.duration, abs=0.01)


def test_base_detects_english(model_cache: ModelCache, jfk_flac: Path) -> None:
    result = transcribe(model_cache.get("ggml-base"), str(jfk_flac), language=None, vad_filter=False)
    assert result.language == "en"
    assert 0.5 < result.language_probability <= 1.0
    assert _word_error_rate(JFK_REFERENCE, result.text) <= 0.1


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
