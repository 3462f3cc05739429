"""Evaluation folds from a manifest: leave-one-group-out, official splits, speaker k-fold."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from emoprobe.data.corpora import CorpusSpec
from emoprobe.errors import ManifestError


@dataclass(frozen=True)
class Fold:
    """Indices into the manifest's records. `validation` is None when the protocol has no
    validation part of its own; the probe then carves a speaker-disjoint one from `train`."""

    name: str
    train: np.ndarray
    test: np.ndarray
    validation: np.ndarray | None = None


def _sort_key(v: str) -> tuple[int, Any]:
    return (0, int(v)) if v.lstrip("-").isdigit() else (1, v)


def fold_values(records: Sequence[Mapping[str, Any]], key: str) -> list[str]:
    """Every record's fold value as a string; a missing one is an error naming the record."""
    out = []
    for r in records:
        v = r.get(key)
        if v is None or v == "":
            raise ManifestError(f"utterance {r['id']!r} has no {key!r} value to define folds")
        out.append(str(v))
    return out


def make_folds(records: Sequence[Mapping[str, Any]], spec: CorpusSpec) -> list[Fold]:
    """The corpus's standard folds over `records` (indices refer to `records`)."""
    values = np.asarray(fold_values(records, spec.fold_key))
    if spec.fold_key == "split":
        parts = {s: np.flatnonzero(values == s) for s in ("train", "validation", "test")}
        unknown = sorted(set(values) - set(parts))
        if unknown:
            raise ManifestError(f"split values {unknown} are not train/validation/test")
        for s in ("train", "test"):
            if parts[s].size == 0:
                raise ManifestError(f"the official split has no {s!r} utterances")
        val = parts["validation"] if parts["validation"].size else None
        return [Fold("official", parts["train"], parts["test"], val)]
    groups = sorted(set(values), key=_sort_key)
    if len(groups) < 2:
        raise ManifestError(
            f"leave-one-{spec.fold_key}-out needs at least 2 {spec.fold_key} values, found {groups}"
        )
    return [
        Fold(f"{spec.fold_key}{g}", np.flatnonzero(values != g), np.flatnonzero(values == g))
        for g in groups
    ]


def assign_speaker_folds(
    records: Sequence[dict[str, Any]], k: int, seed: int = 0
) -> list[dict[str, Any]]:
    """Set `fold` (1..k) on every record: speaker-independent, label-stratified k folds
    (sklearn's StratifiedGroupKFold, shuffled with `seed`, recorded as `fold_seed`)."""
    speakers = [r.get("speaker") for r in records]
    missing = [r["id"] for r, s in zip(records, speakers) if not s]
    if missing:
        raise ManifestError(
            f"speaker folds need a speaker for every utterance; {len(missing)} lack one, "
            f"e.g. {missing[:5]}"
        )
    n_speakers = len(set(speakers))
    if n_speakers < k:
        raise ManifestError(f"{k} speaker folds need at least {k} speakers, found {n_speakers}")
    labels = [r["label"] for r in records]
    from sklearn.model_selection import StratifiedGroupKFold  # lazy: keeps the CLI light

    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    fold_of = np.zeros(len(records), dtype=np.int64)
    for i, (_, test) in enumerate(splitter.split(np.zeros(len(records)), labels, speakers)):
        fold_of[test] = i + 1
    out = []
    for r, f in zip(records, fold_of):
        rec = dict(r)
        rec["fold"] = str(int(f))
        rec["fold_seed"] = seed
        out.append(rec)
    return out
