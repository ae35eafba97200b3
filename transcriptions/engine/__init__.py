"""Whisper inference: the models on disk, a per-process model cache, and transcription.

Everything here takes plain arguments (a models folder, a device, a thread count) so that it
can run and be tested without Django configured; the transcriptions app passes its settings in.

- :mod:`.models`: the bundled models installed from their Python packages, and the registry
  of model folders under the models folder;
- :mod:`.languages`: which language codes and tasks a model accepts;
- :mod:`.cache`: :class:`ModelCache`, the models loaded by this process;
- :mod:`.inference`: :func:`transcribe`, one audio file to a :class:`TranscriptResult`;
- :mod:`.windows`: a recording cut into windows of speech (:func:`plan_windows`), windows
  decoded in batches (:func:`transcribe_windows`) and merged into one result
  (:func:`merge_windows`), for work shared between workers;
- :mod:`.diarization`: who spoke when (:class:`Diarizer`, ONNX models run by sherpa-onnx);
- :mod:`.speakers`: a transcript labelled with those speakers (:func:`with_speakers`).
"""

from __future__ import annotations

from transcriptions.engine.cache import (
    DEFAULT_CPU_COMPUTE_TYPE,
    DEFAULT_CUDA_COMPUTE_TYPE,
    ModelCache,
    default_compute_type,
    default_cpu_threads,
)
from transcriptions.engine.diarization import MAX_SPEAKERS, Diarizer, SpeakerTurn
from transcriptions.engine.errors import (
    EngineError,
    InvalidLanguage,
    InvalidTask,
    ModelDownloadError,
    ModelIntegrityError,
    UnknownModel,
)
from transcriptions.engine.inference import (
    DEFAULT_TEMPERATURES,
    SAMPLING_RATE,
    Segment,
    TranscriptResult,
    Word,
    join_segment_texts,
    temperature_schedule,
    transcribe,
)
from transcriptions.engine.languages import TASKS, supported_languages, validate_language, validate_task
from transcriptions.engine.models import (
    BUNDLED_MODELS,
    MODEL_NAME_PATTERN,
    BundledModel,
    ModelInfo,
    PackageFile,
    available_models,
    download_official_model,
    install_bundled_models,
    is_multilingual_model,
    is_valid_model_folder,
    resolve_model_path,
)
from transcriptions.engine.speakers import speaker_label, turns_from_json, turns_json, with_speakers
from transcriptions.engine.windows import (
    MAX_WINDOW_SECONDS,
    Window,
    WindowTranscript,
    load_audio,
    merge_windows,
    plan_windows,
    transcribe_windows,
)

__all__ = [
    "BUNDLED_MODELS",
    "DEFAULT_CPU_COMPUTE_TYPE",
    "DEFAULT_CUDA_COMPUTE_TYPE",
    "DEFAULT_TEMPERATURES",
    "MAX_SPEAKERS",
    "MAX_WINDOW_SECONDS",
    "MODEL_NAME_PATTERN",
    "SAMPLING_RATE",
    "TASKS",
    "BundledModel",
    "Diarizer",
    "EngineError",
    "InvalidLanguage",
    "InvalidTask",
    "ModelCache",
    "ModelDownloadError",
    "ModelInfo",
    "ModelIntegrityError",
    "PackageFile",
    "Segment",
    "SpeakerTurn",
    "TranscriptResult",
    "UnknownModel",
    "Window",
    "WindowTranscript",
    "Word",
    "available_models",
    "download_official_model",
    "default_compute_type",
    "default_cpu_threads",
    "install_bundled_models",
    "is_multilingual_model",
    "is_valid_model_folder",
    "join_segment_texts",
    "load_audio",
    "merge_windows",
    "plan_windows",
    "resolve_model_path",
    "speaker_label",
    "supported_languages",
    "temperature_schedule",
    "transcribe",
    "transcribe_windows",
    "turns_from_json",
    "turns_json",
    "validate_language",
    "validate_task",
    "with_speakers",
]
