"""Fusion probes: one probe on the concatenation of a chosen layer of several caches of the
same corpus (e.g. a speech model and a text model over the same utterances).

The caches are joined by utterance id; ids that one cache lacks (not extracted, failed, or
absent from its manifest) are left out and counted per cache. The concatenated vector goes
through the usual probe: standardised per dimension on the fitting rows, so each part is
standardised on the fitting rows as it would be alone. By default each cache contributes
its layer chosen on validation (the leaderboard's choice: best mean validation UAR, or CCC
for a regression task); `A.h5:LAYER` fixes the layer. The result is one more upstream,
named `A+B`, whose `layer` is the parts' layers joined the same way (`7+0`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from emoprobe.data.folds import Fold
from emoprobe.errors import ProbeError
from emoprobe.probe.dataset import ProbeData, _rows_of, _Shape

JOIN = "+"


def parse_part(spec: str) -> tuple[str, int | None]:
    """`A.h5` -> (A.h5, None); `A.h5:LAYER` -> (A.h5, LAYER) (negative counts from the end)."""
    path, sep, tail = str(spec).rpartition(":")
    if sep and path and re.fullmatch(r"\s*-?\d+\s*", tail):
        return path, int(tail)
    return str(spec), None


def fuse(parts: Sequence[ProbeData], *, read: bool = True) -> ProbeData:
    """One dataset whose single layer is the concatenation of each part's single probed
    layer, over the ids every part has (in the first part's order), with the first part's
    folds and speakers. Parts must be one corpus and task with the same labels."""
    if len(parts) < 2:
        raise ProbeError(f"fusion needs at least two caches, got {len(parts)}")
    base = parts[0]
    names = [p.upstream for p in parts]
    for p in parts:
        if len(p.layers) != 1:
            raise ProbeError(f"fusion: {p.key} has {len(p.layers)} layers; expected one")
        if (p.dataset, p.task.to_dict()) != (base.dataset, base.task.to_dict()):
            raise ProbeError(
                f"fusion needs caches of one corpus and task; {base.key} and {p.key} differ"
            )
    id_sets = [set(p.ids) for p in parts]
    common = [u for u in base.ids if all(u in s for s in id_sets[1:])]
    if not common:
        raise ProbeError(f"fusion {JOIN.join(names)}: the caches share no usable utterance id")
    union = set().union(*id_sets)
    missing = {name: sorted(union - s) for name, s in zip(names, id_sets)}
    rows = []
    for p in parts:
        pos = {u: k for k, u in enumerate(p.ids)}
        rows.append(np.asarray([pos[u] for u in common], dtype=np.int64))
    y = base.y[rows[0]]
    for p, r in zip(parts[1:], rows[1:]):
        bad = np.flatnonzero(p.y[r] != y)
        if len(bad):
            raise ProbeError(
                f"fusion: {base.key} and {p.key} disagree on the target of utterance "
                f"{common[bad[0]]!r} ({len(bad)} utterance(s) in all); expected caches of the "
                "same manifest"
            )
    dims = [int(p.features.shape[2]) for p in parts]
    if read:
        features: Any = np.concatenate(
            [_rows_of(p.features, slice(0, 1), r)[0][0].astype(np.float32, copy=False)
             for p, r in zip(parts, rows)],
            axis=1)[None]
    else:
        features = _Shape((1, len(common), sum(dims)))
    new_of = np.full(len(base.ids), -1, dtype=np.int64)
    new_of[rows[0]] = np.arange(len(common))

    def remap(idx: np.ndarray | None) -> np.ndarray | None:
        if idx is None:
            return None
        m = new_of[np.asarray(idx, dtype=np.int64)]
        return m[m >= 0]

    folds = [Fold(f.name, remap(f.train), remap(f.test), remap(f.validation))  # type: ignore[arg-type]
             for f in base.folds]
    layer = JOIN.join(str(p.layers[0]) for p in parts)
    sources = [{**s, "fused_layer": p.layers[0], "fused_dim": d}
               for p, d in zip(parts, dims) for s in p.sources]
    excluded = {
        "parts": {p.upstream: p.excluded for p in parts},
        "missing_from": missing,
        "n_missing_from": {k: len(v) for k, v in missing.items()},
        "n_not_in_every_cache": len(union) - len(common),
    }
    return ProbeData(
        dataset=base.dataset,
        upstream=JOIN.join(names),
        task=base.task,
        classes=list(base.classes),
        features=features,
        layers=[layer],  # type: ignore[list-item]
        y=y,
        ids=common,
        groups=None if base.groups is None else base.groups[rows[0]],
        group_key=base.group_key,
        folds=folds,
        protocol=base.protocol,
        sources=sources,
        excluded=excluded,
        fold_protocol=dict(base.fold_protocol),
        sentences=None if base.sentences is None else [base.sentences[i] for i in rows[0]],
    )

