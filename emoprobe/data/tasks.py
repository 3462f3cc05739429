"""Label views (tasks): raw corpus codes -> classes, and the utterances each view keeps.

Corpora declare their own tasks (emoprobe.data.corpora); users define more with a label map,
`{"ang": ["Angry", "A"], "neu": "N"}` (class -> raw codes), from a JSON file or a config
table. Codes outside a task are left out of it and counted, never silently relabelled.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emoprobe.errors import ManifestError, read_json_file


@dataclass(frozen=True)
class Task:
    """A named label view. Raw codes absent from `mapping` are not part of the task."""

    name: str
    classes: tuple[str, ...]
    mapping: Mapping[str, str] = field(hash=False)
    drop: tuple[str, ...] = ()  # codes left out on purpose (the rest are "unmapped")

    def __post_init__(self) -> None:
        bad = sorted(set(self.mapping.values()) - set(self.classes))
        if bad:
            raise ValueError(f"task {self.name!r} maps to undeclared classes {bad}")

    def left_out(self, labels: Sequence[str]) -> dict[str, dict[str, int]]:
        """Codes of `labels` outside the task, counted: {"dropped": {...}, "unmapped": {...}}
        (dropped: listed in `drop`; unmapped: neither mapped nor dropped)."""
        outside = Counter(str(v) for v in labels if str(v) not in self.mapping)
        dropped = {c: n for c, n in sorted(outside.items()) if c in self.drop}
        unmapped = {c: n for c, n in sorted(outside.items()) if c not in self.drop}
        return {"dropped": dropped, "unmapped": unmapped}

    def apply(self, labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Return (indices of kept utterances, class index of each kept utterance)."""
        class_index = {c: i for i, c in enumerate(self.classes)}
        keep, y = [], []
        for i, raw in enumerate(labels):
            cls = self.mapping.get(raw)
            if cls is not None:
                keep.append(i)
                y.append(class_index[cls])
        return np.asarray(keep, dtype=np.int64), np.asarray(y, dtype=np.int64)

    def to_dict(self) -> dict[str, Any]:
        d = {"name": self.name, "classes": list(self.classes), "mapping": dict(self.mapping)}
        if self.drop:
            d["drop"] = list(self.drop)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Task:
        return cls(d["name"], tuple(d["classes"]), dict(d["mapping"]), tuple(d.get("drop", ())))


def identity_task(labels: Sequence[str], name: str = "all") -> Task:
    """A task that keeps every raw label as its own class (sorted), for generic manifests."""
    classes = tuple(sorted(set(labels)))
    if not classes:
        raise ManifestError("cannot build a task from an empty label list")
    return Task(name, classes, {c: c for c in classes})


def label_map_task(
    classes: Mapping[str, Any], *, name: str = "custom", drop: Sequence[str] = (),
    where: str = "label map",
) -> Task:
    """A task from a label map, class -> raw code or list of raw codes (`{"ang": ["Angry",
    "A"], "neu": "N"}`); `drop` lists codes left out on purpose. A code given to two classes
    or both mapped and dropped, a class without codes and fewer than two classes are errors
    naming `where`."""
    if not isinstance(classes, Mapping) or not classes:
        raise ManifestError(
            f"{where}: expected a non-empty mapping of class -> raw code(s), e.g. "
            f'{{"ang": ["Angry", "A"], "neu": "N"}}, got {classes!r}'
        )
    mapping: dict[str, str] = {}
    for cls, codes in classes.items():
        if isinstance(codes, str):
            codes = [codes]
        if not isinstance(codes, Sequence) or not codes or not all(
                isinstance(c, str) and c for c in codes):
            raise ManifestError(
                f"{where}: class {cls!r} maps to {codes!r}; expected a raw label code or a "
                "non-empty list of them"
            )
        for code in codes:
            if code in mapping and mapping[code] != cls:
                raise ManifestError(
                    f"{where}: code {code!r} is given to two classes, {mapping[code]!r} and "
                    f"{cls!r}; each code may belong to one class only"
                )
            mapping[code] = str(cls)
    if len(classes) < 2:
        raise ManifestError(f"{where}: a task needs at least 2 classes, got {list(classes)}")
    if not isinstance(drop, (list, tuple)) or not all(isinstance(c, str) for c in drop):
        raise ManifestError(f"{where}: drop must be a list of raw label codes, got {drop!r}")
    both = sorted(set(drop) & set(mapping))
    if both:
        raise ManifestError(f"{where}: code(s) {both} are both mapped to a class and dropped")
    return Task(str(name), tuple(str(c) for c in classes), mapping, tuple(drop))


def read_label_map(path: str | Path, *, name: str | None = None) -> Task:
    """A task from a JSON label-map file (class -> raw code(s)); named `name`, else after the
    file. An optional top-level "drop" list names codes left out on purpose."""
    path = Path(path)
    if not path.exists():
        raise ManifestError(f"{path}: no such label-map file")
    data = read_json_file(path, ManifestError,
                          'a label map such as {"ang": ["Angry", "A"], "neu": "N"}')
    drop: Any = ()
    if isinstance(data, dict) and "drop" in data:
        data = dict(data)
        drop = data.pop("drop")
    return label_map_task(data, name=name or path.stem, drop=drop, where=str(path))


def user_task(
    task: str | Task | None, label_map: str | Path | Mapping[str, Any] | None
) -> str | Task | None:
    """What a probe's task options mean: without a label map, `task` as given (a corpus's
    task name or a Task); with one (a JSON file or a class -> codes mapping), the Task it
    defines, named `task` when given."""
    if label_map is None:
        return task
    if isinstance(task, Task):
        raise ManifestError("give a Task or a label map, not both")
    if isinstance(label_map, Mapping):
        classes = dict(label_map)
        drop = classes.pop("drop", ())
        return label_map_task(classes, name=task or "custom", drop=drop)
    return read_label_map(label_map, name=task)
