"""Counts against the published ones, and the manifest check: every bad input is reported by
name."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emoprobe.data.check import (
    ABSENT_CLASS,
    DUPLICATE_ID,
    EMPTY_FOLD,
    NO_FOLDS,
    UNKNOWN_LABEL,
    ZERO_LENGTH,
    check_manifest,
)
from emoprobe.data.corpora import EMOTIONTALK, IEMOCAP, Expected
from emoprobe.data.counts import (
    compare_counts,
    count_records,
    format_counts,
    verify_counts,
)
from emoprobe.data.emotiontalk import load_emotiontalk
from emoprobe.data.headers import MISSING, UNREADABLE
from emoprobe.data.iemocap import load_iemocap
from emoprobe.data.prepare import prepare_corpus
from emoprobe.errors import CountMismatchError, ManifestError
from emoprobe.testing.layouts import make_emotiontalk_tars, make_iemocap_tree


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory):
    return make_iemocap_tree(tmp_path_factory.mktemp("iem") / "IEMOCAP", long_utterance=False)


@pytest.fixture
def records(tree):
    return load_iemocap(tree.root, progress=False)


def test_iemocap_counts_per_label_and_fold(records) -> None:
    counts = count_records(records, IEMOCAP)
    tc = counts.tasks["4class"]
    assert tc.labels == {"neu": 10, "hap": 10, "ang": 5, "sad": 10}  # hap = 5 hap + 5 exc
    assert tc.total == 35 and tc.folds == {str(s): 7 for s in range(1, 6)}
    assert tc.raw_labels["exc"] == 5 and "xxx" not in tc.raw_labels
    assert counts.raw_labels["xxx"] == 5 and counts.n_records == 50
    table = format_counts(counts, IEMOCAP)
    assert "session 3" in table and "1151" in table and "published    1708" in table


def test_count_mismatch_is_an_error_listing_every_difference(records) -> None:
    counts = count_records(records, IEMOCAP)
    with pytest.raises(CountMismatchError) as err:
        verify_counts(counts, IEMOCAP)
    msg = str(err.value)
    assert "12 count(s) differ" in msg and "--allow-subset" in msg
    for line in ("4class: total 35 (published 5531)", "4class: class neu 10 (published 1708)",
                 "4class: session 5 total 7 (published 1241)",
                 "4class: raw code exc 5 (published 1041)"):
        assert line in msg
    warnings = verify_counts(counts, IEMOCAP, allow_subset=True)
    assert len(warnings) == 12 and "4class: class sad 10 (published 1084)" in warnings


def test_counts_that_match_pass_and_a_missing_session_is_named(records) -> None:
    exact = dataclasses.replace(IEMOCAP, expected={"4class": Expected(
        total=35, labels={"neu": 10, "hap": 10, "ang": 5, "sad": 10},
        folds={str(s): 7 for s in range(1, 6)}, raw_labels={"hap": 5, "exc": 5})})
    assert verify_counts(count_records(records, exact), exact) == []
    without_5 = [r for r in records if r["session"] != 5]
    diffs = compare_counts(count_records(without_5, exact), exact)
    assert "4class: session 5 total 0 (published 7)" in diffs
    assert "4class: total 28 (published 35)" in diffs


def test_emotiontalk_counts_per_split(tmp_path: Path) -> None:
    fx = make_emotiontalk_tars(tmp_path / "et")
    counts = count_records(load_emotiontalk(fx.root, progress=False), EMOTIONTALK)
    seven = counts.tasks["7class"]
    assert list(seven.folds) == ["train", "validation", "test"]
    assert seven.folds == {"train": 44, "validation": 8, "test": 8}
    diffs = compare_counts(counts, EMOTIONTALK)
    assert "7class: train class neu 6 (published 7568)" in diffs
    assert "7class: validation class sur 0 (published 133)" in diffs
    assert "4class: test total 3 (published 1560)" in diffs


def test_clean_corpus_passes_the_check(records) -> None:
    report = check_manifest(records, progress=False)
    assert report.ok, report.summary()
    assert report.summary().startswith("check of iemocap: 50 utterances, no problems")


def _only(report, kind: str) -> list[str]:
    assert {p.kind for p in report.problems} == {kind}, report.summary()
    return [p.item for p in report.problems]


def test_missing_file_is_named(records) -> None:
    bad = copy.deepcopy(records)
    bad[4]["path"] = bad[4]["path"].replace(".wav", "_gone.wav")
    report = check_manifest(bad, progress=False)
    assert _only(report, MISSING) == [bad[4]["id"]]
    assert "_gone.wav: no such file" in report.summary()
    bad[4]["path"] = f"{bad[4]['path']}.tar::x.wav"
    assert "no such tar archive" in check_manifest(bad, progress=False).summary()


def test_corrupt_and_zero_length_audio_are_named(records, tmp_path: Path) -> None:
    bad = copy.deepcopy(records)
    (tmp_path / "junk.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage")
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    bad[1]["path"], bad[2]["path"] = str(tmp_path / "junk.wav"), str(tmp_path / "empty.wav")
    report = check_manifest(bad, progress=False)
    kinds = {p.kind: p for p in report.problems}
    assert set(kinds) == {UNREADABLE, ZERO_LENGTH}
    assert kinds[UNREADABLE].item == bad[1]["id"] and "junk.wav" in kinds[UNREADABLE].detail
    assert kinds[ZERO_LENGTH].item == bad[2]["id"] and "empty.wav" in kinds[ZERO_LENGTH].detail
    assert not report.ok
    with pytest.raises(ManifestError, match=f"unreadable audio \\(1\\):\n  {bad[1]['id']}"):
        report.raise_if_failed()


def test_missing_tar_member_is_named(tmp_path: Path) -> None:
    fx = make_emotiontalk_tars(tmp_path / "et", shards=1)
    recs = load_emotiontalk(fx.root, progress=False)
    recs[0]["path"] = recs[0]["path"].replace(".wav", ".flac")
    report = check_manifest(recs, progress=False)
    assert _only(report, MISSING) == [recs[0]["id"]]
    assert "no such member" in report.problems[0].detail


def test_duplicate_ids_are_named(records) -> None:
    bad = [*records, dict(records[7])]
    report = check_manifest(bad, progress=False)
    assert _only(report, DUPLICATE_ID) == [records[7]["id"]]
    assert "records 8 and 51 share this id" in report.summary()


def test_unknown_label_lists_known_codes(records) -> None:
    bad = copy.deepcopy(records)
    bad[3]["label"] = "Neutral"
    report = check_manifest(bad, progress=False)
    assert _only(report, UNKNOWN_LABEL) == [bad[3]["id"]]
    assert "'Neutral' is not a iemocap code (known: neu, hap, exc, ang, sad, fru" in (
        report.problems[0].detail)


def test_empty_fold_is_named(records) -> None:
    bad = copy.deepcopy(records)
    for r in bad:
        if r["session"] == 5 and r["label"] in ("neu", "hap", "exc", "ang", "sad"):
            r["label"] = "xxx"
    report = check_manifest(bad, progress=False)
    assert _only(report, EMPTY_FOLD) == ["session5"]
    assert "task 4class: no test utterances" in report.problems[0].detail


def test_class_absent_from_a_training_fold_is_named(records) -> None:
    bad = copy.deepcopy(records)
    for r in bad:
        if r["label"] == "ang" and r["session"] != 2:
            r["label"] = "fru"
    report = check_manifest(bad, progress=False)
    assert _only(report, ABSENT_CLASS) == ["session2"]
    assert "task 4class: class 'ang' has no training utterances" in report.problems[0].detail


def test_official_split_without_validation_is_an_empty_fold(tmp_path: Path) -> None:
    fx = make_emotiontalk_tars(tmp_path / "et", shards=1)
    recs = [r for r in load_emotiontalk(fx.root, progress=False) if r["split"] != "validation"]
    report = check_manifest(recs, progress=False)
    assert _only(report, EMPTY_FOLD) == ["official", "official"]  # both tasks
    assert "no validation utterances" in report.problems[0].detail


def test_generic_records_without_folds_are_reported() -> None:
    recs = [{"id": f"u{i}", "path": "/nowhere.wav", "label": "a"} for i in range(3)]
    report = check_manifest(recs, progress=False)
    assert {p.kind for p in report.problems} == {MISSING, NO_FOLDS}


def test_prepare_fails_on_problems_with_check_and_warns_without(tree, tmp_path: Path) -> None:
    victim = tree.root / "Session3" / "sentences" / "wav" / "Ses03F_impro01"
    victim = victim / "Ses03F_impro01_M001.wav"
    saved = victim.read_bytes()
    victim.write_bytes(b"not audio at all")
    try:
        lines: list[str] = []
        with pytest.raises(ManifestError, match="1 unreadable audio; manifest not written"):
            prepare_corpus("iemocap", tree.root, out=tmp_path / "m.jsonl", check=True,
                           allow_subset=True, progress=False, echo=lines.append)
        assert not (tmp_path / "m.jsonl").exists()
        assert any("Ses03F_impro01_M001: " in line for line in lines)
        lines.clear()
        result = prepare_corpus("iemocap", tree.root, out=tmp_path / "m.jsonl",
                                allow_subset=True, progress=False, echo=lines.append)
        rec = next(r for r in result.records if r["id"] == "Ses03F_impro01_M001")
        assert rec["duration"] is None and "unreadable audio" in rec["audio_error"]
        assert any(line.startswith("warning: 1 unreadable audio (1 record(s) keep null")
                   for line in lines)
        assert (tmp_path / "m.jsonl").exists()
        with pytest.raises(CountMismatchError):
            prepare_corpus("iemocap", tree.root, progress=False)
    finally:
        victim.write_bytes(saved)


def test_truncated_tar_shard_is_reported_per_utterance(tmp_path: Path) -> None:
    fx = make_emotiontalk_tars(tmp_path / "et", shards=2)
    recs = load_emotiontalk(fx.root, progress=False)
    shard = fx.files[1]
    with open(shard, "r+b") as fh:
        fh.truncate(shard.stat().st_size // 2)
    report = check_manifest(recs, progress=False)
    in_shard = [r["id"] for r in recs if r["path"].startswith(f"{shard}::")]
    assert _only(report, UNREADABLE) == in_shard and len(in_shard) == 30
    assert f"{shard}: cannot open tar archive" in report.problems[0].detail
    with pytest.raises(ManifestError, match=f"{shard}: cannot read tar archive"):
        load_emotiontalk(fx.root, audio_info=False)
