"""Speakers: the diarizer on real voices, words and segments labelled, subtitles and answers naming them."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tests.transcriptions.conftest import DATA_DIR
from transcriptions import formats
from transcriptions.engine import (
    Diarizer,
    ModelIntegrityError,
    Segment,
    SpeakerTurn,
    TranscriptResult,
    Word,
    load_audio,
    speakers,
)
from transcriptions.engine import diarization as diarization_module
from transcriptions.engine.diarization import cluster_turns
from transcriptions.openai.responses import _openai_speaker
from transcriptions.subtitles import MAX_LINE_CHARS, SRT_SPEAKER_LABEL, build_cues, render_srt, render_vtt

REFERENCE = json.loads((DATA_DIR / "speakers.json").read_text())


# --- Words and segments --------------------------------------------------------------------


def word(text: str, start: float, end: float) -> Word:
    return Word(word=text, start=start, end=end, probability=0.9)


def result_of(*segments: Segment) -> TranscriptResult:
    return TranscriptResult(
        text="".join(segment.text for segment in segments).strip(),
        segments=list(segments),
        language="en",
        language_probability=0.99,
        duration=10.0,
    )


TURNS = [SpeakerTurn(0.0, 2.0, 7), SpeakerTurn(2.5, 5.0, 3), SpeakerTurn(6.0, 9.0, 7)]


def test_a_word_goes_to_the_speaker_overlapping_it_most_else_the_nearest_turn() -> None:
    assert speakers.speaker_at(0.5, 1.0, TURNS) == 7
    # 1.8-2.9: 0.2 s of 7's turn, 0.4 s of 3's.
    assert speakers.speaker_at(1.8, 2.9, TURNS) == 3
    # In the pause 5.0-6.0: nobody's turn; 5.2-5.4 is nearer 3's end than 7's start.
    assert speakers.speaker_at(5.2, 5.4, TURNS) == 3
    assert speakers.speaker_at(5.7, 5.9, TURNS) == 7
    assert speakers.speaker_at(9.5, 9.8, TURNS) == 7
    assert speakers.speaker_at(1.0, 2.0, []) is None


def test_segments_split_where_the_speaker_changes_and_speakers_are_named_in_order_of_appearance() -> None:
    words = (
        word(" Hello", 0.1, 0.6),
        word(" there.", 0.6, 1.5),
        word(" Hi,", 2.6, 3.0),
        word(" how", 3.1, 3.4),
        word(" are", 3.4, 3.6),
        word(" you?", 3.6, 4.0),
    )
    first = Segment(
        id=0,
        start=0.0,
        end=4.2,
        text=" Hello there. Hi, how are you?",
        language="en",
        words=words,
        tokens=(1, 2, 3, 4),
        avg_logprob=-0.3,
    )
    second = Segment(
        id=1, start=6.1, end=7.0, text=" Fine.", language="en", words=(word(" Fine.", 6.2, 6.9),), tokens=(5,)
    )
    labelled = speakers.with_speakers(result_of(first, second), TURNS)
    assert [(s.id, s.start, s.end, s.text, s.speaker) for s in labelled.segments] == [
        (0, 0.0, 1.5, " Hello there.", "SPEAKER_00"),
        (1, 2.6, 4.2, " Hi, how are you?", "SPEAKER_01"),
        (2, 6.1, 7.0, " Fine.", "SPEAKER_00"),
    ]
    # Every word carries its segment's speaker; tokens stay whole, on the first part.
    assert [w.speaker for s in labelled.segments for w in s.words or ()] == ["SPEAKER_00"] * 2 + ["SPEAKER_01"] * 4 + [
        "SPEAKER_00"
    ]
    assert [s.tokens for s in labelled.segments] == [(1, 2, 3, 4), (), (5,)]
    assert {s.avg_logprob for s in labelled.segments[:2]} == {-0.3}
    assert labelled.text == "Hello there. Hi, how are you? Fine."


def test_without_words_a_segment_goes_whole_to_one_speaker_and_without_turns_to_speaker_00() -> None:
    segment = Segment(id=0, start=1.5, end=4.0, text=" Hi, how are you?", language="en")
    (labelled,) = speakers.with_speakers(result_of(segment), TURNS).segments
    assert (labelled.speaker, labelled.text, labelled.words) == ("SPEAKER_00", " Hi, how are you?", None)
    (alone,) = speakers.with_speakers(result_of(segment), []).segments
    assert alone.speaker == "SPEAKER_00"


def test_turns_are_clustered_on_their_voice_prints() -> None:
    rng = np.random.default_rng(0)
    voices = rng.normal(size=(3, 192))
    order = [2, 0, 2, 1, 0, 1, 2]
    prints = np.stack([voices[v] + rng.normal(scale=0.3, size=192) for v in order])
    prints /= np.linalg.norm(prints, axis=1, keepdims=True)
    seconds = [3.0, 2.0, 4.0, 2.5, 0.5, 3.0, 2.0]
    # Numbered by first appearance: voice 2 is speaker 0.
    assert cluster_turns(prints, seconds, similarity=0.6) == [0, 1, 0, 2, 1, 2, 0]
    # Told how many: two clusters, whatever the threshold.
    assert len(set(cluster_turns(prints, seconds, similarity=0.99, speakers=2))) == 2
    assert cluster_turns(prints[:0], [], similarity=0.6) == []
    # A turn too short for a print takes its neighbour's speaker.
    prints[1] = 0.0
    assert cluster_turns(prints, seconds, similarity=0.6)[1] == 0


# --- The diarizer on real voices -----------------------------------------------------------


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return load_audio(DATA_DIR / "speakers.opus")


@pytest.fixture(scope="module")
def diarizer() -> Diarizer:
    return Diarizer(threads=1)


def majority_labels(turns: list[SpeakerTurn]) -> list[int]:
    """The diarizer's speaker over most of each reference turn."""
    labels = []
    for reference in REFERENCE["turns"]:
        seconds: Counter[int] = Counter()
        for turn in turns:
            seconds[turn.speaker] += max(0.0, min(turn.end, reference["end"]) - max(turn.start, reference["start"]))
        labels.append(seconds.most_common(1)[0][0])
    return labels


def test_four_real_voices_are_told_apart(clip: np.ndarray, diarizer: Diarizer) -> None:
    shares: list[float] = []
    turns = diarizer.diarize(clip, on_progress=shares.append)
    assert len({turn.speaker for turn in turns}) == REFERENCE["speakers"] == 4
    assert [turn.start for turn in turns] == sorted(turn.start for turn in turns)
    assert turns[0].speaker == 0  # numbered by first appearance
    # Each person's turns get one label of their own, in all but at most one turn.
    labels = majority_labels(turns)
    truth = [reference["speaker"] for reference in REFERENCE["turns"]]
    named = {p: Counter(lab for lab, q in zip(labels, truth, strict=True) if q == p) for p in set(truth)}
    wrong = sum(sum(counts.values()) - counts.most_common(1)[0][1] for counts in named.values())
    assert wrong <= 1, (labels, truth)
    assert len({counts.most_common(1)[0][0] for counts in named.values()}) == 4
    assert shares and shares[-1] == 1.0 and shares == sorted(shares)


def test_a_known_number_of_speakers_is_kept(clip: np.ndarray, diarizer: Diarizer) -> None:
    assert len({turn.speaker for turn in diarizer.diarize(clip, speakers=2)}) == 2
    assert {turn.speaker for turn in diarizer.diarize(clip, speakers=1)} == {0}


def test_silence_and_scraps_have_no_turns(diarizer: Diarizer) -> None:
    assert diarizer.diarize(np.zeros(16000 * 5, dtype=np.float32)) == []
    assert diarizer.diarize(np.zeros(100, dtype=np.float32)) == []


def test_a_progress_callback_that_raises_stops_the_diarizer(clip: np.ndarray, diarizer: Diarizer) -> None:
    class Stop(Exception):
        pass

    def stop(share: float) -> None:
        raise Stop

    with pytest.raises(Stop):
        diarizer.diarize(clip, on_progress=stop)
    # The diarizer works on afterwards.
    assert diarizer.diarize(clip[: 16000 * 8])


def test_a_changed_model_file_is_refused(tmp_path: Path) -> None:
    for name in (diarization_module.SEGMENTATION_MODEL, diarization_module.VOICE_MODEL):
        shutil.copyfile(diarization_module.MODELS_DIR / name, tmp_path / name)
    Diarizer(models_dir=tmp_path)  # the pinned files load
    with (tmp_path / diarization_module.VOICE_MODEL).open("r+b") as model:
        model.seek(-1, 2)
        last = model.read(1)
        model.seek(-1, 2)
        model.write(bytes([last[0] ^ 1]))
    with pytest.raises(ModelIntegrityError, match="not the pinned"):
        Diarizer(models_dir=tmp_path)
    (tmp_path / diarization_module.SEGMENTATION_MODEL).unlink()
    with pytest.raises(ModelIntegrityError, match="cannot be read"):
        Diarizer(models_dir=tmp_path)


# --- Subtitles and answers -------------------------------------------------------------------


def labelled_result() -> TranscriptResult:
    long_words = " Then you go into your ComfyUI folder again, in the ComfyUI, and you open it.".split(" ")[1:]
    words = tuple(word(" " + text, 2.6 + 0.15 * index, 2.75 + 0.15 * index) for index, text in enumerate(long_words))
    segment = Segment(
        id=0,
        start=0.0,
        end=5.0,
        text=" Hello there." + "".join(w.word for w in words),
        language="en",
        words=(word(" Hello", 0.1, 0.6), word(" there.", 0.6, 1.5), *words),
    )
    return speakers.with_speakers(result_of(segment), TURNS)


def test_srt_cues_start_with_the_speaker_within_the_line_length() -> None:
    result = labelled_result()
    srt = formats.render(result, "srt")["text"]
    blocks = [block.split("\n") for block in srt.split("\n\n")]
    assert blocks[0][2] == "[SPEAKER_00] Hello there."
    assert all(block[2].startswith("[SPEAKER_01] ") for block in blocks[1:])
    assert all(len(line) <= MAX_LINE_CHARS for block in blocks for line in block[2:])
    # No word lost: the cues' words, labels left out, are the transcript's.
    spoken = [w for block in blocks for line in block[2:] for w in line.split() if not w.startswith("[SPEAKER_")]
    assert spoken == result.text.split()
    # A cue never holds two speakers: the label is on its first line only.
    assert all(not line.startswith("[") for block in blocks for line in block[3:])


def test_vtt_cues_carry_voice_tags() -> None:
    vtt = formats.render(labelled_result(), "vtt")["text"]
    cues = vtt.split("\n\n")[1:]
    assert cues[0].split("\n")[1] == "<v SPEAKER_00>Hello there."
    assert all(cue.split("\n")[1].startswith("<v SPEAKER_01>") for cue in cues[1:])


def test_cues_without_speakers_are_unchanged() -> None:
    plain = result_of(Segment(id=0, start=0.0, end=1.5, text=" Hello there.", language="en"))
    assert (
        render_srt(build_cues(plain, label_format=SRT_SPEAKER_LABEL))
        == "1\n00:00:00,000 --> 00:00:01,500\nHello there."
    )
    assert render_vtt(build_cues(plain)).endswith("\nHello there.")


def test_verbose_json_names_the_speaker_of_segments_and_words() -> None:
    body = formats.render(labelled_result(), "verbose_json", word_timestamps=True)
    assert [segment["speaker"] for segment in body["segments"]] == ["SPEAKER_00", "SPEAKER_01"]
    assert {w["speaker"] for w in body["segments"][1]["words"]} == {"SPEAKER_01"}
    plain = formats.render(result_of(Segment(id=0, start=0.0, end=1.0, text=" Hi.", language="en")), "verbose_json")
    assert "speaker" not in plain["segments"][0]


def test_openai_names_speakers_with_letters() -> None:
    assert [_openai_speaker(speakers.speaker_label(n)) for n in (0, 1, 19, 25, 26)] == ["A", "B", "T", "Z", "AA"]
