"""Avatars: PATCH /user/me with an ``avatar`` part, served by GET /file/:uuid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from accounts.models import User
from files.models import File
from tests.conftest import PASSWORD
from tests.files.bombs import MB, black_png, peak_rss_growth
from tests.files.conftest import HOTWORDS, raw_multipart, stored_files

pytestmark = pytest.mark.django_db
NOT_AN_IMAGE = "Avatar must be an image (PNG, JPEG, GIF or WebP)"


def text(response: Any) -> str:
    assert response["Content-Type"].startswith("text/plain"), response["Content-Type"]
    return response.content.decode()


@pytest.fixture
def patch_me(client_session: APIClient, django_capture_on_commit_callbacks: Any) -> Any:
    def patch(data: dict[str, Any]) -> Any:
        with django_capture_on_commit_callbacks(execute=True):
            return client_session.patch("/api/v1/user/me", data, format="multipart")

    return patch


def avatar_of(path: Path, name: str | None = None) -> SimpleUploadedFile:
    return SimpleUploadedFile(name or path.name, path.read_bytes(), content_type="image/png")


@pytest.mark.usefixtures("no_leftovers")
@pytest.mark.parametrize(
    ("name", "content_type"),
    [("red.png", "image/png"), ("red.jpg", "image/jpeg"), ("red.gif", "image/gif"), ("red.webp", "image/webp")],
)
def test_avatar_upload_and_download(
    patch_me: Any, client_session: APIClient, anon: APIClient, user: User, media_files: dict[str, Path],
    media_root: Path, name: str, content_type: str,
) -> None:  # fmt: skip
    response = patch_me({"avatar": avatar_of(media_files[name], "me.bin")})
    assert response.status_code == 200
    assert response.json() == {"message": "Profile updated successfully", "updated_fields": ["avatar"]}
    avatar_uuid = client_session.get("/api/v1/user/me").json()["avatar_uuid"]
    avatar = File.objects.get(id=avatar_uuid)
    assert (avatar.owner_id, avatar.kind, avatar.state, avatar.content_type) == (
        user.id,
        "image",
        "ready",
        content_type,
    )
    download = anon.get(f"/api/v1/file/{avatar_uuid}")
    assert download.status_code == 200
    assert download["Content-Type"] == content_type
    assert b"".join(download.streaming_content) == media_files[name].read_bytes()
    assert download["Content-Disposition"].startswith('inline; filename="me.bin.')
    # An avatar is not one of the user's media files.
    assert client_session.get("/api/v1/file").json()["files"] == []
    assert stored_files(media_root) == [avatar.media_name]


def test_a_new_avatar_replaces_the_old_one(
    patch_me: Any, user: User, media_files: dict[str, Path], media_root: Path
) -> None:
    patch_me({"avatar": avatar_of(media_files["red.png"])})
    first = User.objects.get(pk=user.pk).avatar
    patch_me({"avatar": avatar_of(media_files["red.jpg"])})
    second = User.objects.get(pk=user.pk).avatar
    assert second is not None and first is not None and second.id != first.id
    assert not File.objects.filter(id=first.id).exists()
    assert stored_files(media_root) == [second.media_name]
    # The same picture again changes nothing.
    assert patch_me({"avatar": avatar_of(media_files["red.jpg"])}).status_code == 200
    assert User.objects.get(pk=user.pk).avatar_id == second.id
    assert File.objects.filter(owner=user).count() == 1


def test_avatar_with_other_fields(patch_me: Any, user: User, media_files: dict[str, Path]) -> None:
    response = patch_me({"username": "renamed", "avatar": avatar_of(media_files["red.png"])})
    assert response.json()["updated_fields"] == ["username", "avatar"]
    user.refresh_from_db()
    assert user.username == "renamed" and user.avatar_id is not None


@pytest.mark.usefixtures("no_leftovers")
@pytest.mark.parametrize("name", ["doc.pdf", "random.mp3", "truncated.png", "huge.png", "silence.mp3", "empty.mp3"])
def test_not_an_image_is_refused_before_anything_changes(
    patch_me: Any, user: User, media_files: dict[str, Path], media_root: Path, name: str
) -> None:
    response = patch_me({"username": "renamed", "avatar": avatar_of(media_files[name], "pic.png")})
    assert response.status_code == 400
    assert text(response) == NOT_AN_IMAGE
    user.refresh_from_db()
    assert user.username == "alice" and user.avatar_id is None
    assert stored_files(media_root) == []


@pytest.mark.usefixtures("no_leftovers")
def test_an_avatar_over_10mb_is_refused_while_streaming(
    client_session: APIClient, user: User, media_files: dict[str, Path]
) -> None:
    png = media_files["red.png"].read_bytes()
    # Just over the limit: the body is within the up-front allowance, so the
    # part itself is cut off as it streams.
    body, content_type = raw_multipart(
        [
            (
                b'Content-Disposition: form-data; name="avatar"; filename="big.png"',
                png + b"\0" * (10 * 1024 * 1024 + 1 - len(png)),
            )
        ]
    )
    response = client_session.generic("PATCH", "/api/v1/user/me", body, content_type=content_type)
    assert response.status_code == 400
    assert text(response) == "Avatar file too large. Maximum size is 10MB"
    assert User.objects.get(pk=user.pk).avatar_id is None


def test_a_body_far_over_the_avatar_limit_is_refused_up_front(client_session: APIClient, settings: Any) -> None:
    settings.AVATAR_MAX_BYTES = 1024
    body, content_type = raw_multipart(
        [(b'Content-Disposition: form-data; name="avatar"; filename="big.png"', b"\x89PNG\r\n\x1a\n" + b"\0" * 200_000)]
    )
    response = client_session.generic("PATCH", "/api/v1/user/me", body, content_type=content_type)
    assert response.status_code == 400
    assert text(response) == "Avatar file too large. Maximum size is 1KB"


def test_exactly_the_limit_is_accepted(patch_me: Any, settings: Any, media_files: dict[str, Path]) -> None:
    settings.AVATAR_MAX_BYTES = media_files["red.png"].stat().st_size
    assert patch_me({"avatar": avatar_of(media_files["red.png"])}).status_code == 200


def test_two_avatar_parts_are_refused(client_session: APIClient, media_files: dict[str, Path]) -> None:
    png = media_files["red.png"].read_bytes()
    part = (b'Content-Disposition: form-data; name="avatar"; filename="a.png"', png)
    body, content_type = raw_multipart([part, part])
    response = client_session.generic("PATCH", "/api/v1/user/me", body, content_type=content_type)
    assert response.status_code == 400
    assert text(response) == "Only one avatar file may be uploaded"


def test_avatars_cannot_be_renamed_or_deleted_through_file(
    patch_me: Any, client_session: APIClient, user: User, media_files: dict[str, Path]
) -> None:
    patch_me({"avatar": avatar_of(media_files["red.png"])})
    avatar_id = User.objects.get(pk=user.pk).avatar_id
    assert client_session.patch(f"/api/v1/file/{avatar_id.hex}", {"filename": "x"}, format="json").status_code == 404
    assert client_session.delete(f"/api/v1/file/{avatar_id.hex}").status_code == 404


def test_deleting_the_account_deletes_the_avatar(
    patch_me: Any, client_session: APIClient, media_files: dict[str, Path], media_root: Path,
    django_capture_on_commit_callbacks: Any,
) -> None:  # fmt: skip
    patch_me({"avatar": avatar_of(media_files["red.png"])})
    with django_capture_on_commit_callbacks(execute=True):
        client_session.post(
            "/api/v1/file", {"file": [SimpleUploadedFile("h.mp3", HOTWORDS.read_bytes())]}, format="multipart"
        )
    assert len(stored_files(media_root)) == 3
    with django_capture_on_commit_callbacks(execute=True):
        assert client_session.delete("/api/v1/user/me", {"password": PASSWORD}, format="json").status_code == 200
    assert stored_files(media_root) == []
    assert not File.objects.exists()


@pytest.mark.usefixtures("no_leftovers")
def test_a_picture_bomb_is_refused_before_it_is_decoded(
    patch_me: Any, user: User, media_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # 12000x12000 pixels in 2 MB: decoding it would take 432 MB.
    bomb = black_png(tmp_path_factory.mktemp("bomb") / "bomb.png", 12000, 12000)
    with peak_rss_growth() as growth:
        response = patch_me({"avatar": avatar_of(bomb)})
    assert growth() < 150 * MB
    assert response.status_code == 400
    assert text(response) == NOT_AN_IMAGE
    assert User.objects.get(pk=user.pk).avatar_id is None
    assert stored_files(media_root) == []


def test_the_side_limit_is_a_setting(patch_me: Any, media_files: dict[str, Path], settings: Any) -> None:
    settings.AVATAR_MAX_SIDE = 31  # red.png is 32x24
    assert patch_me({"avatar": avatar_of(media_files["red.png"])}).status_code == 400
    settings.AVATAR_MAX_SIDE = 32
    assert patch_me({"avatar": avatar_of(media_files["red.png"])}).status_code == 200
