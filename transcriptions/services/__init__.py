"""Transcription writes, one module per idea; the names callers use are re-exported here.

- :mod:`.prices`: what a job costs and how long its inference may run;
- :mod:`.jobs`: creating jobs (one per format of a request, one *batch*), sending batches to
  the queue, and deleting jobs;
- :mod:`.runs`: running a batch: claiming and charging its jobs, the inference run,
  completing them, or failing and refunding them;
- :mod:`.units`: the units of scheduling of long batches: planning, the fair claim,
  decoding a unit, merging a batch's units;
- :mod:`.recovery`: queueing again what a lost worker or a lost queue left behind, and
  operators' re-queues.
"""

from __future__ import annotations

from transcriptions.services.jobs import (
    ALREADY_FINISHED_MESSAGE,
    MIN_SPEAKERS,
    NOT_FOUND_OR_DENIED_MESSAGE,
    PROMPT_MAX_CHARS,
    SPEAKERS_WITHOUT_DIARIZE_MESSAGE,
    TranscriptOptions,
    conversion_failed_message,
    pending_quota_message,
    speakers_range_message,
    transcription_batches_enqueue,
    transcription_cancel,
    transcription_create,
    transcription_delete,
    transcription_file_ready,
    transcription_request_check,
)
from transcriptions.services.prices import audio_seconds, job_cost, time_limits
from transcriptions.services.recovery import transcription_requeue, transcription_requeue_stuck
from transcriptions.services.runs import (
    transcription_batch_complete,
    transcription_batch_fail,
    transcription_batch_run,
    transcription_file_failed,
    transcription_pending_fail,
)
from transcriptions.services.units import (
    transcription_speakers_run,
    transcription_unit_claim,
    transcription_unit_run_next,
    transcription_units_requeue_stuck,
    unit_spans,
    units_merge,
    window_groups,
)

__all__ = [
    "ALREADY_FINISHED_MESSAGE",
    "MIN_SPEAKERS",
    "NOT_FOUND_OR_DENIED_MESSAGE",
    "PROMPT_MAX_CHARS",
    "SPEAKERS_WITHOUT_DIARIZE_MESSAGE",
    "TranscriptOptions",
    "audio_seconds",
    "conversion_failed_message",
    "job_cost",
    "pending_quota_message",
    "speakers_range_message",
    "time_limits",
    "transcription_batch_complete",
    "transcription_batch_fail",
    "transcription_batch_run",
    "transcription_batches_enqueue",
    "transcription_cancel",
    "transcription_create",
    "transcription_delete",
    "transcription_file_failed",
    "transcription_file_ready",
    "transcription_pending_fail",
    "transcription_request_check",
    "transcription_requeue",
    "transcription_requeue_stuck",
    "transcription_speakers_run",
    "transcription_unit_claim",
    "transcription_unit_run_next",
    "transcription_units_requeue_stuck",
    "unit_spans",
    "units_merge",
    "window_groups",
]
