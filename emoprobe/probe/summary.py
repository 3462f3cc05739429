"""What a sweep reports from its units: summary rows (fold/seed means and pooled figures),
the protocol record of each dataset, the method text, and the files of a results directory."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emoprobe.probe import regression
from emoprobe.probe.config import ProbeOptions
from emoprobe.probe.dataset import ProbeData
from emoprobe.probe.engine import carvings_for
from emoprobe.probe.metrics import score_many
from emoprobe.probe.regression import is_regression
from emoprobe.probe.results import (
    KEY_COLUMNS,
    PREDICTIONS,
    PROTOCOL,
    RESULTS,
    SELECTION,
    SUMMARY,
    PredictionWriter,
    escape_ids,
    result_columns,
    split_head,
    summary_columns,
    write_csv,
    write_json,
)
from emoprobe.probe.ridge import _plan as ridge_plan
from emoprobe.probe.units import UnitOutput, bootstrap_seed


def summarise(
    data: ProbeData, units: Sequence[UnitOutput], options: ProbeOptions
) -> list[dict[str, Any]]:
    """summary.csv rows of one dataset: fold/seed means and the figures pooled over all test
    utterances (and seeds)."""
    fits = [u.fit for u in units]
    layers = fits[0].layers
    rows = [r for u in units for r in u.rows]
    if is_regression(data):
        return regression.summary_rows(data, fits, rows, options,
                                       bootstrap_seed(data.key, "pooled"))
    test_idx = np.concatenate([f.test_index for f in fits])
    preds = np.concatenate([f.test_pred for f in fits], axis=2)  # (R, S, n_all)
    pooled = score_many(
        data.y[test_idx], preds, len(data.classes), n_boot=options.n_boot,
        seed=bootstrap_seed(data.key, "pooled"),
    )
    out = []
    for r, layer in enumerate(layers):
        mine = [x for x in rows if x["layer"] == layer]
        def stat(key: str, mine: list[dict[str, Any]] = mine) -> tuple[float, float]:
            v = np.asarray([x[key] for x in mine], dtype=float)
            if np.isnan(v).all():  # e.g. val_uar where no validation part could be carved
                return math.nan, math.nan
            return float(np.nanmean(v)), float(np.nanstd(v, ddof=1)) if len(v) > 1 else 0.0
        row: dict[str, Any] = {
            "dataset": data.dataset, "task": data.task.name, "upstream": data.upstream,
            "layer": layer, "n_runs": len(mine), "n_folds": len(fits),
            "n_seeds": len(fits[0].seeds),
            "C_mode": Counter(x["C"] for x in mine).most_common(1)[0][0],
            "pooled_n": pooled[r].n, "pooled_war": pooled[r].war, "pooled_uar": pooled[r].uar,
            "pooled_macro_f1": pooled[r].macro_f1,
            "pooled_confusion": pooled[r].confusion.tolist(), "classes": list(data.classes),
        }
        for key in ("war", "uar", "macro_f1", "val_uar"):
            row[f"{key}_mean"], row[f"{key}_std"] = stat(key)
        for m in ("war", "uar", "macro_f1"):
            row[f"pooled_{m}_lo"], row[f"pooled_{m}_hi"] = pooled[r].ci[m]
        out.append(row)
    return out


def dataset_protocol(
    data: ProbeData, units: Sequence[UnitOutput], options: ProbeOptions
) -> dict[str, Any]:
    """protocol.json's record of one dataset: its sources, classes, exclusions and every
    fold, with the validation speakers of each seed."""
    reg = is_regression(data)
    folds = []
    for u in units:
        fold, fit = data.folds[u.fold_index], u.fit
        carved = (ridge_plan(data.y, fold, options, data.groups, data.key).fits if reg else
                  carvings_for(fold, data.y, data.groups, options, data.classes, data.key)[0])
        val_ids = [[] if data.groups is None else sorted({str(g) for g in data.groups[v]})
                   for _, v in carved]
        folds.append({
            "name": fold.name,
            "n_train": len(fold.train),
            "n_validation": None if fold.validation is None else len(fold.validation),
            "n_test": len(fold.test),
            ("train_target" if reg else "train_classes"): (
                regression.target_stats(data.y[fold.train]) if reg else
                dict(zip(data.classes, np.bincount(
                    data.y[fold.train], minlength=len(data.classes)).tolist()))),
            ("test_target" if reg else "test_classes"): (
                regression.target_stats(data.y[fold.test]) if reg else
                dict(zip(data.classes, np.bincount(
                    data.y[fold.test], minlength=len(data.classes)).tolist()))),
            "validation": (
                "official" if fold.validation is not None
                else f"speaker-disjoint carving of the training part ({data.group_key})"
            ),
            "per_seed": [
                {"seed": s, "n_fit": fit.n_fit[k], "n_val": fit.n_val[k],
                 "fit_speakers": fit.fit_speakers[k], "val_speakers": fit.val_speakers[k],
                 "validation_speakers": val_ids[k]}
                for k, s in enumerate(fit.seeds)
            ],
            "seconds": round(u.seconds, 3),
            "notes": fit.notes,
        })
    return {
        "dataset": data.dataset,
        "task": data.task.to_dict(),
        "upstream": data.upstream,
        "classes": data.classes,
        "protocol": data.protocol,
        "fold_protocol": data.fold_protocol,
        "sources": data.sources,
        "layers": data.layers,
        "n_utterances": len(data.y),
        ("target" if reg else "class_counts"): (
            regression.target_stats(data.y) if reg else
            dict(zip(data.classes, np.bincount(data.y, minlength=len(data.classes)).tolist()))),
        "speaker_field": data.group_key,
        "n_speakers": None if data.groups is None else len(np.unique(data.groups)),
        "excluded": data.excluded,
        "folds": folds,
    }


METHOD = {
    "features": "mean-pooled vector of each layer (as cached), per utterance",
    "standardisation": "per layer, mean and standard deviation fitted on the rows a probe is "
                       "fitted on (fitting part for C selection, fitting + validation part "
                       "for the refit); zero-variance dimensions get scale 1",
    "probe": "one linear layer (dim -> classes), softmax cross-entropy, L2 penalty on the "
             "weights (not the intercept): scikit-learn LogisticRegression's objective with "
             "the same C",
    "solver": "batched L-BFGS (all layers and seeds of a fold at once), Armijo line search, "
              "Gram-matrix preconditioner, warm starts along the C grid from strongest to "
              "weakest regularisation; stops at max |gradient| <= tol of the mean-scaled "
              "objective",
    "selection": "C per layer and seed: best UAR on a speaker-disjoint validation part carved "
                 "from the training part with StratifiedGroupKFold(shuffle, random_state=seed) "
                 "(the corpus's own validation split when it has one); ties go to the smaller "
                 "C; the test fold is never used for any choice",
    "refit": "train+val: refit on fitting + validation part with the chosen C, warm-started; "
             "train: keep the probe fitted on the fitting part",
    "layer_choice": "reports pick the layer with the best mean validation UAR over folds and "
                    "seeds",
    "metrics": "WAR = accuracy; UAR = mean recall over classes present in the reference "
               "(sklearn balanced_accuracy_score); macro-F1 over classes present in reference "
               "or predictions (sklearn f1_score average='macro'); 95% percentile bootstrap "
               "intervals over test utterances, same resamples for every probe of a fold",
    "pooled": "summary.csv pooled_* figures: one confusion matrix over every test utterance of "
              "every fold and seed; bootstrap resamples utterances",
    "superb": "preset superb: softmax-weighted sum of every layer's (standardised) pooled "
              "vector learned jointly with the linear layer, same objective, C grid and "
              "selection; rows with head = 'superb' (layer empty), weights in layer_weights",
}


def write_outputs(
    out_dir: Path,
    plans: Sequence[ProbeData],
    ordered: Sequence[UnitOutput],
    rows: Sequence[dict[str, Any]],
    summary: Sequence[dict[str, Any]],
    protocol: dict[str, Any],
) -> None:
    classes: list[str] = []
    for d in plans:
        classes += [c for c in d.classes if c not in classes]
    reg = any(is_regression(d) for d in plans)
    write_csv(out_dir / RESULTS, rows, result_columns(classes, regression=reg))
    write_csv(out_dir / SUMMARY, summary, summary_columns(regression=reg))
    sel_rows = []
    for u in ordered:
        data = plans[u.dataset_index]
        fit = u.fit
        hyper, score = ("alpha", "val_ccc") if is_regression(data) else ("C", "val_uar")
        for r, layer in enumerate(fit.layers):
            for s, seed in enumerate(fit.seeds):
                for g, c in enumerate(fit.c_grid):
                    sel_rows.append(split_head({
                        "dataset": data.dataset, "task": data.task.name,
                        "upstream": data.upstream, "layer": layer, "fold": fit.name,
                        "seed": seed, hyper: c, score: float(fit.val_grid[r, s, g]),
                        "chosen": bool(c == fit.chosen_c[r, s])}))
    write_csv(out_dir / SELECTION, sel_rows,
              [*KEY_COLUMNS, "fold", "seed", "C", "val_uar",
               *(("alpha", "val_ccc") if reg else ()), "chosen"])
    writer = PredictionWriter(out_dir / PREDICTIONS, classes)
    ok = False
    try:
        for u in ordered:
            data = plans[u.dataset_index]
            fit = u.fit
            ids = escape_ids([data.ids[i] for i in fit.test_index])
            if is_regression(data):  # values, not classes: label and pred are numbers
                names = None
                labels = [repr(float(v)) for v in data.y[fit.test_index]]
            else:
                names = np.asarray(data.classes)
                labels = names[data.y[fit.test_index]]
            for r, layer in enumerate(fit.layers):
                key = split_head({"layer": layer})
                for s, seed in enumerate(fit.seeds):
                    preds = (names[fit.test_pred[r, s]] if names is not None
                             else [f"{float(v):.6g}" for v in fit.test_pred[r, s]])
                    writer.write(
                        (data.dataset, data.task.name, data.upstream, key["layer"],
                         key["head"], fit.name, seed),
                        ids, labels, preds, fit.test_prob[r, s], data.classes,
                    )
        ok = True
    finally:
        writer.close(ok)
    write_json(out_dir / PROTOCOL, protocol)
