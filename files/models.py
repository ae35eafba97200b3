"""Uploaded media: one row per distinct upload (by BLAKE3 digest) per user."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from whisper_site.identifiers import new_uuid7


class File(models.Model):
    """An upload and the objects stored for it (MP3/MP4, WAV, or an avatar image)."""

    class Kind(models.TextChoices):
        AUDIO = "audio"
        VIDEO = "video"
        IMAGE = "image"

    class State(models.TextChoices):
        PROCESSING = "processing"
        READY = "ready"
        FAILED = "failed"

    id = models.UUIDField(primary_key=True, default=new_uuid7, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="files")
    filename = models.CharField(max_length=255)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    content_type = models.CharField(max_length=100)
    blake3 = models.CharField(max_length=64)
    size_bytes = models.BigIntegerField(default=0)
    upload_size = models.BigIntegerField(default=0)
    duration = models.FloatField(default=0.0, help_text="Seconds of audio.")
    state = models.CharField(max_length=10, choices=State.choices, default=State.PROCESSING, db_index=True)
    error = models.TextField(blank=True)
    # Storage names (Django storage API), relative to the storage root.
    original_name = models.CharField(max_length=255, blank=True)
    media_name = models.CharField(max_length=255, blank=True)
    wav_name = models.CharField(max_length=255, blank=True)
    uploaded_at = models.DateTimeField(default=timezone.now, db_index=True)
    converted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-uploaded_at"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "blake3"], name="file_owner_blake3_unique"),
        ]
        indexes = [models.Index(fields=["owner", "-uploaded_at"], name="file_owner_uploaded_idx")]

    def __str__(self) -> str:
        return f"{self.filename} ({self.id.hex})"
