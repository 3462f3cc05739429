"""`emoprobe info --repair`: check a cache's structure and rows, list what is wrong, and mend
what can be mended without recomputing the good rows.

What is checked: the file is HDF5 and an emoprobe cache of a readable version; its attributes
decode; every dataset is present with consistent shapes; the ids match the manifest copy;
`done`, `failed` and the `complete` flag agree; usable rows are finite and (format 2) match
their checksums. Repairing clears the `done` flag of every damaged row (the next `extract`
recomputes those and keeps every other), clears a `complete` flag that claims too much, and
rebuilds attributes that can be derived from the datasets. A file whose structure is lost is
reported with the only way out: extract again with --overwrite.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from emoprobe.cache.lock import CacheLock
from emoprobe.cache.store import (
    _JSON_ATTRS,
    FORMAT_NAME,
    READABLE_VERSIONS,
    _run_info,
    row_checksums,
)
from emoprobe.system import fsync_path

PER_ROW = ("ids", "n_frames", "duration", "done", "failed", "failure_reason")
VERSION_2 = ("audio", "audio_hash", "checksum", "run_info", "complete")


@dataclass
class CacheCheck:
    """What `check_cache` found: problems (one line each), rows to extract again (id ->
    why), attributes that cannot be decoded, and whether the file is beyond repair."""

    path: Path
    problems: list[str] = field(default_factory=list)
    bad_rows: dict[str, str] = field(default_factory=dict)
    bad_attrs: list[str] = field(default_factory=list)
    clear_complete: bool = False
    fatal: bool = False
    repaired: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self) -> str:
        if self.ok:
            return f"{self.path}: no problem found"
        lines = [f"{self.path}: {len(self.problems)} problem(s)"]
        lines += [f"  {p}" for p in self.problems]
        if self.repaired:
            lines.append("repaired:")
            lines += [f"  {r}" for r in self.repaired]
        if self.fatal:
            lines.append("the cache cannot be repaired: extract again with --overwrite")
        elif self.bad_rows and self.repaired:
            lines.append(f"run the same extract command again to recompute the "
                         f"{len(self.bad_rows)} cleared row(s); every other row is kept")
        elif not self.repaired:
            lines.append(f"run `emoprobe info --repair {self.path}` to mend what can be mended")
        return "\n".join(lines)


def _attrs(f: h5py.File, check: CacheCheck) -> dict[str, Any]:
    try:
        json_names = set(json.loads(f.attrs.get(_JSON_ATTRS, "[]")))
    except (ValueError, TypeError):
        check.problems.append(f"attribute {_JSON_ATTRS} is damaged (not JSON)")
        check.bad_attrs.append(_JSON_ATTRS)
        json_names = set()
    meta: dict[str, Any] = {}
    for key, value in f.attrs.items():
        if key == _JSON_ATTRS:
            continue
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if key in json_names:
            try:
                value = json.loads(value)
            except (ValueError, TypeError):
                check.problems.append(f"attribute {key} is damaged (not JSON)")
                check.bad_attrs.append(key)
                continue
        meta[key] = value.item() if isinstance(value, np.generic) else value
    return meta


def check_cache(path: str | os.PathLike[str]) -> CacheCheck:
    """Check one cache file and list everything wrong with it (reads every row once)."""
    path = Path(path)
    check = CacheCheck(path)
    if not path.is_file():
        check.problems.append("no such cache file")
        check.fatal = True
        return check
    try:
        f = h5py.File(path, "r", locking=False)
    except OSError as exc:
        check.problems.append(f"not a readable HDF5 file ({exc})")
        check.fatal = True
        return check
    with f:
        meta = _attrs(f, check)
        kind, version = meta.get("format"), meta.get("format_version")
        if kind != FORMAT_NAME or version not in READABLE_VERSIONS:
            check.problems.append(f"not an emoprobe cache of a readable version (format "
                                  f"{kind!r}, version {version!r})")
            check.fatal = True
            return check
        version = int(meta["format_version"])
        wanted = ("pooled", "manifest", *PER_ROW, *(VERSION_2 if version >= 2 else ()))
        missing = [name for name in wanted if name not in f]
        if missing:
            check.problems.append(f"dataset(s) missing: {', '.join(missing)}")
            check.fatal = True
            return check
        n = f["ids"].shape[0]
        lengths = {name: f[name].shape[0] for name in (*PER_ROW, "audio") if name in f}
        lengths["pooled"] = f["pooled"].shape[1]
        if "checksum" in f:
            lengths["checksum"] = f["checksum"].shape[1]
        odd = {k: v for k, v in lengths.items() if v != n}
        if odd:
            check.problems.append(f"datasets of other lengths than ids ({n}): {odd}")
            check.fatal = True
            return check
        ids = [s.decode("utf-8", "replace") if isinstance(s, bytes) else str(s)
               for s in f["ids"][()]]
        try:
            text = f["manifest"][()]
            text = text.decode("utf-8") if isinstance(text, bytes) else str(text)
            manifest_ids = [str(json.loads(line).get("id")) for line in text.splitlines()
                            if line.strip()]
            if manifest_ids != ids:
                check.problems.append("the manifest copy does not list the cache's ids in order "
                                      "(probe with --manifest FILE)")
        except (ValueError, UnicodeDecodeError, AttributeError):
            check.problems.append("the manifest copy is damaged (probe with --manifest FILE)")
        done = f["done"][()].astype(bool)
        failed = f["failed"][()].astype(bool)
        for i in np.flatnonzero(failed & ~done):
            check.bad_rows[ids[i]] = "marked failed but not done"
        usable = np.flatnonzero(done & ~failed)
        sums = f.get("checksum")
        for layer in range(f["pooled"].shape[0]):
            values = f["pooled"][layer][usable]
            for i in usable[~np.isfinite(values).all(axis=1)]:
                check.bad_rows.setdefault(ids[i], f"NaN or Inf in layer {layer}")
            if sums is not None:
                bad = row_checksums(values) != sums[layer][usable]
                for i in usable[bad]:
                    check.bad_rows.setdefault(ids[i], f"checksum mismatch in layer {layer}")
        for utt, why in list(check.bad_rows.items())[:20]:
            check.problems.append(f"row {utt!r}: {why}")
        if len(check.bad_rows) > 20:
            check.problems.append(f"... and {len(check.bad_rows) - 20} more damaged row(s)")
        complete = bool(f["complete"][()]) if version >= 2 else bool(meta.get("complete"))
        if complete and (not done.all() or check.bad_rows):
            check.problems.append("marked complete, but not every row is done and sound")
            check.clear_complete = True
        if complete and version >= 2:
            try:
                if not _run_info(f).get("fingerprint"):
                    raise ValueError("no fingerprint")
            except (ValueError, UnicodeDecodeError):
                check.problems.append("marked complete, but its completion record is damaged")
                check.clear_complete = True
    return check


def _derived(f: h5py.File) -> dict[str, Any]:
    """Attributes that the datasets determine."""
    layers, n, dim = f["pooled"].shape
    return {"n_layers": int(layers), "dim": int(dim), "n_utterances": int(n)}


def repair_cache(path: str | os.PathLike[str]) -> CacheCheck:
    """Check a cache and mend it: damaged rows are cleared for re-extraction (the others are
    kept), a `complete` flag that claims too much is cleared, and damaged attributes are
    rebuilt from the datasets where they can be, or removed (then `extract` asks for
    --overwrite). Row flags are rewritten in place; attributes on a copy renamed over the
    file. Holds the cache's write lock."""
    path = Path(path)
    with CacheLock(path):
        check = check_cache(path)
        if check.fatal or check.ok:
            return check
        if check.bad_attrs:
            tmp = path.with_name(path.name + ".repair.tmp")
            shutil.copyfile(path, tmp)
            with h5py.File(tmp, "r+", locking=False) as f:
                derived = _derived(f)
                for key in check.bad_attrs:
                    del f.attrs[key]
                    if key in derived:
                        f.attrs[key] = derived[key]
                        check.repaired.append(f"attribute {key} rebuilt from the datasets")
                    else:
                        check.repaired.append(f"attribute {key} removed (its value is lost)")
                if _JSON_ATTRS in check.bad_attrs or _JSON_ATTRS not in f.attrs:
                    f.attrs[_JSON_ATTRS] = "[]"
            fsync_path(tmp)
            os.replace(tmp, path)
        with h5py.File(path, "r+", locking=False) as f:
            ids = {(s.decode("utf-8", "replace") if isinstance(s, bytes) else str(s)): i
                   for i, s in enumerate(f["ids"][()])}
            if check.bad_rows:
                idx = np.array(sorted(ids[u] for u in check.bad_rows), dtype=np.int64)
                if "complete" in f:
                    f["complete"][()] = 0
                f["done"][idx] = 0
                f["failed"][idx] = 0
                layers, _, dim = f["pooled"].shape
                f["pooled"][:, idx, :] = np.full((layers, idx.size, dim), np.nan, np.float32)
                check.repaired.append(f"{idx.size} damaged row(s) cleared for re-extraction")
            elif check.clear_complete and "complete" in f:
                f["complete"][()] = 0
                check.repaired.append("complete flag cleared; the next extract finishes it")
            f.flush()
    return check


__all__ = ["CacheCheck", "check_cache", "repair_cache"]
