"""The OpenAI-compatible routes' work: an upload becomes a file and one ordinary job, then the wait.

Nothing here runs inference: the upload goes through the files app's upload service (the
user's own file, deduplicated by digest, within the quotas), the job through
``transcriptions.services.transcription_create`` (queued, charged and refunded like any
other), and the request then watches the job's row until it ends or the wait is over.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from django.conf import settings

from accounts.models import User
from files.services import file_upload
from files.uploads import StreamedUpload
from transcriptions import services
from transcriptions.models import Transcription
from transcriptions.openai.errors import INSUFFICIENT_QUOTA, OpenAIError
from transcriptions.openai.selectors import WHISPER_1, openai_model_list

RESPONSE_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
# Transcriptions also answer OpenAI's diarizing model's format: segments with their speaker.
TRANSCRIPTION_RESPONSE_FORMATS = (*RESPONSE_FORMATS, "diarized_json")
GRANULARITIES = ("segment", "word")
# The job each response format is answered from: json and text are read from verbose_json.
JOB_FORMATS = {
    "json": "verbose_json",
    "text": "verbose_json",
    "verbose_json": "verbose_json",
    "srt": "srt",
    "vtt": "vtt",
    "diarized_json": "verbose_json",
}
# Polling the job's row: often at first (short clips end within a second or two), then
# every half second; each poll is one indexed primary-key read.
POLL_FIRST_SECONDS = 0.1
POLL_MAX_SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class AudioRequest:
    """What an ``/audio/transcriptions`` or ``/audio/translations`` request asks for."""

    model: str
    response_format: str = "json"
    language: str | None = None
    prompt: str = ""
    temperature: float | None = None
    granularities: tuple[str, ...] = ()
    task: str = Transcription.Task.TRANSCRIBE

    @property
    def words(self) -> bool:
        return "word" in self.granularities

    @property
    def diarize(self) -> bool:
        return self.response_format == "diarized_json"


def openai_model_resolve(*, name: str) -> str:
    """The installed model an OpenAI ``model`` names (``whisper-1``: ``DEFAULT_MODEL``), or a 400."""
    offered = [model.id for model in openai_model_list()]
    if name not in offered:
        raise OpenAIError(
            f"Invalid model: {name}. Must be one of: {', '.join(offered)}",
            400,
            param="model",
            code="model_not_found",
        )
    return settings.DEFAULT_MODEL if name == WHISPER_1 else name


_UPLOAD_REFUSALS = {
    "file_too_large": (413, None),
    "empty_file": (400, None),
    "unsupported_content_type": (400, None),
    "file_too_long": (400, None),
    # The user's own file or storage quota: deleting files makes room, waiting does not.
    "quota_exceeded": (429, INSUFFICIENT_QUOTA),
}


def _upload_refusal(error: str, message: str) -> OpenAIError:
    status, kind = _UPLOAD_REFUSALS.get(error, (400, None))
    if error == "file_too_large":
        message = f"File too large. Maximum size is {settings.UPLOAD_MAX_FILE_BYTES} bytes"
    elif error == "unsupported_content_type":
        message = "Invalid file format: no audio or video that can be decoded"
    return OpenAIError(message, status, type=kind, param="file", code=error, retry=False if status == 429 else None)


def openai_transcription_create(*, user: User, part: StreamedUpload, request: AudioRequest) -> Transcription:
    """Store ``part`` as one of ``user``'s files and queue one job for ``request``; the job.

    The model, the language and the task are checked before anything is stored. The
    upload is the files app's (same bytes already owned: that file; refusals such as
    ``unsupported_content_type`` or ``quota_exceeded`` are OpenAI errors on ``file``), and
    the job an ordinary one of the format the answer is read from (``verbose_json`` for
    json, text, verbose_json and diarized_json), with word timestamps when ``word`` is
    asked and speakers told apart (priced as such) for diarized_json.
    """
    model = openai_model_resolve(name=request.model)
    options = services.TranscriptOptions(
        word_timestamps=request.words,
        prompt=request.prompt,
        task=request.task,
        temperature=request.temperature,
        diarize=request.diarize,
    )
    # Before the upload is stored: a refused request leaves no file behind.
    services.transcription_request_check(model=model, language=request.language, options=options)
    uploaded = file_upload(user=user, part=part)
    if uploaded.file is None:
        raise _upload_refusal(uploaded.error or "", uploaded.message)
    (job,) = services.transcription_create(
        user=user,
        file_id=uploaded.file.id,
        model=model,
        language=request.language,
        formats=[JOB_FORMATS[request.response_format]],
        options=options,
    )
    return job


def transcription_wait(*, job_id: uuid.UUID, seconds: float) -> tuple[Transcription | None, str | None]:
    """Watch a job's row until it leaves pending and processing, or ``seconds`` have passed.

    Returns the job as it then is (with its file) and its status; ``(None, None)`` when it
    was deleted meanwhile. Only the status is read while waiting, so a wait costs one small
    query per poll and holds no transaction or lock.
    """
    deadline = time.monotonic() + seconds
    pause = POLL_FIRST_SECONDS
    waiting = (Transcription.Status.PENDING, Transcription.Status.PROCESSING)
    while True:
        status = Transcription.objects.filter(id=job_id).values_list("status", flat=True).first()
        left = deadline - time.monotonic()
        if status is None or status not in waiting or left <= 0:
            break
        time.sleep(min(pause, left))
        pause = min(pause * 1.5, POLL_MAX_SECONDS)
    job = Transcription.objects.select_related("file").filter(id=job_id).first()
    return job, (job.status if job is not None else None)
