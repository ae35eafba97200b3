"""``GET /file/:uuid``: the stored MP3/MP4 (or avatar image), streamed, with byte ranges."""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.http import HttpResponse, StreamingHttpResponse

from files.filenames import content_disposition, download_name
from files.models import File
from files.storage import storage_read, storage_size
from whisper_site.errors import ApplicationError, plain_text_response

ON_DISK_MESSAGE = "File not found on disk"
_RANGE = re.compile(r"^bytes=([0-9]*)-([0-9]*)$")
# A position of more significant digits than this lies past the end of any file
# (10**20 bytes is 100 exabytes); int() of a few thousand digits would raise.
_POSITION_DIGITS = 20
_PAST_ANY_FILE = 10**_POSITION_DIGITS
_EXTENSIONS = {"audio/mpeg": ".mp3", "video/mp4": ".mp4", "image/png": ".png", "image/jpeg": ".jpg",
               "image/gif": ".gif", "image/webp": ".webp"}  # fmt: skip


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1


class Unsatisfiable(Exception):
    pass


def _position(digits: str) -> int:
    """A byte position from its decimal digits, at most :data:`_PAST_ANY_FILE`."""
    significant = digits.lstrip("0")
    if len(significant) > _POSITION_DIGITS:
        return _PAST_ANY_FILE
    return int(significant or "0")


def byte_range(header: str | None, size: int) -> ByteRange | None:
    """The one range ``header`` asks for within ``size`` bytes, or ``None`` for the whole file.

    A header we do not understand, or one asking for several ranges, is
    ignored (RFC 9110 lets a server answer 200 with everything). A range
    that starts past the end raises :class:`Unsatisfiable`; an end or a
    suffix past it means "to the end" (RFC 9110, 14.1.2), however many
    digits it has.
    """
    if not header:
        return None
    match = _RANGE.match(header.strip().replace(" ", ""))
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        suffix = _position(last)
        if suffix == 0 or size == 0:
            raise Unsatisfiable
        return ByteRange(max(0, size - suffix), size - 1)
    start = _position(first)
    if not last:
        if start >= size:
            raise Unsatisfiable
        return ByteRange(start, size - 1)
    end = _position(last)
    if end < start:
        # "bytes=5-1" is invalid syntax, which RFC 9110 says to ignore.
        return None
    if start >= size:
        raise Unsatisfiable
    return ByteRange(start, min(end, size - 1))


def file_download_response(file: File, *, range_header: str | None, if_range: str | None, head: bool) -> HttpResponse:
    """The response for downloading ``file``: 200, 206 or 416, never read whole into memory."""
    if file.state != File.State.READY or not file.media_name:
        # Still converting (or failed): there is nothing to serve yet.
        raise ApplicationError(ON_DISK_MESSAGE, 404)
    try:
        size = storage_size(file.media_name)
    except FileNotFoundError:
        raise ApplicationError(ON_DISK_MESSAGE, 404) from None

    # We send no validators, so a conditional range can never be known to
    # match: RFC 9110 says send the whole file.
    wanted = None
    if not if_range:
        try:
            wanted = byte_range(range_header, size)
        except Unsatisfiable:
            return plain_text_response("Requested range not satisfiable", 416, {"Content-Range": f"bytes */{size}"})

    start, length, status = (0, size, 200) if wanted is None else (wanted.start, wanted.length, 206)
    if head:
        response: HttpResponse = HttpResponse(status=status, content_type=file.content_type)
    else:
        response = StreamingHttpResponse(
            storage_read(file.media_name, start=start, length=length), status=status, content_type=file.content_type
        )
    response["Content-Length"] = str(length)
    if wanted is not None:
        response["Content-Range"] = f"bytes {wanted.start}-{wanted.end}/{size}"
    response["Accept-Ranges"] = "bytes"
    extension = _EXTENSIONS.get(file.content_type, "")
    response["Content-Disposition"] = content_disposition(download_name(file.filename, extension))
    response["X-Content-Type-Options"] = "nosniff"
    return response
