"""Who spoke when: the diarizer's accuracy, cost and memory on two recordings with known turns.

Run from the repository root::

    .venv/bin/python bench/diarization.py [--model ggml-tiny.en] [--threads 2]
    .venv/bin/python bench/diarization.py --make-conversation   # once, needs Festival (below)

Recordings (their turns in the JSON beside each):

- **real voices**: tests/data/speakers.opus, 47.5 s, four real people (John F. Kennedy,
  the speaker of hotwords.mp3 and the two of stereo_diarization.wav) in 12 turns of
  2-5 s, 0.6 s apart (bench/speakers_clip.py made it);
- **conversation**: bench/data/conversation.opus, four of Debian's Festival voices (two
  American men, an American woman, a Catalan woman reading English) in a meeting of
  short and long turns, some back to back (``--make-conversation`` made it from
  ``LINES`` below; it needs ``apt-get install festival festvox-kallpc16k
  festvox-kdlpc16k festvox-us-slt-hts festvox-ca-ona-hts``, and tries that itself as root).
- **both, 4 times**: the two one after the other, four times over (10 minutes, eight
  voices), for how it scales;

For each, in this one process: the transcription as a worker runs it for a short file
(``engine.transcribe``, word timestamps, the model as the worker loads it, ``--threads``
threads) and the diarization (``engine.Diarizer``, the same threads), each timed in CPU
seconds of this process (all threads); then the transcript labelled
(``engine.with_speakers``). Printed:

- **DER** (diarization error rate: missed speech + false alarm + confusion over the
  reference's speech, in 10 ms frames, a collar of 0.25 s around every reference turn's
  edges left out, each found speaker mapped to the reference speaker it overlaps most in
  the one-to-one mapping that maps the most speech), and speakers found against true;
- the share of the transcript's words (those whose middle lies in a reference turn)
  labelled with their turn's speaker under that mapping;
- CPU seconds per audio minute of the transcription alone and with diarization;
- the memory peak of a fresh process that only diarizes the longest recording (its
  VmHWM), and of this whole run (ru_maxrss, the Whisper model included).

The goals: DER at most 15 % on the real voices and the right number of speakers on
each. Figures only, no assertions.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from speakers_clip import turns_joined, write_clip  # noqa: E402

from transcriptions import engine  # noqa: E402

RATE = 16000
STEP = 0.01
COLLAR = 0.25
REAL = (ROOT / "tests" / "data" / "speakers.opus", ROOT / "tests" / "data" / "speakers.json")
CONVERSATION = (ROOT / "bench" / "data" / "conversation.opus", ROOT / "bench" / "data" / "conversation.json")

# --- The conversation ------------------------------------------------------------------------

VOICES = {
    "kal": "kal_diphone",
    "ked": "ked_diphone",
    "slt": "cmu_us_slt_arctic_hts",
    "ona": "upc_ca_ona_hts",
}
FESTIVAL_PACKAGES = ["festival", "festvox-kallpc16k", "festvox-kdlpc16k", "festvox-us-slt-hts", "festvox-ca-ona-hts"]
# (voice, pause before the line in seconds, line)
LINES = [
    ("kal", 0.0, "Good morning everyone, thanks for joining. Let's start with the budget."),
    ("slt", 0.5, "Morning. I sent the figures last night, did everybody get them?"),
    ("ked", 0.4, "Yes."),
    ("ona", 0.3, "I got them, but the travel line looks much higher than last quarter."),
    ("slt", 0.6, "That is the conference in March. Four of us are going."),
    ("kal", 0.4, "Four seems like a lot. Could we send two and share the notes?"),
    ("ked", 0.2, "I would rather keep four, the workshops run in parallel."),
    ("kal", 0.5, "Fair enough."),
    ("ona", 0.4, "Then we need to cut somewhere else. What about the new laptops?"),
    ("ked", 0.7, "Those can wait until summer, the old ones still work."),
    ("slt", 0.3, "Mine takes ten minutes to start in the morning."),
    ("ona", 0.4, "Then you get the first new one."),
    ("kal", 0.5, "Good. Next point, the hiring plan. We have two open positions."),
    ("slt", 0.4, "We had forty applications for the first one, I shortlisted six."),
    ("ked", 0.3, "Six is fine. Can we do the interviews next week?"),
    ("slt", 0.3, "Tuesday and Thursday afternoon work for me."),
    ("ona", 0.6, "I can only do Thursday."),
    ("kal", 0.4, "Then Thursday it is, all six in one afternoon."),
    ("ked", 0.5, "That is a long afternoon, but it saves a week."),
    ("slt", 0.4, "I will book the room and send the invitations today."),
    ("ona", 0.3, "Please add the coding exercise to the invitation."),
    ("slt", 0.2, "Of course."),
    ("kal", 0.6, "Last point, the release. Where are we with the testing?"),
    ("ked", 0.4, "Most tests pass. Two failures are left, both in the export."),
    ("ona", 0.4, "One of them is mine, I will fix it before lunch."),
    ("ked", 0.3, "The other one needs a decision about the file format."),
    ("kal", 0.5, "Let's keep the old format for this release and change it in the next."),
    ("slt", 0.3, "Agreed, that is the safer choice."),
    ("ona", 0.4, "Then we can release on Friday."),
    ("kal", 0.5, "Friday it is. Thanks everyone, see you next week."),
]


def make_conversation() -> None:
    """Speak ``LINES`` with Festival and write conversation.opus and its turns."""
    if shutil.which("text2wave") is None:
        if os.geteuid() != 0:
            raise SystemExit("text2wave not found: apt-get install " + " ".join(FESTIVAL_PACKAGES))
        subprocess.run(["apt-get", "install", "-y", "-qq", *FESTIVAL_PACKAGES], check=True)
    with tempfile.TemporaryDirectory() as folder:

        def spoken(index: int, voice: str, line: str) -> np.ndarray:
            path = Path(folder) / f"{index}.wav"
            subprocess.run(
                ["text2wave", "-eval", f"(voice_{VOICES[voice]})", "-o", str(path)],
                input=line.encode(),
                check=True,
                capture_output=True,
            )
            return engine.load_audio(path)

        clip, turns = turns_joined(
            (voice, pause, spoken(index, voice, line)) for index, (voice, pause, line) in enumerate(LINES)
        )
    write_clip(
        clip,
        turns,
        path=CONVERSATION[0],
        bitrate="24k",
        sources="Festival voices " + ", ".join(f"{key}: {name}" for key, name in VOICES.items()),
    )


# --- Scoring ----------------------------------------------------------------------------------


def _frames(turns: list[tuple[float, float, str]], count: int) -> list[set[str]]:
    active: list[set[str]] = [set() for _ in range(count)]
    for start, end, speaker in turns:
        for k in range(int(round(start / STEP)), min(count, int(round(end / STEP)))):
            active[k].add(speaker)
    return active


def _assignment(overlap: np.ndarray) -> dict[int, int]:
    """Rows matched to columns one to one so that the matched cells add up to the most.

    Every one-to-one matching is tried (speakers are few); past 10 a side, the greediest.
    """
    rows, columns = overlap.shape
    if max(rows, columns) > 10:
        matched: dict[int, int] = {}
        for flat in np.argsort(-overlap, axis=None):
            row, column = divmod(int(flat), columns)
            if row not in matched and column not in matched.values():
                matched[row] = column
        return matched
    best: tuple[float, dict[int, int]] = (-1.0, {})
    if rows <= columns:
        for choice in itertools.permutations(range(columns), rows):
            total = float(sum(overlap[row, column] for row, column in enumerate(choice)))
            if total > best[0]:
                best = (total, dict(enumerate(choice)))
    else:
        for choice in itertools.permutations(range(rows), columns):
            total = float(sum(overlap[row, column] for column, row in enumerate(choice)))
            if total > best[0]:
                best = (total, {row: column for column, row in enumerate(choice)})
    return best[1]


def best_mapping(reference: list[set[str]], found: list[set[str]], scored: np.ndarray) -> dict[str, str]:
    """The one-to-one mapping of found speakers to reference speakers that maps the most speech."""
    names = sorted({s for frame in reference for s in frame})
    labels = sorted({s for frame in found for s in frame})
    overlap = np.zeros((len(labels), len(names)))
    for k in np.flatnonzero(scored):
        for label in found[k]:
            for name in reference[k]:
                overlap[labels.index(label), names.index(name)] += 1
    return {labels[row]: names[column] for row, column in _assignment(overlap).items()}


def der(reference_turns: list[dict[str, Any]], found: list[tuple[float, float, str]]) -> tuple[float, dict[str, str]]:
    """Diarization error rate with a COLLAR around the reference's edges, and the mapping used."""
    ref = [(t["start"], t["end"], t["speaker"]) for t in reference_turns]
    end = max([e for _, e, _ in ref] + [e for _, e, _ in found])
    count = int(end / STEP) + 2
    reference, hypothesis = _frames(ref, count), _frames(found, count)
    scored = np.ones(count, dtype=bool)
    for start, stop, _ in ref:
        for edge in (start, stop):
            scored[max(0, int(round((edge - COLLAR) / STEP))) : int(round((edge + COLLAR) / STEP))] = False
    mapping = best_mapping(reference, hypothesis, scored)
    speech = errors = 0
    for k in np.flatnonzero(scored):
        truth, guess = reference[k], {mapping.get(label, f"?{label}") for label in hypothesis[k]}
        speech += len(truth)
        errors += max(len(truth), len(guess)) - len(truth & guess)
    return errors / max(speech, 1), mapping


def words_right(result: engine.TranscriptResult, reference_turns: list[dict[str, Any]]) -> tuple[int, int]:
    """(words labelled with their turn's speaker, words whose middle lies in a reference turn).

    The transcript's speaker names are mapped to the reference's one to one, the mapping
    that labels the most words right.
    """
    pairs: list[tuple[str, str]] = []
    for segment in result.segments:
        for word in segment.words or ():
            middle = (word.start + word.end) / 2
            turn = next((t for t in reference_turns if t["start"] <= middle <= t["end"]), None)
            if turn is not None:
                pairs.append((word.speaker or "", turn["speaker"]))
    labels = sorted({label for label, _ in pairs})
    names = sorted({name for _, name in pairs})
    counts = np.zeros((len(labels), len(names)))
    for label, name in pairs:
        counts[labels.index(label), names.index(name)] += 1
    right = sum(counts[row, column] for row, column in _assignment(counts).items())
    return int(right), len(pairs)


# --- Runs --------------------------------------------------------------------------------------


def _peak_kib() -> int:
    """This process's peak resident memory since its last exec (VmHWM).

    ru_maxrss would do in the parent, but Linux carries it over an exec from the process
    that forked, so a spawned child would report the parent's peak.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _diarize_only(path: str, threads: int, queue: Any) -> None:
    diarizer = engine.Diarizer(threads=threads)
    diarizer.diarize(engine.load_audio(path))
    queue.put(_peak_kib())


def diarize_peak_mib(path: Path, threads: int) -> float:
    """The memory peak of a fresh process that loads the speaker models and diarizes ``path``."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_diarize_only, args=(str(path), threads, queue))
    process.start()
    peak = queue.get()
    process.join()
    return peak / 1024


def joined(folder: Path, times: int) -> tuple[Path, Path]:
    """Both recordings one after the other, ``times`` over: eight voices, as a WAV and its turns."""
    parts, turns, offset = [], [], 0.0
    for _ in range(times):
        for audio_path, reference_path, tag in ((*CONVERSATION, "festival"), (*REAL, "real")):
            reference = json.loads(reference_path.read_text())
            audio = engine.load_audio(audio_path)
            turns += [
                {"speaker": f"{tag}-{t['speaker']}", "start": t["start"] + offset, "end": t["end"] + offset}
                for t in reference["turns"]
            ]
            parts.append(audio)
            offset += len(audio) / RATE
    samples = (np.clip(np.concatenate(parts), -1, 1) * 32767).astype(np.int16)
    wav = folder / "joined.wav"
    import wave

    with wave.open(str(wav), "wb") as target:
        target.setnchannels(1)
        target.setsampwidth(2)
        target.setframerate(RATE)
        target.writeframes(samples.tobytes())
    reference = {"duration": round(offset, 2), "speakers": len({t["speaker"] for t in turns}), "turns": turns}
    (folder / "joined.json").write_text(json.dumps(reference))
    return wav, folder / "joined.json"


def run(name: str, audio_path: Path, reference_path: Path, model: Any, diarizer: engine.Diarizer) -> dict[str, Any]:
    reference = json.loads(reference_path.read_text())
    started = time.process_time()
    result = engine.transcribe(model, audio_path, language="en", vad_filter=False, word_timestamps=True)
    transcribe_cpu = time.process_time() - started
    started = time.process_time()
    turns = diarizer.diarize(engine.load_audio(audio_path))
    diarize_cpu = time.process_time() - started
    labelled = engine.with_speakers(result, turns)
    error, _ = der(reference["turns"], [(t.start, t.end, str(t.speaker)) for t in turns])
    right, total = words_right(labelled, reference["turns"])
    minutes = reference["duration"] / 60
    return {
        "name": name,
        "duration": reference["duration"],
        "turns": len(reference["turns"]),
        "der": error,
        "found": len({t.speaker for t in turns}),
        "true": reference["speakers"],
        "words": (right, total),
        "transcribe_cpu_per_min": transcribe_cpu / minutes,
        "with_diarize_cpu_per_min": (transcribe_cpu + diarize_cpu) / minutes,
        "diarize_cpu_per_min": diarize_cpu / minutes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="ggml-tiny.en")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models-dir", default=str(ROOT / "var" / "models"))
    parser.add_argument("--make-conversation", action="store_true")
    args = parser.parse_args()
    if args.make_conversation:
        make_conversation()
        return
    models_dir = Path(args.models_dir)
    engine.install_bundled_models(models_dir)
    cache = engine.ModelCache(models_dir, max_models=1, idle_seconds=3600, device="cpu", cpu_threads=args.threads)
    model = cache.get(args.model)
    diarizer = engine.Diarizer(threads=args.threads)
    print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}; {args.model}, {args.threads} threads")
    rows = [
        run("real voices", *REAL, model, diarizer),
        run("conversation", *CONVERSATION, model, diarizer),
    ]
    with tempfile.TemporaryDirectory() as folder:
        long_wav, long_reference = joined(Path(folder), 4)
        rows.append(run("both, 4 times", long_wav, long_reference, model, diarizer))
        peak = diarize_peak_mib(long_wav, args.threads)
    print(
        f"{'recording':<14}{'audio':>8}{'turns':>7}{'DER':>8}{'speakers':>10}{'words right':>14}"
        f"{'CPU s/min: transcribe':>23}{'+ diarize':>11}{'(diarize)':>11}"
    )
    for row in rows:
        right, total = row["words"]
        print(
            f"{row['name']:<14}{row['duration']:>7.1f}s{row['turns']:>7}{row['der'] * 100:>7.1f}%"
            f"{row['found']:>5} of {row['true']:<2}{right:>6}/{total:<4}{right / max(total, 1) * 100:>3.0f}%"
            f"{row['transcribe_cpu_per_min']:>23.1f}{row['with_diarize_cpu_per_min']:>11.1f}"
            f"{row['diarize_cpu_per_min']:>11.1f}"
        )
    whole = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"memory peak: diarizing alone {peak:.0f} MiB; this run with {args.model} {whole:.0f} MiB")


if __name__ == "__main__":
    main()
