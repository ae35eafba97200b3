"""The errors the engine raises on purpose."""

from __future__ import annotations


class EngineError(Exception):
    """Base class of the errors the engine raises on purpose."""


class InvalidLanguage(EngineError, ValueError):
    """A language code Whisper does not know, or a non-English code for an English-only model."""


class InvalidTask(EngineError, ValueError):
    """A task other than "transcribe" or "translate", or "translate" for an English-only model."""


class UnknownModel(EngineError, LookupError):
    """No usable model folder of that name in the models folder."""


class ModelIntegrityError(EngineError):
    """A bundled model's package file, or a speaker model, is not the one this code pins (its SHA-256 differs)."""


class ModelDownloadError(EngineError):
    """An official model could not be fetched (offline, unknown to the hub, or already installed)."""
