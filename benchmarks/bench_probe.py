"""Probe sweep speed, memory and agreement: emoprobe's batched sweep against the plain
scikit-learn loop (StandardScaler + LogisticRegression per layer, fold, seed and C).

Cases:

- a: synthetic cache shaped like IEMOCAP with a base model: 13 layers x 5531 x 768, 4 classes,
  5 leave-one-session-out folds, 3 seeds;
- b: shaped like a large model: 25 layers x 5531 x 1024;
- real: URDU (../shared/data/urdu, 5 speaker-independent folds) with whisper-tiny.en and the
  fbank baseline, extracted with `emoprobe.extract` into --work (reused on later runs).

The synthetic data has class signal that rises and falls across layers, speaker offsets,
correlated dimensions and outlier dimensions (emoprobe.testing.embeddings).

emoprobe's sweep runs in a child process, timed end to end (reading the cache, every fold,
layer and seed, bootstrap intervals, writing the results directory); its memory figure is the
child's peak resident set size during the sweep (VmHWM, reset just before it) minus its
resident size just before the sweep (after imports), compared with the size of the pooled
array being probed. The baseline uses the same
validation carvings and C grid, chooses C by validation UAR, refits on train + validation and
predicts the test fold, exactly the protocol emoprobe follows. For the synthetic cases it runs
on a subset of layers and seeds (all folds) and its time is extrapolated linearly to the full
sweep; the JSON says which subset. UAR is compared on the (layer, fold, seed) runs both did.

    python benchmarks/bench_probe.py --out benchmarks/results/probe.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(REPO))

CASES = {
    "a": {"n_layers": 13, "n_utts": 5531, "dim": 768},
    "b": {"n_layers": 25, "n_utts": 5531, "dim": 1024},
}
TARGETS = {"a": {"wall_s": 30.0, "speedup": 10.0}, "b": {"wall_s": 90.0}}
# Both solvers stop at the same gradient tolerance (emoprobe's default; scikit-learn's `tol`
# bounds the same quantity, max |gradient| of the mean-scaled objective).
TOL = 1e-5


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> bool:
    """Reset this process's peak resident size (VmHWM) to its current size (Linux >= 4.0).
    ru_maxrss is no use here: Linux carries the parent's peak over fork and exec."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def child_sweep(cache: str, out: str, seeds: int, jobs: int, preset: str | None = None) -> None:
    """Run emoprobe's sweep and print timing and memory as JSON (in a fresh process)."""
    import torch  # noqa: F401  (imported before the baseline RSS is read)

    from emoprobe.probe.sweep import probe

    reset = _reset_peak()
    before = _status_mb("VmRSS")
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    probe([cache], out=out, seeds=seeds, jobs=jobs, progress=False, resume=False,
          preset=preset)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    peak = _status_mb("VmHWM")
    print(json.dumps({"wall_s": wall, "cpu_s": cpu, "rss_before_mb": before,
                      "peak_rss_mb": peak, "peak_is_sweep_only": reset}))


def run_ours(cache: Path, out: Path, seeds: int, jobs: int = 1,
             preset: str | None = None) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child-sweep", str(cache), "--child-out", str(out),
           "--seeds", str(seeds), "--jobs", str(jobs)]
    if preset:
        cmd += ["--preset", preset]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"child sweep failed:\n{res.stdout}\n{res.stderr}")
    stats = json.loads(res.stdout.strip().splitlines()[-1])
    stats["peak_rss_delta_mb"] = stats["peak_rss_mb"] - stats["rss_before_mb"]
    return stats


def run_baseline(cache: Path, layers: list[int], seeds: tuple[int, ...]) -> dict[str, Any]:
    """The plain scikit-learn protocol on the given layers and seeds, every fold."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.preprocessing import StandardScaler

    from emoprobe.probe.config import ProbeOptions
    from emoprobe.probe.dataset import load_cache
    from emoprobe.probe.engine import carvings_for

    data = load_cache(cache, layers=layers)
    features = data.features.to_array()
    opts = ProbeOptions(seeds=seeds)
    uar: dict[str, float] = {}
    chosen: dict[str, float] = {}
    n_fits = 0
    unconverged = 0
    t0 = time.perf_counter()
    for fold in data.folds:
        carvings = carvings_for(fold, data.y, data.groups, opts, data.classes, "baseline")
        for k, layer in enumerate(data.layers):
            X = features[k]
            for seed, (fit, val) in zip(seeds, carvings):
                scores = []
                for C in opts.c_grid:
                    scaler = StandardScaler().fit(X[fit])
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always", ConvergenceWarning)
                        m = LogisticRegression(C=C, tol=TOL, max_iter=1000).fit(
                            scaler.transform(X[fit]), data.y[fit])
                    unconverged += sum(issubclass(w.category, ConvergenceWarning)
                                       for w in caught)
                    n_fits += 1
                    pred = m.predict(scaler.transform(X[val]))
                    scores.append(balanced_accuracy_score(data.y[val], pred))
                C = opts.c_grid[int(np.argmax(scores))]
                rows = np.union1d(fit, val)
                scaler = StandardScaler().fit(X[rows])
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", ConvergenceWarning)
                    m = LogisticRegression(C=C, tol=TOL, max_iter=1000).fit(
                        scaler.transform(X[rows]), data.y[rows])
                unconverged += sum(issubclass(w.category, ConvergenceWarning) for w in caught)
                n_fits += 1
                pred = m.predict(scaler.transform(X[fold.test]))
                key = f"{layer}|{fold.name}|{seed}"
                uar[key] = float(balanced_accuracy_score(data.y[fold.test], pred))
                chosen[key] = C
    return {"seconds": time.perf_counter() - t0, "uar": uar, "chosen_c": chosen,
            "n_fits": n_fits, "unconverged_fits": unconverged}


def compare(out: Path, base: dict[str, Any]) -> dict[str, Any]:
    from emoprobe.probe.results import read_csv

    rows = {f"{r['layer']}|{r['fold']}|{r['seed']}": r for r in read_csv(out / "results.csv")}
    keys = sorted(base["uar"])
    ours = np.asarray([rows[k]["uar"] for k in keys])
    ref = np.asarray([base["uar"][k] for k in keys])
    same_c = np.mean([rows[k]["C"] == base["chosen_c"][k] for k in keys])
    all_ours = np.mean([r["uar"] for r in rows.values() if isinstance(r["layer"], int)])
    return {
        "runs_compared": len(keys),
        "uar_ours_mean": float(ours.mean()),
        "uar_baseline_mean": float(ref.mean()),
        "uar_diff_points": float(100 * (ours.mean() - ref.mean())),
        "uar_max_abs_run_diff_points": float(100 * np.abs(ours - ref).max()),
        "same_chosen_c_fraction": float(same_c),
        "uar_ours_mean_all_runs": float(all_ours),
    }


def synthetic_case(name: str, work: Path, base_layers: int, base_seeds: int,
                   superb: bool = False) -> dict[str, Any]:
    from emoprobe.cache.store import write_cache
    from emoprobe.testing.embeddings import synthetic_corpus

    shape = CASES[name]
    pooled, records = synthetic_corpus(**shape, separation=0.3, seed=0)
    cache = write_cache(work / f"synthetic-{name}.h5", pooled, records,
                        meta={"model": f"synthetic-{name}", "upstream_kind": "synthetic"})
    pooled_mb = pooled.nbytes / 2**20
    del pooled
    print(f"[{name}] cache {shape} ({pooled_mb:.0f} MB) written; running emoprobe", flush=True)
    ours = run_ours(cache, work / f"out-{name}", seeds=3)
    print(f"[{name}] emoprobe {ours['wall_s']:.1f} s; running the scikit-learn baseline",
          flush=True)
    L = shape["n_layers"]
    layers = sorted({round(i * (L - 1) / (base_layers - 1)) for i in range(base_layers)})
    seeds = tuple(range(base_seeds))
    base = run_baseline(cache, layers, seeds)
    scale = (L / len(layers)) * (3 / len(seeds))
    extrapolated = base["seconds"] * scale
    result = {
        "shape": {**shape, "classes": 4, "folds": 5, "seeds": 3},
        "pooled_mb": pooled_mb,
        "emoprobe": {**ours, "memory_ratio": ours["peak_rss_delta_mb"] / pooled_mb},
        "baseline": {
            "subset": {"layers": layers, "seeds": list(seeds), "folds": "all 5"},
            "measured_s": base["seconds"],
            "extrapolation_factor": scale,
            "extrapolated_full_s": extrapolated,
            "n_fits_measured": base["n_fits"],
            "unconverged_fits": base["unconverged_fits"],
        },
        "speedup": extrapolated / ours["wall_s"],
        "agreement": compare(work / f"out-{name}", base),
    }
    t = TARGETS[name]
    result["targets"] = {
        "wall_s": t["wall_s"], "wall_ok": ours["wall_s"] <= t["wall_s"],
        "memory_ratio_max": 3.0, "memory_ok": result["emoprobe"]["memory_ratio"] <= 3.0,
        "uar_within_0.5_points": abs(result["agreement"]["uar_diff_points"]) <= 0.5,
    }
    if "speedup" in t:
        result["targets"].update(speedup_min=t["speedup"], speedup_ok=result["speedup"] >= 10)
    print(f"[{name}] {json.dumps(result['targets'])}", flush=True)
    if superb:
        stats = run_ours(cache, work / f"out-{name}-superb", seeds=3, preset="superb")
        result["emoprobe_superb_preset"] = {
            **stats, "memory_ratio": stats["peak_rss_delta_mb"] / pooled_mb,
            "note": "the same sweep plus the superb weighted-sum row (--preset superb)"}
        print(f"[{name}] with --preset superb: {stats['wall_s']:.1f} s", flush=True)
    return result


def real_case(work: Path) -> dict[str, Any]:
    from emoprobe.data.manifest import write_manifest
    from emoprobe.data.prepare import load_corpus
    from emoprobe.extract import extract

    manifest = work / "urdu.jsonl"
    if not manifest.exists():
        records = load_corpus("manifest", SHARED / "data" / "urdu", folds=5, seed=0,
                              progress=False)
        write_manifest(records, manifest)
    out: dict[str, Any] = {}
    for model in ("fbank", str(SHARED / "models" / "whisper-tiny.en")):
        t0 = time.perf_counter()
        cache = extract(manifest, model, work / "features", progress=False).path
        name = cache.stem
        print(f"[real] {name} cache ready ({time.perf_counter() - t0:.0f} s)", flush=True)
        ours = run_ours(cache, work / f"out-{name}", seeds=3)
        from emoprobe.cache.store import open_cache

        with open_cache(cache) as c:
            n_layers, pooled_mb = c.n_layers, c.n_layers * len(c.ids) * c.dim * 4 / 2**20
        base = run_baseline(cache, list(range(n_layers)), (0, 1, 2))
        from emoprobe.probe.results import read_csv

        summary = read_csv(work / f"out-{name}" / "summary.csv")
        out[name] = {
            "layers": n_layers,
            "pooled_mb": pooled_mb,
            "emoprobe": ours,
            "baseline": {"measured_s": base["seconds"], "n_fits": base["n_fits"],
                         "unconverged_fits": base["unconverged_fits"], "subset": "none (full)"},
            "speedup": base["seconds"] / ours["wall_s"],
            "agreement": compare(work / f"out-{name}", base),
            "per_layer_uar": {str(r["layer"]): r["uar_mean"] for r in summary},
            "per_layer_pooled_uar": {str(r["layer"]): r["pooled_uar"] for r in summary},
        }
        print(f"[real] {name}: {json.dumps(out[name]['agreement'])}", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results/probe.json")
    ap.add_argument("--cases", default="a,b,real", help="comma-separated: a, b, real")
    ap.add_argument("--work", help="working folder (default: a temporary one; the real "
                    "case's extracted caches are reused when it is kept)")
    ap.add_argument("--baseline-layers", type=int, default=3,
                    help="layers the synthetic baseline runs on (evenly spaced)")
    ap.add_argument("--baseline-seeds", type=int, default=1)
    ap.add_argument("--child-sweep", help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    ap.add_argument("--seeds", type=int, default=3, help=argparse.SUPPRESS)
    ap.add_argument("--jobs", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--preset", help=argparse.SUPPRESS)
    ap.add_argument("--superb", action="store_true",
                    help="also time case a with --preset superb (no target; informative)")
    args = ap.parse_args()
    if args.child_sweep:
        child_sweep(args.child_sweep, args.child_out, args.seeds, args.jobs, args.preset)
        return 0

    import sklearn
    import torch

    from emoprobe import __version__

    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    tmp = None
    if args.work:
        work = Path(args.work)
        work.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="bench-probe-")
        work = Path(tmp.name)
    result: dict[str, Any] = {
        "benchmark": "probe sweep: emoprobe batched vs scikit-learn loop",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "processor": platform.processor() or platform.machine(),
                    "load_average_at_start": os.getloadavg()},
        "versions": {"emoprobe": __version__, "torch": torch.__version__,
                     "sklearn": sklearn.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
        "baseline": f"StandardScaler + LogisticRegression(C, tol={TOL}, max_iter=1000, lbfgs) "
                    "per layer, fold, seed and C; C chosen by validation UAR on the same "
                    "carvings; refit on train+validation",
        "cases": {},
    }
    for case in cases:
        if case in CASES:
            result["cases"][case] = synthetic_case(case, work, args.baseline_layers,
                                                   args.baseline_seeds,
                                                   superb=args.superb and case == "a")
        elif case == "real":
            if not (SHARED / "data" / "urdu").is_dir():
                result["cases"]["real"] = {"skipped": f"{SHARED} not found"}
                continue
            result["cases"]["real"] = real_case(work)
        else:
            raise SystemExit(f"unknown case {case!r}")
    result["machine"]["load_average_at_end"] = os.getloadavg()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
