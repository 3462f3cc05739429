"""What a sweep records for a regression task: the results.csv rows of a fold, the summary rows
of a dataset and its protocol entry. The categorical counterparts live in units.py and
summary.py; the columns are in results.py."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from emoprobe.probe.config import ProbeOptions
from emoprobe.probe.engine import FoldFit
from emoprobe.probe.regression_metrics import REGRESSION_METRICS, score_regression

REGRESSION = "regression"


def is_regression(data: Any) -> bool:
    """Whether a ProbeData (or a task) is a regression task."""
    task = getattr(data, "task", data)
    return getattr(task, "kind", None) == REGRESSION


def unit_rows(data: Any, fit: FoldFit, options: ProbeOptions, seed: int) -> list[dict[str, Any]]:
    """results.csv rows of one fold of a regression task (every layer x seed)."""
    y_test = data.y[fit.test_index]
    n_r, n_s, n_t = fit.test_pred.shape
    scores = score_regression(y_test, fit.test_pred.reshape(n_r * n_s, n_t),
                              n_boot=options.n_boot, seed=seed)
    rows = []
    for r, layer in enumerate(fit.layers):
        for s, sd in enumerate(fit.seeds):
            sc = scores[r * n_s + s]
            row: dict[str, Any] = {
                "dataset": data.dataset, "task": data.task.name, "upstream": data.upstream,
                "layer": layer, "fold": fit.name, "seed": sd, "n_fit": fit.n_fit[s],
                "n_val": fit.n_val[s], "n_test": n_t, "fit_speakers": fit.fit_speakers[s],
                "val_speakers": fit.val_speakers[s], "alpha": float(fit.chosen_c[r, s]),
                "val_ccc": float(fit.val_uar[r, s]),
                "n_iter": int(fit.n_iter[r, s]), "converged": bool(fit.converged[r, s]),
            }
            for m in REGRESSION_METRICS:
                row[m] = getattr(sc, m)
                row[f"{m}_lo"], row[f"{m}_hi"] = sc.ci[m]
            rows.append(row)
    return rows


def summary_rows(data: Any, fits: Sequence[FoldFit], rows: Sequence[dict[str, Any]],
                 options: ProbeOptions, seed: int) -> list[dict[str, Any]]:
    """summary.csv rows of a regression dataset: fold/seed means and the figures pooled over
    every test utterance (and seed)."""
    test_idx = np.concatenate([f.test_index for f in fits])
    preds = np.concatenate([f.test_pred for f in fits], axis=2)  # (R, S, n_all)
    pooled = score_regression(data.y[test_idx], preds, n_boot=options.n_boot, seed=seed)
    out = []
    for r, layer in enumerate(fits[0].layers):
        mine = [x for x in rows if x["layer"] == layer]
        row: dict[str, Any] = {
            "dataset": data.dataset, "task": data.task.name, "upstream": data.upstream,
            "layer": layer, "n_runs": len(mine), "n_folds": len(fits),
            "n_seeds": len(fits[0].seeds),
            "alpha_mode": Counter(x["alpha"] for x in mine).most_common(1)[0][0],
            "pooled_n": pooled[r].n,
        }
        for key in (*REGRESSION_METRICS, "val_ccc"):
            v = np.asarray([x[key] for x in mine], dtype=float)
            row[f"{key}_mean"] = float(np.nanmean(v))
            row[f"{key}_std"] = float(np.nanstd(v, ddof=1)) if len(v) > 1 else 0.0
        for m in REGRESSION_METRICS:
            row[f"pooled_{m}"] = getattr(pooled[r], m)
            row[f"pooled_{m}_lo"], row[f"pooled_{m}_hi"] = pooled[r].ci[m]
        out.append(row)
    return out


def target_stats(y: np.ndarray) -> dict[str, float | int]:
    """Count, mean, std, min and max of target values (for protocol.json)."""
    y = np.asarray(y, dtype=np.float64)
    if not len(y):
        return {"n": 0}
    return {"n": len(y), "mean": float(y.mean()), "std": float(y.std()),
            "min": float(y.min()), "max": float(y.max())}


METHOD = {
    "regression_probe": "regression tasks: ridge regression on the pooled vectors standardised "
                        "on the fitting rows, target standardised on the same rows, "
                        "scikit-learn Ridge(alpha) convention (sum of squared errors + alpha "
                        "||w||^2, intercept not penalised); closed form for every alpha from "
                        "one eigendecomposition per layer and fitting part",
    "regression_selection": "alpha per layer and seed: best CCC on the same speaker-disjoint "
                            "validation part (carving stratified on target quartiles); ties go "
                            "to the larger alpha",
    "regression_metrics": "CCC (primary, population moments), Pearson r, RMSE, MAE; 95% "
                          "percentile bootstrap intervals over test utterances",
}
