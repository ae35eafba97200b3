"""File endpoints: ``/file`` (list, upload) and ``/file/:uuid`` (download, rename, delete)."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import TooManyFilesSent
from django.http import HttpResponse
from rest_framework import viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from files import selectors, services
from files.downloads import file_download_response
from files.models import File
from files.services import UploadResult
from files.uploads import StreamedUpload, install_file_upload_handler
from whisper_site.errors import ApplicationError
from whisper_site.identifiers import parse_uuid
from whisper_site.pagination import page_request, paginate
from whisper_site.request_body import body_object
from whisper_site.timestamps import format_timestamp
from whisper_site.viewsets import PublicReadMixin


def file_row(file: File) -> dict[str, Any]:
    """A row of ``GET /file``: the reference's fields, then ``status``, ``duration`` and ``error``."""
    return {
        "uuid": file.id.hex,
        "filename": file.filename,
        "content_type": file.content_type,
        "size_bytes": file.size_bytes,
        "uploaded_at": format_timestamp(file.uploaded_at),
        "status": file.state,
        "duration": file.duration,
        "error": file.error if file.state == File.State.FAILED else None,
    }


def upload_row(result: UploadResult) -> dict[str, Any]:
    """A row of ``POST /file``'s answer, shaped as the reference shows (no uuid/hash on errors)."""
    row: dict[str, Any] = {"message": result.message, "filename": result.filename}
    if result.file is not None:
        row["uuid"] = result.file.id.hex
        row["hash"] = result.file.blake3
    status: dict[str, Any] = {"existed": result.existed, "uploaded": result.uploaded}
    if result.error is not None:
        status["error"] = result.error
    row["status"] = status
    return row


class FileViewSet(PublicReadMixin, viewsets.ViewSet):
    """``/file`` and ``/file/:uuid``. Downloads are public by uuid; the rest is the owner's."""

    public_lookup = "file_id"

    def list(self, request: Request) -> Response:
        rows, pagination = paginate(selectors.file_list(user=request.user), page_request(request.query_params))
        return Response({"files": [file_row(file) for file in rows], "pagination": pagination})

    def create(self, request: Request) -> Response:
        if not request.content_type.startswith("multipart/form-data"):
            raise ApplicationError("Content-Type must be multipart/form-data", 400)
        handler = install_file_upload_handler(request)
        try:
            try:
                parts = [part for part in request.FILES.getlist("file") if isinstance(part, StreamedUpload)]
            except TooManyFilesSent:
                raise ApplicationError(handler.too_many_message, 400) from None
            results = services.file_upload_many(user=request.user, parts=parts)
        finally:
            # Temporary files go whatever happened; stored ones were moved or copied.
            handler.cleanup()
        return Response({"files": [upload_row(result) for result in results]})

    def retrieve(self, request: Request, file_id: str) -> HttpResponse:
        file = selectors.file_get_public(file_id=parse_uuid(file_id))
        if file is None:
            raise ApplicationError(selectors.NOT_FOUND_MESSAGE, 404)
        return file_download_response(
            file,
            range_header=request.META.get("HTTP_RANGE"),
            if_range=request.META.get("HTTP_IF_RANGE"),
            head=request.method == "HEAD",
        )

    def partial_update(self, request: Request, file_id: str) -> Response:
        key = parse_uuid(file_id)
        data = body_object(request)
        if data.get("filename") is None:
            raise ApplicationError("Missing 'filename' field in request body", 400)
        file, old = services.file_rename(user=request.user, file_id=key, filename=data["filename"])
        return Response(
            {
                "message": "Filename updated successfully",
                "uuid": file.id.hex,
                "old_filename": old,
                "new_filename": file.filename,
            }
        )

    def destroy(self, request: Request, file_id: str) -> Response:
        file = services.file_delete(user=request.user, file_id=parse_uuid(file_id))
        return Response({"message": "File deleted successfully", "uuid": file.id.hex, "filename": file.filename})
