"""Media layer: content-based probing (PyAV) and ffmpeg conversions.

Everything here works on file paths. Probing decodes at most a bounded number
of packets and never reads a whole file into Python memory; conversions run
ffmpeg as a subprocess so the media bytes never pass through Python at all.

This module deliberately has no Django dependency so it can be used (and
tested) from Celery workers, management commands or plain scripts.
"""

from __future__ import annotations

import collections
import functools
import math
import os
import secrets
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

import av
from av.stream import Disposition

__all__ = [
    "ALLOWED_DEMUXERS",
    "CONTENT_TYPES",
    "EXTENSIONS",
    "ConversionError",
    "EmptyMedia",
    "MediaError",
    "MediaInfo",
    "MediaKind",
    "UnsupportedMedia",
    "convert_audio_to_mp3",
    "convert_to_wav",
    "convert_video_to_mp4",
    "ffmpeg_binary",
    "probe_media",
]

MediaKind = Literal["audio", "video"]

#: MIME type of the canonical stored rendition of each kind.
CONTENT_TYPES: dict[str, str] = {"audio": "audio/mpeg", "video": "video/mp4"}
#: File extension of the canonical stored rendition of each kind.
EXTENSIONS: dict[str, str] = {"audio": ".mp3", "video": ".mp4"}

#: Demuxers we are willing to open, for both PyAV and the ffmpeg CLI.
#: An allow-list rather than ffmpeg's full auto-detection because "playlist"
#: demuxers (hls, concat, dash, image2 patterns, ...) make ffmpeg open *other*
#: files or URLs named inside an uploaded file, which would let one user read
#: another user's media (or the server's files) through a crafted upload.
#: Names are matched by ffmpeg against each alias of a demuxer, so "mov" also
#: covers mp4/m4a/3gp and "matroska" covers webm.
ALLOWED_DEMUXERS: frozenset[str] = frozenset(
    {
        "aac", "ac3", "aiff", "amr", "amrnb", "amrwb", "ape", "asf", "au",
        "avi", "caf", "dsf", "dts", "dtshd", "dv", "eac3", "flac", "flv",
        "gsm", "loas", "matroska", "mlp", "mov", "mp3", "mpc", "mpc8", "mpeg",
        "mpegts", "nut", "ogg", "oma", "qcp", "rm", "shn", "sox", "tak",
        "truehd", "tta", "voc", "w64", "wav", "wv", "xwma",
    }
)  # fmt: skip
_FORMAT_WHITELIST = ",".join(sorted(ALLOWED_DEMUXERS))

# Codecs that normally carry a single still picture. Containers usually flag
# cover art with the attached_pic disposition, but not always, so a stream in
# one of these codecs only counts as video once it yields a second frame.
_STILL_IMAGE_CODECS = frozenset({"bmp", "gif", "jpeg2000", "jpegls", "mjpeg", "png", "tiff", "webp"})

# Probing budget. 500 packets is ~13 s of MP3 or a few seconds of typical
# video, far more than any sane file needs before its first audio frame, yet
# it bounds the time spent on hostile input.
DEFAULT_MAX_PROBE_PACKETS = 500
# Byte budget on top of the packet budget, because a packet of raw video can
# be tens of megabytes.
DEFAULT_MAX_PROBE_BYTES = 256 * 1024 * 1024
# Stop looking at audio once this many frames decoded: that is conclusive.
_CONCLUSIVE_AUDIO_FRAMES = 8

# Only the tail of ffmpeg's stderr is kept: a corrupt input can make it log
# one line per packet for the whole file.
_STDERR_TAIL_BYTES = 4096


class MediaError(Exception):
    """Base class for every error raised by this module."""


class UnsupportedMedia(MediaError):
    """The file is not audio or video content that we can process."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class EmptyMedia(UnsupportedMedia):
    """The file has zero bytes."""

    def __init__(self, reason: str = "file is empty") -> None:
        super().__init__(reason)


class ConversionError(MediaError):
    """ffmpeg could not convert the file; ``str(exc)`` is a short reason."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class MediaInfo:
    """What :func:`probe_media` learned about a file."""

    kind: MediaKind
    #: Seconds, always > 0.
    duration: float
    #: ffmpeg demuxer name, e.g. ``"mp3"`` or ``"mov,mp4,m4a,3gp,3g2,mj2"``.
    format_name: str
    #: ffmpeg codec name of the first audio stream, e.g. ``"aac"``.
    audio_codec: str
    #: Codec of the first real (non cover-art) video stream, if any.
    video_codec: str | None


# --------------------------------------------------------------------------
# ffmpeg binary
# --------------------------------------------------------------------------


@functools.cache
def ffmpeg_binary() -> str:
    """Return the ffmpeg executable to run.

    Order: the ``FFMPEG_BINARY`` environment variable, then an ``ffmpeg`` on
    ``PATH``, then the static build bundled with ``imageio-ffmpeg``. The
    result is cached for the life of the process; call
    ``ffmpeg_binary.cache_clear()`` after changing the environment.
    """
    override = os.environ.get("FFMPEG_BINARY")
    if override:
        return override
    system = shutil.which("ffmpeg")
    if system:
        return system
    # Imported lazily: it is only needed when there is no system ffmpeg.
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


# --------------------------------------------------------------------------
# Probing
# --------------------------------------------------------------------------


def _file_url(path: str | os.PathLike[str]) -> str:
    # An explicit file: URL stops ffmpeg from reading a colon in the name as
    # a protocol ("concat:", "http:") and a leading dash as an option.
    return "file:" + os.path.abspath(os.fspath(path))


def _open_input(path: str | os.PathLike[str]) -> av.container.InputContainer:
    return av.open(
        _file_url(path),
        mode="r",
        container_options={
            "format_whitelist": _FORMAT_WHITELIST,
            "protocol_whitelist": "file",
        },
        metadata_errors="replace",
    )


def _codec_name(stream: av.stream.Stream) -> str | None:
    ctx = stream.codec_context
    if ctx is None:
        return None
    # canonical_name is the codec ("mp3"), name is the decoder ("mp3float").
    return ctx.codec.canonical_name


def _video_candidate(
    container: av.container.InputContainer,
) -> av.video.stream.VideoStream | None:
    # Mirrors ffmpeg's "-map 0:V:0" used by convert_video_to_mp4: the first
    # video stream that is not an attached picture.
    for stream in container.streams.video:
        if Disposition.attached_pic in stream.disposition:
            continue
        if stream.codec_context is None:
            return None
        return stream
    return None


@dataclass(slots=True)
class _ScanResult:
    audio_frames: int = 0
    audio_errors: int = 0
    video_frames: int = 0


def _scan(
    container: av.container.InputContainer,
    audio: av.audio.stream.AudioStream,
    video: av.video.stream.VideoStream | None,
    video_frames_needed: int,
    max_packets: int,
    max_bytes: int,
) -> _ScanResult:
    """Decode the start of the file until audio and video are proven (or not)."""
    result = _ScanResult()
    streams = [audio] if video is None else [audio, video]
    packets = 0
    read_bytes = 0
    audio_done = False
    video_done = video is None
    try:
        for packet in container.demux(streams):
            # Flush packets (size 0) at EOF are still decoded: they release
            # frames a decoder was holding back, which matters for tiny files.
            packets += 1
            read_bytes += packet.size
            if packet.stream_index == audio.index:
                if not audio_done:
                    try:
                        result.audio_frames += len(packet.decode())
                    except av.FFmpegError:
                        result.audio_errors += 1
                    audio_done = result.audio_frames >= _CONCLUSIVE_AUDIO_FRAMES
            elif not video_done:
                try:
                    result.video_frames += len(packet.decode())
                except av.FFmpegError:
                    pass
                video_done = result.video_frames >= video_frames_needed
            if (audio_done and video_done) or packets >= max_packets or read_bytes >= max_bytes:
                break
    except av.FFmpegError:
        # A demuxer error mid-file ends the scan; judge on what we have.
        pass
    return result


def _duration(
    container: av.container.InputContainer,
    audio: av.audio.stream.AudioStream,
    video: av.video.stream.VideoStream | None,
) -> float:
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    for stream in (audio, video):
        if stream is not None and stream.duration and stream.time_base:
            return float(stream.duration * stream.time_base)
    # Last resort (e.g. Matroska written to a pipe has no duration header):
    # demux the audio stream to the end. Demuxing without decoding is cheap
    # and each packet is dropped immediately, so memory stays flat.
    container.seek(0)
    end = None
    for packet in container.demux(audio):
        ts = packet.pts if packet.pts is not None else packet.dts
        if ts is None:
            continue
        ts += packet.duration or 0
        end = ts if end is None else max(end, ts)
    if end is None or audio.time_base is None:
        return 0.0
    start = audio.start_time or 0
    return float((end - start) * audio.time_base)


def probe_media(
    path: str | os.PathLike[str],
    *,
    max_packets: int = DEFAULT_MAX_PROBE_PACKETS,
    max_bytes: int = DEFAULT_MAX_PROBE_BYTES,
) -> MediaInfo:
    """Identify ``path`` by its content and return a :class:`MediaInfo`.

    The file name is never consulted. The file must contain an audio stream
    whose first frames actually decode; it is ``"video"`` when it also has a
    video stream that decodes and is not cover art. At most ``max_packets``
    packets / ``max_bytes`` bytes are demuxed while looking for decodable
    frames.

    Raises :class:`EmptyMedia` for a zero-byte file, :class:`UnsupportedMedia`
    for anything else that is not usable media (documents, images, random
    bytes, video without sound, zero duration, unsupported containers) and
    ``FileNotFoundError`` if ``path`` does not exist.
    """
    # stat() first: it raises FileNotFoundError for a missing path (a caller
    # bug, not bad content) and catches the empty file before ffmpeg does.
    if os.stat(path).st_size == 0:
        raise EmptyMedia()
    try:
        container = _open_input(path)
    except av.FFmpegError as exc:
        raise UnsupportedMedia("unrecognised or unsupported file format") from exc
    with container:
        if not container.streams.audio:
            raise UnsupportedMedia("no audio stream")
        audio = container.streams.audio[0]
        audio_codec = _codec_name(audio)
        if audio_codec is None:
            raise UnsupportedMedia("audio codec is not supported")

        video = _video_candidate(container)
        needed = 2 if video is not None and _codec_name(video) in _STILL_IMAGE_CODECS else 1
        scan = _scan(container, audio, video, needed, max_packets, max_bytes)
        # Garbage that a lenient demuxer (mp3 in particular) accepts can still
        # decode into the odd frame by chance; real audio decodes far more
        # often than it fails, or at least decodes plenty of frames.
        if scan.audio_frames == 0 or (
            scan.audio_frames < _CONCLUSIVE_AUDIO_FRAMES and scan.audio_frames < scan.audio_errors
        ):
            raise UnsupportedMedia("audio stream could not be decoded")
        if scan.video_frames < needed:
            # A still image or an undecodable picture track: treat as audio,
            # which is also what the audio conversion will extract.
            video = None

        try:
            duration = _duration(container, audio, video)
        except av.FFmpegError as exc:
            raise UnsupportedMedia("could not determine duration") from exc
        if not math.isfinite(duration) or duration <= 0:
            raise UnsupportedMedia("media has zero duration")

        return MediaInfo(
            kind="video" if video is not None else "audio",
            duration=duration,
            format_name=container.format.name,
            audio_codec=audio_codec,
            video_codec=_codec_name(video) if video is not None else None,
        )


# --------------------------------------------------------------------------
# Conversions
# --------------------------------------------------------------------------


def _drain_tail(pipe: IO[bytes], tail: collections.deque[bytes]) -> None:
    # Runs in a thread so ffmpeg never blocks on a full stderr pipe, while
    # memory stays bounded by the deque's length.
    for chunk in iter(lambda: pipe.read(1024), b""):
        tail.append(chunk)
    pipe.close()


def _last_line(stderr_tail: bytes) -> str:
    lines = [ln.strip() for ln in stderr_tail.decode("utf-8", "replace").splitlines()]
    lines = [ln for ln in lines if ln]
    return lines[-1][:300] if lines else "unknown error"


def _partial_path(dst: Path) -> Path:
    # Hidden, unique sibling: same filesystem so os.replace is atomic, and
    # concurrent conversions to the same dst cannot clobber each other. The
    # file is left for ffmpeg to create so it gets normal umask permissions.
    return dst.with_name(f".{dst.name}.{secrets.token_hex(6)}.part")


def _run_ffmpeg(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    output_args: list[str],
    timeout: float | None,
) -> Path:
    dst_path = Path(dst)
    part = _partial_path(dst_path)
    argv = [
        ffmpeg_binary(),
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-protocol_whitelist",
        "file",
        "-format_whitelist",
        _FORMAT_WHITELIST,
        "-i",
        _file_url(src),
        *output_args,
        _file_url(part),
    ]
    tail: collections.deque[bytes] = collections.deque(maxlen=_STDERR_TAIL_BYTES // 1024)
    try:
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        except OSError as exc:
            raise ConversionError(f"cannot run ffmpeg: {exc.strerror or exc}") from exc
        assert proc.stderr is not None
        reader = threading.Thread(target=_drain_tail, args=(proc.stderr, tail), daemon=True)
        reader.start()
        try:
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise ConversionError("conversion timed out") from None
        except BaseException:
            # KeyboardInterrupt, Celery's SoftTimeLimitExceeded, ...: never
            # leave an orphaned ffmpeg behind.
            proc.kill()
            proc.wait()
            raise
        finally:
            reader.join(timeout=5)
        if returncode != 0:
            raise ConversionError(f"ffmpeg failed: {_last_line(b''.join(tail))}")
        if not part.exists() or part.stat().st_size == 0:
            raise ConversionError("ffmpeg produced no output")
        os.replace(part, dst_path)
        return dst_path
    finally:
        # After a successful replace the partial no longer exists.
        part.unlink(missing_ok=True)


def _audio_channels(src: str | os.PathLike[str]) -> int | None:
    # Header-only look (no decoding) to cap the channel count: ffmpeg has no
    # "at most N channels" option, and its aformat negotiation turns mono into
    # stereo. None lets ffmpeg itself report a broken input.
    try:
        with _open_input(src) as container:
            if container.streams.audio:
                channels = container.streams.audio[0].codec_context.channels
                return channels or None
    except (av.FFmpegError, AttributeError):
        pass
    return None


def convert_audio_to_mp3(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    timeout: float | None = None,
) -> Path:
    """Convert the first audio stream of ``src`` to ``dst`` as MP3.

    libmp3lame, 192 kbit/s CBR, 44.1 kHz, mono stays mono and anything with
    more than two channels is downmixed to stereo. Video and cover art are
    dropped. ``dst`` is replaced atomically; nothing is left behind on error.
    Raises :class:`ConversionError` (also on ``timeout`` seconds elapsed).
    """
    channels = _audio_channels(src)
    args = ["-map", "0:a:0", "-vn", "-sn", "-dn"]
    args += ["-c:a", "libmp3lame", "-b:a", "192k", "-ar", "44100"]
    if channels is not None:
        args += ["-ac", str(min(channels, 2))]
    args += ["-f", "mp3"]
    return _run_ffmpeg(src, dst, args, timeout)


def convert_video_to_mp4(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    timeout: float | None = None,
) -> Path:
    """Convert ``src`` to a web-friendly MP4 at ``dst``.

    First real video stream (cover art excluded) as H.264 (libx264,
    veryfast, yuv420p, dimensions rounded down to even) and first audio
    stream as AAC 192 kbit/s; ``+faststart`` so playback can begin before the
    download ends. ``dst`` is replaced atomically; nothing is left behind on
    error. Raises :class:`ConversionError` (also on ``timeout``).
    """
    args = [
        # "V" (capital) skips attached pictures, matching probe_media.
        "-map", "0:V:0", "-map", "0:a:0", "-sn", "-dn",
        "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
        # yuv420p with libx264 requires even width and height.
        "-vf", "scale=trunc(iw/2)*2:trunc(ih/2)*2",
        "-c:a", "aac", "-b:a", "192k",
        "-movflags", "+faststart",
        # Sparse or badly interleaved inputs otherwise abort with
        # "Too many packets buffered for output stream".
        "-max_muxing_queue_size", "4096",
        "-f", "mp4",
    ]  # fmt: skip
    return _run_ffmpeg(src, dst, args, timeout)


def convert_to_wav(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    timeout: float | None = None,
) -> Path:
    """Convert the first audio stream of ``src`` to 16 kHz mono 16-bit WAV.

    This is the input format Whisper works on. ``dst`` is replaced
    atomically; nothing is left behind on error. Raises
    :class:`ConversionError` (also on ``timeout``).
    """
    args = [
        "-map", "0:a:0", "-vn", "-sn", "-dn",
        "-c:a", "pcm_s16le", "-ar", "16000", "-ac", "1",
        "-f", "wav",
    ]  # fmt: skip
    return _run_ffmpeg(src, dst, args, timeout)
