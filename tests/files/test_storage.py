"""files.storage and the WAV accessor on the default (local) storage."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from accounts.models import User
from files.models import File
from files.selectors import file_wav_local_path
from files.storage import storage_local_path, storage_put, storage_read, storage_size

pytestmark = pytest.mark.django_db


def test_put_replaces_an_object_under_the_same_name(tmp_path: Path) -> None:
    first = tmp_path / "a"
    first.write_bytes(b"first")
    second = tmp_path / "b"
    second.write_bytes(b"second!")
    assert storage_put(name="files/x/y/media.mp3", path=first) == "files/x/y/media.mp3"
    assert storage_put(name="files/x/y/media.mp3", path=second) == "files/x/y/media.mp3"
    assert storage_size("files/x/y/media.mp3") == 7
    assert default_storage.listdir("files/x/y") == ([], ["media.mp3"])


def test_read_streams_a_range() -> None:
    default_storage.save("files/r/range.bin", ContentFile(bytes(range(256)) * 10))
    assert b"".join(storage_read("files/r/range.bin", start=250, length=10)) == bytes(range(250, 256)) + bytes(range(4))
    assert b"".join(storage_read("files/r/range.bin", start=2550, length=100)) == bytes(range(246, 256))


def test_missing_objects_raise_file_not_found() -> None:
    with pytest.raises(FileNotFoundError):
        storage_size("files/none/missing")
    with pytest.raises(FileNotFoundError), storage_local_path("files/none/missing"):
        pass


def test_wav_local_path_is_the_stored_object(user: User) -> None:
    default_storage.save("files/w/audio.wav", ContentFile(b"RIFF...."))
    file = File.objects.create(
        owner=user,
        filename="a.mp3",
        kind="audio",
        content_type="audio/mpeg",
        blake3="0" * 64,
        wav_name="files/w/audio.wav",
        state=File.State.READY,
    )
    with file_wav_local_path(file) as path:
        assert path.read_bytes() == b"RIFF...."
    file.wav_name = ""
    with pytest.raises(FileNotFoundError), file_wav_local_path(file):
        pass
