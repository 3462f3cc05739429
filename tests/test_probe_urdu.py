"""End to end on real speech (../shared/data/urdu, 4 classes, speaker-independent folds):
prepare -> extract -> probe -> report with the fbank baseline on the whole corpus and with
the real whisper-tiny.en encoder on a speaker-balanced subset (Whisper runs a full 30 s window
per utterance, so the whole corpus is left to the benchmark, see docs/performance.md)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from emoprobe.data.manifest import write_manifest
from emoprobe.data.prepare import load_corpus
from emoprobe.extract import extract
from emoprobe.probe import probe, report

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
URDU = SHARED / "data" / "urdu"
WHISPER = SHARED / "models" / "whisper-tiny.en"
pytestmark = pytest.mark.skipif(
    not (URDU / "manifest.jsonl").is_file() or not WHISPER.is_dir(),
    reason=f"needs {URDU} and {WHISPER} (the shared data next to the repository)",
)
FAST = {"seeds": 2, "n_boot": 200, "progress": False}


@pytest.mark.slow
def test_urdu_fbank_and_whisper_tables(tmp_path: Path) -> None:
    records = load_corpus("manifest", URDU, folds=5, seed=0, progress=False)
    full = write_manifest(records, tmp_path / "urdu.jsonl")
    # Whisper subset: 2 utterances per (speaker, label) pair, speaker folds as in the full set.
    seen: dict[tuple[str, str], int] = defaultdict(int)
    subset = []
    for r in records:
        key = (r["speaker"], r["label"])
        if seen[key] < 2:
            seen[key] += 1
            subset.append(r)
    small = write_manifest(subset[::2], tmp_path / "urdu-small.jsonl")
    fbank = extract(full, "fbank", tmp_path / "features", progress=False).path
    whisper = extract(small, str(WHISPER), tmp_path / "features-small", progress=False).path

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
