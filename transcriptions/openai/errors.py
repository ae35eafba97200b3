"""OpenAI's JSON error objects, on the OpenAI-compatible routes only.

Every failure of ``/audio/transcriptions``, ``/audio/translations`` and ``/models`` answers
``{"error": {"message", "type", "param", "code"}}`` with OpenAI's status codes, as the
``openai`` package expects them (it raises ``BadRequestError`` for a 400,
``AuthenticationError`` for a 401, ...). Everywhere else errors stay one line of plain text
(``whisper_site.errors``).

The ``openai`` package retries 408, 409, 429 and 5xx answers on its own unless the answer
says ``x-should-retry: false``. Each retry of a transcription is a new job, charged again:
the answers a retry cannot change (a job that failed, ran out of time or of tokens) say so.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import BadRequest, PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.http import Http404, HttpResponse, JsonResponse
from rest_framework import exceptions

from transcriptions.models import Transcription
from whisper_site.errors import ApplicationError, first_error_message

logger = logging.getLogger(__name__)

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"
INSUFFICIENT_QUOTA = "insufficient_quota"
RATE_LIMIT = "requests"

MISSING_KEY_MESSAGE = "Missing API key: send Authorization: Bearer <your API key>"
INSUFFICIENT_BALANCE_PREFIX = "Insufficient token balance"
# Failed jobs whose file is at fault: the request's fault, not the server's.
BAD_AUDIO_PREFIXES = ("File conversion failed", "Transcription failed: the file's audio could not be decoded")


class OpenAIError(ApplicationError):
    """An error answered as OpenAI's error object: a message, a status, and OpenAI's type, param and code.

    ``retry``: the ``x-should-retry`` header, for the answers the ``openai`` package would
    otherwise retry although a retry cannot help (None: no header).
    """

    def __init__(
        self,
        message: str,
        status: int = 400,
        *,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        retry: bool | None = None,
    ) -> None:
        super().__init__(message, status)
        self.type = type or error_type(status)
        self.param = param
        self.code = code
        self.retry = retry


def error_type(status: int) -> str:
    """OpenAI's ``type`` for a status: the client's fault, a limit, or the server's."""
    if status == 429:
        return RATE_LIMIT
    if status >= 500:
        return SERVER_ERROR
    return INVALID_REQUEST


def error_body(error: OpenAIError) -> dict[str, Any]:
    return {"error": {"message": error.message, "type": error.type, "param": error.param, "code": error.code}}


def openai_error_response(error: OpenAIError, headers: dict[str, str] | None = None) -> HttpResponse:
    """The JSON answer for ``error``."""
    response = JsonResponse(error_body(error), status=error.status, json_dumps_params={"ensure_ascii": False})
    for name, value in (headers or {}).items():
        response[name] = value
    if error.retry is not None:
        response["x-should-retry"] = "true" if error.retry else "false"
    return response


def error_response(message: str, status: int) -> HttpResponse:
    """An error raised before the view (``whisper_site.errors.error_response_for``), as OpenAI's object."""
    return openai_error_response(OpenAIError(message, status))


def _from_application_error(exc: ApplicationError) -> OpenAIError:
    """A service's plain-text error, given OpenAI's type, and the field it is about where one is named."""
    if isinstance(exc, OpenAIError):
        return exc
    message = exc.message
    if exc.status == 429:
        # USER_PENDING_JOB_QUOTA: jobs finish, so waiting and trying again helps.
        return OpenAIError(message, 429, code="rate_limit_exceeded")
    param = None
    code = None
    if message.startswith("Invalid model"):
        param, code = "model", "model_not_found"
    elif message.startswith("Invalid task"):
        param = "model"
    elif message.startswith("Invalid language"):
        param = "language"
    elif message.startswith("Invalid prompt"):
        param = "prompt"
    return OpenAIError(message, exc.status, param=param, code=code)


def _from_validation_error(exc: exceptions.ValidationError) -> OpenAIError:
    detail = exc.detail
    param = next(iter(detail), None) if isinstance(detail, dict) else None
    return OpenAIError(first_error_message(detail), 400, param=param)


def openai_exception_handler(exc: Exception, context: dict[str, Any]) -> HttpResponse:
    """The OpenAI routes' ``get_exception_handler``: every exception, expected or not, becomes an error object."""
    # Imported here, as whisper_site.errors does: rest_framework.views loads the
    # authentication classes at import time.
    from rest_framework.views import set_rollback

    set_rollback()
    headers: dict[str, str] = {}
    if isinstance(exc, ApplicationError):
        error = _from_application_error(exc)
    elif isinstance(exc, RequestDataTooBig):
        error = OpenAIError("Request body too large", 413)
    elif isinstance(exc, (SuspiciousOperation, BadRequest, UnicodeDecodeError, exceptions.ParseError)):
        error = OpenAIError("Malformed request body", 400)
    elif isinstance(exc, (exceptions.NotAuthenticated, exceptions.AuthenticationFailed)):
        message = MISSING_KEY_MESSAGE if isinstance(exc, exceptions.NotAuthenticated) else str(exc.detail)
        error = OpenAIError(message, 401, code="invalid_api_key")
        if getattr(exc, "auth_header", None):
            headers["WWW-Authenticate"] = exc.auth_header  # type: ignore[attr-defined]
    elif isinstance(exc, exceptions.ValidationError):
        error = _from_validation_error(exc)
    elif isinstance(exc, (Http404, exceptions.NotFound)):
        error = OpenAIError("Not found", 404)
    elif isinstance(exc, (PermissionDenied, exceptions.PermissionDenied)):
        error = OpenAIError("Permission denied", 403)
    elif isinstance(exc, exceptions.MethodNotAllowed):
        error = OpenAIError(f"Method not allowed: {context['request'].method}", 405)
    elif isinstance(exc, exceptions.UnsupportedMediaType):
        error = OpenAIError("Unsupported Content-Type: send multipart/form-data", 415)
    elif isinstance(exc, exceptions.Throttled):
        error = OpenAIError("Too many requests. Try again later", 429, code="rate_limit_exceeded")
        if exc.wait:
            headers["Retry-After"] = str(int(exc.wait))
    elif isinstance(exc, exceptions.APIException):
        error = OpenAIError(first_error_message(exc.detail), exc.status_code)
    else:
        # Not re-raised as DRF would: a crash here is a JSON 500 too, never Django's page.
        logger.exception("OpenAI-compatible route failed", exc_info=exc)
        error = OpenAIError("Internal server error", 500)
    return openai_error_response(error, headers)


def failed_job_error(job: Transcription) -> OpenAIError:
    """The answer for a job that failed: its stored ``error``, with the status OpenAI would give."""
    message = f"{job.error} (transcription {job.id.hex})"
    if job.error.startswith(INSUFFICIENT_BALANCE_PREFIX):
        return OpenAIError(message, 429, type=INSUFFICIENT_QUOTA, code=INSUFFICIENT_QUOTA, retry=False)
    if job.error.startswith(BAD_AUDIO_PREFIXES):
        return OpenAIError(message, 400, param="file")
    if job.error.startswith("Invalid language"):
        return OpenAIError(message, 400, param="language")
    # The job was refunded; a retry would be a new job that most likely ends the same way.
    return OpenAIError(message, 500, retry=False)


def unfinished_job_error(job: Transcription, seconds: float) -> OpenAIError:
    """The 504 for a job still pending or processing when the request stops waiting; the job goes on."""
    uuid = job.id.hex
    return OpenAIError(
        f"Transcription {uuid} did not finish within {seconds:g} seconds. It goes on: "
        f"GET /api/v1/transcribe/{uuid} shows its status and, once completed, its result",
        504,
        # A retry would queue the same audio again, and charge it again.
        retry=False,
    )


def vanished_job_error(job: Transcription, status: str | None) -> OpenAIError:
    """The answer for a job deleted (``status`` None) or stopped by its owner while the request waited."""
    if status is None:
        return OpenAIError(f"Transcription {job.id.hex} was deleted before it finished", 404, retry=False)
    return OpenAIError(f"Transcription {job.id.hex} was {status} before it finished", 409, retry=False)
