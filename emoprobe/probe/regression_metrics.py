"""Regression metrics for dimensional targets, with vectorised bootstrap intervals.

CCC (Lin's concordance correlation coefficient, the primary metric of dimensional speech
emotion recognition) is `2 cov(y, p) / (var(y) + var(p) + (mean(y) - mean(p))^2)` with
population (1/n) moments; Pearson r, RMSE and MAE are the usual ones. Every metric is computed
from a handful of sums, so one matrix product with the bootstrap's resample counts scores
every resample of every probe at once (the same resamples as the categorical metrics use).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emoprobe.probe.metrics import per_probe_and_seed, resample_counts

REGRESSION_METRICS = ("ccc", "pearson", "rmse", "mae")


def _from_sums(n: np.ndarray, sy: np.ndarray, sp: np.ndarray, syy: np.ndarray,
               spp: np.ndarray, syp: np.ndarray, sad: np.ndarray) -> dict[str, np.ndarray]:
    """Metrics from (weighted) sums: count, sum y, sum p, sum y^2, sum p^2, sum yp, sum |y-p|."""
    with np.errstate(invalid="ignore", divide="ignore"):
        my, mp = sy / n, sp / n
        vy = np.maximum(syy / n - my**2, 0.0)
        vp = np.maximum(spp / n - mp**2, 0.0)
        cov = syp / n - my * mp
        ccc = 2 * cov / (vy + vp + (my - mp) ** 2)
        pearson = np.where((vy > 0) & (vp > 0), cov / np.sqrt(vy * vp), np.nan)
        mse = np.maximum((syy - 2 * syp + spp) / n, 0.0)
        return {"ccc": ccc, "pearson": pearson, "rmse": np.sqrt(mse), "mae": sad / n}


def regression_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, np.ndarray]:
    """CCC, Pearson r, RMSE and MAE of predictions (..., n) against one reference (n,)."""
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    n = np.full(p.shape[:-1], float(p.shape[-1]))
    return _from_sums(n, np.full(p.shape[:-1], y.sum()), p.sum(-1),
                      np.full(p.shape[:-1], (y * y).sum()), (p * p).sum(-1), (p * y).sum(-1),
                      np.abs(p - y).sum(-1))


def ccc_batch(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """CCC of many prediction vectors (..., n) against one reference (n,)."""
    return regression_scores(y_true, y_pred)["ccc"]


@dataclass(frozen=True)
class RegressionScores:
    """Metrics of one probe's predictions, with bootstrap 95% intervals."""

    ccc: float
    pearson: float
    rmse: float
    mae: float
    ci: dict[str, tuple[float, float]]
    n: int


def score_regression(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> list[RegressionScores]:
    """Score R probes against one reference y_true (n,).

    y_pred is (R, n), or (R, S, n) for S prediction vectors per probe (seeds) pooled into one
    set of n * S pairs. Percentile bootstrap intervals resample the n utterances (an utterance
    carries all S of its predictions), with the same resamples for every probe, so intervals
    of different probes are paired. `n_boot=0` skips them (NaN).
    """
    y = np.asarray(y_true, dtype=np.float64)
    p = per_probe_and_seed(y_pred, np.float64)
    n_rows, n_s, n = p.shape
    # Per-utterance sums over the S predictions: (R, n) each; y terms are shared.
    per_utt = {
        "sp": p.sum(1), "spp": (p * p).sum(1), "syp": (p * y).sum(1),
        "sad": np.abs(p - y).sum(1),
    }
    point = _from_sums(np.full(n_rows, float(n * n_s)), np.full(n_rows, n_s * y.sum()),
                       per_utt["sp"].sum(1), np.full(n_rows, n_s * (y * y).sum()),
                       per_utt["spp"].sum(1), per_utt["syp"].sum(1), per_utt["sad"].sum(1))
    lo_q, hi_q = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    bounds = {m: np.full((n_rows, 2), np.nan) for m in REGRESSION_METRICS}
    if n_boot > 0 and n > 0:
        counts = resample_counts(n, n_boot, seed).astype(np.float64)  # (B, n)
        nb = np.full((n_boot, 1), float(n * n_s))
        boot = _from_sums(
            nb, n_s * (counts @ y)[:, None], counts @ per_utt["sp"].T,
            n_s * (counts @ (y * y))[:, None], counts @ per_utt["spp"].T,
            counts @ per_utt["syp"].T, counts @ per_utt["sad"].T,
        )  # each (B, R)
        for m in REGRESSION_METRICS:
            v = boot[m]
            pct = np.percentile if not np.isnan(v).any() else np.nanpercentile
            bounds[m] = np.stack([pct(v, lo_q, axis=0), pct(v, hi_q, axis=0)], axis=1)
    return [
        RegressionScores(
            ccc=float(point["ccc"][r]), pearson=float(point["pearson"][r]),
            rmse=float(point["rmse"][r]), mae=float(point["mae"][r]),
            ci={m: (float(bounds[m][r, 0]), float(bounds[m][r, 1])) for m in REGRESSION_METRICS},
            n=n,
        )
        for r in range(n_rows)
    ]
