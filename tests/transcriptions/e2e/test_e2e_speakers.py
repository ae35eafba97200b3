"""End to end with real workers: four real voices taking turns, a file cut into units, one name per voice."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from tests.transcriptions.conftest import DATA_DIR
from tests.transcriptions.e2e.conftest import E2E, E2E_UNIT_SECONDS, upload, wait_for
from tests.transcriptions.e2e.test_e2e import balance, client_for, transcribe, wait_done
from transcriptions.models import Transcription, TranscriptionUnit

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

REFERENCE = json.loads((DATA_DIR / "speakers.json").read_text())


def test_four_voices_keep_one_name_each_across_the_units_of_a_file(e2e: E2E) -> None:
    second = e2e.start_worker(concurrency=1, name="speakers")
    try:
        wait_for(lambda: "Loaded model" in second.log(), what="the second worker's model")
        user, client = client_for("speakers")
        job_ids = transcribe(
            client,
            {
                "uuid": upload(client, DATA_DIR / "speakers.opus"),
                "format": ["verbose_json", "srt"],
                "diarize": True,
                "word_timestamps": True,
            },
        )
        verbose, srt = wait_done(job_ids, timeout=300)
        logs = e2e.worker.log()[-3000:] + second.log()[-3000:]
        assert verbose["status"] == srt["status"] == "completed", (verbose, logs)

        job = Transcription.objects.get(id=job_ids[0])
        units = list(TranscriptionUnit.objects.filter(batch_id=job.batch_id).order_by("index"))
        # 47.5 s of nearly continuous speech: transcribed in units of at most E2E_UNIT_SECONDS
        # (30 s) of speech, its speakers found once, over the whole file, in a unit of its own.
        assert [unit.kind for unit in units].count("transcribe") >= 2, units
        (speakers_unit,) = [unit for unit in units if unit.kind == "speakers"]
        assert (speakers_unit.start, speakers_unit.end) == (0.0, pytest.approx(REFERENCE["duration"], abs=0.1))
        assert all(unit.status == "done" and unit.attempts == 1 for unit in units)
        assert max(unit.seconds for unit in units if unit.kind == "transcribe") <= E2E_UNIT_SECONDS + 1
        assert job.cost == 72 and balance(user) == 1000 - 2 * 72  # ceil(48 x 1.5), each format

        segments = verbose["data"]["segments"]
        words = [word for segment in segments for word in segment["words"]]
        assert words and all(word["speaker"] == segment["speaker"] for segment in segments for word in segment["words"])
        names = list(dict.fromkeys(segment["speaker"] for segment in segments))
        assert names == ["SPEAKER_00", "SPEAKER_01", "SPEAKER_02", "SPEAKER_03"]
        # One name per person, whichever unit decoded their words: of the words inside each
        # reference turn, each person's go to one name, and four people to four names.
        per_person: dict[str, Counter[str]] = {}
        for turn in REFERENCE["turns"]:
            for word in words:
                if turn["start"] <= (word["start"] + word["end"]) / 2 <= turn["end"]:
                    per_person.setdefault(turn["speaker"], Counter())[word["speaker"]] += 1
        right = sum(counts.most_common(1)[0][1] for counts in per_person.values())
        assert right / sum(sum(counts.values()) for counts in per_person.values()) >= 0.85, per_person
        assert len({counts.most_common(1)[0][0] for counts in per_person.values()}) == 4, per_person
        # And people were decoded by different units: those names held across units.
        spans = [(unit.start, unit.end, unit.index) for unit in units if unit.kind == "transcribe"]
        units_of: dict[str, set[int]] = {}
        for turn in REFERENCE["turns"]:
            middle = (turn["start"] + turn["end"]) / 2
            units_of.setdefault(turn["speaker"], set()).update(i for start, end, i in spans if start <= middle <= end)
        assert sum(len(indexes) >= 2 for indexes in units_of.values()) >= 2, (units_of, spans)

        cues = [block.split("\n") for block in srt["data"]["text"].split("\n\n")]
        assert {cue[2].split("] ")[0] + "]" for cue in cues} == {f"[{name}]" for name in names}
    finally:
        second.stop()
