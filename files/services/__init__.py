"""File writes, one module per idea; every public name is re-exported here.

Callers keep writing ``from files import services`` and ``services.file_upload(...)``
or ``from files.services import file_upload``.
"""

from __future__ import annotations

from files.services.avatars import AVATAR_NOT_IMAGE_MESSAGE, avatar_replace, avatar_validate
from files.services.conversion import (
    CONVERT_BASE_SECONDS,
    CONVERT_RECOVERY_ROUNDS,
    CONVERT_SECONDS_PER_MEDIA_SECOND,
    CONVERT_WAV_SECONDS_PER_MEDIA_SECOND,
    MEDIA_BASENAME,
    QUEUE_FAILED_REASON,
    WAV_BASENAME,
    convert_recovery_period,
    convert_time_limits,
    convert_wav_time_limits,
    file_convert_audio,
    file_convert_enqueue,
    file_convert_media,
    file_fail,
    file_requeue_stuck,
)
from files.services.deletion import (
    file_delete,
    file_delete_all_for_user,
    file_delete_many,
    file_storage_names,
    storage_delete_on_commit,
)
from files.services.renaming import FILENAME_LENGTH_MESSAGE, file_rename
from files.services.uploads import NO_FILES_MESSAGE, UploadResult, file_upload, file_upload_many

__all__ = [
    "NO_FILES_MESSAGE",
    "AVATAR_NOT_IMAGE_MESSAGE",
    "CONVERT_BASE_SECONDS",
    "CONVERT_RECOVERY_ROUNDS",
    "CONVERT_SECONDS_PER_MEDIA_SECOND",
    "CONVERT_WAV_SECONDS_PER_MEDIA_SECOND",
    "FILENAME_LENGTH_MESSAGE",
    "MEDIA_BASENAME",
    "QUEUE_FAILED_REASON",
    "WAV_BASENAME",
    "UploadResult",
    "avatar_replace",
    "avatar_validate",
    "convert_recovery_period",
    "convert_time_limits",
    "convert_wav_time_limits",
    "file_convert_audio",
    "file_convert_enqueue",
    "file_convert_media",
    "file_delete",
    "file_delete_all_for_user",
    "file_delete_many",
    "file_fail",
    "file_rename",
    "file_requeue_stuck",
    "file_storage_names",
    "file_upload",
    "file_upload_many",
    "storage_delete_on_commit",
]
