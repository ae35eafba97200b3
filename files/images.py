"""Avatar images, recognised by their content.

The first bytes pick the format (PNG, JPEG, GIF, WebP); the picture's width
and height are then read from that format's own headers, and a picture over
the size limit is refused before anything is decoded. Only then must PyAV
decode a first frame with that format's demuxer, forced rather than guessed,
so nothing but a real image of one of those formats passes. The decoding
runs in a child process under an address-space limit (``media.call_bounded``).
Like media.py this module has no Django dependency.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import av

from files.media import DEFAULT_LIMITS, MediaLimits, call_bounded

# Decoding a picture allocates width x height x 4 bytes or so: bound it so
# a small, highly compressed file cannot ask for gigabytes. The default of
# the AVATAR_MAX_SIDE setting.
MAX_IMAGE_SIDE = 4096
# Decoding one picture of at most MAX_IMAGE_SIDE squared is quick; this
# bounds a decoder that is not.
_DECODE_TIMEOUT = 30.0
# How far into a file the headers that give the size may be: JPEG puts EXIF
# data and colour profiles (up to 64 KiB each) before its frame header.
_HEADER_SCAN_BYTES = 1024 * 1024


class NotAnImage(Exception):
    """The file is not a PNG, JPEG, GIF or WebP picture we can decode."""


@dataclass(frozen=True, slots=True)
class ImageInfo:
    content_type: str
    extension: str
    width: int
    height: int


# (magic bytes at offset 0, demuxer, MIME type, extension)
_SIGNATURES: tuple[tuple[bytes, str, str, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "png_pipe", "image/png", ".png"),
    (b"\xff\xd8\xff", "jpeg_pipe", "image/jpeg", ".jpg"),
    (b"GIF87a", "gif", "image/gif", ".gif"),
    (b"GIF89a", "gif", "image/gif", ".gif"),
)


def _signature(head: bytes) -> tuple[str, str, str] | None:
    for magic, demuxer, content_type, extension in _SIGNATURES:
        if head.startswith(magic):
            return demuxer, content_type, extension
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp_pipe", "image/webp", ".webp"
    return None


# --------------------------------------------------------------------------
# Sizes from the headers
# --------------------------------------------------------------------------


def _png_size(data: bytes) -> tuple[int, int]:
    # The IHDR chunk comes first, right after the signature.
    if data[12:16] != b"IHDR" or len(data) < 24:
        raise NotAnImage("PNG without an IHDR header")
    return struct.unpack(">II", data[16:24])


def _gif_size(data: bytes) -> tuple[int, int]:
    # The logical screen: ffmpeg's decoder makes every frame this size and
    # crops image blocks that reach past it.
    if len(data) < 10:
        raise NotAnImage("GIF without a screen descriptor")
    return struct.unpack("<HH", data[6:10])


# SOFn markers: baseline, extended, progressive, lossless, and the
# hierarchical and arithmetic-coded variants (which ffmpeg refuses anyway);
# C4 (DHT), C8 (JPG) and CC (DAC) are not frame headers. F7 is JPEG-LS.
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7})
# Markers that stand alone, without a length.
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})


def _jpeg_size(data: bytes) -> tuple[int, int]:
    # Segments are walked by their lengths, so that a frame header inside
    # EXIF data (its thumbnail is a JPEG of its own) is not taken for the
    # picture's.
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise NotAnImage("JPEG segments are damaged")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, or a scan before any frame header
            break
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in _JPEG_SOF:
            if length < 7 or pos + 9 > len(data):
                break
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            if height == 0:
                # The height comes later (a DNL marker): unknown in advance.
                raise NotAnImage("JPEG without its height in the frame header")
            return width, height
        pos += 2 + length
    raise NotAnImage("JPEG without a frame header")


def _webp_size(data: bytes) -> tuple[int, int]:
    # The largest of the sizes the chunks declare: the canvas (VP8X), and
    # the picture itself (VP8 lossy, VP8L lossless), which is what ffmpeg
    # decodes and allocates.
    width = height = 0
    pos = 12
    found = False
    while pos + 8 <= len(data):
        fourcc = data[pos : pos + 4]
        (size,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        body = data[pos + 8 : pos + 8 + min(size, 32)]
        if fourcc == b"VP8X" and len(body) >= 10:
            w = 1 + int.from_bytes(body[4:7], "little")
            h = 1 + int.from_bytes(body[7:10], "little")
        elif fourcc == b"VP8 " and len(body) >= 10 and body[3:6] == b"\x9d\x01\x2a":
            w, h = (v & 0x3FFF for v in struct.unpack("<HH", body[6:10]))
        elif fourcc == b"VP8L" and len(body) >= 5 and body[0] == 0x2F:
            bits = int.from_bytes(body[1:5], "little")
            w, h = 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
        else:
            # Chunks are padded to an even size.
            pos += 8 + size + (size & 1)
            continue
        width, height, found = max(width, w), max(height, h), True
        if fourcc != b"VP8X":
            break
        pos += 8 + size + (size & 1)
    if not found:
        raise NotAnImage("WebP without a picture header")
    return width, height


_SIZE_READERS = {"png_pipe": _png_size, "jpeg_pipe": _jpeg_size, "gif": _gif_size, "webp_pipe": _webp_size}


# --------------------------------------------------------------------------
# Probing
# --------------------------------------------------------------------------


def probe_image(
    path: str | os.PathLike[str],
    *,
    max_side: int = MAX_IMAGE_SIDE,
    limits: MediaLimits = DEFAULT_LIMITS,
) -> ImageInfo:
    """What picture ``path`` holds; :class:`NotAnImage` when it holds none we accept.

    A picture wider or higher than ``max_side`` pixels is refused from its
    headers, before anything is decoded. The first frame is then decoded in
    a child process under ``limits.probe_memory_limit_mb`` of address space, with
    decoders that refuse to allocate a frame of more than ``max_side``
    squared pixels.
    """
    with open(path, "rb") as handle:
        head = handle.read(_HEADER_SCAN_BYTES)
    found = _signature(head)
    if found is None:
        raise NotAnImage("not a PNG, JPEG, GIF or WebP file")
    demuxer, content_type, extension = found
    width, height = _SIZE_READERS[demuxer](head)
    if width > max_side or height > max_side:
        raise NotAnImage(f"larger than {max_side}x{max_side} pixels")
    if width <= 0 or height <= 0:
        raise NotAnImage("the picture has no pixels")
    try:
        width, height = call_bounded(
            decoded_size,
            os.fspath(path),
            demuxer,
            max_side,
            errors=(NotAnImage,),
            memory_limit_mb=limits.probe_memory_limit_mb,
            timeout=_DECODE_TIMEOUT,
        )
    except (MemoryError, TimeoutError, ChildProcessError) as exc:
        raise NotAnImage("the picture could not be decoded") from exc
    # The headers read above are the first of the file; a decoder may have
    # found others (ffmpeg's max_pixels bounds their area, not their sides).
    if width > max_side or height > max_side:
        raise NotAnImage(f"larger than {max_side}x{max_side} pixels")
    return ImageInfo(content_type, extension, width, height)


def decoded_size(path: str, demuxer: str, max_side: int) -> tuple[int, int]:
    """Width and height of the first frame PyAV decodes from ``path`` with ``demuxer``, in this process.

    What the child process of :func:`probe_image` runs. Decoders refuse to
    allocate a frame of more than ``max_side`` squared pixels (plus stride
    alignment), also while the file is opened.
    """
    max_pixels = max_side * max_side + 64 * max_side
    try:
        with av.open(
            "file:" + os.path.abspath(path),
            format=demuxer,
            options={"protocol_whitelist": "file", "max_pixels": str(max_pixels), "threads": "1"},
        ) as container:
            if not container.streams.video:
                raise NotAnImage("no picture")
            stream = container.streams.video[0]
            stream.codec_context.thread_count = 1
            for frame in container.decode(stream):
                if frame.width <= 0 or frame.height <= 0:
                    break
                return frame.width, frame.height
    except av.FFmpegError as exc:
        if isinstance(exc, MemoryError):
            raise
        raise NotAnImage("the picture could not be decoded") from exc
    raise NotAnImage("the picture could not be decoded")
