"""Avatars: the picture of ``PATCH /user/me``, stored as a ready file of kind image."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.utils import timezone

from files import media
from files.filenames import filename_for_upload
from files.images import ImageInfo, NotAnImage, probe_image
from files.models import File
from files.services.deletion import file_storage_names, storage_delete_on_commit
from files.storage import object_prefix, storage_delete, storage_put_upload
from files.uploads import StreamedUpload, avatar_too_large_message, streamed_upload_from
from whisper_site.errors import ApplicationError
from whisper_site.identifiers import new_uuid7

if TYPE_CHECKING:
    from accounts.models import User

AVATAR_NOT_IMAGE_MESSAGE = "Avatar must be an image (PNG, JPEG, GIF or WebP)"


def _as_streamed(upload: UploadedFile) -> StreamedUpload:
    """An upload that did not come through HashingUploadHandler, hashed onto disk the same way."""
    if isinstance(upload, StreamedUpload):
        return upload
    return streamed_upload_from(upload, limit=settings.AVATAR_MAX_BYTES, name=upload.name or "avatar")


def _avatar_checked(upload: UploadedFile) -> tuple[StreamedUpload, ImageInfo]:
    """``upload`` on disk with its digest, and the picture it holds; 400 when it is no avatar."""
    part = _as_streamed(upload)
    if part.too_large or part.size > settings.AVATAR_MAX_BYTES:
        raise ApplicationError(avatar_too_large_message(), 400)
    if part.size == 0:
        raise ApplicationError(AVATAR_NOT_IMAGE_MESSAGE, 400)
    try:
        image = probe_image(
            part.temporary_file_path(),
            max_side=settings.AVATAR_MAX_SIDE,
            limits=media.MediaLimits.from_settings(settings),
        )
    except NotAnImage:
        raise ApplicationError(AVATAR_NOT_IMAGE_MESSAGE, 400) from None
    return part, image


def avatar_validate(*, upload: UploadedFile) -> None:
    """Check an avatar before anything is written: at most ``AVATAR_MAX_BYTES``, a real image."""
    _avatar_checked(upload)


def avatar_replace(*, user: User, upload: UploadedFile) -> File:
    """Store ``upload`` as the user's avatar (a ready file of kind image) and delete the previous one."""
    part, image = _avatar_checked(upload)
    digest = part.blake3_hex
    assert digest is not None

    existing = File.objects.filter(owner=user, blake3=digest, kind=File.Kind.IMAGE).first()
    stored_name = ""
    if existing is None:
        file_id = new_uuid7()
        name = f"{object_prefix(owner_id=user.id, file_id=file_id)}/avatar{image.extension}"
        stored_name = storage_put_upload(name=name, upload=part)
    try:
        with transaction.atomic():
            # Lock the user: two avatar changes at once must not both keep
            # the previous avatar as "not mine to delete".
            locked = type(user).objects.select_for_update().get(pk=user.pk)
            previous_id = locked.avatar_id
            if existing is None:
                avatar = File.objects.create(
                    id=file_id,
                    owner=user,
                    filename=filename_for_upload(part.name),
                    kind=File.Kind.IMAGE,
                    content_type=image.content_type,
                    blake3=digest,
                    size_bytes=part.size,
                    upload_size=part.size,
                    duration=0.0,
                    state=File.State.READY,
                    media_name=stored_name,
                    converted_at=timezone.now(),
                )
            else:
                avatar = existing
            type(user).objects.filter(pk=user.pk).update(avatar=avatar)
            if previous_id is not None and previous_id != avatar.id:
                previous = File.objects.filter(id=previous_id, owner=user).first()
                if previous is not None:
                    names = file_storage_names(previous)
                    previous.delete()
                    storage_delete_on_commit(names)
    except IntegrityError:
        # The same picture set twice at once: the other request stored it.
        storage_delete([stored_name])
        raise ApplicationError("Avatar changed concurrently; try again", 409) from None
    except BaseException:
        storage_delete([stored_name])
        raise
    user.avatar = avatar
    return avatar
