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
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from emoprobe import __version__
from emoprobe.cache.lock import ExclusiveLock, lock_path
from emoprobe.data.tasks import Task, user_task
from emoprobe.errors import ConfigError, ProbeError
from emoprobe.probe import regression
from emoprobe.probe.config import ProbeOptions
from emoprobe.probe.dataset import (
    ProbeData,
    describe_exclusions,
)
from emoprobe.probe.engine import check_fold
from emoprobe.probe.fusion import parse_part
from emoprobe.probe.regression import is_regression
from emoprobe.probe.results import split_head
from emoprobe.probe.summary import METHOD, dataset_protocol, summarise, write_outputs
from emoprobe.probe.tables import chosen_layers
from emoprobe.probe.units import (
    Source,
    UnitOutput,
    forget_loaded,
    load_unit,
    run_unit,
    run_units,
    save_unit,
    unit_digest,
)
from emoprobe.system import available_cpus, versions

log = logging.getLogger(__name__)

UNITS = "units"


# ------------------------------------------------------------------------------------ sweep


@dataclass
class SweepResult:
    """What a sweep produced (also written to `out`, when given)."""

    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    protocol: dict[str, Any]
    out: Path | None
    units: list[UnitOutput] = field(repr=False, default_factory=list)


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
    out_dir = Path(out) if out is not None else None
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise ProbeError(f"--out {out_dir}: a file, expected a results folder")
    if out_dir is None:
        return _with_fusions(items, options, None, jobs, progress, resume)
    # The lock sits beside the folder, so that bad input (found while planning) leaves
    # nothing behind, not even an empty results folder.
    lock = ExclusiveLock(lock_path(out_dir), lambda owner: ProbeError(
        f"--out {out_dir}: another probe is writing to this results folder ({owner}); wait "
        "for it to finish or give another --out"))
    with lock:
        return _with_fusions(items, options, out_dir, jobs, progress, resume)


def _with_fusions(items: Sequence[Source | ProbeData], options: ProbeOptions,
                  out_dir: Path | None, *rest: Any) -> SweepResult:
    """Sweep `items` (`rest`: jobs, progress, resume as for _sweep); a fusion whose layers
    are not all given first needs the per-layer sweep of those caches (added when not among
    `items`), whose validation-chosen layers it then uses. With a results folder the second
    pass reuses every finished fold."""
    jobs, progress, resume = rest
    fused = [it for it in items if isinstance(it, Source) and it.fuse]
    if not any(None in it.fuse for it in fused):
        return _sweep(items, options, out_dir, jobs, progress, resume)
    singles = [it for it in items if not (isinstance(it, Source) and it.fuse)]
    for it in fused:
        for k, layer in enumerate(it.fuse):
            if layer is None and it.part(k) not in singles:
                singles.append(it.part(k))
    first = _sweep(singles, options, out_dir, jobs, progress, resume)
    chosen = chosen_layers(first.summary)
    datasets = first.protocol["datasets"]
    resolved = []
    for it in fused:
        layers = []
        for k, layer in enumerate(it.fuse):
            if layer is None:
                ds = datasets[singles.index(it.part(k))]
                layer = chosen[(ds["dataset"], ds["task"]["name"], ds["upstream"])]
            layers.append(int(layer))
        log.info("fusion %s: layers %s (%schosen on validation)",
                 " + ".join(Path(c).stem for c in it.caches), layers,
                 "given or " if any(v is not None for v in it.fuse) else "")
        resolved.append(replace(it, fuse=tuple(layers)))
    return _sweep(singles + resolved, options, out_dir, jobs, progress,
                  resume or out_dir is not None)


def plan_sweep(items: Sequence[Source | ProbeData]) -> list[ProbeData]:
    """Every dataset with its folds (features are read where the units run), printed, and
    the folds checked (test rows, every class in each training part)."""
    plans: list[ProbeData] = []
    for item in items:
        data = item if isinstance(item, ProbeData) else item.load(read=False)
        plans.append(data)
        log_plan(data)
        if not is_regression(data):
            for fold in data.folds:
                check_fold(fold, data.y, data.classes, data.key)
    keys = [d.key for d in plans]
    dup = [k for k, n in Counter(keys).items() if n > 1]
    if dup:
        raise ProbeError(f"the same dataset/task/upstream is given twice: {dup}")
    return plans


def log_plan(data: ProbeData) -> None:
    """Log what a dataset will be probed on: sizes, exclusions, the fold protocol, and every
    fold's size and class counts."""
    log.info("%s: %d utterances, %d fold(s), %d layer(s); excluded: %s", data.key,
             len(data.y), len(data.folds), len(data.layers), describe_exclusions(data))
    failed = data.excluded.get("failed") or {}
    for utt, reason in list(failed.items())[:5]:
        log.info("  failed %s: %s", utt, reason)
    if data.folds:
        log.info("  folds: %s", data.protocol)
    if "train" in data.excluded and not is_regression(data):  # cross-corpus
        log.info("  classes shared by both tasks: %s", " ".join(data.classes))
    for fold in data.folds:
        def counts(idx: Any) -> str:
            if is_regression(data):
                y = data.y[idx]
                return f"mean {y.mean():.3g}, std {y.std():.3g}" if len(y) else "empty"
            n = np.bincount(data.y[idx], minlength=len(data.classes))
            return " ".join(f"{c} {k}" for c, k in zip(data.classes, n))
        val = "" if fold.validation is None else (
            f"; validation {len(fold.validation)} ({counts(fold.validation)})")
        log.info("  %s: train %d (%s)%s; test %d (%s)", fold.name, len(fold.train),
                 counts(fold.train), val, len(fold.test), counts(fold.test))


def audit_plan(data: ProbeData) -> dict[str, Any]:
    """The audit's cheap checks on exactly the folds `data` is probed on, printed; returns
    the report as stored in the dataset's protocol entry (`audit`)."""
    from emoprobe.data.audit import AuditReport, audit_folds

    speakers = data.groups if data.group_key == "speaker" else None
    findings = audit_folds(data.ids, data.y, data.classes, data.folds, speakers=speakers,
                           sentences=data.sentences)
    checks = ["speakers", "folds"] if is_regression(data) else ["speakers", "classes", "folds"]
    if data.sentences is not None:
        checks.append("sentences")
    report = AuditReport(data.dataset, data.task.name, data.protocol, len(data.y),
                         [f.name for f in data.folds], findings, checks)
    if findings:
        log.info("  %s", report.summary().replace("\n", "\n  "))
    return report.to_dict()


def _sweep(
    items: Sequence[Source | ProbeData],
    options: ProbeOptions,
    out_dir: Path | None,
    jobs: int,
    progress: bool,
    resume: bool,
) -> SweepResult:
    from emoprobe.progress import progress_bar

    started = time.perf_counter()
    plans = plan_sweep(items)  # every input checked before anything is written
    audits = [audit_plan(data) if data.folds else None for data in plans]
    if out_dir is not None:
        (out_dir / UNITS).mkdir(parents=True, exist_ok=True)
    units: dict[tuple[int, int], UnitOutput] = {}
    todo = []
    planned: dict[tuple[int, int], str] = {}
    for i, data in enumerate(plans):
        for j in range(len(data.folds)):
            path = None
            planned[(i, j)] = unit_digest(data, j, options)
            if out_dir is not None:
                path = out_dir / UNITS / f"{planned[(i, j)]}.npz"
                if resume and path.exists():
                    try:
                        units[(i, j)] = load_unit(path)
                        continue
                    except (OSError, ValueError, KeyError) as exc:
                        log.warning("%s: unreadable saved unit (%s); recomputing", path, exc)
            todo.append((i, j, path))
    if units:
        log.info("reusing %d finished unit(s) from %s", len(units), out_dir / UNITS)

    bar = progress_bar(total=len(todo), desc="probe", unit="fold", disable=not progress)

    def finish(res: UnitOutput, path: Path | None) -> None:
        # A unit is saved under the digest of the data it read, never under the planned one:
        # a cache replaced in between cannot lend its results to the other file's key.
        if path is not None and res.digest:
            save_unit(path.with_name(f"{res.digest}.npz"), res)
        if res.digest and res.digest != planned[(res.dataset_index, res.fold_index)]:
            data = plans[res.dataset_index]
            raise ProbeError(
                f"{data.key}: the data changed while probing (a cache or manifest of "
                f"{[s.get('path') for s in data.sources]} was replaced since the sweep "
                "started); the results are not mixed: run the probe again"
            )
        units[(res.dataset_index, res.fold_index)] = res
        bar.update(1)
        bar.set_postfix_str(f"{plans[res.dataset_index].key} {res.fit.name}")

    paths = {(i, j): p for i, j, p in todo}
    try:
        if jobs == 1 or len(todo) <= 1:
            # In this process: the folds of a dataset share one pool of threads (no idle
            # workers at the end of each fold).
            for i in sorted({i for i, _, _ in todo}):
                folds = [j for k, j, _ in todo if k == i]
                for res in run_units(items[i], i, folds, options):
                    finish(res, paths[(i, res.fold_index)])
        else:
            from joblib import Parallel, delayed

            threads = max(1, available_cpus() // jobs)
            tasks = (delayed(run_unit)(items[i], i, j, options, threads) for i, j, _ in todo)
            for res in Parallel(n_jobs=jobs, return_as="generator_unordered")(tasks):
                finish(res, paths[(res.dataset_index, res.fold_index)])
    finally:
        bar.close()
        forget_loaded()  # do not hold a dataset's features (or its file) after the sweep

    ordered = [units[(i, j)] for i, d in enumerate(plans) for j in range(len(d.folds))]
    rows = [r for u in ordered for r in u.rows]
    unconverged = sum(not r["converged"] for r in rows)
    if unconverged:
        log.warning("%d of %d probe(s) stopped before the gradient tolerance %s (see "
                    "`converged` in results.csv)", unconverged, len(rows), options.solver.tol)
    warnings = [f"{plans[u.dataset_index].key}: {note}" for u in ordered for note in u.fit.notes]
    for note in warnings:
        log.warning("%s", note)
    summary = []
    datasets = []
    for i, data in enumerate(plans):
        mine = [units[(i, j)] for j in range(len(data.folds))]
        summary.extend(summarise(data, mine, options))
        datasets.append({**dataset_protocol(data, mine, options), "audit": audits[i]})
    rows, summary = [split_head(r) for r in rows], [split_head(r) for r in summary]
    protocol = {
        "emoprobe_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "options": options.to_dict(),
        "versions": versions(),
        "datasets": datasets,
        "method": {**METHOD, **(regression.METHOD if any(map(is_regression, plans)) else {})},
        "warnings": warnings,
        "jobs": jobs,
        "seconds": round(time.perf_counter() - started, 3),
    }
    if out_dir is not None:
        write_outputs(out_dir, plans, ordered, rows, summary, protocol)
    return SweepResult(rows=rows, summary=summary, protocol=protocol, out=out_dir,
                       units=ordered)


# ------------------------------------------------------------------------------- public API


def _options(options: ProbeOptions | None, settings: dict[str, Any]) -> ProbeOptions:
    base = options or ProbeOptions()
    if not settings:
        return base
    merged = {**base.to_dict(), **settings}
    merged["solver"] = settings.get("solver", base.solver)
    return ProbeOptions.from_dict(merged)


def _manifests(manifest: Any, n: int) -> list[str | None]:
    """One manifest per cache: one given for all, or a list in the caches' order."""
    if manifest is None:
        return [None] * n
    if isinstance(manifest, (str, Path)):
        return [str(manifest)] * n
    listed = [None if m is None else str(m) for m in manifest]
    if len(listed) == 1:
        return listed * n
    if len(listed) != n:
        raise ProbeError(f"--manifest given {len(listed)} times for {n} cache(s); expected "
                         "one manifest for every cache, or one per cache in their order")
    return listed


def probe(
    caches: Sequence[str | Path] = (),
    *,
    task: str | Task | None = None,
    label_map: str | Path | Mapping[str, Any] | None = None,
    manifest: str | Path | Sequence[str | Path | None] | None = None,
    folds: str | None = None,
    layers: str | Sequence[int] | None = None,
    out: str | Path | None = None,
    train_on: str | Path | None = None,
    test_on: str | Path | None = None,
    train_manifest: str | Path | None = None,
    test_manifest: str | Path | None = None,
    fuse: Sequence[Sequence[str | Path]] = (),
    jobs: int = 1,
    options: ProbeOptions | None = None,
    progress: bool = True,
    resume: bool = True,
    **settings: Any,
) -> SweepResult:
    """Probe every layer of every cache on its folds; write `out` when given.

    Labels, speakers and folds come from `manifest` (one JSONL for every cache, or one per
    cache; joined by id) or else from the copy inside each cache. `task` names a task of the
    corpus, or the task a `label_map` defines (a JSON file or a mapping, class -> raw
    codes). `folds` chooses the folds: `loso`, `kfold:K[:SEED]`, a manifest field or a fold
    file (emoprobe.data.folds.resolve_folds; default: the corpus's protocol).
    `settings` are ProbeOptions fields (seeds=3 or [0, 5], balanced=True, preset="superb",
    c_grid=[...], refit="train", ...). `train_on`/`test_on` add a cross-corpus probe over the
    class names the two caches' tasks share. Each entry of `fuse` is a fusion probe over
    several caches of one corpus (`["a.h5", "b.h5:3"]`: cache a at its layer chosen on
    validation, cache b at layer 3; emoprobe.probe.fusion).

    >>> result = probe(["features/wavlm-base.h5"], out="results/")  # doctest: +SKIP
    """
    opts = _options(options, settings)
    if not caches and manifest is not None:
        raise ConfigError("--manifest goes with the caches listed before it; for cross-corpus "
                          "probing give --train-manifest and --test-manifest")
    if not caches and folds is not None:
        raise ConfigError("--folds chooses the folds of the caches listed; a cross-corpus "
                          "probe trains on all of --train-on and tests on all of --test-on")
    the_task = user_task(task, label_map)
    layer_key = layers if isinstance(layers, (str, type(None))) else tuple(int(x) for x in layers)
    per_cache = _manifests(manifest, len(caches))
    items: list[Source | ProbeData] = [
        Source((str(c),), task=the_task, layers=layer_key, manifests=(m,), folds=folds)
        for c, m in zip(caches, per_cache)
    ]
    if (train_on is None) != (test_on is None):
        raise ProbeError("cross-corpus probing needs both --train-on and --test-on")
    if train_on is not None:
        pair = tuple(None if m is None else str(m) for m in (train_manifest, test_manifest))
        items.append(Source((str(train_on), str(test_on)), task=the_task, layers=layer_key,
                            manifests=pair))
    # A fused cache uses its own --manifest when it is also probed alone, else the one
    # manifest given for every cache (if any).
    manifest_of = {str(c): m for c, m in zip(caches, per_cache)}
    listed = [manifest] if manifest is None or isinstance(manifest, (str, Path)) else list(
        manifest)
    shared = str(listed[0]) if len(listed) == 1 and listed[0] is not None else None
    for spec in fuse:
        parts = [parse_part(str(p)) for p in spec]
        if len(parts) < 2:
            raise ProbeError(f"--fuse {' '.join(map(str, spec))}: a fusion needs at least two "
                             "caches, e.g. --fuse a.h5 b.h5:3")
        items.append(Source(tuple(p for p, _ in parts), task=the_task, layers=layer_key,
                            manifests=tuple(manifest_of.get(p, shared) for p, _ in parts),
                            folds=folds, fuse=tuple(layer for _, layer in parts)))
    if not items:
        raise ProbeError("nothing to probe: give at least one cache, --train-on/--test-on or "
                         "--fuse")
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
    task: str | Task | None = None,
    label_map: str | Path | Mapping[str, Any] | None = None,
    folds: str | None = None,
    upstream: str = "features",
    layers: str | Sequence[int] | None = None,
    out: str | Path | None = None,
    options: ProbeOptions | None = None,
    progress: bool = False,
    **settings: Any,
) -> SweepResult:
    """Probe in-memory features (L, N, D) of N manifest records (no cache needed)."""
    from emoprobe.probe.dataset import data_from_arrays

    data = data_from_arrays(features, records, task=user_task(task, label_map),
                            upstream=upstream, layers=layers, fold_spec=folds)
    return run_sweep([data], _options(options, settings), out=out, progress=progress)
