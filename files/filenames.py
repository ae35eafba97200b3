"""File names: cleaning what clients send, and naming downloads.

A file's name is metadata only: stored objects are named after the file's
id, so no client-chosen name ever reaches a path.
"""

from __future__ import annotations

import os
import unicodedata
from urllib.parse import quote

MAX_FILENAME_CHARS = 255
UPLOAD_FALLBACK_NAME = "upload"

# Control (Cc), format (Cf: bidi overrides that disguise an extension, zero
# widths), surrogates (Cs: not encodable, the database would refuse them) and
# line/paragraph separators (Zl, Zp: they break header lines).
_REMOVED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})

# Extensions a download name is given in place of, rather than kept beside:
# "interview.wav" is served as MP3 under "interview.mp3".
MEDIA_EXTENSIONS = frozenset(
    {
        ".mp3", ".wav", ".flac", ".m4a", ".aac", ".ogg", ".oga", ".opus", ".webm", ".wma",
        ".aif", ".aiff", ".alac", ".amr", ".caf", ".mka", ".mp4", ".m4v", ".mov", ".avi",
        ".wmv", ".mpeg", ".mpg", ".3gp", ".mkv", ".flv", ".ts", ".mts", ".m2ts", ".vob",
        ".rm", ".rmvb", ".divx", ".png", ".jpg", ".jpeg", ".gif", ".webp",
    }
)  # fmt: skip


def filename_clean(raw: str) -> str:
    """``raw`` without its folders, control characters or surrounding spaces.

    Only the part after the last ``/`` or ``\\`` is kept. The result may be
    empty or longer than 255 characters: callers decide what that means.
    """
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(char for char in name if unicodedata.category(char) not in _REMOVED_CATEGORIES)
    return name.strip()


def filename_for_upload(raw: str | None) -> str:
    """The name an uploaded part is stored under: cleaned, at most 255 characters.

    Too long a name is cut, keeping its extension; nothing left is ``upload``.
    """
    name = filename_clean(raw or "")
    if name in {"", ".", ".."}:
        return UPLOAD_FALLBACK_NAME
    if len(name) > MAX_FILENAME_CHARS:
        stem, extension = os.path.splitext(name)
        if 0 < len(extension) <= 16:
            name = stem[: MAX_FILENAME_CHARS - len(extension)].rstrip() + extension
        else:
            name = name[:MAX_FILENAME_CHARS]
    return name


def download_name(filename: str, extension: str) -> str:
    """The name a download is offered under: the stored name with the served extension.

    A known media extension is replaced ("talk.wav" served as MP3 is
    "talk.mp3"); anything else is kept and the extension added.
    """
    stem, current = os.path.splitext(filename)
    if current.lower() == extension:
        return filename
    if current.lower() in MEDIA_EXTENSIONS:
        filename = stem
    return (filename or "download") + extension


def content_disposition(filename: str) -> str:
    """``inline`` with an ASCII ``filename`` and, for other names, RFC 6266's ``filename*``.

    Quotes and backslashes cannot end the quoted string early, and no control
    character survives cleaning, so the header stays one well-formed line.
    """
    name = filename_clean(filename) or "download"
    stem, extension = os.path.splitext(name)
    ascii_stem, ascii_extension = _ascii_fold(stem), _ascii_fold(extension)
    if not any(char.isalnum() for char in ascii_stem):
        ascii_stem = "download"
    folded = ascii_stem + ascii_extension
    header = f'inline; filename="{folded}"'
    if folded != name:
        header += f"; filename*=UTF-8''{quote(name, safe='')}"
    return header


def _ascii_fold(text: str) -> str:
    # "é" -> "e"; what has no ASCII form is dropped; quote and backslash become "_".
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return "".join(char if char.isprintable() and char not in '"\\' else "_" for char in folded)
