"""Regression tasks through the whole probing stage: a planted dimensional target is found at
its layer and a noise target is not; utterances without a rating are counted; tables, plots,
predictions and resume work as for categorical tasks; built-in and generic regression tasks;
`emoprobe run` on the IEMOCAP and MSP-IMPROV fixture trees."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from probe_fixtures import PLANTED, planted

from emoprobe.cache.store import write_cache
from emoprobe.cli import main
from emoprobe.data.emotiontalk import load_emotiontalk
from emoprobe.errors import ConfigError, ManifestError
from emoprobe.probe import probe, probe_arrays, report
from emoprobe.probe.config import ProbeOptions
from emoprobe.probe.results import read_csv
from emoprobe.probe.sweep import run_sweep
from emoprobe.probe.units import Source
from emoprobe.testing.layouts import (
    make_emotiontalk_tars,
    make_iemocap_tree,
    make_msp_improv_tree,
)

NO_RATING_EVERY = 50


def _rated(seed: int = 0) -> tuple[np.ndarray, list[dict]]:
    """The planted IEMOCAP-shaped corpus with a valence linear in layer PLANTED (plus noise;
    every 50th utterance unrated) and an arousal that is pure noise."""
    pooled, records = planted(seed=seed)
    rng = np.random.default_rng(seed + 1)
    v = pooled[PLANTED] @ rng.standard_normal(pooled.shape[2])
    v = (v - v.mean()) / v.std() + 0.5 * rng.standard_normal(len(v)) + 3.0
    for i, r in enumerate(records):
        r["valence"] = None if i % NO_RATING_EVERY == 0 else float(v[i])
        r["arousal"] = float(rng.standard_normal())
    return pooled, records


@pytest.fixture(scope="module")
def rated_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pooled, records = _rated()
    path = tmp_path_factory.mktemp("reg") / "synthetic-model.h5"
    return write_cache(path, pooled, records,
                       meta={"model": "synthetic-model", "upstream_kind": "transformers"})


def test_planted_target_found_noise_target_not(rated_cache: Path, tmp_path: Path,
                                               caplog) -> None:
    out = tmp_path / "res"
    with caplog.at_level(logging.INFO, logger="emoprobe"):
        res = probe([rated_cache], task="valence", out=out, seeds=2, n_boot=100,
                    progress=False)
    printed = caplog.text
    n_unrated = len(range(0, 600, NO_RATING_EVERY))
    assert f"{n_unrated} without a rating" in printed
    ds = res.protocol["datasets"][0]
    assert ds["excluded"]["n_no_rating"] == n_unrated
    assert ds["task"] == {"name": "valence", "kind": "regression", "field": "valence"}
    assert ds["n_utterances"] == 600 - n_unrated
    by_layer = {r["layer"]: r for r in res.summary}
    assert by_layer[PLANTED]["ccc_mean"] > 0.8
    assert by_layer[PLANTED]["pooled_ccc_lo"] > 0.7
    assert max(r["ccc_mean"] for k, r in by_layer.items() if k != PLANTED) < 0.6
    rows = read_csv(out / "results.csv")
    assert len(rows) == 5 * 5 * 2 and all(r["alpha"] > 0 for r in rows)
    # Report: the layer chosen on validation CCC, CCC columns, a plot, no confusion figure.
    rep = report(out)
    assert rep.leaderboard.rows[0]["layer"] == PLANTED
    assert "CCC pooled [95% CI]" in rep.text and "WAR" not in rep.text
    assert rep.leaderboard.rows[0]["ranked_by"] == "CCC"
    names = {f.name for f in rep.files}
    assert "layers_iemocap.png" in names and not any(n.startswith("confusion") for n in names)
    with gzip.open(out / "predictions.csv.gz", "rt") as fh:
        header, first = fh.readline().strip(), fh.readline().strip()
    assert header.endswith(",id,label,pred") and len(first.split(",")) == 10
    # Resume: every fold is reused and the numbers are the same.
    with caplog.at_level(logging.INFO, logger="emoprobe"):
        again = probe([rated_cache], task="valence", out=out, seeds=2, n_boot=100,
                      progress=False)
    assert "reusing 5 finished unit(s)" in caplog.text
    assert again.summary == res.summary
    noise = probe([rated_cache], task="arousal", seeds=1, n_boot=0, progress=False)
    assert max(abs(r["ccc_mean"]) for r in noise.summary) < 0.1


def test_generic_numeric_field_and_errors() -> None:
    pooled, records = _rated()
    for r in records:
        r["corpus"] = "mine"
        r["score"] = r.pop("valence")
    res = probe_arrays(pooled, records, task="score", seeds=1, n_boot=0)
    assert {r["task"] for r in res.summary} == {"score"}
    assert max(r["ccc_mean"] for r in res.summary) > 0.8
    # Probe-time folds: speaker-independent k-fold, stratified by target quartile.
    res = probe_arrays(pooled, records, task="score", folds="kfold:3", seeds=1, n_boot=0)
    assert res.protocol["datasets"][0]["fold_protocol"]["name"].startswith("3-fold speaker")
    records[7]["score"] = "high"
    with pytest.raises(ManifestError,
                       match="'iemocap_00007' field 'score'.*'high' is not a number"):
        probe_arrays(pooled, records, task="score", seeds=1, n_boot=0)
    unrated = [{**r, "corpus": "emotiontalk", "split": "train", "continuous": None}
               for r in records]
    with pytest.raises(ManifestError, match="no record has a number in field 'continuous'"):
        probe_arrays(pooled, unrated, task="continuous", seeds=1, n_boot=0)
    with pytest.raises(ConfigError, match="no task 'nothing'"):
        probe_arrays(pooled, records, task="nothing", seeds=1, n_boot=0)


def test_mixed_sweep_keeps_both_kinds(rated_cache: Path, tmp_path: Path) -> None:
    """A categorical and a regression task in one results directory: each row has its own
    metrics, the leaderboard shows UAR for one and CCC for the other."""
    run_sweep([Source((str(rated_cache),)), Source((str(rated_cache),), task="valence")],
              ProbeOptions(seeds=(0,), n_boot=0), out=tmp_path, progress=False)
    rows = read_csv(tmp_path / "summary.csv")
    kinds = {r["task"]: (r["uar_mean"] is not None, r["ccc_mean"] is not None) for r in rows}
    assert kinds == {"4class": (True, False), "valence": (False, True)}
    rep = report(tmp_path, plots=False)
    ranked = {r["dataset"]: r["ranked_by"] for r in rep.leaderboard.rows}
    assert ranked == {"iemocap:4class": "UAR", "iemocap:valence": "CCC"}
    assert "UAR pooled [95% CI]" in rep.text and "CCC pooled [95% CI]" in rep.text


def test_emotiontalk_continuous_is_the_annotators_mean(tmp_path: Path) -> None:
    make_emotiontalk_tars(tmp_path / "et", shards=1)
    records = load_emotiontalk(tmp_path / "et", audio_info=False, progress=False)
    assert all(r["continuous"] == pytest.approx((0.5 + 0.1 + 0.7) / 3) for r in records)


@pytest.mark.slow
def test_emoprobe_run_regression_on_fixture_trees(tmp_path: Path, capsys) -> None:
    make_iemocap_tree(tmp_path / "IEMOCAP", long_utterance=False)
    fx = make_msp_improv_tree(tmp_path / "MSP")
    unrated = sum(u["attributes"]["valence"] is None for u in fx.utterances.values())
    cfg = tmp_path / "run.toml"
    cfg.write_text("""
out = "out"

[[corpus]]
source = "iemocap"
root = "IEMOCAP"
allow_subset = true
task = ["valence", "arousal", "dominance"]

[[corpus]]
source = "msp_improv"
root = "MSP"
allow_subset = true
task = "valence"

[[upstream]]
model = "fbank"

[probe]
seeds = 1
n_boot = 20
""")
    assert main(["run", str(cfg), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "| fbank |" in printed and "| iemocap:dominance | 1 | fbank |" in printed
    assert f"msp_improv/valence/fbank: {len(fx.utterances) - unrated} utterances" in printed
    assert f"{unrated} without a rating" in printed and unrated > 0
    proto = json.loads((tmp_path / "out" / "results" / "protocol.json").read_text())
    tasks = [(d["dataset"], d["task"]["name"], d["task"]["kind"]) for d in proto["datasets"]]
    assert tasks == [("iemocap", "valence", "regression"), ("iemocap", "arousal", "regression"),
                     ("iemocap", "dominance", "regression"),
                     ("msp_improv", "valence", "regression")]
    folds = {d["dataset"]: len(d["folds"]) for d in proto["datasets"]}
    assert folds == {"iemocap": 5, "msp_improv": 6}
    rows = read_csv(tmp_path / "out" / "results" / "summary.csv")
    assert all(-1 <= r["ccc_mean"] <= 1 and r["rmse_mean"] > 0 for r in rows)


def test_config_task_must_be_names(tmp_path: Path) -> None:
    from emoprobe.pipeline import load_config

    path = tmp_path / "bad.toml"
    path.write_text('out="o"\n[[corpus]]\nsource="manifest"\nroot="x"\ntask=3\n'
                    '[[upstream]]\nmodel="fbank"')
    with pytest.raises(ConfigError, match="task = 3: expected a task name"):
        load_config(path)


def test_cross_corpus_regression(rated_cache: Path, tmp_path: Path) -> None:
    """Train on one cache's ratings, test on another's: no class subset, every rated test
    utterance is scored."""
    pooled, records = _rated(seed=5)
    other = write_cache(tmp_path / "synthetic-model.h5", pooled, records,
                        meta={"model": "synthetic-model", "upstream_kind": "transformers"})
    res = probe(train_on=rated_cache, test_on=other, task="valence", seeds=1, n_boot=0,
                progress=False)
    (ds,) = res.protocol["datasets"]
    assert ds["task"]["kind"] == "regression" and ds["dataset"] == "iemocap->iemocap"
    assert ds["folds"][0]["n_test"] == 600 - len(range(0, 600, NO_RATING_EVERY))
    assert all(-1 <= r["ccc_mean"] <= 1 for r in res.summary)
