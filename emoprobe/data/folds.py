"""Evaluation folds from a manifest: leave-one-group-out, official splits, speaker k-fold."""

from __future__ import annotations

import re
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
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


LISTED = "folds"  # the record field of listed folds: {"1": "train", "2": "test", ...}


def fold_values(records: Sequence[Mapping[str, Any]], key: str) -> list[str]:
    """Every record's fold value as a string; a missing one is an error naming the record.
    For listed folds (`folds`), the fold(s) whose test part holds the record, or `-`."""
    out = []
    for r in records:
        v = r.get(key)
        if v is None or v == "":
            raise ManifestError(f"utterance {r['id']!r} has no {key!r} value to define folds")
        if key == LISTED and isinstance(v, dict):
            tested = sorted((f for f, part in v.items() if part == "test"), key=_sort_key)
            v = "+".join(tested) or "-"
        elif isinstance(v, (bool, float, list, dict)):
            raise ManifestError(f"utterance {r['id']!r} has {key} {v!r}; expected a string or "
                                "an integer to define folds")
        out.append(str(v))
    return out


def _split_folds(values: np.ndarray, where: str = "") -> list[Fold]:
    """The official train/validation/test split from per-record split values."""
    parts = {s: np.flatnonzero(values == s) for s in ("train", "validation", "test")}
    unknown = sorted(set(values) - set(parts))
    if unknown:
        raise ManifestError(f"{where}split values {unknown} are not train/validation/test")
    for s in ("train", "test"):
        if parts[s].size == 0:
            raise ManifestError(f"{where}the official split has no {s!r} utterances")
    val = parts["validation"] if parts["validation"].size else None
    return [Fold("official", parts["train"], parts["test"], val)]


def _leave_one_out(values: np.ndarray, key: str, where: str = "") -> list[Fold]:
    """One fold per distinct value: that value's records are the test part."""
    groups = sorted(set(values), key=_sort_key)
    if len(groups) < 2:
        raise ManifestError(
            f"{where}leave-one-{key}-out needs at least 2 {key} values, found {groups}"
        )
    return [Fold(f"{key}{g}", np.flatnonzero(values != g), np.flatnonzero(values == g))
            for g in groups]


def listed_folds(records: Sequence[Mapping[str, Any]]) -> list[Fold]:
    """Folds given as explicit lists: every record's `folds` maps fold names to the part
    (train, validation, test) it belongs to there; a record absent from a fold is not used
    in it."""
    parts_of = [r.get(LISTED) for r in records]
    missing = [r["id"] for r, p in zip(records, parts_of) if not p]
    if missing:
        raise ManifestError(
            f"listed folds need a {LISTED!r} object on every utterance; {len(missing)} lack "
            f"one, e.g. {missing[:5]}"
        )
    names = sorted({f for p in parts_of for f in p}, key=_sort_key)
    folds = []
    for name in names:
        idx = {part: np.asarray([i for i, p in enumerate(parts_of) if p.get(name) == part],
                                dtype=np.int64) for part in ("train", "validation", "test")}
        for part in ("train", "test"):
            if idx[part].size == 0:
                raise ManifestError(f"listed fold {name!r} has no {part!r} utterances")
        val = idx["validation"] if idx["validation"].size else None
        folds.append(Fold(f"fold{name}", idx["train"], idx["test"], val))
    return folds


def make_folds(records: Sequence[Mapping[str, Any]], spec: CorpusSpec) -> list[Fold]:
    """The corpus's standard folds over `records` (indices refer to `records`)."""
    if spec.fold_key == LISTED:
        return listed_folds(records)
    values = np.asarray(fold_values(records, spec.fold_key))
    if spec.fold_key == "split":
        return _split_folds(values)
    return _leave_one_out(values, spec.fold_key)


def speaker_kfold(
    records: Sequence[Mapping[str, Any]], k: int, seed: int = 0,
    labels: Sequence[str] | None = None,
) -> np.ndarray:
    """Fold number (1..k) of every record: speaker-independent, label-stratified k folds
    (scikit-learn's StratifiedGroupKFold over `speaker`, shuffled with `seed`). `labels`
    default to the records' raw labels."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ManifestError(f"speaker folds need an integer K of at least 2, got {k!r}")
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
    labels = [r["label"] for r in records] if labels is None else list(labels)
    from sklearn.model_selection import StratifiedGroupKFold  # lazy: keeps the CLI light

    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    fold_of = np.zeros(len(records), dtype=np.int64)
    with warnings.catch_warnings():
        # "The least populated class has only n members": the folds stay speaker-disjoint
        # and as stratified as the speakers allow.
        warnings.filterwarnings("ignore", message="The least populated class",
                                category=UserWarning)
        try:
            for i, (_, test) in enumerate(splitter.split(np.zeros(len(records)), labels,
                                                         speakers)):
                fold_of[test] = i + 1
        except ValueError:  # every class smaller than k (scikit-learn's own check)
            counts = dict(sorted(Counter(labels).items()))
            raise ManifestError(
                f"{k} label-stratified speaker folds need at least {k} utterances in some "
                f"class; the classes have {counts}: use fewer folds"
            ) from None
    return fold_of


def assign_speaker_folds(
    records: Sequence[dict[str, Any]], k: int, seed: int = 0
) -> list[dict[str, Any]]:
    """Set `fold` (1..k) on every record: speaker-independent, label-stratified k folds
    (sklearn's StratifiedGroupKFold, shuffled with `seed`, recorded as `fold_seed`)."""
    fold_of = speaker_kfold(records, k, seed)
    out = []
    for r, f in zip(records, fold_of):
        rec = dict(r)
        rec["fold"] = str(int(f))
        rec["fold_seed"] = seed
        out.append(rec)
    return out


# ----------------------------------------------------------------- fold protocols by spec


@dataclass(frozen=True)
class FoldProtocol:
    """Folds chosen for a probe: `name` says how they were made (recorded in protocol.json),
    `spec` is what the user gave (None: the corpus's own protocol), `details` what else
    identifies them (a fold file's path and digest, how its ids were matched)."""

    name: str
    folds: list[Fold]
    spec: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "spec": self.spec, **dict(self.details)}


KFOLD = re.compile(r"^kfold:(\d+)(?::(-?\d+))?$")


def resolve_folds(
    records: Sequence[Mapping[str, Any]],
    spec: str | None = None,
    *,
    corpus: CorpusSpec | None = None,
    labels: Sequence[str] | None = None,
) -> FoldProtocol:
    """The folds `spec` names over `records` (indices refer to `records`).

    - None: the corpus's own protocol (`corpus`, else the one the records declare);
    - `loso`: one fold per speaker;
    - `kfold:K[:SEED]`: K speaker-independent folds stratified by `labels` (default: the
      raw labels), shuffled with SEED (default 0);
    - a manifest field (`session`, `speaker`, `fold`, ...): one fold per value; `split`
      gives the official train/validation/test split;
    - a file or folder: a fold file (JSON `{id: fold}`, JSONL `{"id": .., "fold": ..}`) or
      EmoBox's fold files (the corpus folder with `fold_K/`, or one `*_test_fold_K.jsonl`).

    Errors (ManifestError) name the spec, the field or file and what was expected.
    """
    if spec is None or str(spec).strip() == "":
        if corpus is None:
            from emoprobe.data.corpora import corpus_for_records

            corpus = corpus_for_records(records)
        return FoldProtocol(corpus.protocol, make_folds(records, corpus))
    spec = str(spec).strip()
    where = f"--folds {spec}: "
    if spec == "loso":
        values = np.asarray(fold_values(records, "speaker"))
        return FoldProtocol("leave-one-speaker-out", _leave_one_out(values, "speaker", where),
                            spec)
    m = KFOLD.match(spec)
    if spec.startswith("kfold"):
        if not m:
            raise ManifestError(f"{where}expected kfold:K or kfold:K:SEED with integers, "
                                "e.g. kfold:5 or kfold:5:1")
        k, seed = int(m.group(1)), int(m.group(2) or 0)
        try:
            fold_of = speaker_kfold(records, k, seed, labels)
        except ManifestError as exc:
            raise ManifestError(f"{where}{exc}") from None
        folds = [Fold(f"fold{i}", np.flatnonzero(fold_of != i), np.flatnonzero(fold_of == i))
                 for i in range(1, k + 1)]
        return FoldProtocol(f"{k}-fold speaker-independent (seed {seed})", folds, spec,
                            {"k": k, "seed": seed})
    fields = sorted({key for r in records for key in r})
    if spec == LISTED and any(isinstance(r.get(LISTED), dict) for r in records):
        try:
            return FoldProtocol("listed-folds", listed_folds(records), spec)
        except ManifestError as exc:
            raise ManifestError(f"{where}{exc}") from None
    if any(spec in r for r in records):
        values = np.asarray(fold_values(records, spec))
        if spec == "split":
            return FoldProtocol("official-split", _split_folds(values, where), spec)
        return FoldProtocol(f"leave-one-{spec}-out", _leave_one_out(values, spec, where), spec)
    path = Path(spec).expanduser()
    if path.exists():
        from emoprobe.data.fold_files import read_fold_file

        got = read_fold_file(path, records)
        if got.values is not None:
            folds = folds_from_values(got.values, "fold", f"{path}: ")
        else:
            folds = [Fold(name, train, test) for name, train, test in got.parts or []]
        return FoldProtocol(got.name, folds, spec, got.details)
    raise ManifestError(
        f"{where}neither a manifest field nor an existing fold file; expected loso, "
        f"kfold:K[:SEED], a field of the records ({', '.join(fields)}) or the path of a fold "
        "file"
    )


def folds_from_values(values: Sequence[str], key: str, where: str = "") -> list[Fold]:
    """Folds from one value per record: train/validation/test values give the official
    split, any other values one fold per value (leave-one-out)."""
    arr = np.asarray([str(v) for v in values])
    if set(arr) <= {"train", "validation", "test"}:
        return _split_folds(arr, where)
    return _leave_one_out(arr, key, where)
