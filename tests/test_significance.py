"""Paired significance: the paired bootstrap and McNemar agree with direct computations
(scikit-learn metrics on explicit resamples, scipy's binomial test), Holm's adjustment follows
its definition, and with no true difference the tests reject at about the nominal rate."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

from emoprobe.probe.metrics import resample_counts
from emoprobe.probe.significance import holm, mcnemar_exact, paired_bootstrap


def _fixed(n: int = 60, k: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    a = np.where(rng.random((2, n)) < 0.8, y, rng.integers(0, k, (2, n)))  # 2 seeds
    b = np.where(rng.random((1, n)) < 0.3, y, rng.integers(0, k, (1, n)))  # 1 seed
    return y, a, b


def _direct(y, a, b, idx):
    """Metrics of a and b on the utterances idx (seeds pooled), computed by scikit-learn."""
    out = {}
    for name, fn in (("war", accuracy_score), ("uar", balanced_accuracy_score),
                     ("macro_f1", lambda t, p: f1_score(t, p, average="macro"))):
        va = fn(np.tile(y[idx], len(a)), a[:, idx].ravel())
        vb = fn(np.tile(y[idx], len(b)), b[:, idx].ravel())
        out[name] = va - vb
    return out


def test_paired_bootstrap_matches_direct_computation() -> None:
    y, a, b = _fixed()
    n, n_boot = len(y), 120
    idx = np.random.default_rng(7).integers(0, n, (n_boot, n))
    counts = np.stack([np.bincount(i, minlength=n) for i in idx]).astype(np.float32)
    got = paired_bootstrap(y, a, b, 3, counts)
    point = _direct(y, a, b, np.arange(n))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn: a resample may lack a class
        star = [_direct(y, a, b, i) for i in idx]
    for m in ("war", "uar", "macro_f1"):
        d = np.asarray([s[m] for s in star])
        assert got[m].delta == pytest.approx(point[m], abs=1e-12)
        assert got[m].ci_lo == pytest.approx(np.percentile(d, 2.5), abs=1e-9)
        assert got[m].ci_hi == pytest.approx(np.percentile(d, 97.5), abs=1e-9)
        dist = np.abs(d - point[m])
        tied = np.isclose(dist, abs(point[m]), rtol=0, atol=1e-12)
        extreme = np.sum((dist > abs(point[m])) & ~tied) + 0.5 * np.sum(tied)
        assert got[m].p == pytest.approx((1 + extreme) / (n_boot + 1))
    assert got["war"].delta > 0 and got["war"].p < 0.05  # a planted difference is found


@pytest.mark.parametrize("n10,n01", [(12, 3), (3, 12), (7, 7), (0, 5), (0, 0), (40, 22)])
def test_mcnemar_exact_matches_scipy(n10: int, n01: int) -> None:
    n_same = 30
    a = np.r_[np.ones(n10), np.zeros(n01), np.ones(n_same)].astype(bool)
    b = np.r_[np.zeros(n10), np.ones(n01), np.ones(n_same)].astype(bool)
    expected = 1.0 if n10 + n01 == 0 else binomtest(n10, n10 + n01, 0.5).pvalue
    assert mcnemar_exact(a, b) == pytest.approx(expected, rel=1e-12)


def test_holm_matches_its_definition() -> None:
    p = [0.01, 0.04, 0.03, 0.005, np.nan]
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> max so far 0.06
    np.testing.assert_allclose(holm(p), [0.03, 0.06, 0.06, 0.02, np.nan])
    assert holm([0.5, 0.9]).tolist() == [1.0, 1.0]
    assert holm([]).size == 0


def test_false_positive_rate_near_nominal() -> None:
    """Two probes with the same accuracy (independent errors): over repeated seeds, the
    share of p < 0.05 stays within a factor 2 of 0.05 for every test."""
    n, n_boot, reps, k = 600, 199, 400, 4
    rejections = {"war": 0, "uar": 0, "macro_f1": 0, "mcnemar": 0}
    for rep in range(reps):
        rng = np.random.default_rng(1000 + rep)
        y = rng.integers(0, k, n)
        a = np.where(rng.random(n) < 0.6, y, (y + rng.integers(1, k, n)) % k)
        b = np.where(rng.random(n) < 0.6, y, (y + rng.integers(1, k, n)) % k)
        counts = resample_counts(n, n_boot, rep)
        res = paired_bootstrap(y, a, b, k, counts)
        for m in ("war", "uar", "macro_f1"):
            rejections[m] += res[m].p < 0.05
        rejections["mcnemar"] += mcnemar_exact(a == y, b == y) < 0.05
    rates = {name: count / reps for name, count in rejections.items()}
    assert all(0.025 <= r <= 0.10 for r in rates.values()), rates


def test_compare_tables_and_utterances_one_upstream_lacks(caplog) -> None:
    """compare() on hand-made predictions: upstream pairs at their chosen layers, each other
    layer against the chosen one, Holm per table; a missing utterance is said, not hidden."""
    from emoprobe.probe.significance import ProbePredictions, compare

    rng = np.random.default_rng(3)
    classes, n = ["a", "b", "c"], 90
    y = rng.integers(0, 3, n)
    utts = [("f1" if i < 45 else "f2", f"u{i}") for i in range(n)]

    def probe_preds(acc: float, drop: int = 0) -> ProbePredictions:
        out = ProbePredictions({}, {})
        for (key, label) in list(zip(utts, y))[drop:]:
            out.labels[key] = classes[label]
            out.preds[key] = {s: classes[label if rng.random() < acc else (label + 1) % 3]
                              for s in (0, 1)}
        return out

    def row(up, layer, head="linear"):
        return {"dataset": "d", "task": "t", "upstream": up, "layer": layer, "head": head,
                "classes": classes}

    summary = [row("x", 0), row("x", 1), row("x", None, "superb"), row("y", 0)]
    preds = {("d", "t", "x", 0, "linear"): probe_preds(0.4),
             ("d", "t", "x", 1, "linear"): probe_preds(0.9),
             ("d", "t", "x", None, "superb"): probe_preds(0.9),
             ("d", "t", "y", 0, "linear"): probe_preds(0.9, drop=5)}
    with caplog.at_level(logging.WARNING, logger="emoprobe"):
        rows = compare(summary, preds, {("d", "t", "x"): 1, ("d", "t", "y"): 0}, n_boot=99)
    assert "compared on the 85 test utterances both have (90 and 85)" in caplog.text
    tables = {r["table"] for r in rows}
    assert tables == {"upstreams", "layers of x"}
    up = [r for r in rows if r["table"] == "upstreams"]
    assert {(r["a"], r["layer_a"], r["b"], r["layer_b"]) for r in up} == {("x", 1, "y", 0)}
    assert all(r["n"] == 85 for r in up) and len(up) == 4  # 3 bootstrap metrics + McNemar
    layers = [r for r in rows if r["table"] == "layers of x" and r["metric"] == "uar"
              and r["test"] == "paired bootstrap"]
    assert sorted((r["layer_a"] is None, r["head_a"]) for r in layers) == [
        (False, "linear"), (True, "superb")]
    worse = next(r for r in layers if r["layer_a"] == 0)
    assert worse["delta"] < -0.3 and worse["p_holm"] < 0.05
    assert worse["p_holm"] == pytest.approx(min(1.0, 2 * worse["p"]))  # smallest of 2
