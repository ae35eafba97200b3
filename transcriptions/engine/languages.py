"""The languages a model can be asked to transcribe in, and the tasks it can be asked to do."""

from __future__ import annotations

from faster_whisper.tokenizer import _LANGUAGE_CODES

from transcriptions.engine.errors import InvalidLanguage, InvalidTask

# Whisper's two tasks: transcribe in the spoken language, or translate into English.
TASKS = ("transcribe", "translate")


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


def validate_task(task: str, multilingual: bool) -> None:
    """Raise :class:`InvalidTask` unless a model can be asked for ``task``.

    English-only models know no task token: faster-whisper silently transcribes instead,
    which would hand back a transcript that the caller takes for a translation.
    """
    if task not in TASKS:
        raise InvalidTask(f"Unknown task {task!r}; expected one of {', '.join(TASKS)}")
    if task == "translate" and not multilingual:
        raise InvalidTask("Task 'translate' is not available: the model is English-only")
