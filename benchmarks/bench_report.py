"""Report speed on an IEMOCAP-sized results folder: how long `emoprobe.probe.report` takes to
read the predictions, run every paired test and write the tables (and the plots).

The folder comes from a sweep over synthetic caches shaped like IEMOCAP (5531 utterances, 4
classes, 5 leave-one-session-out folds) with N upstreams of L layers, 3 seeds and 1000
bootstrap resamples, so predictions.csv.gz has N x L x 3 x 5531 rows. The width of the
vectors does not matter to the report, so it is kept small to make the sweep quick.

    python benchmarks/bench_report.py --out benchmarks/results/report.json
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

from emoprobe.cache.store import write_cache
from emoprobe.probe import probe, report
from emoprobe.system import atomic_write, available_cpus
from emoprobe.testing.embeddings import synthetic_corpus


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="JSON file to write")
    ap.add_argument("--upstreams", type=int, default=2)
    ap.add_argument("--layers", type=int, default=13)
    ap.add_argument("--dim", type=int, default=64)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        caches = []
        for k in range(args.upstreams):
            pooled, records = synthetic_corpus(n_layers=args.layers, n_utts=5531, dim=args.dim,
                                               separation=0.3 - 0.05 * k, seed=0)
            caches.append(write_cache(base / f"upstream-{k}.h5", pooled, records,
                                      meta={"model": f"upstream-{k}"}))
        t0 = time.perf_counter()
        probe(caches, out=base / "res", seeds=3, progress=False)
        sweep_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        tables = report(base / "res", plots=False)
        tables_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        full = report(base / "res")
        full_s = time.perf_counter() - t0
        n_pred = args.upstreams * args.layers * 3 * 5531
        result = {
            "case": {"upstreams": args.upstreams, "layers": args.layers, "utterances": 5531,
                     "seeds": 3, "n_boot": 1000, "prediction_rows": n_pred},
            "sweep_seconds": round(sweep_s, 2),
            "report_tables_and_significance_seconds": round(tables_s, 2),
            "report_with_plots_seconds": round(full_s, 2),
            "significance_rows": len(tables.significance),
            "files_written": len(full.files),
            "machine": {"cpus": available_cpus(), "platform": platform.platform()},
        }
    atomic_write(args.out, json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
