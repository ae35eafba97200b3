"""Units of scheduling in eager mode: the fair order, long files cut and merged, races, losses, failures."""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
import threading
import uuid
import wave
from io import StringIO
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from accounts.models import User
from files.models import File
from files.storage import storage_local_path
from health.services import worker_heartbeat_record
from tests.conftest import make_user
from tests.transcriptions.conftest import DATA_DIR, JFK_REFERENCE, MakeFile, ffmpeg, word_error_rate
from tests.transcriptions.test_jobs import balance, make_job, run_batch
from transcriptions import engine, services, tasks, worker
from transcriptions.models import Transcription, TranscriptionUnit
from transcriptions.services.units import transcription_units_planned

Status = Transcription.Status
UnitStatus = TranscriptionUnit.Status
# jfk.flac, 10 s of silence, jfk.flac again, 8 s of silence: 40 s. Each reading is about 9 s
# of speech as the VAD hears it: units of at most 12 s of speech hold one reading each.
LONG_SECONDS = 40.0
UNIT_SECONDS = 12.0
SECOND_JFK_AT = 21.0


@pytest.fixture(scope="module")
def long_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two readings of jfk.flac 21 s apart in a 40 s WAV (16 kHz mono s16le)."""
    path = tmp_path_factory.mktemp("wav") / "two_jfk.wav"
    jfk = str(DATA_DIR / "jfk.flac")
    ffmpeg(
        "-i", jfk, "-i", jfk,
        "-filter_complex",
        "[0:a]apad=whole_dur=21[a];[1:a]apad=whole_dur=19[b];[a][b]concat=n=2:v=0:a=1",
        "-ar", "16000", "-ac", "1", "-c:a", "pcm_s16le", str(path),
    )  # fmt: skip
    return path


@pytest.fixture
def units_of(settings: Any) -> Any:
    settings.TRANSCRIPTION_UNIT_SECONDS = UNIT_SECONDS

    def units(batch_id: uuid.UUID) -> list[TranscriptionUnit]:
        return list(TranscriptionUnit.objects.filter(batch_id=batch_id).order_by("index"))

    return units


def run_unit(task_id: str) -> None:
    """Deliver one "there is work" message with a given task id (a redelivery keeps its id)."""
    tasks.transcription_run_unit_task.apply(task_id=task_id)


# --- The cut ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("duration", "spans"),
    [
        (60.0, [(0.0, 60.0)]),
        (120.0, [(0.0, 120.0)]),
        (120.5, [(0.0, 60.25), (60.25, 120.5)]),
        (300.0, [(0.0, 100.0), (100.0, 200.0), (200.0, 300.0)]),
    ],
)
def test_a_file_without_speech_is_cut_into_equal_units(duration: float, spans: list[tuple[float, float]]) -> None:
    assert services.unit_spans(windows=[], duration=duration, unit_seconds=120.0) == spans


@pytest.mark.parametrize(
    ("windows", "duration", "spans"),
    [
        # Everything fits in one unit.
        ([(1.0, 30.0), (31.0, 60.0)], 100.0, [(0.0, 100.0)]),
        # Cut halfway through the pause after the last window that fits.
        (
            [(0.0, 29.0), (30.0, 59.0), (60.0, 89.0), (90.0, 119.0), (121.0, 150.0)],
            150.0,
            [(0.0, 120.0), (120.0, 150.0)],
        ),
        (
            [(0.0, 30.0), (30.5, 60.0), (61.0, 90.0), (93.0, 110.0), (114.0, 140.0)],
            140.0,
            [(0.0, 112.0), (112.0, 140.0)],
        ),
        # Never more than unit_seconds, even where the pause runs past it.
        (
            [(0.0, 30.0), (31.0, 60.0), (61.0, 90.0), (91.0, 110.0), (200.0, 220.0)],
            220.0,
            [(0.0, 120.0), (120.0, 220.0)],
        ),
        # A pause too long to hold: the next unit starts within it, late enough for its window.
        ([(0.0, 20.0), (500.0, 520.0)], 600.0, [(0.0, 120.0), (400.0, 520.0)]),
    ],
)
def test_a_file_is_cut_in_the_pauses_between_its_windows_of_speech(
    windows: list[tuple[float, float]], duration: float, spans: list[tuple[float, float]]
) -> None:
    cut = services.unit_spans(windows=windows, duration=duration, unit_seconds=120.0)
    assert cut == spans
    assert all(end - start <= 120.0 for start, end in cut)
    # Every window lies whole within one span.
    assert all(any(s <= w_start and w_end <= e for s, e in cut) for w_start, w_end in windows)


# --- The fair order --------------------------------------------------------------------


def make_units(owner: User, file: File, *, count: int, seconds: float, created_at: dt.datetime) -> uuid.UUID:
    """A planned batch of ``count`` pending units (no jobs: the claim does not look at them)."""
    batch_id = uuid.uuid4()
    TranscriptionUnit.objects.bulk_create(
        TranscriptionUnit(
            batch_id=batch_id,
            owner=owner,
            file=file,
            index=index,
            start=index * seconds,
            end=(index + 1) * seconds,
            created_at=created_at,
        )
        for index in range(count)
    )
    return batch_id


def claim(token: str) -> tuple[str, uuid.UUID, int]:
    unit = services.transcription_unit_claim(claim_token=token)
    assert unit is not None
    return unit.owner.username, unit.batch_id, unit.index


@pytest.mark.django_db
def test_a_short_batch_queued_behind_a_backlog_is_taken_next(make_ready_file: MakeFile) -> None:
    a, _ = make_user("backlog")
    b, _ = make_user("latecomer")
    t0 = timezone.now() - dt.timedelta(minutes=1)
    file_a, file_b = make_ready_file(a), make_ready_file(b)
    first, second, third = (
        make_units(a, file_a, count=3, seconds=100, created_at=t0 + dt.timedelta(seconds=n)) for n in range(3)
    )
    short = make_units(b, file_b, count=1, seconds=11, created_at=t0 + dt.timedelta(seconds=4))

    assert claim("w1") == ("backlog", first, 0)  # A's unit in progress
    assert claim("w2") == ("latecomer", short, 0)  # B is next, ahead of A's 8 other units
    # Then A's units, oldest job first, in audio order.
    assert [claim(f"w{n}")[1:] for n in range(3, 11)] == [
        (first, 1),
        (first, 2),
        (second, 0),
        (second, 1),
        (second, 2),
        (third, 0),
        (third, 1),
        (third, 2),
    ]
    assert services.transcription_unit_claim(claim_token="w11") is None


@pytest.mark.django_db
def test_a_short_job_queued_behind_long_jobs_runs_before_they_are_planned(
    make_ready_file: MakeFile, long_wav: Path, units_of: Any
) -> None:
    a, _ = make_user("backlog")
    b, _ = make_user("latecomer")
    backlog = [make_job(a, make_ready_file(a, wav=long_wav, duration=LONG_SECONDS)) for _ in range(3)]
    short = make_job(b, make_ready_file(b))  # jfk.flac, queued after all of A's

    def claim_next(token: str) -> tuple[uuid.UUID, int]:
        unit = services.transcription_unit_claim(claim_token=token)
        assert unit is not None
        return unit.batch_id, unit.index

    # A message says there is work, not whose: the first takes A's oldest job (planned
    # and charged as it is claimed), the second B's, though A's other two came first.
    assert claim_next("w1") == (backlog[0].batch_id, 0)
    assert claim_next("w2") == (short.batch_id, 0)
    assert [claim_next(f"w{n}") for n in range(3, 8)] == [
        (backlog[0].batch_id, 1),
        (backlog[1].batch_id, 0),
        (backlog[1].batch_id, 1),
        (backlog[2].batch_id, 0),
        (backlog[2].batch_id, 1),
    ]
    assert services.transcription_unit_claim(claim_token="w8") is None
    statuses = Transcription.objects.filter(owner__in=[a, b]).values_list("status", "cost")
    assert sorted(statuses) == [("processing", 11)] + [("processing", 40)] * 3
    assert (balance(a), balance(b)) == (1000 - 120, 1000 - 11)


@pytest.mark.django_db
def test_users_take_turns_and_the_least_served_goes_first(make_ready_file: MakeFile) -> None:
    t0 = timezone.now() - dt.timedelta(minutes=1)
    users = [make_user(name)[0] for name in ("ann", "bob", "cid")]
    for n, owner in enumerate(users):
        make_units(owner, make_ready_file(owner), count=3, seconds=60, created_at=t0 + dt.timedelta(seconds=n))
    order = [claim(f"w{n}")[0] for n in range(9)]
    assert order == ["ann", "bob", "cid"] * 3

    # Service counts audio seconds: a user served a long unit lately waits for the others.
    dan, _ = make_user("dan")
    eve, _ = make_user("eve")
    make_units(dan, make_ready_file(dan), count=1, seconds=300, created_at=t0)
    assert claim("w-dan")[0] == "dan"
    make_units(dan, make_ready_file(dan), count=1, seconds=10, created_at=t0)
    make_units(eve, make_ready_file(eve), count=2, seconds=100, created_at=t0 + dt.timedelta(seconds=30))
    assert [claim(f"w-{n}")[0] for n in range(3)] == ["eve", "eve", "dan"]


@pytest.mark.django_db(transaction=True)
def test_two_claimers_never_take_one_unit(make_ready_file: MakeFile) -> None:
    owner, _ = make_user("crowded")
    other, _ = make_user("neighbour")
    now = timezone.now()
    make_units(owner, make_ready_file(owner), count=4, seconds=30, created_at=now)
    make_units(other, make_ready_file(other), count=2, seconds=30, created_at=now)
    claimers = 10
    barrier = threading.Barrier(claimers)
    claimed: list[uuid.UUID] = []
    errors: list[BaseException] = []

    def run(token: str) -> None:
        try:
            barrier.wait()
            unit = services.transcription_unit_claim(claim_token=token)
            if unit is not None:
                claimed.append(unit.id)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(f"task-{n}",)) for n in range(claimers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(claimed) == len(set(claimed)) == 6
    rows = TranscriptionUnit.objects.all()
    assert {row.status for row in rows} == {UnitStatus.PROCESSING}
    assert len({row.claim_token for row in rows}) == 6
    assert {row.attempts for row in rows} == {1}


# --- A long file, end to end --------------------------------------------------------------


@pytest.mark.django_db
def test_a_long_file_is_cut_decoded_by_several_tasks_and_merged_in_order(
    user: User, make_ready_file: MakeFile, long_wav: Path, units_of: Any, django_capture_on_commit_callbacks: Any
) -> None:
    file = make_ready_file(user, wav=long_wav, duration=LONG_SECONDS)
    job = make_job(user, file, word_timestamps=True)
    srt = make_job(user, file, format="srt", batch_id=job.batch_id)
    with django_capture_on_commit_callbacks(execute=True):
        run_batch(job.batch_id, "planner")  # plans, sends one message for the other unit

    units = units_of(job.batch_id)
    # Two units, cut in the pause between the two readings.
    assert [unit.status for unit in units] == ["done", "done"]
    # Each holds one reading whole, as the VAD heard it: the silence between is no unit's.
    assert [len(unit.windows) for unit in units] == [1, 1]
    assert units[0].start <= 0.4 and 10.5 <= units[0].end < units[1].start <= SECOND_JFK_AT + 0.4
    assert SECOND_JFK_AT + 10.5 <= units[1].end <= LONG_SECONDS
    assert len({unit.claim_token for unit in units}) == 2  # two tasks, one unit each
    job.refresh_from_db()
    srt.refresh_from_db()
    assert (job.status, srt.status) == ("completed", "completed")
    assert (job.cost, srt.cost, balance(user)) == (40, 40, 1000 - 80)

    # The merged words are in order, each reading at its place in the file.
    words = [word for segment in job.data["segments"] for word in segment["words"]]
    starts = [word["start"] for word in words]
    assert starts == sorted(starts)
    assert [segment["id"] for segment in job.data["segments"]] == list(range(len(job.data["segments"])))
    first = [word for word in words if word["start"] < 20]
    second = [word for word in words if word["start"] >= 20]
    assert len(first) == len(second)
    for one, two in zip(first, second, strict=True):
        assert one["word"].strip(" ,.").lower() == two["word"].strip(" ,.").lower()
        assert abs(two["start"] - one["start"] - SECOND_JFK_AT) <= 0.5  # alignment differs by tenths
    assert word_error_rate(f"{JFK_REFERENCE} {JFK_REFERENCE}", job.data["text"]) <= 0.1

    # The same text as one sequential decode of the whole file, and about the same times
    # (two decodings aligned on their own: words start up to some tenths of a second apart).
    whole = engine.transcribe(
        worker.model_cache().get("ggml-tiny.en"), long_wav, language="en", vad_filter=False, word_timestamps=True
    )
    assert word_error_rate(whole.text, job.data["text"]) <= 0.05
    whole_words = [word for segment in whole.segments for word in segment.words or ()]
    assert len(whole_words) == len(words)
    assert max(abs(mine["start"] - theirs.start) for mine, theirs in zip(words, whole_words, strict=True)) <= 0.8
    assert "00:00:21," in srt.data["text"]  # the cues of the second reading at their time


@pytest.mark.django_db
def test_a_short_file_is_not_cut(user: User, make_ready_file: MakeFile, units_of: Any) -> None:
    file = make_ready_file(user)  # jfk.flac, 11 s
    job = make_job(user, file)
    run_batch(job.batch_id, "task-1")
    job.refresh_from_db()
    assert job.status == "completed"
    [unit] = TranscriptionUnit.objects.all()  # one unit: the whole file, decoded as one piece
    assert (unit.batch_id, unit.start, unit.end, unit.windows, unit.status) == (job.batch_id, 0.0, 11.0, None, "done")


# --- Losses, failures, deletions ------------------------------------------------------------


def half_done(user: User, make_ready_file: MakeFile, wav: Path) -> tuple[Transcription, TranscriptionUnit]:
    """A long batch whose first unit is done and whose second unit's message is not delivered yet."""
    file = make_ready_file(user, wav=wav, duration=LONG_SECONDS)
    job = make_job(user, file)
    run_batch(job.batch_id, "planner")  # the other unit's message waits for a commit that never comes
    done, waiting = TranscriptionUnit.objects.filter(batch_id=job.batch_id).order_by("index")
    assert (done.status, waiting.status) == ("done", "pending")
    job.refresh_from_db()
    assert (job.status, job.cost) == ("processing", 40)
    return job, waiting


@pytest.mark.django_db
def test_a_unit_held_by_a_lost_worker_is_taken_again(
    user: User, make_ready_file: MakeFile, long_wav: Path, units_of: Any, django_capture_on_commit_callbacks: Any
) -> None:
    job, unit = half_done(user, make_ready_file, long_wav)
    long_ago = timezone.now() - dt.timedelta(hours=2)
    TranscriptionUnit.objects.filter(id=unit.id).update(
        status=UnitStatus.PROCESSING, claim_token="dead", claimed_at=long_ago, attempts=1
    )
    # The job itself looks stale too; it is left to its units.
    Transcription.objects.filter(id=job.id).update(started_at=long_ago)
    with django_capture_on_commit_callbacks(execute=True):
        call_command("requeue_stuck", "--older-than", "60", stdout=StringIO())
    unit.refresh_from_db()
    job.refresh_from_db()
    assert (unit.status, unit.attempts) == ("done", 2)
    assert (job.status, job.attempts, job.cost, job.claim_token) == ("completed", 1, 40, "planner")
    assert balance(user) == 1000 - 40
    assert word_error_rate(f"{JFK_REFERENCE} {JFK_REFERENCE}", job.data["text"]) <= 0.1


@pytest.mark.django_db
def test_a_unit_whose_worker_is_no_longer_heard_of_is_taken_again_before_its_time_limit(
    user: User,
    make_ready_file: MakeFile,
    long_wav: Path,
    units_of: Any,
    settings: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    job, unit = half_done(user, make_ready_file, long_wav)
    now = timezone.now()
    # Claimed a minute ago, well within a unit's time limit; its worker's last beat is
    # just under, then just over TRANSCRIPTION_LOST_AFTER_SECONDS old.
    lost_after = dt.timedelta(seconds=settings.TRANSCRIPTION_LOST_AFTER_SECONDS)
    TranscriptionUnit.objects.filter(id=unit.id).update(
        status=UnitStatus.PROCESSING,
        claim_token="gone",
        claimed_at=now - dt.timedelta(minutes=1),
        heartbeat_at=now - lost_after + dt.timedelta(seconds=5),
        attempts=1,
        worker="elsewhere:4242",
    )
    with django_capture_on_commit_callbacks(execute=True):
        call_command("requeue_stuck", "--older-than", "600", stdout=StringIO())
    unit.refresh_from_db()
    assert (unit.status, unit.claim_token) == ("processing", "gone")  # still heard of recently enough

    TranscriptionUnit.objects.filter(id=unit.id).update(heartbeat_at=now - lost_after - dt.timedelta(seconds=5))
    with django_capture_on_commit_callbacks(execute=True):
        call_command("requeue_stuck", "--older-than", "600", stdout=StringIO())
    unit.refresh_from_db()
    job.refresh_from_db()
    assert (unit.status, unit.attempts) == ("done", 2) and unit.worker != "elsewhere:4242"
    assert (job.status, job.cost) == ("completed", 40)
    assert balance(user) == 1000 - 40


@pytest.mark.django_db
def test_a_redelivered_unit_message_retakes_its_unit_until_it_fails_the_batch(
    user: User, make_ready_file: MakeFile, long_wav: Path, units_of: Any, settings: Any
) -> None:
    job, unit = half_done(user, make_ready_file, long_wav)
    TranscriptionUnit.objects.filter(id=unit.id).update(
        status=UnitStatus.PROCESSING, claim_token="killed", attempts=settings.TRANSCRIPTION_MAX_ATTEMPTS
    )
    run_unit("killed")  # its worker died once too often
    job.refresh_from_db()
    assert (job.status, job.cost) == ("failed", 0)
    assert job.error == "Transcription failed after 3 attempts: the worker stopped before it finished"
    assert balance(user) == 1000
    assert not TranscriptionUnit.objects.exists()


@pytest.mark.django_db
def test_a_failing_unit_fails_the_batch_and_refunds_it_once(
    user: User, make_ready_file: MakeFile, long_wav: Path, units_of: Any
) -> None:
    job, _ = half_done(user, make_ready_file, long_wav)
    with storage_local_path(job.file.wav_name, suffix=".wav") as path:
        path.unlink()  # the audio is lost from storage
    run_unit("task-2")
    job.refresh_from_db()
    assert (job.status, job.cost) == ("failed", 0)
    assert job.error == "Transcription failed: the file's audio is missing from storage"
    assert balance(user) == 1000
    assert not TranscriptionUnit.objects.exists()  # the batch's other units dropped
    # A late message, a recovery run: nothing more happens.
    run_unit("task-3")
    call_command("requeue_stuck", "--older-than", "0", stdout=StringIO())
    job.refresh_from_db()
    assert (job.status, job.cost, balance(user)) == ("failed", 0, 1000)


@pytest.mark.django_db
def test_the_units_of_a_deleted_job_are_dropped(
    user: User, make_ready_file: MakeFile, long_wav: Path, units_of: Any
) -> None:
    job, _ = half_done(user, make_ready_file, long_wav)
    other_file = make_ready_file(user, wav=long_wav, duration=LONG_SECONDS)
    services.transcription_delete(user=user, transcription_id=job.id)
    other = make_job(user, other_file, status=Status.PROCESSING, claim_token="planner-2", attempts=1)
    TranscriptionUnit.objects.create(
        batch_id=other.batch_id, owner=user, file=other_file, index=0, start=0.0, end=1.0,
        created_at=timezone.now() + dt.timedelta(hours=1),
    )  # fmt: skip
    run_unit("task-2")  # drops the deleted job's units, then takes the next one
    assert list(TranscriptionUnit.objects.values_list("batch_id", "status")) == [(other.batch_id, "done")]
    assert balance(user) == 1000 - 40  # a deletion keeps the charge, as before


@pytest.mark.django_db
def test_a_batch_whose_last_task_died_before_completing_it_is_completed_by_the_recovery(
    user: User, make_ready_file: MakeFile, long_wav: Path, units_of: Any
) -> None:
    job, unit = half_done(user, make_ready_file, long_wav)
    # The last unit was stored, then its worker was killed before the jobs were completed.
    first = TranscriptionUnit.objects.get(batch_id=job.batch_id, index=0)
    TranscriptionUnit.objects.filter(id=unit.id).update(
        status=UnitStatus.DONE, claim_token="killed", result=first.result
    )
    call_command("requeue_stuck", "--older-than", "60", stdout=StringIO())
    job.refresh_from_db()
    assert (job.status, job.cost, balance(user)) == ("completed", 40, 1000 - 40)
    assert [segment["id"] for segment in job.data["segments"]] == list(range(len(job.data["segments"])))


@pytest.mark.django_db
def test_an_operators_requeue_of_a_long_batch_keeps_its_done_units_and_its_charge(
    user: User, make_ready_file: MakeFile, long_wav: Path, units_of: Any, django_capture_on_commit_callbacks: Any
) -> None:
    job, _ = half_done(user, make_ready_file, long_wav)
    first = TranscriptionUnit.objects.get(batch_id=job.batch_id, index=0)
    with django_capture_on_commit_callbacks(execute=True):
        assert services.transcription_requeue(transcription_ids=[job.id]) == 1
    job.refresh_from_db()
    assert (job.status, job.attempts, job.cost, balance(user)) == ("completed", 2, 40, 1000 - 40)
    again = TranscriptionUnit.objects.get(batch_id=job.batch_id, index=0)
    assert (again.id, again.attempts, again.result) == (first.id, 1, first.result)  # not decoded again


def test_units_are_joined_as_segments_are_without_spaces_in_scripts_written_without() -> None:
    def result(text: str, language: str, start: float) -> dict[str, Any]:
        segment = engine.Segment(id=0, start=start, end=start + 2.0, text=text.strip(), language=language, words=None)
        return {
            "text": text,
            "language": language,
            "language_probability": 0.9,
            "segments": [dataclasses.asdict(segment)],
        }

    english = services.units_merge(
        results=[result(" Ask not.", "en", 0.0), result(" Ask what.", "en", 40.0)], duration=60.0, task="transcribe"
    )
    assert english.text == "Ask not. Ask what."
    chinese = services.units_merge(
        results=[result("你好。", "zh", 0.0), result("世界。", "zh", 40.0)], duration=60.0, task="transcribe"
    )
    assert chinese.text == "你好。世界。"
    assert [segment.id for segment in chinese.segments] == [0, 1]
    assert (chinese.language, round(chinese.language_probability, 3)) == ("zh", 0.9)


def test_windows_are_grouped_into_units_of_at_most_the_unit_seconds_of_speech() -> None:
    windows = [
        engine.Window(0.0, 29.0),
        engine.Window(30.0, 80.0, speech=((30.0, 40.0), (70.0, 80.0))),  # 20 s of speech over 50 s
        engine.Window(81.0, 111.0),
        engine.Window(112.0, 140.0),
        engine.Window(150.0, 151.0),
    ]
    groups = services.window_groups(windows=windows, unit_seconds=60.0)
    assert [[window.start for window in group] for group in groups] == [[0.0, 30.0], [81.0, 112.0, 150.0]]
    # A window longer than a unit still makes one unit on its own.
    assert services.window_groups(windows=windows[:1], unit_seconds=10.0) == [windows[:1]]
    assert services.window_groups(windows=[], unit_seconds=60.0) == []


def sizes(groups: list[list[engine.Window]]) -> list[int]:
    return [len(group) for group in groups]


def test_a_long_files_units_are_even_and_as_many_as_the_processes_share() -> None:
    windows = [engine.Window(30.0 * index, 30.0 * index + 29.0) for index in range(10)]
    # Filled in turn, units of 120 s would be 4, 4 and 2 windows.
    assert sizes(services.window_groups(windows=windows, unit_seconds=120.0)) == [3, 4, 3]
    # Two processes: four units, the longer of each pair first, so that both end together.
    assert sizes(services.window_groups(windows=windows, unit_seconds=120.0, workers=2)) == [3, 2, 3, 2]
    assert sizes(services.window_groups(windows=windows, unit_seconds=120.0, workers=3)) == [3, 4, 3]
    assert sizes(services.window_groups(windows=windows, unit_seconds=150.0, workers=2)) == [5, 5]
    # More processes than windows: a window each.
    assert sizes(services.window_groups(windows=windows, unit_seconds=120.0, workers=16)) == [1] * 10


@pytest.mark.parametrize("seed", range(40))
def test_window_groups_keep_every_window_in_order_within_the_unit_seconds(seed: int) -> None:
    rng = random.Random(seed)
    unit_seconds = rng.uniform(30.0, 200.0)
    workers = rng.randint(1, 4)
    windows, start = [], 0.0
    for _ in range(rng.randint(1, 60)):
        speech = rng.uniform(0.5, 30.0)
        windows.append(engine.Window(start, start + speech))
        start += speech + rng.uniform(0.0, 5.0)
    groups = services.window_groups(windows=windows, unit_seconds=unit_seconds, workers=workers)
    assert [window for group in groups for window in group] == windows
    assert all(group for group in groups)
    assert all(sum(window.speech_seconds for window in group) <= unit_seconds + 1e-9 for group in groups)
    fewest = len(services.window_groups(windows=windows, unit_seconds=unit_seconds))
    assert len(groups) >= fewest
    assert len(groups) % workers == 0 or len(groups) == len(windows)


@pytest.mark.django_db
def test_a_long_file_is_planned_for_the_live_transcription_processes(
    user: User, make_ready_file: MakeFile, settings: Any, tmp_path: Path
) -> None:
    # Twelve readings of jfk.flac a second apart: four windows of about 28 s of speech and
    # one of 3 s.
    jfk = engine.load_audio(DATA_DIR / "jfk.flac")
    audio = np.concatenate([np.concatenate([jfk, np.zeros(16_000, dtype=np.float32)])] * 12)
    path = tmp_path / "twelve_jfk.wav"
    with wave.open(str(path), "wb") as target:
        target.setnchannels(1)
        target.setsampwidth(2)
        target.setframerate(16_000)
        target.writeframes((np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes())
    file = make_ready_file(user, wav=path, duration=len(audio) / 16_000)
    job = make_job(user, file)
    settings.TRANSCRIPTION_UNIT_SECONDS = 60.0

    def planned() -> list[int]:
        return [len(unit.windows or ()) for unit in transcription_units_planned(file=file, job=job)]

    def beat(name: str, queue: str, processes: int) -> None:
        worker_heartbeat_record(
            name=name, hostname="host", pid=1, queues=[queue], started_at=timezone.now(), processes=processes
        )

    assert planned() == [2, 3]  # no worker heard of: as few units as hold the windows
    beat("transcription@one", settings.TRANSCRIPTION_QUEUE, 2)
    beat("conversion@one", "conversion-only", 4)  # takes no units
    assert planned() == [2, 3]
    beat("transcription@two", settings.TRANSCRIPTION_QUEUE, 1)
    assert planned() == [1, 2, 2]  # three processes on two hosts: a unit each


@pytest.mark.django_db
def test_a_long_file_whose_audio_is_gone_fails_refunded_instead_of_waiting(
    user: User, make_ready_file: MakeFile, long_wav: Path, units_of: Any
) -> None:
    file = make_ready_file(user, wav=long_wav, duration=LONG_SECONDS)
    job = make_job(user, file)
    with storage_local_path(file.wav_name, suffix=".wav") as path:
        path.unlink()  # lost from storage before it could be planned
    run_batch(job.batch_id, "task-1")
    job.refresh_from_db()
    assert (job.status, job.cost, balance(user)) == ("failed", 0, 1000)
    assert job.error == "Transcription failed: the file's audio is missing from storage"
    assert not TranscriptionUnit.objects.exists()
