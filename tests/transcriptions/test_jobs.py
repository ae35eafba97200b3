"""Job state in eager mode: prices, claims, retakes, refunds, recovery and the balance's invariant."""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
import uuid
from decimal import Decimal
from io import StringIO
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from accounts.models import User
from files.models import File
from tests.conftest import make_user
from tests.transcriptions.conftest import MakeFile
from transcriptions import services, tasks, worker
from transcriptions.models import Transcription
from transcriptions.services import runs
from whisper_site.celery import app as celery_app

Status = Transcription.Status


def make_job(owner: User, file: File, **fields: Any) -> Transcription:
    """A job row as POST /transcribe creates it, but without queueing it."""
    values: dict[str, Any] = {
        "model": "ggml-tiny.en",
        "language": "en",
        "format": "verbose_json",
        "audio_seconds": services.audio_seconds(file.duration),
    }
    values.update(fields)
    return Transcription.objects.create(owner=owner, file=file, **values)


def run_batch(batch_id: uuid.UUID, task_id: str) -> None:
    """Deliver the batch's message with a given task id (a redelivery keeps its id)."""
    tasks.transcription_run_batch_task.apply(args=[batch_id.hex], task_id=task_id)


def balance(user: User) -> int:
    return User.objects.values_list("token_balance", flat=True).get(pk=user.pk)


# --- Prices and limits ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("duration", "multiplier", "cost"),
    [
        (10.2, "0.7", 8),  # ceil(11 x 0.7) = ceil(7.7)
        (10.2, "1.0", 11),
        (10.2, "0", 0),
        (10.0, "0.7", 7),  # exactly 7: no float error
        (11.0000000001, "1", 11),  # a probe's float noise costs no extra second
        (11.0004, "1", 11),
        (11.001, "1", 12),
        (0.0, "1", 0),
        (3600.5, "1000", 3_601_000),
        (1.0, "0.0001", 1),
    ],
)
def test_job_cost(duration: float, multiplier: str, cost: int) -> None:
    assert services.job_cost(duration=duration, price_multiplier=Decimal(multiplier)) == cost


def test_time_limits_scale_with_the_audio_and_stay_below_the_visibility_timeout(settings: Any) -> None:
    settings.TRANSCRIPTION_TIME_LIMIT_BASE_SECONDS = 120
    settings.TRANSCRIPTION_TIME_LIMIT_PER_AUDIO_SECOND = 3.0
    settings.CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 21600}
    assert services.time_limits(duration=11.0) == (153, 213)
    assert services.time_limits(duration=3600.0) == (10920, 10980)
    soft, hard = services.time_limits(duration=100_000.0)
    assert hard < 21600 and hard == soft + 60


# --- Claims --------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_redelivered_message_does_nothing_twice(user: User, make_ready_file: MakeFile) -> None:
    file = make_ready_file(user)
    job = make_job(user, file)
    run_batch(job.batch_id, "task-1")
    run_batch(job.batch_id, "task-1")
    run_batch(job.batch_id, "task-2")  # a duplicate message (recovery) finds nothing to do
    job.refresh_from_db()
    assert (job.status, job.cost, job.attempts, job.claim_token) == ("completed", 11, 1, "task-1")
    assert balance(user) == 1000 - 11


@pytest.mark.django_db
def test_the_same_task_retakes_its_job_after_its_worker_died_without_charging_again(
    user: User, make_ready_file: MakeFile
) -> None:
    file = make_ready_file(user)
    # What a worker killed mid-run leaves: claimed, charged, processing.
    job = make_job(user, file, status=Status.PROCESSING, claim_token="task-1", attempts=1, cost=11)
    User.objects.filter(pk=user.pk).update(token_balance=989)
    run_batch(job.batch_id, "task-2")  # another task: not its job
    job.refresh_from_db()
    assert (job.status, job.attempts) == ("processing", 1)
    run_batch(job.batch_id, "task-1")  # the redelivery of the killed task
    job.refresh_from_db()
    assert (job.status, job.cost, job.attempts) == ("completed", 11, 2)
    assert balance(user) == 989


@pytest.mark.django_db
def test_a_job_that_killed_its_worker_too_often_fails_and_is_refunded(user: User, make_ready_file: MakeFile) -> None:
    file = make_ready_file(user)
    attempts = settings.TRANSCRIPTION_MAX_ATTEMPTS
    job = make_job(user, file, status=Status.PROCESSING, claim_token="task-1", attempts=attempts, cost=11)
    User.objects.filter(pk=user.pk).update(token_balance=989)
    run_batch(job.batch_id, "task-1")
    job.refresh_from_db()
    assert (job.status, job.cost) == ("failed", 0)
    assert job.error == "Transcription failed after 3 attempts: the worker stopped before it finished"
    assert balance(user) == 1000


@pytest.mark.django_db
def test_a_refund_happens_once(user: User, make_ready_file: MakeFile) -> None:
    file = make_ready_file(user)
    job = make_job(user, file, status=Status.PROCESSING, claim_token="task-1", attempts=1, cost=11)
    User.objects.filter(pk=user.pk).update(token_balance=989)
    assert services.transcription_batch_fail(batch_id=job.batch_id, claim_token="task-1", error="boom") == 1
    assert services.transcription_batch_fail(batch_id=job.batch_id, claim_token="task-1", error="boom") == 0
    with transaction.atomic():
        assert not runs._fail_and_refund(job, "again")  # the stale copy read before the failure
    job.refresh_from_db()
    assert (job.status, job.cost, job.error) == ("failed", 0, "boom")
    assert balance(user) == 1000


@pytest.mark.django_db
def test_completion_needs_the_claim(user: User, make_ready_file: MakeFile) -> None:
    file = make_ready_file(user)
    job = make_job(user, file, status=Status.PROCESSING, claim_token="task-1", attempts=1, cost=11)
    done = runs.transcription_batch_complete(batch_id=job.batch_id, claim_token="task-2", rendered={}, language="en")
    job.refresh_from_db()
    assert (done, job.status) == (0, "processing")


# --- The balance's invariant -----------------------------------------------------------


@pytest.mark.django_db
def test_the_database_refuses_a_negative_balance(user: User) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        User.objects.filter(pk=user.pk).update(token_balance=-1)
    assert balance(user) == 1000


@pytest.mark.django_db(transaction=True)
def test_jobs_racing_for_the_last_tokens_cannot_both_win(make_ready_file: MakeFile, silence_wav: Path) -> None:
    owner, _ = make_user("racer", token_balance=3)
    file = make_ready_file(owner, wav=silence_wav, duration=1.0)
    jobs = [make_job(owner, file) for _ in range(8)]
    barrier = threading.Barrier(len(jobs))
    errors: list[BaseException] = []

    def run(job: Transcription) -> None:
        try:
            barrier.wait()
            run_batch(job.batch_id, f"task-{job.id.hex}")
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    statuses = sorted(Transcription.objects.values_list("status", flat=True))
    assert statuses == ["completed"] * 3 + ["failed"] * 5
    assert balance(owner) == 0
    failures = set(Transcription.objects.filter(status=Status.FAILED).values_list("error", flat=True))
    assert failures == {"Insufficient token balance. Required: 1, Available: 0"}


# --- Logs ----------------------------------------------------------------------------


def job_words(job: Transcription) -> str:
    return f"job={job.id.hex} batch={job.batch_id.hex} file={job.file_id.hex} user={job.owner_id.hex}"


def job_extra(record: logging.LogRecord) -> tuple[str, str, str, str]:
    return (record.job_id, record.batch_id, record.file_id, record.user_id)  # type: ignore[attr-defined]


@pytest.mark.django_db
def test_a_failed_job_logs_a_warning_naming_its_ids(
    make_ready_file: MakeFile, caplog: pytest.LogCaptureFixture, django_capture_on_commit_callbacks: Any
) -> None:
    owner, _ = make_user("poor", token_balance=5)
    file = make_ready_file(owner)
    job = make_job(owner, file)
    with caplog.at_level(logging.INFO, logger="transcriptions"), django_capture_on_commit_callbacks(execute=True):
        run_batch(job.batch_id, "task-1")
    warnings = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert [record.getMessage() for record in warnings] == [
        f"Transcription failed: Insufficient token balance. Required: 11, Available: 5 {job_words(job)}"
    ]
    assert warnings[0].name.startswith("transcriptions.")
    assert job_extra(warnings[0]) == (job.id.hex, job.batch_id.hex, file.id.hex, owner.id.hex)


@pytest.mark.django_db
def test_a_failed_inference_logs_each_job_with_its_reason(
    user: User, make_ready_file: MakeFile, caplog: pytest.LogCaptureFixture, django_capture_on_commit_callbacks: Any
) -> None:
    file = make_ready_file(user)
    job = make_job(user, file)
    srt = make_job(user, file, format="srt", batch_id=job.batch_id)
    File.objects.filter(pk=file.pk).update(wav_name="files/nowhere/audio.wav")
    with caplog.at_level(logging.INFO, logger="transcriptions"), django_capture_on_commit_callbacks(execute=True):
        run_batch(job.batch_id, "task-1")
    warnings = sorted(record.getMessage() for record in caplog.records if record.levelno == logging.WARNING)
    reason = "Transcription failed: the file's audio is missing from storage"
    assert warnings == sorted(f"Transcription failed: {reason} {job_words(one)}" for one in (job, srt))
    assert balance(user) == 1000


@pytest.mark.django_db
def test_a_job_leaves_a_trail_an_operator_can_follow(
    user: User, make_ready_file: MakeFile, caplog: pytest.LogCaptureFixture, django_capture_on_commit_callbacks: Any
) -> None:
    file = make_ready_file(user)
    job = make_job(user, file)
    with caplog.at_level(logging.INFO, logger="transcriptions"), django_capture_on_commit_callbacks(execute=True):
        run_batch(job.batch_id, "task-1")
    lines = [record.getMessage() for record in caplog.records if record.name.startswith("transcriptions.services")]
    batch_words = f"batch={job.batch_id.hex} file={file.id.hex} user={user.id.hex}"
    assert lines[0] == f"Transcription started: attempt 1, 11 tokens charged {job_words(job)}"
    assert re.fullmatch(
        rf"Transcription batch ran 11\.0 s of audio in [0-9.]+ s with ggml-tiny\.en {batch_words}", lines[1]
    )
    assert lines[2] == f"Transcription completed {job_words(job)}"


# --- Recovery ------------------------------------------------------------------------


@pytest.mark.django_db
def test_requeue_stuck_recovers_lost_messages_and_lost_workers(
    user: User, make_ready_file: MakeFile, django_capture_on_commit_callbacks: Any
) -> None:
    file = make_ready_file(user)
    long_ago = timezone.now() - dt.timedelta(hours=2)
    never_sent = make_job(user, file)  # its message was lost (queued_at never set)
    sent_long_ago = make_job(user, file, format="srt", queued_at=long_ago)
    just_sent = make_job(user, file, format="vtt", queued_at=timezone.now())
    lost_worker = make_job(
        user, file, status=Status.PROCESSING, claim_token="dead", attempts=1, cost=11, started_at=long_ago
    )
    busy_worker = make_job(
        user, file, status=Status.PROCESSING, claim_token="alive", attempts=1, cost=11, started_at=timezone.now()
    )
    converting = make_ready_file(user, state=File.State.PROCESSING)
    waiting = make_job(user, converting)
    failed_file = make_ready_file(user, state=File.State.FAILED, error="Conversion failed: bad data")
    doomed = make_job(user, failed_file)
    User.objects.filter(pk=user.pk).update(token_balance=978)

    out = StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        call_command("requeue_stuck", "--older-than", "60", stdout=out)
    assert out.getvalue() == "Re-queued 0 file conversion(s)\nRe-queued 3 transcription job(s)\n"

    def state(job: Transcription) -> tuple[str, int]:
        job.refresh_from_db()
        return job.status, job.cost

    # A message says there is work, not whose: the three sent take the oldest three batches
    # waiting, the just_sent one among them; the lost worker's job, now the newest waiting,
    # is the work of the message still on its way.
    assert state(never_sent) == ("completed", 11)
    assert state(sent_long_ago) == ("completed", 11)
    assert state(just_sent) == ("completed", 11)
    assert state(lost_worker) == ("pending", 11)  # keeps what it paid
    assert state(busy_worker) == ("processing", 11)
    assert state(waiting) == ("pending", 0)
    assert state(doomed) == ("failed", 0) and doomed.error == "File conversion failed: bad data"
    assert balance(user) == 978 - 33
    with django_capture_on_commit_callbacks(execute=True):
        run_batch(just_sent.batch_id, "the-message-on-its-way")
    assert state(lost_worker) == ("completed", 11)  # already paid: not charged again
    assert balance(user) == 978 - 33

    # Idempotent: nothing is left to recover.
    out = StringIO()
    call_command("requeue_stuck", "--older-than", "60", stdout=out)
    assert out.getvalue() == "Re-queued 0 file conversion(s)\nRe-queued 0 transcription job(s)\n"


def test_requeue_stuck_checks_its_option() -> None:
    with pytest.raises(CommandError, match="--older-than must be at least 0"):
        call_command("requeue_stuck", "--older-than", "-1")


@pytest.mark.django_db
def test_the_periodic_recovery_is_scheduled_and_runs(
    user: User, make_ready_file: MakeFile, django_capture_on_commit_callbacks: Any
) -> None:
    entry = settings.CELERY_BEAT_SCHEDULE["transcriptions-requeue-stuck"]
    assert entry["task"] == tasks.transcription_requeue_stuck_task.name
    assert entry["task"] in celery_app.tasks
    assert entry["schedule"] == settings.TRANSCRIPTION_RECOVERY_INTERVAL_SECONDS
    job = make_job(user, make_ready_file(user))
    with django_capture_on_commit_callbacks(execute=True):
        tasks.transcription_requeue_stuck_task.apply(kwargs={"older_than": 0})
    job.refresh_from_db()
    assert job.status == "completed"


@pytest.mark.django_db
def test_operators_requeue_failed_jobs(
    user: User, make_ready_file: MakeFile, django_capture_on_commit_callbacks: Any
) -> None:
    file = make_ready_file(user)
    failed = make_job(user, file, status=Status.FAILED, error="Insufficient token balance. Required: 11, Available: 0")
    done = make_job(user, file, format="srt", status=Status.COMPLETED, data={"text": "x"})
    with django_capture_on_commit_callbacks(execute=True):
        assert services.transcription_requeue(transcription_ids=[failed.id, done.id]) == 1
    failed.refresh_from_db()
    assert (failed.status, failed.error, failed.cost) == ("completed", "", 11)
    done.refresh_from_db()
    assert done.data == {"text": "x"}
    assert balance(user) == 1000 - 11


# --- Worker --------------------------------------------------------------------------


def test_threads_are_shared_by_the_pool_processes(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.WHISPER_CPU_THREADS = 0
    monkeypatch.setattr(worker.os, "cpu_count", lambda: 8)
    monkeypatch.setattr(worker, "_worker_concurrency", None)
    worker.on_worker_init(sender=SimpleNamespace(concurrency=4))
    assert worker.cpu_threads() == 2
    worker.on_worker_init(sender=SimpleNamespace(concurrency=16))
    assert worker.cpu_threads() == 1
    settings.WHISPER_CPU_THREADS = 3
    assert worker.cpu_threads() == 3


# --- The models command ----------------------------------------------------------------


def test_models_command_installs_and_lists(installed_models: Path, settings: Any) -> None:
    out = StringIO()
    call_command("models", "--install", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0] == "Bundled models in place: ggml-tiny.en, ggml-base"
    assert [line.split()[0] for line in lines[1:]] == ["ggml-base", "ggml-tiny.en"]
    assert lines[2].endswith("(default)") and int(lines[2].split()[1]) > 70_000_000
    quiet = StringIO()
    call_command("models", "--install", verbosity=0, stdout=quiet)
    assert quiet.getvalue() == ""


def test_models_command_on_an_empty_folder(tmp_path: Path, settings: Any) -> None:
    settings.MODELS_DIR = tmp_path / "models"
    out = StringIO()
    call_command("models", stdout=out)
    assert out.getvalue() == f"No models in {tmp_path / 'models'} (run `manage.py models --install`)\n"
