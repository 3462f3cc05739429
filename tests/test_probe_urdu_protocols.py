"""One extraction of real speech (URDU), probed under many protocols without touching the
cache: the prepared speaker folds, leave-one-speaker-out, EmoBox's published fold, a
relabelled manifest with a label map, a manifest pointing at a copy of the audio; and
cross-corpus between the demo corpus (IEMOCAP codes) and URDU (its own label names)."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections import Counter
from pathlib import Path

import pytest

from emoprobe.data.demo import prepare_demo
from emoprobe.data.manifest import write_manifest
from emoprobe.data.prepare import load_corpus
from emoprobe.errors import ProbeError
from emoprobe.extract import extract
from emoprobe.probe import probe

FAST = {"seeds": 1, "n_boot": 0, "c_grid": (1e-3, 1e-2, 1e-1), "progress": False}
CODES = {"angry": "A", "happy": "H", "neutral": "N", "sad": "S"}  # EmoBox's URDU codes
TO_FOUR = {"ang": ["A"], "hap": ["H"], "neu": ["N"], "sad": ["S"]}
CROSS_MAP = {"ang": ["ang", "angry"], "hap": ["hap", "exc", "happy"],
             "neu": ["neu", "neutral"], "sad": ["sad"]}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def urdu(urdu_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("urdu")
    records = load_corpus("manifest", urdu_dir, folds=5, seed=0, progress=False)
    manifest = write_manifest(records, tmp / "urdu.jsonl")
    return tmp, records, manifest


def _protocols(cache: Path, tmp: Path, records: list[dict], emobox: Path, tag: str) -> dict:
    """Probe `cache` under every protocol; returns each run's protocol.json dataset entry."""
    before = _sha(cache)
    runs = {}
    runs["prepared"] = probe([cache], out=tmp / f"{tag}-prepared", **FAST)
    runs["loso"] = probe([cache], folds="loso", out=tmp / f"{tag}-loso", **FAST)
    runs["emobox"] = probe([cache], folds=str(emobox / "urdu"), out=tmp / f"{tag}-emobox",
                           **FAST)
    relabelled = write_manifest([dict(r, label=CODES[r["label"]]) for r in records],
                                tmp / f"{tag}-codes.jsonl")
    label_map = tmp / "four.json"
    label_map.write_text(json.dumps(TO_FOUR))
    runs["label map"] = probe([cache], manifest=relabelled, label_map=label_map,
                              out=tmp / f"{tag}-map", **FAST)
    moved = tmp / "elsewhere"
    if not moved.exists():
        for r in records:
            dest = moved / Path(r["path"]).parent.name / Path(r["path"]).name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(r["path"], dest)
    copy = write_manifest(
        [dict(r, path=str(moved / Path(r["path"]).parent.name / Path(r["path"]).name))
         for r in records], tmp / f"{tag}-moved.jsonl")
    runs["moved"] = probe([cache], manifest=copy, out=tmp / f"{tag}-moved", **FAST)
    assert _sha(cache) == before  # the cache file is never written
    return runs


def _check(runs: dict, records: list[dict], emobox: Path) -> None:
    n, speakers = len(records), {r["speaker"] for r in records}
    test_file = emobox / "urdu" / "fold_1" / "urdu_test_fold_1.jsonl"
    emobox_test = {"urdu_" + json.loads(line)["key"][len("urdu-"):]
                   for line in test_file.read_text().splitlines()}
    n_emobox_test = sum(r["id"] in emobox_test for r in records)
    ds = {k: v.protocol["datasets"][0] for k, v in runs.items()}
    assert ds["prepared"]["protocol"] == "leave-one-fold-out" and len(ds["prepared"]["folds"]) == 5
    assert ds["loso"]["protocol"] == "leave-one-speaker-out"
    assert len(ds["loso"]["folds"]) == len(speakers)
    emo = ds["emobox"]
    assert emo["fold_protocol"]["format"] == "emobox" and len(emo["folds"]) == 1
    assert emo["folds"][0]["n_test"] == n_emobox_test
    assert emo["folds"][0]["n_train"] == n - n_emobox_test
    assert emo["fold_protocol"]["matched_by"] == {"id without the dataset prefix": n}
    assert ds["label map"]["classes"] == ["ang", "hap", "neu", "sad"]
    raw = Counter(r["label"] for r in records)
    assert ds["label map"]["class_counts"] == {
        "ang": raw["angry"], "hap": raw["happy"], "neu": raw["neutral"], "sad": raw["sad"]}
    assert ds["moved"]["excluded"]["n_not_in_manifest"] == 0
    for name, d in ds.items():
        assert sum(f["n_test"] for f in d["folds"]) == (n_emobox_test if name == "emobox" else n)
    # The label map relabels only: the prepared folds give the same numbers under new names.
    uar = {k: sorted(r["uar"] for r in v.rows) for k, v in runs.items()}
    assert uar["label map"] == uar["prepared"] == uar["moved"]


def test_urdu_fbank_under_every_protocol(urdu, emobox_dir: Path) -> None:
    tmp, records, manifest = urdu
    cache = extract(manifest, "fbank", tmp / "features", progress=False).path
    runs = _protocols(cache, tmp, records, emobox_dir, "fbank")
    _check(runs, records, emobox_dir)
    assert min(r["uar"] for r in runs["prepared"].rows) > 0.3  # chance is 0.25


@pytest.mark.slow
def test_urdu_whisper_under_every_protocol(urdu, emobox_dir: Path, urdu_whisper) -> None:
    tmp, _, _ = urdu
    subset, _, cache = urdu_whisper  # one utterance per speaker and label
    runs = _protocols(cache, tmp, subset, emobox_dir, "whisper")
    _check(runs, subset, emobox_dir)
    assert [r["layer"] for r in runs["loso"].summary] == [0, 1, 2, 3, 4]


def test_cross_corpus_demo_and_urdu_with_a_label_map(urdu, tmp_path: Path, caplog) -> None:
    tmp, _, manifest = urdu
    demo = prepare_demo(tmp_path / "demo", sessions=3).manifest
    urdu_cache = extract(manifest, "fbank", tmp / "features", progress=False).path
    demo_cache = extract(demo, "fbank", tmp_path / "features", progress=False).path
    # Without a map the tasks share no class name (neu/hap/ang/sad vs angry/happy/...).
    with pytest.raises(ProbeError, match=r"share 1 class name\(s\) \[.sad.\]"):
        probe(train_on=demo_cache, test_on=urdu_cache, **FAST)
    with caplog.at_level(logging.INFO, logger="emoprobe"):
        res = probe(train_on=demo_cache, test_on=urdu_cache, label_map=CROSS_MAP,
                    out=tmp_path / "x", **FAST)
    ds = res.protocol["datasets"][0]
    assert "classes shared by both tasks: ang hap neu sad" in caplog.text
    assert ds["dataset"] == "iemocap->urdu"
    assert ds["classes"] == ["ang", "hap", "neu", "sad"]
    assert res.rows[0]["n_test"] == 400
    assert all(0.0 <= r["uar"] <= 1.0 for r in res.rows)
