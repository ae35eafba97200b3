"""Operators' view of uploaded files: state, size, duration and owner."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from files.models import File
from whisper_site.admin_changelist import LargeTablePaginator, search_by_id_or_owner


@admin.register(File)
class FileAdmin(admin.ModelAdmin):
    list_display = ("filename", "kind", "state", "size_bytes", "duration_seconds", "owner", "uploaded_at")
    # Choice fields only: their filter options come from the model, not from a
    # SELECT DISTINCT over the whole table.
    list_filter = ("state", "kind")
    search_fields = ("filename",)  # enables the search box; see get_search_results
    search_help_text = "A file UUID, or part of the owner's username."
    list_select_related = ("owner",)
    ordering = ("-uploaded_at",)
    paginator = LargeTablePaginator
    show_full_result_count = False
    raw_id_fields = ("owner",)
    fields = (
        "id",
        "owner",
        "filename",
        "kind",
        "content_type",
        "state",
        "error",
        "size_bytes",
        "upload_size",
        "duration",
        "blake3",
        "media_name",
        "wav_name",
        "original_name",
        "uploaded_at",
        "converted_at",
    )
    # Rows describe stored objects: only the display name is safe to edit here.
    readonly_fields = tuple(name for name in fields if name != "filename")

    @admin.display(description="duration (s)", ordering="duration")
    def duration_seconds(self, obj: File) -> str:
        return f"{obj.duration:.1f}"

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[File], search_term: str
    ) -> tuple[QuerySet[File], bool]:
        # Not Django's default (icontains over joined columns, a full scan of
        # the files table): an id or an owner, both indexed.
        return search_by_id_or_owner(queryset, search_term, owner_field="owner"), False

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Files arrive through POST /file, which probes, hashes and converts them.
        return False

    def delete_model(self, request: HttpRequest, obj: File) -> None:
        self.delete_queryset(request, File.objects.filter(pk=obj.pk))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[File]) -> None:
        # The rows go with their transcriptions (cascade); the stored MP3/MP4
        # and WAV are deleted once that commits, as DELETE /file does.
        from files.services import file_delete_many

        file_delete_many(files=queryset)
