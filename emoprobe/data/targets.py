"""Dimensional targets: a numeric manifest field probed by regression (task kind `regression`).

IEMOCAP and MSP-IMPROV declare `valence`, `arousal` and `dominance`, EmotionTalk `continuous`
(the mean of its annotators' continuous labels); any numeric field of any manifest is a
regression task of the same name (`--task FIELD`). Utterances without a value (null, missing,
NaN) are left out and counted; a value that is not a number is an error naming the utterance.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from emoprobe.errors import ManifestError

REGRESSION = "regression"
# Quantile bins of a target that speaker-disjoint carvings and k-fold splits keep balanced
# (as they keep the class mix of a categorical task).
N_STRATA = 4


def numeric_value(value: Any, where: str) -> float | None:
    """A rating as a float; None for null, empty or NaN; anything else is a ManifestError."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ManifestError(f"{where}: {value!r} is a boolean, expected a number or null")
    if isinstance(value, (int, float)):
        x = float(value)
    elif isinstance(value, str):
        try:
            x = float(value)
        except ValueError:
            raise ManifestError(f"{where}: {value!r} is not a number; expected a number or "
                                "null") from None
    else:
        raise ManifestError(f"{where}: {value!r} is a {type(value).__name__}, expected a "
                            "number or null")
    if math.isinf(x):
        raise ManifestError(f"{where}: {value!r} is infinite, expected a finite number")
    return None if math.isnan(x) else x


@dataclass(frozen=True)
class RegressionTask:
    """A numeric record field as a probing target. `classes` is empty: there are none."""

    name: str
    field: str
    kind: str = REGRESSION
    classes: tuple[str, ...] = ()

    def values(self, records: Sequence[Mapping[str, Any]],
               where: str = "manifest") -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(indices of records with a value, their values as float64, ids without one)."""
        keep, y, missing = [], [], []
        for i, r in enumerate(records):
            v = numeric_value(r.get(self.field),
                              f"{where}: utterance {r.get('id')!r} field {self.field!r}")
            if v is None:
                missing.append(str(r.get("id")))
            else:
                keep.append(i)
                y.append(v)
        return np.asarray(keep, dtype=np.int64), np.asarray(y, dtype=np.float64), missing

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "field": self.field}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RegressionTask:
        return cls(str(d["name"]), str(d["field"]))


def regression_task(targets: Mapping[str, str], name: str | None,
                    records: Sequence[Mapping[str, Any]]) -> RegressionTask | None:
    """The regression task `name`: a corpus's declared target (`targets`: task -> field), or
    any field the records carry with at least one numeric value; None when it is neither."""
    if name is None:
        return None
    if name in targets:
        return RegressionTask(name, targets[name])
    for r in records:
        v = r.get(name)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return RegressionTask(name, name)
    return None


def mean_rating(values: Sequence[Any]) -> float | None:
    """The mean of the numeric values among `values` (None when there are none)."""
    nums = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(float(v))]
    return sum(nums) / len(nums) if nums else None


def target_strata(y: np.ndarray, n_bins: int = N_STRATA) -> np.ndarray:
    """Quantile bin (0..n_bins-1) of each target value, for stratified splits."""
    edges = np.quantile(np.asarray(y, dtype=np.float64), np.linspace(0, 1, n_bins + 1)[1:-1])
    return np.searchsorted(edges, y, side="right").astype(np.int64)
