"""Stored objects of files, through Django's storage API.

The web server and the Celery workers may run on different machines: every
byte goes through ``default_storage`` (local disk by default, S3-compatible
when configured), never through a path shared by assumption. Two shortcuts
keep large files cheap without breaking that rule:

* a storage with local paths (``FileSystemStorage``) lends its path instead of
  a copy, and takes a file that is already on its disk by renaming it;
* on S3, reads go to the object itself (ranged GETs, managed downloads)
  because django-storages' ``S3File.read`` first downloads the whole object
  into memory.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files import File as DjangoFile
from django.core.files.storage import default_storage

logger = logging.getLogger(__name__)

# Reads of stored objects (downloads, copies to a worker's disk).
READ_CHUNK_BYTES = 1024 * 1024


def object_prefix(*, owner_id: Any, file_id: Any) -> str:
    """The folder every object of one file is stored under."""
    return f"files/{owner_id.hex}/{file_id.hex}"


class LocalFile(DjangoFile):
    """A file on this machine's disk, offered to ``Storage.save``.

    ``temporary_file_path`` lets ``FileSystemStorage`` rename it into place
    instead of copying it; other storages stream it.
    """

    def __init__(self, path: Path) -> None:
        super().__init__(open(path, "rb"), name=path.name)  # noqa: SIM115 (closed with this File)
        self._path = path

    def temporary_file_path(self) -> str:
        return str(self._path)


def _local_path(name: str) -> Path | None:
    try:
        return Path(default_storage.path(name))
    except NotImplementedError:
        return None


def _s3_object(opened: Any) -> Any | None:
    # django-storages' S3File: ``obj`` is the boto3 Object, loaded (HEAD) but
    # not downloaded yet.
    return getattr(opened, "obj", None)


def storage_put(*, name: str, path: Path) -> str:
    """Store the local file ``path`` under exactly ``name``; returns the name stored.

    Names are derived from the file's id, so a rerun of the same step writes
    the same name: an earlier object under it is replaced, not kept beside a
    suffixed copy. With a local storage the file is moved, not copied.
    """
    with LocalFile(path) as content:
        return storage_put_upload(name=name, upload=content)


def storage_put_upload(*, name: str, upload: Any) -> str:
    """Store an uploaded file (a temporary file on this machine) under ``name``.

    A store that fails part way (a full disk: ``FileSystemStorage`` copies across file
    systems and leaves what it wrote) deletes what it left under ``name`` before the
    error goes on: nothing half-stored stays behind.
    """
    if default_storage.exists(name):
        default_storage.delete(name)
    try:
        return default_storage.save(name, upload)
    except BaseException:
        try:
            default_storage.delete(name)
        except Exception:  # noqa: BLE001 (the store's own error is the one to report)
            logger.warning("Could not delete the partly stored %s", name, exc_info=True)
        raise


def storage_delete(names: list[str]) -> None:
    """Delete stored objects; a missing one is not an error."""
    for name in names:
        if name:
            default_storage.delete(name)


def storage_exists(name: str) -> bool:
    """Whether the object ``name`` is stored."""
    return bool(name) and default_storage.exists(name)


def storage_size(name: str) -> int:
    """Bytes of a stored object; ``FileNotFoundError`` when it is not there."""
    path = _local_path(name)
    if path is not None:
        return path.stat().st_size
    if not default_storage.exists(name):
        raise FileNotFoundError(name)
    return default_storage.size(name)


def storage_read(name: str, *, start: int, length: int, chunk_bytes: int = READ_CHUNK_BYTES) -> Iterator[bytes]:
    """Stream ``length`` bytes of a stored object from offset ``start``.

    The object is opened before the first chunk is asked for, so a missing
    object raises ``FileNotFoundError`` from the first ``next()``; callers that
    must know up front call :func:`storage_size` first.
    """
    opened = default_storage.open(name, "rb")
    try:
        s3_object = _s3_object(opened)
        if s3_object is not None:
            if length <= 0:
                return
            body = s3_object.get(Range=f"bytes={start}-{start + length - 1}")["Body"]
            try:
                yield from body.iter_chunks(chunk_bytes)
            finally:
                body.close()
            return
        opened.seek(start)
        remaining = length
        while remaining > 0:
            chunk = opened.read(min(chunk_bytes, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            yield chunk
    finally:
        opened.close()


def storage_copy_to(name: str, destination: Path) -> None:
    """Copy a stored object to a file on this machine, streaming."""
    opened = default_storage.open(name, "rb")
    try:
        s3_object = _s3_object(opened)
        if s3_object is not None:
            # boto3's managed transfer: ranged GETs written straight to disk.
            s3_object.download_file(str(destination))
            return
        with open(destination, "wb") as out:
            shutil.copyfileobj(opened, out, READ_CHUNK_BYTES)
    finally:
        opened.close()


def worker_temp_dir() -> str:
    """Where a worker puts its scratch files: the upload temp folder.

    On one machine it is on the media disk, so a finished output is renamed
    into storage rather than copied.
    """
    os.makedirs(settings.FILE_UPLOAD_TEMP_DIR, exist_ok=True)
    return settings.FILE_UPLOAD_TEMP_DIR


@contextmanager
def storage_local_path(name: str, *, suffix: str = "") -> Iterator[Path]:
    """A path on this machine holding the stored object ``name``.

    The storage's own path when it has one (nothing is copied), else a
    temporary copy that is deleted when the block ends. ``FileNotFoundError``
    when the object is not stored.
    """
    path = _local_path(name)
    if path is not None:
        if not path.is_file():
            raise FileNotFoundError(name)
        yield path
        return
    handle, temp_name = tempfile.mkstemp(prefix="stored-", suffix=suffix, dir=worker_temp_dir())
    os.close(handle)
    temp_path = Path(temp_name)
    try:
        storage_copy_to(name, temp_path)
        yield temp_path
    finally:
        temp_path.unlink(missing_ok=True)
