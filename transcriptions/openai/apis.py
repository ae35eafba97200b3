"""OpenAI's audio API under ``/api/v1``: ``audio/transcriptions``, ``audio/translations``, ``models``.

A client of OpenAI's (the ``openai`` package with ``base_url=http://HOST:PORT/api/v1``)
works unchanged with one of our API keys. Each action reads its multipart form with an
input serializer, stores the upload and queues one ordinary job (:mod:`.services`), waits
for it, and answers from the stored result (:mod:`.responses`); errors are OpenAI's JSON
objects (:mod:`.errors`). drf-spectacular reads the same serializers for ``/api/v1/schema``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.core.exceptions import TooManyFilesSent
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_field,
    extend_schema_serializer,
)
from rest_framework import serializers, viewsets
from rest_framework.request import Request

from accounts.authentication import ApiKeyAuthentication
from files.uploads import PART_OVERHEAD_BYTES, HashingUploadHandler, StreamedUpload, request_body_length
from transcriptions.models import Transcription
from transcriptions.openai import errors, responses, selectors, services
from transcriptions.openai.errors import OpenAIError
from transcriptions.services import PROMPT_MAX_CHARS

MULTIPART_MESSAGE = "Unsupported Content-Type: send multipart/form-data"
ONE_FILE_MESSAGE = "Only one file per request: send one part named 'file'"
GRANULARITIES_FIELD = "timestamp_granularities[]"


def _missing(name: str) -> dict[str, str]:
    message = f"Missing required parameter: '{name}'"
    return {"required": message, "null": message, "blank": message}


# --- Fields --------------------------------------------------------------------------


@extend_schema_field(OpenApiTypes.BINARY)
class AudioPartField(serializers.FileField):
    """The ``file`` part, streamed to a temporary file and hashed as it arrived (files.uploads)."""


TEMPERATURE_MESSAGE = "Invalid temperature: must be a number from 0 to 1"


class TemperatureField(serializers.FloatField):
    """A number from 0 to 1; "nan" is no number (float() reads it, and it passes every comparison)."""

    def to_internal_value(self, data: Any) -> float:
        value = super().to_internal_value(data)
        if not math.isfinite(value):
            self.fail("invalid")
        return value


class GranularityField(serializers.CharField):
    """``segment`` or ``word``."""

    default_error_messages = {
        "invalid": "Invalid timestamp_granularities[]: {value}. Must be segment or word",
        "blank": "Invalid timestamp_granularities[]: empty. Must be segment or word",
    }

    def to_internal_value(self, data: Any) -> str:
        value = super().to_internal_value(data)
        if value not in services.GRANULARITIES:
            self.fail("invalid", value=value)
        return value


# The enum inside allOf: drf-spectacular's enum hook would otherwise name a component after
# the field, brackets and all.
@extend_schema_field({"type": "array", "items": {"allOf": [{"type": "string", "enum": list(services.GRANULARITIES)}]}})
class GranularitiesField(serializers.ListField):
    """``timestamp_granularities[]``: the field repeated, once per value."""


# --- Input serializers ---------------------------------------------------------------


def response_format_field(formats: Sequence[str], help_text: str) -> serializers.ChoiceField:
    """``response_format``: one of ``formats``, json when omitted."""
    return serializers.ChoiceField(
        choices=formats,
        required=False,
        default="json",
        error_messages={"invalid_choice": f"Invalid response_format: {{input}}. Must be one of: {', '.join(formats)}"},
        help_text=help_text,
    )


class AudioTranslationInputSerializer(serializers.Serializer):
    """OpenAI's ``/audio/translations`` form; any other field is ignored, as OpenAI's clients expect."""

    file = AudioPartField(
        allow_empty_file=True,
        error_messages=_missing("file"),
        help_text=(
            "The audio (or video) to transcribe, any format ffmpeg decodes (flac, mp3, mp4, m4a, ogg, "
            f"wav, webm, ...), at most {settings.UPLOAD_MAX_FILE_BYTES} bytes. It becomes one of your "
            "files (`GET /file`); the same bytes uploaded again are the same file."
        ),
    )
    model = serializers.CharField(
        error_messages=_missing("model"),
        help_text="An installed model (`GET /models`), or `whisper-1` for the server's default model.",
    )
    prompt = serializers.CharField(
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        default="",
        max_length=PROMPT_MAX_CHARS,
        error_messages={"max_length": f"Invalid prompt: at most {PROMPT_MAX_CHARS} characters"},
        help_text="Vocabulary and spelling hints (product names, jargon), given to the model.",
    )
    response_format = response_format_field(
        services.RESPONSE_FORMATS, "`json` (default), `text`, `srt`, `verbose_json` or `vtt`."
    )
    temperature = TemperatureField(
        required=False,
        allow_null=True,
        default=None,
        min_value=0.0,
        max_value=1.0,
        error_messages={
            "invalid": TEMPERATURE_MESSAGE,
            "min_value": TEMPERATURE_MESSAGE,
            "max_value": TEMPERATURE_MESSAGE,
        },
        help_text=(
            "Sampling temperature to start from, 0 to 1; where the output looks wrong, Whisper "
            "tries again at higher temperatures. Omitted: from 0."
        ),
    )


class AudioTranscriptionInputSerializer(AudioTranslationInputSerializer):
    """OpenAI's ``/audio/transcriptions`` form; any other field is ignored, as OpenAI's clients expect."""

    response_format = response_format_field(
        services.TRANSCRIPTION_RESPONSE_FORMATS,
        "`json` (default), `text`, `srt`, `verbose_json`, `vtt`, or `diarized_json`: segments with "
        "their `speaker` (`A`, `B`, ...), priced as a job that tells speakers apart.",
    )

    language = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        help_text="ISO-639-1 code of the spoken language (`en`, `de`, ...); omitted: detected.",
    )

    def get_fields(self) -> dict[str, serializers.Field]:
        # OpenAI's name for the field holds brackets, which a class attribute cannot.
        fields = super().get_fields()
        fields[GRANULARITIES_FIELD] = GranularitiesField(
            child=GranularityField(),
            required=False,
            default=list,
            help_text="`segment` and/or `word` (repeat the field); only with `response_format=verbose_json`.",
        )
        return fields

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        if data[GRANULARITIES_FIELD] and data["response_format"] != "verbose_json":
            raise serializers.ValidationError(
                {GRANULARITIES_FIELD: ["response_format must be verbose_json when timestamp_granularities[] is given"]}
            )
        return data


def _form_data(request: Request, parts: list[StreamedUpload]) -> dict[str, Any]:
    """The form's fields as the input serializers read them: one value each, the list as a list.

    An optional field sent empty counts as not sent (form clients often send every field).
    """
    form = request.POST
    data: dict[str, Any] = {
        name: form.get(name)
        for name in form
        if not name.startswith("timestamp_granularities") and (form.get(name) or name == "model")
    }
    granularities = form.getlist(GRANULARITIES_FIELD) + form.getlist("timestamp_granularities")
    if granularities:
        data[GRANULARITIES_FIELD] = granularities
    if parts:
        data["file"] = parts[0]
    return data


# --- Output serializers --------------------------------------------------------------


class OpenAIErrorDetailOutputSerializer(serializers.Serializer):
    message = serializers.CharField()
    type = serializers.CharField(help_text="invalid_request_error, insufficient_quota, requests or server_error.")
    param = serializers.CharField(allow_null=True, help_text="The form field at fault, if one is.")
    code = serializers.CharField(allow_null=True, help_text="e.g. invalid_api_key, model_not_found.")


class OpenAIErrorOutputSerializer(serializers.Serializer):
    """OpenAI's error object."""

    error = OpenAIErrorDetailOutputSerializer()


class OpenAISegmentOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    seek = serializers.IntegerField()
    start = serializers.FloatField(help_text="Seconds.")
    end = serializers.FloatField(help_text="Seconds.")
    text = serializers.CharField()
    tokens = serializers.ListField(child=serializers.IntegerField())
    temperature = serializers.FloatField()
    avg_logprob = serializers.FloatField()
    compression_ratio = serializers.FloatField()
    no_speech_prob = serializers.FloatField()


class OpenAIWordOutputSerializer(serializers.Serializer):
    word = serializers.CharField()
    start = serializers.FloatField(help_text="Seconds.")
    end = serializers.FloatField(help_text="Seconds.")


class OpenAIDiarizedSegmentOutputSerializer(serializers.Serializer):
    type = serializers.CharField(help_text="Always `transcript.text.segment`.")
    id = serializers.CharField(help_text="`seg_0`, `seg_1`, ...")
    start = serializers.FloatField(help_text="Seconds.")
    end = serializers.FloatField(help_text="Seconds.")
    text = serializers.CharField()
    speaker = serializers.CharField(help_text="`A`, `B`, ... in order of first appearance.")


class OpenAIDiarizedOutputSerializer(serializers.Serializer):
    """`diarized_json`: as OpenAI's diarizing transcription model answers."""

    task = serializers.CharField(help_text="Always `transcribe`.")
    duration = serializers.FloatField(help_text="Seconds of audio.")
    text = serializers.CharField()
    segments = OpenAIDiarizedSegmentOutputSerializer(many=True)


class OpenAITranscriptionOutputSerializer(serializers.Serializer):
    """`json`: `{"text"}`. `verbose_json`: also task, language, duration, and segments and/or words."""

    text = serializers.CharField()
    task = serializers.CharField(required=False, help_text="transcribe or translate (verbose_json).")
    language = serializers.CharField(required=False, help_text="English name of the language, e.g. english.")
    duration = serializers.FloatField(required=False, help_text="Seconds of audio (verbose_json).")
    segments = OpenAISegmentOutputSerializer(many=True, required=False, help_text="Unless only `word` was asked.")
    words = OpenAIWordOutputSerializer(many=True, required=False, help_text="Only when `word` was asked.")


class OpenAIModelOutputSerializer(serializers.Serializer):
    id = serializers.CharField()
    object = serializers.CharField(help_text="Always `model`.")
    created = serializers.IntegerField(help_text="Unix seconds: when the model was installed.")
    owned_by = serializers.CharField()


@extend_schema_serializer(many=False)
class OpenAIModelListOutputSerializer(serializers.Serializer):
    object = serializers.CharField(help_text="Always `list`.")
    data = OpenAIModelOutputSerializer(many=True)


# --- Schema pieces -------------------------------------------------------------------

JSON = "application/json"
AUTH = [(401, "Invalid API key", "invalid_api_key", None), (401, errors.MISSING_KEY_MESSAGE, "invalid_api_key", None)]


def openai_errors(*cases: tuple[int, str, str | None, str | None]) -> dict[tuple[int, str], OpenApiResponse]:
    """``extend_schema`` responses for OpenAI's error objects: (status, message, code, param) each."""
    by_status: dict[int, list[tuple[str, str | None, str | None]]] = {}
    for status, message, code, param in cases:
        by_status.setdefault(status, []).append((message, code, param))
    return {
        (status, JSON): OpenApiResponse(
            response=OpenAIErrorOutputSerializer,
            description="OpenAI's error object.",
            examples=[
                OpenApiExample(
                    f"{status}-{index}",
                    value={
                        "error": {"message": message, "type": errors.error_type(status), "param": param, "code": code}
                    },
                    status_codes=[str(status)],
                    response_only=True,
                )
                for index, (message, code, param) in enumerate(messages, start=1)
            ],
        )
        for status, messages in sorted(by_status.items())
    }


def _audio_errors(*extra: tuple[int, str, str | None, str | None]) -> dict[tuple[int, str], OpenApiResponse]:
    return openai_errors(
        (400, "Missing required parameter: 'file'", None, "file"),
        (
            400,
            "Invalid model: whisper-2. Must be one of: ggml-base, ggml-tiny.en, whisper-1",
            "model_not_found",
            "model",
        ),
        (
            400,
            "Invalid response_format: txt. Must be one of: json, text, srt, verbose_json, vtt, diarized_json",
            None,
            "response_format",
        ),
        (400, "Invalid file format: no audio or video that can be decoded", "unsupported_content_type", "file"),
        (400, "File conversion failed: no audio stream (transcription 018c5f9b1a2b3c4d5e6f7a8b9c0d1e2f)", None, "file"),
        *extra,
        *AUTH,
        (404, "Transcription 018c5f9b1a2b3c4d5e6f7a8b9c0d1e2f was deleted before it finished", None, None),
        (405, "Method not allowed: GET", None, None),
        (409, "Transcription 018c5f9b1a2b3c4d5e6f7a8b9c0d1e2f was cancelled before it finished", None, None),
        (413, f"File too large. Maximum size is {settings.UPLOAD_MAX_FILE_BYTES} bytes", "file_too_large", "file"),
        (415, MULTIPART_MESSAGE, None, None),
        (
            429,
            "Insufficient token balance. Required: 11, Available: 3 (transcription 018c5f9b1a2b3c4d5e6f7a8b9c0d1e2f)",
            "insufficient_quota",
            None,
        ),
        (429, "Too many pending transcriptions: at most 100 per user", "rate_limit_exceeded", None),
        (500, "Transcription failed: internal error (transcription 018c5f9b1a2b3c4d5e6f7a8b9c0d1e2f)", None, None),
        (
            504,
            "Transcription 018c5f9b1a2b3c4d5e6f7a8b9c0d1e2f did not finish within 90 seconds. It goes on: "
            "GET /api/v1/transcribe/018c5f9b1a2b3c4d5e6f7a8b9c0d1e2f shows its status and, once completed, its result",
            None,
            None,
        ),
    )


AUDIO_RESPONSES = {
    (200, JSON): OpenApiResponse(
        response=OpenAITranscriptionOutputSerializer, description="`json` and `verbose_json`: the transcript."
    ),
    (200, "text/plain"): OpenApiResponse(
        response=OpenApiTypes.STR, description="`text`, `srt` and `vtt`: the text, or the subtitle file."
    ),
}
TRANSCRIPTION_RESPONSES = {
    **AUDIO_RESPONSES,
    (200, JSON): OpenApiResponse(
        response=PolymorphicProxySerializer(
            component_name="OpenAITranscriptionOrDiarized",
            serializers=[OpenAITranscriptionOutputSerializer, OpenAIDiarizedOutputSerializer],
            resource_type_field_name=None,
        ),
        description="`json` and `verbose_json`: the transcript; `diarized_json`: its segments with their speaker.",
    ),
}
AUDIO_DESCRIPTION = (
    "OpenAI-compatible: point an OpenAI client at `http://HOST:PORT/api/v1` with one of your API keys. "
    "The upload becomes one of your files and the transcription one ordinary job (`GET /transcribe/:uuid`), "
    "charged like any other; the request waits for it, at most {wait:g} seconds (`OPENAI_WAIT_SECONDS`), "
    "then answers 504 naming the job, which goes on. Fields OpenAI defines that this server does not use "
    "(`stream`, `include[]`, `chunking_strategy`, ...) are ignored. Errors on this route are OpenAI's JSON "
    'error objects (`{{"error": {{"message", "type", "param", "code"}}}}`), not plain text.'
)
EXAMPLE_VERBOSE = {
    "task": "transcribe",
    "language": "english",
    "duration": 11.0,
    "text": "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country.",
    "segments": [
        {
            "id": 0,
            "seek": 0,
            "start": 0.0,
            "end": 11.0,
            "text": "And so my fellow Americans, ask not what your country can do for you, "
            "ask what you can do for your country.",
            "tokens": [50364, 400, 370, 452, 7177, 6280],
            "temperature": 0.0,
            "avg_logprob": -0.2,
            "compression_ratio": 1.3,
            "no_speech_prob": 0.01,
        }
    ],
    "words": [{"word": "And", "start": 0.0, "end": 0.3}, {"word": "so", "start": 0.3, "end": 0.5}],
}


EXAMPLE_DIARIZED = {
    "task": "transcribe",
    "duration": 7.5,
    "text": "How was the trip? Long, but the view was worth it.",
    "segments": [
        {
            "type": "transcript.text.segment",
            "id": "seg_0",
            "start": 0.0,
            "end": 2.1,
            "text": "How was the trip?",
            "speaker": "A",
        },
        {
            "type": "transcript.text.segment",
            "id": "seg_1",
            "start": 2.6,
            "end": 7.5,
            "text": "Long, but the view was worth it.",
            "speaker": "B",
        },
    ],
}


# --- Views ---------------------------------------------------------------------------


class OpenAIViewMixin:
    """What the OpenAI routes share: Bearer API keys only, and OpenAI's error objects for every failure."""

    authentication_classes = [ApiKeyAuthentication]
    # whisper_site.errors.error_response_for: errors raised before the view (the middleware's).
    error_response = staticmethod(errors.error_response)

    def get_exception_handler(self) -> Any:
        return errors.openai_exception_handler

    def perform_content_negotiation(self, request: Request, force: bool = False) -> Any:
        # The answers are JSON or plain text whatever the client accepts (OpenAI's clients
        # send Accept: application/json for text formats too): never a 406.
        return super().perform_content_negotiation(request, force=True)  # type: ignore[misc]


def _install_upload_handler(request: Request) -> HashingUploadHandler:
    """Before the body is read: one part named ``file``, streamed to disk, at most ``UPLOAD_MAX_FILE_BYTES``."""
    if request_body_length(request) > settings.UPLOAD_MAX_FILE_BYTES + PART_OVERHEAD_BYTES:
        raise OpenAIError(f"File too large. Maximum size is {settings.UPLOAD_MAX_FILE_BYTES} bytes", 413, param="file")
    handler = HashingUploadHandler(
        request,
        field_names=frozenset({"file"}),
        max_bytes=settings.UPLOAD_MAX_FILE_BYTES,
        max_files=1,
        too_many_message=ONE_FILE_MESSAGE,
    )
    request.upload_handlers = [handler]
    return handler


def _audio_request(request: Request, serializer_class: type[serializers.Serializer], task: str) -> HttpResponse:
    if not request.content_type.startswith("multipart/form-data"):
        raise OpenAIError(MULTIPART_MESSAGE, 415)
    # Before the body is read: the part streams to disk, hashed and bounded as it arrives.
    handler = _install_upload_handler(request)
    try:
        try:
            parts = [part for part in request.FILES.getlist("file") if isinstance(part, StreamedUpload)]
        except TooManyFilesSent:
            raise OpenAIError(ONE_FILE_MESSAGE, 400, param="file") from None
        serializer = serializer_class(data=_form_data(request, parts))
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        part = data.pop("file")
        audio = services.AudioRequest(
            model=data["model"],
            response_format=data["response_format"],
            language=data.get("language") or None,
            prompt=data["prompt"],
            temperature=data["temperature"],
            granularities=tuple(data.get(GRANULARITIES_FIELD, ())),
            task=task,
        )
        job = services.openai_transcription_create(user=request.user, part=part, request=audio)
    finally:
        # Temporary files go whatever happened; the stored one was moved or copied.
        handler.cleanup()

    seconds = settings.OPENAI_WAIT_SECONDS
    done, status = services.transcription_wait(job_id=job.id, seconds=seconds)
    if done is None:
        raise errors.vanished_job_error(job, None)
    if status == Transcription.Status.COMPLETED:
        return responses.openai_transcription_response(done, audio)
    if status == Transcription.Status.FAILED:
        raise errors.failed_job_error(done)
    if status in (Transcription.Status.PENDING, Transcription.Status.PROCESSING):
        raise errors.unfinished_job_error(done, seconds)
    raise errors.vanished_job_error(done, status)


class AudioTranscriptionViewSet(OpenAIViewMixin, viewsets.ViewSet):
    """``POST /audio/transcriptions``: OpenAI's transcription, answered when the job is done."""

    @extend_schema(
        operation_id="openai_audio_transcription_create",
        summary="Transcribe audio (OpenAI-compatible)",
        description=AUDIO_DESCRIPTION.format(wait=settings.OPENAI_WAIT_SECONDS),
        tags=["openai"],
        request={"multipart/form-data": AudioTranscriptionInputSerializer},
        responses={
            **TRANSCRIPTION_RESPONSES,
            **_audio_errors(
                (400, "Invalid language: de. Model ggml-tiny.en supports only: en", None, "language"),
                (
                    400,
                    "response_format must be verbose_json when timestamp_granularities[] is given",
                    None,
                    GRANULARITIES_FIELD,
                ),
            ),
        },
        examples=[
            OpenApiExample("json", value={"text": EXAMPLE_VERBOSE["text"]}, response_only=True, status_codes=["200"]),
            OpenApiExample("verbose_json", value=EXAMPLE_VERBOSE, response_only=True, status_codes=["200"]),
            OpenApiExample("diarized_json", value=EXAMPLE_DIARIZED, response_only=True, status_codes=["200"]),
        ],
    )
    def create(self, request: Request) -> HttpResponse:
        return _audio_request(request, AudioTranscriptionInputSerializer, Transcription.Task.TRANSCRIBE)


class AudioTranslationViewSet(OpenAIViewMixin, viewsets.ViewSet):
    """``POST /audio/translations``: OpenAI's translation into English (a multilingual model's task)."""

    @extend_schema(
        operation_id="openai_audio_translation_create",
        summary="Translate audio into English (OpenAI-compatible)",
        description=AUDIO_DESCRIPTION.format(wait=settings.OPENAI_WAIT_SECONDS)
        + " Translation needs a multilingual model (`ggml-base`, not an English-only `*.en` one).",
        tags=["openai"],
        request={"multipart/form-data": AudioTranslationInputSerializer},
        responses={
            **AUDIO_RESPONSES,
            **_audio_errors(
                (
                    400,
                    "Invalid task: translate. Model ggml-tiny.en is English-only",
                    None,
                    "model",
                ),
            ),
        },
    )
    def create(self, request: Request) -> HttpResponse:
        return _audio_request(request, AudioTranslationInputSerializer, Transcription.Task.TRANSLATE)


MODEL_ID = OpenApiParameter(
    "model", OpenApiTypes.STR, OpenApiParameter.PATH, description="A model's id, e.g. `ggml-base` or `whisper-1`."
)
EXAMPLE_MODEL = {"id": "ggml-base", "object": "model", "created": 1764300000, "owned_by": selectors.OWNED_BY}


class OpenAIModelViewSet(OpenAIViewMixin, viewsets.ViewSet):
    """``GET /models`` and ``GET /models/{model}``: OpenAI's model objects."""

    lookup_field = "model"
    # Model names hold dots (ggml-tiny.en): anything up to the next slash.
    lookup_value_regex = "[^/]+"

    @extend_schema(
        operation_id="openai_model_list",
        summary="List models (OpenAI-compatible)",
        description="The installed models, and `whisper-1`: OpenAI's name, here for the server's default model.",
        tags=["openai"],
        responses={(200, JSON): OpenAIModelListOutputSerializer, **openai_errors(*AUTH)},
        examples=[
            OpenApiExample(
                "Models",
                value={"object": "list", "data": [EXAMPLE_MODEL, {**EXAMPLE_MODEL, "id": "whisper-1"}]},
                response_only=True,
                status_codes=["200"],
            )
        ],
    )
    def list(self, request: Request) -> HttpResponse:
        models = selectors.openai_model_list()
        return JsonResponse(OpenAIModelListOutputSerializer({"object": "list", "data": models}).data)

    @extend_schema(
        operation_id="openai_model_retrieve",
        summary="Get a model (OpenAI-compatible)",
        description="One model of `GET /models` by id.",
        tags=["openai"],
        parameters=[MODEL_ID],
        responses={
            (200, JSON): OpenAIModelOutputSerializer,
            **openai_errors(
                *AUTH,
                (
                    404,
                    "The model 'whisper-2' does not exist. Must be one of: ggml-base, whisper-1",
                    "model_not_found",
                    "model",
                ),
            ),
        },
        examples=[OpenApiExample("Model", value=EXAMPLE_MODEL, response_only=True, status_codes=["200"])],
    )
    def retrieve(self, request: Request, model: str) -> HttpResponse:
        found = selectors.openai_model_get(model_id=model)
        if found is None:
            offered = ", ".join(item.id for item in selectors.openai_model_list())
            raise OpenAIError(
                f"The model '{model}' does not exist. Must be one of: {offered}",
                404,
                param="model",
                code="model_not_found",
            )
        return JsonResponse(OpenAIModelOutputSerializer(found).data)


@method_decorator(csrf_exempt, name="dispatch")
class OpenAINotFoundView(View):
    """Any other path under ``audio/`` or ``models/``: OpenAI's 404 (its "Invalid URL"), not plain text."""

    error_response = staticmethod(errors.error_response)

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        return errors.openai_error_response(OpenAIError(f"Invalid URL ({request.method} {request.path})", 404))
