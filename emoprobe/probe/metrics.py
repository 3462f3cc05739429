"""Classification metrics from confusion matrices, and vectorised bootstrap intervals.

WAR is accuracy, UAR the mean recall over the classes present in the reference labels
(scikit-learn's `balanced_accuracy_score`), macro-F1 the mean F1 over the classes present in
either the reference or the predictions (scikit-learn's `f1_score(average="macro")`, with 0 for
undefined values). Everything works on stacks of confusion matrices, so one call scores every
bootstrap resample of every probe.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

METRICS = ("war", "uar", "macro_f1")


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts (K, K), rows = reference class, columns = predicted class."""
    idx = np.asarray(y_true, dtype=np.int64) * n_classes + np.asarray(y_pred, dtype=np.int64)
    return np.bincount(idx, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def scores_from_confusion(conf: np.ndarray) -> dict[str, np.ndarray]:
    """WAR, UAR, macro-F1 and per-class recall of confusion matrices (..., K, K)."""
    conf = np.asarray(conf, dtype=np.float64)
    tp = np.diagonal(conf, axis1=-2, axis2=-1)
    support = conf.sum(-1)
    predicted = conf.sum(-2)
    total = support.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        war = tp.sum(-1) / total
        recall = np.where(support > 0, tp / support, np.nan)
        present = support > 0
        uar = np.where(present, recall, 0.0).sum(-1) / present.sum(-1)
        denom = 2 * tp + (predicted - tp) + (support - tp)
        f1 = np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1.0), 0.0)
        labelled = (support > 0) | (predicted > 0)
        macro_f1 = (f1 * labelled).sum(-1) / labelled.sum(-1)
    return {"war": war, "uar": uar, "macro_f1": macro_f1, "recall": recall}


@dataclass(frozen=True)
class Scores:
    """Metrics of one set of predictions, with bootstrap 95% intervals."""

    war: float
    uar: float
    macro_f1: float
    recall: np.ndarray
    confusion: np.ndarray
    ci: dict[str, tuple[float, float]]
    n: int


def resample_counts(n: int, n_boot: int, seed: int) -> np.ndarray:
    """How often each of n items appears in each of n_boot resamples with replacement:
    (n_boot, n) float32, so a matrix product turns it into resampled confusion counts."""
    rng = np.random.default_rng(seed)
    counts = np.empty((n_boot, n), dtype=np.float32)
    step = max(1, 2**22 // max(n, 1))  # bounded memory: a few MB of draws at a time
    for b0 in range(0, n_boot, step):
        b1 = min(n_boot, b0 + step)
        draws = rng.integers(0, n, size=(b1 - b0, n))
        draws += (np.arange(b1 - b0) * n)[:, None]
        counts[b0:b1] = np.bincount(draws.ravel(), minlength=(b1 - b0) * n).reshape(b1 - b0, n)
    return counts


def per_probe_and_seed(y_pred: np.ndarray, dtype: type) -> np.ndarray:
    """Predictions (n,), (R, n) or (R, S, n) as an (R, S, n) array of `dtype`."""
    y_pred = np.asarray(y_pred, dtype=dtype)
    if y_pred.ndim == 1:
        y_pred = y_pred[None]
    if y_pred.ndim == 2:
        y_pred = y_pred[:, None, :]
    return y_pred


def resampled_confusions(
    y_true: np.ndarray, y_pred: np.ndarray, n_classes: int, counts: np.ndarray
) -> np.ndarray:
    """Confusion matrices (B, R, K, K) of R probes on B resamples of the n utterances.

    y_pred is (R, S, n): S predictions per utterance and probe (seeds), which travel with
    their utterance. `counts` (B, n) says how often each utterance appears in each resample
    (`resample_counts`); passing the same counts to every probe pairs their resamples.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = per_probe_and_seed(y_pred, np.int64)
    n_rows, _, n = y_pred.shape
    kk = n_classes * n_classes
    flat = y_true[None, None, :] * n_classes + y_pred + (np.arange(n_rows) * kk)[:, None, None]
    onehot = np.zeros((n, n_rows * kk), dtype=np.float32)
    utt = np.broadcast_to(np.arange(n)[None, None, :], flat.shape)
    np.add.at(onehot, (utt.ravel(), flat.ravel()), 1.0)
    boot = np.asarray(counts, dtype=np.float32) @ onehot
    return np.rint(boot).reshape(len(counts), n_rows, n_classes, n_classes)


def score_many(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    n_classes: int,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> list[Scores]:
    """Score R probes against one reference y_true (n,).

    y_pred is (R, n), or (R, S, n) for S prediction vectors per probe (seeds) that are pooled
    into one confusion matrix. Percentile bootstrap intervals resample the n utterances
    (an utterance carries all S of its predictions), with the same resamples for every probe
    so that intervals of different probes are paired. `n_boot=0` skips them (NaN).
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = per_probe_and_seed(y_pred, np.int64)
    n_rows, _, n = y_pred.shape
    kk = n_classes * n_classes
    cells = y_true[None, None, :] * n_classes + y_pred  # (R, S, n)
    flat = cells + (np.arange(n_rows) * kk)[:, None, None]
    conf = np.bincount(flat.ravel(), minlength=n_rows * kk).reshape(n_rows, kk)
    point = scores_from_confusion(conf.reshape(n_rows, n_classes, n_classes))
    lo_q, hi_q = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    bounds = {m: np.full((n_rows, 2), np.nan) for m in METRICS}
    if n_boot > 0 and n > 0:
        boot = resampled_confusions(y_true, y_pred, n_classes, resample_counts(n, n_boot, seed))
        bs = scores_from_confusion(boot)
        for m in METRICS:
            v = bs[m]
            pct = np.percentile if not np.isnan(v).any() else np.nanpercentile
            bounds[m] = np.stack([pct(v, lo_q, axis=0), pct(v, hi_q, axis=0)], axis=1)
    out = []
    for r in range(n_rows):
        out.append(
            Scores(
                war=float(point["war"][r]),
                uar=float(point["uar"][r]),
                macro_f1=float(point["macro_f1"][r]),
                recall=point["recall"][r],
                confusion=conf[r].reshape(n_classes, n_classes),
                ci={m: (float(bounds[m][r, 0]), float(bounds[m][r, 1])) for m in METRICS},
                n=n,
            )
        )
    return out


def uar(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Unweighted average recall of one prediction vector."""
    return float(scores_from_confusion(confusion(y_true, y_pred, n_classes))["uar"])


def uar_batch(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """UAR of many prediction vectors (..., n) against one reference (n,)."""
    y_pred = np.asarray(y_pred, dtype=np.int64)
    lead = y_pred.shape[:-1]
    flat = y_pred.reshape(-1, y_pred.shape[-1])
    kk = n_classes * n_classes
    cells = np.asarray(y_true, dtype=np.int64)[None, :] * n_classes + flat
    cells += (np.arange(flat.shape[0]) * kk)[:, None]
    conf = np.bincount(cells.ravel(), minlength=flat.shape[0] * kk)
    conf = conf.reshape(flat.shape[0], n_classes, n_classes)
    return scores_from_confusion(conf)["uar"].reshape(lead)
