"""Units of a probing sweep: one (dataset, fold) with all its layers and seeds.

A unit loads its dataset where it runs (a `Source` names caches; one loaded dataset is kept per
process so the folds of a dataset share its features), fits every probe of the fold as one
batched problem (emoprobe.probe.engine), scores it, and is saved as one .npz file keyed by a
digest of everything that decides its numbers, so an interrupted sweep resumes.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from emoprobe import __version__
from emoprobe.data.tasks import Task
from emoprobe.errors import ProbeError
from emoprobe.probe import regression
from emoprobe.probe.config import ProbeOptions
from emoprobe.probe.dataset import ProbeData, cross_corpus, load_cache
from emoprobe.probe.engine import FoldFit, probe_folds
from emoprobe.probe.fusion import fuse
from emoprobe.probe.metrics import score_many
from emoprobe.probe.regression import is_regression
from emoprobe.probe.ridge import probe_folds_ridge
from emoprobe.system import atomic_open


@dataclass(frozen=True)
class Source:
    """Where a dataset comes from: one cache, or a (train, test) pair for cross-corpus; and
    how it is read: the task (a name or a Task from a label map), the layers, the manifest
    of each cache (None: the copy inside the cache) and the folds (see
    emoprobe.data.folds.resolve_folds; None: the corpus's protocol)."""

    caches: tuple[str, ...]
    task: str | Task | None = None
    layers: str | tuple[int, ...] | None = None
    manifests: tuple[str | None, ...] = ()
    folds: str | None = None
    fuse: tuple[int | None, ...] = ()  # a fusion: the layer of each cache (None: not chosen yet)

    def _manifest(self, k: int) -> str | None:
        return self.manifests[k] if k < len(self.manifests) else None

    def part(self, k: int) -> Source:
        """The single-cache source of part k of a fusion (all its probed layers)."""
        return Source((self.caches[k],), task=self.task, layers=self.layers,
                      manifests=(self._manifest(k),), folds=self.folds)

    def load(self, read: bool = True) -> ProbeData:
        if self.fuse:
            if None in self.fuse or len(self.fuse) != len(self.caches):
                raise ProbeError(f"fusion of {self.caches}: layers {self.fuse} are not all "
                                 "chosen; expected one layer per cache")
            return fuse([replace(self.part(k), layers=(int(layer),)).load(read=read)
                         for k, layer in enumerate(self.fuse)], read=read)
        if len(self.caches) == 1:
            return load_cache(self.caches[0], task=self.task, layers=self.layers, read=read,
                              manifest=self._manifest(0), fold_spec=self.folds)
        if len(self.caches) != 2:
            raise ProbeError(f"a source is one cache or a (train, test) pair, got {self.caches}")
        train = load_cache(self.caches[0], task=self.task, layers=self.layers, read=read,
                           folds="split", manifest=self._manifest(0))
        test = load_cache(self.caches[1], task=self.task, layers=self.layers, read=read,
                          folds=False, manifest=self._manifest(1))
        return cross_corpus(train, test, read=read)


# One loaded dataset per process: units of the same dataset reuse its features. The key
# includes each file's size and modification time, so a cache replaced on disk is re-read.
_LOADED: dict[tuple[Any, ...], ProbeData] = {}


def forget_loaded() -> None:
    """Drop the dataset kept in memory (after a sweep, so it does not hold the features or
    keep its cache file open)."""
    for data in _LOADED.values():
        close = getattr(data.features, "close", None)
        if close is not None:
            close()
    _LOADED.clear()


def _data_for(item: Source | ProbeData) -> ProbeData:
    if isinstance(item, ProbeData):
        return item
    stats = []
    for c in item.caches:
        st = os.stat(c)
        stats.append((st.st_mtime_ns, st.st_size, st.st_ino))
    key = (item, tuple(stats))
    if key not in _LOADED:
        forget_loaded()
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
    digest: str = ""  # unit_digest of the data this unit actually read


def _score_unit(data: ProbeData, fit: FoldFit, options: ProbeOptions) -> list[dict[str, Any]]:
    """results.csv rows of one unit (every layer x seed)."""
    if is_regression(data):
        return regression.unit_rows(data, fit, options, bootstrap_seed(data.key, fit.name))
    y_test = data.y[fit.test_index]
    n_r, n_s, n_t = fit.test_pred.shape
    scores = score_many(
        y_test,
        fit.test_pred.reshape(n_r * n_s, n_t),
        len(data.classes),
        n_boot=options.n_boot,
        seed=bootstrap_seed(data.key, fit.name),
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


def bootstrap_seed(*parts: Any) -> int:
    return zlib.crc32("|".join(map(str, parts)).encode()) & 0x7FFFFFFF



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
    if is_regression(data):
        fits = probe_folds_ridge(data.features, data.y, folds, options, groups=data.groups,
                                 layer_ids=data.layers, where=data.key, threads=threads)
    else:
        fits = probe_folds(
            data.features, data.y, folds, data.classes, options,
            groups=data.groups, layer_ids=data.layers, where=data.key, threads=threads,
        )
    for j, fit in zip(fold_indices, fits):
        rows = _score_unit(data, fit, options)
        now = time.perf_counter()
        yield UnitOutput(dataset_index, j, fit, rows, now - t0, unit_digest(data, j, options))
        t0 = now


def unit_digest(data: ProbeData, fold_index: int, options: ProbeOptions) -> str:
    fold = data.folds[fold_index]
    h = hashlib.sha256()
    ident = {
        "version": __version__,
        "sources": [(s.get("fingerprint"), s.get("path"), (s.get("manifest") or {}).get("sha256"))
                    for s in data.sources],
        "dataset": data.key,
        "task": data.task.to_dict(),
        "layers": data.layers,
        "fold": fold.name,
        "folds": data.fold_protocol,
        "options": options.to_dict(),
        "n": len(data.y),
    }
    h.update(json.dumps(ident, sort_keys=True, default=str).encode())
    h.update("\n".join(data.ids).encode())
    for part in (fold.train, fold.test, fold.validation):
        h.update(b"|" if part is None else np.asarray(part, np.int64).tobytes())
    h.update(np.asarray(data.y, np.float64 if is_regression(data) else np.int64).tobytes())
    # speakers decide the validation carving
    h.update(b"|" if data.groups is None else "\n".join(map(str, data.groups)).encode())
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
                fold_index=out.fold_index, digest=out.digest)
    with atomic_open(path, "wb") as fh:
        np.savez(fh, meta=np.asarray(json.dumps(meta, default=_jsonable)), **arrays)


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
                      meta["seconds"], meta.get("digest", ""))
