"""Tests for files.media: content probing and ffmpeg conversions.

Fixture media is generated with the real ffmpeg once per session; only
jfk.flac and hotwords.mp3 come from tests/data. No database, no settings.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import av
import pytest

from files import media
from files.media import ConversionError, EmptyMedia, MediaInfo, UnsupportedMedia
from tests.files.conftest import ffmpeg

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
JFK = DATA_DIR / "jfk.flac"
HOTWORDS = DATA_DIR / "hotwords.mp3"
PROJECT_ROOT = Path(__file__).resolve().parents[2]

MINIMAL_PDF = (
    b"%PDF-1.4\n"
    b"1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
    b"2 0 obj << /Type /Pages /Kids [3 0 R] /Count 1 >> endobj\n"
    b"3 0 obj << /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >> endobj\n"
    b"xref\n0 4\n0000000000 65535 f \n0000000009 00000 n \n"
    b"0000000058 00000 n \n0000000115 00000 n \n"
    b"trailer << /Size 4 /Root 1 0 R >>\nstartxref\n186\n%%EOF\n"
)


@pytest.fixture(scope="session")
def gen(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Generate every fixture file once; tests must treat them as read-only."""
    d = tmp_path_factory.mktemp("media")
    p = {name: d / name for name in (
        "video.mp4", "odd.mkv", "tone.wav", "three_ch.wav", "speech.ogg", "silence.mp3",
        "video_only.mkv", "doc.pdf", "random.mp3", "empty.mp3", "red.png", "red.jpg",
        "cover.mp3", "cover.flac", "cover.m4a", "still.mkv", "piped.mkv", "late_audio.mkv",
        "truncated.mp4", "header_only.wav",
    )}  # fmt: skip
    # 3 s of H.264 + AAC, speech as the sound track.
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc=s=64x48:r=10:d=3", "-t", "3", "-i", JFK,
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "96k", "-shortest", p["video.mp4"],
    )  # fmt: skip
    # Odd dimensions (ffv1 allows them) to exercise the even-size scaling.
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc=s=33x25:r=10:d=2", "-t", "2", "-i", JFK,
        "-c:v", "ffv1", "-c:a", "flac", "-shortest", p["odd.mkv"],
    )  # fmt: skip
    ffmpeg("-f", "lavfi", "-i", "sine=f=440:d=2", "-c:a", "pcm_s16le", p["tone.wav"])
    ffmpeg(
        "-f", "lavfi", "-i", "sine=f=440:d=1", "-filter_complex", "[0]asplit=3[a][b][c];[a][b][c]amerge=inputs=3",
        "-c:a", "pcm_s16le", p["three_ch.wav"],
    )  # fmt: skip
    ffmpeg("-t", "2", "-i", JFK, "-c:a", "libopus", "-b:a", "32k", p["speech.ogg"])
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=44100:cl=mono", "-t", "2", "-c:a", "libmp3lame", p["silence.mp3"])
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc=s=64x48:r=10:d=1", "-c:v", "libx264", "-preset", "ultrafast", p["video_only.mkv"]
    )
    p["doc.pdf"].write_bytes(MINIMAL_PDF)
    p["random.mp3"].write_bytes(random.Random(1).randbytes(200_000))
    p["empty.mp3"].write_bytes(b"")
    ffmpeg("-f", "lavfi", "-i", "color=red:s=16x16", "-frames:v", "1", p["red.png"])
    ffmpeg("-f", "lavfi", "-i", "color=red:s=16x16", "-frames:v", "1", p["red.jpg"])
    # Cover art, flagged as an attached picture the way taggers write it.
    for name, acodec in (("cover.mp3", "copy"), ("cover.flac", "flac"), ("cover.m4a", "aac")):
        ffmpeg(
            "-i", HOTWORDS, "-i", p["red.png"], "-map", "0:a", "-map", "1:v", "-c:a", acodec,
            "-c:v", "png", "-disposition:v:0", "attached_pic", p[name],
        )  # fmt: skip
    # A single PNG frame as an ordinary (unflagged) video track.
    ffmpeg(
        "-i", HOTWORDS, "-i", p["red.png"], "-map", "0:a", "-map", "1:v", "-c:a", "copy", "-c:v", "png",
        p["still.mkv"],
    )  # fmt: skip
    # Matroska written to a pipe has no duration in its header.
    with p["piped.mkv"].open("wb") as out:
        subprocess.run(
            [media.ffmpeg_binary(), "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "sine=f=440:d=2",
             "-c:a", "flac", "-f", "matroska", "pipe:1"],
            stdout=out, check=True, timeout=60,
        )  # fmt: skip
    # Two seconds of video packets before the first audio packet.
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc=s=64x48:r=25:d=3", "-itsoffset", "2", "-t", "1", "-i", JFK,
        "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "flac", p["late_audio.mkv"],
    )  # fmt: skip
    # An MP4 cut before its index (moov is at the end without faststart).
    whole = p["video.mp4"].read_bytes()
    assert whole.find(b"moov") > whole.find(b"mdat"), "test assumes moov after mdat"
    p["truncated.mp4"].write_bytes(whole[: len(whole) // 2])
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-frames:a", "0", "-c:a", "pcm_s16le", p["header_only.wav"])
    return p


def audio_stream_info(path: Path) -> tuple[str, int, int, int | None, float]:
    """(codec, sample rate, channels, bit rate, duration) of the first audio stream."""
    with av.open(str(path)) as c:
        a = c.streams.audio[0]
        ctx = a.codec_context
        return (
            ctx.codec.canonical_name,
            ctx.sample_rate,
            ctx.channels,
            a.bit_rate or ctx.bit_rate,
            c.duration / av.time_base,
        )


def listing(directory: Path) -> set[str]:
    return {entry.name for entry in directory.iterdir()}


# --------------------------------------------------------------------------
# ffmpeg_binary
# --------------------------------------------------------------------------


@pytest.fixture
def fresh_binary_cache() -> Iterator[None]:
    media.ffmpeg_binary.cache_clear()
    yield
    media.ffmpeg_binary.cache_clear()


@pytest.mark.usefixtures("fresh_binary_cache")
class TestFfmpegBinary:
    def test_env_var_overrides_everything(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("FFMPEG_BINARY", "/opt/custom/ffmpeg")
        monkeypatch.setattr(media.shutil, "which", lambda name: "/usr/bin/ffmpeg")
        assert media.ffmpeg_binary() == "/opt/custom/ffmpeg"

    def test_system_ffmpeg_preferred_over_bundled(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("FFMPEG_BINARY", raising=False)
        monkeypatch.setattr(media.shutil, "which", lambda name: "/usr/bin/ffmpeg")
        assert media.ffmpeg_binary() == "/usr/bin/ffmpeg"

    def test_falls_back_to_imageio_ffmpeg_and_caches(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import imageio_ffmpeg

        monkeypatch.delenv("FFMPEG_BINARY", raising=False)
        monkeypatch.setattr(media.shutil, "which", lambda name: None)
        first = media.ffmpeg_binary()
        assert first == imageio_ffmpeg.get_ffmpeg_exe()
        assert os.access(first, os.X_OK)
        monkeypatch.setenv("FFMPEG_BINARY", "/changed")
        assert media.ffmpeg_binary() == first


def test_module_imports_without_django_settings() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    code = "import sys, files.media; assert 'django' not in sys.modules, 'media imported django'"
    subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, env=env, check=True, timeout=60)


# --------------------------------------------------------------------------
# probe_media: accepted content
# --------------------------------------------------------------------------


def test_probe_jfk_flac() -> None:
    info = media.probe_media(JFK)
    assert info == MediaInfo(kind="audio", duration=pytest.approx(11.0, abs=0.1), format_name="flac",
                             audio_codec="flac", video_codec=None)  # fmt: skip


def test_probe_mp3() -> None:
    info = media.probe_media(HOTWORDS)
    assert (info.kind, info.format_name, info.audio_codec) == ("audio", "mp3", "mp3")
    assert info.duration == pytest.approx(4.0, abs=0.1)


def test_probe_video(gen: dict[str, Path]) -> None:
    info = media.probe_media(gen["video.mp4"])
    assert info.kind == "video"
    assert (info.audio_codec, info.video_codec) == ("aac", "h264")
    assert "mp4" in info.format_name.split(",")
    assert info.duration == pytest.approx(3.0, abs=0.15)


@pytest.mark.parametrize(
    ("name", "kind", "codec", "duration"),
    [
        ("tone.wav", "audio", "pcm_s16le", 2.0),
        ("speech.ogg", "audio", "opus", 2.0),
        ("silence.mp3", "audio", "mp3", 2.0),  # silence is valid audio
        ("odd.mkv", "video", "flac", 2.0),
    ],
)
def test_probe_generated(gen: dict[str, Path], name: str, kind: str, codec: str, duration: float) -> None:
    info = media.probe_media(gen[name])
    assert (info.kind, info.audio_codec) == (kind, codec)
    assert info.duration == pytest.approx(duration, abs=0.1)


@pytest.mark.parametrize("name", ["cover.mp3", "cover.flac", "cover.m4a", "still.mkv"])
def test_cover_art_and_still_pictures_are_audio(gen: dict[str, Path], name: str) -> None:
    with av.open(str(gen[name])) as c:
        assert c.streams.video, "fixture should carry a picture stream"
    info = media.probe_media(gen[name])
    assert info.kind == "audio"
    assert info.video_codec is None
    assert info.duration == pytest.approx(4.0, abs=0.1)


def test_kind_comes_from_content_not_file_name(gen: dict[str, Path], tmp_path: Path) -> None:
    video_as_mp3 = tmp_path / "song.mp3"
    video_as_mp3.write_bytes(gen["video.mp4"].read_bytes())
    wav_as_mp4 = tmp_path / "movie.mp4"
    wav_as_mp4.write_bytes(gen["tone.wav"].read_bytes())
    no_name = tmp_path / "upload"
    no_name.write_bytes(JFK.read_bytes())
    assert media.probe_media(video_as_mp3).kind == "video"
    assert media.probe_media(wav_as_mp4).kind == "audio"
    assert media.probe_media(no_name).format_name == "flac"


def test_duration_without_header_falls_back_to_demuxing(gen: dict[str, Path]) -> None:
    with av.open(str(gen["piped.mkv"])) as c:
        assert c.duration is None and c.streams.audio[0].duration is None
    assert media.probe_media(gen["piped.mkv"]).duration == pytest.approx(2.0, abs=0.1)


def test_awkward_path_characters(tmp_path: Path) -> None:
    # Would be read as a protocol / an option without the file: URL.
    weird = tmp_path / "-concat:x|y.flac"
    weird.write_bytes(JFK.read_bytes())
    assert media.probe_media(weird).kind == "audio"
    out = media.convert_to_wav(weird, tmp_path / "-out:put.wav")
    assert audio_stream_info(out)[0] == "pcm_s16le"


# --------------------------------------------------------------------------
# probe_media: rejected content
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("video_only.mkv", "no audio stream"),
        ("doc.pdf", "unrecognised"),
        ("random.mp3", "could not be decoded"),
        ("red.png", "unrecognised"),
        ("red.jpg", "unrecognised"),
        ("truncated.mp4", "unrecognised"),
        ("header_only.wav", ""),
    ],
)
def test_unsupported(gen: dict[str, Path], name: str, reason: str) -> None:
    with pytest.raises(UnsupportedMedia) as excinfo:
        media.probe_media(gen[name])
    assert not isinstance(excinfo.value, EmptyMedia)
    assert reason in excinfo.value.reason
    assert str(excinfo.value) == excinfo.value.reason


def test_random_bytes_are_recognised_by_the_demuxer_but_rejected(gen: dict[str, Path]) -> None:
    # The point of decoding: ffmpeg's mp3 demuxer happily "opens" noise.
    with av.open(str(gen["random.mp3"])) as c:
        assert c.format.name == "mp3" and c.streams.audio
    with pytest.raises(UnsupportedMedia):
        media.probe_media(gen["random.mp3"])


def test_empty_file(gen: dict[str, Path]) -> None:
    with pytest.raises(EmptyMedia, match="empty"):
        media.probe_media(gen["empty.mp3"])


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        media.probe_media(tmp_path / "nope.mp3")


def test_playlists_are_not_followed(tmp_path: Path) -> None:
    # An uploaded playlist must not make ffmpeg read other files on the server.
    target = tmp_path / "someone_elses.flac"
    target.write_bytes(JFK.read_bytes())
    playlist = tmp_path / "upload.m3u8"
    playlist.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:11\n#EXTINF:11,\n{target}\n#EXT-X-ENDLIST\n")
    concat = tmp_path / "upload.txt"
    concat.write_text(f"ffconcat version 1.0\nfile '{target.name}'\n")
    for upload in (playlist, concat):
        with pytest.raises(UnsupportedMedia):
            media.probe_media(upload)
        with pytest.raises(ConversionError):
            media.convert_to_wav(upload, tmp_path / "leak.wav")
    assert not (tmp_path / "leak.wav").exists()


def test_probe_work_is_bounded(gen: dict[str, Path]) -> None:
    assert media.probe_media(gen["late_audio.mkv"]).kind == "video"
    with pytest.raises(UnsupportedMedia, match="could not be decoded"):
        media.probe_media(gen["late_audio.mkv"], max_packets=20)


# --------------------------------------------------------------------------
# Conversions
# --------------------------------------------------------------------------


def test_helpers() -> None:
    assert media.CONTENT_TYPES == {"audio": "audio/mpeg", "video": "video/mp4"}
    assert media.EXTENSIONS == {"audio": ".mp3", "video": ".mp4"}


def test_convert_audio_to_mp3(tmp_path: Path) -> None:
    dst = tmp_path / "out.mp3"
    assert media.convert_audio_to_mp3(JFK, dst) == dst
    codec, rate, channels, bit_rate, duration = audio_stream_info(dst)
    assert (codec, rate, channels) == ("mp3", 44100, 2)
    assert bit_rate == pytest.approx(192_000, rel=0.05)
    assert duration == pytest.approx(11.0, abs=0.15)
    assert listing(tmp_path) == {"out.mp3"}


def test_mp3_keeps_mono_mono(gen: dict[str, Path], tmp_path: Path) -> None:
    assert audio_stream_info(gen["tone.wav"])[2] == 1
    dst = media.convert_audio_to_mp3(gen["tone.wav"], tmp_path / "mono.mp3")
    codec, rate, channels, bit_rate, _ = audio_stream_info(dst)
    assert (codec, rate, channels) == ("mp3", 44100, 1)
    assert bit_rate == pytest.approx(192_000, rel=0.05)


def test_mp3_downmixes_to_stereo_and_drops_cover_art(gen: dict[str, Path], tmp_path: Path) -> None:
    assert audio_stream_info(gen["three_ch.wav"])[2] == 3
    dst = media.convert_audio_to_mp3(gen["three_ch.wav"], tmp_path / "a.mp3")
    assert audio_stream_info(dst)[2] == 2
    dst = media.convert_audio_to_mp3(gen["cover.mp3"], tmp_path / "b.mp3")
    with av.open(str(dst)) as c:
        assert not c.streams.video
    assert media.probe_media(dst).kind == "audio"


def test_mp3_from_video_keeps_only_audio(gen: dict[str, Path], tmp_path: Path) -> None:
    dst = media.convert_audio_to_mp3(gen["video.mp4"], tmp_path / "v.mp3")
    with av.open(str(dst)) as c:
        assert [s.type for s in c.streams] == ["audio"]


def test_convert_to_wav(gen: dict[str, Path], tmp_path: Path) -> None:
    for src in (HOTWORDS, gen["video.mp4"], gen["speech.ogg"]):
        dst = media.convert_to_wav(src, tmp_path / "out.wav")  # replaces the previous one
        codec, rate, channels, _, duration = audio_stream_info(dst)
        assert (codec, rate, channels) == ("pcm_s16le", 16000, 1)
        assert duration == pytest.approx(media.probe_media(src).duration, abs=0.1)
    assert listing(tmp_path) == {"out.wav"}


def test_convert_video_to_mp4(gen: dict[str, Path], tmp_path: Path) -> None:
    dst = media.convert_video_to_mp4(gen["odd.mkv"], tmp_path / "out.mp4")
    with av.open(str(dst)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert (v.codec_context.codec.canonical_name, a.codec_context.codec.canonical_name) == ("h264", "aac")
        assert (v.codec_context.width, v.codec_context.height) == (32, 24)  # 33x25 rounded down to even
        assert v.codec_context.pix_fmt == "yuv420p"
        assert 150_000 <= (a.bit_rate or 0) <= 230_000
        assert len(c.streams) == 2
    head = dst.read_bytes()
    assert head.find(b"moov") < head.find(b"mdat"), "+faststart puts the index first"
    info = media.probe_media(dst)
    assert info.kind == "video"
    assert info.duration == pytest.approx(2.0, abs=0.15)
    assert listing(tmp_path) == {"out.mp4"}


def test_failed_conversion_leaves_nothing_behind(gen: dict[str, Path], tmp_path: Path) -> None:
    for convert, name in (
        (media.convert_audio_to_mp3, "x.mp3"),
        (media.convert_to_wav, "x.wav"),
        (media.convert_video_to_mp4, "x.mp4"),
    ):
        with pytest.raises(ConversionError):
            convert(gen["random.mp3"], tmp_path / name)
    # No audio to map.
    with pytest.raises(ConversionError, match="^the file has no audio stream$"):
        media.convert_audio_to_mp3(gen["video_only.mkv"], tmp_path / "y.mp3")
    assert listing(tmp_path) == set()


def test_failed_conversion_keeps_existing_destination(gen: dict[str, Path], tmp_path: Path) -> None:
    dst = tmp_path / "keep.wav"
    dst.write_bytes(b"previous")
    with pytest.raises(ConversionError):
        media.convert_to_wav(gen["doc.pdf"], dst)
    assert dst.read_bytes() == b"previous"
    assert listing(tmp_path) == {"keep.wav"}


def test_conversion_timeout(tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match="^conversion timed out$"):
        media.convert_to_wav(JFK, tmp_path / "slow.wav", timeout=0.001)
    assert listing(tmp_path) == set()


def test_missing_ffmpeg_is_a_conversion_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_binary_cache: None
) -> None:
    monkeypatch.setenv("FFMPEG_BINARY", str(tmp_path / "no-such-ffmpeg"))
    with pytest.raises(ConversionError, match="cannot run ffmpeg"):
        media.convert_to_wav(JFK, tmp_path / "out.wav")
    assert listing(tmp_path) == set()
