"""Any corpus described by a JSONL or CSV/TSV manifest -> validated manifest records.

The file needs at least `id`, `path` and `label` (docs/manifest.md lists the other fields).
Relative paths resolve against `audio_root` or else the manifest file's folder. Folds come from
a `fold` or `session` column (leave-one-value-out), a `split` column (train/validation/test), or
are generated: `folds=K` makes K speaker-independent, label-stratified folds from `speaker`.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from emoprobe.data.corpora import CORPORA, corpus_for_records
from emoprobe.data.folds import assign_speaker_folds, fold_values
from emoprobe.data.headers import fill_audio_info
from emoprobe.data.manifest import REQUIRED_FIELDS, read_manifest, validate_rows
from emoprobe.errors import ManifestError, utf8_error

JSONL_SUFFIXES = (".jsonl", ".ndjson")
CSV_DELIMITERS = {".csv": ",", ".tsv": "\t"}
DEFAULT_NAMES = ("manifest.jsonl", "manifest.csv", "manifest.tsv")
_INT_FIELDS = ("sample_rate", "num_samples", "channels")
_FLOAT_FIELDS = ("duration",)


def find_manifest(path: str | Path) -> Path:
    """`path` itself, or the manifest.jsonl/.csv/.tsv inside it when it is a folder."""
    p = Path(path).expanduser()
    if p.is_dir():
        for name in DEFAULT_NAMES:
            if (p / name).is_file():
                return p / name
        raise ManifestError(f"{p}: folder holds none of {', '.join(DEFAULT_NAMES)}")
    if not p.is_file():
        raise ManifestError(f"{p}: no such manifest file")
    return p


def _csv_value(name: str, value: str, where: str) -> Any:
    value = value.strip()
    if value == "":
        return None
    try:
        if name in _INT_FIELDS:
            return int(value)
        if name in _FLOAT_FIELDS:
            return float(value)
    except ValueError:
        raise ManifestError(f"{where}: column {name!r} holds {value!r}, not a number") from None
    if name == "session" and value.isdigit():
        return int(value)
    return value


def iter_csv(path: str | Path, delimiter: str = ",") -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, record) for every CSV/TSV row; bad rows name file and line."""
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        try:
            header = [h.strip() for h in next(reader, [])]
            repeated = [h for h, n in Counter(header).items() if h and n > 1]
            if repeated:
                raise ManifestError(
                    f"{path}:1: column(s) {', '.join(repeated)} appear more than once in the "
                    "header; expected each column once (which one holds the data?)"
                )
            missing = [f for f in REQUIRED_FIELDS if f not in header]
            if missing:
                raise ManifestError(
                    f"{path}:1: header lacks column(s) {', '.join(missing)} (found: "
                    f"{', '.join(header) or 'nothing'}; required: {', '.join(REQUIRED_FIELDS)})"
                )
            for row in reader:
                where = f"{path}:{reader.line_num}"
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    raise ManifestError(
                        f"{where}: row has {len(row)} fields, the header has {len(header)}"
                    )
                yield reader.line_num, {
                    k: _csv_value(k, v, where) for k, v in zip(header, row) if k
                }
        except csv.Error as exc:
            raise ManifestError(f"{path}:{reader.line_num}: malformed CSV ({exc})") from None
        except UnicodeDecodeError:
            raise ManifestError(utf8_error(path, "CSV")) from None


def _default_name(path: Path, records: list[dict[str, Any]]) -> str:
    names = {r.get("corpus") for r in records}
    if len(names) == 1 and None not in names:
        return str(names.pop())
    return path.parent.name if path.stem == "manifest" else path.stem


def load_manifest_file(
    path: str | Path,
    *,
    name: str | None = None,
    audio_root: str | Path | None = None,
    folds: int | None = None,
    seed: int = 0,
    audio_info: bool = True,
    workers: int | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Records of a JSONL/CSV/TSV manifest (or a folder holding manifest.jsonl/.csv/.tsv),
    tagged with corpus `name` (default: their own `corpus` field, else the file's stem, or its
    folder's name for a file called manifest.*). `folds=K` replaces any folds with K
    speaker-independent ones shuffled by `seed`."""
    path = find_manifest(path).resolve()
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        records = read_manifest(path, audio_root=audio_root)
    elif suffix in CSV_DELIMITERS:
        base = Path(audio_root) if audio_root is not None else path.parent
        records = validate_rows(iter_csv(path, CSV_DELIMITERS[suffix]), path, base)
    else:
        raise ManifestError(
            f"{path}: unknown manifest format {suffix!r}; expected one of "
            f"{', '.join((*JSONL_SUFFIXES, *CSV_DELIMITERS))}"
        )
    corpus = name or _default_name(path, records)
    for rec in records:
        rec["corpus"] = corpus
    if folds is not None:
        records = assign_speaker_folds(records, folds, seed)
    elif corpus in CORPORA:
        fold_values(records, CORPORA[corpus].fold_key)  # names a record lacking its fold field
    else:
        corpus_for_records(records)  # fails with a hint when no column defines folds
    if audio_info:
        fill_audio_info(records, workers=workers, progress=progress)
    return records
