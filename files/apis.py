"""File endpoints: ``/file`` (list, upload) and ``/file/:uuid`` (download, rename, delete).

Each action reads its input with an input serializer, calls one selector or service and
answers with an output serializer; drf-spectacular reads the same serializers, with the
``extend_schema`` beside each action, for ``/api/v1/schema``.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import TooManyFilesSent
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_serializer,
)
from rest_framework import serializers, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from files import selectors, services
from files.downloads import ON_DISK_MESSAGE, file_download_response
from files.models import File
from files.services import UploadResult
from files.uploads import StreamedUpload, install_file_upload_handler, too_many_files_message
from whisper_site.api_fields import BODY_ERRORS, ConstantField, StrictStringField, TimestampField
from whisper_site.errors import ApplicationError
from whisper_site.identifiers import parse_uuid
from whisper_site.openapi import AUTH_ERRORS, plain_text_errors, uuid_path_parameter
from whisper_site.pagination import (
    LIMIT_MESSAGE,
    PAGE_MESSAGE,
    PageQuerySerializer,
    PaginationOutputSerializer,
    paginate,
)
from whisper_site.request_body import body_object
from whisper_site.viewsets import PublicReadMixin

MISSING_FILENAME_MESSAGE = "Missing 'filename' field in request body"


# --- Fields ------------------------------------------------------------------------


# Binary in the schema: drf-spectacular writes a FileField as a string unless request and
# response components are split.
@extend_schema_field(OpenApiTypes.BINARY)
class UploadPartField(serializers.FileField):
    """One multipart part, streamed to a temporary file (files.uploads)."""


# --- Input serializers -------------------------------------------------------------


class FileUploadInputSerializer(serializers.Serializer):
    """One or more multipart parts named `file`, one per file."""

    file = serializers.ListField(
        child=UploadPartField(allow_empty_file=True),
        allow_empty=False,
        min_length=1,
        max_length=settings.UPLOAD_MAX_FILES,
        help_text=(
            "One part per file (repeat the field), at most "
            f"{settings.UPLOAD_MAX_FILES} per request, each at most {settings.UPLOAD_MAX_FILE_BYTES} bytes."
        ),
        error_messages={
            "required": services.NO_FILES_MESSAGE,
            "empty": services.NO_FILES_MESSAGE,
            "min_length": services.NO_FILES_MESSAGE,
            "max_length": too_many_files_message(),
        },
    )


class FileRenameInputSerializer(serializers.Serializer):
    # The whole body of the PATCH, filename required: never partial. drf-spectacular would
    # document a PATCH body as partial (every field optional) by setting ``partial``.
    @property
    def partial(self) -> bool:
        return False

    @partial.setter
    def partial(self, value: bool) -> None:
        pass

    filename = StrictStringField(
        help_text="The new name: folders and control characters are removed, then 1-255 characters must be left.",
        error_messages={
            "required": MISSING_FILENAME_MESSAGE,
            "null": MISSING_FILENAME_MESSAGE,
            "invalid": services.FILENAME_LENGTH_MESSAGE,
        },
    )


# --- Output serializers ------------------------------------------------------------


class FileOutputSerializer(serializers.Serializer):
    """One of your files: `status` is its conversion's, `error` says why that failed."""

    uuid = serializers.CharField(source="id.hex")
    filename = serializers.CharField()
    content_type = serializers.CharField(help_text="audio/mpeg (audio, served as MP3) or video/mp4.")
    size_bytes = serializers.IntegerField(help_text="Bytes of the stored MP3/MP4.")
    uploaded_at = TimestampField()
    status = serializers.CharField(source="state", help_text="The conversion: processing, ready or failed.")
    duration = serializers.FloatField(help_text="Seconds of audio.")
    error = serializers.CharField(allow_null=True, help_text="Why the conversion failed; null unless failed.")

    def to_representation(self, file: File) -> dict[str, Any]:
        row = super().to_representation(file)
        if file.state != File.State.FAILED:
            row["error"] = None
        return row


# many=False: the "list" action answers one object that holds the list.
@extend_schema_serializer(many=False)
class FileListOutputSerializer(serializers.Serializer):
    files = FileOutputSerializer(many=True)
    pagination = PaginationOutputSerializer()


class UploadStatusOutputSerializer(serializers.Serializer):
    existed = serializers.BooleanField()
    uploaded = serializers.BooleanField()
    error = serializers.CharField(
        required=False,
        help_text=(
            "Only on a refused part: unsupported_content_type, file_too_large, empty_file, "
            "file_too_long (longer than the maximum duration) or quota_exceeded (the user's file or storage quota)."
        ),
    )

    def to_representation(self, result: UploadResult) -> dict[str, Any]:
        status = super().to_representation(result)
        if result.error is None:
            del status["error"]
        return status


class UploadOutputSerializer(serializers.Serializer):
    """One uploaded part's outcome; a refused part has no `uuid` or `hash`."""

    message = serializers.CharField(help_text="File uploaded successfully, File already exists, or the refusal.")
    filename = serializers.CharField()
    uuid = serializers.CharField(source="file.id.hex", required=False)
    hash = serializers.CharField(source="file.blake3", required=False, help_text="BLAKE3 of the uploaded bytes.")
    status = UploadStatusOutputSerializer(source="*")

    def to_representation(self, result: UploadResult) -> dict[str, Any]:
        row = super().to_representation(result)
        if result.file is None:
            row.pop("uuid", None)
            row.pop("hash", None)
        return row


class FileUploadOutputSerializer(serializers.Serializer):
    files = UploadOutputSerializer(many=True)


class FileRenameOutputSerializer(serializers.Serializer):
    message = ConstantField("Filename updated successfully")
    uuid = serializers.CharField(source="file.id.hex")
    old_filename = serializers.CharField()
    new_filename = serializers.CharField(source="file.filename")


class FileDeleteOutputSerializer(serializers.Serializer):
    message = ConstantField("File deleted successfully")
    uuid = serializers.CharField(source="id.hex")
    filename = serializers.CharField()


# --- The ViewSet -------------------------------------------------------------------

FILE_ID = uuid_path_parameter("uuid", "File UUID: 32 hex digits, or the hyphenated form.")
NOT_FOUND = (404, selectors.NOT_FOUND_MESSAGE)
INVALID_UUID = (400, "Invalid UUID format")
SERVED_TYPES = ("audio/mpeg", "video/mp4", "image/png", "image/jpeg", "image/gif", "image/webp")


def _binary(description: str) -> OpenApiResponse:
    return OpenApiResponse(response=OpenApiTypes.BINARY, description=description)


class FileViewSet(PublicReadMixin, viewsets.ViewSet):
    """``/file`` and ``/file/:uuid``. Downloads are public by uuid; the rest is the owner's."""

    lookup_field = "uuid"
    # Anything up to the next slash: a malformed id is a 400 "Invalid UUID format", not a 404.
    lookup_value_regex = "[^/]+"
    public_lookup = "uuid"

    @extend_schema(
        operation_id="file_list",
        summary="List user's files with pagination",
        description=(
            "Newest first. Beyond the reference's fields each row tells the conversion's `status` "
            "(`processing`, `ready`, `failed`), the `duration` in seconds and, once failed, the `error`."
        ),
        tags=["file"],
        parameters=[PageQuerySerializer],
        responses={
            200: FileListOutputSerializer,
            **plain_text_errors((400, PAGE_MESSAGE), (400, LIMIT_MESSAGE), *AUTH_ERRORS),
        },
    )
    def list(self, request: Request) -> Response:
        query = PageQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        rows, pagination = paginate(selectors.file_list(user=request.user), query.page_request())
        return Response(FileListOutputSerializer({"files": rows, "pagination": pagination}).data)

    @extend_schema(
        operation_id="file_upload",
        summary="Upload audio/video files for transcription",
        description=(
            f"One or more parts named `file` (at most {settings.UPLOAD_MAX_FILES}, each at most "
            f"{settings.UPLOAD_MAX_FILE_BYTES} bytes). Each part gets its own result: `uploaded`, "
            "`existed` (the same BLAKE3 digest is already one of this user's files: its uuid is "
            "returned) or an `error` code: `unsupported_content_type`, `file_too_large`, "
            f"`empty_file`, `file_too_long` (over {settings.MAX_MEDIA_DURATION_SECONDS} seconds), "
            f"`quota_exceeded` (over {settings.USER_FILE_QUOTA} files or {settings.USER_STORAGE_QUOTA_BYTES} "
            "bytes per user). The type is decided by probing the content, not the name. Audio is kept "
            "as MP3, video as MP4; the conversion runs in the background (see `status` in `GET /file`)."
        ),
        tags=["file"],
        request={"multipart/form-data": FileUploadInputSerializer},
        responses={
            200: FileUploadOutputSerializer,
            **plain_text_errors(
                (400, "Content-Type must be multipart/form-data"),
                (400, services.NO_FILES_MESSAGE),
                (400, too_many_files_message()),
                (400, "Malformed request body"),
                *AUTH_ERRORS,
                (409, "Upload conflicted with a concurrent change; try again"),
                (413, "Request body too large"),
            ),
        },
        examples=[
            OpenApiExample(
                "Uploaded, existed, refused",
                value={
                    "files": [
                        {
                            "message": "File uploaded successfully",
                            "filename": "interview.mp3",
                            "uuid": "018c5f9a7b2e7a8c9d0e1f2a3b4c5d6e",
                            "hash": "abc123def456...",
                            "status": {"existed": False, "uploaded": True},
                        },
                        {
                            "message": "File already exists",
                            "filename": "podcast.wav",
                            "uuid": "018c5f9a7b2e7a8c9d0e1f2a3b4c5d70",
                            "hash": "def789ghi012...",
                            "status": {"existed": True, "uploaded": False},
                        },
                        {
                            "message": "Unsupported content type",
                            "filename": "document.pdf",
                            "status": {"existed": False, "uploaded": False, "error": "unsupported_content_type"},
                        },
                    ]
                },
                response_only=True,
                status_codes=["200"],
            )
        ],
    )
    def create(self, request: Request) -> Response:
        if not request.content_type.startswith("multipart/form-data"):
            raise ApplicationError("Content-Type must be multipart/form-data", 400)
        # Before the body is read: parts stream to disk, hashed and bounded as they arrive.
        handler = install_file_upload_handler(request)
        try:
            try:
                parts = [part for part in request.FILES.getlist("file") if isinstance(part, StreamedUpload)]
            except TooManyFilesSent:
                raise ApplicationError(handler.too_many_message, 400) from None
            serializer = FileUploadInputSerializer(data={"file": parts})
            serializer.is_valid(raise_exception=True)
            results = services.file_upload_many(user=request.user, parts=serializer.validated_data["file"])
        finally:
            # Temporary files go whatever happened; stored ones were moved or copied.
            handler.cleanup()
        return Response(FileUploadOutputSerializer({"files": results}).data)

    @extend_schema(
        operation_id="file_download",
        summary="Download file by UUID",
        description=(
            "No authentication: the uuid is the secret. Streams the MP3 (audio) or MP4 (video), "
            "or an avatar image. Answers a `Range` request for one byte range with 206 Partial "
            "Content; a range that starts past the end is 416; a range it does not serve "
            "(several ranges, or with `If-Range`) gets the whole file. `HEAD` answers the same "
            "headers without the body."
        ),
        tags=["file"],
        auth=[],
        parameters=[
            FILE_ID,
            OpenApiParameter(
                "Range",
                str,
                OpenApiParameter.HEADER,
                description="One byte range: `bytes=START-END`, `bytes=START-` or `bytes=-SUFFIX`.",
            ),
            OpenApiParameter(
                "If-Range",
                str,
                OpenApiParameter.HEADER,
                description="No validators are given out, so with this header the whole file is sent.",
            ),
            OpenApiParameter(
                "Accept-Ranges", str, OpenApiParameter.HEADER, response=[200, 206], description="`bytes`."
            ),
            OpenApiParameter(
                "Content-Length", int, OpenApiParameter.HEADER, response=[200, 206], description="Bytes sent."
            ),
            OpenApiParameter(
                "Content-Disposition",
                str,
                OpenApiParameter.HEADER,
                response=[200, 206],
                description='`inline; filename="interview.mp3"` (with `filename*` for non-ASCII names).',
            ),
            OpenApiParameter(
                "Content-Range",
                str,
                OpenApiParameter.HEADER,
                response=[206, 416],
                description="`bytes START-END/TOTAL` (206), `bytes */TOTAL` (416).",
            ),
        ],
        responses={
            **{(200, media): _binary("The whole file") for media in SERVED_TYPES},
            **{(206, media): _binary("The requested byte range") for media in SERVED_TYPES},
            **plain_text_errors(
                INVALID_UUID,
                NOT_FOUND,
                (404, ON_DISK_MESSAGE),
                (416, "Requested range not satisfiable"),
            ),
        },
    )
    def retrieve(self, request: Request, uuid: str) -> HttpResponse:
        file = selectors.file_get_public(file_id=parse_uuid(uuid))
        if file is None:
            raise ApplicationError(selectors.NOT_FOUND_MESSAGE, 404)
        return file_download_response(
            file,
            range_header=request.META.get("HTTP_RANGE"),
            if_range=request.META.get("HTTP_IF_RANGE"),
            head=request.method == "HEAD",
        )

    @extend_schema(
        operation_id="file_rename",
        summary="Update filename",
        description=(
            "Folders (anything up to the last `/` or `\\`) and control characters are removed from "
            "the new name, which must then be 1-255 characters."
        ),
        tags=["file"],
        parameters=[FILE_ID],
        request={"application/json": FileRenameInputSerializer},
        responses={
            200: FileRenameOutputSerializer,
            **plain_text_errors(
                INVALID_UUID,
                *BODY_ERRORS,
                (400, MISSING_FILENAME_MESSAGE),
                (400, services.FILENAME_LENGTH_MESSAGE),
                *AUTH_ERRORS,
                NOT_FOUND,
            ),
        },
        examples=[OpenApiExample("Rename", value={"filename": "new_interview_name.mp3"}, request_only=True)],
    )
    def partial_update(self, request: Request, uuid: str) -> Response:
        file_id = parse_uuid(uuid)
        serializer = FileRenameInputSerializer(data=body_object(request))
        serializer.is_valid(raise_exception=True)
        file, old_filename = services.file_rename(user=request.user, file_id=file_id, **serializer.validated_data)
        return Response(FileRenameOutputSerializer({"file": file, "old_filename": old_filename}).data)

    @extend_schema(
        operation_id="file_delete",
        summary="Delete file and WAV conversion",
        description="Deletes the converted file (MP3/MP4), the WAV version and the file's transcriptions.",
        tags=["file"],
        parameters=[FILE_ID],
        request=None,
        responses={200: FileDeleteOutputSerializer, **plain_text_errors(INVALID_UUID, *AUTH_ERRORS, NOT_FOUND)},
    )
    def destroy(self, request: Request, uuid: str) -> Response:
        file = services.file_delete(user=request.user, file_id=parse_uuid(uuid))
        return Response(FileDeleteOutputSerializer(file).data)
