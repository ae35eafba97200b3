"""A file's duration is the decoded audio's: measured from the WAV, whatever the upload's header claims.

The liar is made here: speech in Matroska whose Segment Info says 1 s (tests/files/liars.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rest_framework.test import APIClient

from files import media
from files.models import File
from files.services import convert_time_limits, convert_wav_time_limits
from files.signals import file_audio_ready
from files.tasks import file_convert_audio_task, file_convert_media_task
from tests.files.conftest import JFK, Upload, stored_files
from tests.files.liars import lying_matroska, speech_matroska

pytestmark = pytest.mark.django_db

REAL_SECONDS = 33.0


@pytest.fixture(scope="module")
def liar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """33 s of speech whose header claims 1 s."""
    return lying_matroska(tmp_path_factory.mktemp("liar"), real=REAL_SECONDS, claimed=1.0)


@pytest.fixture
def time_limits_run(monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[Any, Any]]:
    """Task name -> (soft, hard) time limits its message was sent with.

    Eager Celery keeps no trace of them, so each conversion task's ``apply_async`` is
    wrapped: it records them and sends on as before.
    """
    seen: dict[str, tuple[Any, Any]] = {}
    for task in (file_convert_audio_task, file_convert_media_task):

        def send(*args: Any, _task: Any = task, _send: Any = task.apply_async, **options: Any) -> Any:
            seen[_task.name] = (options.get("soft_time_limit"), options.get("time_limit"))
            return _send(*args, **options)

        monkeypatch.setattr(task, "apply_async", send)
    return seen


def test_the_liar_really_lies(liar: Path, tmp_path: Path) -> None:
    # What the upload sees: PyAV's probe believes the header.
    assert media.probe_media(liar).duration == pytest.approx(1.0, abs=0.01)
    # What is there: every second of sound decodes.
    wav = media.convert_to_wav(liar, tmp_path / "all.wav")
    assert media.wav_duration(wav) == pytest.approx(REAL_SECONDS, abs=0.05)


def test_wav_duration_counts_the_samples(tmp_path: Path) -> None:
    wav = media.convert_to_wav(JFK, tmp_path / "jfk.wav")
    assert media.wav_duration(wav) == pytest.approx(11.0, abs=0.01)
    assert media.wav_duration(wav) == pytest.approx((wav.stat().st_size - 44) / 32000, abs=0.01)
    with pytest.raises(media.ConversionError):
        media.wav_duration(JFK)


def test_the_wav_stops_at_max_seconds(liar: Path, tmp_path: Path) -> None:
    wav = media.convert_to_wav(liar, tmp_path / "cut.wav", max_seconds=5)
    assert media.wav_duration(wav) == pytest.approx(5.0, abs=0.01)


def test_conversion_records_the_duration_of_the_wav(
    client_key: APIClient, upload: Upload, liar: Path, media_root: Path
) -> None:
    row = upload(client_key, liar).json()["files"][0]
    file = File.objects.get(id=row["uuid"])
    assert file.state == "ready"
    assert file.duration == pytest.approx(REAL_SECONDS, abs=0.05)
    [listed] = client_key.get("/api/v1/file").json()["files"]
    assert listed["duration"] == pytest.approx(REAL_SECONDS, abs=0.05)


def test_the_duration_is_recorded_with_the_wav_before_file_audio_ready(
    client_key: APIClient, upload: Upload, liar: Path
) -> None:
    seen: list[tuple[str, float]] = []

    def audio_ready(sender: Any, file_id: Any, **kwargs: Any) -> None:
        file = File.objects.get(id=file_id)
        seen.append((file.wav_name, file.duration))

    file_audio_ready.connect(audio_ready, dispatch_uid="test-duration-with-wav")
    try:
        upload(client_key, liar)
    finally:
        file_audio_ready.disconnect(dispatch_uid="test-duration-with-wav")
    [(wav_name, duration)] = seen
    assert wav_name and duration == pytest.approx(REAL_SECONDS, abs=0.05)


def test_an_honest_file_keeps_its_duration(client_key: APIClient, upload: Upload, tmp_path: Path) -> None:
    honest = speech_matroska(tmp_path / "honest.mkv", 13)
    row = upload(client_key, honest).json()["files"][0]
    assert File.objects.get(id=row["uuid"]).duration == pytest.approx(13.0, abs=0.05)


def test_phase_one_is_timed_for_the_longest_audio_and_phase_two_for_the_measured(
    client_key: APIClient, upload: Upload, liar: Path, settings: Any, time_limits_run: dict
) -> None:
    settings.MAX_MEDIA_DURATION_SECONDS = 7200
    # 120 s + 0.1 s per second of the longest WAV (7201 s): not the header's 1 s.
    assert convert_wav_time_limits() == (840, 900)
    upload(client_key, liar)
    assert time_limits_run["files.convert_audio"] == (840, 900)
    assert time_limits_run["files.convert_media"] == convert_time_limits(kind="audio", duration=REAL_SECONDS)
    assert time_limits_run["files.convert_media"] != convert_time_limits(kind="audio", duration=1.0)


# --- MAX_MEDIA_DURATION_SECONDS --------------------------------------------------------


def test_an_upload_longer_than_the_maximum_is_refused(
    client_key: APIClient, upload: Upload, settings: Any, media_root: Path, no_leftovers: None
) -> None:
    settings.MAX_MEDIA_DURATION_SECONDS = 10
    response = upload(client_key, JFK)  # 11 s
    assert response.status_code == 200
    assert response.json()["files"] == [
        {
            "message": "File too long. Maximum duration is 10 seconds",
            "filename": "jfk.flac",
            "status": {"existed": False, "uploaded": False, "error": "file_too_long"},
        }
    ]
    assert not File.objects.exists()
    assert stored_files(media_root) == []


def test_a_liar_longer_than_the_maximum_fails_in_the_wav_conversion(
    client_key: APIClient, upload: Upload, liar: Path, settings: Any, media_root: Path
) -> None:
    settings.MAX_MEDIA_DURATION_SECONDS = 20
    row = upload(client_key, liar).json()["files"][0]
    # The header's 1 s passed the upload's check; the WAV (cut by ffmpeg at 21 s) did not.
    assert row["status"] == {"existed": False, "uploaded": True}
    file = File.objects.get(id=row["uuid"])
    assert (file.state, file.error) == (
        "failed",
        "Conversion failed: the audio is longer than the maximum of 20 seconds",
    )
    assert (file.wav_name, file.media_name, file.original_name) == ("", "", "")
    assert stored_files(media_root) == []
