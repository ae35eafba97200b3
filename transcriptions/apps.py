from __future__ import annotations

from django.apps import AppConfig


class TranscriptionsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "transcriptions"

    def ready(self) -> None:
        from celery.signals import worker_init, worker_process_init

        from files import signals as file_signals
        from transcriptions import receivers, worker

        file_signals.file_ready.connect(receivers.on_file_ready, dispatch_uid="transcriptions.file_ready")
        file_signals.file_failed.connect(receivers.on_file_failed, dispatch_uid="transcriptions.file_failed")
        # The conversion stores the WAV before the MP3/MP4 and announces it: waiting jobs
        # start then, not after the MP3/MP4.
        file_signals.file_audio_ready.connect(receivers.on_file_ready, dispatch_uid="transcriptions.file_audio_ready")
        # Connected here, before Celery starts the worker: Django is set up (and this runs)
        # while the worker imports the task modules, before worker_init is sent.
        worker_init.connect(worker.on_worker_init, dispatch_uid="transcriptions.worker_init", weak=False)
        worker_process_init.connect(
            worker.on_worker_process_init, dispatch_uid="transcriptions.worker_process_init", weak=False
        )
