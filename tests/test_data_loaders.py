"""Corpus loaders on fixture trees in the real layouts: ids, labels, speakers, sessions,
splits, transcripts, durations, and the lines and files a loader must ignore."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from emoprobe.data.audio import load_audio
from emoprobe.data.corpora import EMOTIONTALK_LABELS
from emoprobe.data.emotiontalk import LABEL_SPELLINGS, load_emotiontalk, sample_key
from emoprobe.data.folds import make_folds
from emoprobe.data.iemocap import load_iemocap, parse_utterance_id
from emoprobe.data.manifest import validate_record
from emoprobe.data.msp_improv import load_msp_improv
from emoprobe.errors import ManifestError, UnknownLabelError
from emoprobe.testing.layouts import (
    LONG_SECONDS,
    extract_tars,
    make_emotiontalk_tars,
    make_iemocap_tree,
    make_msp_improv_tree,
)


@pytest.fixture(scope="module")
def iemocap(tmp_path_factory: pytest.TempPathFactory):
    fx = make_iemocap_tree(tmp_path_factory.mktemp("iemocap") / "IEMOCAP_full_release")
    return fx, load_iemocap(fx.root, progress=False)


def test_iemocap_records_match_the_tree(iemocap) -> None:
    fx, records = iemocap
    by_id = {r["id"]: r for r in records}
    assert len(records) == len(by_id) == len(fx.utterances)
    assert sorted(by_id) == sorted(fx.utterances)  # decoys and unlabelled turns not read
    for utt, want in fx.utterances.items():
        rec = validate_record(by_id[utt], utt)
        assert rec["corpus"] == "iemocap"
        for key in ("label", "speaker", "gender", "session", "sentence", "path", "dialog"):
            assert rec[key] == want[key], (utt, key)
        assert (rec["valence"], rec["arousal"], rec["dominance"]) == want["vad"]
        assert rec["duration"] == pytest.approx(want["duration"], abs=1e-4)
        assert (rec["sample_rate"], rec["channels"]) == (16000, 1)
    # The speaker comes from the LAST id field, not from the dialog prefix.
    assert by_id["Ses01F_impro01_M000"]["speaker"] == "Ses01M"
    assert by_id["Ses03M_script01_1_F000"]["speaker"] == "Ses03F"
    assert Counter(r["label"] for r in records)["xxx"] == 5
    assert {"oth", "sur", "fea", "dis", "fru"} <= {r["label"] for r in records}
    long = [r for r in records if r["duration"] > 30]
    assert [r["id"] for r in long] == ["Ses05F_impro01_F000"]
    assert long[0]["duration"] == pytest.approx(LONG_SECONDS)


def test_iemocap_folds_are_sessions(iemocap) -> None:
    from emoprobe.data.corpora import IEMOCAP

    _, records = iemocap
    folds = make_folds(records, IEMOCAP)
    assert [f.name for f in folds] == [f"session{s}" for s in range(1, 6)]
    for f in folds:
        test_speakers = {records[i]["speaker"] for i in f.test}
        train_speakers = {records[i]["speaker"] for i in f.train}
        assert len(test_speakers) == 2 and not test_speakers & train_speakers


def test_iemocap_parse_errors_name_file_and_line(tmp_path: Path) -> None:
    fx = make_iemocap_tree(tmp_path / "iem", sessions=(1,), long_utterance=False)
    label_file = fx.root / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt"
    lines = label_file.read_text().splitlines()
    lines[2] = lines[2].replace("[2.5000, 2.5000, 2.5000]", "[2.5000, 2.5000]")
    label_file.write_text("\n".join(lines) + "\n")
    with pytest.raises(ManifestError, match=rf"{label_file}:3: expected times and three"):
        load_iemocap(fx.root, audio_info=False)
    lines[2] = "[6.2901 - 8.2357]\tSes01F_impro01_F000 neu"
    label_file.write_text("\n".join(lines) + "\n")
    with pytest.raises(ManifestError, match=rf"{label_file}:3: label line is not"):
        load_iemocap(fx.root, audio_info=False)
    with pytest.raises(ManifestError, match="no Session\\*/dialog/EmoEvaluation"):
        load_iemocap(tmp_path / "empty", audio_info=False)
    with pytest.raises(ManifestError, match="'Ses01_impro01_F000' does not follow"):
        parse_utterance_id("Ses01_impro01_F000")


@pytest.mark.parametrize(("audio_level", "spelling"),
                         [(True, "Evalution.txt"), (False, "Evaluation.txt")])
def test_msp_improv_records(tmp_path: Path, audio_level: bool, spelling: str) -> None:
    fx = make_msp_improv_tree(tmp_path / "msp", audio_level=audio_level, spelling=spelling)
    records = load_msp_improv(fx.root, progress=False)
    by_id = {r["id"]: r for r in records}
    assert sorted(by_id) == sorted(fx.utterances)  # rater lines (and duplicates) not read
    for utt, want in fx.utterances.items():
        rec = validate_record(by_id[utt], utt)
        assert rec["corpus"] == "msp_improv" and rec["path"] == want["path"]
        for key in ("label", "speaker", "gender", "session", "scenario", "condition",
                    "sample_rate"):
            assert rec[key] == want[key], (utt, key)
        for key, value in want["attributes"].items():
            assert rec[key] == value, (utt, key)
        assert rec["duration"] == pytest.approx(want["duration"], abs=1e-4)
    # Session = digits of the speaker field, never the S01A scenario.
    rec = by_id["MSP-IMPROV-S05N-M04-S-MF02"]
    assert (rec["speaker"], rec["session"], rec["naturalness"]) == ("M04", 4, 3.6)
    assert by_id["MSP-IMPROV-S04A-F02-P-FM03"]["arousal"] is None  # NaN
    assert Counter(r["label"] for r in records) == {"N": 12, "H": 12, "S": 6, "A": 6, "O": 6,
                                                    "X": 6}
    assert {r["sample_rate"] for r in records} == {48000, 16000}
    wave, sr = load_audio(by_id["MSP-IMPROV-S01A-F01-S-FM01"]["path"], 16000)
    assert sr == 16000 and len(wave) == 2400  # 0.15 s at 48 kHz, resampled on load


def test_msp_improv_errors(tmp_path: Path) -> None:
    fx = make_msp_improv_tree(tmp_path / "msp")
    label_file = fx.root / "Evalution.txt"
    text = label_file.read_text()
    label_file.write_text(text.replace("UTD-IMPROV-S03S-F02-R-FM01.avi; S;",
                                       "UTD-IMPROV-S03S-F02-R-FM01.avi;;"))
    lineno = text.splitlines().index(
        next(x for x in text.splitlines() if x.startswith("UTD-IMPROV-S03S-F02-R"))) + 1
    with pytest.raises(ManifestError, match=rf"Evalution.txt:{lineno}: consensus line is not"):
        load_msp_improv(fx.root, audio_info=False)
    label_file.write_text(text.replace("V:3.500000; D:3", "V:high; D:3", 1))
    with pytest.raises(ManifestError, match="Evalution.txt:1: attribute value 'high'"):
        load_msp_improv(fx.root, audio_info=False)
    label_file.unlink()
    with pytest.raises(ManifestError, match="no Evaluation.txt or Evalution.txt"):
        load_msp_improv(fx.root)
    shutil.rmtree(fx.root / "Audio")
    (fx.root / "Evaluation.txt").write_text(text)
    with pytest.raises(ManifestError, match="no session1 ... session6 folders"):
        load_msp_improv(fx.root)


@pytest.fixture(scope="module")
def emotiontalk(tmp_path_factory: pytest.TempPathFactory):
    fx = make_emotiontalk_tars(tmp_path_factory.mktemp("et") / "EmotionTalk")
    return fx, load_emotiontalk(fx.root, progress=False)


def _check_emotiontalk(fx, records) -> None:
    by_id = {r["id"]: r for r in records}
    assert sorted(by_id) == sorted(fx.utterances)
    for utt, want in fx.utterances.items():
        rec = validate_record(by_id[utt], utt)
        assert rec["corpus"] == "emotiontalk"
        for key in ("label", "speaker", "speaker_id", "split", "sentence", "group", "path",
                    "sample_rate"):
            assert rec[key] == want[key], (utt, key)
        assert rec["duration"] == pytest.approx(want["duration"], abs=1e-4)
        assert rec["annotations"][0]["emotion"] == want["raw_label"]
    assert {r["label"] for r in records} == set(EMOTIONTALK_LABELS)
    # Speaker ids recur across groups, but name different people: qualified by group.
    assert by_id["G00002_01_03_001"]["speaker"] == "G02_S03"
    assert by_id["G00006_01_03_001"]["speaker"] == "G06_S03"
    splits = Counter(r["split"] for r in records)
    assert splits == {"train": 44, "validation": 8, "test": 8}
    by_split = {s: {r["speaker"] for r in records if r["split"] == s} for s in splits}
    assert not by_split["test"] & by_split["train"]


def test_emotiontalk_reads_tar_shards_in_place(emotiontalk) -> None:
    fx, records = emotiontalk
    _check_emotiontalk(fx, records)
    assert all("::G000" in r["path"] for r in records)
    assert list(fx.root.rglob("*.wav")) == []  # nothing extracted
    wave, sr = load_audio(records[0]["path"], 16000)
    assert sr == 16000 and len(wave) == pytest.approx(records[0]["duration"] * 16000, abs=2)


def test_emotiontalk_extracted_tree_and_other_audio_extensions(
    emotiontalk, tmp_path: Path
) -> None:
    fx, _ = emotiontalk
    tree = extract_tars(fx, tmp_path / "extracted")
    _check_emotiontalk(tree, load_emotiontalk(tree.root, progress=False))
    mp4 = make_emotiontalk_tars(tmp_path / "mp4", audio_ext="mp4", shards=3)
    _check_emotiontalk(mp4, load_emotiontalk(mp4.root, progress=False))


def test_emotiontalk_unknown_label_names_the_utterance(tmp_path: Path) -> None:
    fx = make_emotiontalk_tars(tmp_path / "et", shards=1)
    tree = extract_tars(fx, tmp_path / "tree")
    meta_file = next((tree.root / "data" / "audio").rglob("G00004_01_05_002.json"))
    meta = json.loads(meta_file.read_text())
    meta["emotion_result"] = "contempt"
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(UnknownLabelError) as err:
        load_emotiontalk(tree.root, audio_info=False)
    msg = str(err.value)
    assert "utterance 'G00004_01_05_002'" in msg and "'contempt'" in msg
    assert "known labels: neutral, happy, sad, angry, surprised, disgusted, fearful" in msg
    meta["emotion_result"] = "happy"
    meta["file_name"] = "G00016/G00016_01/G00016_01_05/G00016_01_05_002.mp4"
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(ManifestError, match="'G00016_01_05_002' is in group 16"):
        load_emotiontalk(tree.root, audio_info=False)
    meta_file.unlink()
    with pytest.raises(ManifestError, match="G00004_01_05_002.wav: audio member of sample"):
        load_emotiontalk(tree.root, audio_info=False)


def test_label_spellings_and_webdataset_keys() -> None:
    assert set(LABEL_SPELLINGS.values()) == set(EMOTIONTALK_LABELS)
    assert sample_key("G1/G1_01/x_001.json") == ("G1/G1_01/x_001", "json")
    assert sample_key("x_001.Audio.WAV") == ("x_001", "audio.wav")
