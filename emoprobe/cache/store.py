"""The feature cache: an HDF5 file of mean-pooled embeddings, one row per layer and utterance.

Format v2 is specified in docs/cache-format.md. In short: `pooled` float32 (layer, utterance,
dim) stored contiguously, so one layer of every utterance is a single sequential read; `ids`,
`audio` (sample rate, samples, channels), `n_frames`, `duration`, `done`, `failed`,
`failure_reason` per utterance; optional frame-level features in one pre-allocated array per
layer with per-utterance offsets; the manifest as JSONL text; static metadata as attributes;
the completion record (`run_info`) and the `complete` flag in pre-allocated datasets.

Crash safety comes from the layout. Every dataset has a fixed shape and is allocated when the
file is created, and the file is created under a temporary name and renamed into place. After
that, extraction and finishing only overwrite raw bytes at fixed offsets (data rows, then the
done mask, each followed by a flush; at the end the completion record, then the flag), so a
process killed at any instant leaves HDF5's own structures untouched and every row marked done
valid. A cache that must hold more utterances is rebuilt under a temporary name (rows copied,
never recomputed) and renamed over the old one.

Version-1 files (attributes for everything, frames as one dataset per utterance) stay
readable by `CacheReader`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import shutil
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from emoprobe import __version__
from emoprobe.cache.fingerprint import audio_part, combine, compute_fingerprint, manifest_digest
from emoprobe.data.manifest import dumps_records, loads_records
from emoprobe.errors import CacheError
from emoprobe.system import fsync_dir, fsync_path

log = logging.getLogger(__name__)

FORMAT_NAME = "emoprobe-cache"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
CACHE_SUFFIX = ".h5"
FAILURE_REASON_BYTES = 512
RUN_INFO_BYTES = 1 << 16
HASH_BYTES = 64
AUDIO_COLUMNS = ("sample_rate", "num_samples", "channels")
# `row_key` attribute of caches whose rows are identified by their sentence (text upstreams);
# its hash is stored in `audio_hash` and is part of the fingerprint.
TEXT_ROW_KEY = "sentence"
LAYER_CONVENTION = (
    "0 = embedding output before the first transformer block; i = output of transformer block i"
)
_JSON_ATTRS = "_json_attrs"
_STR = h5py.string_dtype("utf-8")
_ROWS_PER_COPY = 256

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
    """HDF5-safe dataset name for an utterance id ('%' and '/' are percent-escaped); the
    per-utterance frame datasets of format version 1 are named so."""
    name = utt_id.replace("%", "%25").replace("/", "%2F")
    return "%2E" if name == "." else name


def _encode_reason(reason: str) -> bytes:
    raw = reason.encode("utf-8")
    if len(raw) <= FAILURE_REASON_BYTES:
        return raw
    return raw[: FAILURE_REASON_BYTES - 3].decode("utf-8", "ignore").encode("utf-8") + b"..."




def row_checksums(vectors: np.ndarray) -> np.ndarray:
    """CRC-32 of each row of a (rows, dim) float32 array, as stored in `checksum`."""
    rows = np.ascontiguousarray(vectors, dtype=np.float32)
    return np.array([zlib.crc32(r.tobytes()) for r in rows], dtype=np.uint32)


# ----------------------------------------------------------------------------------- creation


@dataclass(frozen=True)
class FrameLayout:
    """Where frame-level features go: the stored `layers`, each utterance's frame count
    (`counts`, known before extraction from its audio identity) and the frame dimension."""

    layers: tuple[int, ...]
    counts: np.ndarray
    dim: int

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(np.asarray(self.counts, dtype=np.int64))])


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


def _audio_array(audio: np.ndarray | Sequence[Sequence[int]] | None, n: int) -> np.ndarray:
    if audio is None:
        return np.zeros((n, len(AUDIO_COLUMNS)), dtype=np.int64)
    arr = np.asarray(audio, dtype=np.int64).reshape(-1, len(AUDIO_COLUMNS))
    if arr.shape[0] != n:
        raise CacheError(f"audio identities for {arr.shape[0]} utterances, expected {n}")
    return arr


def _create_layout(
    f: h5py.File,
    records: Sequence[Mapping[str, Any]],
    n_layers: int,
    dim: int,
    audio: np.ndarray,
    frames: FrameLayout | None,
) -> None:
    """All datasets at their final shape, allocated now (no structural change later)."""
    n = len(records)
    early = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    early.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)

    def fixed(name: str, shape: tuple[int, ...], dtype: Any, fill: Any) -> h5py.Dataset:
        return f.create_dataset(name, shape=shape, dtype=dtype, fillvalue=fill,
                                dcpl=early.copy())

    fixed("pooled", (n_layers, n, dim), np.float32, np.float32("nan"))
    fixed("n_frames", (n,), np.int64, 0)
    fixed("duration", (n,), np.float64, 0.0)
    fixed("done", (n,), np.uint8, 0)
    fixed("failed", (n,), np.uint8, 0)
    fixed("failure_reason", (n,), f"S{FAILURE_REASON_BYTES}", b"")
    fixed("checksum", (n_layers, n), np.uint32, 0)
    fixed("audio", (n, len(AUDIO_COLUMNS)), np.int64, 0)[...] = audio
    fixed("audio_hash", (n,), f"S{HASH_BYTES}", b"")
    fixed("run_info", (RUN_INFO_BYTES,), np.uint8, 0)
    fixed("complete", (), np.uint8, 0)
    if frames is not None and frames.layers:
        offsets = frames.offsets
        fixed("frame_offsets", (n + 1,), np.int64, 0)[...] = offsets
        for layer in frames.layers:
            fixed(f"frames/layer_{int(layer)}", (int(offsets[-1]), int(frames.dim)), np.float32,
                  np.float32("nan"))
    f.create_dataset("ids", data=np.array([str(r["id"]) for r in records], dtype=object),
                     dtype=_STR)
    f.create_dataset("manifest", data=dumps_records(records), dtype=_STR)


def _bytes_needed(records: Sequence[Mapping[str, Any]], n_layers: int, dim: int,
                  frames: FrameLayout | None) -> int:
    """The size a new cache takes on disk (all storage is allocated when it is created)."""
    n = len(records)
    per_row = 8 + 8 + 1 + 1 + FAILURE_REASON_BYTES + 8 * len(AUDIO_COLUMNS) + HASH_BYTES + 64
    size = 4 * n_layers * n * (dim + 1) + n * per_row + RUN_INFO_BYTES
    size += len(dumps_records(records).encode("utf-8"))
    if frames is not None and frames.layers:
        size += 4 * len(frames.layers) * int(np.sum(frames.counts)) * int(frames.dim) + 8 * n
    return size + (1 << 18)  # HDF5's own structures, with room to spare


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n} B"


def check_space(path: Path, needed: int) -> None:
    """Refuse, with the numbers, to create a file of `needed` bytes in `path`'s folder when the
    disk has less free space or the process's file-size limit (`ulimit -f`) is lower."""
    import resource

    free = shutil.disk_usage(path.parent).free
    if needed > free:
        raise CacheError(
            f"{path}: not enough disk space for the cache: {_human(needed)} needed "
            f"({needed} bytes), {_human(free)} free in {path.parent}; free some space or "
            "choose another --out")
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY and needed > limit:
        raise CacheError(
            f"{path}: the cache needs {_human(needed)} ({needed} bytes) but this process may "
            f"write files of at most {_human(limit)} (`ulimit -f`); raise the limit or "
            "extract fewer utterances per cache (--shard)")


def _create_file(
    path: Path,
    records: Sequence[Mapping[str, Any]],
    n_layers: int,
    dim: int,
    meta: Mapping[str, Any],
    *,
    audio: np.ndarray | None = None,
    frames: FrameLayout | None = None,
    rename: bool = True,
) -> Path:
    """Create a fresh cache under a temporary name and (with `rename`) rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".create.tmp") if rename else path
    tmp.unlink(missing_ok=True)
    needed = _bytes_needed(records, n_layers, dim, frames)
    check_space(path, needed)
    try:
        with h5py.File(tmp, "w") as f:
            _create_layout(f, records, n_layers, dim, _audio_array(audio, len(records)), frames)
            static = {k: v for k, v in meta.items() if k not in _RUN_INFO_KEYS}
            _set_attrs(f, {**static, **_base_meta(records, n_layers, dim)})
        fsync_path(tmp)
    except (OSError, RuntimeError) as exc:
        tmp.unlink(missing_ok=True)
        raise CacheError(
            f"{path}: cannot create the cache ({exc}); it needs {_human(needed)} "
            f"({needed} bytes) in {path.parent}, which has "
            f"{_human(shutil.disk_usage(path.parent).free)} free") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if rename:
        os.replace(tmp, path)
        fsync_dir(path.parent)
    return path


# Keys that belong to the completion record, written when a cache is finished.
_RUN_INFO_KEYS = ("complete", "completed", "last_run", "counts", "fingerprint")


# ------------------------------------------------------------------------------------- writer


class CacheWriter:
    """Incremental writer: rows for any subset of utterances, in any order, batch by batch.

    `write_rows` stores data first and the done mask second, each followed by a flush, so a
    row is marked done only once its data is on disk. The writer never changes the HDF5
    structure; `finalize` writes the completion record and then the `complete` flag in place.
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
            _check_format(self.path, self.meta, writing=True)
            self.ids = [s.decode("utf-8") if isinstance(s, bytes) else s
                        for s in self._file["ids"][()]]
            self.done = self._file["done"][()].astype(bool)
            self.failed = self._file["failed"][()].astype(bool)
            self.audio = self._file["audio"][()]
            self.frame_layers = _frame_layers_v2(self._file)
            self.frame_offsets = (self._file["frame_offsets"][()] if self.frame_layers
                                  else None)
        except (KeyError, ValueError, OSError) as exc:
            self._file.close()
            raise CacheError(f"{self.path}: the cache is damaged ({exc}); "
                             "run `emoprobe info --repair` or extract with --overwrite") from None
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
        audio: np.ndarray | Sequence[Sequence[int]] | None = None,
        frames: FrameLayout | None = None,
    ) -> CacheWriter:
        """Create a new, empty (nothing done) cache for `records` and open it for writing.
        `audio` holds each record's (sample rate, samples, channels); `frames` pre-allocates
        frame-level storage."""
        _check_records(records)
        return cls(_create_file(Path(path), records, n_layers, dim, dict(meta or {}),
                                audio=audio, frames=frames))

    @property
    def n_layers(self) -> int:
        return int(self._file["pooled"].shape[0])

    @property
    def dim(self) -> int:
        return int(self._file["pooled"].shape[2])

    @property
    def records(self) -> list[dict[str, Any]]:
        return loads_records(_read_str(self._file["manifest"]))

    def frame_counts(self) -> np.ndarray | None:
        """Pre-allocated frames per utterance (None without frame-level storage)."""
        return None if self.frame_offsets is None else np.diff(self.frame_offsets)

    def pending(self) -> np.ndarray:
        """Indices still to extract: not done, or failed earlier (failures are retried)."""
        return np.flatnonzero(~self.done | self.failed)

    def set_audio(self, indices: Sequence[int] | np.ndarray, audio: np.ndarray) -> None:
        """Record the audio identity of rows that are not done (they are about to be
        extracted from that audio)."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size == 0:
            return
        if (self.done[idx] & ~self.failed[idx]).any():
            raise CacheError(f"{self.path}: the audio identity of a finished row cannot change")
        audio = np.asarray(audio, dtype=np.int64).reshape(idx.size, len(AUDIO_COLUMNS))
        order = np.argsort(idx, kind="stable")
        self._file["audio"][idx[order]] = audio[order]
        self.audio[idx] = audio
        self._file.flush()

    def set_hashes(self, hashes: Mapping[int, str]) -> None:
        """Store rows' content digests (hex): decoded samples, or a text row's sentence."""
        if not hashes:
            return
        idx = np.array(sorted(hashes), dtype=np.int64)
        self._file["audio_hash"][idx] = np.array([hashes[int(i)].encode("ascii") for i in idx],
                                                 dtype=f"S{HASH_BYTES}")
        self._file.flush()

    def hashes(self) -> list[str]:
        """The stored sample hash of every row ('' where none was computed)."""
        return [h.decode("ascii") for h in self._file["audio_hash"][()]]

    def write_rows(
        self,
        indices: Sequence[int] | np.ndarray,
        pooled: np.ndarray,
        n_frames: Sequence[int] | np.ndarray,
        duration: Sequence[float] | np.ndarray,
        *,
        frames: Mapping[int, Sequence[np.ndarray]] | None = None,
    ) -> None:
        """Store pooled vectors (layers, len(indices), dim), and with frame-level storage the
        frames {layer: one array per index}, then mark those utterances done."""
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
        sorted_idx = idx[order]
        if np.any(np.diff(sorted_idx) == 0):
            raise CacheError(f"{self.path}: an utterance appears twice in one write")
        f = self._file
        if self.frame_layers:
            self._write_frames(idx, frames or {})
        f["pooled"][:, sorted_idx, :] = pooled[:, order, :]
        f["checksum"][:, sorted_idx] = np.stack(
            [row_checksums(layer) for layer in pooled[:, order, :]])
        f["n_frames"][sorted_idx] = np.asarray(n_frames, dtype=np.int64)[order]
        f["duration"][sorted_idx] = np.asarray(duration, dtype=np.float64)[order]
        f.flush()
        if self.failed[sorted_idx].any():  # a retried failure that now succeeded
            f["failure_reason"][sorted_idx] = np.zeros(sorted_idx.size,
                                                       dtype=f"S{FAILURE_REASON_BYTES}")
            f["failed"][sorted_idx] = 0
            self.failed[sorted_idx] = False
        f["done"][sorted_idx] = 1
        self.done[sorted_idx] = True
        self._sync()

    def _write_frames(self, idx: np.ndarray, frames: Mapping[int, Sequence[np.ndarray]]) -> None:
        assert self.frame_offsets is not None
        missing = [layer for layer in self.frame_layers if layer not in frames]
        if missing:
            raise CacheError(f"{self.path}: frame-level features of layer(s) {missing} missing")
        for layer in self.frame_layers:
            ds = self._file[f"frames/layer_{layer}"]
            arrays = frames[layer]
            if len(arrays) != idx.size:
                raise CacheError(f"{self.path}: {len(arrays)} frame arrays for {idx.size} rows")
            for i, array in zip(idx, arrays):
                a, b = int(self.frame_offsets[i]), int(self.frame_offsets[i + 1])
                array = np.asarray(array, dtype=np.float32)
                if array.shape != (b - a, ds.shape[1]):
                    raise CacheError(
                        f"{self.path}: utterance {self.ids[i]!r} has frames of shape "
                        f"{array.shape}, its storage holds {(b - a, ds.shape[1])}")
                if b > a:
                    ds[a:b] = array

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

    def copy_rows_from(self, source: PathLike, rows: Mapping[int, int]) -> None:
        """Copy finished rows {source index: own index} of another cache of the same layers
        (pooled, counts, failures, hashes, frames): its values, never recomputed."""
        if not rows:
            return
        with h5py.File(source, "r", locking=False) as f:
            src = np.array(sorted(rows), dtype=np.int64)
            dst = np.array([rows[int(i)] for i in src], dtype=np.int64)
            done = f["done"][()].astype(bool)[src]
            failed = f["failed"][()].astype(bool)[src]
            src, dst, failed = src[done], dst[done], failed[done]
            n_frames, duration = f["n_frames"][()], f["duration"][()]
            hashes = f["audio_hash"][()] if "audio_hash" in f else None
            offsets = f["frame_offsets"][()] if self.frame_layers else None
            ok_src, ok_dst = src[~failed], dst[~failed]
            for start in range(0, ok_src.size, _ROWS_PER_COPY):
                s, d = ok_src[start:start + _ROWS_PER_COPY], ok_dst[start:start + _ROWS_PER_COPY]
                lo, hi = int(s.min()), int(s.max()) + 1
                block = f["pooled"][:, lo:hi, :][:, s - lo, :]
                if "checksum" in f:  # never give damaged values a fresh checksum
                    stored = f["checksum"][:, lo:hi][:, s - lo]
                    sound = np.ones(s.size, dtype=bool)
                    for layer in range(block.shape[0]):
                        sound &= row_checksums(block[layer]) == stored[layer]
                    if not sound.all():
                        log.warning("%s: %d row(s) no longer match their checksum and are not "
                                    "copied (extracted again): %s", source, int((~sound).sum()),
                                    ", ".join(self.ids[int(i)] for i in d[~sound][:5]))
                        s, d, block = s[sound], d[sound], block[:, sound, :]
                        if s.size == 0:
                            continue
                frames = None
                if offsets is not None:
                    frames = {layer: [f[f"frames/layer_{layer}"][offsets[i]:offsets[i + 1]]
                                      for i in s] for layer in self.frame_layers}
                self.write_rows(d, block, n_frames[s], duration[s], frames=frames)
            reasons = f["failure_reason"][()]
            self.mark_failed({int(d): reasons[i].decode("utf-8", "replace")
                              for i, d in zip(src[failed], dst[failed])})
            if hashes is not None:
                self.set_hashes({int(d): hashes[i].decode("ascii") for i, d in zip(src, dst)
                                 if hashes[i]})

    def mark_incomplete(self) -> None:
        """Clear the `complete` flag before rows of a finished cache are written again, so
        an interruption leaves a cache that resumes instead of one that reads as finished."""
        if "complete" in self._file and self._file["complete"][()]:
            self._file["complete"][()] = 0
            self._sync()

    def _sync(self) -> None:
        self._file.flush()
        with contextlib.suppress(OSError, TypeError, ValueError):
            os.fsync(self._file.id.get_vfd_handle())

    def finalize(self, *, meta: Mapping[str, Any] | None = None) -> Path:
        """Mark the cache complete, in place: the completion record (run metadata, counts,
        the fingerprint over every row's audio identity) is written and synced first, the
        `complete` flag last. An interruption before the flag leaves a resumable file.
        Closes the writer."""
        if not self.done.all():
            missing = int((~self.done).sum())
            raise CacheError(f"{self.path}: {missing} utterance(s) are not done yet")
        parts = dict(self.meta.get("fingerprint_parts") or {})
        keys = self.hashes() if self.meta.get("row_key") == TEXT_ROW_KEY else None
        parts.setdefault("audio", audio_part(self.ids, self.audio, keys))
        info = {"completed": _now(), "fingerprint": combine(parts), "fingerprint_parts": parts,
                **dict(meta or {})}
        raw = json.dumps(info, sort_keys=True, default=str).encode("utf-8")
        if len(raw) >= RUN_INFO_BYTES:
            raise CacheError(f"{self.path}: completion record of {len(raw)} bytes is too long")
        buffer = np.zeros(RUN_INFO_BYTES, dtype=np.uint8)
        buffer[:len(raw)] = np.frombuffer(raw, dtype=np.uint8)
        self._file["run_info"][...] = buffer
        self._sync()
        self._file["complete"][()] = 1
        self._sync()
        self.close()
        return self.path

    def close(self) -> None:
        if self._file.id.valid:
            self._file.flush()
            self._file.close()

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def rebuild_cache(
    path: PathLike,
    records: Sequence[Mapping[str, Any]],
    audio: np.ndarray,
    *,
    frames: FrameLayout | None = None,
    meta: Mapping[str, Any] | None = None,
    keys: Sequence[str] | None = None,
) -> CacheWriter:
    """Rebuild the cache at `path` for `records` (its own first, in order, then new ones)
    under a temporary name: rows whose id and audio identity (and content `keys`, when
    given) are unchanged are copied, the others are left to extract. The rebuilt file
    replaces the old one atomically; an interruption leaves the old file as it was."""
    path = Path(path)
    _check_records(records)
    with CacheReader(path, allow_incomplete=True) as old:
        if old.format_version != FORMAT_VERSION:
            raise CacheError(f"{path}: format version {old.format_version} cannot grow")
        static = {k: v for k, v in old.meta.items()
                  if k not in _RUN_INFO_KEYS and k != "fingerprint_parts"}
        static["fingerprint_parts"] = {k: v for k, v in (old.meta.get("fingerprint_parts")
                                                         or {}).items() if k != "audio"}
        n_layers, dim = old.n_layers, old.dim
        old_index = {utt: i for i, utt in enumerate(old.ids)}
        old_audio = old.audio
        old_keys = old.hashes()
    static.update(meta or {})
    audio = _audio_array(audio, len(records))
    keep = {}
    for j, rec in enumerate(records):
        i = old_index.get(str(rec["id"]))
        if i is not None and np.array_equal(old_audio[i], audio[j]) \
                and (keys is None or old_keys[i] == keys[j]):
            keep[i] = j
    tmp = path.with_name(path.name + ".grow.tmp")
    _create_file(tmp, records, n_layers, dim, static, audio=audio, frames=frames, rename=False)
    writer = CacheWriter(tmp)
    try:
        writer.copy_rows_from(path, keep)
        if keys is not None:
            writer.set_hashes(dict(enumerate(keys)))
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    writer.close()
    fsync_path(tmp)
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return CacheWriter(path)


# ------------------------------------------------------------------------------------- reader


def _read_str(ds: h5py.Dataset) -> str:
    value = ds[()]
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _check_format(path: Path, meta: Mapping[str, Any], *, writing: bool = False) -> None:
    if meta.get("format") != FORMAT_NAME:
        raise CacheError(f"{path}: not an emoprobe cache (format attribute {meta.get('format')!r})")
    version = meta.get("format_version")
    if writing and version != FORMAT_VERSION:
        raise CacheError(
            f"{path}: cache format version {version} is read, not extended, by this emoprobe "
            f"(it writes version {FORMAT_VERSION}); extract again with --overwrite"
        )
    if version not in READABLE_VERSIONS:
        raise CacheError(
            f"{path}: cache format version {version}, this emoprobe reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}; extract again or use a matching emoprobe"
        )


def _frame_layers_v2(f: h5py.File) -> list[int]:
    if "frame_offsets" not in f or "frames" not in f:
        return []
    return sorted(int(k.split("_", 1)[1]) for k in f["frames"])


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


def _run_info(f: h5py.File) -> dict[str, Any]:
    raw = f["run_info"][()].tobytes().rstrip(b"\0")
    return json.loads(raw.decode("utf-8")) if raw else {}


def file_fingerprint(f: h5py.File) -> str | None:
    """The fingerprint of an open cache file (format 2: in its completion record; format 1:
    an attribute); None when it has none (incomplete)."""
    if "run_info" in f:
        return _run_info(f).get("fingerprint") if f["complete"][()] else None
    found = f.attrs.get("fingerprint")
    return found.decode() if isinstance(found, bytes) else found


class CacheReader:
    """Read access to a cache. Per-utterance arrays are loaded at open; layers on demand."""

    def __init__(self, path: PathLike, *, allow_incomplete: bool = False) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise CacheError(f"{self.path}: no such cache file")
        if self.path.is_dir():
            raise CacheError(f"{self.path}: is a folder, not a cache file")
        self._file = _open_for_reading(self.path)
        try:
            self._load(allow_incomplete)
        except (KeyError, ValueError, OSError, UnicodeDecodeError) as exc:
            self._file.close()
            if isinstance(exc, CacheError):
                raise
            raise CacheError(
                f"{self.path}: the cache is damaged ({type(exc).__name__}: {exc}); run "
                "`emoprobe info --repair` on it or extract again with --overwrite"
            ) from None
        except BaseException:
            self._file.close()
            raise

    def _load(self, allow_incomplete: bool) -> None:
        f = self._file
        self.meta: dict[str, Any] = _get_attrs(f)
        _check_format(self.path, self.meta)
        self.format_version = int(self.meta["format_version"])
        if self.format_version >= 2:
            self.complete: bool = bool(f["complete"][()])
            if self.complete:  # before the flag, a half-written record may be there
                self.meta.update(_run_info(f))
            self.meta["complete"] = self.complete
            self.audio: np.ndarray = f["audio"][()]
        else:
            self.complete = bool(self.meta.get("complete", False))
            self.audio = np.zeros((len(f["ids"]), len(AUDIO_COLUMNS)), dtype=np.int64)
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
        self._pooled = f["pooled"]
        shapes = {len(self.ids), self.done.shape[0], failed_mask.shape[0], self.audio.shape[0],
                  self.n_frames.shape[0], self.duration.shape[0], self._pooled.shape[1]}
        if len(shapes) != 1:
            raise CacheError(f"{self.path}: the cache is damaged (per-utterance datasets of "
                             f"different lengths {sorted(shapes)}); run `emoprobe info "
                             "--repair` on it or extract again with --overwrite")
        self._offsets = (f["frame_offsets"][()] if self.format_version >= 2
                         and _frame_layers_v2(f) else None)
        if not self.complete and not allow_incomplete:
            raise CacheError(
                f"{self.path}: the cache is incomplete ({int(self.done.sum())} of "
                f"{len(self.ids)} utterances done); re-run the same extract command to resume, "
                "or open it with allow_incomplete=True"
            )

    @property
    def has_checksums(self) -> bool:
        """Whether rows carry checksums (format 2)."""
        return "checksum" in self._file

    def checksums(self, layer: int) -> np.ndarray | None:
        """Stored CRC-32 of every row of one layer (None for format 1)."""
        if not self.has_checksums:
            return None
        return self._file["checksum"][self._check_layer(layer)]

    def damaged_rows(self, rows: np.ndarray | None = None) -> dict[str, list[int]]:
        """Usable rows (of `rows`, default all) whose stored values no longer match their
        checksum: {utterance id: [layers]}. Reads every layer once."""
        out: dict[str, list[int]] = {}
        if not self.has_checksums:
            return out
        rows = np.flatnonzero(self.usable) if rows is None else np.asarray(rows)
        for layer in range(self.n_layers):
            bad = row_checksums(self.layer(layer)[rows]) != self.checksums(layer)[rows]
            for i in rows[bad]:
                out.setdefault(self.ids[int(i)], []).append(layer)
        return out

    def hashes(self) -> list[str]:
        """Each row's content hash ('' where none was stored; format 1 stores none)."""
        if "audio_hash" not in self._file:
            return [""] * len(self.ids)
        return [h.decode("ascii") for h in self._file["audio_hash"][()]]

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
        layer = self._check_layer(layer)
        if self._offsets is not None:
            index = {utt: i for i, utt in enumerate(self.ids)}.get(utt_id)
            ds = self._file.get(f"frames/layer_{layer}")
            if index is not None and ds is not None and self.usable[index]:
                return ds[int(self._offsets[index]):int(self._offsets[index + 1])]
        else:
            key = f"frames/layer_{layer}/{frame_dataset_name(utt_id)}"
            if key in self._file:
                return self._file[key][()]
        raise CacheError(
            f"{self.path}: no frames for utterance {utt_id!r} in layer {layer} "
            f"(stored frame layers: {self.frame_layers or 'none'})"
        )

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
    audio: np.ndarray | Sequence[Sequence[int]] | None = None,
) -> Path:
    """Write a complete cache from arrays in one go; `pooled` is (layers, utterances, dim).

    Rows of `failed` utterances (id -> reason) are not stored (they read as NaN). Without a
    fingerprint in `meta`, one is computed from the meta, the array shape and the audio
    identities (`audio`, rows of sample rate, samples, channels), or, without them, from the
    records themselves.
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
    audio_arr = _audio_array(audio, n)
    if "fingerprint_parts" not in meta:
        upstream = {k: meta.get(k) for k in ("model", "revision", "upstream_kind")}
        upstream["shape"] = [pooled.shape[0], pooled.shape[2]]
        key = audio_part(ids, audio_arr) if audio is not None else manifest_digest(records)
        _, parts = compute_fingerprint(key, upstream, meta.get("settings") or {})
        meta["fingerprint_parts"] = parts
    given = meta.pop("fingerprint", None)
    path = Path(path)
    tmp = path.with_name(path.name + ".write.tmp")
    _create_file(tmp, records, pooled.shape[0], pooled.shape[2], meta, audio=audio_arr,
                 rename=False)
    writer = CacheWriter(tmp)
    try:
        fail_idx = {writer.index[k]: v for k, v in failed.items()}
        ok = np.array([i for i in range(n) if i not in fail_idx], dtype=np.int64)
        writer.write_rows(ok, pooled[:, ok, :], n_frames[ok], duration[ok])
        writer.mark_failed(fail_idx)
        writer.finalize(meta={"fingerprint": given} if given else None)
    finally:
        writer.close()
    os.replace(tmp, path)
    return path
