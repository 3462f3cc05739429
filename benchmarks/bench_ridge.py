"""Regression sweep speed and agreement: emoprobe's closed-form ridge sweep against the plain
scikit-learn loop (StandardScaler + Ridge per layer, fold, seed and alpha).

Case: a synthetic cache shaped like IEMOCAP with a base model (13 layers x 5531 x 768,
5 leave-one-session-out folds, 3 seeds, the default grid of 8 alphas) whose `valence` is a
linear function of one layer plus noise (every 50th utterance unrated). emoprobe's sweep is
timed end to end (reading the cache, every fold, layer and seed, bootstrap intervals, writing
the results directory). The baseline uses the same validation carvings and alphas, chooses
alpha by validation CCC, refits on train + validation and predicts the test fold; it runs on a
subset of layers (all folds and seeds) and its time is extrapolated linearly to every layer.
Test predictions are compared on the runs both did.

    python benchmarks/bench_ridge.py --out benchmarks/results/ridge.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHAPE = {"n_layers": 13, "n_utts": 5531, "dim": 768}
PLANTED = 8


def make_cache(work: Path) -> Path:
    from emoprobe.cache.store import write_cache
    from emoprobe.testing.embeddings import synthetic_corpus

    pooled, records = synthetic_corpus(**SHAPE, separation=0.3, seed=0)
    rng = np.random.default_rng(1)
    v = pooled[PLANTED] @ rng.standard_normal(SHAPE["dim"])
    v = (v - v.mean()) / v.std() + rng.standard_normal(len(v)) + 3.0
    for i, r in enumerate(records):
        r["valence"] = None if i % 50 == 0 else float(v[i])
    return write_cache(work / "synthetic-a.h5", pooled, records,
                       meta={"model": "synthetic-a", "upstream_kind": "synthetic"})


def baseline(cache: Path, layers: list[int], seeds: tuple[int, ...]) -> dict[str, Any]:
    """The scikit-learn loop on `layers`: test predictions per (layer, fold, seed)."""
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from emoprobe.data.targets import target_strata
    from emoprobe.probe.config import ProbeOptions
    from emoprobe.probe.dataset import load_cache
    from emoprobe.probe.regression_metrics import ccc_batch
    from emoprobe.probe.selection import carve_validation

    alphas = ProbeOptions().alpha_grid
    data = load_cache(cache, task="valence", layers=layers)
    X_all = data.features.to_array().astype(np.float64)
    strata = target_strata(data.y)
    t0 = time.perf_counter()
    preds: dict[tuple[int, str, int], np.ndarray] = {}
    fits = 0
    for k, layer in enumerate(layers):
        X = X_all[k]
        for fold in data.folds:
            for seed in seeds:
                fit, val = carve_validation(fold.train, strata, data.groups, seed=seed)
                scores = []
                for a in alphas:
                    m = make_pipeline(StandardScaler(), Ridge(alpha=a)).fit(X[fit], data.y[fit])
                    scores.append(float(ccc_batch(data.y[val], m.predict(X[val]))))
                    fits += 1
                best = max(range(len(alphas)), key=lambda g: (scores[g], alphas[g]))
                m = make_pipeline(StandardScaler(), Ridge(alpha=alphas[best]))
                m.fit(X[fold.train], data.y[fold.train])
                fits += 1
                preds[(layer, fold.name, seed)] = m.predict(X[np.sort(fold.test)])
    return {"seconds": time.perf_counter() - t0, "n_fits": fits, "preds": preds}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results/ridge.json")
    ap.add_argument("--work", help="working folder (default: a temporary one)")
    ap.add_argument("--baseline-layers", type=int, default=2)
    args = ap.parse_args()
    from emoprobe.probe import probe
    from emoprobe.system import available_cpus

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        cache = make_cache(work)
        print(f"cache {SHAPE} written; running emoprobe", flush=True)
        load = os.getloadavg()[0]
        t0, c0 = time.perf_counter(), time.process_time()
        res = probe([cache], task="valence", out=work / "out", seeds=3, progress=False,
                    resume=False)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(f"emoprobe {wall:.1f} s; running the scikit-learn baseline", flush=True)
        L = SHAPE["n_layers"]
        layers = sorted({round(i * (L - 1) / max(args.baseline_layers - 1, 1))
                         for i in range(args.baseline_layers)})
        base = baseline(cache, layers, (0, 1, 2))
        diffs = []
        for u in res.units:
            for r, layer in enumerate(u.fit.layers):
                for s, seed in enumerate(u.fit.seeds):
                    ref = base["preds"].get((layer, u.fit.name, seed))
                    if ref is not None:
                        diffs.append(float(np.abs(u.fit.test_pred[r, s] - ref).max()))
        by_layer = {r["layer"]: r for r in res.summary}
        extrapolated = base["seconds"] * L / len(layers)
        result = {
            "shape": {**SHAPE, "folds": 5, "seeds": 3, "alphas": 8},
            "emoprobe_wall_s": wall,
            "emoprobe_cpu_s": cpu,
            "load_average_at_start": load,
            "baseline": {"layers": layers, "measured_s": base["seconds"],
                         "n_fits_measured": base["n_fits"],
                         "extrapolated_full_s": extrapolated},
            "speedup": extrapolated / wall,
            "max_abs_prediction_diff": max(diffs),
            "n_compared_runs": len(diffs),
            "planted_layer": PLANTED,
            "chosen_layer_ccc": max(by_layer.values(), key=lambda r: r["val_ccc_mean"])["layer"],
            "ccc_planted_layer": by_layer[PLANTED]["ccc_mean"],
            "machine": {"cpus": available_cpus(), "platform": platform.platform()},
            "command": "python benchmarks/bench_ridge.py --out benchmarks/results/ridge.json",
        }
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
