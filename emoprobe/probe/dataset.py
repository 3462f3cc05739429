"""What a sweep probes: one cache, read once, restricted to its usable utterances of one task,
with the corpus's folds; and the join of two caches for cross-corpus probing."""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emoprobe.data.corpora import CorpusSpec, corpus_for_folds
from emoprobe.data.folds import Fold, FoldProtocol, resolve_folds
from emoprobe.data.targets import RegressionTask, regression_task, target_strata
from emoprobe.data.tasks import Task
from emoprobe.errors import ConfigError, ManifestError, ProbeError
from emoprobe.layers import resolve_layers

log = logging.getLogger(__name__)


@dataclass
class ProbeData:
    """Features and labels of the utterances a sweep uses, and everything needed to say
    where they came from. Row i of `features[:, i]` is `ids[i]`."""

    dataset: str
    upstream: str
    task: Task | RegressionTask
    classes: list[str]  # empty for a regression task
    features: Any  # (L, n, D): a float32 array or CacheFeatures (read block by block)
    layers: list[int]  # cache layer index of each row of `features`
    y: np.ndarray  # (n,) class index, or target value (float) for a regression task
    ids: list[str]
    groups: np.ndarray | None  # speaker (or session) of each row
    group_key: str | None
    folds: list[Fold]
    protocol: str
    sources: list[dict[str, Any]] = field(default_factory=list)  # per cache: path, fingerprint..
    excluded: dict[str, Any] = field(default_factory=dict)
    fold_protocol: dict[str, Any] = field(default_factory=dict)  # how the folds were made
    sentences: list[str | None] | None = None  # transcripts, for the audit's sentence check

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.task.name}/{self.upstream}"


def from_selection(
    sel: Selection, *, dataset: str, upstream: str, features: Any, layers: list[int],
    sources: list[dict[str, Any]], excluded: dict[str, Any], where: str,
) -> ProbeData:
    """The one ProbeData builder for selected manifest rows (from a cache or from arrays):
    labels, speakers, transcripts and folds all come from the selection."""
    groups, group_key = _groups(sel.records, where)
    return ProbeData(
        dataset=dataset, upstream=upstream, task=sel.task, classes=list(sel.task.classes),
        features=features, layers=layers, y=sel.y, ids=[str(r["id"]) for r in sel.records],
        groups=groups, group_key=group_key, sentences=_sentences(sel.records),
        folds=sel.folds.folds if sel.folds is not None else [],
        protocol=sel.folds.name if sel.folds is not None else "",
        sources=sources, excluded=excluded,
        fold_protocol=sel.folds.to_dict() if sel.folds is not None else {},
    )


def upstream_name(path: Path, meta: Mapping[str, Any]) -> str:
    """The name a cache's upstream goes by in tables: the cache file's stem (extract names it
    after the model), else the model id."""
    return path.stem or str(meta.get("model", "upstream"))


def resolve_task(spec: CorpusSpec, task: str | Task | None, where: str,
                 records: Sequence[Mapping[str, Any]] = ()) -> Task | RegressionTask:
    """A user-defined Task as it is, else the corpus's task of that name (None: default),
    else its regression target of that name or a numeric field of the records
    (emoprobe.data.targets)."""
    if isinstance(task, Task):
        return task
    try:
        return spec.task(task)
    except ManifestError as exc:
        target = regression_task(spec.targets, task, records)
        if target is not None:
            return target
        # a task name the corpus does not define: an option mistake
        raise ConfigError(f"{where}: {exc}") from None


@dataclass
class Selection:
    """The utterances of a task that can be probed, their classes and folds, and what was
    left out (counted, listed)."""

    task: Task | RegressionTask
    rows: np.ndarray  # indices into the records
    y: np.ndarray  # class indices, or target values for a regression task
    records: list[dict[str, Any]]
    folds: FoldProtocol | None
    excluded: dict[str, Any]


def select(
    records: Sequence[Mapping[str, Any]],
    usable: np.ndarray,
    *,
    task: str | Task | None,
    folds: bool | str = True,
    fold_spec: str | None = None,
    failed: Mapping[str, str] | None = None,
    not_in_cache: np.ndarray | None = None,
    where: str,
) -> Selection:
    """Apply a task to `records` (usable[i]: record i has a vector), build the folds
    (`fold_spec`, else the corpus's protocol; `folds=False`: none; "split": only an official
    split) and account for every record left out."""
    try:  # folds given: a generic corpus needs no fold field of its own
        spec = corpus_for_folds(records, fold_spec is not None)
    except ManifestError as exc:
        raise ManifestError(f"{where}: {exc}") from None
    the_task = resolve_task(spec, task, where, records)
    reg = isinstance(the_task, RegressionTask)
    if len(the_task.classes) < 2 and not reg:
        raise ProbeError(
            f"{where}: task {the_task.name!r} has {len(the_task.classes)} class(es) "
            f"{list(the_task.classes)}; a probe needs at least 2"
        )
    labels = [str(r["label"]) for r in records]
    no_rating: list[str] = []
    if reg:
        keep, y, no_rating = the_task.values(records, where)
    else:
        keep, y = the_task.apply(labels)
    usable = np.asarray(usable, dtype=bool)
    missing = (np.zeros(len(records), bool) if not_in_cache is None
               else np.asarray(not_in_cache, bool))
    in_task = np.zeros(len(records), dtype=bool)
    in_task[keep] = True
    ids = [str(r["id"]) for r in records]
    failed = failed or {}
    lost = np.flatnonzero(in_task & ~usable)
    failed_here = {ids[k]: failed[ids[k]] for k in lost if ids[k] in failed}
    not_done = [ids[k] for k in lost if ids[k] not in failed]
    ok = usable[keep]
    rows, y = keep[ok], y[ok]
    kept = [dict(records[i]) for i in rows]
    if reg and not len(keep):
        raise ManifestError(
            f"{where}: no record has a number in field {the_task.field!r} (task "
            f"{the_task.name!r}); expected ratings there (a manifest prepared before the field "
            "was stored, such as EmotionTalk's `continuous`, needs `emoprobe prepare` again)")
    if not kept:
        raise ProbeError(f"{where}: no usable utterance carries a "
                         f"{'rating' if reg else 'label'} of task {the_task.name!r}"
                         f"{'' if reg else _reversed_map_hint(the_task, set(labels))}")
    protocol = None
    if folds is True or (folds == "split" and fold_spec is None and spec.fold_key == "split"):
        # k-fold stratifies by class, or by target quartile for a regression task
        names = (target_strata(y).astype(str) if reg else np.asarray(the_task.classes)[y])
        try:
            protocol = resolve_folds(kept, fold_spec, corpus=spec, labels=list(names))
        except ManifestError as exc:
            raise ManifestError(f"{where}: {exc}") from None
    excluded: dict[str, Any] = {
        "not_in_task": int(len(records) - len(keep) - len(no_rating)),
        "failed": failed_here,
        "not_extracted": not_done,
        "n_failed": len(failed_here),
        "n_not_extracted": len(not_done),
        "n_not_in_cache": int((in_task & missing).sum()),
    }
    if reg:
        excluded.update(no_rating=no_rating, n_no_rating=len(no_rating))
        return Selection(the_task, rows, y, kept, protocol, excluded)
    counts = np.bincount(y, minlength=len(the_task.classes))
    if folds is not False:
        empty = [c for c, n in zip(the_task.classes, counts) if n == 0]
        if empty:
            codes = {c: sorted(k for k, v in the_task.mapping.items() if v == c) for c in empty}
            found = set(labels)
            hint = _reversed_map_hint(the_task, found)
            raise ProbeError(
                f"{where}: class(es) {empty} of task {the_task.name!r} have no usable "
                f"utterance (their codes: {codes}; codes found: "
                f"{sorted(found)[:20]}); expected every class to occur{hint}"
            )
    excluded["left_out_codes"] = the_task.left_out(labels)
    return Selection(the_task, rows, y, kept, protocol, excluded)


def _reversed_map_hint(task: Task, found: set[str]) -> str:
    """A hint when a label map was written code -> class instead of class -> codes."""
    if found & set(task.classes) and not found & set(task.mapping):
        return (". The label map looks reversed (code -> class, as EmoBox's label_map.json); "
                'a label map goes class -> codes, e.g. {"ang": ["A"]}')
    return ""


def _groups(
    records: Sequence[Mapping[str, Any]], where: str
) -> tuple[np.ndarray | None, str | None]:
    """Speaker of every record, else session; None when neither is complete."""
    for key in ("speaker", "session"):
        values = [r.get(key) for r in records]
        if all(v not in (None, "") for v in values):
            if key != "speaker":
                log.warning("%s: no speaker field; validation splits are session-disjoint", where)
            return np.asarray([str(v) for v in values]), key
    return None, None


def _sentences(records: Sequence[Mapping[str, Any]]) -> list[str | None] | None:
    """Every record's `sentence`, or None when no record has one."""
    sentences = [r.get("sentence") or None for r in records]
    return sentences if any(sentences) else None


class CacheFeatures:
    """The probed part of a cache, read block by block when a fold needs it: layers
    `layers` (cache indices) of the cache rows `rows`, shaped (len(layers), len(rows), D).

    Nothing is held in memory between reads, so a sweep needs the cache's size in RAM only
    for the blocks in flight, not for the whole array. Thread-safe; picklable (the file is
    reopened where it is used)."""

    def __init__(self, path: str | Path, layers: Sequence[int], rows: np.ndarray,
                 dim: int, fingerprint: str | None = None) -> None:
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.layers = [int(v) for v in layers]
        self.rows = np.asarray(rows, dtype=np.int64)
        self.dim = int(dim)
        self.shape = (len(self.layers), len(self.rows), self.dim)
        self._lock = threading.Lock()
        self._file: Any = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_file"] = None
        state["_lock"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _dataset(self) -> Any:
        if self._file is None:
            import h5py

            from emoprobe.cache.store import file_fingerprint

            try:
                f = h5py.File(self.path, "r")
            except OSError:  # held by a writer's lock: rows marked done are consistent
                f = h5py.File(self.path, "r", locking=False)
            found = file_fingerprint(f)
            if self.fingerprint is not None and found != self.fingerprint:
                f.close()
                raise ProbeError(
                    f"{self.path}: the cache was replaced while probing (fingerprint "
                    f"{str(self.fingerprint)[:12]} when read, {str(found)[:12]} now); nothing "
                    "of the new file is used: run the probe again"
                )
            self._file = f  # held open: later reads come from this very file
        return self._file["pooled"]

    def block(self, layers: slice, *row_sets: np.ndarray) -> list[np.ndarray]:
        """Rows `row_sets` (indices into `rows`) of layers `layers`, one array per set."""
        picked = range(len(self.layers))[layers]
        sets = [self.rows[np.asarray(r, dtype=np.int64)] for r in row_sets]
        out = [np.empty((len(picked), len(r), self.dim), dtype=np.float32) for r in sets]
        for k, pos in enumerate(picked):
            with self._lock:
                layer = self._dataset()[self.layers[pos]]
            for o, r in zip(out, sets):
                o[k] = layer[r]
        return out

    def to_array(self) -> np.ndarray:
        """Everything at once, (L, n, D) (for small caches and comparisons)."""
        return self.block(slice(None), np.arange(len(self.rows)))[0]

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def check_finite(self, ids: Sequence[str], where: str) -> None:
        """One pass over the probed rows; values that differ from their stored checksums
        (flipped bytes) or NaN/Inf are errors naming utterances."""
        from emoprobe.cache.store import row_checksums

        bad = np.zeros(len(self.rows), dtype=bool)
        damaged = np.zeros(len(self.rows), dtype=bool)
        for k in range(len(self.layers)):
            (block,) = self.block(slice(k, k + 1), np.arange(len(self.rows)))
            bad |= ~np.isfinite(block[0]).all(axis=1)
            with self._lock:
                stored = self._dataset().file.get("checksum")
                sums = None if stored is None else stored[self.layers[k]][self.rows]
            if sums is not None:
                damaged |= row_checksums(block[0]) != sums
        if damaged.any():
            names = [ids[i] for i in np.flatnonzero(damaged)[:5]]
            raise ProbeError(
                f"{where}: the stored vectors of {int(damaged.sum())} utterance(s) do not match "
                f"their checksums, e.g. {names}: the file is damaged; run `emoprobe info "
                f"--repair {self.path}` to list and clear them, then extract again"
            )
        if bad.any():
            names = [ids[i] for i in np.flatnonzero(bad)[:5]]
            raise ProbeError(
                f"{where}: NaN or Inf in usable rows of {int(bad.sum())} utterance(s), e.g. "
                f"{names}; expected finite pooled vectors"
            )


def stack_layers(arrays: Sequence[np.ndarray], where: str = "features") -> np.ndarray:
    """Stack per-layer (n, D_l) arrays into (L, n, D); layers of different shapes are an
    error naming them."""
    if not arrays:
        raise ProbeError(f"{where}: no layers given")
    shapes = [np.shape(a) for a in arrays]
    if any(len(s) != 2 for s in shapes):
        raise ProbeError(f"{where}: every layer must be (utterances, dim), got shapes {shapes}")
    if len(set(shapes)) > 1:
        detail = ", ".join(f"layer {i}: {s}" for i, s in enumerate(shapes))
        raise ProbeError(
            f"{where}: layers differ in shape ({detail}); a probe sweep needs every layer to "
            f"have the same utterances and dimension"
        )
    return np.stack([np.asarray(a, dtype=np.float32) for a in arrays])


def read_probe_manifest(path: str | Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A manifest given at probe time, with its identity (path, SHA-256 of the file)."""
    import hashlib

    from emoprobe.data.manifest import read_manifest

    path = Path(path)
    if not path.is_file():
        raise ProbeError(f"--manifest {path}: no such manifest file")
    records = read_manifest(path)
    info = {"path": str(path.resolve()), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "n_records": len(records)}
    return records, info


def load_cache(
    path: str | Path,
    *,
    task: str | Task | None = None,
    layers: str | Sequence[int] | None = None,
    read: bool = True,
    folds: bool | str = True,
    manifest: str | Path | None = None,
    fold_spec: str | None = None,
) -> ProbeData:
    """Open a cache and return the usable utterances of `task` with their folds.

    Labels, speakers and folds come from `manifest` (a JSONL file joined to the cache by id)
    when given, else from the manifest copy inside the cache. Manifest ids the cache lacks
    are excluded as not extracted; cache ids the manifest lacks are ignored; both are
    counted and listed in `excluded`. So are failed and unfinished utterances and those
    outside the task. `task` is a task name or a Task (a label map); `fold_spec` chooses the
    folds (see emoprobe.data.folds.resolve_folds; None: the corpus's protocol). Mismatched
    ids, NaN features in usable rows, an unknown task or fold field are ProbeErrors. With
    `read=False` the features are not scanned for NaN (to plan work). `features` is a
    CacheFeatures: values are read block by block when a fold needs them.
    `folds=False` skips the folds, "split" builds them only for an official split
    (cross-corpus probing needs no folds, but uses a training corpus's validation split).
    """
    from emoprobe.cache.fingerprint import manifest_digest
    from emoprobe.cache.store import open_cache

    path = Path(path)
    where = str(path)
    with open_cache(path) as cache:
        cache_records = list(cache.records)
        ids = list(cache.ids)
        manifest_ids = [str(r.get("id")) for r in cache_records]
        if ids != manifest_ids:
            if len(ids) != len(manifest_ids):
                detail = f"{len(ids)} ids in the cache, {len(manifest_ids)} manifest records"
            else:
                i = next(k for k, (a, b) in enumerate(zip(ids, manifest_ids)) if a != b)
                detail = f"row {i}: cache id {ids[i]!r}, manifest id {manifest_ids[i]!r}"
            raise ProbeError(
                f"{where}: the cache's ids do not match its manifest ({detail}); expected the "
                "same ids in the same order. The file is damaged or was edited: extract again"
            )
        cache_usable = np.asarray(cache.usable, dtype=bool)
        failed_all = dict(cache.failed)
        layer_idx = resolve_layers(layers, cache.n_layers)
        meta = dict(cache.meta)
        fingerprint = cache.fingerprint
        n_layers_cache, dim = cache.n_layers, cache.dim
    not_in_manifest: list[str] = []
    if manifest is None:
        records = cache_records
        row_of = np.arange(len(records))
        manifest_info = {"path": None, "source": "the copy inside the cache",
                         "sha256": manifest_digest(cache_records), "n_records": len(records)}
    else:
        records, manifest_info = read_probe_manifest(manifest)
        pos = {u: k for k, u in enumerate(ids)}
        row_of = np.asarray([pos.get(str(r["id"]), -1) for r in records], dtype=np.int64)
        if not (row_of >= 0).any():
            raise ProbeError(
                f"{where}: none of the {len(records)} ids of manifest {manifest} is in the "
                f"cache (e.g. {records[0]['id']!r}; the cache has e.g. {ids[0]!r}); expected "
                "the manifest of the corpus the cache was extracted from"
            )
        listed = {str(r["id"]) for r in records}
        not_in_manifest = [u for u in ids if u not in listed]
    in_cache = row_of >= 0
    usable = in_cache & cache_usable[np.where(in_cache, row_of, 0)]
    sel = select(records, usable, task=task, folds=folds, fold_spec=fold_spec,
                 failed=failed_all, not_in_cache=~in_cache, where=where)
    rows = row_of[sel.rows]
    feats = CacheFeatures(path, layer_idx, rows, dim, fingerprint=fingerprint)
    kept_ids = [str(r["id"]) for r in sel.records]
    if read:
        feats.check_finite(kept_ids, where)
    spec_name = dataset_name_of(records)
    excluded = dict(sel.excluded)
    excluded.update(not_in_manifest=not_in_manifest, n_not_in_manifest=len(not_in_manifest))
    source = {
        "path": str(path.resolve()),
        "fingerprint": fingerprint,
        "fingerprint_parts": meta.get("fingerprint_parts"),
        "manifest": manifest_info,
        "model": meta.get("model"),
        "upstream_kind": meta.get("upstream_kind"),
        "n_layers": n_layers_cache,
        "dim": dim,
        "layer_convention": meta.get("layer_convention"),
        "n_utterances": len(ids),
        "n_usable": int(cache_usable.sum()),
        "corpus": spec_name,
    }
    return from_selection(sel, dataset=spec_name, upstream=upstream_name(path, meta),
                          features=feats, layers=layer_idx, sources=[source], excluded=excluded,
                          where=where)


def dataset_name_of(records: Sequence[Mapping[str, Any]]) -> str:
    """The dataset name of a manifest's records: their `corpus`, else "manifest"."""
    names = {r.get("corpus") for r in records}
    name = names.pop() if len(names) == 1 else None
    return str(name or "manifest")


def _same_upstream(a: ProbeData, b: ProbeData) -> None:
    sa, sb = a.sources[0], b.sources[0]
    problems = []
    for key in ("n_layers", "dim", "model", "upstream_kind"):
        if sa.get(key) != sb.get(key):
            problems.append(f"{key}: {sa.get(key)!r} vs {sb.get(key)!r}")
    pa, pb = sa.get("fingerprint_parts") or {}, sb.get("fingerprint_parts") or {}
    for part in ("upstream", "settings"):
        if pa.get(part) != pb.get(part):
            problems.append(f"{part} fingerprint: {pa.get(part)} vs {pb.get(part)}")
    if a.layers != b.layers:
        problems.append(f"layers: {a.layers} vs {b.layers}")
    if problems:
        raise ProbeError(
            f"cross-corpus probing needs caches from the same upstream and settings; "
            f"{sa['path']} and {sb['path']} differ in " + "; ".join(problems)
        )


class _Shape:
    """Stands in for features that are not read (planning)."""

    def __init__(self, shape: tuple[int, int, int]) -> None:
        self.shape = shape


def _rows_of(features: Any, layers: slice, rows: np.ndarray) -> list[np.ndarray]:
    if hasattr(features, "block"):
        return features.block(layers, rows)
    return [np.ascontiguousarray(features[layers][:, rows])]


def cross_corpus(train: ProbeData, test: ProbeData, *, read: bool = True) -> ProbeData:
    """Train on every usable utterance of `train`, test on `test`, over the class names the
    two tasks share (in `train`'s order). Validation comes from `train` alone: its own
    validation split when its protocol has one, else a speaker-disjoint carving."""
    _same_upstream(train, test)
    reg = isinstance(train.task, RegressionTask)
    if reg != isinstance(test.task, RegressionTask):
        raise ProbeError(f"cross-corpus {train.key} -> {test.key}: one task is a regression "
                         "task and the other is not; give both the same kind of task")
    present_test = {test.classes[k] for k in np.unique(test.y)} if not reg else set()
    shared = [c for k, c in enumerate(train.classes)
              if c in present_test and k in set(np.unique(train.y).tolist())]
    if len(shared) < 2 and not reg:
        raise ProbeError(
            f"tasks {train.key} ({train.classes}) and {test.key} ({test.classes}) share "
            f"{len(shared)} class name(s) {shared}; cross-corpus probing needs at least 2"
        )
    def subset(d: ProbeData) -> tuple[np.ndarray, np.ndarray]:
        if reg:  # every rated utterance, values as they are
            return np.arange(len(d.y)), d.y
        names = np.asarray(d.classes)[d.y]
        rows = np.flatnonzero(np.isin(names, shared))
        return rows, np.asarray([shared.index(c) for c in names[rows]], dtype=np.int64)

    tr_rows, tr_y = subset(train)
    te_rows, te_y = subset(test)
    validation = None
    train_idx = np.arange(len(tr_rows))
    if train.folds and train.folds[0].validation is not None:
        official = train.folds[0]
        pos = {int(r): k for k, r in enumerate(tr_rows)}
        train_idx = np.asarray([pos[i] for i in official.train if int(i) in pos], np.int64)
        validation = np.asarray([pos[i] for i in official.validation if int(i) in pos], np.int64)
    n_tr = len(tr_rows)
    if read:
        every = slice(0, len(train.layers))
        (a,) = _rows_of(train.features, every, tr_rows)
        (b,) = _rows_of(test.features, every, te_rows)
        feats: Any = np.concatenate([a, b], axis=1)
        del a, b
    else:  # planning: the shape is all that is needed
        feats = _Shape((len(train.layers), n_tr + len(te_rows), train.features.shape[2]))
    groups = None
    if train.groups is not None and test.groups is not None:
        groups = np.concatenate(
            [np.char.add(f"{train.dataset}:", train.groups[tr_rows].astype(str)),
             np.char.add(f"{test.dataset}:", test.groups[te_rows].astype(str))]
        )
    fold = Fold(
        f"{train.dataset}->{test.dataset}",
        train_idx,
        np.arange(n_tr, n_tr + len(te_rows)),
        validation,
    )
    name = f"{train.task.name}&{test.task.name}"
    task: Task | RegressionTask = (
        RegressionTask(name, train.task.field) if isinstance(train.task, RegressionTask)
        else Task(name, tuple(shared), {c: c for c in shared}))
    return ProbeData(
        dataset=f"{train.dataset}->{test.dataset}",
        upstream=train.upstream,
        task=task,
        classes=shared,
        features=feats,
        layers=train.layers,
        y=np.concatenate([tr_y, te_y]),
        ids=[train.ids[i] for i in tr_rows] + [test.ids[i] for i in te_rows],
        groups=groups,
        group_key=train.group_key,
        folds=[fold],
        protocol=f"cross-corpus: train on {train.key}, test on {test.key}",
        sources=train.sources + test.sources,
        excluded={"train": train.excluded, "test": test.excluded,
                  "outside_shared_classes": {"train": int(len(train.y) - n_tr),
                                             "test": int(len(test.y) - len(te_rows))}},
    )


def describe_exclusions(data: ProbeData) -> str:
    """One line on what was left out of a dataset and why."""
    def one(ex: Mapping[str, Any]) -> str:
        text = (f"{ex.get('n_failed', 0)} failed, {ex.get('n_not_extracted', 0)} not "
                f"extracted, {ex.get('not_in_task', 0)} outside the task")
        if ex.get("n_not_in_cache"):
            text += f" ({ex['n_not_in_cache']} manifest ids not in the cache)"
        codes = ex.get("left_out_codes") or {}
        for kind in ("dropped", "unmapped"):
            if codes.get(kind):
                text += f" ({kind}: " + ", ".join(f"{c} {n}" for c, n in
                                                  codes[kind].items()) + ")"
        if "n_no_rating" in ex:
            text += f", {ex['n_no_rating']} without a rating"
        if ex.get("n_not_in_manifest"):
            text += f"; {ex['n_not_in_manifest']} cache rows not in the manifest (ignored)"
        return text
    ex = data.excluded
    if "train" in ex:
        return f"train: {one(ex['train'])}; test: {one(ex['test'])}"
    if "parts" in ex:  # a fusion (emoprobe.probe.fusion): each cache, then the join by id
        lacks = ", ".join(f"{n} missing from {name}" for name, n in ex["n_missing_from"].items()
                          if n)
        return ("; ".join(f"{name}: {one(e)}" for name, e in ex["parts"].items())
                + f"; joined by id: {ex['n_not_in_every_cache']} not in every cache"
                + (f" ({lacks})" if lacks else ""))
    return one(ex)


__all__ = [
    "CacheFeatures",
    "ProbeData",
    "cross_corpus",
    "describe_exclusions",
    "load_cache",
    "stack_layers",
]


def data_from_arrays(
    features: np.ndarray | Sequence[np.ndarray],
    records: Sequence[Mapping[str, Any]],
    *,
    task: str | Task | None = None,
    upstream: str = "features",
    layers: str | Sequence[int] | None = None,
    usable: np.ndarray | None = None,
    fold_spec: str | None = None,
) -> ProbeData:
    """ProbeData from in-memory features, (L, N, D) or a list of (N, D) layers, and the N
    manifest records they belong to (same order). Tasks and folds as for a cache; rows where
    `usable` is False are excluded and counted."""
    where = upstream
    feats = features if isinstance(features, np.ndarray) else stack_layers(features, where)
    if feats.ndim != 3:
        raise ProbeError(f"{where}: features must be (layers, utterances, dim), got {feats.shape}")
    records = list(records)
    if feats.shape[1] != len(records):
        raise ProbeError(
            f"{where}: {feats.shape[1]} feature rows for {len(records)} records; expected one "
            "row per record, in manifest order"
        )
    ok = np.ones(len(records), bool) if usable is None else np.asarray(usable, bool)
    sel = select(records, ok, task=task, fold_spec=fold_spec, where=where)
    layer_idx = resolve_layers(layers, feats.shape[0])
    data = np.ascontiguousarray(feats[layer_idx][:, sel.rows], dtype=np.float32)
    if not np.isfinite(data).all():
        raise ProbeError(f"{where}: NaN or Inf in the features of usable utterances")
    # in-memory features have no cache fingerprint: their digest stands in for it, so a
    # resumed sweep never reuses results computed from other features
    digest = hashlib.sha256(data.tobytes()).hexdigest()
    source = {"path": None, "fingerprint": f"arrays:{digest}", "n_layers": feats.shape[0],
              "dim": feats.shape[2], "n_utterances": len(records), "upstream": upstream}
    return from_selection(sel, dataset=dataset_name_of(records), upstream=upstream,
                          features=data, layers=layer_idx, sources=[source],
                          excluded=sel.excluded, where=where)
