"""Validation of a manifest before any work is spent on it.

`check_manifest` opens every audio header and reports, naming each item: missing files,
unreadable or corrupt audio, zero-length audio, duplicate ids, unknown label codes, folds
without utterances and classes absent from a training fold (for every task of the corpus).
`emoprobe prepare --check` runs it; later stages run it on a manifest before working on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from emoprobe.data.corpora import CorpusSpec, corpus_for_records
from emoprobe.data.folds import make_folds
from emoprobe.data.headers import MISSING, UNREADABLE, HeaderError, HeaderResult, read_headers
from emoprobe.errors import ManifestError

ZERO_LENGTH = "zero-length audio"
DUPLICATE_ID = "duplicate id"
UNKNOWN_LABEL = "unknown label"
NO_FOLDS = "no folds"
EMPTY_FOLD = "empty fold"
ABSENT_CLASS = "class absent from training"
KINDS = (MISSING, UNREADABLE, ZERO_LENGTH, DUPLICATE_ID, UNKNOWN_LABEL, NO_FOLDS, EMPTY_FOLD,
         ABSENT_CLASS)


@dataclass(frozen=True)
class Problem:
    """One finding: its kind (one of KINDS), the item it concerns (an utterance id, a fold)
    and what is wrong with it."""

    kind: str
    item: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.item}: {self.detail}"


@dataclass
class CheckReport:
    """Every problem found in a manifest; `ok` when there is none."""

    corpus: str
    n_records: int
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def by_kind(self) -> dict[str, list[Problem]]:
        """Problems grouped by kind, in the order of KINDS."""
        out: dict[str, list[Problem]] = {}
        for p in sorted(self.problems, key=lambda p: KINDS.index(p.kind)):
            out.setdefault(p.kind, []).append(p)
        return out

    def tally(self) -> str:
        """One line: how many problems of each kind."""
        return ", ".join(f"{len(v)} {k}" for k, v in self.by_kind().items()) or "no problems"

    def summary(self) -> str:
        """The whole report: a headline, then every problem grouped by kind."""
        lines = [f"check of {self.corpus}: {self.n_records} utterances, {self.tally()}"]
        for kind, problems in self.by_kind().items():
            lines.append(f"{kind} ({len(problems)}):")
            lines += [f"  {p.item}: {p.detail}" for p in problems]
        return "\n".join(lines)

    def raise_if_failed(self) -> None:
        """Raise ManifestError holding the summary when any problem was found."""
        if not self.ok:
            raise ManifestError(self.summary())


def _duplicates(records: Sequence[Mapping[str, Any]]) -> list[Problem]:
    first: dict[str, int] = {}
    out = []
    for i, r in enumerate(records):
        if r["id"] in first:
            out.append(Problem(DUPLICATE_ID, r["id"],
                               f"records {first[r['id']] + 1} and {i + 1} share this id"))
        else:
            first[r["id"]] = i
    return out


def _unknown_labels(records: Sequence[Mapping[str, Any]], spec: CorpusSpec) -> list[Problem]:
    if spec.label_codes is None:
        return []
    known = ", ".join(spec.label_codes)
    return [
        Problem(UNKNOWN_LABEL, r["id"], f"label {r['label']!r} is not a {spec.name} code "
                                        f"(known: {known})")
        for r in records
        if r["label"] not in spec.label_codes
    ]


def _audio(records: Sequence[Mapping[str, Any]], infos: Sequence[HeaderResult]) -> list[Problem]:
    out = []
    for r, info in zip(records, infos):
        if isinstance(info, HeaderError):
            out.append(Problem(info.kind, r["id"], info.message))
        elif info.frames == 0:
            out.append(Problem(ZERO_LENGTH, r["id"], f"{r['path']}: the audio holds no samples"))
    return out


def _folds(records: Sequence[Mapping[str, Any]], spec: CorpusSpec) -> list[Problem]:
    try:
        folds = make_folds(records, spec)
    except ManifestError as exc:
        return [Problem(NO_FOLDS, spec.name, str(exc))]
    labels = [r["label"] for r in records]
    out = []
    for name, task in spec.tasks.items():
        keep, y = task.apply(labels)
        cls = np.full(len(records), -1)
        cls[keep] = y
        for fold in folds:
            parts = {"train": fold.train, "test": fold.test}
            if fold.validation is not None:
                parts["validation"] = fold.validation
            elif spec.fold_key == "split" and "validation" in (
                    getattr(spec.expected.get(name), "folds", None) or {}):
                parts["validation"] = np.zeros(0, dtype=np.int64)  # published, but absent
            for part, idx in parts.items():
                if not (cls[idx] >= 0).any():
                    out.append(Problem(EMPTY_FOLD, fold.name,
                                       f"task {name}: no {part} utterances"))
            present = set(cls[fold.train].tolist())
            out += [
                Problem(ABSENT_CLASS, fold.name,
                        f"task {name}: class {c!r} has no training utterances")
                for j, c in enumerate(task.classes)
                if j not in present and (cls[fold.train] >= 0).any()
            ]
    return out


def check_manifest(
    records: Sequence[Mapping[str, Any]],
    spec: CorpusSpec | None = None,
    *,
    infos: Sequence[HeaderResult] | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> CheckReport:
    """Check `records` (of corpus `spec`, by default the one they declare) and report every
    problem. Audio headers are read here unless `infos` (from `read_headers` on the same
    records, moments ago) is given."""
    problems = _duplicates(records)
    if spec is None:
        try:
            spec = corpus_for_records(records)
        except ManifestError as exc:
            problems.append(Problem(NO_FOLDS, "manifest", str(exc)))
    if infos is None:
        infos = read_headers([r["path"] for r in records], workers=workers, progress=progress)
    problems += _audio(records, infos)
    if spec is not None:
        problems += _unknown_labels(records, spec)
        problems += _folds(records, spec)
    name = spec.name if spec is not None else str(records[0].get("corpus") if records else None)
    return CheckReport(name, len(records), problems)
