"""Per-label and per-fold counts of a loaded corpus, compared with the published ones.

A corpus that loads without error can still be wrong (a missing session, a label file read
twice, a label mapping off by one class), and counts are the cheapest check. A registered
corpus must match `CorpusSpec.expected` exactly; a difference is a CountMismatchError listing
every difference, or a list of warnings when the user passes a subset on purpose.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from emoprobe.data.corpora import CorpusSpec, Expected
from emoprobe.data.folds import _sort_key, fold_values
from emoprobe.data.manifest import SPLIT_VALUES
from emoprobe.errors import CountMismatchError


@dataclass(frozen=True)
class TaskCounts:
    """Counts of the utterances one task keeps: per class, per fold, per fold and class, and
    per raw code."""

    task: str
    classes: tuple[str, ...]
    total: int
    labels: dict[str, int]
    folds: dict[str, int]
    fold_labels: dict[str, dict[str, int]]
    raw_labels: dict[str, int]


@dataclass(frozen=True)
class CorpusCounts:
    """Counts of a whole loaded corpus: every raw code, and each task's view."""

    corpus: str
    fold_key: str
    n_records: int
    raw_labels: dict[str, int]
    tasks: dict[str, TaskCounts]


def _ordered_folds(values: set[str], fold_key: str) -> list[str]:
    if fold_key == "split":
        return [s for s in SPLIT_VALUES if s in values] + sorted(values - set(SPLIT_VALUES))
    return sorted(values, key=_sort_key)


def fold_name(fold_key: str, value: str) -> str:
    """How a fold is named in counts and reports: `session 3`, `fold 2`, `train`."""
    return value if fold_key == "split" else f"{fold_key} {value}"


def count_records(records: Sequence[Mapping[str, Any]], spec: CorpusSpec) -> CorpusCounts:
    """Count every raw code, and for each task of `spec` its classes per fold."""
    labels = [r["label"] for r in records]
    folds = fold_values(records, spec.fold_key)
    tasks = {}
    for name, task in spec.tasks.items():
        keep, y = task.apply(labels)
        fold_of = [folds[i] for i in keep]
        cls_of = [task.classes[j] for j in y]
        per_fold: dict[str, Counter[str]] = {
            f: Counter() for f in _ordered_folds(set(fold_of), spec.fold_key)
        }
        for f, c in zip(fold_of, cls_of):
            per_fold[f][c] += 1
        by_class = Counter(cls_of)
        tasks[name] = TaskCounts(
            task=name,
            classes=task.classes,
            total=len(keep),
            labels={c: by_class[c] for c in task.classes},
            folds={f: sum(c.values()) for f, c in per_fold.items()},
            fold_labels={f: {c: n[c] for c in task.classes} for f, n in per_fold.items()},
            raw_labels=dict(Counter(labels[i] for i in keep).most_common()),
        )
    return CorpusCounts(
        corpus=spec.name,
        fold_key=spec.fold_key,
        n_records=len(records),
        raw_labels=dict(Counter(labels).most_common()),
        tasks=tasks,
    )


def _differences(task: str, what: str, found: Mapping[str, int], published: Mapping[str, int],
                 keys: Sequence[str]) -> list[str]:
    return [
        f"{task}: {what}{k} {found.get(k, 0)} (published {published.get(k, 0)})"
        for k in keys
        if found.get(k, 0) != published.get(k, 0)
    ]


def _union(*keys: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(k for ks in keys for k in ks))


def compare_counts(counts: CorpusCounts, spec: CorpusSpec) -> list[str]:
    """Every difference between `counts` and the published counts of `spec`, one line each;
    an empty list when they agree or nothing is published."""
    out: list[str] = []
    for name, exp in spec.expected.items():
        tc = counts.tasks.get(name)
        if tc is None:
            continue
        if tc.total != exp.total:
            out.append(f"{name}: total {tc.total} (published {exp.total})")
        out += _task_differences(tc, exp, counts)
    return out


def _task_differences(tc: TaskCounts, exp: Expected, counts: CorpusCounts) -> list[str]:
    out: list[str] = []
    name, key = tc.task, counts.fold_key
    if exp.labels is not None:
        out += _differences(name, "class ", tc.labels, exp.labels, _union(tc.classes, exp.labels))
    if exp.folds is not None:
        for f in _union(exp.folds, tc.folds):
            if tc.folds.get(f, 0) != exp.folds.get(f, 0):
                out.append(
                    f"{name}: {fold_name(key, f)} total {tc.folds.get(f, 0)} "
                    f"(published {exp.folds.get(f, 0)})"
                )
    if exp.fold_labels is not None:
        for f in _union(exp.fold_labels, tc.fold_labels):
            out += _differences(
                name, f"{fold_name(key, f)} class ", tc.fold_labels.get(f, {}),
                exp.fold_labels.get(f, {}), tc.classes,
            )
    if exp.raw_labels is not None:
        out += _differences(name, "raw code ", counts.raw_labels, exp.raw_labels,
                            list(exp.raw_labels))
    return out


def format_counts(counts: CorpusCounts, spec: CorpusSpec) -> str:
    """A table per task: classes across, folds down, then the corpus-wide and published rows."""
    raw = ", ".join(f"{k} {v}" for k, v in counts.raw_labels.items())
    lines = [f"{counts.corpus}: {counts.n_records} utterances; raw labels: {raw}"]
    for name, tc in counts.tasks.items():
        exp = spec.expected.get(name)
        lines.append(
            f"task {name} ({spec.protocol}): {tc.total} utterances in "
            f"{len(tc.classes)} classes"
        )
        rows: list[tuple[str, list[int | None], int | None, int | None]] = []
        for f, per in tc.fold_labels.items():
            published = exp.folds.get(f) if exp is not None and exp.folds else None
            rows.append((fold_name(counts.fold_key, f), [per[c] for c in tc.classes],
                         tc.folds[f], published))
        rows.append(("all", [tc.labels[c] for c in tc.classes], tc.total,
                     exp.total if exp is not None else None))
        if exp is not None and exp.labels is not None:
            rows.append(("published", [exp.labels.get(c) for c in tc.classes], exp.total, None))
        width = max(8, *(len(r[0]) for r in rows)) + 2
        col = max(6, *(len(c) + 1 for c in tc.classes))
        header = "  " + "fold".ljust(width) + "".join(c.rjust(col) for c in tc.classes)
        lines.append(header + "total".rjust(8) + ("  published" if exp is not None else ""))
        for label, cells, total, published in rows:
            line = "  " + label.ljust(width) + "".join(
                ("-" if v is None else str(v)).rjust(col) for v in cells
            ) + str(total).rjust(8)
            if published is not None:
                line += str(published).rjust(11)
            lines.append(line)
    return "\n".join(lines)


def verify_counts(counts: CorpusCounts, spec: CorpusSpec, *, allow_subset: bool = False
                  ) -> list[str]:
    """Raise CountMismatchError listing every difference from the published counts, or,
    with `allow_subset`, return the differences as warnings."""
    diffs = compare_counts(counts, spec)
    if diffs and not allow_subset:
        raise CountMismatchError(
            f"{spec.name}: {len(diffs)} count(s) differ from the published ones:\n  "
            + "\n  ".join(diffs)
            + "\n(pass --allow-subset when preparing a part of the corpus on purpose)"
        )
    return diffs
