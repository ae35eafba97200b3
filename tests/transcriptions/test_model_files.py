"""Trusted models: bundled files checked against their pinned SHA-256, and official models fetched by name.

The altered packages are real copies of the bundled package, importable from a temporary
folder on ``sys.path``, with one byte changed; the download runs against the real Hugging
Face Hub client, which on a machine without internet fails as it does for an operator.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from transcriptions.engine import (
    BUNDLED_MODELS,
    BundledModel,
    ModelIntegrityError,
    available_models,
    install_bundled_models,
)
from transcriptions.engine.models import VERIFIED_RECORD

ROOT = Path(__file__).resolve().parents[2]
TINY = BUNDLED_MODELS["ggml-tiny.en"]


@pytest.fixture
def copied_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of ggml-tiny.en's package, importable as ``copied_tiny_models``, that the tiny model is taken from."""
    original = TINY.weight_parts[0].locate()
    assert original is not None
    package = tmp_path / "site" / "copied_tiny_models"
    shutil.copytree(original.parent.parent, package)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    copied = BundledModel(
        name=TINY.name,
        metadata_files=tuple(dataclasses.replace(f, package="copied_tiny_models") for f in TINY.metadata_files),
        weight_parts=tuple(dataclasses.replace(f, package="copied_tiny_models") for f in TINY.weight_parts),
    )
    # The tiny model alone: ggml-base's 145 MB are no part of these tests.
    monkeypatch.setattr("transcriptions.engine.models.BUNDLED_MODELS", {TINY.name: copied})
    return package


def alter_one_byte(path: Path, offset: int = 100) -> None:
    """Change one byte of ``path`` in place (the same inode), as a changed package file would be."""
    with path.open("r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


def test_the_copy_installs_as_the_original_does(copied_package: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    assert install_bundled_models(models) == ["ggml-tiny.en"]
    assert list(available_models(models)) == ["ggml-tiny.en"]
    assert (models / "ggml-tiny.en" / "model.bin").samefile(copied_package / "model" / "model.bin")


@pytest.mark.parametrize("name", ["config.json", "model.bin"])
def test_a_changed_package_file_is_refused_and_nothing_is_left(copied_package: Path, tmp_path: Path, name: str) -> None:
    alter_one_byte(copied_package / "model" / name)
    models = tmp_path / "models"
    with pytest.raises(ModelIntegrityError) as refused:
        install_bundled_models(models)
    message = str(refused.value)
    assert message.startswith(f"Bundled model ggml-tiny.en not installed: copied_tiny_models/model/{name} (")
    pinned = next(f.sha256 for f in TINY.package_files if f.relative_path == f"model/{name}")
    assert message.endswith(f"expected {pinned}") and "\n" not in message
    # No model folder, whole or half, and no temporary file.
    assert list(models.iterdir()) == []


def test_a_package_file_changed_after_install_takes_the_model_out(copied_package: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    install_bundled_models(models)
    # Changed in place: model.bin is a hard link of it, so the installed weights changed too.
    alter_one_byte(copied_package / "model" / "model.bin")
    with pytest.raises(ModelIntegrityError, match="copied_tiny_models/model/model.bin"):
        install_bundled_models(models)
    assert list(models.iterdir()) == []
    assert available_models(models) == {}


def test_a_verified_model_is_not_read_again_on_the_next_start(copied_package: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    install_bundled_models(models)
    installed = models / "ggml-tiny.en" / "model.bin"
    before = installed.stat()
    # The package's file replaced by another one (a new inode, as pip writes it): the installed
    # link keeps the verified bytes, and the record says so without reading them again.
    source = copied_package / "model" / "model.bin"
    altered = source.with_name("model.bin.new")
    shutil.copyfile(source, altered)
    alter_one_byte(altered)
    os.replace(altered, source)
    assert install_bundled_models(models) == ["ggml-tiny.en"]
    after = installed.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    # Without the record the package's file is hashed again, and refused.
    (models / "ggml-tiny.en" / VERIFIED_RECORD).unlink()
    with pytest.raises(ModelIntegrityError, match="copied_tiny_models/model/model.bin"):
        install_bundled_models(models)
    assert list(models.iterdir()) == []


def test_an_installed_file_changed_since_it_was_verified_is_put_back(copied_package: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    install_bundled_models(models)
    installed = models / "ggml-tiny.en" / "tokenizer.json"
    # Replaced by another file (not written in place, which would change the package's too).
    installed.unlink()
    installed.write_text("{}")
    assert install_bundled_models(models) == ["ggml-tiny.en"]
    assert installed.read_bytes() == (copied_package / "model" / "tokenizer.json").read_bytes()


def test_the_models_command_refuses_in_one_line(copied_package: Path, tmp_path: Path, settings: object) -> None:
    from django.core.management import CommandError, call_command

    settings.MODELS_DIR = tmp_path / "models"  # type: ignore[attr-defined]
    alter_one_byte(copied_package / "model" / "vocabulary.txt")
    with pytest.raises(CommandError, match=r"^Bundled model ggml-tiny.en not installed: copied_tiny_models/model/"):
        call_command("models", "--install", verbosity=0)


# --- manage.py models --download ------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def manage_models(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "MODELS_DIR", "DATA_DIR"))}
    env.update(
        DATA_DIR=str(tmp_path / "data"),
        DATABASE_URL="",
        # The hub as an offline site sees it, on any machine: nothing answers there. (Where
        # the machine is offline, the real endpoint fails the same way, by name resolution.)
        HF_ENDPOINT=f"http://127.0.0.1:{closed_port()}",
        # Bounded: an unanswered hub costs seconds, not minutes.
        HF_HUB_ETAG_TIMEOUT="5",
        HF_HUB_DOWNLOAD_TIMEOUT="5",
        HF_HOME=str(tmp_path / "hf"),
    )
    return subprocess.run(
        [sys.executable, "manage.py", "models", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_download_offline_fails_in_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    result = manage_models(tmp_path, "--download", "ggml-small")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("CommandError: Could not download ggml-small from the Hugging Face Hub: ")
    assert "Connect" in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    models = tmp_path / "data" / "models"
    assert not models.exists() or list(models.iterdir()) == []


def test_download_knows_the_official_names_only(tmp_path: Path) -> None:
    result = manage_models(tmp_path, "--download", "ggml-enormous")
    assert result.returncode == 1
    assert result.stderr.startswith("CommandError: No official model 'ggml-enormous': one of ggml-tiny.en, ggml-tiny, ")
    assert "ggml-small" in result.stderr and result.stderr.count("\n") == 1


def test_download_refuses_a_model_already_there(tmp_path: Path) -> None:
    folder = tmp_path / "data" / "models" / "ggml-small"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    result = manage_models(tmp_path, "--download", "ggml-small")
    assert result.returncode == 1
    assert result.stderr == (
        f"CommandError: ggml-small is already in {folder}: remove that folder first to fetch it again\n"
    )
    assert [p.name for p in folder.iterdir()] == ["config.json"]
