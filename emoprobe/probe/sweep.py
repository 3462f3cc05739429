"""A probing sweep: datasets x upstreams x folds x layers x seeds, into a results directory.

The unit of work is one (dataset, upstream, fold): all layers and seeds of it are one batched
problem (emoprobe.probe.engine). Units run in this process or in parallel through joblib
(any backend, chosen with `joblib.parallel_config`); each unit is deterministic, so the
results do not depend on how units are scheduled. Every finished unit is saved under
`DIR/units/`, so an interrupted sweep picks up where it stopped when run again with the same
caches and settings.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import platform
import time
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emoprobe import __version__
from emoprobe.errors import ProbeError
from emoprobe.probe.config import ProbeOptions
from emoprobe.probe.dataset import (
    ProbeData,
    cross_corpus,
    describe_exclusions,
    load_cache,
)
from emoprobe.probe.engine import FoldFit, available_threads, probe_folds
from emoprobe.probe.metrics import score_many
from emoprobe.probe.results import (
    PREDICTIONS,
    PROTOCOL,
    RESULTS,
    SELECTION,
    SUMMARY,
    SUMMARY_COLUMNS,
    PredictionWriter,
    escape_ids,
    result_columns,
    write_csv,
    write_json,
)

log = logging.getLogger(__name__)

UNITS = "units"


@dataclass(frozen=True)
class Source:
    """Where a dataset comes from: one cache, or a (train, test) pair for cross-corpus."""

    caches: tuple[str, ...]
    task: str | None = None
    layers: str | tuple[int, ...] | None = None

    def load(self, read: bool = True) -> ProbeData:
        if len(self.caches) == 1:
            return load_cache(self.caches[0], task=self.task, layers=self.layers, read=read)
        if len(self.caches) != 2:
            raise ProbeError(f"a source is one cache or a (train, test) pair, got {self.caches}")
        train = load_cache(self.caches[0], task=self.task, layers=self.layers, read=read,
                           folds="split")
        test = load_cache(self.caches[1], task=self.task, layers=self.layers, read=read,
                          folds=False)
        return cross_corpus(train, test, read=read)


# One loaded dataset per process: units of the same dataset reuse its features. The key
# includes each file's size and modification time, so a cache replaced on disk is re-read.
_LOADED: dict[tuple[Any, ...], ProbeData] = {}


def _data_for(item: Source | ProbeData) -> ProbeData:
    if isinstance(item, ProbeData):
        return item
    stats = []
    for c in item.caches:
        st = os.stat(c)
        stats.append((st.st_mtime_ns, st.st_size, st.st_ino))
    key = (item, tuple(stats))
    if key not in _LOADED:
        _LOADED.clear()
        _LOADED[key] = item.load()
    return _LOADED[key]


@dataclass
class UnitOutput:
    """One (dataset, fold): the fitted probes' outputs and their scored rows."""

    dataset_index: int
    fold_index: int
    fit: FoldFit
    rows: list[dict[str, Any]]
    seconds: float


def _bootstrap_seed(*parts: Any) -> int:
    return zlib.crc32("|".join(map(str, parts)).encode()) & 0x7FFFFFFF


def _score_unit(data: ProbeData, fit: FoldFit, options: ProbeOptions) -> list[dict[str, Any]]:
    """results.csv rows of one unit (every layer x seed)."""
    y_test = data.y[fit.test_index]
    n_r, n_s, n_t = fit.test_pred.shape
    scores = score_many(
        y_test,
        fit.test_pred.reshape(n_r * n_s, n_t),
        len(data.classes),
        n_boot=options.n_boot,
        seed=_bootstrap_seed(data.key, fit.name),
    )
    rows = []
    for r, layer in enumerate(fit.layers):
        for s, seed in enumerate(fit.seeds):
            sc = scores[r * n_s + s]
            row: dict[str, Any] = {
                "dataset": data.dataset,
                "task": data.task.name,
                "upstream": data.upstream,
                "layer": layer,
                "fold": fit.name,
                "seed": seed,
                "n_fit": fit.n_fit[s],
                "n_val": fit.n_val[s],
                "n_test": n_t,
                "fit_speakers": fit.fit_speakers[s],
                "val_speakers": fit.val_speakers[s],
                "C": float(fit.chosen_c[r, s]),
                "val_uar": float(fit.val_uar[r, s]),
                "war": sc.war,
                "uar": sc.uar,
                "macro_f1": sc.macro_f1,
                "confusion": sc.confusion.tolist(),
                "classes": list(data.classes),
                "n_iter": int(fit.n_iter[r, s]),
                "converged": bool(fit.converged[r, s]),
                "layer_weights": (
                    [round(float(w), 6) for w in fit.layer_weights[s]]
                    if layer == "superb" and fit.layer_weights is not None else None
                ),
            }
            for m in ("war", "uar", "macro_f1"):
                row[f"{m}_lo"], row[f"{m}_hi"] = sc.ci[m]
            for c, rec in zip(data.classes, sc.recall):
                row[f"recall_{c}"] = float(rec)
            rows.append(row)
    return rows


def run_unit(
    item: Source | ProbeData,
    dataset_index: int,
    fold_index: int,
    options: ProbeOptions,
    threads: int | None = None,
) -> UnitOutput:
    """Probe one fold of one dataset (all layers and seeds) and score it."""
    return next(run_units(item, dataset_index, [fold_index], options, threads))


def run_units(
    item: Source | ProbeData,
    dataset_index: int,
    fold_indices: Sequence[int],
    options: ProbeOptions,
    threads: int | None = None,
) -> Iterator[UnitOutput]:
    """Probe several folds of one dataset with one thread pool, yielding each as it ends."""
    t0 = time.perf_counter()
    data = _data_for(item)
    folds = [data.folds[j] for j in fold_indices]
    fits = probe_folds(
        data.features, data.y, folds, data.classes, options,
        groups=data.groups, layer_ids=data.layers, where=data.key, threads=threads,
    )
    for j, fit in zip(fold_indices, fits):
        rows = _score_unit(data, fit, options)
        now = time.perf_counter()
        yield UnitOutput(dataset_index, j, fit, rows, now - t0)
        t0 = now


# ------------------------------------------------------------------------------ unit storage


def _unit_digest(data: ProbeData, fold_index: int, options: ProbeOptions) -> str:
    fold = data.folds[fold_index]
    h = hashlib.sha256()
    ident = {
        "version": __version__,
        "sources": [(s.get("fingerprint"), s.get("path")) for s in data.sources],
        "dataset": data.key,
        "task": data.task.to_dict(),
        "layers": data.layers,
        "fold": fold.name,
        "options": options.to_dict(),
        "n": len(data.y),
    }
    h.update(json.dumps(ident, sort_keys=True, default=str).encode())
    for part in (fold.train, fold.test, fold.validation):
        h.update(b"|" if part is None else np.asarray(part, np.int64).tobytes())
    h.update(np.asarray(data.y, np.int64).tobytes())
    return h.hexdigest()[:24]


_ARRAYS = ("chosen_c", "val_grid", "val_uar", "test_index", "test_pred", "test_prob", "n_iter",
           "converged", "layer_weights")


def save_unit(path: Path, out: UnitOutput) -> None:
    """Store a unit as .npz (arrays) with its lists and rows as JSON; written atomically."""
    fit = out.fit
    arrays = {k: getattr(fit, k) for k in _ARRAYS if getattr(fit, k) is not None}
    meta = {k: getattr(fit, k) for k in ("name", "layers", "seeds", "classes", "c_grid", "n_fit",
                                         "n_val", "fit_speakers", "val_speakers", "notes")}
    meta.update(rows=out.rows, seconds=out.seconds, dataset_index=out.dataset_index,
                fold_index=out.fold_index)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, meta=np.asarray(json.dumps(meta, default=_jsonable)), **arrays)
    tmp.replace(path)


def _jsonable(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(type(o))


def load_unit(path: Path) -> UnitOutput:
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        arrays = {k: z[k] for k in _ARRAYS if k in z.files}
    fit = FoldFit(
        name=meta["name"], layers=meta["layers"], seeds=meta["seeds"], classes=meta["classes"],
        c_grid=meta["c_grid"], n_fit=meta["n_fit"], n_val=meta["n_val"],
        fit_speakers=meta["fit_speakers"], val_speakers=meta["val_speakers"],
        notes=meta["notes"], layer_weights=arrays.pop("layer_weights", None), **arrays,
    )
    return UnitOutput(meta["dataset_index"], meta["fold_index"], fit, meta["rows"],
                      meta["seconds"])


# ------------------------------------------------------------------------------------ sweep


@dataclass
class SweepResult:
    """What a sweep produced (also written to `out`, when given)."""

    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    protocol: dict[str, Any]
    out: Path | None
    units: list[UnitOutput] = field(repr=False, default_factory=list)


def _versions() -> dict[str, str]:
    out = {"emoprobe": __version__, "python": platform.python_version()}
    for name in ("numpy", "torch", "sklearn", "scipy", "h5py", "joblib"):
        try:
            out[name] = str(__import__(name).__version__)
        except ImportError:
            continue
    return out


def _summarise(
    data: ProbeData, units: Sequence[UnitOutput], options: ProbeOptions
) -> list[dict[str, Any]]:
    """summary.csv rows of one dataset: fold/seed means and the figures pooled over all test
    utterances (and seeds)."""
    fits = [u.fit for u in units]
    layers = fits[0].layers
    rows = [r for u in units for r in u.rows]
    test_idx = np.concatenate([f.test_index for f in fits])
    preds = np.concatenate([f.test_pred for f in fits], axis=2)  # (R, S, n_all)
    pooled = score_many(
        data.y[test_idx], preds, len(data.classes), n_boot=options.n_boot,
        seed=_bootstrap_seed(data.key, "pooled"),
    )
    out = []
    for r, layer in enumerate(layers):
        mine = [x for x in rows if x["layer"] == layer]
        def stat(key: str, mine: list[dict[str, Any]] = mine) -> tuple[float, float]:
            v = np.asarray([x[key] for x in mine], dtype=float)
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


def _dataset_protocol(data: ProbeData, units: Sequence[UnitOutput]) -> dict[str, Any]:
    folds = []
    for u in units:
        fold, fit = data.folds[u.fold_index], u.fit
        folds.append({
            "name": fold.name,
            "n_train": len(fold.train),
            "n_validation": None if fold.validation is None else len(fold.validation),
            "n_test": len(fold.test),
            "test_classes": dict(zip(data.classes, np.bincount(
                data.y[fold.test], minlength=len(data.classes)).tolist())),
            "validation": (
                "official" if fold.validation is not None
                else f"speaker-disjoint carving of the training part ({data.group_key})"
            ),
            "per_seed": [
                {"seed": s, "n_fit": fit.n_fit[k], "n_val": fit.n_val[k],
                 "fit_speakers": fit.fit_speakers[k], "val_speakers": fit.val_speakers[k]}
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
        "sources": data.sources,
        "layers": data.layers,
        "n_utterances": len(data.y),
        "class_counts": dict(zip(data.classes,
                                 np.bincount(data.y, minlength=len(data.classes)).tolist())),
        "speaker_field": data.group_key,
        "n_speakers": None if data.groups is None else len(np.unique(data.groups)),
        "excluded": data.excluded,
        "folds": folds,
    }


def run_sweep(
    items: Sequence[Source | ProbeData],
    options: ProbeOptions,
    *,
    out: str | Path | None = None,
    jobs: int = 1,
    progress: bool = True,
    resume: bool = True,
) -> SweepResult:
    """Probe every fold of every dataset and write the results directory `out` (if given).

    `items` are Sources (caches, loaded where the unit runs) or in-memory ProbeData. With
    `jobs` > 1 the units run through `joblib.Parallel` (the backend comes from any enclosing
    `joblib.parallel_config`); the results are the same as with one job.
    """
    from tqdm.auto import tqdm

    started = time.perf_counter()
    out_dir = Path(out) if out is not None else None
    if out_dir is not None:
        (out_dir / UNITS).mkdir(parents=True, exist_ok=True)
    # Plan: the folds of every dataset (features are read where the units run).
    plans: list[ProbeData] = []
    for item in items:
        data = item if isinstance(item, ProbeData) else item.load(read=False)
        plans.append(data)
        print(f"{data.key}: {len(data.y)} utterances, {len(data.folds)} fold(s), "
              f"{len(data.layers)} layer(s); excluded: {describe_exclusions(data)}")
        failed = data.excluded.get("failed") or {}
        for utt, reason in list(failed.items())[:5]:
            print(f"  failed {utt}: {reason}")
    keys = [d.key for d in plans]
    dup = [k for k, n in Counter(keys).items() if n > 1]
    if dup:
        raise ProbeError(f"the same dataset/task/upstream is given twice: {dup}")

    units: dict[tuple[int, int], UnitOutput] = {}
    todo = []
    for i, data in enumerate(plans):
        for j in range(len(data.folds)):
            path = None
            if out_dir is not None:
                path = out_dir / UNITS / f"{_unit_digest(data, j, options)}.npz"
                if resume and path.exists():
                    try:
                        units[(i, j)] = load_unit(path)
                        continue
                    except (OSError, ValueError, KeyError) as exc:
                        log.warning("%s: unreadable saved unit (%s); recomputing", path, exc)
            todo.append((i, j, path))
    if units:
        print(f"reusing {len(units)} finished unit(s) from {out_dir / UNITS}")

    bar = tqdm(total=len(todo), desc="probe", unit="fold", disable=not progress)

    def finish(res: UnitOutput, path: Path | None) -> None:
        units[(res.dataset_index, res.fold_index)] = res
        if path is not None:
            save_unit(path, res)
        bar.update(1)
        bar.set_postfix_str(f"{plans[res.dataset_index].key} {res.fit.name}")

    paths = {(i, j): p for i, j, p in todo}
    if jobs == 1 or len(todo) <= 1:
        # In this process: the folds of a dataset share one pool of threads (no idle
        # workers at the end of each fold).
        for i in sorted({i for i, _, _ in todo}):
            folds = [j for k, j, _ in todo if k == i]
            for res in run_units(items[i], i, folds, options):
                finish(res, paths[(i, res.fold_index)])
    else:
        from joblib import Parallel, delayed

        threads = max(1, available_threads() // jobs)
        tasks = (delayed(run_unit)(items[i], i, j, options, threads) for i, j, _ in todo)
        for res in Parallel(n_jobs=jobs, return_as="generator_unordered")(tasks):
            finish(res, paths[(res.dataset_index, res.fold_index)])
    bar.close()
    _LOADED.clear()  # do not hold a dataset's features after the sweep

    ordered = [units[(i, j)] for i, d in enumerate(plans) for j in range(len(d.folds))]
    rows = [r for u in ordered for r in u.rows]
    unconverged = sum(not r["converged"] for r in rows)
    if unconverged:
        print(f"warning: {unconverged} of {len(rows)} probe(s) stopped before the gradient "
              f"tolerance {options.solver.tol} (see `converged` in results.csv)")
    summary = []
    datasets = []
    for i, data in enumerate(plans):
        mine = [units[(i, j)] for j in range(len(data.folds))]
        summary.extend(_summarise(data, mine, options))
        datasets.append(_dataset_protocol(data, mine))
    protocol = {
        "emoprobe_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "options": options.to_dict(),
        "versions": _versions(),
        "datasets": datasets,
        "method": METHOD,
        "jobs": jobs,
        "seconds": round(time.perf_counter() - started, 3),
    }
    if out_dir is not None:
        _write_outputs(out_dir, plans, ordered, rows, summary, protocol)
    return SweepResult(rows=rows, summary=summary, protocol=protocol, out=out_dir,
                       units=ordered)


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
              "selection; row layer = 'superb', weights in layer_weights",
}


def _write_outputs(
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
    write_csv(out_dir / RESULTS, rows, result_columns(classes))
    write_csv(out_dir / SUMMARY, summary, SUMMARY_COLUMNS)
    sel_rows = []
    for u in ordered:
        data = plans[u.dataset_index]
        fit = u.fit
        for r, layer in enumerate(fit.layers):
            for s, seed in enumerate(fit.seeds):
                for g, c in enumerate(fit.c_grid):
                    sel_rows.append({"dataset": data.dataset, "task": data.task.name,
                                     "upstream": data.upstream, "layer": layer,
                                     "fold": fit.name, "seed": seed, "C": c,
                                     "val_uar": float(fit.val_grid[r, s, g]),
                                     "chosen": bool(c == fit.chosen_c[r, s])})
    write_csv(out_dir / SELECTION, sel_rows,
              ["dataset", "task", "upstream", "layer", "fold", "seed", "C", "val_uar", "chosen"])
    writer = PredictionWriter(out_dir / PREDICTIONS, classes)
    try:
        for u in ordered:
            data = plans[u.dataset_index]
            fit = u.fit
            ids = escape_ids([data.ids[i] for i in fit.test_index])
            names = np.asarray(data.classes)
            labels = names[data.y[fit.test_index]]
            for r, layer in enumerate(fit.layers):
                for s, seed in enumerate(fit.seeds):
                    writer.write(
                        (data.dataset, data.task.name, data.upstream, layer, fit.name, seed),
                        ids, labels, names[fit.test_pred[r, s]], fit.test_prob[r, s],
                        data.classes,
                    )
    finally:
        writer.close()
    write_json(out_dir / PROTOCOL, protocol)


# ------------------------------------------------------------------------------- public API


def _options(options: ProbeOptions | None, settings: dict[str, Any]) -> ProbeOptions:
    base = options or ProbeOptions()
    if not settings:
        return base
    merged = {**base.to_dict(), **settings}
    merged["solver"] = settings.get("solver", base.solver)
    return ProbeOptions.from_dict(merged)


def probe(
    caches: Sequence[str | Path] = (),
    *,
    task: str | None = None,
    layers: str | Sequence[int] | None = None,
    out: str | Path | None = None,
    train_on: str | Path | None = None,
    test_on: str | Path | None = None,
    jobs: int = 1,
    options: ProbeOptions | None = None,
    progress: bool = True,
    resume: bool = True,
    **settings: Any,
) -> SweepResult:
    """Probe every layer of every cache on its corpus's folds; write `out` when given.

    `settings` are ProbeOptions fields (seeds=3 or [0, 5], balanced=True, preset="superb",
    c_grid=[...], refit="train", ...). `train_on`/`test_on` add a cross-corpus probe over the
    class names the two caches' tasks share.

    >>> result = probe(["features/wavlm-base.h5"], out="results/")  # doctest: +SKIP
    """
    opts = _options(options, settings)
    layer_key = layers if isinstance(layers, (str, type(None))) else tuple(int(x) for x in layers)
    items: list[Source | ProbeData] = [
        Source((str(c),), task=task, layers=layer_key) for c in caches
    ]
    if (train_on is None) != (test_on is None):
        raise ProbeError("cross-corpus probing needs both --train-on and --test-on")
    if train_on is not None:
        items.append(Source((str(train_on), str(test_on)), task=task, layers=layer_key))
    if not items:
        raise ProbeError("nothing to probe: give at least one cache, or --train-on/--test-on")
    return run_sweep(items, opts, out=out, jobs=jobs, progress=progress, resume=resume)


def probe_cross(
    train_on: str | Path, test_on: str | Path, **kwargs: Any
) -> SweepResult:
    """Train on every usable utterance of one cache, test on another (same upstream and
    settings), over the classes their tasks share."""
    return probe((), train_on=train_on, test_on=test_on, **kwargs)


def probe_arrays(
    features: np.ndarray | Sequence[np.ndarray],
    records: Sequence[dict[str, Any]],
    *,
    task: str | None = None,
    upstream: str = "features",
    layers: str | Sequence[int] | None = None,
    out: str | Path | None = None,
    options: ProbeOptions | None = None,
    progress: bool = False,
    **settings: Any,
) -> SweepResult:
    """Probe in-memory features (L, N, D) of N manifest records (no cache needed)."""
    from emoprobe.probe.dataset import data_from_arrays

    data = data_from_arrays(features, records, task=task, upstream=upstream, layers=layers)
    return run_sweep([data], _options(options, settings), out=out, progress=progress)
