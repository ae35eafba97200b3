"""Media layer: content-based probing (PyAV) and ffmpeg conversions.

Everything here works on file paths. Probing decodes at most a bounded number
of packets and never reads a whole file into Python memory; conversions run
ffmpeg as a subprocess so the media bytes never pass through Python at all.

Untrusted media never gets the caller's memory: probing runs in a child
process (forked from a forkserver that has PyAV loaded) and ffmpeg runs as a
subprocess, each under an address-space limit and a thread cap; frame sizes
are read from the headers and refused over the limits before any frame is
decoded (see :class:`MediaLimits`).

This module deliberately has no Django dependency so it can be used (and
tested) from Celery workers, management commands or plain scripts.
"""

from __future__ import annotations

import atexit
import collections
import dataclasses
import functools
import json
import logging
import math
import os
import pickle
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal, NoReturn

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
    "MediaLimits",
    "UnsupportedMedia",
    "call_bounded",
    "convert_audio_to_mp3",
    "convert_to_wav",
    "convert_video_to_mp4",
    "ffmpeg_binary",
    "ffmpeg_command",
    "probe_media",
    "wav_duration",
]

logger = logging.getLogger(__name__)

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

# Wall-clock bound of one probe: packets and bytes are bounded already, this
# catches a demuxer that crawls (and the duration fallback on a huge file).
DEFAULT_PROBE_TIMEOUT = 120.0


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
class MediaLimits:
    """How much one untrusted file may ask of the machine.

    The defaults are the settings' defaults (``VIDEO_MAX_WIDTH``,
    ``VIDEO_MAX_HEIGHT``, ``VIDEO_MAX_PIXELS``, ``MEDIA_MEMORY_LIMIT_MB``,
    ``MEDIA_PROBE_MEMORY_LIMIT_MB``, ``MEDIA_THREADS``,
    ``CONVERSION_FFMPEG_THREADS``); callers with Django settings pass
    ``MediaLimits.from_settings(settings)``.
    """

    #: Largest video frame accepted, read from the stream headers.
    max_width: int = 8192
    max_height: int = 8192
    max_pixels: int = 40_000_000
    #: Address-space limit of each ffmpeg run. Address space, not resident
    #: memory: ffmpeg's threads reserve far more than they touch. Measured
    #: with 2 threads (H.264 veryfast): a 4K video peaks at about 2 GB, one
    #: of 40 megapixels at about 5.7 GB, which this default lets through
    #: (fewer threads reserve less).
    memory_limit_mb: int = 6144
    #: Address-space limit of the child process that probes a file (PyAV
    #: decodes a few frames there): about 160 MB is the interpreter itself,
    #: a 40-megapixel H.264 video probes within 400 MB.
    probe_memory_limit_mb: int = 1024
    #: Decoder threads of one probe (PyAV in the bounded child process).
    threads: int = 2
    #: ffmpeg's decoder, filter and encoder threads of one conversion. One by
    #: default: conversions run beside transcriptions, at a lower priority,
    #: and a conversion that takes every core slows the transcription down
    #: however low its priority (memory bandwidth, caches).
    conversion_threads: int = 1

    @classmethod
    def from_settings(cls, settings: Any) -> MediaLimits:
        """The limits named in ``settings`` (any object; Django's in practice), defaults for those it lacks."""
        default = cls()
        return cls(
            max_width=getattr(settings, "VIDEO_MAX_WIDTH", default.max_width),
            max_height=getattr(settings, "VIDEO_MAX_HEIGHT", default.max_height),
            max_pixels=getattr(settings, "VIDEO_MAX_PIXELS", default.max_pixels),
            memory_limit_mb=getattr(settings, "MEDIA_MEMORY_LIMIT_MB", default.memory_limit_mb),
            probe_memory_limit_mb=getattr(settings, "MEDIA_PROBE_MEMORY_LIMIT_MB", default.probe_memory_limit_mb),
            threads=getattr(settings, "MEDIA_THREADS", default.threads),
            conversion_threads=getattr(settings, "CONVERSION_FFMPEG_THREADS", default.conversion_threads),
        )

    def frame_refusal(self, width: int, height: int) -> str | None:
        """Why a ``width`` x ``height`` video frame is refused, or None when it is within the limits."""
        if width > self.max_width or height > self.max_height:
            return f"video frames larger than {self.max_width}x{self.max_height} pixels are not accepted"
        if width * height > self.max_pixels:
            return f"video frames of more than {self.max_pixels / 1e6:g} megapixels are not accepted"
        return None

    @property
    def decoder_max_pixels(self) -> int:
        """ffmpeg's ``max_pixels`` decoder option for these limits.

        ffmpeg refuses to allocate a frame over it, for every stream it
        decodes, including the pictures it decodes while opening a file. It
        counts the width rounded up to 64 (stride alignment), hence the slack,
        so that a frame our own check accepts is never refused by ffmpeg.
        """
        return self.max_pixels + 64 * self.max_height


DEFAULT_LIMITS = MediaLimits()


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
# Bounded child processes
# --------------------------------------------------------------------------

# The folder that holds the ``files`` package, for the zygote to import it.
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)
# How long past its own deadline a child may take to answer before the
# caller stops waiting (the child's alarm has ended it by then).
_ANSWER_GRACE_SECONDS = 5.0


def _limit_address_space(megabytes: int) -> None:
    """Cap this process's address space at ``megabytes`` (never above an existing hard limit)."""
    limit = megabytes * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


class _Zygote:
    """A child interpreter that has imported PyAV and forks one process per bounded call.

    Why not a fresh interpreter per call: importing PyAV takes about half a
    second; a fork of one that already has takes milliseconds. Why not
    ``os.fork()`` of the caller: the web worker has threads, and a fork of a
    threaded process can deadlock. Why not multiprocessing's forkserver: each
    of its children re-runs the caller's ``__main__`` script (gunicorn's,
    celery's), and cannot when there is none on disk.

    Requests go over a Unix socket, each with the write end of a socket of
    its own on which the forked child answers. The zygote exits when the
    process that started it closes its end (exits).
    """

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        code = (
            "import sys; sys.path.insert(0, sys.argv[2]); "
            "from files.media import _zygote_serve; _zygote_serve(int(sys.argv[1]))"
        )
        python = sys.executable or shutil.which("python3") or "python3"
        with theirs:
            self.process = subprocess.Popen(
                [python, "-c", code, str(theirs.fileno()), _PACKAGE_ROOT],
                pass_fds=[theirs.fileno()],
                env=_bounded_env(),
                stdin=subprocess.DEVNULL,
            )
        self.socket = ours
        self.owner_pid = os.getpid()

    def usable(self) -> bool:
        return self.owner_pid == os.getpid() and self.process.poll() is None

    def discard(self) -> None:
        """Close our end; the zygote then exits. Wait for it only if it is our child."""
        self.socket.close()
        if self.owner_pid != os.getpid():
            # Inherited through a fork: the process that started it reaps it.
            return
        try:
            self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


_zygote_lock = threading.Lock()
_zygote: _Zygote | None = None


def _zygote_send(request: bytes, answer: socket.socket) -> None:
    """Hand ``request`` and the socket to answer on to the zygote, (re)starting it as needed."""
    global _zygote
    with _zygote_lock:
        for attempt in (1, 2):
            if _zygote is not None and not _zygote.usable():
                _zygote.discard()
                _zygote = None
            if _zygote is None:
                _zygote = _Zygote()
            try:
                socket.send_fds(_zygote.socket, [request], [answer.fileno()])
                return
            except OSError:
                # It died between the check and the send: start another, once.
                _zygote.discard()
                _zygote = None
                if attempt == 2:
                    raise


@atexit.register
def _zygote_close() -> None:
    global _zygote
    with _zygote_lock:
        if _zygote is not None:
            _zygote.discard()
            _zygote = None


def _zygote_serve(fd: int) -> None:
    """The zygote's loop: one forked child per request, until the caller goes away."""
    # Imported here, before any fork, so that every child has them loaded:
    # a child near its memory limit may not be able to map a library in.
    # PyAV imports its subtitle streams on first sight of one.
    import av.subtitles.stream  # noqa: F401

    import files.images  # noqa: F401

    # Children are reaped by the kernel; nobody here waits for them.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    control = socket.socket(fileno=fd)
    while True:
        message, fds, _, _ = socket.recv_fds(control, 1 << 20, 1)
        if not message:
            return
        if not fds:
            continue
        if os.fork() == 0:
            control.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            _zygote_child(message, fds[0])
        os.close(fds[0])


def _zygote_child(message: bytes, fd: int) -> NoReturn:
    # In the forked child: limits first, before the file is touched.
    try:
        with socket.socket(fileno=fd) as answer:
            memory_limit_mb, timeout, func, args, errors = pickle.loads(message)
            # SIGALRM's default action ends the process, even inside a
            # decoder that never returns to Python.
            signal.alarm(max(1, math.ceil(timeout)))
            _limit_address_space(memory_limit_mb)
            # The answer is JSON, not pickle: this process has parsed hostile
            # input, and unpickling what it sends could run code in the caller.
            try:
                outcome: dict[str, Any] = {"ok": func(*args)}
            except MemoryError:
                # Python's own, or PyAV's (ffmpeg's ENOMEM is av.error.MemoryError).
                outcome = {"memory": True}
            except Exception as exc:
                # The most derived of the classes the caller expects, if any.
                expected = next((cls.__name__ for cls in type(exc).__mro__ if cls in errors), None)
                if expected is not None:
                    outcome = {"error": expected, "message": str(exc)}
                else:
                    outcome = {"crash": type(exc).__name__, "message": str(exc)}
            answer.sendall(json.dumps(outcome).encode())
    finally:
        os._exit(0)


def call_bounded(
    func: Callable[..., Any],
    *args: Any,
    errors: tuple[type[Exception], ...] = (),
    memory_limit_mb: int = DEFAULT_LIMITS.probe_memory_limit_mb,
    timeout: float = DEFAULT_PROBE_TIMEOUT,
) -> Any:
    """``func(*args)`` in a child process whose address space is capped at ``memory_limit_mb``.

    ``func`` must be a module-level function of an importable module, its
    arguments picklable and its result JSON. An exception of one of the
    ``errors`` classes is raised here again (same class, same message; each
    must take the message as its only argument). Raises :class:`MemoryError`
    when the child ran out of memory, :class:`TimeoutError` when it was
    still at work after ``timeout`` seconds (it is ended then) and
    :class:`ChildProcessError` when it died without an answer or raised
    anything else.
    """
    request = pickle.dumps((memory_limit_mb, timeout, func, args, errors))
    started = time.monotonic()
    deadline = started + timeout + _ANSWER_GRACE_SECONDS
    ours, theirs = socket.socketpair()
    with ours:
        try:
            _zygote_send(request, theirs)
        finally:
            # Only the child holds the answering end now: its exit is our EOF.
            theirs.close()
        chunks = []
        while True:
            # Never 0, which would make the socket non-blocking.
            ours.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = ours.recv(65536)
            except TimeoutError:
                raise TimeoutError(f"no answer within {timeout:g} s") from None
            if not chunk:
                break
            chunks.append(chunk)
    if not chunks:
        if time.monotonic() - started >= timeout:
            raise TimeoutError(f"no answer within {timeout:g} s")
        raise ChildProcessError("the child process ended without an answer")
    try:
        outcome = json.loads(b"".join(chunks))
    except ValueError:
        raise ChildProcessError("the child process answered garbage") from None
    if "ok" in outcome:
        return outcome["ok"]
    if "memory" in outcome:
        raise MemoryError(f"more than {memory_limit_mb} MB of memory needed")
    if "error" in outcome:
        for error in errors:
            if error.__name__ == outcome["error"]:
                raise error(outcome["message"])
    raise ChildProcessError(f"the child process failed: {outcome.get('crash')}: {outcome.get('message')}")


# --------------------------------------------------------------------------
# Probing
# --------------------------------------------------------------------------


def _file_url(path: str | os.PathLike[str]) -> str:
    # An explicit file: URL stops ffmpeg from reading a colon in the name as
    # a protocol ("concat:", "http:") and a leading dash as an option.
    return "file:" + os.path.abspath(os.fspath(path))


def _open_input(path: str | os.PathLike[str], limits: MediaLimits) -> av.container.InputContainer:
    return av.open(
        _file_url(path),
        mode="r",
        container_options={
            "format_whitelist": _FORMAT_WHITELIST,
            "protocol_whitelist": "file",
        },
        # Opening a file decodes the first frames of every stream (ffmpeg's
        # find_stream_info) before PyAV hands us anything: these options
        # reach those decoders, so an oversized frame is refused before it
        # is allocated instead of after (a 64-megapixel H.264 frame: 30 MB
        # instead of 280 MB).
        options={"max_pixels": str(limits.decoder_max_pixels)},
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


def _reraise_out_of_memory(exc: av.FFmpegError) -> None:
    # ENOMEM under the child's address-space limit must not pass for a
    # decoding error: it is reported as running out of memory.
    if isinstance(exc, MemoryError):
        raise exc


def _scan(
    container: av.container.InputContainer,
    audio: av.audio.stream.AudioStream,
    video: av.video.stream.VideoStream | None,
    video_frames_needed: int,
    max_packets: int,
    max_bytes: int,
    limits: MediaLimits,
) -> _ScanResult:
    """Decode the start of the file until audio and video are proven (or not)."""
    result = _ScanResult()
    streams = [audio] if video is None else [audio, video]
    for stream in streams:
        stream.codec_context.thread_count = limits.threads
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
                    except av.FFmpegError as exc:
                        _reraise_out_of_memory(exc)
                        result.audio_errors += 1
                    audio_done = result.audio_frames >= _CONCLUSIVE_AUDIO_FRAMES
            elif not video_done:
                try:
                    frames = packet.decode()
                except av.FFmpegError as exc:
                    _reraise_out_of_memory(exc)
                    frames = []
                for frame in frames:
                    # A stream may change size after its headers: the
                    # decoder's max_pixels bounded the allocation, this
                    # holds the frame to the width and height limits too.
                    refusal = limits.frame_refusal(frame.width, frame.height)
                    if refusal is not None:
                        raise UnsupportedMedia(refusal)
                result.video_frames += len(frames)
                video_done = result.video_frames >= video_frames_needed
            if (audio_done and video_done) or packets >= max_packets or read_bytes >= max_bytes:
                break
    except av.FFmpegError as exc:
        # A demuxer error mid-file ends the scan; judge on what we have.
        _reraise_out_of_memory(exc)
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
    limits: MediaLimits = DEFAULT_LIMITS,
    timeout: float = DEFAULT_PROBE_TIMEOUT,
) -> MediaInfo:
    """Identify ``path`` by its content and return a :class:`MediaInfo`.

    The file name is never consulted. The file must contain an audio stream
    whose first frames actually decode; it is ``"video"`` when it also has a
    video stream that decodes and is not cover art. At most ``max_packets``
    packets / ``max_bytes`` bytes are demuxed while looking for decodable
    frames.

    Video frames over ``limits`` (width, height, pixels, as the stream
    headers give them) are refused before any is decoded. The work runs in a
    child process under ``limits.probe_memory_limit_mb`` of address space and
    ``limits.threads`` decoding threads, for at most ``timeout`` seconds, so
    that hostile input cannot take the caller's memory.

    Raises :class:`EmptyMedia` for a zero-byte file, :class:`UnsupportedMedia`
    for anything else that is not usable media (documents, images, random
    bytes, video without sound, zero duration, unsupported containers, frames
    over the limits, a probe that runs out of memory or time) and
    ``FileNotFoundError`` if ``path`` does not exist.
    """
    # stat() first: it raises FileNotFoundError for a missing path (a caller
    # bug, not bad content) and catches the empty file without a child process.
    if os.stat(path).st_size == 0:
        raise EmptyMedia()
    try:
        fields = call_bounded(
            _probe_media_fields,
            os.fspath(path),
            max_packets,
            max_bytes,
            limits,
            errors=(UnsupportedMedia, EmptyMedia, FileNotFoundError),
            memory_limit_mb=limits.probe_memory_limit_mb,
            timeout=timeout,
        )
        return MediaInfo(**fields)
    except MemoryError:
        raise UnsupportedMedia("examining the file needs more memory than allowed") from None
    except TimeoutError:
        raise UnsupportedMedia("examining the file took too long") from None
    except ChildProcessError as exc:
        logger.warning("probing %s failed: %s", os.fspath(path), exc)
        raise UnsupportedMedia("the file could not be examined") from None


def _probe_media_fields(path: str, max_packets: int, max_bytes: int, limits: MediaLimits) -> dict[str, Any]:
    # What the child answers: MediaInfo's fields, as JSON.
    return dataclasses.asdict(probe_media_unbounded(path, max_packets, max_bytes, limits))


def probe_media_unbounded(
    path: str | os.PathLike[str],
    max_packets: int = DEFAULT_MAX_PROBE_PACKETS,
    max_bytes: int = DEFAULT_MAX_PROBE_BYTES,
    limits: MediaLimits = DEFAULT_LIMITS,
) -> MediaInfo:
    """:func:`probe_media` in this process, without its memory limit or time limit.

    What the child process of :func:`probe_media` runs. Frame-size limits
    and the decoder thread cap still apply. In a process with an
    address-space limit, a decoding failure that the limit explains raises
    :class:`MemoryError` instead of a verdict on the file.
    """
    try:
        return _probe(path, max_packets, max_bytes, limits)
    except UnsupportedMedia:
        if _ceiling_explains(_SMALL_ALLOCATION):
            raise MemoryError("the address-space limit was reached") from None
        raise


# Decoders fail an allocation and carry on, so that running out of memory
# looks like undecodable content. What tells them apart is whether the
# process was close enough to its limit for the allocation to fail: its
# peak address space plus the allocation's size above the limit. A failure
# of anything but a whole frame is taken to be at least this large.
_SMALL_ALLOCATION = 1024 * 1024


def _ceiling_explains(allocation: int) -> bool:
    """Whether an allocation of ``allocation`` bytes may have failed for this process's address-space limit."""
    limit, _ = resource.getrlimit(resource.RLIMIT_AS)
    if limit == resource.RLIM_INFINITY:
        return False
    try:
        with open("/proc/self/status", "rb") as status:
            peak_kib = next(int(line.split()[1]) for line in status if line.startswith(b"VmPeak:"))
    except (OSError, StopIteration, ValueError):
        return False
    return peak_kib * 1024 + allocation > limit


def _probe(
    path: str | os.PathLike[str], max_packets: int, max_bytes: int, limits: MediaLimits
) -> MediaInfo:  # fmt: skip
    if os.stat(path).st_size == 0:
        raise EmptyMedia()
    try:
        container = _open_input(path, limits)
    except av.FFmpegError as exc:
        _reraise_out_of_memory(exc)
        raise UnsupportedMedia("unrecognised or unsupported file format") from exc
    with container:
        if not container.streams.audio:
            raise UnsupportedMedia("no audio stream")
        audio = container.streams.audio[0]
        audio_codec = _codec_name(audio)
        if audio_codec is None:
            raise UnsupportedMedia("audio codec is not supported")

        video = _video_candidate(container)
        still = video is not None and _codec_name(video) in _STILL_IMAGE_CODECS
        if video is not None:
            # The sizes the container and codec headers declare: nothing of
            # this stream has been decoded yet (opening refused to, past
            # max_pixels).
            refusal = limits.frame_refusal(video.codec_context.width, video.codec_context.height)
            if refusal is not None:
                if not still:
                    raise UnsupportedMedia(refusal)
                # An oversized picture in a picture codec is taken for cover
                # art (which is what a single picture would be): never
                # decoded, and the file is audio.
                video = None
                still = False
        needed = 2 if still else 1
        scan = _scan(container, audio, video, needed, max_packets, max_bytes, limits)
        # Garbage that a lenient demuxer (mp3 in particular) accepts can still
        # decode into the odd frame by chance; real audio decodes far more
        # often than it fails, or at least decodes plenty of frames.
        if scan.audio_frames == 0 or (
            scan.audio_frames < _CONCLUSIVE_AUDIO_FRAMES and scan.audio_frames < scan.audio_errors
        ):
            raise UnsupportedMedia("audio stream could not be decoded")
        if video is not None and scan.video_frames == 0:
            # Not one frame of a stream whose headers were within the limits:
            # a frame (at least a byte per pixel) that did not fit under the
            # address-space limit is no reason to call the file audio.
            frame_bytes = video.codec_context.width * video.codec_context.height
            if _ceiling_explains(max(frame_bytes, _SMALL_ALLOCATION)):
                raise MemoryError("a video frame did not fit under the address-space limit")
        if scan.video_frames < needed:
            # A still image or an undecodable picture track: treat as audio,
            # which is also what the audio conversion will extract.
            video = None

        try:
            duration = _duration(container, audio, video)
        except av.FFmpegError as exc:
            _reraise_out_of_memory(exc)
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


# What ffmpeg's last words mean, most telling first: (lower-case fragments
# of a line of its stderr, the reason we give). A run that fails for several
# reasons at once (an allocation fails, so decoding fails, so nothing is
# written) logs them all; the first rule that matches names the cause.
# "{kind}" is "audio" or "video", from the stream the line is about.
_FAILURE_RULES: tuple[tuple[tuple[str, ...], str], ...] = (
    # Thread stacks come out of the same address space.
    (("cannot allocate memory", "could not allocate", "malloc of size", "out of memory",
      "pthread_create() failed", "resource temporarily unavailable"),
     "conversion ran out of memory"),
    (("exceeds specified max pixel count",), "the video frames are larger than allowed"),
    (("not on whitelist",), "the file's format is not accepted"),
    (("matches no streams",), "the file has no {kind} stream"),
    (("moov atom not found", "end of file", "truncat", "partial file"), "the file is truncated or damaged"),
    (("decode error rate", "error submitting packet to decoder", "error while decoding", "decoding error",
      "could not find codec parameters", "error while opening decoder"),
     "the {kind} could not be decoded"),
    (("invalid data found", "corrupt"), "the file is truncated or damaged"),
    (("encoder", "error initializing"), "the {kind} could not be encoded"),
    (("nothing was written", "output file is empty"), "nothing in the file could be converted"),
)  # fmt: skip
# A run killed by one of these, under an address-space limit, most likely
# failed an allocation that the code did not check.
_MEMORY_SIGNALS = frozenset({signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGKILL})


def _failure_reason(returncode: int, stderr_tail: bytes) -> str:
    """A plain sentence for a failed ffmpeg run: never its log lines, which name heap addresses."""
    lines = stderr_tail.decode("utf-8", "replace").lower().splitlines()
    # A decoder whose frame allocation fails says only "get_buffer() failed";
    # one refused by max_pixels says "image parameters invalid" first.
    buffers_failed = sum("] get_buffer() failed" in line for line in lines)
    if buffers_failed > sum("image parameters invalid" in line for line in lines):
        return "conversion ran out of memory"
    for fragments, reason in _FAILURE_RULES:
        for line in lines:
            if any(fragment in line for fragment in fragments):
                # ffmpeg 7 names the stream a line is about: "[vist#0:0/h264 @ ...]",
                # "[aost#0:1/aac @ ...]", or a map such as "0:V:0" / "0:a:0".
                video = "vist#" in line or "vost#" in line or ":v:" in line
                return reason.format(kind="video" if video else "audio")
    if returncode < 0 and -returncode in _MEMORY_SIGNALS:
        return "conversion ran out of memory"
    return "the media could not be converted"


def _partial_path(dst: Path) -> Path:
    # Hidden, unique sibling: same filesystem so os.replace is atomic, and
    # concurrent conversions to the same dst cannot clobber each other. The
    # file is left for ffmpeg to create so it gets normal umask permissions.
    return dst.with_name(f".{dst.name}.{secrets.token_hex(6)}.part")


# Run by the interpreter between us and ffmpeg: it sets the address-space
# limit on itself and becomes ffmpeg (exec keeps the limit and the pid). A
# preexec_fn would do the same, but runs Python in a forked copy of a
# threaded process, which can deadlock; a limit set after the start (prlimit)
# comes too late for a bomb that allocates at once.
_EXEC_WITH_MEMORY_LIMIT = """\
import os, resource, sys
limit = int(sys.argv[1])
hard = resource.getrlimit(resource.RLIMIT_AS)[1]
if hard != resource.RLIM_INFINITY:
    limit = min(limit, hard)
resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
try:
    os.execv(sys.argv[2], sys.argv[2:])
except OSError as exc:
    sys.stderr.write("cannot run ffmpeg: " + (exc.strerror or str(exc)))
    sys.exit(127)
"""
_CANNOT_RUN = b"cannot run ffmpeg: "


def _bounded_env() -> dict[str, str]:
    """The environment of a process that runs under an address-space limit."""
    # glibc gives each thread that allocates an arena of its own, reserving
    # 64 MB of address space apiece: ffmpeg's dozen threads then reserve
    # about 900 MB to convert a 64x48 video that touches 30 MB. Two arenas
    # bring that to 300 MB, and the limit tracks what is really used. An
    # operator's own setting is kept.
    return {"MALLOC_ARENA_MAX": "2", **os.environ}


def _bounded_argv(argv: list[str], memory_limit_mb: int) -> list[str]:
    # -I -S: no site-packages, environment or current directory: the
    # launcher needs only the standard library and starts in milliseconds.
    python = sys.executable or shutil.which("python3") or "python3"
    return [python, "-I", "-S", "-c", _EXEC_WITH_MEMORY_LIMIT, str(memory_limit_mb * 1024 * 1024), *argv]


def ffmpeg_command(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    output_args: list[str],
    limits: MediaLimits = DEFAULT_LIMITS,
) -> list[str]:
    """The ffmpeg command line that converts ``src`` into ``dst`` with ``output_args``, within ``limits``.

    Inputs restricted to local files in an allowed format, frames bounded
    (``max_pixels``), and ``limits.conversion_threads`` threads for the
    decoders, the filters and the encoders. What :func:`_run_ffmpeg` runs
    (under the address-space limit, writing to a partial file first).
    """
    threads = str(limits.conversion_threads)
    return [
        ffmpeg_binary(),
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        # Filter threads default to one per CPU, whatever the output's -threads.
        "-filter_threads",
        threads,
        "-protocol_whitelist",
        "file",
        "-format_whitelist",
        _FORMAT_WHITELIST,
        # Input options: the decoders' threads, and the largest frame they
        # may allocate (also while ffmpeg opens the file).
        "-threads",
        threads,
        "-max_pixels",
        str(limits.decoder_max_pixels),
        "-i",
        _file_url(src),
        # Output option: the encoders' threads.
        "-threads",
        threads,
        *output_args,
        _file_url(dst),
    ]


def _run_ffmpeg(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    output_args: list[str],
    timeout: float | None,
    limits: MediaLimits,
) -> Path:
    dst_path = Path(dst)
    part = _partial_path(dst_path)
    argv = ffmpeg_command(src, part, output_args, limits)
    tail: collections.deque[bytes] = collections.deque(maxlen=_STDERR_TAIL_BYTES // 1024)
    try:
        try:
            proc = subprocess.Popen(
                _bounded_argv(argv, limits.memory_limit_mb),
                env=_bounded_env(),
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
            stderr_tail = b"".join(tail)
            if returncode == 127 and stderr_tail.startswith(_CANNOT_RUN):
                raise ConversionError(stderr_tail.decode("utf-8", "replace").strip())
            reason = _failure_reason(returncode, stderr_tail)
            # The operator gets ffmpeg's own words; the file's owner gets ours.
            logger.warning(
                "ffmpeg failed (%s) converting %s: exit status %s; stderr ends:\n%s",
                reason,
                os.fspath(src),
                returncode,
                stderr_tail.decode("utf-8", "replace").strip(),
            )
            raise ConversionError(reason)
        if not part.exists() or part.stat().st_size == 0:
            raise ConversionError("nothing in the file could be converted")
        os.replace(part, dst_path)
        return dst_path
    finally:
        # After a successful replace the partial no longer exists.
        part.unlink(missing_ok=True)


def audio_channels_unbounded(src: str | os.PathLike[str], limits: MediaLimits = DEFAULT_LIMITS) -> int | None:
    """Channels of the first audio stream of ``src`` as its headers give them, in this process."""
    try:
        with _open_input(src, limits) as container:
            if container.streams.audio:
                channels = container.streams.audio[0].codec_context.channels
                return channels or None
    except (av.FFmpegError, AttributeError) as exc:
        if isinstance(exc, MemoryError):
            raise
    return None


def _audio_channels(src: str | os.PathLike[str], limits: MediaLimits) -> int | None:
    # Header-only look (no decoding of our own; opening still decodes a
    # first frame, hence the bounded child) to cap the channel count: ffmpeg
    # has no "at most N channels" option, and its aformat negotiation turns
    # mono into stereo. None lets ffmpeg itself report a broken input.
    try:
        return call_bounded(
            audio_channels_unbounded, os.fspath(src), limits, memory_limit_mb=limits.probe_memory_limit_mb
        )
    except (MemoryError, TimeoutError, ChildProcessError):
        return None


def convert_audio_to_mp3(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    timeout: float | None = None,
    limits: MediaLimits = DEFAULT_LIMITS,
) -> Path:
    """Convert the first audio stream of ``src`` to ``dst`` as MP3.

    libmp3lame, 192 kbit/s CBR, 44.1 kHz, mono stays mono and anything with
    more than two channels is downmixed to stereo. Video and cover art are
    dropped. ``dst`` is replaced atomically; nothing is left behind on error.
    ffmpeg runs within ``limits`` (memory, threads, frame size). Raises
    :class:`ConversionError` with a plain reason (also on ``timeout``
    seconds elapsed); ffmpeg's own output is logged at WARNING.
    """
    channels = _audio_channels(src, limits)
    args = ["-map", "0:a:0", "-vn", "-sn", "-dn"]
    args += ["-c:a", "libmp3lame", "-b:a", "192k", "-ar", "44100"]
    if channels is not None:
        args += ["-ac", str(min(channels, 2))]
    args += ["-f", "mp3"]
    return _run_ffmpeg(src, dst, args, timeout, limits)


def convert_video_to_mp4(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    timeout: float | None = None,
    limits: MediaLimits = DEFAULT_LIMITS,
) -> Path:
    """Convert ``src`` to a web-friendly MP4 at ``dst``.

    First real video stream (cover art excluded) as H.264 (libx264,
    veryfast, yuv420p, dimensions rounded down to even) and first audio
    stream as AAC 192 kbit/s; ``+faststart`` so playback can begin before the
    download ends. ``dst`` is replaced atomically; nothing is left behind on
    error. ffmpeg runs within ``limits``. Raises :class:`ConversionError`
    with a plain reason (also on ``timeout``).
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
    return _run_ffmpeg(src, dst, args, timeout, limits)


def convert_to_wav(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    timeout: float | None = None,
    limits: MediaLimits = DEFAULT_LIMITS,
    max_seconds: float | None = None,
) -> Path:
    """Convert the first audio stream of ``src`` to 16 kHz mono 16-bit WAV.

    This is the input format Whisper works on. ``dst`` is replaced
    atomically; nothing is left behind on error. ffmpeg runs within
    ``limits``. With ``max_seconds`` ffmpeg stops writing after that much
    audio (``-t``): the caller compares :func:`wav_duration` with it to tell
    a complete WAV from a cut one. Raises :class:`ConversionError` with a
    plain reason (also on ``timeout``).
    """
    args = [
        "-map", "0:a:0", "-vn", "-sn", "-dn",
        "-c:a", "pcm_s16le", "-ar", "16000", "-ac", "1",
    ]  # fmt: skip
    if max_seconds is not None:
        args += ["-t", f"{max_seconds:g}"]
    args += ["-f", "wav"]
    return _run_ffmpeg(src, dst, args, timeout, limits)


def wav_duration(path: str | os.PathLike[str]) -> float:
    """Seconds of sound in the PCM WAV at ``path``: its data bytes over the byte rate of its ``fmt`` chunk.

    Read from the RIFF chunks, not from a probe: the data chunk's bytes are
    counted from the file's size (ffmpeg's header sizes overflow past 4 GiB),
    so the answer is what was decoded, whatever the original's header
    claimed. Raises :class:`ConversionError` for a file that is not such a WAV.
    """
    size = os.stat(path).st_size
    byte_rate = 0
    with open(path, "rb") as wav:
        if wav.read(12)[8:] != b"WAVE":
            raise ConversionError("the WAV file could not be read")
        while True:
            header = wav.read(8)
            if len(header) < 8:
                raise ConversionError("the WAV file could not be read")
            chunk_id, chunk_size = header[:4], int.from_bytes(header[4:], "little")
            if chunk_id == b"data":
                if byte_rate <= 0:
                    raise ConversionError("the WAV file could not be read")
                return (size - wav.tell()) / byte_rate
            body = wav.read(chunk_size + (chunk_size & 1))
            if chunk_id == b"fmt " and len(body) >= 16:
                # WAVEFORMAT: format tag, channels, sample rate, byte rate, ...
                byte_rate = int.from_bytes(body[8:12], "little")
