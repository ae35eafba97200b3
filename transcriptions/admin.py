"""Operators' view of transcription jobs: status, errors, and re-queueing failed ones."""

from __future__ import annotations

import json
import uuid

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from transcriptions.models import Transcription, TranscriptionUnit
from whisper_site.admin_changelist import LargeTablePaginator, search_by_id_or_owner

ERROR_PREVIEW_CHARS = 80
DATA_PREVIEW_CHARS = 2000


@admin.register(Transcription)
class TranscriptionAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "status",
        "format",
        "model",
        "owner",
        "audio_seconds",
        "cost",
        "created_at",
        "processed_at",
        "error_preview",
    )
    # Choice fields only: no SELECT DISTINCT over the whole table.
    list_filter = ("status", "format", "task")
    search_fields = ("id",)  # enables the search box; see get_search_results
    search_help_text = "A transcription UUID, or part of the owner's username."
    list_select_related = ("owner",)
    ordering = ("-created_at",)
    paginator = LargeTablePaginator
    show_full_result_count = False
    actions = ["requeue_failed"]
    fields = (
        "id",
        "owner",
        "file",
        "batch_id",
        "model",
        "language",
        "detected_language",
        "format",
        "task",
        "word_timestamps",
        "prompt",
        "vad_filter",
        "temperature",
        "diarize",
        "speakers",
        "status",
        "error",
        "attempts",
        "audio_seconds",
        "cost",
        "created_at",
        "started_at",
        "processed_at",
        "data_preview",
    )
    # A job's state belongs to the worker that runs it: operators act through
    # the re-queue action (or delete), never by editing a status by hand.
    readonly_fields = fields

    @admin.display(description="error")
    def error_preview(self, obj: Transcription) -> str:
        if len(obj.error) <= ERROR_PREVIEW_CHARS:
            return obj.error
        return obj.error[: ERROR_PREVIEW_CHARS - 1] + "…"

    @admin.display(description="result (start)")
    def data_preview(self, obj: Transcription) -> str:
        # A long recording's verbose_json runs to megabytes: show its start.
        if obj.data is None:
            return "-"
        text = json.dumps(obj.data, ensure_ascii=False, indent=1)
        if len(text) > DATA_PREVIEW_CHARS:
            text = text[:DATA_PREVIEW_CHARS] + "\n…"
        return format_html("<pre style='white-space: pre-wrap'>{}</pre>", text)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Transcription], search_term: str
    ) -> tuple[QuerySet[Transcription], bool]:
        return search_by_id_or_owner(queryset, search_term, owner_field="owner"), False

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Jobs are created by POST /transcribe, which prices and enqueues them.
        return False

    @admin.action(description="Re-queue selected failed transcriptions")
    def requeue_failed(self, request: HttpRequest, queryset: QuerySet[Transcription]) -> None:
        # Imported here: the transcriptions service owns how a job is reset,
        # refunded and enqueued; the admin only picks which ones.
        try:
            from transcriptions.services import transcription_requeue
        except ImportError:
            self.message_user(request, "Re-queueing is not available in this version.", messages.ERROR)
            return
        ids = list(queryset.filter(status=Transcription.Status.FAILED).values_list("pk", flat=True))
        skipped = queryset.count() - len(ids)
        if ids:
            count = transcription_requeue(transcription_ids=ids)
            self.message_user(request, f"Re-queued {count} failed transcription(s).", messages.SUCCESS)
        if skipped:
            self.message_user(request, f"Skipped {skipped} transcription(s) that had not failed.", messages.WARNING)


@admin.register(TranscriptionUnit)
class TranscriptionUnitAdmin(admin.ModelAdmin):
    """The units of scheduling (docs/transcription.md, "Scheduling"): who decodes what, and where."""

    list_display = (
        "batch_id",
        "index",
        "kind",
        "owner",
        "status",
        "start",
        "end",
        "windows_count",
        "worker",
        "attempts",
    )
    list_filter = ("status", "kind")
    search_fields = ("batch_id",)
    search_help_text = "A batch UUID (a job's batch id)."
    list_select_related = ("owner",)
    ordering = ("-created_at", "batch_id", "index")
    paginator = LargeTablePaginator
    show_full_result_count = False
    fields = (
        "id",
        "batch_id",
        "index",
        "kind",
        "owner",
        "file",
        "status",
        "start",
        "end",
        "windows_count",
        "claim_token",
        "worker",
        "attempts",
        "claimed_at",
        "queued_at",
        "created_at",
    )
    # Units belong to the workers and are dropped with their batch: read-only here.
    readonly_fields = fields

    @admin.display(description="windows")
    def windows_count(self, obj: TranscriptionUnit) -> str:
        return "whole span" if obj.windows is None else str(len(obj.windows))

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[TranscriptionUnit], search_term: str
    ) -> tuple[QuerySet[TranscriptionUnit], bool]:
        term = search_term.strip().replace("-", "")
        if not term:
            return queryset, False
        try:
            return queryset.filter(batch_id=uuid.UUID(term)), False
        except ValueError:
            return queryset.none(), False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: TranscriptionUnit | None = None) -> bool:
        return False
