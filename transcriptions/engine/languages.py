"""The languages a model can be asked to transcribe in."""

from __future__ import annotations

from faster_whisper.tokenizer import _LANGUAGE_CODES

from transcriptions.engine.errors import InvalidLanguage


def supported_languages(multilingual: bool) -> tuple[str, ...]:
    """The language codes a model accepts: all of Whisper's, or only "en" for English-only models."""
    return tuple(_LANGUAGE_CODES) if multilingual else ("en",)


def validate_language(code: str, multilingual: bool) -> None:
    """Raise :class:`InvalidLanguage` unless ``code`` can be requested from such a model.

    Codes are Whisper's lower-case ones ("en", "de", "yue", ...). An English-only model only
    accepts "en": faster-whisper would silently transcribe as English instead, which hides
    the caller's mistake.
    """
    if code not in _LANGUAGE_CODES:
        raise InvalidLanguage(f"Unknown language code {code!r}")
    if not multilingual and code != "en":
        raise InvalidLanguage(f"Language {code!r} is not available: the model is English-only")
