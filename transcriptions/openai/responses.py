"""OpenAI's answers, read from a completed job's stored data.

- ``json``: ``{"text"}``;
- ``text``, ``srt``, ``vtt``: the text or the subtitle file, as ``text/plain``;
- ``verbose_json``: ``{"task", "language" (English name), "duration", "text", "segments",
  "words"}``, with ``segments`` unless only ``word`` was asked and ``words`` only when it
  was, as OpenAI answers;
- ``diarized_json``: ``{"task", "duration", "text", "segments"}`` as OpenAI's diarizing
  model answers, each segment ``{"type": "transcript.text.segment", "id", "start", "end",
  "text", "speaker"}`` with speakers named ``A``, ``B``, ... in order of first appearance
  (OpenAI's names; the native API's ``SPEAKER_00`` is ``A``).

The job's ``verbose_json`` is the native API's: segments with ``id``, ``seek``, ``start``,
``end``, ``text``, ``tokens``, ``temperature``, ``avg_logprob``, ``compression_ratio``,
``no_speech_prob``, ``language`` and, with word timestamps, ``words``; ``duration``,
``task`` and the ``language`` code at the top. Data stored before those fields existed is
answered with what the job and its file know (the segment's place as ``id``, the file's
duration, the job's task) and the neutral defaults of :func:`transcriptions.formats.verbose_json`.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse, JsonResponse

from transcriptions import formats
from transcriptions.engine.language_names import language_name
from transcriptions.models import Transcription
from transcriptions.openai.services import AudioRequest

TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"
# UTF-8 as it is, as OpenAI writes it (and DRF here, UNICODE_JSON).
UNICODE_JSON = {"ensure_ascii": False}
# OpenAI's segment object: the stored segment's fields but its language and words.
SEGMENT_FIELDS = (
    "id",
    "seek",
    "start",
    "end",
    "text",
    "tokens",
    "temperature",
    "avg_logprob",
    "compression_ratio",
    "no_speech_prob",
)


def verbose_json(job: Transcription, request: AudioRequest) -> dict[str, Any]:
    """The ``verbose_json`` answer from a completed ``verbose_json`` job."""
    data = job.data or {}
    # The native verbose_json, with the engine's defaults where older stored data lacks a field.
    stored = formats.verbose_json(data, word_timestamps=True)
    body: dict[str, Any] = {
        "task": data.get("task") or job.task,
        "language": language_name(stored["language"] or job.reported_language),
        # Older data has no duration: the file's measured one, rather than the last segment's end.
        "duration": float(data["duration"] if "duration" in data else job.file.duration),
        "text": stored["text"],
    }
    if not request.granularities or "segment" in request.granularities:
        body["segments"] = [{name: segment[name] for name in SEGMENT_FIELDS} for segment in stored["segments"]]
    if request.words:
        body["words"] = [
            {"word": word["word"], "start": word["start"], "end": word["end"]}
            for segment in stored["segments"]
            for word in segment["words"]
        ]
    return body


def _openai_speaker(name: str | None) -> str:
    """OpenAI's name of a speaker: ``SPEAKER_00`` -> ``A``, ``SPEAKER_01`` -> ``B``, ..."""
    try:
        number = int(str(name).rsplit("_", 1)[-1])
    except ValueError:
        return str(name)
    letters = ""
    number += 1
    while number:
        number, rest = divmod(number - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters


def diarized_json(job: Transcription) -> dict[str, Any]:
    """The ``diarized_json`` answer from a completed ``verbose_json`` job that told speakers apart."""
    data = job.data or {}
    stored = formats.verbose_json(data)
    return {
        "task": data.get("task") or job.task,
        "duration": float(data["duration"] if "duration" in data else job.file.duration),
        "text": stored["text"],
        "segments": [
            {
                "type": "transcript.text.segment",
                "id": f"seg_{index}",
                "start": segment["start"],
                "end": segment["end"],
                "text": segment["text"],
                "speaker": _openai_speaker(segment.get("speaker", "SPEAKER_00")),
            }
            for index, segment in enumerate(stored["segments"])
        ],
    }


def _plain_text(text: str) -> HttpResponse:
    # One final newline, as OpenAI's text answers end.
    return HttpResponse(text.rstrip("\n") + "\n", content_type=TEXT_CONTENT_TYPE)


def openai_transcription_response(job: Transcription, request: AudioRequest) -> HttpResponse:
    """The answer in ``request.response_format`` from ``job``, completed."""
    data = job.data or {}
    fmt = request.response_format
    if fmt == "json":
        return JsonResponse({"text": data.get("text", "")}, json_dumps_params=UNICODE_JSON)
    if fmt == "verbose_json":
        return JsonResponse(verbose_json(job, request), json_dumps_params=UNICODE_JSON)
    if fmt == "diarized_json":
        return JsonResponse(diarized_json(job), json_dumps_params=UNICODE_JSON)
    # text from verbose_json's text; srt and vtt store the whole file as their text.
    return _plain_text(data.get("text", ""))
