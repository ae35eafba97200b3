"""Streaming multipart parts to disk while hashing them.

:class:`HashingUploadHandler` takes over Django's multipart parsing (through
the ``handle_raw_input`` hook) with :mod:`files.multipart`'s reader. Each
accepted part is written to a temporary file in ``FILE_UPLOAD_TEMP_DIR`` and
the same bytes feed a BLAKE3 hasher, so the digest is ready when the last
byte lands (one pass, no second read). A part that grows past its limit
stops being written at that chunk: its temporary file is deleted at once and
the rest of its bytes are received and dropped, so memory and disk use never
depend on what the client sends. Hashing and writing run on a helper thread
beside the receiving one (see :mod:`files.uploads.writer`).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from django.core.files.uploadhandler import FileUploadHandler
from django.http import HttpRequest, QueryDict
from django.utils.datastructures import MultiValueDict

from files.multipart import BodySource, BodyTimeout, GunicornSocketSource, MultipartReader, PartHeaders, StreamSource
from files.uploads.writer import StreamedUpload, _PartWriter
from whisper_site.errors import ApplicationError, insufficient_storage_error

# The receive buffer, one per request: bigger means fewer trips through
# Python per byte; past a few MiB nothing is gained (docs/files.md).
UPLOAD_BUFFER_BYTES = 4 * 1024 * 1024


class HashingUploadHandler(FileUploadHandler):
    """Parses a whole multipart body; parts named one of ``field_names`` become :class:`StreamedUpload`.

    File parts with other names are received and dropped; plain fields land
    in ``request.POST`` within Django's field limits. ``max_bytes`` bounds
    each part: with ``too_large_message`` a part over it ends the request
    with that 400 at once, otherwise the part is returned flagged
    ``too_large`` and the next parts go on. More than ``max_files`` accepted
    parts is a 400 with ``too_many_message``.
    """

    chunk_size = UPLOAD_BUFFER_BYTES

    def __init__(
        self,
        request: Any = None,
        *,
        field_names: frozenset[str],
        max_bytes: int,
        max_files: int,
        too_many_message: str,
        too_large_message: str | None = None,
    ) -> None:
        super().__init__(request)
        self.field_names = field_names
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.too_many_message = too_many_message
        self.too_large_message = too_large_message
        self.parts: list[StreamedUpload] = []
        self._writer: _PartWriter | None = None
        # A part found the disk full: the rest of the body is read and dropped, then 507.
        self.no_space = False

    def handle_raw_input(
        self,
        input_data: Any,
        META: dict[str, Any],
        content_length: int,
        boundary: bytes,
        encoding: str | None = None,
    ) -> tuple[QueryDict, MultiValueDict]:
        source: BodySource = GunicornSocketSource.from_environ(
            META, settings.REQUEST_BODY_TIMEOUT_SECONDS
        ) or StreamSource(input_data, content_length)
        reader = MultipartReader(source, boundary, UPLOAD_BUFFER_BYTES)
        post = QueryDict(mutable=True)
        files = MultiValueDict()
        try:
            self._parse(reader, post, files, encoding)
        except BodyTimeout as exc:
            # The rest of the body never comes: gunicorn's worker closes the connection.
            self.cleanup()
            raise ApplicationError(f"Request body timed out: nothing received for {exc.seconds:g} s", 408) from None
        except BaseException:
            # Nothing of a refused request stays on disk, whoever catches this.
            self.cleanup()
            raise
        post._mutable = False
        return post, files

    def _parse(self, reader: MultipartReader, post: QueryDict, files: MultiValueDict, encoding: str | None) -> None:
        field_bytes = 0
        field_count = 0
        more = reader.skip_preamble()
        while more:
            headers = reader.read_headers()
            if headers is None:
                reader.stream_body(None)
            elif headers.filename is not None:
                if headers.filename and headers.name in self.field_names and not self.no_space:
                    part = self._receive_file(reader, headers)
                    if part is not None:
                        files.appendlist(headers.name, part)
                else:
                    # Not ours, or a browser's empty file input: dropped.
                    reader.stream_body(None)
            else:
                field_count += 1
                if field_count > settings.DATA_UPLOAD_MAX_NUMBER_FIELDS:
                    raise TooManyFieldsSent("The number of fields exceeded settings.DATA_UPLOAD_MAX_NUMBER_FIELDS.")
                chunks: list[bytes] = []

                def keep(view: memoryview, chunks: list[bytes] = chunks) -> None:
                    # Bounded as it arrives: plain fields are held in memory.
                    nonlocal field_bytes
                    field_bytes += len(view)
                    if field_bytes > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
                        raise RequestDataTooBig("Request body exceeded settings.DATA_UPLOAD_MAX_MEMORY_SIZE.")
                    chunks.append(bytes(view))

                reader.stream_body(keep)
                post.appendlist(headers.name, _decode(b"".join(chunks), headers.charset or encoding))
            more = reader.next_part()
        reader.finish()
        if self.no_space:
            # Read to the end, so that the client, still sending, gets the answer.
            raise insufficient_storage_error()

    def _receive_file(self, reader: MultipartReader, headers: PartHeaders) -> StreamedUpload | None:
        """The part, streamed to a temporary file; None when the disk was full (``no_space``)."""
        if len(self.parts) >= self.max_files:
            raise ApplicationError(self.too_many_message, 400)
        writer = _PartWriter(limit=self.max_bytes)
        self._writer = writer
        try:
            if self.too_large_message is not None:

                def strict(view: memoryview) -> None:
                    writer(view)
                    if writer.too_large:
                        raise ApplicationError(self.too_large_message or "", 400)

                reader.stream_body(strict)
            else:
                reader.stream_body(writer)
            digest = writer.finish()
        except BaseException:
            writer.discard()
            raise
        finally:
            self._writer = None
        if writer.no_space:
            self.no_space = True
            return None
        part = StreamedUpload(
            temp=writer.temp,
            name=headers.filename or "",
            content_type=headers.content_type,
            size=writer.size,
            charset=headers.charset,
            content_type_extra=headers.content_type_extra,
            digest=digest,
            too_large=writer.too_large,
        )
        self.parts.append(part)
        return part

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        # Never called: handle_raw_input parses the whole body.
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None

    def cleanup(self) -> None:
        """Delete every temporary file of this request (what storage took is gone already)."""
        if self._writer is not None:
            self._writer.discard()
        for part in self.parts:
            part.close()


class NoFilesUploadHandler(FileUploadHandler):
    """For ``FILE_UPLOAD_HANDLERS``: a file part where no view installed a handler is refused.

    Django's default handlers write any file part of any multipart request to
    disk, whatever its size, before the view sees it; only the views that take
    files (``POST /file``, ``PATCH /user/me``) install their own bounded handler.
    """

    def new_file(self, *args: Any, **kwargs: Any) -> None:
        raise RequestDataTooBig("File parts are not accepted here.")

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        return None

    def file_complete(self, file_size: int) -> None:
        return None


def _decode(value: bytes, charset: str | None) -> str:
    try:
        return value.decode(charset or "utf-8", "replace")
    except LookupError:
        return value.decode("utf-8", "replace")


def request_body_length(request: HttpRequest) -> int:
    try:
        return max(0, int(request.META.get("CONTENT_LENGTH") or 0))
    except ValueError:
        raise ApplicationError("Invalid Content-Length", 400) from None


# Multipart framing around each part: boundary lines and part headers.
PART_OVERHEAD_BYTES = 64 * 1024


def install_file_upload_handler(request: HttpRequest) -> HashingUploadHandler:
    """Set up ``POST /file`` before its body is read: parts named ``file``, limits from settings."""
    limit = settings.UPLOAD_MAX_FILES * (settings.UPLOAD_MAX_FILE_BYTES + PART_OVERHEAD_BYTES)
    if request_body_length(request) > limit:
        raise ApplicationError("Request body too large", 413)
    handler = HashingUploadHandler(
        request,
        field_names=frozenset({"file"}),
        max_bytes=settings.UPLOAD_MAX_FILE_BYTES,
        max_files=settings.UPLOAD_MAX_FILES,
        too_many_message=too_many_files_message(),
    )
    request.upload_handlers = [handler]
    return handler


def too_many_files_message() -> str:
    """The answer to more than ``UPLOAD_MAX_FILES`` parts named ``file`` in one request."""
    return f"Too many files. Maximum is {settings.UPLOAD_MAX_FILES} per request"


def avatar_too_large_message() -> str:
    """The reference's message, "... Maximum size is 10MB", for whatever the limit is set to."""
    limit = settings.AVATAR_MAX_BYTES
    if limit % (1024 * 1024) == 0:
        size = f"{limit // (1024 * 1024)}MB"
    elif limit >= 1024 * 1024:
        size = f"{limit / 1024 / 1024:.1f}MB"
    else:
        size = f"{round(limit / 1024)}KB"
    return f"Avatar file too large. Maximum size is {size}"


def install_avatar_upload_handler(request: HttpRequest) -> HashingUploadHandler:
    """Set up ``PATCH /user/me`` before its body is read: one ``avatar`` part, refused past its limit.

    Only multipart bodies carry files; for other bodies this does nothing
    that matters.
    """
    if request_body_length(request) > settings.AVATAR_MAX_BYTES + PART_OVERHEAD_BYTES:
        raise ApplicationError(avatar_too_large_message(), 400)
    handler = HashingUploadHandler(
        request,
        field_names=frozenset({"avatar"}),
        max_bytes=settings.AVATAR_MAX_BYTES,
        max_files=1,
        too_many_message="Only one avatar file may be uploaded",
        too_large_message=avatar_too_large_message(),
    )
    request.upload_handlers = [handler]
    return handler
