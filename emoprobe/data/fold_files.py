"""Fold files: folds given as a file, read against a manifest's records.

Accepted forms (a path given to `--folds`):

- JSON object `{"<id>": <fold>, ...}`, or JSON list / JSONL of objects with an id (`id` or
  EmoBox's `key`) and a fold (`fold`, else `split`). Fold values train/validation/test give
  an official split; any other values one test fold per value.
- EmoBox's published folds as they are: the corpus folder holding `fold_<k>/` with
  `<corpus>_train_fold_<k>.jsonl` and `<corpus>_test_fold_<k>.jsonl` (every fold), or one
  of those files (that fold alone; its twin is read from the same folder).

Entries are matched to records by id; EmoBox keys (`<dataset>-<id>`) also match the id
without that prefix, or with `<dataset>_`, and else the audio file name (`wav`/`path`) when
the manifest's file names are unique. Every record must get a fold (missing ids are an
error listing them); entries matching no record are ignored and counted.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

import numpy as np

from emoprobe.errors import ManifestError

EMOBOX_FILE = re.compile(r"^(?P<corpus>.+)_(?P<part>train|test)_fold_(?P<k>\d+)\.jsonl?$")


def _stem(path: str) -> str:
    return PurePosixPath(str(path).replace("\\", "/").split("::")[-1]).stem


class IdMatcher:
    """Finds the record an entry of a fold file names, and counts how each was found."""

    def __init__(self, records: Sequence[Mapping[str, Any]]) -> None:
        self.index = {str(r["id"]): i for i, r in enumerate(records)}
        stems = Counter(_stem(r.get("path", "")) for r in records)
        self.by_stem = {_stem(r.get("path", "")): i for i, r in enumerate(records)
                        if stems[_stem(r.get("path", ""))] == 1}
        self.how: Counter[str] = Counter()

    def find(self, key: str, entry: Mapping[str, Any] | None = None) -> int | None:
        if key in self.index:
            self.how["id"] += 1
            return self.index[key]
        dataset = str((entry or {}).get("dataset") or "")
        if not dataset and "-" in key:
            dataset = key.split("-", 1)[0]
        if dataset and key.startswith(dataset + "-"):
            rest = key[len(dataset) + 1:]
            for cand in (rest, f"{dataset}_{rest}"):
                if cand in self.index:
                    self.how["id without the dataset prefix"] += 1
                    return self.index[cand]
        audio = (entry or {}).get("wav") or (entry or {}).get("path")
        if audio and _stem(str(audio)) in self.by_stem:
            self.how["audio file name"] += 1
            return self.by_stem[_stem(str(audio))]
        return None


def _entries(path: Path) -> list[tuple[str, Mapping[str, Any], Any]]:
    """(id, entry, fold value or None) for every entry of a JSON or JSONL fold file."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: not UTF-8 text (byte {exc.start}); expected a JSON or "
                            "JSONL fold file") from None
    try:
        data: Any = json.loads(text)
        rows = [(1, data)] if not isinstance(data, list) else list(enumerate(data, 1))
        if isinstance(data, dict) and not ({"id", "key"} & set(data)):
            out = []
            for key, value in data.items():
                out.append((str(key), {}, _fold_value(value, f"{path}: id {key!r}")))
            return out
    except json.JSONDecodeError:
        rows = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append((lineno, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise ManifestError(f"{path}:{lineno}: not valid JSON ({exc.msg}); expected a "
                                    "JSON object per line with an id and a fold") from None
    out = []
    for lineno, obj in rows:
        where = f"{path}:{lineno}"
        if not isinstance(obj, dict):
            raise ManifestError(f"{where}: expected a JSON object, found "
                                f"{type(obj).__name__}")
        key = obj.get("id", obj.get("key"))
        if not isinstance(key, str) or not key:
            raise ManifestError(f"{where}: no `id` (or `key`) string naming the utterance")
        value = obj.get("fold", obj.get("split"))
        out.append((key, obj, None if value is None else _fold_value(value, where)))
    return out


def _fold_value(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise ManifestError(f"{where}: fold {value!r}; expected a fold name or number (a string "
                            "or an integer)")
    return str(value)


def _digest(paths: Sequence[Path]) -> str:
    """SHA-256 of one file's bytes (as `sha256sum` prints it), or of several files' names
    and bytes."""
    if len(paths) == 1:
        return hashlib.sha256(paths[0].read_bytes()).hexdigest()
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def _missing(records: Sequence[Mapping[str, Any]], have: np.ndarray, what: str) -> None:
    if not have.all():
        ids = [str(records[i]["id"]) for i in np.flatnonzero(~have)]
        raise ManifestError(
            f"{what} gives no fold for {len(ids)} of the {len(records)} utterance(s) probed, "
            f"e.g. {ids[:5]}; expected every utterance of the manifest (in the task) to be "
            "listed"
        )


def _emobox_pairs(path: Path) -> list[tuple[str, Path, Path]]:
    """(fold name, train file, test file) of EmoBox's layout at `path` (folder or file)."""
    if path.is_file():
        m = EMOBOX_FILE.match(path.name)
        if not m:
            return []
        folder, corpus, k = path.parent, m.group("corpus"), m.group("k")
        pairs = [(k, folder / f"{corpus}_train_fold_{k}.jsonl",
                  folder / f"{corpus}_test_fold_{k}.jsonl")]
    else:
        pairs = []
        for sub in sorted(path.glob("fold_*"), key=lambda p: (len(p.name), p.name)):
            k = sub.name[len("fold_"):]
            tests = sorted(sub.glob(f"*_test_fold_{k}.jsonl"))
            if len(tests) != 1:
                continue
            corpus = tests[0].name[: -len(f"_test_fold_{k}.jsonl")]
            pairs.append((k, sub / f"{corpus}_train_fold_{k}.jsonl", tests[0]))
    for _, train, test in pairs:
        for f in (train, test):
            if not f.is_file():
                raise ManifestError(f"{path}: EmoBox fold files come in pairs; {f} is missing")
    return [(f"fold{k}", train, test) for k, train, test in pairs]


class FoldFile(NamedTuple):
    """What a fold file gives a manifest's records: either one fold value per record
    (`values`) or explicit (name, train indices, test indices) folds (`parts`)."""

    name: str
    values: list[str] | None
    parts: list[tuple[str, np.ndarray, np.ndarray]] | None
    details: dict[str, Any]


def read_fold_file(path: Path, records: Sequence[Mapping[str, Any]]) -> FoldFile:
    """What a fold file (or EmoBox fold folder) gives `records`; see the module doc."""
    matcher = IdMatcher(records)
    pairs = _emobox_pairs(path)
    if pairs:
        parts, ignored = [], 0
        for name, train_file, test_file in pairs:
            part = np.full(len(records), -1)
            for code, f in ((0, train_file), (1, test_file)):
                for key, entry, _ in _entries(f):
                    i = matcher.find(key, entry)
                    if i is None:
                        ignored += 1
                    elif part[i] not in (-1, code):
                        raise ManifestError(f"{f}: utterance {key!r} is in both the train and "
                                            f"the test part of {name}")
                    else:
                        part[i] = code
            _missing(records, part >= 0, f"{test_file.parent}")
            parts.append((name, np.flatnonzero(part == 0), np.flatnonzero(part == 1)))
        files = [f for _, a, b in pairs for f in (a, b)]
        details = {"file": str(path.resolve()), "format": "emobox", "sha256": _digest(files),
                   "matched_by": dict(matcher.how), "ignored_entries": ignored}
        return FoldFile(f"fold file {path.name} (EmoBox, {len(parts)} fold(s))", None, parts,
                        details)
    if path.is_dir():
        raise ManifestError(f"{path}: a folder but not EmoBox's layout (fold_<k>/ holding "
                            "<corpus>_train_fold_<k>.jsonl and <corpus>_test_fold_<k>.jsonl)")
    value = np.full(len(records), None, dtype=object)
    ignored = 0
    for key, entry, fold in _entries(path):
        if fold is None:
            raise ManifestError(f"{path}: utterance {key!r} has no `fold` (or `split`); "
                                "expected an id -> fold mapping")
        i = matcher.find(key, entry)
        if i is None:
            ignored += 1
        elif value[i] is not None and value[i] != fold:
            raise ManifestError(f"{path}: utterance {key!r} is given two folds, {value[i]!r} "
                                f"and {fold!r}")
        else:
            value[i] = fold
    _missing(records, np.asarray([v is not None for v in value], bool), str(path))
    details = {"file": str(path.resolve()), "format": "id -> fold", "sha256": _digest([path]),
               "matched_by": dict(matcher.how), "ignored_entries": ignored}
    return FoldFile(f"fold file {path.name}", [str(v) for v in value], None, details)
