"""Files on S3-compatible storage: moto's S3 server on loopback, reached over HTTP by boto3.

Nothing is mocked in-process: django-storages talks to a separate server
process, as it would to MinIO or AWS. The media folder must stay empty.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import boto3
import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from files.models import File
from files.selectors import file_wav_local_path
from files.tasks import file_convert_audio_task
from tests.files.conftest import HOTWORDS, JFK, Upload, stored_files

pytestmark = pytest.mark.django_db
BUCKET = "whisper-test"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError("moto server did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def s3(s3_endpoint: str, settings: Any) -> Iterator[Any]:
    """A fresh bucket, and the default storage pointed at it (Django resets its storages on the change)."""
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=BUCKET)
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": BUCKET,
                "endpoint_url": s3_endpoint,
                "access_key": "testing",
                "secret_key": "testing",
                "region_name": "us-east-1",
                "file_overwrite": True,
                "querystring_auth": False,
            },
        },
    }
    yield client
    for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=item["Key"])
    client.delete_bucket(Bucket=BUCKET)


def keys(client: Any) -> list[str]:
    return sorted(item["Key"] for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", []))


def test_the_default_storage_is_s3(s3: Any) -> None:
    from storages.backends.s3 import S3Storage

    assert isinstance(default_storage, S3Storage)


@pytest.mark.usefixtures("no_leftovers")
def test_upload_convert_download_delete_on_s3(
    s3: Any,
    client_key: APIClient,
    anon: APIClient,
    upload: Upload,
    media_files: dict[str, Path],
    media_root: Path,
    django_capture_on_commit_callbacks: Any,
) -> None:
    rows = upload(client_key, JFK, media_files["speech.mp4"], media_files["doc.pdf"]).json()["files"]
    assert [row["status"].get("uploaded") for row in rows] == [True, True, False]
    audio, video = (File.objects.get(id=row["uuid"]) for row in rows[:2])
    assert (audio.state, video.state) == ("ready", "ready")
    prefix = f"files/{audio.owner_id.hex}"
    assert keys(s3) == [
        f"{prefix}/{audio.id.hex}/audio.wav",
        f"{prefix}/{audio.id.hex}/media.mp3",
        f"{prefix}/{video.id.hex}/audio.wav",
        f"{prefix}/{video.id.hex}/media.mp4",
    ]
    # Nothing went to the local disk.
    assert stored_files(media_root) == []

    stored = s3.get_object(Bucket=BUCKET, Key=audio.media_name)["Body"].read()
    assert audio.size_bytes == len(stored)
    whole = anon.get(f"/api/v1/file/{audio.id.hex}")
    assert whole.status_code == 200 and whole["Content-Length"] == str(len(stored))
    assert b"".join(whole.streaming_content) == stored
    part = anon.get(f"/api/v1/file/{audio.id.hex}", HTTP_RANGE="bytes=1000-1999")
    assert part.status_code == 206
    assert part["Content-Range"] == f"bytes 1000-1999/{len(stored)}"
    assert b"".join(part.streaming_content) == stored[1000:2000]
    assert anon.get(f"/api/v1/file/{audio.id.hex}", HTTP_RANGE=f"bytes={len(stored)}-").status_code == 416

    with file_wav_local_path(audio) as wav:
        with av.open(str(wav)) as container:
            stream = container.streams.audio[0].codec_context
            assert (stream.name, stream.sample_rate, stream.channels) == ("pcm_s16le", 16000, 1)
        copy = wav
    assert not copy.exists()

    with django_capture_on_commit_callbacks(execute=True):
        assert client_key.delete(f"/api/v1/file/{audio.id.hex}").status_code == 200
    assert keys(s3) == [f"{prefix}/{video.id.hex}/audio.wav", f"{prefix}/{video.id.hex}/media.mp4"]


def test_a_failed_conversion_on_s3_leaves_nothing(
    s3: Any, client_key: APIClient, django_capture_on_commit_callbacks: Any
) -> None:
    # Upload without running the queued conversion; then spoil the original in the bucket.
    response = client_key.post(
        "/api/v1/file", {"file": [SimpleUploadedFile("h.mp3", HOTWORDS.read_bytes())]}, format="multipart"
    )
    file = File.objects.get(id=response.json()["files"][0]["uuid"])
    assert keys(s3) == [file.original_name]
    s3.put_object(Bucket=BUCKET, Key=file.original_name, Body=b"\0garbage" * 1000)
    with django_capture_on_commit_callbacks(execute=True):
        file_convert_audio_task.apply(args=[file.id.hex]).get()
    file.refresh_from_db()
    assert file.state == "failed" and file.error.startswith("Conversion failed: ")
    assert keys(s3) == []


def test_avatars_on_s3(
    s3: Any,
    client_session: APIClient,
    anon: APIClient,
    media_files: dict[str, Path],
    django_capture_on_commit_callbacks: Any,
) -> None:
    png = media_files["red.png"].read_bytes()
    with django_capture_on_commit_callbacks(execute=True):
        response = client_session.patch(
            "/api/v1/user/me", {"avatar": SimpleUploadedFile("me.png", png)}, format="multipart"
        )
    assert response.status_code == 200
    avatar_uuid = client_session.get("/api/v1/user/me").json()["avatar_uuid"]
    download = anon.get(f"/api/v1/file/{avatar_uuid}")
    assert download["Content-Type"] == "image/png"
    assert b"".join(download.streaming_content) == png
    assert len(keys(s3)) == 1
