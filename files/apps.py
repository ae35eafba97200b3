from __future__ import annotations

from django.apps import AppConfig


class FilesConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "files"

    def ready(self) -> None:
        from celery.signals import worker_process_init

        from files import worker

        # Connected before Celery starts the worker, as transcriptions' handlers are.
        worker_process_init.connect(worker.on_worker_process_init, dispatch_uid="files.worker_process_init", weak=False)
