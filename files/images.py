"""Avatar images, recognised by their content.

The first bytes pick the format (PNG, JPEG, GIF, WebP) and PyAV must decode
a first frame with that format's demuxer, forced rather than guessed, so
nothing but a real image of one of those formats passes. Like media.py this
module has no Django dependency.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import av

# Decoding a picture allocates width x height x 4 bytes or so: bound it so
# a small, highly compressed file cannot ask for gigabytes.
MAX_IMAGE_SIDE = 4096


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


def probe_image(path: str | os.PathLike[str]) -> ImageInfo:
    """What picture ``path`` holds; :class:`NotAnImage` when it holds none we accept."""
    with open(path, "rb") as handle:
        head = handle.read(16)
    found = _signature(head)
    if found is None:
        raise NotAnImage("not a PNG, JPEG, GIF or WebP file")
    demuxer, content_type, extension = found
    try:
        with av.open(
            "file:" + os.path.abspath(os.fspath(path)),
            format=demuxer,
            options={"protocol_whitelist": "file"},
        ) as container:
            if not container.streams.video:
                raise NotAnImage("no picture")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            if width > MAX_IMAGE_SIDE or height > MAX_IMAGE_SIDE:
                raise NotAnImage(f"larger than {MAX_IMAGE_SIDE}x{MAX_IMAGE_SIDE} pixels")
            for frame in container.decode(stream):
                if frame.width <= 0 or frame.height <= 0:
                    break
                return ImageInfo(content_type, extension, frame.width, frame.height)
    except av.FFmpegError as exc:
        raise NotAnImage("the picture could not be decoded") from exc
    raise NotAnImage("the picture could not be decoded")
