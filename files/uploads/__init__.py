"""Streaming multipart parts to disk while hashing them; every public name is re-exported here.

``FILE_UPLOAD_HANDLERS`` names ``files.uploads.NoFilesUploadHandler``; callers keep
writing ``from files.uploads import StreamedUpload``.
"""

from __future__ import annotations

from files.uploads.handlers import (
    PART_OVERHEAD_BYTES,
    UPLOAD_BUFFER_BYTES,
    HashingUploadHandler,
    NoFilesUploadHandler,
    avatar_too_large_message,
    install_avatar_upload_handler,
    install_file_upload_handler,
    request_body_length,
    too_many_files_message,
)
from files.uploads.writer import StreamedUpload, streamed_upload_from

__all__ = [
    "PART_OVERHEAD_BYTES",
    "UPLOAD_BUFFER_BYTES",
    "HashingUploadHandler",
    "NoFilesUploadHandler",
    "StreamedUpload",
    "avatar_too_large_message",
    "install_avatar_upload_handler",
    "install_file_upload_handler",
    "request_body_length",
    "streamed_upload_from",
    "too_many_files_message",
]
