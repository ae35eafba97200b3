"""Bounded media: decompression bombs are refused from their headers, probing and
ffmpeg run under a memory ceiling and a thread cap, and failures say what went
wrong in plain words.

The bombs are made here with the real ffmpeg (and zlib): a 200 KB Matroska
file with an 8000x8000 frame, a 2 MB PNG of 12000x12000 pixels. Memory is the
peak resident size of the process that handled them, measured from its start.
"""

from __future__ import annotations

import logging
import resource
import time
from pathlib import Path
from typing import Any

import pytest
from rest_framework.test import APIClient

from files import media
from files.images import NotAnImage, probe_image
from files.media import ConversionError, MediaLimits, UnsupportedMedia
from files.models import File
from tests.files.bombs import MB, black_png, convert_in_fresh_process, peak_rss_growth, video_bomb
from tests.files.conftest import JFK, Upload, ffmpeg, stored_files

# What handling a bomb may add to the handling process's peak resident memory.
BOUND = 150 * MB
# Limits that let the 8000x8000 frame through the size check, to reach the memory ceiling.
NO_FRAME_LIMIT = MediaLimits(max_width=100_000, max_height=100_000, max_pixels=10**10)


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bombs")
    paths = {
        "frames.mkv": video_bomb(folder / "frames.mkv", 8000, 8000),
        "pixels.png": black_png(folder / "pixels.png", 12000, 12000),
        "uhd.mkv": folder / "uhd.mkv",
        "one_pixel.mkv": folder / "one_pixel.mkv",
    }
    # Ten 4K frames: fine within the default memory limit, not within 500 MB.
    ffmpeg(
        "-f", "lavfi", "-i", "color=c=gray:s=3840x2160:r=5:d=2", "-f", "lavfi", "-i", "sine=d=2",
        "-c:v", "libx264", "-preset", "ultrafast", "-crf", "40", "-c:a", "aac", paths["uhd.mkv"],
    )  # fmt: skip
    # Probes as video; x264 cannot encode a frame of odd width.
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc=s=1x1:r=10:d=2", "-f", "lavfi", "-i", "sine=d=2",
        "-c:v", "ffv1", "-c:a", "flac", paths["one_pixel.mkv"],
    )  # fmt: skip
    return paths


# --------------------------------------------------------------------------
# Video frames: refused from the headers
# --------------------------------------------------------------------------


def test_a_video_bomb_is_refused_before_a_frame_is_decoded(bombs: dict[str, Path]) -> None:
    assert bombs["frames.mkv"].stat().st_size < 1 * MB
    with peak_rss_growth() as growth:
        with pytest.raises(UnsupportedMedia, match="40 megapixels"):
            media.probe_media(bombs["frames.mkv"])
    assert growth() < BOUND
    # What the probing child runs, here in this process: the refusal comes
    # before anything is decoded, so even the child stays small.
    with peak_rss_growth() as growth:
        with pytest.raises(UnsupportedMedia, match="40 megapixels"):
            media.probe_media_unbounded(bombs["frames.mkv"])
    assert growth() < BOUND


@pytest.mark.parametrize(
    ("limits", "refusal"),
    [
        (MediaLimits(max_width=7999), "video frames larger than 7999x8192 pixels are not accepted"),
        (MediaLimits(max_height=7999), "video frames larger than 8192x7999 pixels are not accepted"),
        (MediaLimits(max_pixels=50_000_000), "video frames of more than 50 megapixels are not accepted"),
    ],
)
def test_each_frame_limit_applies(bombs: dict[str, Path], limits: MediaLimits, refusal: str) -> None:
    with pytest.raises(UnsupportedMedia) as excinfo:
        media.probe_media(bombs["frames.mkv"], limits=limits)
    assert excinfo.value.reason == refusal


def test_a_frame_within_the_limits_is_video(bombs: dict[str, Path]) -> None:
    limits = MediaLimits(max_width=8000, max_height=8000, max_pixels=64_000_000)
    assert media.probe_media(bombs["frames.mkv"], limits=limits).kind == "video"


@pytest.mark.django_db
@pytest.mark.usefixtures("no_leftovers")
def test_a_video_bomb_upload_is_refused_and_nothing_is_stored(
    client_key: APIClient, upload: Upload, bombs: dict[str, Path], media_root: Path
) -> None:
    with peak_rss_growth() as growth:
        response = upload(client_key, bombs["frames.mkv"])
    assert growth() < BOUND
    assert response.json()["files"][0]["status"] == {
        "existed": False,
        "uploaded": False,
        "error": "unsupported_content_type",
    }
    assert not File.objects.exists()
    assert stored_files(media_root) == []


@pytest.mark.django_db
def test_the_frame_limits_are_settings(
    client_key: APIClient, upload: Upload, media_files: dict[str, Path], settings: Any
) -> None:
    settings.VIDEO_MAX_WIDTH = 63  # speech.mp4 is 64x48
    row = upload(client_key, media_files["speech.mp4"]).json()["files"][0]
    assert row["status"]["error"] == "unsupported_content_type"
    settings.VIDEO_MAX_WIDTH = 64
    assert upload(client_key, media_files["speech.mp4"]).json()["files"][0]["status"]["uploaded"] is True


# --------------------------------------------------------------------------
# Conversions: ffmpeg bounded
# --------------------------------------------------------------------------


def test_ffmpeg_refuses_oversized_frames_without_allocating_them(bombs: dict[str, Path], tmp_path: Path) -> None:
    # Had the upload check been passed (limits raised since), ffmpeg itself
    # refuses a frame over the pixel limit, before allocating it.
    error, peak = convert_in_fresh_process("convert_video_to_mp4", bombs["frames.mkv"], tmp_path / "out.mp4")
    assert error == "the video frames are larger than allowed"
    assert peak < BOUND
    # The sound alone needs no frame decoded at all.
    error, peak = convert_in_fresh_process("convert_to_wav", bombs["frames.mkv"], tmp_path / "out.wav")
    assert error is None
    assert peak < BOUND
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.wav"]


def test_a_conversion_over_the_memory_ceiling_fails_plainly(bombs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match="^conversion ran out of memory$"):
        media.convert_video_to_mp4(bombs["uhd.mkv"], tmp_path / "out.mp4", limits=MediaLimits(memory_limit_mb=500))
    assert list(tmp_path.iterdir()) == []
    assert media.convert_video_to_mp4(bombs["uhd.mkv"], tmp_path / "out.mp4").stat().st_size > 0


def test_a_failed_conversion_says_what_went_wrong_in_plain_words(
    bombs: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert media.probe_media(bombs["one_pixel.mkv"]).kind == "video"
    with caplog.at_level(logging.WARNING, logger="files.media"):
        with pytest.raises(ConversionError) as excinfo:
            media.convert_video_to_mp4(bombs["one_pixel.mkv"], tmp_path / "out.mp4")
    reason = excinfo.value.message
    assert reason == "the video could not be encoded"
    assert "[" not in reason and "@ 0x" not in reason
    # ffmpeg's own words go to the operator's log.
    assert any(r.levelno == logging.WARNING and "@ 0x" in r.getMessage() for r in caplog.records)


def test_no_conversion_error_carries_ffmpeg_internals(
    bombs: dict[str, Path], media_files: dict[str, Path], tmp_path: Path
) -> None:
    whole = media_files["speech.mp4"].read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(whole[: whole.find(b"moov")])  # cut before its index
    for convert, src in (
        (media.convert_to_wav, truncated),
        (media.convert_audio_to_mp3, bombs["pixels.png"]),
        (media.convert_video_to_mp4, JFK),
        (media.convert_video_to_mp4, bombs["frames.mkv"]),
    ):
        with pytest.raises(ConversionError) as excinfo:
            convert(src, tmp_path / "out")
        assert excinfo.value.message[0].islower(), excinfo.value.message
        assert "[" not in excinfo.value.message and "@ 0x" not in excinfo.value.message


# --------------------------------------------------------------------------
# Probing: a bounded child process
# --------------------------------------------------------------------------


def test_probing_over_the_memory_ceiling_is_refused(bombs: dict[str, Path]) -> None:
    # The child starts at the size of an interpreter with PyAV loaded; an
    # 8000x8000 frame (64 MB of luma alone) cannot fit in 48 MB more.
    status = media.call_bounded(Path.read_text, Path("/proc/self/status"))
    start_mb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmSize:")) // 1024
    limits = MediaLimits(
        max_width=NO_FRAME_LIMIT.max_width,
        max_height=NO_FRAME_LIMIT.max_height,
        max_pixels=NO_FRAME_LIMIT.max_pixels,
        probe_memory_limit_mb=start_mb + 48,
    )
    with peak_rss_growth() as growth:
        with pytest.raises(UnsupportedMedia, match="memory"):
            media.probe_media(bombs["frames.mkv"], limits=limits)
    assert growth() < BOUND
    # With room enough, the same file is video.
    assert media.probe_media(bombs["frames.mkv"], limits=NO_FRAME_LIMIT).kind == "video"


def test_a_bounded_call_runs_under_its_limit() -> None:
    soft, _ = media.call_bounded(resource.getrlimit, resource.RLIMIT_AS, memory_limit_mb=400)
    assert soft == 400 * MB
    with pytest.raises(MemoryError):
        media.call_bounded(bytearray, 1024 * MB, memory_limit_mb=400)


def test_a_bounded_call_is_ended_at_its_timeout() -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        media.call_bounded(time.sleep, 60, timeout=1)
    assert time.monotonic() - started < 30


def test_a_bounded_call_passes_on_only_the_errors_asked_for() -> None:
    with pytest.raises(ValueError, match="invalid literal"):
        media.call_bounded(int, "x", errors=(ValueError,))
    with pytest.raises(ChildProcessError, match="ValueError"):
        media.call_bounded(int, "x")


def test_probing_is_as_before_for_ordinary_files(media_files: dict[str, Path]) -> None:
    assert media.probe_media(JFK) == media.probe_media_unbounded(JFK)
    assert media.probe_media(media_files["speech.mp4"]).kind == "video"


# --------------------------------------------------------------------------
# Pictures: refused from the headers
# --------------------------------------------------------------------------


def test_a_picture_bomb_is_refused_before_it_is_decoded(bombs: dict[str, Path]) -> None:
    assert bombs["pixels.png"].stat().st_size < 3 * MB
    with peak_rss_growth() as growth:
        with pytest.raises(NotAnImage, match="larger than 4096x4096"):
            probe_image(bombs["pixels.png"])
    assert growth() < BOUND


@pytest.mark.parametrize("extension", ["png", "jpg", "gif", "webp"])
def test_picture_sizes_come_from_each_format_s_headers(tmp_path: Path, extension: str) -> None:
    wide = tmp_path / f"wide.{extension}"
    ffmpeg("-f", "lavfi", "-i", "color=red:s=4098x8", "-frames:v", "1", wide)
    with pytest.raises(NotAnImage, match="larger than 4096x4096"):
        probe_image(wide)
    assert probe_image(wide, max_side=4098).width == 4098
    small = tmp_path / f"small.{extension}"
    ffmpeg("-f", "lavfi", "-i", "color=red:s=34x26", "-frames:v", "1", small)
    info = probe_image(small)
    assert (info.width, info.height) == (34, 26)


def test_lossless_webp_size_comes_from_its_header(tmp_path: Path) -> None:
    picture = tmp_path / "lossless.webp"
    ffmpeg("-f", "lavfi", "-i", "color=red:s=4098x8", "-frames:v", "1", "-lossless", "1", picture)
    assert picture.read_bytes()[12:16] == b"VP8L"
    with pytest.raises(NotAnImage, match="larger than"):
        probe_image(picture)
    assert probe_image(picture, max_side=5000).width == 4098
