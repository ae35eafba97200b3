"""Long-form speed and quality of the engine: one sequential decoding against windows decoded in batches.

Run from the repository root::

    .venv/bin/python bench/long_form.py [--runs 3] [--model ggml-tiny.en] [--threads 2]

On bench/data/english-5min.opus (five minutes of English read by espeak-ng, its text in
english-5min.txt; see bench/data/README.md), with the model loaded as the worker loads it
(int8 on CPU, ``--threads`` threads), everything in this one process run:

- **sequential**: ``engine.transcribe`` as the service calls it today (no VAD, beam 5,
  one 30 s window after another);
- **windows, batch N** for N = 4, 8 and 16: ``load_audio`` + ``plan_windows`` +
  ``transcribe_windows`` + ``merge_windows``, the engine side of issue 11;
- **windows, batch 8, words**: the same with word timestamps (what subtitles need).

Each is timed from the file to the result (decoding the Opus file included). After a
warm-up of each, ``--runs`` rounds run every configuration once, in an order that turns
round from one round to the next, so that all see the same machine. Printed: medians of
wall and CPU time (all threads of this process), each configuration's ratio to the
sequential decoding (of the medians, and the median of each round's own ratio), and the
word error rate of its text against the reference (lower case, punctuation dropped; the
decodings are deterministic, so one WER each). The issue's target, at the service level
(upload to completed): wall ratio <= 0.45 with WER at most 1.0 point above the
sequential decoding's; this gives the engine's share of it. Load averages are printed
before and after: on a machine others share, wall times move with them. Figures only, no
assertions.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import jiwer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from transcriptions import engine  # noqa: E402

RECORDING = ROOT / "bench" / "data" / "english-5min.opus"
REFERENCE = ROOT / "bench" / "data" / "english-5min.txt"
BATCH_SIZES = (4, 8, 16)


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def load() -> str:
    return "load average " + " ".join(f"{value:.2f}" for value in os.getloadavg())


@dataclass
class Configuration:
    label: str
    run: Callable[[], engine.TranscriptResult]
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    result: engine.TranscriptResult | None = None

    def once(self) -> tuple[float, float]:
        cpu = time.process_time()
        started = time.perf_counter()
        self.result = self.run()
        return time.perf_counter() - started, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="timed rounds; medians are reported")
    parser.add_argument("--model", default="ggml-tiny.en")
    parser.add_argument("--threads", type=int, default=2, help="CTranslate2 CPU threads, as the worker's")
    args = parser.parse_args()

    env_models = os.environ.get("MODELS_DIR")
    models_dir = Path(env_models) if env_models else ROOT / "var" / "models"
    engine.install_bundled_models(models_dir)
    cache = engine.ModelCache(models_dir, cpu_threads=args.threads)
    model = cache.get(args.model)
    reference = REFERENCE.read_text()

    audio = engine.load_audio(RECORDING)
    duration = len(audio) / 16000
    started = time.perf_counter()
    windows = engine.plan_windows(audio)
    planned = time.perf_counter() - started
    speech = sum(window.speech_seconds for window in windows)
    print(f"{RECORDING.name}: {duration:.1f} s, {len(normalise(reference).split())} words in the reference")
    print(
        f"model {args.model} ({cache.compute_type}, {cache.cpu_threads} threads, {cache.device}); {os.cpu_count()} CPUs"
    )
    print(f"plan_windows: {len(windows)} windows, {speech:.1f} s of speech in them, {planned:.2f} s")

    def sequential() -> engine.TranscriptResult:
        return engine.transcribe(model, RECORDING, language=None, vad_filter=False)

    def windowed(batch_size: int, words: bool = False) -> Callable[[], engine.TranscriptResult]:
        def run() -> engine.TranscriptResult:
            samples = engine.load_audio(RECORDING)
            parts = engine.plan_windows(samples)
            transcripts = engine.transcribe_windows(
                model, samples, parts, language=None, word_timestamps=words, batch_size=batch_size
            )
            return engine.merge_windows(transcripts, duration=len(samples) / 16000)

        return run

    configurations = [
        Configuration("sequential", sequential),
        *(Configuration(f"windows, batch {size}", windowed(size)) for size in BATCH_SIZES),
        Configuration("windows, batch 8, words", windowed(8, words=True)),
    ]
    print(f"before: {load()}", flush=True)
    for configuration in configurations:
        configuration.once()  # warm-up
    for index in range(args.runs):
        shift = index % len(configurations)
        for configuration in configurations[shift:] + configurations[:shift]:
            wall, cpu = configuration.once()
            configuration.walls.append(wall)
            configuration.cpus.append(cpu)
        row = ", ".join(f"{c.label} {c.walls[-1]:.2f}" for c in configurations)
        print(f"round {index + 1} (wall s): {row}; {load()}", flush=True)

    def word_error_rate(configuration: Configuration) -> float:
        text = configuration.result.text if configuration.result else ""
        return float(jiwer.wer(normalise(reference), normalise(text)))

    base = configurations[0]
    base_wall, base_cpu = statistics.median(base.walls), statistics.median(base.cpus)
    base_wer = word_error_rate(base)
    print()
    print(
        f"{'':26} {'wall s':>7} {'CPU s':>7} {'wall ratio':>10} {'paired':>7} {'CPU ratio':>9} {'WER':>7} {'vs seq':>7}"
    )
    for configuration in configurations:
        wall, cpu = statistics.median(configuration.walls), statistics.median(configuration.cpus)
        paired = statistics.median(w / b for w, b in zip(configuration.walls, base.walls, strict=True))
        wer = word_error_rate(configuration)
        print(
            f"{configuration.label:26} {wall:7.2f} {cpu:7.2f} {wall / base_wall:10.3f} {paired:7.3f} "
            f"{cpu / base_cpu:9.3f} {wer:7.2%} {(wer - base_wer) * 100:+6.2f}pt"
        )
    print("runs (wall s): " + "; ".join(f"{c.label}: {', '.join(f'{t:.2f}' for t in c.walls)}" for c in configurations))
    words = next(c for c in configurations if c.label.endswith("words"))
    plain = next(c for c in configurations if c.label == "windows, batch 8")
    word_wall = statistics.median(words.walls) / statistics.median(plain.walls)
    word_cpu = statistics.median(words.cpus) / statistics.median(plain.cpus)
    print(f"word timestamps with batch 8: wall x{word_wall:.3f}, CPU x{word_cpu:.3f}")
    segments = {c.label: len(c.result.segments) for c in configurations if c.result is not None}
    print(f"segments: {segments}")
    print("issue 11 target (service level, upload to completed): wall ratio <= 0.45, WER <= sequential + 1.0 pt")
    print(f"after: {load()}")


if __name__ == "__main__":
    main()
