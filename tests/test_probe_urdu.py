"""End to end on real speech (../shared/data/urdu, 4 classes, speaker-independent folds):
prepare -> extract -> probe -> report with the fbank baseline on the whole corpus and with
the real whisper-tiny.en encoder on a speaker-balanced subset (Whisper runs a full 30 s window
per utterance, so the whole corpus is left to the benchmark, see docs/performance.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from emoprobe.data.manifest import write_manifest
from emoprobe.data.prepare import load_corpus
from emoprobe.extract import extract
from emoprobe.probe import probe, report

FAST = {"seeds": 1, "n_boot": 100, "progress": False}


@pytest.mark.slow
def test_urdu_fbank_and_whisper_tables(urdu_dir: Path, urdu_whisper, tmp_path: Path) -> None:
    records = load_corpus("manifest", urdu_dir, folds=5, seed=0, progress=False)
    full = write_manifest(records, tmp_path / "urdu.jsonl")
    fbank = extract(full, "fbank", tmp_path / "features", progress=False).path
    _, _, whisper = urdu_whisper  # a speaker-balanced subset, speaker folds as in the full set

    res = probe([fbank], out=tmp_path / "fbank", **FAST)
    (row,) = res.summary
    assert row["dataset"] == "urdu" and row["pooled_n"] == 400
    assert row["pooled_uar"] > 0.45  # chance is 0.25
    assert row["pooled_uar_lo"] > 0.35  # and the whole 95% interval is well above it

    res = probe([whisper], out=tmp_path / "whisper", **FAST)
    assert [r["layer"] for r in res.summary] == [0, 1, 2, 3, 4]  # embedding + 4 blocks
    assert all(0.0 <= r["uar_mean"] <= 1.0 for r in res.summary)
    rep = report(tmp_path / "whisper")
    assert "| whisper-tiny.en |" in rep.text
    assert (tmp_path / "whisper" / "report" / "layers_urdu.png").exists()
