"""The feature cache: an HDF5 file of mean-pooled embeddings, one row per layer and utterance.

Format v1 is specified in docs/cache-format.md. In short: `pooled` float32 (layer, utterance,
dim) stored contiguously, so one layer of every utterance is a single sequential read; `ids`,
`n_frames`, `duration`, `done`, `failed`, `failure_reason` per utterance in manifest order; the
manifest itself as JSONL text; metadata as attributes; a `complete` attribute set last.

Crash safety comes from the layout. Every dataset has a fixed shape and is allocated when the
file is created, and the file is created under a temporary name and renamed into place. After
that, extraction only overwrites raw bytes at fixed offsets (data rows, then the done mask, each
followed by a flush), so a process killed at any instant leaves HDF5's own structures untouched
and every row marked done valid. All structural changes (frame datasets, the `complete` flag)
are made on a copy that atomically replaces the file.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from emoprobe import __version__
from emoprobe.cache.fingerprint import compute_fingerprint
from emoprobe.data.manifest import dumps_records, loads_records
from emoprobe.errors import CacheError

FORMAT_NAME = "emoprobe-cache"
FORMAT_VERSION = 1
CACHE_SUFFIX = ".h5"
FAILURE_REASON_BYTES = 512
LAYER_CONVENTION = (
    "0 = embedding output before the first transformer block; i = output of transformer block i"
)
_JSON_ATTRS = "_json_attrs"
_STR = h5py.string_dtype("utf-8")

PathLike = str | os.PathLike[str]


# --------------------------------------------------------------------------------- attributes


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _set_attrs(obj: h5py.HLObject, meta: Mapping[str, Any]) -> None:
    """Store `meta` as attributes; dicts, lists and None go in as JSON and are listed by name."""
    json_names = set(json.loads(obj.attrs.get(_JSON_ATTRS, "[]")))
    for key, value in meta.items():
        if isinstance(value, (dict, list, tuple)) or value is None:
            obj.attrs[key] = json.dumps(value, sort_keys=True, default=str)
            json_names.add(key)
        else:
            if isinstance(value, Path):
                value = str(value)
            obj.attrs[key] = value
            json_names.discard(key)
    obj.attrs[_JSON_ATTRS] = json.dumps(sorted(json_names))


def _get_attrs(obj: h5py.HLObject) -> dict[str, Any]:
    json_names = set(json.loads(obj.attrs.get(_JSON_ATTRS, "[]")))
    meta: dict[str, Any] = {}
    for key, value in obj.attrs.items():
        if key == _JSON_ATTRS:
            continue
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        if key in json_names:
            value = json.loads(value)
        elif isinstance(value, np.generic):
            value = value.item()
        meta[key] = value
    return meta


def frame_dataset_name(utt_id: str) -> str:
    """HDF5-safe dataset name for an utterance id ('%' and '/' are percent-escaped)."""
    name = utt_id.replace("%", "%25").replace("/", "%2F")
    return "%2E" if name == "." else name


def _encode_reason(reason: str) -> bytes:
    raw = reason.encode("utf-8")
    if len(raw) <= FAILURE_REASON_BYTES:
        return raw
    return raw[: FAILURE_REASON_BYTES - 3].decode("utf-8", "ignore").encode("utf-8") + b"..."


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    # some filesystems refuse fsync on directories; the rename has happened anyway
    with contextlib.suppress(OSError):
        _fsync(path)


# ----------------------------------------------------------------------------------- creation


def _base_meta(records: Sequence[Mapping[str, Any]], n_layers: int, dim: int) -> dict[str, Any]:
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "emoprobe_version": __version__,
        "created": _now(),
        "n_layers": int(n_layers),
        "dim": int(dim),
        "n_utterances": len(records),
        "layer_convention": LAYER_CONVENTION,
        "complete": False,
    }


def _check_records(records: Sequence[Mapping[str, Any]]) -> list[str]:
    if not records:
        raise CacheError("a cache needs at least one manifest record")
    ids = [str(r["id"]) for r in records]
    seen: set[str] = set()
    for utt in ids:
        if utt in seen:
            raise CacheError(f"duplicate utterance id {utt!r} in the records given to the cache")
        seen.add(utt)
    return ids


def _create_layout(
    f: h5py.File, records: Sequence[Mapping[str, Any]], n_layers: int, dim: int
) -> None:
    """All datasets at their final shape, allocated now (no structural change later)."""
    n = len(records)
    early = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    early.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)

    def fixed(name: str, shape: tuple[int, ...], dtype: Any, fill: Any) -> None:
        f.create_dataset(name, shape=shape, dtype=dtype, fillvalue=fill, dcpl=early.copy())

    fixed("pooled", (n_layers, n, dim), np.float32, np.float32("nan"))
    fixed("n_frames", (n,), np.int64, 0)
    fixed("duration", (n,), np.float64, 0.0)
    fixed("done", (n,), np.uint8, 0)
    fixed("failed", (n,), np.uint8, 0)
    fixed("failure_reason", (n,), f"S{FAILURE_REASON_BYTES}", b"")
    f.create_dataset("ids", data=np.array([str(r["id"]) for r in records], dtype=object),
                     dtype=_STR)
    f.create_dataset("manifest", data=dumps_records(records), dtype=_STR)


def _create_file(
    path: Path,
    records: Sequence[Mapping[str, Any]],
    n_layers: int,
    dim: int,
    meta: Mapping[str, Any],
) -> Path:
    """Create a fresh cache under a temporary name and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".create.tmp")
    tmp.unlink(missing_ok=True)
    with h5py.File(tmp, "w") as f:
        _create_layout(f, records, n_layers, dim)
        _set_attrs(f, {**_base_meta(records, n_layers, dim), **meta, "complete": False})
    _fsync(tmp)
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


# ------------------------------------------------------------------------------------- writer


class CacheWriter:
    """Incremental writer: rows for any subset of utterances, in any order, batch by batch.

    `write_rows` stores data first and the done mask second, each followed by a flush, so a
    row is marked done only once its data is on disk. The writer never changes the HDF5
    structure; `finalize` does that on a copy and renames it over the file.
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        try:
            # Writers are kept to one by CacheLock; HDF5's own lock is off so that a reader
            # inspecting the cache (`emoprobe info`) never stops a run from starting.
            self._file = h5py.File(self.path, "r+", locking=False)
        except OSError as exc:
            raise CacheError(
                f"{self.path}: cannot open the cache for writing ({exc}); "
                "if it is damaged, delete it or extract again with --overwrite"
            ) from None
        try:
            self.meta = _get_attrs(self._file)
            _check_format(self.path, self.meta)
            self.ids = [s.decode("utf-8") if isinstance(s, bytes) else s
                        for s in self._file["ids"][()]]
            self.done = self._file["done"][()].astype(bool)
            self.failed = self._file["failed"][()].astype(bool)
        except Exception:
            self._file.close()
            raise
        self.index = {utt: i for i, utt in enumerate(self.ids)}

    @classmethod
    def create(
        cls,
        path: PathLike,
        records: Sequence[Mapping[str, Any]],
        *,
        n_layers: int,
        dim: int,
        meta: Mapping[str, Any] | None = None,
    ) -> CacheWriter:
        """Create a new, empty (nothing done) cache for `records` and open it for writing."""
        _check_records(records)
        return cls(_create_file(Path(path), records, n_layers, dim, dict(meta or {})))

    @property
    def n_layers(self) -> int:
        return int(self._file["pooled"].shape[0])

    @property
    def dim(self) -> int:
        return int(self._file["pooled"].shape[2])

    @property
    def records(self) -> list[dict[str, Any]]:
        return loads_records(_read_str(self._file["manifest"]))

    def pending(self) -> np.ndarray:
        """Indices still to extract: not done, or failed earlier (failures are retried)."""
        return np.flatnonzero(~self.done | self.failed)

    def write_rows(
        self,
        indices: Sequence[int] | np.ndarray,
        pooled: np.ndarray,
        n_frames: Sequence[int] | np.ndarray,
        duration: Sequence[float] | np.ndarray,
    ) -> None:
        """Store pooled vectors (layers, len(indices), dim) and mark those utterances done."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size == 0:
            return
        pooled = np.asarray(pooled, dtype=np.float32)
        expected = (self.n_layers, idx.size, self.dim)
        if pooled.shape != expected:
            raise CacheError(f"{self.path}: rows of shape {pooled.shape}, expected {expected}")
        bad = ~np.isfinite(pooled).all(axis=(0, 2))
        if bad.any():
            names = ", ".join(self.ids[i] for i in idx[bad][:5])
            raise CacheError(f"{self.path}: refusing to write NaN or Inf for utterance(s) {names}")
        order = np.argsort(idx, kind="stable")
        idx = idx[order]
        if np.any(np.diff(idx) == 0):
            raise CacheError(f"{self.path}: an utterance appears twice in one write")
        f = self._file
        f["pooled"][:, idx, :] = pooled[:, order, :]
        f["n_frames"][idx] = np.asarray(n_frames, dtype=np.int64)[order]
        f["duration"][idx] = np.asarray(duration, dtype=np.float64)[order]
        f.flush()
        if self.failed[idx].any():  # a retried failure that now succeeded
            f["failure_reason"][idx] = np.zeros(idx.size, dtype=f"S{FAILURE_REASON_BYTES}")
            f["failed"][idx] = 0
            self.failed[idx] = False
        f["done"][idx] = 1
        self.done[idx] = True
        self._sync()

    def mark_failed(self, failures: Mapping[int, str]) -> None:
        """Record failed utterances (index -> reason); they count as processed."""
        if not failures:
            return
        idx = np.array(sorted(failures), dtype=np.int64)
        reasons = np.array([_encode_reason(failures[int(i)]) for i in idx],
                           dtype=f"S{FAILURE_REASON_BYTES}")
        f = self._file
        f["failure_reason"][idx] = reasons
        f.flush()
        f["failed"][idx] = 1
        f["done"][idx] = 1
        self.failed[idx] = True
        self.done[idx] = True
        self._sync()

    def failure_reasons(self) -> dict[str, str]:
        """id -> reason of every utterance recorded as failed."""
        idx = np.flatnonzero(self.failed)
        if idx.size == 0:
            return {}
        reasons = self._file["failure_reason"][idx]
        return {self.ids[i]: r.decode("utf-8", "replace") for i, r in zip(idx, reasons)}

    def _sync(self) -> None:
        self._file.flush()
        with contextlib.suppress(OSError, TypeError, ValueError):
            os.fsync(self._file.id.get_vfd_handle())

    def finalize(
        self,
        *,
        frames: Iterable[tuple[int, int, np.ndarray]] | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> Path:
        """Mark the cache complete, adding frame datasets (index, layer, array) and metadata.

        Done on a copy that replaces the file atomically, so an interruption here leaves the
        resumable file as it was. Closes the writer.
        """
        if not self.done.all():
            missing = int((~self.done).sum())
            raise CacheError(f"{self.path}: {missing} utterance(s) are not done yet")
        self.close()
        tmp = self.path.with_name(self.path.name + ".final.tmp")
        shutil.copyfile(self.path, tmp)
        with h5py.File(tmp, "r+") as f:
            if frames is not None:
                for index, layer, array in frames:
                    group = f.require_group(f"frames/layer_{int(layer)}")
                    name = frame_dataset_name(self.ids[index])
                    if name in group:
                        del group[name]
                    group.create_dataset(name, data=np.asarray(array, dtype=np.float32))
            _set_attrs(f, {**dict(meta or {}), "completed": _now(), "complete": True})
        _fsync(tmp)
        os.replace(tmp, self.path)
        _fsync_dir(self.path.parent)
        return self.path

    def close(self) -> None:
        if self._file.id.valid:
            self._file.flush()
            self._file.close()

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------------- reader


def _read_str(ds: h5py.Dataset) -> str:
    value = ds[()]
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _check_format(path: Path, meta: Mapping[str, Any]) -> None:
    if meta.get("format") != FORMAT_NAME:
        raise CacheError(f"{path}: not an emoprobe cache (format attribute {meta.get('format')!r})")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CacheError(
            f"{path}: cache format version {version}, this emoprobe reads version "
            f"{FORMAT_VERSION}; extract again or use a matching emoprobe"
        )


def _open_for_reading(path: Path) -> h5py.File:
    """Open read-only. A cache being extracted by another process holds HDF5's file lock;
    it may still be inspected without the lock, because its writer never changes structure
    in place and so a reader always sees consistent rows."""
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        if "lock" not in str(exc).lower():
            raise CacheError(f"{path}: not a readable HDF5 cache ({exc})") from None
    try:
        return h5py.File(path, "r", locking=False)
    except OSError as exc:
        raise CacheError(f"{path}: not a readable HDF5 cache ({exc})") from None


class CacheReader:
    """Read access to a cache. Per-utterance arrays are loaded at open; layers on demand."""

    def __init__(self, path: PathLike, *, allow_incomplete: bool = False) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise CacheError(f"{self.path}: no such cache file")
        self._file = _open_for_reading(self.path)
        try:
            self._load(allow_incomplete)
        except Exception:
            self._file.close()
            raise

    def _load(self, allow_incomplete: bool) -> None:
        f = self._file
        self.meta: dict[str, Any] = _get_attrs(f)
        _check_format(self.path, self.meta)
        self.ids: list[str] = [s.decode("utf-8") if isinstance(s, bytes) else s
                               for s in f["ids"][()]]
        self.records: list[dict[str, Any]] = loads_records(_read_str(f["manifest"]))
        self.done: np.ndarray = f["done"][()].astype(bool)
        failed_mask = f["failed"][()].astype(bool)
        reasons = f["failure_reason"][()]
        self.failed: dict[str, str] = {
            self.ids[i]: reasons[i].decode("utf-8", "replace") for i in np.flatnonzero(failed_mask)
        }
        self.usable: np.ndarray = self.done & ~failed_mask
        self.n_frames: np.ndarray = f["n_frames"][()]
        self.duration: np.ndarray = f["duration"][()]
        self.complete: bool = bool(self.meta.get("complete", False))
        self._pooled = f["pooled"]
        if not self.complete and not allow_incomplete:
            raise CacheError(
                f"{self.path}: the cache is incomplete ({int(self.done.sum())} of "
                f"{len(self.ids)} utterances done); re-run the same extract command to resume, "
                "or open it with allow_incomplete=True"
            )

    @property
    def labels(self) -> list[str]:
        return [str(r["label"]) for r in self.records]

    @property
    def n_layers(self) -> int:
        return int(self._pooled.shape[0])

    @property
    def dim(self) -> int:
        return int(self._pooled.shape[2])

    @property
    def fingerprint(self) -> str:
        return str(self.meta.get("fingerprint", ""))

    def _check_layer(self, i: int) -> int:
        if not -self.n_layers <= int(i) < self.n_layers:
            raise CacheError(
                f"{self.path}: no layer {i}; the cache holds layers 0..{self.n_layers - 1}"
            )
        return int(i) % self.n_layers

    def layer(self, i: int) -> np.ndarray:
        """Pooled vectors of layer `i` for every utterance, (n_utts, dim) float32.

        Rows of utterances that are not usable (not done, or failed) hold NaN."""
        return self._pooled[self._check_layer(i)]

    def layers(self, indices: Iterable[int] | None = None) -> np.ndarray:
        """Several layers stacked, (k, n_utts, dim); all layers when `indices` is None."""
        chosen = range(self.n_layers) if indices is None else list(indices)
        out = [self.layer(i) for i in chosen]
        if not out:
            return np.empty((0, len(self.ids), self.dim), dtype=np.float32)
        return np.stack(out)

    @property
    def frame_layers(self) -> list[int]:
        """Layers with stored frame-level features (empty unless extracted with frames)."""
        if "frames" not in self._file:
            return []
        return sorted(int(k.split("_", 1)[1]) for k in self._file["frames"])

    def frames(self, utt_id: str, layer: int) -> np.ndarray:
        """Frame-level features (valid frames, dim) of one utterance and stored layer."""
        key = f"frames/layer_{self._check_layer(layer)}/{frame_dataset_name(utt_id)}"
        if key not in self._file:
            raise CacheError(
                f"{self.path}: no frames for utterance {utt_id!r} in layer {layer} "
                f"(stored frame layers: {self.frame_layers or 'none'})"
            )
        return self._file[key][()]

    def close(self) -> None:
        if self._file.id.valid:
            self._file.close()

    def __enter__(self) -> CacheReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "complete" if self.complete else f"incomplete {int(self.done.sum())}"
        return (f"CacheReader({str(self.path)!r}, {self.meta.get('model')!r}, "
                f"{self.n_layers} layers x {self.dim}, {len(self.ids)} utts, {state})")


def open_cache(path: PathLike, *, allow_incomplete: bool = False) -> CacheReader:
    """Open a cache for reading; an incomplete one only with `allow_incomplete=True`."""
    return CacheReader(path, allow_incomplete=allow_incomplete)


def read_meta(path: PathLike) -> dict[str, Any]:
    """All attributes of a cache (complete or not), decoded."""
    with CacheReader(path, allow_incomplete=True) as reader:
        return dict(reader.meta)


# ------------------------------------------------------------------------------ whole arrays


def write_cache(
    path: PathLike,
    pooled: np.ndarray,
    records: Sequence[Mapping[str, Any]],
    *,
    meta: Mapping[str, Any] | None = None,
    n_frames: Sequence[int] | np.ndarray | None = None,
    duration: Sequence[float] | np.ndarray | None = None,
    failed: Mapping[str, str] | None = None,
) -> Path:
    """Write a complete cache from arrays in one go; `pooled` is (layers, utterances, dim).

    Rows of `failed` utterances (id -> reason) are not stored (they read as NaN). Without a
    fingerprint in `meta`, one is computed from the records, the meta and the array shape.
    """
    pooled = np.asarray(pooled, dtype=np.float32)
    if pooled.ndim != 3 or pooled.shape[1] != len(records):
        raise CacheError(
            f"pooled must be (layers, {len(records)} utterances, dim), got {pooled.shape}"
        )
    ids = _check_records(records)
    failed = dict(failed or {})
    unknown = sorted(set(failed) - set(ids))
    if unknown:
        raise CacheError(f"failed ids not in the records: {', '.join(unknown[:5])}")
    n = len(records)
    n_frames = np.zeros(n, np.int64) if n_frames is None else np.asarray(n_frames, np.int64)
    duration = np.zeros(n, np.float64) if duration is None else np.asarray(duration, np.float64)
    if n_frames.shape != (n,) or duration.shape != (n,):
        raise CacheError(f"n_frames and duration must have shape ({n},)")
    meta = dict(meta or {})
    if "fingerprint" not in meta:
        upstream = {k: meta.get(k) for k in ("model", "revision", "upstream_kind")}
        upstream["shape"] = [pooled.shape[0], pooled.shape[2]]
        fp, parts = compute_fingerprint(records, upstream, meta.get("settings") or {})
        meta.update(fingerprint=fp, fingerprint_parts=parts)
    path = Path(path)
    tmp = path.with_name(path.name + ".write.tmp")
    _create_file(tmp, records, pooled.shape[0], pooled.shape[2], meta)
    writer = CacheWriter(tmp)
    try:
        fail_idx = {writer.index[k]: v for k, v in failed.items()}
        ok = np.array([i for i in range(n) if i not in fail_idx], dtype=np.int64)
        writer.write_rows(ok, pooled[:, ok, :], n_frames[ok], duration[ok])
        writer.mark_failed(fail_idx)
        writer.finalize()
    finally:
        writer.close()
    os.replace(tmp, path)
    return path
