"""A per-process cache of loaded models."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from faster_whisper import WhisperModel

from transcriptions.engine.models import resolve_model_path

logger = logging.getLogger(__name__)

# Measured on a 2-core AMD EPYC without AVX2/AVX512 (tiny.en on jfk.flac: int8 0.62 s,
# float32 0.86 s; on a 60 s clip 3.1 s vs 4.7 s; base 1.8 s vs 2.5 s). "default" resolves
# to float32 there because the saved float16 weights have no fast CPU kernels.
DEFAULT_CPU_COMPUTE_TYPE = "int8"
DEFAULT_CUDA_COMPUTE_TYPE = "default"


def default_cpu_threads(concurrency: int = 1) -> int:
    """Threads per model so that ``concurrency`` models running at once share the cores."""
    return max(1, (os.cpu_count() or 1) // max(1, concurrency))


def default_compute_type(device: str) -> str:
    """The CTranslate2 compute type used when none is configured (int8 on CPU)."""
    return DEFAULT_CPU_COMPUTE_TYPE if device == "cpu" else DEFAULT_CUDA_COMPUTE_TYPE


@dataclass(slots=True)
class _CachedModel:
    model: WhisperModel
    last_used: float


class ModelCache:
    """Loaded models of this process: at most ``max_models``, least recently used evicted.

    Thread-safe: a model requested by several threads at once is loaded once, while
    different models may load in parallel. Models unused for ``idle_seconds`` are dropped on
    the next access or by :meth:`unload_idle` (for a periodic call). Dropping a model only
    releases the cache's reference: a transcription still running on it keeps it alive
    until it finishes.
    """

    def __init__(
        self,
        models_dir: Path,
        *,
        max_models: int = 2,
        idle_seconds: float = 600.0,
        device: str = "cpu",
        compute_type: str | None = None,
        cpu_threads: int | None = None,
        concurrency: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Configure the cache; nothing is loaded until :meth:`get`.

        ``cpu_threads`` defaults to the cores divided by ``concurrency`` (the number of
        transcriptions this machine runs at once) so that workers never oversubscribe cores.
        ``compute_type`` defaults to int8 on CPU and "default" (the saved type) elsewhere.
        ``clock`` is injectable so idle expiry can be tested without sleeping.
        """
        if max_models < 1:
            raise ValueError("max_models must be at least 1")
        self.models_dir = Path(models_dir)
        self.max_models = max_models
        self.idle_seconds = idle_seconds
        self.device = device
        self.compute_type = compute_type or default_compute_type(device)
        self.cpu_threads = cpu_threads if cpu_threads is not None else default_cpu_threads(concurrency)
        self._clock = clock
        self._lock = threading.Lock()
        self._models: OrderedDict[str, _CachedModel] = OrderedDict()
        self._loading_locks: dict[str, threading.Lock] = {}

    def get(self, name: str) -> WhisperModel:
        """Return model ``name``, loading it on first use; raise :class:`UnknownModel`."""
        with self._lock:
            self._unload_idle_locked()
            cached = self._touch_locked(name)
            if cached is not None:
                return cached
            loading_lock = self._loading_locks.setdefault(name, threading.Lock())

        # Loading takes a second or more: hold only this model's lock meanwhile, so that
        # requests for models already loaded are not held up.
        with loading_lock:
            with self._lock:
                cached = self._touch_locked(name)
                if cached is not None:
                    return cached
            model = self._load(name)
            with self._lock:
                self._models[name] = _CachedModel(model=model, last_used=self._clock())
                while len(self._models) > self.max_models:
                    evicted, _ = self._models.popitem(last=False)
                    logger.info("Unloaded model %s (cache holds %d)", evicted, self.max_models)
                return model

    def unload_idle(self) -> list[str]:
        """Drop models unused for ``idle_seconds`` and return their names."""
        with self._lock:
            return self._unload_idle_locked()

    def loaded(self) -> list[str]:
        """Names of the models loaded now, least recently used first."""
        with self._lock:
            return list(self._models)

    def clear(self) -> None:
        """Drop every loaded model."""
        with self._lock:
            self._models.clear()

    def _touch_locked(self, name: str) -> WhisperModel | None:
        cached = self._models.get(name)
        if cached is None:
            return None
        cached.last_used = self._clock()
        self._models.move_to_end(name)
        return cached.model

    def _unload_idle_locked(self) -> list[str]:
        now = self._clock()
        idle = [name for name, cached in self._models.items() if now - cached.last_used >= self.idle_seconds]
        for name in idle:
            del self._models[name]
            logger.info("Unloaded idle model %s", name)
        return idle

    def _load(self, name: str) -> WhisperModel:
        path = resolve_model_path(self.models_dir, name)
        started = time.perf_counter()
        model = WhisperModel(
            str(path),
            device=self.device,
            compute_type=self.compute_type,
            cpu_threads=self.cpu_threads,
            num_workers=1,
            # A folder path never reaches the hub; this also makes a typo fail fast.
            local_files_only=True,
        )
        logger.info(
            "Loaded model %s on %s (%s, %d threads) in %.2f s",
            name,
            self.device,
            self.compute_type,
            self.cpu_threads,
            time.perf_counter() - started,
        )
        return model
