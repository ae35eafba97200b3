"""Quotas per account on POST /file: files (USER_FILE_QUOTA) and stored bytes (USER_STORAGE_QUOTA_BYTES)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from blake3 import blake3
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from rest_framework.test import APIClient

from accounts.models import User
from files.models import File
from files.services import file_upload
from files.uploads.writer import streamed_upload_from
from tests.conftest import make_user
from tests.files.conftest import HOTWORDS, JFK, Upload, ffmpeg, stored_files

pytestmark = pytest.mark.django_db

WAV_BYTES_PER_SECOND = 32_000


def quota_row(filename: str, message: str) -> dict[str, Any]:
    return {
        "message": message,
        "filename": filename,
        "status": {"existed": False, "uploaded": False, "error": "quota_exceeded"},
    }


def stored_bytes(user: User) -> int:
    """What the storage quota counts: each media file not failed, its size plus its WAV (32 000 bytes a second)."""
    files = File.objects.filter(owner=user).exclude(kind=File.Kind.IMAGE).exclude(state=File.State.FAILED)
    return sum(file.size_bytes + round(file.duration * WAV_BYTES_PER_SECOND) for file in files)


# --- USER_FILE_QUOTA -------------------------------------------------------------------


def test_a_part_over_the_file_quota_is_refused_and_nothing_of_it_is_stored(
    client_key: APIClient,
    upload: Upload,
    media_files: dict[str, Path],
    settings: Any,
    media_root: Path,
    no_leftovers: None,
) -> None:
    settings.USER_FILE_QUOTA = 2
    rows = upload(client_key, HOTWORDS, JFK, media_files["speech.opus"]).json()["files"]
    assert [row["status"]["uploaded"] for row in rows[:2]] == [True, True]
    assert rows[2] == quota_row("speech.opus", "File quota exceeded: 2 files per user")
    files = list(File.objects.all())
    assert len(files) == 2
    assert stored_files(media_root) == sorted(name for f in files for name in (f.media_name, f.wav_name))


def test_at_the_file_quota_bytes_already_owned_still_answer_existed(
    client_key: APIClient, upload: Upload, settings: Any
) -> None:
    settings.USER_FILE_QUOTA = 1
    first = upload(client_key, HOTWORDS).json()["files"][0]
    again = upload(client_key, HOTWORDS).json()["files"][0]
    assert again["status"] == {"existed": True, "uploaded": False}
    assert again["uuid"] == first["uuid"]


def test_deleting_a_file_makes_room(client_key: APIClient, upload: Upload, settings: Any) -> None:
    settings.USER_FILE_QUOTA = 1
    first = upload(client_key, HOTWORDS).json()["files"][0]
    assert upload(client_key, JFK).json()["files"][0]["status"]["error"] == "quota_exceeded"
    assert client_key.delete(f"/api/v1/file/{first['uuid']}").status_code == 200
    assert upload(client_key, JFK).json()["files"][0]["status"]["uploaded"] is True


def test_the_quota_is_per_user(client_key: APIClient, other_client: APIClient, upload: Upload, settings: Any) -> None:
    settings.USER_FILE_QUOTA = 1
    upload(client_key, HOTWORDS)
    assert upload(other_client, HOTWORDS).json()["files"][0]["status"]["uploaded"] is True


def test_the_avatar_is_not_one_of_the_files(
    client_key: APIClient, upload: Upload, media_files: dict[str, Path], settings: Any
) -> None:
    settings.USER_FILE_QUOTA = 1
    with open(media_files["red.png"], "rb") as picture:
        assert client_key.patch("/api/v1/user/me", {"avatar": picture}, format="multipart").status_code == 200
    assert upload(client_key, HOTWORDS).json()["files"][0]["status"]["uploaded"] is True


def test_a_failed_file_counts_until_deleted_and_its_retry_is_no_new_file(
    user: User, client_key: APIClient, upload: Upload, settings: Any
) -> None:
    settings.USER_FILE_QUOTA = 1
    failed = File.objects.create(
        owner=user,
        filename="hotwords.mp3",
        kind=File.Kind.AUDIO,
        content_type="audio/mpeg",
        blake3=blake3(HOTWORDS.read_bytes()).hexdigest(),
        state=File.State.FAILED,
        error="Conversion failed: the file is truncated or damaged",
    )
    # Listed by GET /file, so counted: no room for new bytes ...
    assert upload(client_key, JFK).json()["files"][0]["status"]["error"] == "quota_exceeded"
    # ... but uploading the failed file's bytes again retries it in its own row.
    row = upload(client_key, HOTWORDS).json()["files"][0]
    assert (row["uuid"], row["status"]) == (failed.id.hex, {"existed": False, "uploaded": True})
    failed.refresh_from_db()
    assert failed.state == "ready"


# --- USER_STORAGE_QUOTA_BYTES ----------------------------------------------------------


def test_a_part_over_the_storage_quota_is_refused(
    user: User, client_key: APIClient, upload: Upload, settings: Any, media_root: Path, no_leftovers: None
) -> None:
    upload(client_key, HOTWORDS)
    used = stored_bytes(user)
    # JFK: 11 s of FLAC, and an 11 s WAV to come.
    needed = JFK.stat().st_size + 11 * WAV_BYTES_PER_SECOND
    settings.USER_STORAGE_QUOTA_BYTES = used + needed - 1
    before = stored_files(media_root)
    response = upload(client_key, JFK)
    assert response.status_code == 200
    assert response.json()["files"] == [
        quota_row("jfk.flac", f"Storage quota exceeded: {used + needed - 1} bytes per user")
    ]
    assert File.objects.count() == 1
    assert stored_files(media_root) == before
    settings.USER_STORAGE_QUOTA_BYTES = used + needed
    assert upload(client_key, JFK).json()["files"][0]["status"]["uploaded"] is True


def test_failed_files_hold_no_storage(user: User, client_key: APIClient, upload: Upload, settings: Any) -> None:
    File.objects.create(
        owner=user,
        filename="big.mp3",
        kind=File.Kind.AUDIO,
        content_type="audio/mpeg",
        blake3="f" * 64,
        size_bytes=10**9,
        duration=3600,
        state=File.State.FAILED,
    )
    settings.USER_STORAGE_QUOTA_BYTES = 10**6
    assert upload(client_key, HOTWORDS).json()["files"][0]["status"]["uploaded"] is True


def test_the_storage_quota_counts_a_files_wav(user: User, client_key: APIClient, upload: Upload, settings: Any) -> None:
    File.objects.create(
        owner=user,
        filename="long.mp3",
        kind=File.Kind.AUDIO,
        content_type="audio/mpeg",
        blake3="e" * 64,
        size_bytes=1000,
        duration=100.0,  # its WAV: 3.2 MB
        state=File.State.READY,
    )
    settings.USER_STORAGE_QUOTA_BYTES = 3_000_000
    row = upload(client_key, HOTWORDS).json()["files"][0]
    assert row == quota_row("hotwords.mp3", "Storage quota exceeded: 3000000 bytes per user")


# --- Races -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tones(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Six different short tones: six different uploads."""
    folder = tmp_path_factory.mktemp("tones")
    paths = []
    for number in range(6):
        path = folder / f"tone{number}.wav"
        ffmpeg("-f", "lavfi", "-i", f"sine=f={300 + 100 * number}:d=1", "-c:a", "pcm_s16le", path)
        paths.append(path)
    return paths


@pytest.mark.django_db(transaction=True)
def test_uploads_at_once_cannot_together_pass_the_file_quota(tones: list[Path], settings: Any) -> None:
    settings.USER_FILE_QUOTA = 3
    owner, _ = make_user("racer")
    File.objects.bulk_create(
        File(owner=owner, filename=f"old{n}.mp3", kind="audio", content_type="audio/mpeg", blake3=f"{n:064x}")
        for n in range(2)
    )
    parts = [
        streamed_upload_from(SimpleUploadedFile(path.name, path.read_bytes()), limit=10**6, name=path.name)
        for path in tones
    ]
    barrier = threading.Barrier(len(parts))
    outcomes: list[str | None] = []
    errors: list[BaseException] = []

    def run(part: Any) -> None:
        try:
            barrier.wait()
            result = file_upload(user=owner, part=part)
            outcomes.append("uploaded" if result.uploaded else result.error)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            part.close()
            connection.close()

    threads = [threading.Thread(target=run, args=(part,)) for part in parts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sorted(outcomes, key=str) == ["quota_exceeded"] * 5 + ["uploaded"]
    assert File.objects.filter(owner=owner).count() == 3


def test_the_schema_names_the_new_row_codes(anon: APIClient) -> None:
    document = json.loads(anon.get("/api/v1/schema?format=json").content)
    upload = document["paths"]["/api/v1/file"]["post"]
    error = document["components"]["schemas"]["UploadStatusOutput"]["properties"]["error"]
    for code in ("unsupported_content_type", "file_too_large", "empty_file", "file_too_long", "quota_exceeded"):
        assert code in error["description"]
        assert code in upload["description"]
