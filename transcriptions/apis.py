"""Transcription endpoints: ``/model``, ``/transcribe`` and ``/transcribe/:uuid``.

Each action reads its input with an input serializer, calls one selector or service and
answers with an output serializer; drf-spectacular reads the same serializers, with the
``extend_schema`` beside each action, for ``/api/v1/schema``.
"""

from __future__ import annotations

import uuid as uuid_module
from typing import Any

from drf_spectacular.utils import (
    OpenApiExample,
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_field,
    extend_schema_serializer,
)
from rest_framework import serializers, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from files.selectors import NOT_FOUND_MESSAGE as FILE_NOT_FOUND_MESSAGE
from transcriptions import engine, selectors, services
from transcriptions.formats import DEFAULT_FORMAT, FORMATS
from transcriptions.models import Transcription
from whisper_site.api_fields import (
    BODY_ERRORS,
    ConstantField,
    StrictInputSerializer,
    TimestampField,
    strict_boolean_field,
)
from whisper_site.errors import ApplicationError
from whisper_site.identifiers import parse_uuid
from whisper_site.openapi import AUTH_ERRORS, UUID_PATTERN, plain_text_errors, uuid_path_parameter
from whisper_site.request_body import body_object
from whisper_site.viewsets import PublicReadMixin

NOT_FOUND_MESSAGE = "Transcription not found"
MISSING_FILE_UUID_MESSAGE = "Missing file uuid"
FORMAT_TYPE_MESSAGE = "Invalid format: must be a string or a list of strings"


# --- Fields of POST /transcribe ----------------------------------------------------


@extend_schema_field({"type": "string", "pattern": UUID_PATTERN, "example": "018c5f9a7b2e7a8c9d0e1f2a3b4c5d6e"})
class FileUuidField(serializers.Field):
    """A file's uuid: 32 hex digits or the hyphenated form; an empty string is a missing one."""

    default_error_messages = {
        "required": MISSING_FILE_UUID_MESSAGE,
        "null": MISSING_FILE_UUID_MESSAGE,
        "invalid": "Invalid UUID format",
    }

    def to_internal_value(self, data: Any) -> uuid_module.UUID:
        if data == "":
            self.fail("required")
        try:
            return parse_uuid(data)
        except ApplicationError:
            pass
        self.fail("invalid")

    def to_representation(self, value: uuid_module.UUID) -> str:
        return value.hex


@extend_schema_field({"type": "string", "example": "ggml-tiny.en"})
class ModelNameField(serializers.Field):
    """A model's name. Whether it is installed is the service's question.

    Any other JSON value names no model: it goes on as text, so that it is refused as any
    model that is not installed is, with the installed ones listed.
    """

    def to_internal_value(self, data: Any) -> str:
        return data if isinstance(data, str) else str(data)

    def to_representation(self, value: str) -> str:
        return value


@extend_schema_field({"type": "string", "example": "en"})
class LanguageField(serializers.Field):
    """A language code as sent; which codes the model can use is the service's question."""

    default_error_messages = {"invalid": "Invalid language: {value}"}

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid", value=data)
        return data

    def to_representation(self, value: str) -> str:
        return value


_FORMAT_NAME = {"type": "string", "enum": list(FORMATS)}


@extend_schema_field(
    {
        "oneOf": [_FORMAT_NAME, {"type": "array", "items": _FORMAT_NAME, "minItems": 1}],
        "example": ["verbose_json", "srt", "vtt"],
    }
)
class FormatsField(serializers.Field):
    """One format or a list of them, read as a list; omitted or null is ``verbose_json``."""

    default_error_messages = {
        "invalid": FORMAT_TYPE_MESSAGE,
        "empty": "At least one format must be specified",
        "unknown": "Invalid format: {value}. Must be one of: {choices}",
    }

    def get_value(self, dictionary: Any) -> Any:
        value = dictionary.get(self.field_name)
        return self.default if value is None else value

    def to_internal_value(self, data: Any) -> list[str]:
        if isinstance(data, str):
            data = [data] if data else []
        if not isinstance(data, list):
            self.fail("invalid")
        if not data:
            self.fail("empty")
        # Item by item: the first bad one is the one reported.
        for item in data:
            if not isinstance(item, str):
                self.fail("invalid")
            if item not in FORMATS:
                self.fail("unknown", value=item, choices=", ".join(FORMATS))
        return data

    def to_representation(self, value: list[str]) -> list[str]:
        return value


# --- Input serializers -------------------------------------------------------------


@extend_schema_field({"type": "string", "maxLength": services.PROMPT_MAX_CHARS, "example": "ComfyUI"})
class PromptField(serializers.Field):
    """Vocabulary and spelling hints: text of at most PROMPT_MAX_CHARS characters; null is none."""

    default_error_messages = {
        "invalid": "Invalid prompt: must be a string",
        "max_length": f"Invalid prompt: at most {services.PROMPT_MAX_CHARS} characters",
    }

    def get_value(self, dictionary: Any) -> Any:
        value = dictionary.get(self.field_name, serializers.empty)
        return "" if value is None else value

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        if len(data) > services.PROMPT_MAX_CHARS:
            self.fail("max_length")
        return data

    def to_representation(self, value: str) -> str:
        return value


@extend_schema_field(
    {"type": "integer", "minimum": services.MIN_SPEAKERS, "maximum": engine.MAX_SPEAKERS, "example": 2}
)
class SpeakersField(serializers.Field):
    """How many speakers there are: a JSON whole number from 1 to 20; null is "find out"."""

    default_error_messages = {
        "invalid": f"Invalid speakers: must be a whole number from {services.MIN_SPEAKERS} to {engine.MAX_SPEAKERS}",
    }

    def to_internal_value(self, data: Any) -> int:
        # JSON true is not 1 speaker, nor 2.0 two.
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        if not services.MIN_SPEAKERS <= data <= engine.MAX_SPEAKERS:
            raise serializers.ValidationError(services.speakers_range_message(data))
        return data

    def to_representation(self, value: int) -> int:
        return value


TASKS = list(Transcription.Task.values)


class TranscriptionCreateInputSerializer(StrictInputSerializer):
    # Declared in the order their errors are reported (after any unknown field): the file's
    # uuid, the formats, the language, then the options (a model's name is any text here;
    # the service checks it first, then whether the task suits the model).
    uuid = FileUuidField(help_text="The file to transcribe (one of yours).")
    model = ModelNameField(
        required=False,
        allow_null=True,
        default=None,
        help_text="An installed model (see `GET /model`); omitted or null: the server's default model.",
    )
    format = FormatsField(
        required=False,
        default=DEFAULT_FORMAT,
        help_text="`verbose_json`, `srt` or `vtt`, or a list of them: one job each.",
    )
    language = LanguageField(
        required=False,
        allow_null=True,
        default=None,
        help_text=(
            "A Whisper language code (`en`, `de`, ...); omitted, null or empty: detected "
            "(an English-only model `*.en` only takes `en`)."
        ),
    )
    word_timestamps = strict_boolean_field(
        "word_timestamps",
        required=False,
        allow_null=True,
        default=False,
        help_text="verbose_json segments list their `words` with start, end and probability.",
    )
    prompt = PromptField(
        required=False,
        default="",
        help_text=(
            "Vocabulary and spelling hints (product names, jargon), given to the model before "
            f"every 30 s window; at most {services.PROMPT_MAX_CHARS} characters."
        ),
    )
    task = serializers.ChoiceField(
        choices=TASKS,
        required=False,
        default=Transcription.Task.TRANSCRIBE,
        error_messages={
            "invalid_choice": f"Invalid task: {{input}}. Must be one of: {', '.join(TASKS)}",
            "null": f"Invalid task: null. Must be one of: {', '.join(TASKS)}",
        },
        help_text="`transcribe` (default), or `translate` into English (multilingual models only).",
    )
    vad_filter = strict_boolean_field(
        "vad_filter",
        required=False,
        allow_null=True,
        default=None,
        help_text="Skip silence before decoding; omitted or null: the server's setting.",
    )
    diarize = strict_boolean_field(
        "diarize",
        required=False,
        allow_null=True,
        default=False,
        help_text=(
            "Tell speakers apart: verbose_json segments (split where the speaker changes) and words get "
            "`speaker` (`SPEAKER_00`, ...), SRT cues start with `[SPEAKER_00] `, VTT cues use `<v SPEAKER_00>`. "
            "Costs the job's price times the diarization factor (1.5 by default), rounded up."
        ),
    )
    speakers = SpeakersField(
        required=False,
        allow_null=True,
        default=None,
        help_text="With `diarize`: how many speakers there are, 1 to 20, when you know; omitted or null: found.",
    )


# --- Output serializers ------------------------------------------------------------


class TranscriptionSegmentOutputSerializer(serializers.Serializer):
    start = serializers.FloatField(help_text="Seconds.")
    end = serializers.FloatField(help_text="Seconds.")
    text = serializers.CharField()
    speaker = serializers.CharField(required=False, help_text="`SPEAKER_00`, `SPEAKER_01`, ... (diarize only).")


class TranscriptionDataOutputSerializer(serializers.Serializer):
    """The transcript: verbose_json has segments and language; srt and vtt hold the whole file in text."""

    text = serializers.CharField()
    segments = TranscriptionSegmentOutputSerializer(many=True, required=False)
    language = serializers.CharField(required=False, help_text="The language spoken (detected or asked for).")


@extend_schema_field(TranscriptionDataOutputSerializer)
class TranscriptionDataField(serializers.JSONField):
    """The stored transcript, answered as stored."""


class TranscriptionOutputSerializer(serializers.Serializer):
    """One transcription job; a failed job has `error` instead of `data`."""

    uuid = serializers.CharField(source="id.hex")
    file_uuid = serializers.CharField(source="file_id.hex")
    model = serializers.CharField()
    language = serializers.CharField(
        source="reported_language",
        allow_null=True,
        help_text="The language asked for, else the detected one once known.",
    )
    format = serializers.CharField(help_text="verbose_json, srt or vtt.")
    status = serializers.CharField(help_text="pending, processing, completed, failed or cancelled.")
    error = serializers.CharField(required=False, help_text="Why the job failed; only on a failed job.")
    processed_at = TimestampField(help_text="When it completed; 1970-01-01 00:00:00 until then.")
    progress = serializers.FloatField(
        help_text="Audio decoded over the file's duration, 0.0 to 1.0 (1.0 once completed); never goes back."
    )
    queue_position = serializers.SerializerMethodField(
        help_text="While pending: 1 for the next job to start, 2 for the one after, ... (an estimate of the "
        "fair order); null otherwise."
    )
    started_at = TimestampField(help_text="When a worker started it; 1970-01-01 00:00:00 until then.")
    data = TranscriptionDataField(
        source="result",
        allow_null=True,
        required=False,
        help_text="The transcript once completed, null until then; absent on a failed job.",
    )

    @extend_schema_field(serializers.IntegerField(allow_null=True, min_value=1))
    def get_queue_position(self, job: Transcription) -> int | None:
        if job.status != Transcription.Status.PENDING:
            return None
        positions = self.context.get("queue_positions")
        if positions is None:
            positions = selectors.transcription_queue_positions(batch_ids=[job.batch_id])
        return positions.get(job.batch_id)

    def to_representation(self, job: Transcription) -> dict[str, Any]:
        body = super().to_representation(job)
        if job.status == Transcription.Status.FAILED:
            del body["data"]
        else:
            del body["error"]
        return body


class FileTranscriptionsOutputSerializer(serializers.Serializer):
    transcriptions = TranscriptionOutputSerializer(many=True, help_text="Every job of the file, oldest first.")


class TranscriptionQueuedOutputSerializer(serializers.Serializer):
    uuid = serializers.CharField(source="id.hex")
    format = serializers.CharField()
    status = serializers.CharField()


class TranscriptionCreateOutputSerializer(serializers.Serializer):
    message = ConstantField("Transcription(s) queued successfully")
    transcriptions = TranscriptionQueuedOutputSerializer(many=True)


class TranscriptionCancelOutputSerializer(serializers.Serializer):
    message = ConstantField("Transcription cancelled")
    uuid = serializers.CharField(source="id.hex")
    status = serializers.CharField()


class TranscriptionDeleteOutputSerializer(serializers.Serializer):
    message = ConstantField("Transcription deleted successfully")
    uuid = serializers.CharField(source="id.hex")
    model = serializers.CharField()
    format = serializers.CharField()


class ModelOutputSerializer(serializers.Serializer):
    name = serializers.CharField()
    size = serializers.IntegerField(source="size_bytes", required=False, help_text="Bytes on disk; admins only.")

    def to_representation(self, model: Any) -> dict[str, Any]:
        row = super().to_representation(model)
        if not self.context.get("show_size"):
            del row["size"]
        return row


# many=False: the "list" action answers one object that holds the list.
@extend_schema_serializer(many=False)
class ModelListOutputSerializer(serializers.Serializer):
    models = ModelOutputSerializer(many=True)


# --- ViewSets ----------------------------------------------------------------------

JOB_ID = uuid_path_parameter("uuid", "A transcription's UUID, or a file's: 32 hex digits, or the hyphenated form.")
INVALID_UUID = (400, "Invalid UUID format")
EXAMPLE_JOB = {
    "uuid": "018c5f9b1a2b3c4d5e6f7a8b9c0d1e2f",
    "file_uuid": "018c5f9a7b2e7a8c9d0e1f2a3b4c5d6e",
    "model": "ggml-tiny.en",
    "language": "en",
    "format": "verbose_json",
    "status": "completed",
    "processed_at": "2025-01-15 10:35:20",
    "data": {
        "text": "Hello, this is a test transcription.",
        "segments": [{"start": 0.0, "end": 3.5, "text": "Hello, this is a test transcription."}],
        "language": "en",
    },
}


class TranscriptionModelViewSet(viewsets.ViewSet):
    """``GET /model``: the installed Whisper models; admins also see their size in bytes."""

    @extend_schema(
        operation_id="model_list",
        summary="List available Whisper models",
        description="The installed models, by name. Admins also see each model's `size` in bytes on disk.",
        tags=["transcription"],
        responses={200: ModelListOutputSerializer, **plain_text_errors(*AUTH_ERRORS)},
        examples=[
            OpenApiExample(
                "Regular user",
                value={"models": [{"name": "ggml-base"}, {"name": "ggml-tiny.en"}]},
                response_only=True,
                status_codes=["200"],
            ),
            OpenApiExample(
                "Admin",
                value={
                    "models": [{"name": "ggml-base", "size": 147882941}, {"name": "ggml-tiny.en", "size": 78090594}]
                },
                response_only=True,
                status_codes=["200"],
            ),
        ],
    )
    def list(self, request: Request) -> Response:
        models = selectors.model_list()
        return Response(
            ModelListOutputSerializer({"models": models}, context={"show_size": request.user.is_admin}).data
        )


class TranscriptionViewSet(PublicReadMixin, viewsets.ViewSet):
    """``POST /transcribe`` (queue), ``GET /transcribe/:uuid`` (public), ``DELETE`` (owner)."""

    lookup_field = "uuid"
    # Anything up to the next slash: a malformed id is a 400 "Invalid UUID format", not a 404.
    lookup_value_regex = "[^/]+"
    public_lookup = "uuid"

    @extend_schema(
        operation_id="transcription_create",
        summary="Queue transcription job(s)",
        description=(
            "One job per format; the jobs of one request share one inference run. Each job costs "
            "ceil(ceil(duration_seconds) x price_multiplier) tokens, taken when it starts processing; "
            "a job the balance does not cover fails with `Insufficient token balance. Required: N, "
            "Available: M`. A file still converting is fine: its jobs wait for it."
        ),
        tags=["transcription"],
        request={"application/json": TranscriptionCreateInputSerializer},
        responses={
            200: TranscriptionCreateOutputSerializer,
            **plain_text_errors(
                *BODY_ERRORS,
                (400, MISSING_FILE_UUID_MESSAGE),
                INVALID_UUID,
                (400, "Invalid format: txt. Must be one of: verbose_json, srt, vtt"),
                (400, FORMAT_TYPE_MESSAGE),
                (400, "At least one format must be specified"),
                (400, "Invalid language: 7"),
                (400, "Invalid model: ggml-base.en. Must be one of: ggml-base, ggml-tiny.en"),
                (400, "Invalid language: xx"),
                (400, "Invalid language: de. Model ggml-tiny.en supports only: en"),
                (400, "Unknown field: formats"),
                (400, "Invalid word_timestamps: must be true or false"),
                (400, "Invalid vad_filter: must be true or false"),
                (400, "Invalid prompt: must be a string"),
                (400, f"Invalid prompt: at most {services.PROMPT_MAX_CHARS} characters"),
                (400, "Invalid task: summarize. Must be one of: transcribe, translate"),
                (400, "Invalid task: translate. Model ggml-tiny.en is English-only"),
                (400, "Invalid diarize: must be true or false"),
                (400, services.speakers_range_message(0)),
                (400, f"Invalid speakers: must be a whole number from 1 to {engine.MAX_SPEAKERS}"),
                (400, services.SPEAKERS_WITHOUT_DIARIZE_MESSAGE),
                (400, "File conversion failed: no audio stream"),
                *AUTH_ERRORS,
                (404, FILE_NOT_FOUND_MESSAGE),
                (429, services.pending_quota_message()),
            ),
        },
        examples=[
            OpenApiExample(
                "Three formats",
                value={
                    "uuid": "018c5f9a7b2e7a8c9d0e1f2a3b4c5d6e",
                    "model": "ggml-tiny.en",
                    "language": "en",
                    "format": ["verbose_json", "srt", "vtt"],
                },
                request_only=True,
            ),
            OpenApiExample(
                "Queued",
                value={
                    "message": "Transcription(s) queued successfully",
                    "transcriptions": [
                        {"uuid": "018c5f9b1a2b3c4d5e6f7a8b9c0d1e2f", "format": "verbose_json", "status": "pending"},
                        {"uuid": "018c5f9b1a2b3c4d5e6f7a8b9c0d1e30", "format": "srt", "status": "pending"},
                        {"uuid": "018c5f9b1a2b3c4d5e6f7a8b9c0d1e31", "format": "vtt", "status": "pending"},
                    ],
                },
                response_only=True,
                status_codes=["200"],
            ),
        ],
    )
    def create(self, request: Request) -> Response:
        serializer = TranscriptionCreateInputSerializer(data=body_object(request))
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        jobs = services.transcription_create(
            user=request.user,
            file_id=data["uuid"],
            model=data["model"],
            language=data["language"],
            formats=data["format"],
            options=services.TranscriptOptions(
                word_timestamps=bool(data["word_timestamps"]),
                prompt=data["prompt"],
                task=data["task"],
                vad_filter=data["vad_filter"],
                diarize=bool(data["diarize"]),
                speakers=data["speakers"],
            ),
        )
        return Response(TranscriptionCreateOutputSerializer({"transcriptions": jobs}).data)

    @extend_schema(
        operation_id="transcription_get",
        summary="Get transcription status and result",
        description=(
            "No authentication: the uuid is the secret. A transcription's uuid answers with that "
            'job; a file\'s uuid with `{"transcriptions": [...]}`, every job of that file, oldest '
            "first. Status is one of `pending`, `processing`, `completed`, `failed`; a failed job "
            "carries `error` instead of `data`."
        ),
        tags=["transcription"],
        auth=[],
        parameters=[JOB_ID],
        responses={
            200: PolymorphicProxySerializer(
                component_name="TranscriptionOrFileTranscriptions",
                serializers=[TranscriptionOutputSerializer, FileTranscriptionsOutputSerializer],
                resource_type_field_name=None,
            ),
            **plain_text_errors(INVALID_UUID, (404, NOT_FOUND_MESSAGE)),
        },
        examples=[
            OpenApiExample("One job", value=EXAMPLE_JOB, response_only=True, status_codes=["200"]),
            OpenApiExample(
                "A failed job",
                value={
                    **{key: value for key, value in EXAMPLE_JOB.items() if key not in ("data", "processed_at")},
                    "status": "failed",
                    "error": "Insufficient token balance. Required: 120, Available: 50",
                    "processed_at": "1970-01-01 00:00:00",
                },
                response_only=True,
                status_codes=["200"],
            ),
            OpenApiExample(
                "Every job of a file",
                value={
                    "transcriptions": [
                        EXAMPLE_JOB,
                        {
                            **EXAMPLE_JOB,
                            "uuid": "018c5f9b1a2b3c4d5e6f7a8b9c0d1e30",
                            "format": "srt",
                            "status": "processing",
                            "processed_at": "1970-01-01 00:00:00",
                            "data": None,
                        },
                    ]
                },
                response_only=True,
                status_codes=["200"],
            ),
        ],
    )
    def retrieve(self, request: Request, uuid: str) -> Response:
        key = parse_uuid(uuid)
        job = selectors.transcription_get(transcription_id=key)
        if job is not None:
            return Response(TranscriptionOutputSerializer(job).data)
        jobs = selectors.transcription_list_for_file(file_id=key)
        if jobs is None:
            raise ApplicationError(NOT_FOUND_MESSAGE, 404)
        # Where the pending ones stand, worked out once for the whole list.
        positions = selectors.transcription_queue_positions(
            batch_ids={job.batch_id for job in jobs if job.status == Transcription.Status.PENDING}
        )
        return Response(
            FileTranscriptionsOutputSerializer({"transcriptions": jobs}, context={"queue_positions": positions}).data
        )

    @extend_schema(
        operation_id="transcription_cancel",
        summary="Cancel a transcription",
        description=(
            "A pending job is never run nor charged; a processing one stops within a few seconds and its "
            "charge is refunded in full (another format of the same request goes on). A job already "
            "completed, failed or cancelled is a 409."
        ),
        tags=["transcription"],
        parameters=[JOB_ID],
        request=None,
        responses={
            200: TranscriptionCancelOutputSerializer,
            **plain_text_errors(
                INVALID_UUID,
                *AUTH_ERRORS,
                (404, services.NOT_FOUND_OR_DENIED_MESSAGE),
                (409, services.ALREADY_FINISHED_MESSAGE),
            ),
        },
    )
    @action(detail=True, methods=["post"], url_path="cancel")
    def cancel(self, request: Request, uuid: str) -> Response:
        job = services.transcription_cancel(user=request.user, transcription_id=parse_uuid(uuid))
        return Response(TranscriptionCancelOutputSerializer(job).data)

    @extend_schema(
        operation_id="transcription_delete",
        summary="Delete transcription record",
        description="Deletes the job whatever its state; a pending job is never run nor charged.",
        tags=["transcription"],
        parameters=[JOB_ID],
        request=None,
        responses={
            200: TranscriptionDeleteOutputSerializer,
            **plain_text_errors(INVALID_UUID, *AUTH_ERRORS, (404, services.NOT_FOUND_OR_DENIED_MESSAGE)),
        },
    )
    def destroy(self, request: Request, uuid: str) -> Response:
        job = services.transcription_delete(user=request.user, transcription_id=parse_uuid(uuid))
        return Response(TranscriptionDeleteOutputSerializer(job).data)
