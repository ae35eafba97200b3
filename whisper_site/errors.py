"""One-line plain-text errors for every failure the API can answer with.

Services raise :class:`ApplicationError`; views let DRF exceptions rise. The
DRF exception handler below turns both into ``text/plain`` bodies, and the
middleware and ``handler404``/``handler500`` views do the same for what never
reaches DRF (unknown paths, oversized bodies, crashes).
"""

from __future__ import annotations

import errno
import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import BadRequest, PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import Resolver404, resolve
from rest_framework import exceptions

logger = logging.getLogger(__name__)


class ApplicationError(Exception):
    """A domain error with the message and status code the API answers with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


# A disk (the upload spool, the media folder, a worker's scratch folder) or a quota full:
# 507 Insufficient Storage, the client may try again later. Nothing of the request is kept.
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
INSUFFICIENT_STORAGE_MESSAGE = "Insufficient storage"


def is_no_space(exc: BaseException) -> bool:
    """Whether ``exc`` says that a disk or a quota is full."""
    return isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS


def insufficient_storage_error() -> ApplicationError:
    """The 507 of a request whose bytes did not fit on the server's disk."""
    return ApplicationError(INSUFFICIENT_STORAGE_MESSAGE, 507)


def plain_text_response(message: str, status: int, headers: dict[str, str] | None = None) -> HttpResponse:
    """A one-line ``text/plain`` error response."""
    line = " ".join(str(message).split()) or "Error"
    response = HttpResponse(line, status=status, content_type="text/plain; charset=utf-8")
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def first_error_message(detail: Any) -> str:
    """The first message of a DRF error detail (a string, list or dict)."""
    if isinstance(detail, dict):
        for value in detail.values():
            return first_error_message(value)
        return "Invalid request"
    if isinstance(detail, (list, tuple)):
        for value in detail:
            return first_error_message(value)
        return "Invalid request"
    return str(detail)


_DRF_MESSAGES: dict[type[exceptions.APIException], str] = {
    exceptions.NotAuthenticated: "Missing valid Authorization header with session or API key",
    exceptions.ParseError: "Malformed request body",
    exceptions.UnsupportedMediaType: "Unsupported Content-Type",
    exceptions.NotAcceptable: "Not acceptable",
}


def plain_text_exception_handler(exc: Exception, context: dict[str, Any]) -> HttpResponse | None:
    """DRF's EXCEPTION_HANDLER: every error becomes one line of plain text."""
    # Imported here: rest_framework.views loads the authentication classes,
    # which import models, which import this module.
    from rest_framework.views import set_rollback

    if isinstance(exc, ApplicationError):
        set_rollback()
        return plain_text_response(exc.message, exc.status)
    if isinstance(exc, RequestDataTooBig):
        set_rollback()
        return plain_text_response("Request body too large", 413)
    if is_no_space(exc):
        set_rollback()
        logger.error("Request refused: %s", exc)
        return plain_text_response(INSUFFICIENT_STORAGE_MESSAGE, 507)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound("Not found")
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, (SuspiciousOperation, BadRequest, UnicodeDecodeError)):
        exc = exceptions.ParseError()
    if not isinstance(exc, exceptions.APIException):
        return None

    headers: dict[str, str] = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header  # type: ignore[attr-defined]
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(exc.wait))  # type: ignore[attr-defined]
    message = _DRF_MESSAGES.get(type(exc))
    if message is None:
        if isinstance(exc, exceptions.MethodNotAllowed):
            message = "Method not allowed"
        elif isinstance(exc, exceptions.Throttled):
            message = "Too many requests. Try again later"
        else:
            message = first_error_message(exc.detail)
    set_rollback()
    return plain_text_response(message, exc.status_code, headers)


def error_response_for(request: HttpRequest, message: str, status: int) -> HttpResponse:
    """An error answered before or outside a view, in the shape of the view its path routes to.

    One line of plain text, unless that view (a class, or a function) has an
    ``error_response(message, status)`` of its own: the OpenAI-compatible routes
    answer every error as OpenAI's JSON error object, the middleware's too.
    """
    try:
        match = resolve(request.path_info)
    except Resolver404:
        return plain_text_response(message, status)
    # DRF's views name their class ``cls``, Django's ``view_class``; a function is its own.
    view = getattr(match.func, "cls", None) or getattr(match.func, "view_class", None) or match.func
    render = getattr(view, "error_response", None)
    if render is None:
        return plain_text_response(message, status)
    return render(message, status)


class PlainTextErrorMiddleware:
    """Plain-text bodies for errors raised outside DRF views.

    Django answers an oversized body or a malformed multipart request with its
    own HTML 400 page; API clients get the one-line text instead (or the
    error shape of the route, see :func:`error_response_for`).
    """

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        # DRF parses JSON from the raw stream, past Django's body limit: bound
        # every non-multipart body here (file parts are bounded while they stream).
        content_type = request.META.get("CONTENT_TYPE", "")
        if not content_type.startswith("multipart/form-data"):
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                return error_response_for(request, "Invalid Content-Length", 400)
            if length > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
                return error_response_for(request, "Request body too large", 413)
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, RequestDataTooBig):
            return error_response_for(request, "Request body too large", 413)
        if isinstance(exception, (SuspiciousOperation, BadRequest)):
            return error_response_for(request, "Malformed request", 400)
        if is_no_space(exception):
            logger.error("Request refused: %s", exception)
            return error_response_for(request, INSUFFICIENT_STORAGE_MESSAGE, 507)
        return None


def not_found_view(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """``handler404``: unknown paths answer in plain text."""
    return plain_text_response("Not found", 404)


def server_error_view(request: HttpRequest) -> HttpResponse:
    """``handler500``: no stack trace, no HTML page."""
    return plain_text_response("Internal server error", 500)


def bad_request_view(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """``handler400``."""
    return plain_text_response("Bad request", 400)


def permission_denied_view(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """``handler403``."""
    return plain_text_response("Forbidden", 403)
