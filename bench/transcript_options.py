"""What the transcript options cost and give: word timestamps, each segment's language, subtitle cues.

Run from the repository root::

    .venv/bin/python bench/transcript_options.py [--runs 3] [--keep]

Audio comes from ``../shared/audio`` beside the repository (clip60.flac, jfk.flac,
hotwords.mp3, stereo_diarization.wav, multilingual.mp3); the bundled models are installed
into ``MODELS_DIR`` (default ``var/models``) if they are not there yet. Models are loaded
as the worker loads them (int8 on CPU, all cores for one transcription), and every figure
comes from this one process run. Figures only, no assertions.

1. **Word timestamps** (needed for subtitles): ``engine.transcribe`` with ggml-tiny.en,
   with and without ``word_timestamps``, on clip60.flac and on a five-minute English
   recording built here from the shared clips (see :func:`five_minute_english`): a warm-up,
   then ``--runs`` runs of each, alternating; medians of wall and CPU time, their ratios
   (target: under +25%) and the median of each run's own ratio. On a machine that others
   share, compare the load averages printed before and after: wall times move with them.
2. **Each segment's language**: ggml-base on multilingual.mp3 without a language, as the
   engine runs it now (a language per segment) and as it ran before (one language detected
   from the first 30 s, the old engine's faster-whisper call), and with ``language="de"``
   for comparison; WER of the German half (the segments from 29.5 s on) against the German
   text read there, after lower-casing and dropping punctuation.
3. **Subtitle cues**: the longest cue, the longest line and the number of cues of the SRT
   of clip60.flac (ggml-tiny.en) and multilingual.mp3 (ggml-base), from one transcription
   with word timestamps each: before, one cue per Whisper segment on one line (the old
   renderer), and after, ``transcriptions.formats.render(result, "srt",
   word_timestamps=True)``; both are measured by parsing the SRT text. The "after" half is
   skipped with a message while ``formats.render`` still has the old signature.
"""

from __future__ import annotations

import argparse
import inspect
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Callable, Sequence
from pathlib import Path

import jiwer
import numpy as np
from faster_whisper.audio import decode_audio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from files.media import ffmpeg_binary  # noqa: E402
from transcriptions import engine  # noqa: E402

AUDIO = ROOT.parent / "shared" / "audio"
SAMPLING_RATE = 16000
# The German reading of multilingual.mp3 starts at about 29.6 s (its English ends at 28.9 s).
GERMAN_START = 29.5
# What is read in German on multilingual.mp3, to its end: the licence's first paragraph.
# It is not the common German wording ("Hiermit wird unentgeltlich jeder Person, die eine
# Kopie der Software ... erhält, die Erlaubnis erteilt, ..."), but another translation; no
# copy of its text was at hand, so it is written down from the recording: where ggml-base
# (language "de") and faster-whisper's own test transcript (tiny) disagree or write no word
# ("wird wir mit unentgeltlich", "Dies um fast", "zu Samenzofügen"), the grammatical German
# word is taken ("hiermit", "umfasst", "zusammenzufügen").
GERMAN_READ = (
    "Jedem, der diese Software und die dazugehörigen Dokumentationsdateien erhält, wird hiermit "
    "unentgeltlich die Genehmigung erteilt, mit der Software uneingeschränkt zu verfahren. Dies umfasst "
    "insbesondere das Recht, die Software zu verwenden, zu vervielfältigen, zu modifizieren, "
    "zusammenzufügen, zu veröffentlichen, zu verteilen, unterzulizenzieren und/oder Kopien der Software "
    "zu verkaufen und diese Rechte unter folgenden Bedingungen anderen zu übertragen:"
)
# The common German wording of the same paragraph (without "(die „Software“)", which the
# reader leaves out in English too): printed once to show that it is not what is read.
GERMAN_COMMON = (
    "Hiermit wird unentgeltlich jeder Person, die eine Kopie der Software und der zugehörigen "
    "Dokumentationen erhält, die Erlaubnis erteilt, sie uneingeschränkt zu nutzen, inklusive und ohne "
    "Ausnahme mit dem Recht, sie zu verwenden, zu kopieren, zu verändern, zusammenzufügen, zu "
    "veröffentlichen, zu verbreiten, zu unterlizenzieren und/oder zu verkaufen, und Personen, denen diese "
    "Software überlassen wird, diese Rechte zu verschaffen, unter den folgenden Bedingungen:"
)
# Pieces of English speech among the shared clips, and how long of each to take
# (multilingual.mp3: its English half only).
ENGLISH_PIECES: tuple[tuple[str, float | None], ...] = (
    ("jfk.flac", None),
    ("hotwords.mp3", None),
    ("stereo_diarization.wav", None),
    ("multilingual.mp3", 29.3),
)
# Each pass over the pieces sounds different: tempo and pitch changed by ffmpeg, or noise.
SEMITONE = 2 ** (1 / 12)
VARIANTS: tuple[tuple[str, str], ...] = (
    ("as recorded", ""),
    ("7% slower", "atempo=0.93"),
    ("7% faster", "atempo=1.07"),
    ("2 semitones higher", f"asetrate={SAMPLING_RATE * SEMITONE**2:.0f},aresample={SAMPLING_RATE},atempo={1 / SEMITONE**2:.4f}"),
    ("2 semitones lower", f"asetrate={SAMPLING_RATE / SEMITONE**2:.0f},aresample={SAMPLING_RATE},atempo={SEMITONE**2:.4f}"),
    ("with noise at -40 dBFS", "noise"),
)  # fmt: skip
TIMING = re.compile(r"^(\d+):(\d\d):(\d\d)[,.](\d{3}) --> (\d+):(\d\d):(\d\d)[,.](\d{3})")


def shared(name: str) -> Path:
    path = AUDIO / name
    if not path.exists():
        raise SystemExit(
            f"{path} is missing: this benchmark reads its audio from ../shared/audio beside the repository"
        )
    return path


def decode_piece(path: Path, seconds: float | None, audio_filter: str) -> np.ndarray:
    """16 kHz mono float samples of ``path`` (its first ``seconds``), through an ffmpeg filter."""
    command = [ffmpeg_binary(), "-nostdin", "-hide_banner", "-loglevel", "error", "-i", str(path)]
    if seconds is not None:
        command += ["-t", f"{seconds}"]
    filters = ",".join(part for part in (f"aresample={SAMPLING_RATE}", audio_filter) if part)
    command += ["-ac", "1", "-af", filters, "-ar", str(SAMPLING_RATE), "-f", "f32le", "-"]
    return np.frombuffer(subprocess.run(command, check=True, capture_output=True).stdout, dtype="<f4")


def write_wav(path: Path, samples: np.ndarray) -> Path:
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(SAMPLING_RATE)
        writer.writeframes((np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes())
    return path


def five_minute_english(folder: Path) -> tuple[Path, str]:
    """About five minutes of English speech, and a description of it.

    There is no such recording among the shared clips, and a loop of one clip would make
    Whisper fall back to repeated decoding: so the English clips (JFK, the ComfyUI phrase,
    the two stereo_diarization speakers mixed, the English half of multilingual.mp3, 49 s
    together) are put one after another six times, each time in another order, with
    0.3-1.2 s pauses, and each pass sounds different (tempo, pitch, noise).
    """
    rng = random.Random(10)
    noise = np.random.default_rng(10)
    parts: list[np.ndarray] = []
    for _, audio_filter in VARIANTS:
        pieces = list(ENGLISH_PIECES)
        rng.shuffle(pieces)
        for name, seconds in pieces:
            samples = decode_piece(shared(name), seconds, "" if audio_filter == "noise" else audio_filter)
            if audio_filter == "noise":
                samples = samples + noise.normal(0.0, 0.01, samples.shape).astype(np.float32)
            parts += [samples, np.zeros(int(rng.uniform(0.3, 1.2) * SAMPLING_RATE), dtype=np.float32)]
    samples = np.concatenate(parts)
    path = write_wav(folder / "english-5min.wav", samples)
    minutes, seconds = divmod(round(len(samples) / SAMPLING_RATE), 60)
    description = (
        f"english-5min.wav ({minutes}:{seconds:02d}): jfk.flac, hotwords.mp3, stereo_diarization.wav (mono) and "
        f"multilingual.mp3's English half, six passes in shuffled orders: {', '.join(name for name, _ in VARIANTS)}"
    )
    return path, description


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def wer(reference: str, hypothesis: str) -> float:
    return float(jiwer.wer(normalise(reference), normalise(hypothesis)))


def timed(function: Callable[[], engine.TranscriptResult]) -> tuple[float, engine.TranscriptResult]:
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def load() -> str:
    return "load average " + " ".join(f"{value:.1f}" for value in os.getloadavg())


def bench_word_timestamps(cache: engine.ModelCache, clips: Sequence[tuple[Path, str]], runs: int) -> None:
    model = cache.get("ggml-tiny.en")
    print(f"== Word timestamps: ggml-tiny.en ({cache.compute_type}, {cache.cpu_threads} threads), decoding included")
    print(
        f"   wall and CPU seconds (CPU: all threads of this process, steadier while others share the machine); {load()}"
    )
    for path, description in clips:

        def run(words: bool, path: Path = path) -> tuple[float, float, engine.TranscriptResult]:
            cpu = time.process_time()
            seconds, result = timed(
                lambda: engine.transcribe(model, path, language=None, vad_filter=False, word_timestamps=words)
            )
            return seconds, time.process_time() - cpu, result

        run(False)
        run(True)  # warm-up
        times: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        last: dict[bool, engine.TranscriptResult] = {}
        for index in range(runs):
            # Alternating which goes first, so that both see the same machine.
            for words in (False, True) if index % 2 == 0 else (True, False):
                seconds, cpu, last[words] = run(words)
                times[words].append((seconds, cpu))
        print(f"{description}")
        medians = {}
        for words, label in ((False, "without words"), (True, "with words")):
            wall = statistics.median(t for t, _ in times[words])
            cpu = statistics.median(c for _, c in times[words])
            medians[words] = (wall, cpu)
            listed = ", ".join(f"{t:.2f}" for t, _ in times[words])
            print(f"  {label + ':':15} median {wall:6.2f} s wall (runs: {listed}), {cpu:6.2f} s CPU")
        paired = statistics.median(w[0] / p[0] for w, p in zip(times[True], times[False], strict=True))
        wall_ratio = medians[True][0] / medians[False][0]
        cpu_ratio = medians[True][1] / medians[False][1]
        print(f"  with/without: wall {wall_ratio:.3f} ({wall_ratio - 1:+.1%}), CPU {cpu_ratio:.3f} ({cpu_ratio - 1:+.1%}), "
              f"median of the runs' own wall ratios {paired:.3f} (target: under +25%)")  # fmt: skip
        windows = {words: len({s.seek for s in result.segments}) for words, result in last.items()}
        print(f"  {len(last[True].segments)} segments, {sum(len(s.words or ()) for s in last[True].segments)} words; "
              f"30 s windows with text: {windows[False]} without words, {windows[True]} with")  # fmt: skip
    print(f"   {load()}")


def german_half(segments: Sequence[tuple[float, float, str]]) -> str:
    return " ".join(text.strip() for start, end, text in segments if (start + end) / 2 >= GERMAN_START)


def bench_languages(cache: engine.ModelCache, path: Path) -> None:
    model = cache.get("ggml-base")
    print(f"== Each segment's language: ggml-base on {path.name}, German half = segments from {GERMAN_START} s on")
    print(f"   reference: the German text read there ({len(normalise(GERMAN_READ).split())} words, to its end)")
    seconds, result = timed(lambda: engine.transcribe(model, path, language=None, vad_filter=False))
    new = [(s.start, s.end, s.text) for s in result.segments]
    languages = " ".join(f"{s.language}@{s.start:.1f}" for s in result.segments)

    def old_call() -> tuple[list[tuple[float, float, str]], str]:
        # The engine's faster-whisper call before this change: one language, detected once.
        raw, info = model.transcribe(str(path), language=None, vad_filter=False, beam_size=5,
                                     condition_on_previous_text=False)  # fmt: skip
        return [(s.start, s.end, s.text) for s in raw], info.language

    started = time.perf_counter()
    old, old_language = old_call()
    old_seconds = time.perf_counter() - started
    forced_seconds, forced = timed(lambda: engine.transcribe(model, path, language="de", vad_filter=False))
    rows = (
        ("per-segment language (now)", new, seconds, f"top-level {result.language}; segments {languages}"),
        ("one language (before)", old, old_seconds, f"language {old_language} for the whole file"),
        ('language="de" given', [(s.start, s.end, s.text) for s in forced.segments], forced_seconds, ""),
    )
    for label, segments, taken, note in rows:
        text = german_half(segments)
        print(f"{label:28} WER {wer(GERMAN_READ, text):.3f}  ({taken:.1f} s)  {note}".rstrip())
        print(f"{'':28} German half: {text[:110]}{'...' if len(text) > 110 else ''}")
    print(f"{'':28} (against the common German wording instead, which is not what is read: "
          f"now {wer(GERMAN_COMMON, german_half(new)):.3f}, before {wer(GERMAN_COMMON, german_half(old)):.3f})")  # fmt: skip


def srt_statistics(srt: str) -> tuple[float, int, int]:
    """The longest cue (seconds), the longest text line (characters) and the number of cues."""
    longest_cue, longest_line, cues = 0.0, 0, 0
    for block in re.split(r"\n\s*\n", srt.strip()):
        lines = block.splitlines()
        timing = next((i for i, line in enumerate(lines) if TIMING.match(line)), None)
        if timing is None:
            continue
        h1, m1, s1, ms1, h2, m2, s2, ms2 = map(int, TIMING.match(lines[timing]).groups())  # type: ignore[union-attr]
        start = h1 * 3600 + m1 * 60 + s1 + ms1 / 1000
        end = h2 * 3600 + m2 * 60 + s2 + ms2 / 1000
        cues += 1
        longest_cue = max(longest_cue, end - start)
        longest_line = max([longest_line, *(len(line) for line in lines[timing + 1 :])])
    return longest_cue, longest_line, cues


def one_cue_per_segment(result: engine.TranscriptResult) -> str:
    """The old renderer's SRT: one cue per Whisper segment, its text on one line."""

    def stamp(seconds: float) -> str:
        millis = round(seconds * 1000)
        return f"{millis // 3_600_000:02d}:{millis // 60_000 % 60:02d}:{millis // 1000 % 60:02d},{millis % 1000:03d}"

    cues = [s for s in result.segments if s.text.strip()]
    return "\n\n".join(
        f"{index}\n{stamp(s.start)} --> {stamp(s.end)}\n{' '.join(s.text.split())}" for index, s in enumerate(cues, 1)
    )


def bench_cues(cache: engine.ModelCache, clips: Sequence[tuple[Path, str]]) -> None:
    from transcriptions import formats

    print("== Subtitle cues (SRT): longest cue, longest line, number of cues")
    new_renderer = "word_timestamps" in inspect.signature(formats.render).parameters
    for path, model_name in clips:
        result = engine.transcribe(cache.get(model_name), path, language=None, vad_filter=False, word_timestamps=True)
        rows = [("before (one cue per segment)", one_cue_per_segment(result))]
        if new_renderer:
            rows.append(("after (formats.render)", formats.render(result, "srt", word_timestamps=True)["text"]))
        print(f"{path.name} ({model_name}, {len(result.segments)} segments):")
        for label, srt in rows:
            cue, line, count = srt_statistics(srt)
            print(f"  {label:30} longest cue {cue:5.2f} s, longest line {line:3d} characters, {count:3d} cues")
        if not new_renderer:
            print("  after: skipped, transcriptions.formats.render still has the old signature "
                  "render(segments, text, language, fmt); run again once the subtitle renderer is in")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each; medians are reported")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (the five-minute WAV)")
    args = parser.parse_args()

    clip60, multilingual = shared("clip60.flac"), shared("multilingual.mp3")
    env_models = os.environ.get("MODELS_DIR")
    models_dir = Path(env_models) if env_models else ROOT / "var" / "models"
    engine.install_bundled_models(models_dir)
    cache = engine.ModelCache(models_dir)
    work = Path(tempfile.mkdtemp(prefix="whisper-bench-options-"))
    try:
        long_path, long_description = five_minute_english(work)
        clip_seconds = len(decode_audio(str(clip60), sampling_rate=SAMPLING_RATE)) / SAMPLING_RATE
        bench_word_timestamps(
            cache, [(clip60, f"clip60.flac ({clip_seconds:.1f} s)"), (long_path, long_description)], args.runs
        )
        print()
        bench_languages(cache, multilingual)
        print()
        bench_cues(cache, [(clip60, "ggml-tiny.en"), (multilingual, "ggml-base")])
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
