"""Transcription jobs: one per requested format, one inference run per request."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from whisper_site.identifiers import new_uuid7
from whisper_site.logs import LogContext, job_log_context


class Transcription(models.Model):
    """A job and, once completed, its result in one format."""

    class Status(models.TextChoices):
        PENDING = "pending"
        PROCESSING = "processing"
        COMPLETED = "completed"
        FAILED = "failed"
        CANCELLED = "cancelled"

    class Format(models.TextChoices):
        VERBOSE_JSON = "verbose_json"
        SRT = "srt"
        VTT = "vtt"

    class Task(models.TextChoices):
        TRANSCRIBE = "transcribe"
        TRANSLATE = "translate"

    id = models.UUIDField(primary_key=True, default=new_uuid7, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="transcriptions")
    file = models.ForeignKey("files.File", on_delete=models.CASCADE, related_name="transcriptions")
    # Jobs queued by one request share one inference run.
    batch_id = models.UUIDField(default=new_uuid7, db_index=True)
    model = models.CharField(max_length=100)
    language = models.CharField(max_length=16, blank=True, help_text="Requested; empty means detect.")
    # Options of the request, the same on every job of a batch (they share one run).
    task = models.CharField(max_length=16, choices=Task.choices, default=Task.TRANSCRIBE)
    word_timestamps = models.BooleanField(default=False, help_text="verbose_json segments list their words.")
    prompt = models.TextField(blank=True, help_text="Vocabulary and spelling hints given to the model.")
    vad_filter = models.BooleanField(null=True, blank=True, help_text="Skip silence; empty: the server's setting.")
    temperature = models.FloatField(
        null=True, blank=True, help_text="First sampling temperature (OpenAI route); empty: the default schedule."
    )
    diarize = models.BooleanField(default=False, help_text="Segments and words say which speaker said them.")
    speakers = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="How many speakers there are (diarize); empty: found from the audio."
    )
    format = models.CharField(max_length=16, choices=Format.choices)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING, db_index=True)
    error = models.TextField(blank=True)
    data = models.JSONField(null=True, blank=True)
    detected_language = models.CharField(max_length=16, blank=True)
    audio_seconds = models.BigIntegerField(default=0)
    cost = models.BigIntegerField(default=0, help_text="Tokens charged (0 once refunded).")
    attempts = models.PositiveIntegerField(default=0, help_text="Times a worker claimed it.")
    # The Celery task id of the worker holding the job while it is processing:
    # only that task may complete or fail it, and a redelivery of the same task
    # (its worker was killed) may take it again. Empty while pending.
    claim_token = models.CharField(max_length=64, blank=True, default="")
    # When the last queue message for the job was sent: the recovery re-sends
    # for pending jobs whose message is older than its threshold (lost queue).
    queued_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    # Audio decoded / the file's duration, 0.0 to 1.0 (1.0 once completed); only ever raised.
    progress = models.FloatField(default=0.0)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["owner", "-created_at"], name="transcription_owner_idx"),
            models.Index(fields=["file", "created_at"], name="transcription_file_idx"),
        ]
        constraints = [
            models.CheckConstraint(condition=models.Q(cost__gte=0), name="transcription_cost_gte_0"),
            models.CheckConstraint(
                condition=models.Q(speakers__isnull=True) | models.Q(speakers__gte=1, speakers__lte=20),
                name="transcription_speakers_1_20",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.id.hex} {self.format} {self.status}"

    def log_context(self) -> LogContext:
        """The ids that name this job in a log line: job, batch, file and user."""
        return job_log_context(job_id=self.id, batch_id=self.batch_id, file_id=self.file_id, user_id=self.owner_id)

    def batch_log_context(self) -> LogContext:
        """The ids that name this job's batch in a log line: batch, file and user."""
        return job_log_context(batch_id=self.batch_id, file_id=self.file_id, user_id=self.owner_id)

    @property
    def reported_language(self) -> str | None:
        """The language asked for, else the one detected once known; None while unknown."""
        return self.language or self.detected_language or None

    @property
    def result(self) -> dict | None:
        """The transcript in this job's format once completed; None before (and once failed)."""
        return self.data if self.status == self.Status.COMPLETED else None

    @property
    def is_finished(self) -> bool:
        """Completed, failed or cancelled: nothing more happens to it."""
        return self.status in (self.Status.COMPLETED, self.Status.FAILED, self.Status.CANCELLED)


class TranscriptionUnit(models.Model):
    """A span of one batch's audio, the unit of scheduling (docs/transcription.md, "Scheduling").

    The batch's jobs stay the unit of billing, status and results. When a worker claims a
    batch, it is planned into units: one for a file of at most ``TRANSCRIPTION_UNIT_SECONDS``,
    else groups of the engine's windows of speech that any free worker claims, in the fair
    order; the worker that stores the last unit's segments completes the jobs.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        PROCESSING = "processing"
        DONE = "done"

    class Kind(models.TextChoices):
        # A span of the audio decoded into segments.
        TRANSCRIBE = "transcribe"
        # The whole file's speaker turns (a diarized batch has one, beside its other units).
        SPEAKERS = "speakers"

    id = models.UUIDField(primary_key=True, default=new_uuid7, editable=False)
    batch_id = models.UUIDField()
    kind = models.CharField(max_length=12, choices=Kind.choices, default=Kind.TRANSCRIBE)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    file = models.ForeignKey("files.File", on_delete=models.CASCADE, related_name="+")
    index = models.PositiveIntegerField(help_text="Position in the batch's audio, from 0.")
    start = models.FloatField(help_text="Seconds from the start of the file.")
    end = models.FloatField()
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    # The Celery task id of the worker decoding it, as for jobs: only that task stores its
    # result, and a redelivery of that task (its worker was killed) takes it again.
    claim_token = models.CharField(max_length=64, blank=True, default="")
    claimed_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0, help_text="Times a worker claimed it.")
    # When its last queue message was sent: the recovery sends another for an old one.
    queued_at = models.DateTimeField(null=True, blank=True)
    # Its segments, times from the start of the file, with its language (done units only);
    # a speakers unit's {"turns": [{"start", "end", "speaker"}]}.
    result = models.JSONField(null=True, blank=True)
    # The engine's windows of speech it decodes in one batch ([{"start", "end", "speech"}]);
    # null: the span start-end is decoded as one piece of audio.
    windows = models.JSONField(null=True, blank=True)
    # The worker process that claimed it last ("host:pid"), for operators.
    worker = models.CharField(max_length=255, blank=True, default="")
    # When that worker last said it is still on it (at the claim, then every
    # TRANSCRIPTION_HEARTBEAT_SECONDS while it decodes): the recovery puts back a unit not
    # heard of for TRANSCRIPTION_LOST_AFTER_SECONDS, whose worker is gone (machine lost,
    # whole worker killed), without waiting for its time limit.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # The batch's oldest job's creation: within a user, the oldest job is served first.
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "batch_id", "index"]
        indexes = [
            models.Index(fields=["status", "owner", "created_at"], name="transcription_unit_claim_idx"),
            models.Index(fields=["status", "claimed_at"], name="transcription_unit_served_idx"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["batch_id", "index"], name="transcription_unit_batch_index_uniq"),
        ]

    def __str__(self) -> str:
        return f"{self.batch_id.hex}#{self.index} {self.start:.1f}-{self.end:.1f} s {self.status}"

    @property
    def seconds(self) -> float:
        """The audio it covers."""
        return self.end - self.start
