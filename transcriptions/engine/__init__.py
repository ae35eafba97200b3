"""Whisper inference: the models on disk, a per-process model cache, and transcription.

Everything here takes plain arguments (a models folder, a device, a thread count) so that it
can run and be tested without Django configured; the transcriptions app passes its settings in.

- :mod:`.models`: the bundled models installed from their Python packages, and the registry
  of model folders under the models folder;
- :mod:`.languages`: which language codes a model accepts;
- :mod:`.cache`: :class:`ModelCache`, the models loaded by this process;
- :mod:`.inference`: :func:`transcribe`, one audio file to a :class:`TranscriptResult`.
"""

from __future__ import annotations

from transcriptions.engine.cache import (
    DEFAULT_CPU_COMPUTE_TYPE,
    DEFAULT_CUDA_COMPUTE_TYPE,
    ModelCache,
    default_compute_type,
    default_cpu_threads,
)
from transcriptions.engine.errors import EngineError, InvalidLanguage, UnknownModel
from transcriptions.engine.inference import Segment, TranscriptResult, join_segment_texts, transcribe
from transcriptions.engine.languages import supported_languages, validate_language
from transcriptions.engine.models import (
    BUNDLED_MODELS,
    MODEL_NAME_PATTERN,
    BundledModel,
    ModelInfo,
    PackageFile,
    available_models,
    install_bundled_models,
    is_multilingual_model,
    is_valid_model_folder,
    resolve_model_path,
)

__all__ = [
    "BUNDLED_MODELS",
    "DEFAULT_CPU_COMPUTE_TYPE",
    "DEFAULT_CUDA_COMPUTE_TYPE",
    "MODEL_NAME_PATTERN",
    "BundledModel",
    "EngineError",
    "InvalidLanguage",
    "ModelCache",
    "ModelInfo",
    "PackageFile",
    "Segment",
    "TranscriptResult",
    "UnknownModel",
    "available_models",
    "default_compute_type",
    "default_cpu_threads",
    "install_bundled_models",
    "is_multilingual_model",
    "is_valid_model_folder",
    "join_segment_texts",
    "resolve_model_path",
    "supported_languages",
    "transcribe",
    "validate_language",
]
