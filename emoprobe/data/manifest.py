"""The manifest: one JSON record per utterance, the contract between the stages.

See docs/manifest.md for the schema. Records are plain dicts so that extra corpus-specific
fields travel unchanged; `validate_record` enforces the required fields and their types.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from emoprobe.errors import ManifestError, utf8_error
from emoprobe.system import atomic_open

REQUIRED_FIELDS = ("id", "path", "label")
OPTIONAL_FIELDS = (
    "sentence",
    "speaker",
    "gender",
    "session",
    "split",
    "fold",
    "folds",
    "class",
    "duration",
    "sample_rate",
    "num_samples",
    "channels",
    "corpus",
)
SPLIT_VALUES = ("train", "validation", "test")
TAR_SEPARATOR = "::"

_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "id": (str,),
    "path": (str,),
    "label": (str,),
    "sentence": (str, type(None)),
    "speaker": (str, type(None)),
    "gender": (str, type(None)),
    "session": (str, int, type(None)),
    "split": (str, type(None)),
    "fold": (str, int, type(None)),
    "folds": (dict, type(None)),
    "class": (str, type(None)),
    "duration": (float, int, type(None)),
    "sample_rate": (int, type(None)),
    "num_samples": (int, type(None)),
    "channels": (int, type(None)),
    "corpus": (str, type(None)),
}


def validate_record(record: Any, where: str) -> dict[str, Any]:
    """Check one record's required fields and field types; `where` names file and line."""
    if not isinstance(record, dict):
        raise ManifestError(f"{where}: expected a JSON object, found {type(record).__name__}")
    missing = [f for f in REQUIRED_FIELDS if record.get(f) in (None, "")]
    if missing:
        raise ManifestError(
            f"{where}: record {record.get('id', '<no id>')!r} lacks required field(s) "
            f"{', '.join(missing)} (required: {', '.join(REQUIRED_FIELDS)})"
        )
    for name, types in _FIELD_TYPES.items():
        # bool is an int in Python, but `true` is never a fold, a session or a count
        if name in record and (not isinstance(record[name], types)
                               or isinstance(record[name], bool)):
            wanted = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise ManifestError(
                f"{where}: record {record['id']!r} field {name!r} is "
                f"{type(record[name]).__name__} {record[name]!r}, expected {wanted}"
            )
    if record.get("split") not in (None, *SPLIT_VALUES):
        raise ManifestError(
            f"{where}: record {record['id']!r} split {record['split']!r} is not one of "
            f"{', '.join(SPLIT_VALUES)}"
        )
    parts = record.get("folds")
    if parts is not None:
        bad = {k: v for k, v in parts.items() if v not in SPLIT_VALUES}
        if bad or not parts:
            raise ManifestError(
                f"{where}: record {record['id']!r} field 'folds' is {parts!r}; expected an "
                f"object mapping fold names to one of {', '.join(SPLIT_VALUES)}"
            )
    duration = record.get("duration")
    if duration is not None and (not math.isfinite(duration) or duration < 0):
        raise ManifestError(f"{where}: record {record['id']!r} has duration {duration!r}")
    for name in ("sample_rate", "num_samples", "channels"):
        value = record.get(name)
        if isinstance(value, bool) or (value is not None and value < 0):
            raise ManifestError(f"{where}: record {record['id']!r} has {name} {value!r}, "
                                "expected a non-negative integer")
    return record


def split_tar_path(path: str) -> tuple[str, str | None]:
    """Split `archive.tar::member/name.wav` into (archive, member); plain paths give None."""
    if TAR_SEPARATOR in path:
        archive, member = path.split(TAR_SEPARATOR, 1)
        return archive, member
    return path, None


def resolve_path(path: str, base: str | os.PathLike[str] | None) -> str:
    """Make a record path absolute against `base`, keeping any `::member` suffix."""
    file_part, member = split_tar_path(path)
    p = os.path.expanduser(file_part)  # os.path, not pathlib: called once per record
    if not os.path.isabs(p) and base is not None:
        p = os.path.join(os.fspath(base), p)
    resolved = os.path.abspath(p)
    return resolved if member is None else f"{resolved}{TAR_SEPARATOR}{member}"


def iter_jsonl(path: str | os.PathLike[str]) -> Iterator[tuple[int, Any]]:
    """Yield (line number, parsed object) for every non-blank line, naming bad lines."""
    with open(path, encoding="utf-8") as fh:
        try:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    yield lineno, json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ManifestError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
        except UnicodeDecodeError:
            raise ManifestError(utf8_error(path, "JSON lines")) from None


def read_manifest(
    path: str | os.PathLike[str], *, audio_root: str | os.PathLike[str] | None = None
) -> list[dict[str, Any]]:
    """Read and validate a JSONL manifest; relative audio paths resolve against `audio_root`
    or, by default, the manifest's own folder. Duplicate ids are an error."""
    base = Path(audio_root) if audio_root is not None else Path(path).resolve().parent
    return validate_rows(iter_jsonl(path), path, base)


def validate_rows(
    rows: Iterable[tuple[int, Any]],
    path: str | os.PathLike[str],
    base: str | os.PathLike[str] | None,
) -> list[dict[str, Any]]:
    """Validate (line number, record) pairs read from `path` (any format), reject duplicate
    ids and empty manifests, and resolve relative audio paths against `base`."""
    records: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for lineno, obj in rows:
        where = f"{path}:{lineno}"
        rec = validate_record(obj, where)
        if rec["id"] in seen:
            raise ManifestError(
                f"{where}: duplicate id {rec['id']!r} (first seen on line {seen[rec['id']]})"
            )
        seen[rec["id"]] = lineno
        rec["path"] = resolve_path(rec["path"], base)
        records.append(rec)
    if not records:
        raise ManifestError(f"{path}: the manifest holds no records")
    return records


def write_manifest(records: Iterable[dict[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Write records as JSONL atomically (temp file + rename) and return the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(out) as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return out


def dumps_records(records: Iterable[dict[str, Any]]) -> str:
    """Serialise records to JSONL text (used to embed a manifest copy in a cache)."""
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records)


def loads_records(text: str) -> list[dict[str, Any]]:
    """Parse JSONL text written by `dumps_records`."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]
