"""One part's bytes onto disk: hashed (BLAKE3) and written in one pass, dropped past a limit.

:class:`_PartWriter` hashes and writes on a helper thread while the caller
receives the next bytes; :class:`StreamedUpload` is the part it leaves behind
(temporary file, size, digest). The upload handlers feed it from a request
body; ``streamed_upload_from`` feeds it from any other ``UploadedFile``.
"""

from __future__ import annotations

import os
import queue
import tempfile
import threading
from typing import Any

from blake3 import blake3
from django.conf import settings
from django.core.files.uploadedfile import UploadedFile

from whisper_site.errors import insufficient_storage_error, is_no_space


class StreamedUpload(UploadedFile):
    """One part of a request: its temporary file, size and BLAKE3 digest.

    ``too_large`` parts have no file: their bytes were dropped while they
    streamed. The temporary file is deleted on ``close()`` (or moved into
    storage by ``FileSystemStorage``, which is fine too).
    """

    def __init__(
        self,
        *,
        temp: Any | None,
        name: str,
        content_type: str,
        size: int,
        charset: str | None,
        content_type_extra: dict[str, Any] | None,
        digest: str | None,
        too_large: bool,
    ) -> None:
        super().__init__(temp, name, content_type, size, charset, content_type_extra)
        self.blake3_hex = digest
        self.too_large = too_large

    def temporary_file_path(self) -> str:
        if self.file is None:
            raise FileNotFoundError("the part was dropped: it was too large")
        return self.file.name

    def close(self) -> None:
        if self.file is None:
            return
        try:
            self.file.close()
        except FileNotFoundError:
            # Already moved into storage, which is the point.
            pass


class _PartWriter:
    """Receives one part's bytes: hash and write while under the limit, drop after.

    A disk that fills up (``ENOSPC``, a quota) ends the writing the same way: the
    temporary file is deleted at once, the rest of the part is received and dropped,
    and ``no_space`` tells the caller to answer 507 once the body is read.

    Hashing and writing run on a helper thread (both release the GIL) while
    the request thread receives the next bytes. The bytes cross over in a
    fixed set of ``POOL_BUFFERS`` buffers of ``POOL_BUFFER_BYTES``, reused,
    so a part takes the same memory whatever its size.
    """

    POOL_BUFFERS = 6
    POOL_BUFFER_BYTES = 1024 * 1024

    def __init__(self, *, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.too_large = False
        self.no_space = False
        self.hasher = blake3()
        os.makedirs(settings.FILE_UPLOAD_TEMP_DIR, exist_ok=True)
        # Unbuffered: writes are big chunks already. Lives past this call:
        # closed (deleting it) by the part, by refuse() or by cleanup().
        self.temp: Any | None = tempfile.NamedTemporaryFile(  # noqa: SIM115
            prefix="upload-", suffix=".part", dir=settings.FILE_UPLOAD_TEMP_DIR, buffering=0
        )
        # Made as needed: a small part never needs more than one.
        self._free: queue.Queue[memoryview] = queue.Queue()
        self._buffers = 0
        self._filled: queue.Queue[tuple[memoryview, int] | None] = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="upload-writer", daemon=True)
        self._thread.start()

    def __call__(self, view: memoryview) -> None:
        self.size += len(view)
        if self.too_large or self.no_space:
            return
        if self.size > self.limit:
            self.refuse()
            return
        while view:
            if self._error is not None:
                self._give_up_or_raise()
                return
            if self._free.empty() and self._buffers < self.POOL_BUFFERS:
                self._buffers += 1
                self._free.put(memoryview(bytearray(self.POOL_BUFFER_BYTES)))
            buffer = self._free.get()
            count = min(len(view), len(buffer))
            buffer[:count] = view[:count]
            self._filled.put((buffer, count))
            view = view[count:]

    def _work(self) -> None:
        while (item := self._filled.get()) is not None:
            buffer, count = item
            chunk = buffer[:count]
            try:
                if self._error is None:
                    self.hasher.update(chunk)
                    written = 0
                    while written < len(chunk):
                        written += self.temp.write(chunk[written:])
            except BaseException as exc:  # noqa: BLE001 (handed to the request thread, raised there)
                self._error = exc
            finally:
                self._free.put(buffer)

    def _stop(self) -> None:
        if self._thread.is_alive():
            self._filled.put(None)
            self._thread.join()

    def finish(self) -> str | None:
        """Wait until every byte is hashed and written; the digest, ``None`` for a refused part."""
        self._stop()
        if self._error is not None:
            self._give_up_or_raise()
        return None if self.too_large or self.no_space else self.hasher.hexdigest()

    def _give_up_or_raise(self) -> None:
        # A full disk drops the part (the caller answers 507); any other error is raised.
        error = self._error
        assert error is not None
        if not is_no_space(error):
            raise error
        self.no_space = True
        self._error = None
        self.discard()

    def refuse(self) -> None:
        self.too_large = True
        self.discard()

    def discard(self) -> None:
        self._stop()
        if self.temp is not None:
            self.temp.close()
            self.temp = None


def streamed_upload_from(upload: UploadedFile, *, limit: int, name: str) -> StreamedUpload:
    """An upload that no handler of ours received, as a :class:`StreamedUpload`.

    Its bytes go through the same writer as a streamed part: hashed and
    written to a temporary file, and dropped past ``limit`` (``too_large``).
    """
    writer = _PartWriter(limit=limit)
    try:
        for chunk in upload.chunks():
            writer(memoryview(chunk))
            if writer.too_large or writer.no_space:
                break
        digest = writer.finish()
    except BaseException:
        writer.discard()
        raise
    if writer.no_space:
        raise insufficient_storage_error()
    return StreamedUpload(
        temp=writer.temp,
        name=name,
        content_type=upload.content_type or "",
        size=writer.size,
        charset=upload.charset,
        content_type_extra=upload.content_type_extra,
        digest=digest,
        too_large=writer.too_large,
    )
