"""Transcription endpoints: ``/model``, ``/transcribe`` and ``/transcribe/:uuid``."""

from __future__ import annotations

from typing import Any

from rest_framework import viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from transcriptions import selectors, services
from transcriptions.models import Transcription
from whisper_site.errors import ApplicationError
from whisper_site.identifiers import parse_uuid
from whisper_site.request_body import body_object
from whisper_site.timestamps import format_timestamp
from whisper_site.viewsets import PublicReadMixin

NOT_FOUND_MESSAGE = "Transcription not found"


def transcription_body(job: Transcription) -> dict[str, Any]:
    """A job as ``GET /transcribe/:uuid`` shows it: ``error`` instead of ``data`` once failed."""
    body: dict[str, Any] = {
        "uuid": job.id.hex,
        "file_uuid": job.file_id.hex,
        "model": job.model,
        # The language asked for, else the detected one once known.
        "language": job.language or job.detected_language or None,
        "format": job.format,
        "status": job.status,
    }
    failed = job.status == Transcription.Status.FAILED
    if failed:
        body["error"] = job.error
    body["processed_at"] = format_timestamp(job.processed_at)
    if not failed:
        body["data"] = job.data if job.status == Transcription.Status.COMPLETED else None
    return body


class TranscriptionModelViewSet(viewsets.ViewSet):
    """``GET /model``: the installed Whisper models; admins also see their size in bytes."""

    def list(self, request: Request) -> Response:
        show_size = bool(request.user.is_admin)
        rows = []
        for model in selectors.model_list():
            row: dict[str, Any] = {"name": model.name}
            if show_size:
                row["size"] = model.size_bytes
            rows.append(row)
        return Response({"models": rows})


class TranscriptionViewSet(PublicReadMixin, viewsets.ViewSet):
    """``POST /transcribe`` (queue), ``GET /transcribe/:uuid`` (public), ``DELETE`` (owner)."""

    public_lookup = "transcription_id"

    def create(self, request: Request) -> Response:
        data = body_object(request)
        jobs = services.transcription_create(
            user=request.user,
            file_uuid=data.get("uuid"),
            model=data.get("model"),
            language=data.get("language"),
            formats_requested=data.get("format"),
        )
        return Response(
            {
                "message": "Transcription(s) queued successfully",
                "transcriptions": [{"uuid": job.id.hex, "format": job.format, "status": job.status} for job in jobs],
            }
        )

    def retrieve(self, request: Request, transcription_id: str) -> Response:
        key = parse_uuid(transcription_id)
        job = selectors.transcription_get(transcription_id=key)
        if job is not None:
            return Response(transcription_body(job))
        jobs = selectors.transcription_list_for_file(file_id=key)
        if jobs is None:
            raise ApplicationError(NOT_FOUND_MESSAGE, 404)
        return Response({"transcriptions": [transcription_body(job) for job in jobs]})

    def destroy(self, request: Request, transcription_id: str) -> Response:
        job = services.transcription_delete(user=request.user, transcription_id=parse_uuid(transcription_id))
        return Response(
            {
                "message": "Transcription deleted successfully",
                "uuid": job.id.hex,
                "model": job.model,
                "format": job.format,
            }
        )
