"""Integrity regressions: damaged rows are never given fresh checksums when a cache grows or
shards merge, a finished cache whose rows are being re-extracted never reads as complete, a
resumed in-memory sweep never reuses results of other features, and the probe's choices
never depend on test targets or ignore the seed."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from emoprobe.cache.repair import check_cache
from emoprobe.cache.store import open_cache
from emoprobe.data.manifest import read_manifest, write_manifest
from emoprobe.extract import runner
from emoprobe.probe import probe_arrays
from emoprobe.probe.selection import carve_validation
from emoprobe.testing.embeddings import synthetic_corpus
from emoprobe.testing.models import write_corpus


def _flip(cache: Path, row: int) -> float:
    with h5py.File(cache, "r+") as f:
        v = f["pooled"][0, row, :]
        good = float(v[0])
        v[0] += 1000.0
        f["pooled"][0, row, :] = v
    return good


def test_growing_a_cache_re_extracts_a_damaged_row(tmp_path: Path) -> None:
    manifest = write_corpus(tmp_path, [0.5, 0.6, 0.7, 0.8])
    write_manifest(read_manifest(manifest)[:3], tmp_path / "small.jsonl")
    runner.extract(tmp_path / "small.jsonl", "fbank", tmp_path / "out", progress=False)
    cache = tmp_path / "out" / "fbank.h5"
    good = _flip(cache, 1)
    assert check_cache(cache).problems  # the damage is seen
    grown = runner.extract(manifest, "fbank", tmp_path / "out", progress=False)
    assert grown.summary.extracted == 2 and grown.summary.reused == 2  # new row + damaged row
    assert not check_cache(cache).problems
    with open_cache(cache) as c:
        assert c.layer(0)[1][0] == pytest.approx(good) and c.damaged_rows() == {}


def test_rows_re_extracted_in_a_finished_cache_leave_it_resumable(tmp_path: Path,
                                                                 monkeypatch) -> None:
    manifest = write_corpus(tmp_path, [0.5, 0.6, 0.7, 0.8])
    wav = tmp_path / "wav" / "utt0001.wav"
    wav.rename(tmp_path / "hidden.wav")
    first = runner.extract(manifest, "fbank", tmp_path / "out", progress=False,
                           on_error="skip")
    assert list(first.summary.failed) == ["utt0001"]
    (tmp_path / "hidden.wav").rename(wav)  # the user restores the file

    def killed(self, *args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(runner._Run, "run", killed)
        with pytest.raises(KeyboardInterrupt):
            runner.extract(manifest, "fbank", tmp_path / "out", progress=False, on_error="skip")
    with open_cache(tmp_path / "out" / "fbank.h5", allow_incomplete=True) as c:
        assert not c.complete  # never a finished-looking cache with a stale record
    again = runner.extract(manifest, "fbank", tmp_path / "out", progress=False,
                           on_error="skip")
    assert again.summary.extracted == 1 and not again.summary.failed


def test_resumed_sweep_of_other_arrays_is_computed_anew(tmp_path: Path) -> None:
    X, records = synthetic_corpus(n_layers=2, n_utts=240, dim=12, seed=0)
    noise = np.random.default_rng(5).normal(size=X.shape).astype(np.float32)
    opts = {"seeds": 1, "n_boot": 0, "c_grid": (0.01, 1.0)}
    probe_arrays(X, records, out=tmp_path / "out", **opts)
    resumed = probe_arrays(noise, records, out=tmp_path / "out", **opts)
    fresh = probe_arrays(noise, records, **opts)
    assert [r["uar"] for r in resumed.rows] == [r["uar"] for r in fresh.rows]


def test_validation_carving_changes_with_the_seed() -> None:
    rng = np.random.default_rng(0)
    groups = np.repeat([f"s{i}" for i in range(10)], 20)
    y = rng.integers(0, 4, size=groups.size)
    train = np.arange(groups.size)
    carved = {tuple(np.unique(groups[carve_validation(train, y, groups, seed=s)[1]]))
              for s in range(5)}
    assert len(carved) == 5  # every seed a different speaker-disjoint validation part


def test_label_map_drop_must_be_a_list_of_codes(tmp_path: Path) -> None:
    from emoprobe.data.tasks import read_label_map
    from emoprobe.errors import ManifestError

    path = tmp_path / "map.json"
    path.write_text('{"ang": ["A"], "neu": ["N"], "drop": 5}')
    with pytest.raises(ManifestError, match="drop must be a list of raw label codes"):
        read_label_map(path)
