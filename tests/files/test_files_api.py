"""The file surface of the API: POST/GET /file, GET/PATCH/DELETE /file/:uuid."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from rest_framework.test import APIClient

from accounts.models import User
from files.models import File
from tests.conftest import make_user
from tests.files.conftest import HOTWORDS, JFK, Upload, audio_format, raw_multipart, stored_files

pytestmark = pytest.mark.django_db
HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")


def text(response: Any) -> str:
    assert response["Content-Type"].startswith("text/plain"), response["Content-Type"]
    return response.content.decode()


def body_of(response: Any) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def client_for(user: User) -> APIClient:
    from accounts.services import session_create

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Basic {session_create(user=user, user_agent='t').id.hex}")
    return client


# --- uploads: outcomes ------------------------------------------------------


@pytest.mark.usefixtures("no_leftovers")
def test_mixed_outcomes_in_one_request(
    client_key: APIClient, upload: Upload, media_files: dict[str, Path], media_root: Path
) -> None:
    response = upload(
        client_key,
        JFK,
        media_files["speech.mp4"],
        media_files["doc.pdf"],
        media_files["random.mp3"],
        media_files["empty.mp3"],
        JFK,  # the same bytes twice in one request: the second exists already
    )
    assert response.status_code == 200
    rows = response.json()["files"]
    assert [row["message"] for row in rows] == [
        "File uploaded successfully",
        "File uploaded successfully",
        "Unsupported content type",
        "Unsupported content type",
        "Empty file",
        "File already exists",
    ]
    assert rows[0]["filename"] == "jfk.flac" and HEX32.match(rows[0]["uuid"]) and HEX64.match(rows[0]["hash"])
    assert rows[0]["status"] == {"existed": False, "uploaded": True}
    assert rows[2] == {
        "message": "Unsupported content type",
        "filename": "doc.pdf",
        "status": {"existed": False, "uploaded": False, "error": "unsupported_content_type"},
    }
    assert rows[3]["status"]["error"] == "unsupported_content_type" and "uuid" not in rows[3]
    assert rows[4] == {
        "message": "Empty file",
        "filename": "empty.mp3",
        "status": {"existed": False, "uploaded": False, "error": "empty_file"},
    }
    assert rows[5]["uuid"] == rows[0]["uuid"] and rows[5]["hash"] == rows[0]["hash"]
    assert rows[5]["status"] == {"existed": True, "uploaded": False}

    audio = File.objects.get(id=rows[0]["uuid"])
    video = File.objects.get(id=rows[1]["uuid"])
    assert File.objects.count() == 2
    assert (audio.kind, audio.content_type, audio.state, audio.duration) == ("audio", "audio/mpeg", "ready", 11.0)
    assert (video.kind, video.content_type, video.state) == ("video", "video/mp4", "ready")
    assert video.duration == pytest.approx(3.0, abs=0.1)
    assert audio.upload_size == JFK.stat().st_size
    # The original is gone once converted; the MP3/MP4 and the WAV remain.
    owner = audio.owner_id.hex
    assert stored_files(media_root) == sorted(
        [
            f"files/{owner}/{audio.id.hex}/audio.wav",
            f"files/{owner}/{audio.id.hex}/media.mp3",
            f"files/{owner}/{video.id.hex}/audio.wav",
            f"files/{owner}/{video.id.hex}/media.mp4",
        ]
    )
    assert audio.size_bytes == (media_root / audio.media_name).stat().st_size


def test_the_hash_is_blake3_of_the_uploaded_bytes(client_key: APIClient, upload: Upload) -> None:
    from blake3 import blake3

    row = upload(client_key, HOTWORDS).json()["files"][0]
    assert row["hash"] == blake3(HOTWORDS.read_bytes()).hexdigest()
    assert File.objects.get(id=row["uuid"]).blake3 == row["hash"]


@pytest.mark.usefixtures("no_leftovers")
def test_refused_parts_leave_nothing_behind(
    client_key: APIClient, upload: Upload, media_files: dict[str, Path], media_root: Path
) -> None:
    response = upload(
        client_key,
        media_files["doc.pdf"],
        media_files["random.mp3"],
        media_files["empty.mp3"],
        SimpleUploadedFile("photo.mp3", media_files["red.png"].read_bytes()),
    )
    assert [row["status"].get("error") for row in response.json()["files"]] == [
        "unsupported_content_type",
        "unsupported_content_type",
        "empty_file",
        "unsupported_content_type",
    ]
    assert not File.objects.exists()
    assert stored_files(media_root) == []


@pytest.mark.parametrize(
    ("name", "kind", "duration"),
    [
        ("tone.wav", "audio", 2.0),
        ("speech.opus", "audio", 2.0),
        ("silence.mp3", "audio", 2.0),
        ("speech.mp4", "video", 3.0),
    ],
)
def test_formats_are_recognised_by_content(
    client_key: APIClient, upload: Upload, media_files: dict[str, Path], name: str, kind: str, duration: float
) -> None:
    # Misleading names: only the content counts.
    part = SimpleUploadedFile("misnamed.pdf", media_files[name].read_bytes())
    row = upload(client_key, part).json()["files"][0]
    assert row["status"] == {"existed": False, "uploaded": True}
    file = File.objects.get(id=row["uuid"])
    assert file.kind == kind and file.state == "ready"
    assert file.duration == pytest.approx(duration, abs=0.15)


def test_converted_audio_is_mp3_192k_44100_and_wav_is_16k_mono_s16(
    client_key: APIClient, upload: Upload, media_root: Path
) -> None:
    file = File.objects.get(id=upload(client_key, JFK).json()["files"][0]["uuid"])
    mp3 = audio_format(media_root / file.media_name)
    assert (mp3["format"], mp3["codec"], mp3["sample_rate"], mp3["bit_rate"]) == ("mp3", "mp3", 44100, 192000)
    wav = audio_format(media_root / file.wav_name)
    assert (wav["format"], wav["codec"], wav["sample_rate"], wav["channels"]) == ("wav", "pcm_s16le", 16000, 1)
    assert wav["duration"] == pytest.approx(11.0, abs=0.05)


def test_converted_video_is_h264_aac_192k_mp4(
    client_key: APIClient, upload: Upload, media_files: dict[str, Path], media_root: Path
) -> None:
    rows = upload(client_key, media_files["speech.mp4"], media_files["noise.mp4"]).json()["files"]
    speech, noise = (File.objects.get(id=row["uuid"]) for row in rows)
    mp4 = audio_format(media_root / speech.media_name)
    assert (mp4["format"].split(",")[0], mp4["video_codec"], mp4["codec"]) == ("mov", "h264", "aac")
    wav = audio_format(media_root / speech.wav_name)
    assert (wav["codec"], wav["sample_rate"], wav["channels"]) == ("pcm_s16le", 16000, 1)
    assert wav["duration"] == pytest.approx(3.0, abs=0.1)
    # Speech is too simple for the encoder to spend 192 kbit/s on; noise is not.
    assert audio_format(media_root / noise.media_name)["bit_rate"] == pytest.approx(192000, rel=0.05)


def test_dedupe_is_per_user(client_key: APIClient, other_client: APIClient, upload: Upload) -> None:
    mine = upload(client_key, HOTWORDS).json()["files"][0]
    again = upload(client_key, SimpleUploadedFile("renamed.mp3", HOTWORDS.read_bytes())).json()["files"][0]
    assert again["status"] == {"existed": True, "uploaded": False}
    assert again["uuid"] == mine["uuid"]
    # The name under which it exists is the answer's name.
    assert again["filename"] == "hotwords.mp3"
    theirs = upload(other_client, HOTWORDS).json()["files"][0]
    assert theirs["status"] == {"existed": False, "uploaded": True}
    assert theirs["uuid"] != mine["uuid"] and theirs["hash"] == mine["hash"]
    assert File.objects.count() == 2


def test_a_failed_file_is_retried_when_its_bytes_come_again(
    client_key: APIClient, upload: Upload, media_root: Path
) -> None:
    row = upload(client_key, HOTWORDS).json()["files"][0]
    File.objects.filter(id=row["uuid"]).update(state="failed", error="Conversion failed: x")
    retry = upload(client_key, HOTWORDS).json()["files"][0]
    assert retry["status"] == {"existed": False, "uploaded": True}
    assert retry["uuid"] == row["uuid"]
    file = File.objects.get(id=row["uuid"])
    assert (file.state, file.error, file.original_name) == ("ready", "", "")


# --- uploads: limits and malformed requests -----------------------------------


@pytest.mark.usefixtures("no_leftovers")
def test_an_oversized_part_is_refused_while_streaming(
    client_key: APIClient, upload: Upload, settings: Any, media_root: Path
) -> None:
    settings.UPLOAD_MAX_FILE_BYTES = HOTWORDS.stat().st_size + 10
    response = upload(client_key, JFK, HOTWORDS)
    rows = response.json()["files"]
    assert rows[0] == {
        "message": "File too large",
        "filename": "jfk.flac",
        "status": {"existed": False, "uploaded": False, "error": "file_too_large"},
    }
    assert rows[1]["status"]["uploaded"] is True
    assert File.objects.count() == 1
    assert all("jfk" not in name for name in stored_files(media_root))


def test_a_part_one_byte_over_the_limit_is_too_large(client_key: APIClient, upload: Upload, settings: Any) -> None:
    settings.UPLOAD_MAX_FILE_BYTES = HOTWORDS.stat().st_size - 1
    assert upload(client_key, HOTWORDS).json()["files"][0]["status"]["error"] == "file_too_large"
    settings.UPLOAD_MAX_FILE_BYTES = HOTWORDS.stat().st_size
    assert upload(client_key, HOTWORDS).json()["files"][0]["status"]["uploaded"] is True


@pytest.mark.usefixtures("no_leftovers")
def test_too_many_parts_is_a_400(client_key: APIClient, upload: Upload, settings: Any, media_root: Path) -> None:
    settings.UPLOAD_MAX_FILES = 2
    response = upload(client_key, JFK, HOTWORDS, SimpleUploadedFile("third.mp3", HOTWORDS.read_bytes()[:-10]))
    assert response.status_code == 400
    assert text(response) == "Too many files. Maximum is 2 per request"
    assert not File.objects.exists()
    assert stored_files(media_root) == []


def test_a_body_larger_than_every_part_together_is_413_up_front(client_key: APIClient, settings: Any) -> None:
    settings.UPLOAD_MAX_FILES = 1
    settings.UPLOAD_MAX_FILE_BYTES = 1000
    body, content_type = raw_multipart(
        [(b'Content-Disposition: form-data; name="file"; filename="a.mp3"', b"x" * 200_000)]
    )
    response = client_key.generic("POST", "/api/v1/file", body, content_type=content_type)
    assert response.status_code == 413
    assert text(response) == "Request body too large"


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        ({"file": "not a file"}, "multipart", "No files provided. Send one or more multipart parts named 'file'"),
        (
            {"other": SimpleUploadedFile("a.mp3", b"abc")},
            "multipart",
            "No files provided. Send one or more multipart parts named 'file'",
        ),
        ({"file": "x"}, "json", "Content-Type must be multipart/form-data"),
    ],
)
def test_requests_without_file_parts(client_key: APIClient, body: dict, content_type: str, message: str) -> None:
    response = client_key.post("/api/v1/file", body, format=content_type)
    assert response.status_code == 400
    assert text(response) == message


def test_a_truncated_multipart_body_is_a_400(client_key: APIClient, upload_temp_dir: Path) -> None:
    body, content_type = raw_multipart(
        [(b'Content-Disposition: form-data; name="file"; filename="a.mp3"', HOTWORDS.read_bytes())]
    )
    response = client_key.generic("POST", "/api/v1/file", body[:-40], content_type=content_type)
    assert response.status_code == 400
    assert text(response) == "Malformed request body"
    assert list(upload_temp_dir.iterdir()) == []


def test_uploads_need_credentials(anon: APIClient) -> None:
    response = anon.post("/api/v1/file", {"file": [SimpleUploadedFile("a.mp3", b"x")]}, format="multipart")
    assert response.status_code == 401


def test_upload_filenames_are_cleaned(client_key: APIClient, upload: Upload) -> None:
    data = HOTWORDS.read_bytes()
    body, content_type = raw_multipart(
        [
            (b'Content-Disposition: form-data; name="file"; filename="C:\\Users\\me\\talk.mp3"', data),
            (b'Content-Disposition: form-data; name="file"; filename="../../etc/\x01bad\x7f.mp3"', data + b"\0"),
            ('Content-Disposition: form-data; name="file"; filename="Привет мир.mp3"'.encode(), data + b"\0\0"),
            (b"Content-Disposition: form-data; name=\"file\"; filename*=UTF-8''caf%C3%A9.mp3", data + b"\0\0\0"),
            (b'Content-Disposition: form-data; name="file"; filename="' + b"a" * 300 + b'.mp3"', data + b"\0" * 4),
        ]
    )
    response = client_key.generic("POST", "/api/v1/file", body, content_type=content_type)
    names = [row["filename"] for row in response.json()["files"]]
    assert names[:4] == ["talk.mp3", "bad.mp3", "Привет мир.mp3", "café.mp3"]
    assert len(names[4]) == 255 and names[4].endswith("a.mp3")


def test_plain_form_fields_and_other_file_parts_are_ignored(client_key: APIClient, upload: Upload) -> None:
    body, content_type = raw_multipart(
        [
            (b'Content-Disposition: form-data; name="note"', b"hello"),
            (b'Content-Disposition: form-data; name="attachment"; filename="x.mp3"', HOTWORDS.read_bytes()),
            (b'Content-Disposition: form-data; name="file"; filename=""', b""),
            (
                b'Content-Disposition: form-data; name="file"; filename="h.mp3"\r\nContent-Type: audio/mpeg',
                HOTWORDS.read_bytes(),
            ),
        ]
    )
    rows = client_key.generic("POST", "/api/v1/file", body, content_type=content_type).json()["files"]
    assert [row["filename"] for row in rows] == ["h.mp3"]


# --- listing --------------------------------------------------------------


def test_listing_is_paginated_newest_first_with_status(
    client_key: APIClient, other_client: APIClient, upload: Upload, media_files: dict[str, Path]
) -> None:
    for path in (JFK, HOTWORDS, media_files["tone.wav"]):
        upload(client_key, path)
    upload(other_client, media_files["silence.mp3"])
    page = client_key.get("/api/v1/file?page=1&limit=2").json()
    assert page["pagination"] == {"page": 1, "limit": 2, "total_count": 3, "total_pages": 2}
    assert [row["filename"] for row in page["files"]] == ["tone.wav", "hotwords.mp3"]
    row = page["files"][0]
    assert set(row) == {"uuid", "filename", "content_type", "size_bytes", "uploaded_at", "status", "duration", "error"}
    assert row["content_type"] == "audio/mpeg" and row["status"] == "ready" and row["error"] is None
    assert row["duration"] == pytest.approx(2.0, abs=0.1)
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$", row["uploaded_at"])
    second = client_key.get("/api/v1/file", {"page": 2, "limit": 2}).json()
    assert [row["filename"] for row in second["files"]] == ["jfk.flac"]
    assert client_key.get("/api/v1/file?limit=101").status_code == 400
    assert client_key.get("/api/v1/file?page=0").status_code == 400


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("page=", "Invalid page. Must be a positive integer"),
        ("page=1.0", "Invalid page. Must be a positive integer"),
        ("page=%2B1", "Invalid page. Must be a positive integer"),
        ("page=%EF%BC%91", "Invalid page. Must be a positive integer"),  # a full-width digit one
        ("page=1234567890", "Invalid page. Must be a positive integer"),
        ("limit=0", "Invalid limit. Must be between 1 and 100"),
        ("limit=", "Invalid limit. Must be between 1 and 100"),
        # Both wrong: the page is reported.
        ("limit=101&page=0", "Invalid page. Must be a positive integer"),
    ],
)
def test_listing_takes_only_plain_positive_page_numbers(client_key: APIClient, query: str, message: str) -> None:
    response = client_key.get(f"/api/v1/file?{query}")
    assert (response.status_code, text(response)) == (400, message)


def test_listing_reads_padded_numbers_and_defaults(client_key: APIClient) -> None:
    body = client_key.get("/api/v1/file?page=%202%20&limit=100").json()
    assert body["pagination"] == {"page": 2, "limit": 100, "total_count": 0, "total_pages": 0}
    assert client_key.get("/api/v1/file").json()["pagination"]["limit"] == 10


def test_listing_shows_processing_and_failed_files(client_key: APIClient, user: User) -> None:
    File.objects.create(owner=user, filename="a.mp3", kind="audio", content_type="audio/mpeg", blake3="1" * 64)
    File.objects.create(
        owner=user, filename="b.mp3", kind="audio", content_type="audio/mpeg", blake3="2" * 64,
        state="failed", error="Conversion failed: ffmpeg failed: boom",
    )  # fmt: skip
    rows = {row["filename"]: row for row in client_key.get("/api/v1/file").json()["files"]}
    assert (rows["a.mp3"]["status"], rows["a.mp3"]["error"]) == ("processing", None)
    assert (rows["b.mp3"]["status"], rows["b.mp3"]["error"]) == ("failed", "Conversion failed: ffmpeg failed: boom")


def test_listing_needs_credentials(anon: APIClient) -> None:
    assert anon.get("/api/v1/file").status_code == 401


# --- download ---------------------------------------------------------------


@pytest.fixture
def ready_mp3(client_key: APIClient, upload: Upload) -> File:
    return File.objects.get(id=upload(client_key, JFK).json()["files"][0]["uuid"])


def test_download_streams_the_mp3_without_auth(anon: APIClient, ready_mp3: File, media_root: Path) -> None:
    response = anon.get(f"/api/v1/file/{ready_mp3.id.hex}")
    assert response.status_code == 200 and response.streaming
    stored = (media_root / ready_mp3.media_name).read_bytes()
    assert response["Content-Type"] == "audio/mpeg"
    assert response["Content-Length"] == str(len(stored))
    assert response["Accept-Ranges"] == "bytes"
    assert response["Content-Disposition"] == 'inline; filename="jfk.mp3"'
    assert body_of(response) == stored


def test_download_ignores_a_bad_authorization_header(anon: APIClient, ready_mp3: File) -> None:
    response = anon.get(f"/api/v1/file/{ready_mp3.id}", HTTP_AUTHORIZATION="Bearer " + "0" * 32)
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [("bytes=0-99", 0, 99), ("bytes=100-", 100, None), ("bytes=-50", -50, None), ("bytes=10-10", 10, 10)],
)
def test_download_ranges(
    anon: APIClient, ready_mp3: File, media_root: Path, header: str, start: int, end: int | None
) -> None:
    stored = (media_root / ready_mp3.media_name).read_bytes()
    size = len(stored)
    response = anon.get(f"/api/v1/file/{ready_mp3.id.hex}", HTTP_RANGE=header)
    assert response.status_code == 206
    first = start if start >= 0 else size + start
    last = size - 1 if end is None else end
    assert response["Content-Range"] == f"bytes {first}-{last}/{size}"
    assert response["Content-Length"] == str(last - first + 1)
    assert body_of(response) == stored[first : last + 1]


def test_download_range_past_the_end_is_clamped(anon: APIClient, ready_mp3: File) -> None:
    size = ready_mp3.size_bytes
    response = anon.get(f"/api/v1/file/{ready_mp3.id.hex}", HTTP_RANGE=f"bytes={size - 5}-{size + 1000}")
    assert response.status_code == 206
    assert response["Content-Range"] == f"bytes {size - 5}-{size - 1}/{size}"
    assert len(body_of(response)) == 5


@pytest.mark.parametrize("header", ["bytes=999999999-", "bytes=-0"])
def test_unsatisfiable_range_is_416(anon: APIClient, ready_mp3: File, header: str) -> None:
    response = anon.get(f"/api/v1/file/{ready_mp3.id.hex}", HTTP_RANGE=header)
    assert response.status_code == 416
    assert response["Content-Range"] == f"bytes */{ready_mp3.size_bytes}"
    assert text(response) == "Requested range not satisfiable"


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "items=0-1", "bytes=5-1", "bytes=abc"])
def test_ranges_we_do_not_serve_get_the_whole_file(anon: APIClient, ready_mp3: File, header: str) -> None:
    response = anon.get(f"/api/v1/file/{ready_mp3.id.hex}", HTTP_RANGE=header)
    assert response.status_code == 200
    assert len(body_of(response)) == ready_mp3.size_bytes


def test_head_has_the_headers_and_no_body(anon: APIClient, ready_mp3: File) -> None:
    response = anon.head(f"/api/v1/file/{ready_mp3.id.hex}")
    assert response.status_code == 200
    assert response["Content-Length"] == str(ready_mp3.size_bytes)
    assert body_of(response) == b""


def test_video_downloads_as_mp4(
    anon: APIClient, client_key: APIClient, upload: Upload, media_files: dict[str, Path]
) -> None:
    row = upload(client_key, SimpleUploadedFile("clip.mov", media_files["speech.mp4"].read_bytes())).json()["files"][0]
    response = anon.get(f"/api/v1/file/{row['uuid']}")
    assert response["Content-Type"] == "video/mp4"
    assert response["Content-Disposition"] == 'inline; filename="clip.mp4"'
    assert body_of(response)[4:8] == b"ftyp"


@pytest.mark.parametrize(
    ("filename", "header"),
    [
        ("interview.wav", 'inline; filename="interview.mp3"'),
        ("notes", 'inline; filename="notes.mp3"'),
        ('say "hi".mp3', "inline; filename=\"say _hi_.mp3\"; filename*=UTF-8''say%20%22hi%22.mp3"),
        ("back\\slash.mp3", 'inline; filename="slash.mp3"'),
        ("naïve café.mp3", "inline; filename=\"naive cafe.mp3\"; filename*=UTF-8''na%C3%AFve%20caf%C3%A9.mp3"),
        ("日本語.mp3", "inline; filename=\"download.mp3\"; filename*=UTF-8''%E6%97%A5%E6%9C%AC%E8%AA%9E.mp3"),
    ],
)
def test_download_names_are_safe(
    anon: APIClient, client_key: APIClient, ready_mp3: File, filename: str, header: str
) -> None:
    assert (
        client_key.patch(f"/api/v1/file/{ready_mp3.id.hex}", {"filename": filename}, format="json").status_code == 200
    )
    assert anon.get(f"/api/v1/file/{ready_mp3.id.hex}")["Content-Disposition"] == header


def test_a_filename_with_line_breaks_cannot_split_the_header(
    anon: APIClient, client_key: APIClient, ready_mp3: File
) -> None:
    response = client_key.patch(
        f"/api/v1/file/{ready_mp3.id.hex}", {"filename": "a\r\nSet-Cookie: x=1\r\n.mp3"}, format="json"
    )
    assert response.json()["new_filename"] == "aSet-Cookie: x=1.mp3"
    header = anon.get(f"/api/v1/file/{ready_mp3.id.hex}")["Content-Disposition"]
    assert "\r" not in header and "\n" not in header


def test_download_errors(anon: APIClient, user: User) -> None:
    assert text(anon.get("/api/v1/file/not-a-uuid")) == "Invalid UUID format"
    missing = anon.get("/api/v1/file/" + "0" * 32)
    assert missing.status_code == 404 and text(missing) == "File not found or access denied"
    converting = File.objects.create(
        owner=user, filename="a.mp3", kind="audio", content_type="audio/mpeg", blake3="1" * 64
    )
    response = anon.get(f"/api/v1/file/{converting.id.hex}")
    assert response.status_code == 404 and text(response) == "File not found on disk"
    lost = File.objects.create(
        owner=user, filename="b.mp3", kind="audio", content_type="audio/mpeg", blake3="2" * 64,
        state="ready", media_name="files/nowhere/media.mp3",
    )  # fmt: skip
    response = anon.get(f"/api/v1/file/{lost.id.hex}")
    assert response.status_code == 404 and text(response) == "File not found on disk"


def test_hyphenated_uuid_and_trailing_slash(anon: APIClient, ready_mp3: File) -> None:
    assert anon.get(f"/api/v1/file/{ready_mp3.id}/").status_code == 200


# --- rename ---------------------------------------------------------------------


def test_rename(client_key: APIClient, ready_mp3: File) -> None:
    response = client_key.patch(
        f"/api/v1/file/{ready_mp3.id.hex}", {"filename": "new_interview_name.mp3"}, format="json"
    )
    assert response.status_code == 200
    assert response.json() == {
        "message": "Filename updated successfully",
        "uuid": ready_mp3.id.hex,
        "old_filename": "jfk.flac",
        "new_filename": "new_interview_name.mp3",
    }
    ready_mp3.refresh_from_db()
    assert ready_mp3.filename == "new_interview_name.mp3"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "Missing 'filename' field in request body"),
        ({"filename": None}, "Missing 'filename' field in request body"),
        ({"filename": ""}, "Filename must be between 1 and 255 characters"),
        ({"filename": "   "}, "Filename must be between 1 and 255 characters"),
        ({"filename": "\x00\x01"}, "Filename must be between 1 and 255 characters"),
        ({"filename": "dir/"}, "Filename must be between 1 and 255 characters"),
        ({"filename": "a" * 256}, "Filename must be between 1 and 255 characters"),
        ({"filename": 12}, "Filename must be between 1 and 255 characters"),
        ({"filename": ["a"]}, "Filename must be between 1 and 255 characters"),
    ],
)
def test_rename_validation(client_key: APIClient, ready_mp3: File, body: dict, message: str) -> None:
    response = client_key.patch(f"/api/v1/file/{ready_mp3.id.hex}", body, format="json")
    assert response.status_code == 400
    assert text(response) == message


def test_rename_checks_the_id_then_the_body_then_the_name_then_the_owner(
    client_key: APIClient, other_client: APIClient, ready_mp3: File
) -> None:
    url = f"/api/v1/file/{ready_mp3.id.hex}"
    response = client_key.patch("/api/v1/file/xyz", ["a"], format="json")
    assert (response.status_code, text(response)) == (400, "Invalid UUID format")
    response = client_key.patch(url, ["a"], format="json")
    assert (response.status_code, text(response)) == (400, "Request body must be a JSON object")
    response = client_key.patch(url, '{"filename": ', content_type="application/json")
    assert (response.status_code, text(response)) == (400, "Malformed request body")
    response = client_key.patch(url, "filename=a.mp3", content_type="text/plain")
    assert (response.status_code, text(response)) == (415, "Unsupported Content-Type")
    # A name that cleans to nothing is refused before the file is looked up, whoever asks.
    response = other_client.patch(url, {"filename": "dir/"}, format="json")
    assert (response.status_code, text(response)) == (400, "Filename must be between 1 and 255 characters")
    response = other_client.patch(url, {"filename": "ok.mp3"}, format="json")
    assert (response.status_code, text(response)) == (404, "File not found or access denied")


def test_rename_from_a_form_body(client_key: APIClient, ready_mp3: File) -> None:
    response = client_key.patch(f"/api/v1/file/{ready_mp3.id.hex}", {"filename": "form.mp3"}, format="multipart")
    assert response.json()["new_filename"] == "form.mp3"


def test_rename_cleans_path_separators(client_key: APIClient, ready_mp3: File) -> None:
    response = client_key.patch(f"/api/v1/file/{ready_mp3.id.hex}", {"filename": "../x/..\\talk.mp3"}, format="json")
    assert response.json()["new_filename"] == "talk.mp3"
    assert (
        client_key.patch(f"/api/v1/file/{ready_mp3.id.hex}", {"filename": "a" * 255}, format="json").status_code == 200
    )


def test_another_users_file_is_404_for_rename_and_delete(
    other_client: APIClient, ready_mp3: File, media_root: Path
) -> None:
    url = f"/api/v1/file/{ready_mp3.id.hex}"
    renamed = other_client.patch(url, {"filename": "mine.mp3"}, format="json")
    assert renamed.status_code == 404 and text(renamed) == "File not found or access denied"
    deleted = other_client.delete(url)
    assert deleted.status_code == 404 and text(deleted) == "File not found or access denied"
    assert File.objects.filter(id=ready_mp3.id).exists()
    assert (media_root / ready_mp3.media_name).exists()


def test_rename_and_delete_check_the_uuid(client_key: APIClient, anon: APIClient) -> None:
    assert text(client_key.patch("/api/v1/file/xyz", {"filename": "a"}, format="json")) == "Invalid UUID format"
    assert text(client_key.delete("/api/v1/file/xyz")) == "Invalid UUID format"
    assert client_key.delete("/api/v1/file/" + "0" * 32).status_code == 404
    # Any id up to the next slash reaches the view, dots included.
    assert text(client_key.delete("/api/v1/file/talk.mp3/")) == "Invalid UUID format"
    assert text(anon.get("/api/v1/file/talk.mp3")) == "Invalid UUID format"
    assert anon.get("/api/v1/file/a/b").status_code == 404


def test_routes_and_their_names(ready_mp3: File) -> None:
    assert reverse("file-list") == "/api/v1/file"
    assert reverse("file-detail", kwargs={"uuid": ready_mp3.id.hex}) == f"/api/v1/file/{ready_mp3.id.hex}"


# --- delete -------------------------------------------------------------------


def test_delete_removes_every_stored_object_and_the_transcriptions(
    client_key: APIClient, ready_mp3: File, media_root: Path, django_capture_on_commit_callbacks: Any
) -> None:
    from transcriptions.models import Transcription

    Transcription.objects.create(owner=ready_mp3.owner, file=ready_mp3, model="ggml-tiny.en", format="srt")
    assert len(stored_files(media_root)) == 2
    with django_capture_on_commit_callbacks(execute=True):
        response = client_key.delete(f"/api/v1/file/{ready_mp3.id.hex}")
    assert response.status_code == 200
    assert response.json() == {"message": "File deleted successfully", "uuid": ready_mp3.id.hex, "filename": "jfk.flac"}
    assert not File.objects.filter(id=ready_mp3.id).exists()
    assert not Transcription.objects.exists()
    assert stored_files(media_root) == []
    assert client_key.get(f"/api/v1/file/{ready_mp3.id.hex}").status_code == 404


def test_delete_needs_credentials(anon: APIClient, ready_mp3: File) -> None:
    assert anon.delete(f"/api/v1/file/{ready_mp3.id.hex}").status_code == 401
    assert anon.patch(f"/api/v1/file/{ready_mp3.id.hex}", {"filename": "x"}, format="json").status_code == 401


def test_deleting_the_account_removes_its_stored_objects(
    client_session: APIClient, upload: Upload, media_root: Path, django_capture_on_commit_callbacks: Any
) -> None:
    from tests.conftest import PASSWORD

    upload(client_session, JFK, HOTWORDS)
    keeper, _ = make_user("keeper")
    upload(client_for(keeper), HOTWORDS)
    assert len(stored_files(media_root)) == 6
    with django_capture_on_commit_callbacks(execute=True):
        response = client_session.delete("/api/v1/user/me", {"password": PASSWORD}, format="json")
    assert response.status_code == 200
    left = stored_files(media_root)
    assert len(left) == 2 and all(keeper.id.hex in name for name in left)


def test_with_no_files_handler_other_endpoints_refuse_file_parts(
    anon: APIClient, settings: Any, upload_temp_dir: Path
) -> None:
    # What FILE_UPLOAD_HANDLERS = ["files.uploads.NoFilesUploadHandler"] does.
    settings.FILE_UPLOAD_HANDLERS = ["files.uploads.NoFilesUploadHandler"]
    body, content_type = raw_multipart(
        [
            (b'Content-Disposition: form-data; name="username"', b"alice"),
            (b'Content-Disposition: form-data; name="junk"; filename="big.bin"', b"x" * 100_000),
        ]
    )
    response = anon.generic("POST", "/api/v1/user/login", body, content_type=content_type)
    assert response.status_code == 413
    assert text(response) == "Request body too large"
    assert list(upload_temp_dir.iterdir()) == []


def test_with_no_files_handler_the_file_endpoints_still_take_files(
    client_key: APIClient, upload: Upload, settings: Any
) -> None:
    settings.FILE_UPLOAD_HANDLERS = ["files.uploads.NoFilesUploadHandler"]
    assert upload(client_key, HOTWORDS).json()["files"][0]["status"]["uploaded"] is True


def test_a_large_upload_is_hashed_and_stored_byte_exact(client_key: APIClient, upload: Upload) -> None:
    import struct

    from blake3 import blake3

    # 12 MiB of 16-bit noise behind a WAV header: more than the writer's buffer pool holds.
    data_bytes = 12 * 1024 * 1024
    header = (
        b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16) + b"data" + struct.pack("<I", data_bytes)
    )  # fmt: skip
    content = header + os.urandom(data_bytes)
    row = upload(client_key, SimpleUploadedFile("noise.wav", content)).json()["files"][0]
    assert row["hash"] == blake3(content).hexdigest()
    file = File.objects.get(id=row["uuid"])
    assert file.upload_size == len(content)
    assert file.duration == pytest.approx(data_bytes / 32000, abs=0.01)


# --- the published schema --------------------------------------------------------


def test_the_schema_describes_the_file_operations(anon: APIClient) -> None:
    document = json.loads(anon.get("/api/v1/schema?format=json").content)
    listing, upload = document["paths"]["/api/v1/file"]["get"], document["paths"]["/api/v1/file"]["post"]
    detail = document["paths"]["/api/v1/file/{uuid}"]
    assert [listing["operationId"], upload["operationId"]] == ["file_list", "file_upload"]
    assert [detail[m]["operationId"] for m in ("get", "patch", "delete")] == [
        "file_download",
        "file_rename",
        "file_delete",
    ]

    def errors(operation: dict[str, Any], status: int) -> set[str]:
        content = operation["responses"][str(status)]["content"]["text/plain"]
        return {example["value"] for example in content["examples"].values()}

    parameters = {p["name"]: p["schema"] for p in listing["parameters"]}
    assert parameters["page"] == {"type": "integer", "minimum": 1, "maximum": 999_999_999, "default": 1}
    assert parameters["limit"] == {"type": "integer", "minimum": 1, "maximum": 100, "default": 10}

    body = upload["requestBody"]["content"]["multipart/form-data"]["schema"]
    body = document["components"]["schemas"][body["$ref"].rsplit("/", 1)[-1]]
    assert body["required"] == ["file"]
    assert body["properties"]["file"]["items"] == {"type": "string", "format": "binary"}
    assert "Content-Type must be multipart/form-data" in errors(upload, 400)
    assert errors(upload, 413) == {"Request body too large"}

    download = detail["get"]
    assert not download.get("security")  # public: no credentials
    assert download["responses"]["206"]["content"]["audio/mpeg"]["schema"] == {"type": "string", "format": "binary"}
    assert {"Accept-Ranges", "Content-Disposition"} <= set(download["responses"]["200"]["headers"])
    assert "Content-Range" in download["responses"]["206"]["headers"]
    assert errors(download, 416) == {"Requested range not satisfiable"}
    pattern = next(p for p in download["parameters"] if p["in"] == "path")["schema"]["pattern"]
    assert re.fullmatch(pattern, "0" * 32) and re.fullmatch(pattern, "01234567-89ab-cdef-0123-456789abcdef")
    assert not re.fullmatch(pattern, "not-a-uuid")

    rename = detail["patch"]
    assert rename["security"] == [{"apiKey": []}, {"sessionId": []}]
    assert rename["requestBody"]["required"] is True
    body = rename["requestBody"]["content"]["application/json"]["schema"]
    assert document["components"]["schemas"][body["$ref"].rsplit("/", 1)[-1]]["required"] == ["filename"]
    assert {"Missing 'filename' field in request body", "Filename must be between 1 and 255 characters"} <= errors(
        rename, 400
    )
    assert errors(rename, 415) == {"Unsupported Content-Type"}
    assert errors(detail["delete"], 404) == {"File not found or access denied"}
