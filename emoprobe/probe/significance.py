"""Paired significance between probes scored on the same test utterances.

Two comparisons per dataset and task: every pair of upstreams, each at its layer chosen on
validation, and every other layer (and the superb head) of an upstream against its chosen
layer. Each gets a paired bootstrap over test utterances for WAR, UAR and macro-F1 (the
difference a - b, its 95% percentile interval and a two-sided p-value) and McNemar's exact
test for WAR; p-values are adjusted with Holm-Bonferroni within each table (the upstream
table of a dataset, or the layer table of one upstream) and each metric and test.

What the tests assume: the unit is the test utterance, and utterances are independent given
the probes (speakers and sessions are not resampled, so the intervals say how much the
figures would move with other utterances from the same speakers). Folds are pooled: every
utterance is tested once, by the probe of the fold that held it out. Seeds travel with their
utterance: a probe's metric pools the predictions of all its seeds; McNemar counts an
utterance as correct for a probe when more than half of its seeds got it right.
"""

from __future__ import annotations

import csv
import gzip
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import binom

from emoprobe.errors import ProbeError
from emoprobe.probe.metrics import (
    METRICS,
    resample_counts,
    resampled_confusions,
    scores_from_confusion,
)
from emoprobe.probe.results import FUSION, KEY_COLUMNS, LINEAR, SUPERB, layer_key

log = logging.getLogger(__name__)

BOOTSTRAP, MCNEMAR = "paired bootstrap", "McNemar exact"
COLUMNS = ("dataset", "task", "a", "layer_a", "b", "layer_b", "metric", "delta", "ci_lo",
           "ci_hi", "p", "p_holm", "test", "head_a", "head_b", "n", "table")
LEVEL = 0.95


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values: the k-th smallest of m is multiplied by m - k + 1,
    made non-decreasing in that order and capped at 1. NaN stays NaN."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = len(ok)
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out[order] = adjusted
    return out


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
    """Two-sided exact McNemar p-value: of the n01 + n10 utterances exactly one probe got
    right, n10 (a right, b wrong) is Binomial(n01 + n10, 1/2) when the probes are equally
    accurate; p = min(1, 2 P(X <= min(n01, n10)))."""
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    n10, n01 = int(np.sum(a & ~b)), int(np.sum(~a & b))
    if n10 + n01 == 0:
        return 1.0
    return float(min(1.0, 2.0 * binom.cdf(min(n10, n01), n10 + n01, 0.5)))


@dataclass(frozen=True)
class Difference:
    """a - b on one metric: the point difference on all utterances, its percentile interval
    over paired resamples, and the two-sided bootstrap p-value."""

    delta: float
    ci_lo: float
    ci_hi: float
    p: float


def paired_bootstrap(
    y_true: np.ndarray,
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    n_classes: int,
    counts: np.ndarray,
    level: float = LEVEL,
) -> dict[str, Difference]:
    """WAR, UAR and macro-F1 differences a - b over the same resamples of the utterances.

    pred_a and pred_b are (S, n) or (n,): predictions of each probe (S seeds each; the
    numbers of seeds may differ). `counts` (B, n) are the resamples (`resample_counts`).
    The p-value is the share of resampled differences farther from the observed one than
    the observed one is from zero (the bootstrap distribution shifted to the null), ties
    counted half (a mid-p value: the metrics move in steps of 1/n, and counting ties in full
    would make the test conservative): (1 + #{|d* - d| > |d|} + #{= |d|} / 2) / (B + 1).
    """
    a = np.atleast_2d(np.asarray(pred_a, dtype=np.int64))
    b = np.atleast_2d(np.asarray(pred_b, dtype=np.int64))
    return paired_differences(y_true, [a, b], [(0, 1)], n_classes, counts, level)[0]


def paired_differences(
    y_true: np.ndarray,
    preds: Sequence[np.ndarray],
    pairs: Sequence[tuple[int, int]],
    n_classes: int,
    counts: np.ndarray,
    level: float = LEVEL,
) -> list[dict[str, Difference]]:
    """`paired_bootstrap` for many pairs (i, j) of the probes `preds` (each (S_i, n)) at once:
    every probe is resampled once, with the same `counts`."""
    boots, points = [], []
    for p in preds:
        p = np.atleast_2d(p)
        conf = resampled_confusions(y_true, p[None], n_classes, np.ones((1, p.shape[1])))
        points.append(scores_from_confusion(conf[0, 0]))
        boots.append(scores_from_confusion(
            resampled_confusions(y_true, p[None], n_classes, counts)[:, 0]))
    lo_q, hi_q = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    out = []
    for i, j in pairs:
        res = {}
        for m in METRICS:
            d = float(points[i][m] - points[j][m])
            star = np.asarray(boots[i][m] - boots[j][m], dtype=float)
            star = star[~np.isnan(star)]
            if len(star) == 0:
                res[m] = Difference(d, np.nan, np.nan, np.nan)
                continue
            dist = np.abs(star - d)
            tied = np.abs(dist - abs(d)) <= 1e-12
            extreme = np.sum((dist > abs(d)) & ~tied) + 0.5 * np.sum(tied)
            res[m] = Difference(d, float(np.percentile(star, lo_q)),
                                float(np.percentile(star, hi_q)),
                                float(min(1.0, (1 + extreme) / (len(star) + 1))))
        out.append(res)
    return out


# ------------------------------------------------------------------- results directories


@dataclass
class ProbePredictions:
    """Every test prediction of one probe: utterance key -> predicted class per seed."""

    labels: dict[tuple[str, str], str]
    preds: dict[tuple[str, str], dict[int, str]]


def read_probe_predictions(
    paths: Iterable[Path], wanted: set[tuple[Any, ...]] | None = None
) -> dict[tuple[Any, ...], ProbePredictions]:
    """predictions.csv.gz files -> (dataset, task, upstream, layer, head) -> predictions,
    keyed by (fold, utterance id). The first file that holds a probe wins (merged folders
    were checked to agree)."""
    out: dict[tuple[Any, ...], ProbePredictions] = {}
    for path in paths:
        seen: set[tuple[Any, ...]] = set()
        with gzip.open(path, "rt", encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader)
            try:
                idx = [header.index(c) for c in
                       ("dataset", "task", "upstream", "layer", "fold", "seed", "id", "label",
                        "pred")]
            except ValueError:
                raise ProbeError(f"{path}: not a predictions file (header {header[:9]})") from None
            head_i = header.index("head") if "head" in header else None
            for row in reader:
                d, t, u, lay, fold, seed, utt, label, pred = (row[i] for i in idx)
                head = row[head_i] if head_i is not None else (
                    SUPERB if lay == SUPERB else FUSION if "+" in lay else LINEAR)
                key = (d, t, u, int(lay) if head == LINEAR else None, head)
                if wanted is not None and key not in wanted:
                    continue
                if key in out and key not in seen:
                    continue
                seen.add(key)
                probe = out.setdefault(key, ProbePredictions({}, {}))
                probe.labels[(fold, utt)] = label
                probe.preds.setdefault((fold, utt), {})[int(seed)] = pred
    return out


def _matrix(probe: ProbePredictions, utts: Sequence[tuple[str, str]],
            index: Mapping[str, int]) -> np.ndarray:
    seeds = sorted({s for u in utts for s in probe.preds[u]})
    return np.asarray([[index[probe.preds[u][s]] for u in utts] for s in seeds], dtype=np.int64)


def compare(
    summary: Sequence[Mapping[str, Any]],
    predictions: Mapping[tuple[Any, ...], ProbePredictions],
    chosen: Mapping[tuple[str, str, str], int],
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """significance.csv rows for every dataset and task of `summary`: upstream pairs at
    their chosen layers, and each layer (and superb) against the chosen layer."""
    from emoprobe.probe.tables import is_regression_row
    from emoprobe.probe.units import bootstrap_seed

    if n_boot < 1:
        raise ProbeError(f"significance needs at least one bootstrap resample, got {n_boot}")
    rows: list[dict[str, Any]] = []
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in summary:
        groups.setdefault((r["dataset"], r["task"]), []).append(r)
    for (dataset, task), mine in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
        if any(is_regression_row(r) for r in mine) or not mine[0].get("classes"):
            continue  # regression: no classes to test (its intervals are in the tables)
        classes = list(mine[0]["classes"])
        index = {c: k for k, c in enumerate(classes)}
        ups = sorted({r["upstream"] for r in mine if (dataset, task, r["upstream"]) in chosen},
                     key=str)
        tables: list[tuple[str, list[tuple[tuple[Any, ...], tuple[Any, ...]]]]] = []
        best = {u: next(tuple(r[k] for k in KEY_COLUMNS) for r in mine if r["upstream"] == u
                        and layer_key(r) == chosen[(dataset, task, u)]) for u in ups}
        pairs = [(best[a], best[b]) for i, a in enumerate(ups) for b in ups[i + 1:]]
        tables.append(("upstreams", pairs))
        for u in ups:
            others = [(dataset, task, u, r["layer"], r["head"]) for r in mine
                      if r["upstream"] == u and layer_key(r) != chosen[(dataset, task, u)]]
            if others:
                tables.append((f"layers of {u}", [(o, best[u]) for o in others]))
        for table, table_pairs in tables:
            if not table_pairs:
                continue
            probes = sorted({k for p in table_pairs for k in p}, key=str)
            missing = [k for k in probes if k not in predictions]
            if missing:
                raise ProbeError(f"no predictions for {missing[0][2]} layer "
                                 f"{missing[0][3] if missing[0][3] is not None else SUPERB} "
                                 f"on {dataset}/{task}: is predictions.csv.gz complete?")
            for ka, kb in table_pairs:
                pa, pb = predictions[ka], predictions[kb]
                utts = sorted(set(pa.preds) & set(pb.preds))
                if not utts:
                    raise ProbeError(f"{dataset}/{task}: {ka[2]} and {kb[2]} share no test "
                                     "utterance")
                if len(utts) < max(len(pa.preds), len(pb.preds)):
                    log.warning("%s/%s: %s and %s compared on the %d test utterances both "
                                "have (%d and %d)", dataset, task, ka[2], kb[2], len(utts),
                                len(pa.preds), len(pb.preds))
                y = np.asarray([index[pa.labels[u]] for u in utts])
                ma, mb = _matrix(pa, utts, index), _matrix(pb, utts, index)
                counts = resample_counts(len(utts), n_boot,
                                         bootstrap_seed(dataset, task, "significance", seed))
                diff = paired_differences(y, [ma, mb], [(0, 1)], len(classes), counts)[0]
                base = {"dataset": dataset, "task": task, "a": ka[2], "layer_a": ka[3],
                        "head_a": ka[4], "b": kb[2], "layer_b": kb[3], "head_b": kb[4],
                        "n": len(utts), "table": table}
                for m in METRICS:
                    d = diff[m]
                    rows.append({**base, "metric": m, "test": BOOTSTRAP, "delta": d.delta,
                                 "ci_lo": d.ci_lo, "ci_hi": d.ci_hi, "p": d.p})
                correct_a = (ma == y[None]).mean(0) > 0.5
                correct_b = (mb == y[None]).mean(0) > 0.5
                d = diff["war"]
                rows.append({**base, "metric": "war", "test": MCNEMAR, "delta": d.delta,
                             "ci_lo": d.ci_lo, "ci_hi": d.ci_hi,
                             "p": mcnemar_exact(correct_a, correct_b)})
    families: dict[tuple[Any, ...], list[int]] = {}
    for i, r in enumerate(rows):
        families.setdefault((r["dataset"], r["task"], r["table"], r["metric"], r["test"]),
                            []).append(i)
    for members in families.values():
        for i, q in zip(members, holm([rows[i]["p"] for i in members])):
            rows[i]["p_holm"] = float(q)
    return rows


def versus(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[Any, ...], float]:
    """(dataset, task, frozenset({a, b}), metric) -> Holm-adjusted bootstrap p-value of the
    upstream comparisons, for the leaderboard's column against the best."""
    return {(r["dataset"], r["task"], frozenset({r["a"], r["b"]}), r["metric"]): r["p_holm"]
            for r in rows if r["table"] == "upstreams" and r["test"] == BOOTSTRAP}


def probe_keys(summary: Iterable[Mapping[str, Any]]) -> set[tuple[Any, ...]]:
    return {tuple(r[k] for k in KEY_COLUMNS) for r in summary}
