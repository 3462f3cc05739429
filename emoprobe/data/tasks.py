"""Label views (tasks): raw corpus codes -> classes, and the utterances each view keeps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from emoprobe.errors import ManifestError


@dataclass(frozen=True)
class Task:
    """A named label view. Raw codes absent from `mapping` are not part of the task."""

    name: str
    classes: tuple[str, ...]
    mapping: Mapping[str, str] = field(hash=False)

    def __post_init__(self) -> None:
        bad = sorted(set(self.mapping.values()) - set(self.classes))
        if bad:
            raise ValueError(f"task {self.name!r} maps to undeclared classes {bad}")

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
        return {"name": self.name, "classes": list(self.classes), "mapping": dict(self.mapping)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Task:
        return cls(d["name"], tuple(d["classes"]), dict(d["mapping"]))


def identity_task(labels: Sequence[str], name: str = "all") -> Task:
    """A task that keeps every raw label as its own class (sorted), for generic manifests."""
    classes = tuple(sorted(set(labels)))
    if not classes:
        raise ManifestError("cannot build a task from an empty label list")
    return Task(name, classes, {c: c for c in classes})
