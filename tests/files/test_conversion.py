"""The conversion tasks (WAV, then MP3/MP4): outputs, failures, reruns, deletes meanwhile, signals, logs, recovery."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import pytest
from celery.signals import task_prerun
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from files import media
from files.models import File
from files.selectors import file_wav_local_path
from files.signals import file_audio_ready, file_failed, file_ready
from files.tasks import file_convert_audio_task, file_convert_media_task, file_convert_task
from tests.files.conftest import HOTWORDS, JFK, stored_files

pytestmark = pytest.mark.django_db


@pytest.fixture
def tasks_run() -> Iterator[list[str]]:
    """Names of the Celery tasks run (eagerly), in order."""
    names: list[str] = []

    def record(sender: Any = None, **kwargs: Any) -> None:
        names.append(sender.name)

    task_prerun.connect(record, weak=False)
    yield names
    task_prerun.disconnect(record)


@pytest.fixture
def signals() -> Iterator[list[tuple[str, Any]]]:
    received: list[tuple[str, Any]] = []

    def ready(sender: Any, file_id: Any, **kwargs: Any) -> None:
        received.append(("ready", file_id))

    def failed(sender: Any, file_id: Any, **kwargs: Any) -> None:
        received.append(("failed", file_id))

    def audio_ready(sender: Any, file_id: Any, **kwargs: Any) -> None:
        received.append(("audio_ready", file_id))

    file_audio_ready.connect(audio_ready, dispatch_uid="test-audio-ready")
    file_ready.connect(ready, dispatch_uid="test-ready")
    file_failed.connect(failed, dispatch_uid="test-failed")
    yield received
    file_audio_ready.disconnect(dispatch_uid="test-audio-ready")
    file_ready.disconnect(dispatch_uid="test-ready")
    file_failed.disconnect(dispatch_uid="test-failed")


def upload_unconverted(client: APIClient, path: Path) -> File:
    """Upload without running what the upload queued: the file stays processing."""
    response = client.post(
        "/api/v1/file", {"file": [SimpleUploadedFile(path.name, path.read_bytes())]}, format="multipart"
    )
    return File.objects.get(id=response.json()["files"][0]["uuid"])


def run_task(file: File, capture: Any, task: Any = file_convert_audio_task) -> None:
    """Run ``task`` (phase one unless told) on ``file``, and on commit what it queued (phase two)."""
    with capture(execute=True):
        task.apply(args=[file.id.hex]).get()


def test_the_original_is_kept_until_converted_then_deleted(
    client_key: APIClient, media_root: Path, django_capture_on_commit_callbacks: Any, signals: list, tasks_run: list
) -> None:
    file = upload_unconverted(client_key, JFK)
    assert file.state == "processing" and file.original_name
    assert stored_files(media_root) == [file.original_name]
    assert (media_root / file.original_name).read_bytes() == JFK.read_bytes()
    run_task(file, django_capture_on_commit_callbacks)
    file.refresh_from_db()
    assert (file.state, file.original_name, file.error) == ("ready", "", "")
    assert file.converted_at is not None
    assert stored_files(media_root) == sorted([file.media_name, file.wav_name])
    assert signals == [("audio_ready", file.id), ("ready", file.id)]
    # Phase one queued phase two once the WAV was recorded.
    assert tasks_run == ["files.convert_audio", "files.convert_media"]


def test_each_phase_is_a_task_of_its_own(
    client_key: APIClient, media_root: Path, django_capture_on_commit_callbacks: Any, tasks_run: list
) -> None:
    file = upload_unconverted(client_key, JFK)
    # Phase one alone: what it queues once it commits is not run.
    with django_capture_on_commit_callbacks(execute=False):
        file_convert_audio_task.apply(args=[file.id.hex]).get()
    file.refresh_from_db()
    assert (file.state, file.media_name) == ("processing", "")
    assert stored_files(media_root) == sorted([file.original_name, file.wav_name])
    with django_capture_on_commit_callbacks(execute=True):
        file_convert_media_task.apply(args=[file.id.hex]).get()
    file.refresh_from_db()
    assert file.state == "ready"
    assert stored_files(media_root) == sorted([file.media_name, file.wav_name])
    assert tasks_run == ["files.convert_audio", "files.convert_media"]


def test_phase_one_run_again_goes_on_to_phase_two_without_making_the_wav_again(
    client_key: APIClient,
    media_root: Path,
    django_capture_on_commit_callbacks: Any,
    signals: list,
    tasks_run: list,
) -> None:
    file = upload_unconverted(client_key, HOTWORDS)
    with django_capture_on_commit_callbacks(execute=False):
        # Phase one, whose message for phase two is lost.
        file_convert_audio_task.apply(args=[file.id.hex]).get()
    file.refresh_from_db()
    wav = media_root / file.wav_name
    made = wav.stat().st_mtime_ns
    run_task(file, django_capture_on_commit_callbacks)  # a second delivery of phase one
    file.refresh_from_db()
    assert file.state == "ready"
    assert wav.stat().st_mtime_ns == made
    assert tasks_run == ["files.convert_audio", "files.convert_audio", "files.convert_media"]
    assert signals == [("ready", file.id)]


@pytest.mark.parametrize("second_run", [False, True])
def test_a_message_of_the_former_one_task_conversion_still_converts(
    client_key: APIClient,
    media_root: Path,
    django_capture_on_commit_callbacks: Any,
    tasks_run: list,
    second_run: bool,
) -> None:
    # Queued before an upgrade: the old task, on a new file or for its second run (WAV recorded).
    assert file_convert_task.name == "files.tasks.file_convert_task"
    file = upload_unconverted(client_key, HOTWORDS)
    if second_run:
        with django_capture_on_commit_callbacks(execute=False):
            file_convert_audio_task.apply(args=[file.id.hex]).get()
        tasks_run.clear()
    run_task(file, django_capture_on_commit_callbacks, file_convert_task)
    file.refresh_from_db()
    assert file.state == "ready"
    assert stored_files(media_root) == sorted([file.media_name, file.wav_name])
    assert tasks_run == ["files.tasks.file_convert_task", "files.convert_media"]


def test_phase_two_without_a_wav_runs_phase_one_first(
    client_key: APIClient, media_root: Path, django_capture_on_commit_callbacks: Any, tasks_run: list
) -> None:
    file = upload_unconverted(client_key, HOTWORDS)
    run_task(file, django_capture_on_commit_callbacks, file_convert_media_task)
    file.refresh_from_db()
    assert file.state == "ready"
    assert stored_files(media_root) == sorted([file.media_name, file.wav_name])
    assert tasks_run == ["files.convert_media", "files.convert_audio", "files.convert_media"]


def test_a_failed_conversion_says_why_and_keeps_nothing(
    client_key: APIClient,
    media_root: Path,
    django_capture_on_commit_callbacks: Any,
    signals: list,
    upload_temp_dir: Path,
) -> None:
    file = upload_unconverted(client_key, JFK)
    # The stored original goes bad between upload and conversion.
    (media_root / file.original_name).write_bytes(os.urandom(50_000))
    run_task(file, django_capture_on_commit_callbacks)
    file.refresh_from_db()
    assert file.state == "failed"
    assert file.error.startswith("Conversion failed: ") and "[" not in file.error and "@ 0x" not in file.error
    assert (file.original_name, file.media_name, file.wav_name) == ("", "", "")
    assert stored_files(media_root) == []
    assert list(upload_temp_dir.iterdir()) == []
    assert signals == [("failed", file.id)]
    row = client_key.get("/api/v1/file").json()["files"][0]
    assert (row["status"], row["error"]) == ("failed", file.error)
    assert client_key.get(f"/api/v1/file/{file.id.hex}").status_code == 404


def warnings_about(file: File, caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Warnings of the files app that name ``file`` and its owner, in the text and as fields."""
    return [
        record
        for record in caplog.records
        if record.levelno == logging.WARNING
        and record.name.startswith("files.")
        and f"file={file.id.hex}" in record.getMessage()
        and f"user={file.owner_id.hex}" in record.getMessage()
        and (getattr(record, "file_id", None), getattr(record, "user_id", None)) == (file.id.hex, file.owner_id.hex)
    ]


def test_a_failed_conversion_logs_a_warning_with_the_reason_naming_the_file_and_user(
    client_key: APIClient, media_root: Path, django_capture_on_commit_callbacks: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Probed fine at upload; the stored original then holds what ffmpeg cannot decode.
    file = upload_unconverted(client_key, JFK)
    (media_root / file.original_name).write_bytes(os.urandom(50_000))
    with caplog.at_level(logging.WARNING):
        run_task(file, django_capture_on_commit_callbacks)
    file.refresh_from_db()
    assert file.state == "failed"
    [warning] = warnings_about(file, caplog)
    assert file.error in warning.getMessage()


def test_a_lost_original_fails_the_file(
    client_key: APIClient, media_root: Path, django_capture_on_commit_callbacks: Any
) -> None:
    file = upload_unconverted(client_key, HOTWORDS)
    (media_root / file.original_name).unlink()
    run_task(file, django_capture_on_commit_callbacks)
    file.refresh_from_db()
    assert (file.state, file.error) == ("failed", "Conversion failed: the uploaded file is missing from storage")


def test_running_the_task_twice_is_harmless(
    client_key: APIClient, media_root: Path, django_capture_on_commit_callbacks: Any, signals: list
) -> None:
    file = upload_unconverted(client_key, HOTWORDS)
    run_task(file, django_capture_on_commit_callbacks)
    file.refresh_from_db()
    first = (file.media_name, file.wav_name, file.size_bytes, file.converted_at)
    objects = stored_files(media_root)
    run_task(file, django_capture_on_commit_callbacks)
    file.refresh_from_db()
    assert (file.media_name, file.wav_name, file.size_bytes, file.converted_at) == first
    assert stored_files(media_root) == objects
    assert signals == [("audio_ready", file.id), ("ready", file.id)]


def test_a_second_run_before_the_first_finished_writes_the_same_names(
    client_key: APIClient, media_root: Path, django_capture_on_commit_callbacks: Any
) -> None:
    # Two deliveries of the same message: the second starts while the file
    # still reads processing and its outputs already exist under their names.
    file = upload_unconverted(client_key, HOTWORDS)
    original = (media_root / file.original_name).read_bytes()
    run_task(file, django_capture_on_commit_callbacks)
    file.refresh_from_db()
    kept = stored_files(media_root)
    restored = file.original_name or f"files/{file.owner_id.hex}/{file.id.hex}/upload-again"
    (media_root / restored).write_bytes(original)
    File.objects.filter(id=file.id).update(state="processing", original_name=restored)
    run_task(file, django_capture_on_commit_callbacks)
    file.refresh_from_db()
    assert file.state == "ready"
    assert stored_files(media_root) == kept


@pytest.mark.parametrize("step", ["convert_to_wav", "convert_audio_to_mp3"])
def test_a_file_deleted_while_converting_leaves_nothing(
    client_key: APIClient,
    media_root: Path,
    django_capture_on_commit_callbacks: Any,
    monkeypatch: pytest.MonkeyPatch,
    step: str,
) -> None:
    file = upload_unconverted(client_key, HOTWORDS)
    convert = getattr(media, step)

    def convert_then_delete(*args: Any, **kwargs: Any) -> Any:
        output = convert(*args, **kwargs)
        # The user deletes the file while ffmpeg runs.
        with django_capture_on_commit_callbacks(execute=True):
            assert client_key.delete(f"/api/v1/file/{file.id.hex}").status_code == 200
        return output

    monkeypatch.setattr(media, step, convert_then_delete)
    run_task(file, django_capture_on_commit_callbacks)
    assert not File.objects.exists()
    assert stored_files(media_root) == []


@pytest.mark.django_db(transaction=True)  # on_commit runs at each commit, as in a worker
def test_the_wav_is_usable_while_the_mp3_is_made(
    client_key: APIClient, monkeypatch: pytest.MonkeyPatch, signals: list
) -> None:
    convert = media.convert_audio_to_mp3
    seen: dict[str, Any] = {}

    def look_then_convert(*args: Any, **kwargs: Any) -> Any:
        current = File.objects.get()
        seen["state"] = current.state
        seen["signals"] = list(signals)
        with file_wav_local_path(current) as path, av.open(str(path)) as container:
            seen["wav_seconds"] = container.duration / av.time_base
        return convert(*args, **kwargs)

    monkeypatch.setattr(media, "convert_audio_to_mp3", look_then_convert)
    # Eager Celery converts on the upload's commit.
    file = upload_unconverted(client_key, JFK)
    assert seen["state"] == "processing"
    assert seen["signals"] == [("audio_ready", file.id)]
    assert seen["wav_seconds"] == pytest.approx(11.0, abs=0.05)
    file.refresh_from_db()
    assert file.state == "ready"
    assert signals == [("audio_ready", file.id), ("ready", file.id)]


def test_a_media_conversion_failing_after_the_wav_deletes_the_wav_too(
    client_key: APIClient, media_root: Path, django_capture_on_commit_callbacks: Any, monkeypatch: pytest.MonkeyPatch,
    signals: list,
) -> None:  # fmt: skip
    file = upload_unconverted(client_key, HOTWORDS)

    def fail(*args: Any, **kwargs: Any) -> Any:
        # A fault ffmpeg cannot be made to have on an input whose WAV it just made.
        raise media.ConversionError("ffmpeg failed: encoder exploded")

    monkeypatch.setattr(media, "convert_audio_to_mp3", fail)
    run_task(file, django_capture_on_commit_callbacks)
    file.refresh_from_db()
    assert (file.state, file.error, file.wav_name) == (
        "failed",
        "Conversion failed: ffmpeg failed: encoder exploded",
        "",
    )
    assert stored_files(media_root) == []
    assert signals == [("audio_ready", file.id), ("failed", file.id)]


def test_a_deleted_file_is_not_converted(
    client_key: APIClient, media_root: Path, django_capture_on_commit_callbacks: Any
) -> None:
    file = upload_unconverted(client_key, HOTWORDS)
    with django_capture_on_commit_callbacks(execute=True):
        client_key.delete(f"/api/v1/file/{file.id.hex}")
    run_task(file, django_capture_on_commit_callbacks)
    assert stored_files(media_root) == []


def test_time_limits_scale_with_duration() -> None:
    from files import services

    assert services.convert_time_limits(kind="audio", duration=100) == (220, 280)
    assert services.convert_time_limits(kind="video", duration=100) == (1320, 1380)
    # Never past the broker's visibility timeout (6 h by default).
    assert services.convert_time_limits(kind="video", duration=10 * 3600) == (6 * 3600 - 120, 6 * 3600 - 60)


def test_the_wav_accessor_gives_a_readable_16k_mono_wav(
    client_key: APIClient, django_capture_on_commit_callbacks: Any
) -> None:
    file = upload_unconverted(client_key, JFK)
    with pytest.raises(FileNotFoundError), file_wav_local_path(file):
        pass
    run_task(file, django_capture_on_commit_callbacks)
    file.refresh_from_db()
    with file_wav_local_path(file) as path, av.open(str(path)) as container:
        stream = container.streams.audio[0]
        assert (stream.codec_context.name, stream.codec_context.sample_rate, stream.codec_context.channels) == (
            "pcm_s16le",
            16000,
            1,
        )


def test_a_conversion_whose_message_or_worker_was_lost_is_queued_again(
    client_key: APIClient,
    media_root: Path,
    django_capture_on_commit_callbacks: Any,
    tasks_run: list,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import datetime as dt

    from django.utils import timezone

    from files.services import convert_recovery_period, file_requeue_stuck

    file = upload_unconverted(client_key, JFK)
    assert file_requeue_stuck(older_than=60) == 0  # young: its message may still come
    period = convert_recovery_period(kind=file.kind, duration=file.duration)
    File.objects.filter(id=file.id).update(uploaded_at=timezone.now() - dt.timedelta(seconds=period + 61))
    with caplog.at_level(logging.WARNING), django_capture_on_commit_callbacks(execute=True):
        assert file_requeue_stuck(older_than=60) == 1
    file.refresh_from_db()
    assert file.state == "ready"
    assert stored_files(media_root) == sorted([file.media_name, file.wav_name])
    assert tasks_run == ["files.convert_audio", "files.convert_media"]
    assert len(warnings_about(file, caplog)) == 1
    assert file_requeue_stuck(older_than=60) == 0  # idempotent


def test_recovery_queues_the_phase_a_lost_conversion_is_in(
    client_key: APIClient, media_root: Path, django_capture_on_commit_callbacks: Any, tasks_run: list
) -> None:
    import datetime as dt

    from django.utils import timezone

    from files.services import convert_recovery_period, file_requeue_stuck

    file = upload_unconverted(client_key, JFK)
    with django_capture_on_commit_callbacks(execute=False):
        # Phase one, whose message for phase two is lost.
        file_convert_audio_task.apply(args=[file.id.hex]).get()
    period = convert_recovery_period(kind=file.kind, duration=file.duration)
    File.objects.filter(id=file.id).update(uploaded_at=timezone.now() - dt.timedelta(seconds=period + 61))
    tasks_run.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert file_requeue_stuck(older_than=60) == 1
    file.refresh_from_db()
    assert file.state == "ready"
    assert stored_files(media_root) == sorted([file.media_name, file.wav_name])
    assert tasks_run == ["files.convert_media"]


def test_a_conversion_that_never_finishes_fails_instead_of_staying_processing(
    client_key: APIClient, media_root: Path, django_capture_on_commit_callbacks: Any, caplog: pytest.LogCaptureFixture
) -> None:
    import datetime as dt

    from django.utils import timezone

    from files.services import CONVERT_RECOVERY_ROUNDS, convert_recovery_period, file_requeue_stuck

    file = upload_unconverted(client_key, JFK)
    age = (convert_recovery_period(kind=file.kind, duration=file.duration) + 60) * CONVERT_RECOVERY_ROUNDS + 1
    File.objects.filter(id=file.id).update(uploaded_at=timezone.now() - dt.timedelta(seconds=age))
    with caplog.at_level(logging.WARNING), django_capture_on_commit_callbacks(execute=True):
        assert file_requeue_stuck(older_than=60) == 0
    file.refresh_from_db()
    assert (file.state, file.error) == ("failed", "Conversion failed: it did not finish in time")
    assert stored_files(media_root) == []
    [warning] = warnings_about(file, caplog)
    assert file.error in warning.getMessage()
