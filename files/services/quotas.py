"""Quotas per account: how many media files a user may hold, and how many bytes they may store.

The settings ``USER_FILE_QUOTA`` and ``USER_STORAGE_QUOTA_BYTES`` bound what one account
can put on the disk and into the conversion queue. Uploads check them twice: once before
the part is stored (cheap, no lock), and again under a lock on the user's row in the
transaction that inserts the file, so that two uploads at once cannot both take the last
room (see ``file_upload``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings
from django.db.models import Count, Q, Sum

from files.models import File

if TYPE_CHECKING:
    from accounts.models import User

# Bytes of the WAV kept for transcription per second of audio: 16 kHz, mono, 16-bit.
WAV_BYTES_PER_SECOND = 16_000 * 2

QUOTA_EXCEEDED = "quota_exceeded"


def file_quota_message() -> str:
    """The upload row's message for a part over ``USER_FILE_QUOTA``."""
    return f"File quota exceeded: {settings.USER_FILE_QUOTA} files per user"


def storage_quota_message() -> str:
    """The upload row's message for a part over ``USER_STORAGE_QUOTA_BYTES``."""
    return f"Storage quota exceeded: {settings.USER_STORAGE_QUOTA_BYTES} bytes per user"


def stored_bytes(*, size: int, duration: float) -> int:
    """Bytes stored for one media file: its upload or MP3/MP4 (``size``) and its WAV, from ``duration``."""
    return size + round(max(0.0, duration) * WAV_BYTES_PER_SECOND)


def file_quota_refusal(*, user: User, size: int, duration: float, new_file: bool) -> str | None:
    """Why one more upload of ``size`` bytes and ``duration`` seconds would put ``user`` over a quota; None if not.

    Counted over the user's media files, the ones ``GET /file`` lists (avatars are
    not): every one of them for ``USER_FILE_QUOTA`` (a failed file is listed until
    it is deleted), and for ``USER_STORAGE_QUOTA_BYTES`` the bytes of those not
    failed (a failed file keeps nothing stored). ``new_file`` is False for a retry
    of a failed file, which reuses its row: only the storage quota applies then.
    """
    usage = (
        File.objects.filter(owner=user)
        .exclude(kind=File.Kind.IMAGE)
        .aggregate(
            files=Count("id"),
            size=Sum("size_bytes", filter=~Q(state=File.State.FAILED), default=0),
            seconds=Sum("duration", filter=~Q(state=File.State.FAILED), default=0.0),
        )
    )
    if new_file and usage["files"] + 1 > settings.USER_FILE_QUOTA:
        return file_quota_message()
    used = stored_bytes(size=usage["size"], duration=usage["seconds"])
    if used + stored_bytes(size=size, duration=duration) > settings.USER_STORAGE_QUOTA_BYTES:
        return storage_quota_message()
    return None


def user_lock(*, user: User) -> None:
    """Lock ``user``'s row until the current transaction ends (inside ``transaction.atomic``).

    Serialises the quota checks of one user's concurrent uploads. On SQLite, where
    ``select_for_update`` does nothing, the settings open every transaction with
    ``BEGIN IMMEDIATE``, which serialises all writers anyway.
    """
    type(user).objects.select_for_update().only("pk").get(pk=user.pk)
