"""Sweeps over synthetic caches with planted signal: the informative layer is found, runs are
deterministic, --jobs 2 equals a serial run, an interrupted sweep resumes, cross-corpus works,
the superb preset recovers the planted layer weight, and bad input fails clearly."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import h5py
import numpy as np
import pytest
from probe_fixtures import N_LAYERS, PLANTED, planted, planted_cache

from emoprobe.cache.store import write_cache
from emoprobe.data.folds import Fold
from emoprobe.errors import ConfigError, ManifestError, ProbeError
from emoprobe.probe import ProbeOptions, probe, probe_arrays, probe_cross
from emoprobe.probe.dataset import cross_corpus, data_from_arrays, load_cache
from emoprobe.probe.engine import probe_fold
from emoprobe.probe.results import read_csv, read_predictions
from emoprobe.probe.sweep import UNITS
from emoprobe.probe.tables import chosen_layers

FAST = {"seeds": 2, "n_boot": 100, "c_grid": (1e-3, 1e-2, 1e-1), "progress": False}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return planted_cache(tmp_path_factory.mktemp("c") / "upstream-a.h5")


@pytest.fixture(scope="module")
def swept(cache: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("r")
    return probe([cache], out=out, **FAST)


def _numeric(rows):
    return [r for r in rows if isinstance(r["layer"], int)]


def test_sweep_finds_planted_layer_and_writes_everything(swept, cache: Path) -> None:
    out = swept.out
    summary = read_csv(out / "summary.csv")
    by_layer = {r["layer"]: r for r in summary}
    assert set(by_layer) == set(range(N_LAYERS))
    best_test = max(by_layer, key=lambda k: by_layer[k]["uar_mean"])
    assert best_test == PLANTED
    assert chosen_layers(summary)[("iemocap", "4class", "upstream-a")] == PLANTED
    assert by_layer[PLANTED]["uar_mean"] > 0.6
    for k, r in by_layer.items():
        if k != PLANTED:
            assert r["uar_mean"] < 0.4  # noise layers stay near chance (0.25)
    rows = read_csv(out / "results.csv")
    assert len(rows) == N_LAYERS * 5 * 2  # layers x folds (sessions) x seeds
    r0 = rows[0]
    for col in ("war", "uar", "macro_f1", "war_lo", "uar_hi", "C", "val_uar", "recall_neu",
                "recall_sad", "confusion", "n_fit", "n_val", "n_test"):
        assert r0[col] is not None, col
    assert np.asarray(r0["confusion"]).sum() == r0["n_test"]
    assert r0["C"] in FAST["c_grid"]
    # Per-utterance predictions: one row per test utterance, layer and seed.
    preds = read_predictions(out / "predictions.csv.gz")
    assert len(preds) == 600 * N_LAYERS * 2
    first = [p for p in preds if p["layer"] == PLANTED and p["seed"] == 0]
    acc = np.mean([p["label"] == p["pred"] for p in first])
    war = np.mean([r["war"] for r in rows if r["layer"] == PLANTED and r["seed"] == 0])
    assert acc == pytest.approx(war, abs=0.03)
    probs = np.asarray([[p[f"p_{c}"] for c in ("neu", "hap", "ang", "sad")] for p in first[:20]])
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=2e-3)
    # Protocol: caches with fingerprints, folds with sizes, seeds, grid, options, versions.
    proto = json.loads((out / "protocol.json").read_text())
    ds = proto["datasets"][0]
    assert ds["sources"][0]["fingerprint"] and ds["sources"][0]["path"] == str(cache.resolve())
    assert [f["name"] for f in ds["folds"]] == [f"session{i}" for i in range(1, 6)]
    assert sum(f["n_test"] for f in ds["folds"]) == 600
    assert proto["options"]["c_grid"] == list(FAST["c_grid"])
    assert proto["options"]["seeds"] == [0, 1] and "torch" in proto["versions"]
    sel = read_csv(out / "selection.csv")
    assert len(sel) == len(rows) * 3 and sum(r["chosen"] for r in sel) == len(rows)


def test_runs_are_deterministic_and_resume(swept, cache: Path, tmp_path: Path) -> None:
    again = probe([cache], out=tmp_path, **FAST)
    assert again.rows == swept.rows
    before = (tmp_path / "predictions.csv.gz").read_bytes()
    reference = (swept.out / "predictions.csv.gz").read_bytes()
    assert gzip.decompress(before) == gzip.decompress(reference)
    # Remove two finished folds: a re-run recomputes only those and gives the same table.
    units = sorted((tmp_path / UNITS).glob("*.npz"))
    assert len(units) == 5
    for u in units[:2]:
        u.unlink()
    stamps = {u: u.stat().st_mtime_ns for u in units[2:]}
    resumed = probe([cache], out=tmp_path, **FAST)
    assert resumed.rows == swept.rows
    assert all(u.stat().st_mtime_ns == t for u, t in stamps.items())
    assert len(list((tmp_path / UNITS).glob("*.npz"))) == 5


def test_parallel_equals_serial(swept, cache: Path, tmp_path: Path) -> None:
    par = probe([cache], out=tmp_path, jobs=2, **FAST)
    assert par.rows == swept.rows
    assert par.summary == swept.summary
    a = read_predictions(tmp_path / "predictions.csv.gz")
    b = read_predictions(swept.out / "predictions.csv.gz")
    assert a == b


def test_superb_preset_recovers_planted_weights() -> None:
    pooled, records = planted(seed=4)
    res = probe_arrays(pooled, records, preset="superb", **{**FAST, "seeds": 1})
    superb = [r for r in res.rows if r["head"] == "superb"]
    assert len(superb) == 5
    for r in superb:
        w = np.asarray(r["layer_weights"])
        assert w.shape == (N_LAYERS,) and w.sum() == pytest.approx(1.0, abs=1e-4)
        assert int(np.argmax(w)) == PLANTED and w[PLANTED] > 0.5
    planted_uar = np.mean([r["uar"] for r in res.rows if r["layer"] == PLANTED])
    assert np.mean([r["uar"] for r in superb]) == pytest.approx(planted_uar, abs=0.05)


def test_failed_utterances_are_excluded_and_reported(tmp_path: Path, caplog) -> None:
    pooled, records = planted()
    failed = {records[3]["id"]: "decode error", records[10]["id"]: "too long"}
    path = write_cache(tmp_path / "f.h5", pooled, records, meta={"model": "m"}, failed=failed)
    with caplog.at_level(logging.INFO, logger="emoprobe"):
        res = probe([path], out=tmp_path / "out", **FAST)
    printed = caplog.text
    assert "2 failed" in printed and "decode error" in printed
    ex = res.protocol["datasets"][0]["excluded"]
    assert ex["n_failed"] == 2 and ex["failed"] == failed
    assert res.protocol["datasets"][0]["n_utterances"] == 598
    preds = read_predictions(tmp_path / "out" / "predictions.csv.gz")
    assert not {p["id"] for p in preds} & set(failed)


def test_cross_corpus_shared_classes(tmp_path: Path) -> None:
    a = planted_cache(tmp_path / "a" / "up.h5", seed=1)
    # A second corpus with another label set: only neu/ang/sad shared with IEMOCAP 4-class.
    pooled, records = planted(seed=2, classes=("neu", "ang", "sad", "fru"), corpus="other",
                              priors=None)
    for r in records:
        r["session"] = "1"  # a generic corpus needs a fold field
    b = write_cache(tmp_path / "b" / "up.h5", pooled, records,
                    meta={"model": "synthetic-model", "upstream_kind": "transformers"})
    res = probe_cross(a, b, out=tmp_path / "x", **FAST)
    assert {r["dataset"] for r in res.rows} == {"iemocap->other"}
    assert res.rows[0]["classes"] == ["neu", "ang", "sad"]
    n_test = sum(r["label"] in ("neu", "ang", "sad") for r in records)
    assert res.rows[0]["n_test"] == n_test
    assert res.rows[0]["fold"] == "iemocap->other"
    # Caches from another upstream (or other settings, layers or dims) are refused.
    c = planted_cache(tmp_path / "c" / "up.h5", seed=2, model="other-model")
    with pytest.raises(ProbeError, match="same upstream"):
        probe_cross(a, c, **FAST)
    d = planted_cache(tmp_path / "d" / "up.h5", seed=2, dim=16)
    with pytest.raises(ProbeError, match="dim"):
        probe_cross(a, d, **FAST)


def test_cross_corpus_needs_shared_classes(tmp_path: Path) -> None:
    a = load_cache(planted_cache(tmp_path / "a.h5"), read=False)
    pooled, records = planted(classes=("x", "y"), corpus="z", priors=None)
    b = data_from_arrays(pooled, records, upstream="a")
    b.sources = a.sources
    with pytest.raises(ProbeError, match="share 0 class"):
        cross_corpus(a, b)


# ------------------------------------------------------------------------------ bad input


def test_cache_ids_not_matching_manifest(tmp_path: Path) -> None:
    path = planted_cache(tmp_path / "bad.h5")
    with h5py.File(path, "r+") as f:
        ids = f["ids"][()]
        ids[5] = b"someone-else"
        f["ids"][5] = ids[5]
    with pytest.raises(ProbeError, match=r"do not match its manifest.*row 5.*someone-else"):
        probe([path], **FAST)


def test_class_absent_from_training_fold() -> None:
    pooled, records = planted()
    for r in records:  # every sad utterance is in session 2
        if r["label"] == "sad":
            r["session"] = "2"
    with pytest.raises(ProbeError, match=r"\['sad'\] absent from the training part.*session2"):
        probe_arrays(pooled, records, **FAST)


def test_empty_fold() -> None:
    pooled, records = planted()
    data = data_from_arrays(pooled, records)
    opts = ProbeOptions(seeds=(0,), n_boot=0)
    empty = np.zeros(0, dtype=np.int64)
    with pytest.raises(ProbeError, match="empty test part"):
        probe_fold(data.features, data.y, Fold("f", np.arange(100), empty), data.classes, opts)
    with pytest.raises(ProbeError, match="empty training part"):
        probe_fold(data.features, data.y, Fold("f", empty, np.arange(100)), data.classes, opts)
    with pytest.raises(ProbeError, match="empty validation part"):
        probe_fold(data.features, data.y, Fold("f", np.arange(100), np.arange(100, 200), empty),
                   data.classes, opts)
    for r in records:  # an official split without test utterances
        r["split"] = "train"
        r["corpus"] = "emotiontalk"
    with pytest.raises(ManifestError, match="no 'test' utterances"):
        data_from_arrays(pooled, records, task="4class")


def test_layers_of_different_dims() -> None:
    pooled, records = planted()
    layers = [pooled[0], pooled[1][:, :10], pooled[2]]
    with pytest.raises(ProbeError, match=r"layer 1: \(600, 10\)"):
        probe_arrays(layers, records, **FAST)


def test_task_not_defined(cache: Path) -> None:
    with pytest.raises(ConfigError, match=r"defines no task '7class'; defined: 4class"):
        probe([cache], task="7class", **FAST)


def test_no_speaker_and_no_session() -> None:
    pooled, records = planted()
    for r in records:
        r.pop("speaker")
        r["fold"] = r.pop("session")
        r["corpus"] = "anon"
    with pytest.raises(ProbeError, match="needs a speaker"):
        probe_arrays(pooled, records, **FAST)


def test_threads_and_blocks_do_not_change_results() -> None:
    pooled, records = planted()
    data = data_from_arrays(pooled, records)
    fold = data.folds[1]
    opts = ProbeOptions(seeds=(0, 1), n_boot=0, c_grid=(1e-3, 1e-1), preset="superb")
    runs = [
        probe_fold(data.features, data.y, fold, data.classes, opts, groups=data.groups,
                   threads=1),
        probe_fold(data.features, data.y, fold, data.classes, opts, groups=data.groups,
                   threads=3),
        probe_fold(data.features, data.y, fold, data.classes, opts.with_(max_chunk_mb=0.01),
                   groups=data.groups, threads=2),  # one layer per block
    ]
    for other in runs[1:]:
        for name in ("chosen_c", "val_grid", "test_pred", "test_prob", "n_iter",
                     "layer_weights"):
            np.testing.assert_array_equal(getattr(runs[0], name), getattr(other, name), name)


def test_superb_on_raw_vectors_and_without_refit() -> None:
    pooled, records = planted(seed=6)
    res = probe_arrays(pooled, records, preset="superb", superb_norm="none", refit="train",
                       **{**FAST, "seeds": 1})
    superb = [r for r in res.rows if r["head"] == "superb"]
    assert all(int(np.argmax(r["layer_weights"])) == PLANTED for r in superb)
    assert res.protocol["options"]["superb_norm"] == "none"
    assert res.protocol["options"]["refit"] == "train"
