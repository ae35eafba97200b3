"""The inference side of a worker process: one model cache per process, warmed at start.

Each Celery pool process keeps the models it used in a :class:`~transcriptions.engine.ModelCache`
(at most ``WHISPER_MAX_LOADED_MODELS``, dropped after ``WHISPER_MODEL_IDLE_SECONDS`` unused).
Each model runs on ``WHISPER_CPU_THREADS`` threads, or on the cores divided by the worker's
pool size, so that the processes of one worker never ask for more threads than there are cores.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from django.conf import settings

from transcriptions import engine
from whisper_site.celery import worker_consumes

logger = logging.getLogger(__name__)

# Longest pause of the idle-unload timer: a model is dropped at most this long after its
# idle time is up.
IDLE_CHECK_MAX_SECONDS = 60.0

_cache: engine.ModelCache | None = None
_cache_lock = threading.Lock()
# The speaker models, loaded by the first diarized job of this process.
_diarizer: engine.Diarizer | None = None
# The pool size of the worker this process belongs to, recorded by the main process at
# worker_init and inherited by the pool processes it forks. None outside a worker.
_worker_concurrency: int | None = None


def cpu_threads() -> int:
    """Threads for one model: the setting, else the cores shared by the worker's pool processes."""
    if settings.WHISPER_CPU_THREADS:
        return settings.WHISPER_CPU_THREADS
    return engine.default_cpu_threads(_worker_concurrency or settings.CELERY_WORKER_CONCURRENCY)


def model_cache() -> engine.ModelCache:
    """This process's model cache, created from the settings on first use."""
    global _cache
    with _cache_lock:
        if _cache is None:
            _cache = engine.ModelCache(
                settings.MODELS_DIR,
                max_models=settings.WHISPER_MAX_LOADED_MODELS,
                idle_seconds=settings.WHISPER_MODEL_IDLE_SECONDS,
                device=settings.WHISPER_DEVICE,
                compute_type=settings.WHISPER_COMPUTE_TYPE or None,
                cpu_threads=cpu_threads(),
            )
        return _cache


def diarizer() -> engine.Diarizer:
    """This process's speaker diarizer, its models loaded (and their SHA-256 checked) on first use."""
    global _diarizer
    with _cache_lock:
        if _diarizer is None:
            _diarizer = engine.Diarizer(threads=cpu_threads(), similarity=settings.DIARIZATION_SIMILARITY)
        return _diarizer


def on_worker_init(sender: Any = None, **kwargs: Any) -> None:
    """Celery ``worker_init`` (main process, before the pool forks): note the pool size."""
    global _worker_concurrency
    concurrency = getattr(sender, "concurrency", None)
    if isinstance(concurrency, int) and concurrency > 0:
        _worker_concurrency = concurrency


def on_worker_process_init(**kwargs: Any) -> None:
    """Celery ``worker_process_init``: warm the default model and start the idle-unload timer.

    Both run on a daemon thread: Celery gives a new pool process only a few seconds to report
    ready, less than a large model takes to load. A job that arrives meanwhile waits for the
    same load (the cache loads each model once) instead of starting another.
    """
    global _cache, _diarizer
    # Each process loads its own models (the main process never loads any, but be sure).
    _cache = None
    _diarizer = None
    if worker_consumes(settings.TRANSCRIPTION_QUEUE) is False:
        return  # a conversion worker: it never transcribes, a model would only take memory
    threading.Thread(target=_warm_and_unload_idle, name="whisper-models", daemon=True).start()


def _warm_and_unload_idle() -> None:
    cache = model_cache()
    name = settings.DEFAULT_MODEL
    try:
        cache.get(name)
    except engine.UnknownModel:
        logger.warning("Default model %s is not installed in %s: not preloaded", name, settings.MODELS_DIR)
    except Exception:  # a broken model folder must not kill the pool process
        logger.exception("Preloading model %s failed (pid %d)", name, os.getpid())
    interval = min(IDLE_CHECK_MAX_SECONDS, max(1.0, settings.WHISPER_MODEL_IDLE_SECONDS / 2))
    while True:
        time.sleep(interval)
        cache.unload_idle()
