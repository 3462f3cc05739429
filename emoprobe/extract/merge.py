"""Merging shard files (`extract --shard K/N`) into the cache a single process would write.

Before writing anything, every shard is checked: it is a complete shard file; all shards
share one whole-run fingerprint (audio, model, settings) and one shard count; each shard
number appears once and none is missing; every utterance of the manifest is in exactly one
shard; and the audio identities rebuilt from the shards hash to the recorded audio part.
A shard that fails a check is refused with a CacheError naming its file.

The merged cache equals the single-process cache: the same datasets with the same bytes
(pooled rows, ids, manifest, n_frames, duration, done, failed, failure reasons, frame-level
features) and the same attributes, except the per-run ones in `PER_RUN_ATTRIBUTES`.
`cache_differences` checks exactly that.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from emoprobe.cache.fingerprint import audio_part, combine, describe_mismatch
from emoprobe.cache.lock import CacheLock
from emoprobe.cache.store import TEXT_ROW_KEY, CacheReader, CacheWriter, FrameLayout, read_meta
from emoprobe.errors import CacheError
from emoprobe.extract.shard import SHARD_FILE_RE, ShardSpec, shard_path
from emoprobe.progress import progress_bar
from emoprobe.system import sigterm_as_interrupt

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

# Attributes that describe one run rather than the cache's contents: when and where it ran
# and with which speed settings and package versions. A merged cache takes them from the
# shards (`merged_from` lists each shard's); everything else equals a single-process cache.
PER_RUN_ATTRIBUTES = (
    "created", "completed", "settings", "versions", "last_run", "manifest_path", "merged_from",
)
_PART_NAMES = {"manifest": "manifest", "audio": "audio", "upstream": "model",
               "settings": "output settings"}
_SUMMED = ("extracted", "reused", "audio_hours", "wall_seconds", "model_seconds", "wait_seconds")


@dataclass
class Shard:
    """One checked shard file."""

    path: Path
    spec: ShardSpec
    indices: np.ndarray
    meta: dict[str, Any]

    @property
    def info(self) -> dict[str, Any]:
        return self.meta["shard"]

    @property
    def fingerprint(self) -> str:
        return str(self.info["fingerprint"])


@dataclass
class MergeSummary:
    """What `merge_shards` wrote (or found already written)."""

    path: Path
    shards: list[Path]
    total: int
    usable: int
    failed: int
    n_layers: int
    dim: int
    frame_layers: list[int] = field(default_factory=list)
    fingerprint: str = ""
    reused: bool = False

    def format(self) -> str:
        head = (f"{self.path} already holds this extraction, complete; nothing to do"
                if self.reused else f"merged {len(self.shards)} shards into {self.path}")
        frames = ", ".join(map(str, self.frame_layers)) or "none"
        return "\n".join([
            head,
            f"utterances: {self.total} ({self.usable} usable, {self.failed} failed); "
            f"{self.n_layers} layer(s) x {self.dim} dims; frame-level layers: {frames}",
            f"fingerprint: {self.fingerprint[:12]}",
        ])


# ------------------------------------------------------------------------------------ checks


def read_shard(path: PathLike) -> Shard:
    """Open one shard file's metadata; refuse a file that is not a complete shard."""
    path = Path(path)
    meta = read_meta(path)
    info = meta.get("shard")
    if not isinstance(info, dict):
        raise CacheError(
            f"{path}: not a shard file (no 'shard' attribute); merge combines the files "
            "written by `emoprobe extract --shard K/N`"
        )
    spec = ShardSpec(int(info["index"]), int(info["count"]))
    if not meta.get("complete"):
        with CacheReader(path, allow_incomplete=True) as reader:
            done, n = int(reader.done.sum()), len(reader.ids)
        raise CacheError(
            f"{path}: shard {spec} is incomplete ({done} of {n} utterances done); run its "
            f"extract command (--shard {spec}) again to finish it, then merge"
        )
    indices = np.asarray(info["indices"], dtype=np.int64)
    if indices.size != int(meta.get("n_utterances", -1)):
        raise CacheError(
            f"{path}: the shard lists {indices.size} manifest indices but holds "
            f"{meta.get('n_utterances')} utterances; the file is damaged"
        )
    return Shard(path, spec, indices, meta)


def _foreign(a: Shard, b: Shard) -> CacheError:
    differing = describe_mismatch(a.info["fingerprint_parts"], b.info["fingerprint_parts"])
    what = " and ".join(_PART_NAMES[d] for d in differing) or "extraction"
    return CacheError(
        f"{b.path} belongs to another extraction than {a.path}: its {what} differ(s) "
        f"(whole-run fingerprint {b.fingerprint[:12]} vs {a.fingerprint[:12]}); all shards "
        "must come from one manifest, model and settings"
    )


def check_shards(
    paths: Sequence[PathLike],
) -> tuple[list[Shard], list[dict[str, Any]], np.ndarray]:
    """Check that `paths` are all the shards of one extraction; returns them in shard order,
    the whole manifest and its audio identities rebuilt from them. Raises CacheError naming
    the offending file."""
    if not paths:
        raise CacheError("no shard files given")
    shards = [read_shard(p) for p in paths]
    first = shards[0]
    by_index: dict[int, Shard] = {}
    for s in shards:
        if s.spec.count != first.spec.count:
            raise CacheError(
                f"{s.path} is shard {s.spec} but {first.path} is shard {first.spec}: shards of "
                "different splits cannot be merged"
            )
        if s.fingerprint != first.fingerprint:
            raise _foreign(first, s)
        if s.spec.index in by_index:
            other = by_index[s.spec.index]
            same = os.path.realpath(other.path) == os.path.realpath(s.path)
            raise CacheError(
                f"shard {s.spec} is given twice: {other.path} and {s.path}"
                + (" (the same file)" if same else "")
            )
        by_index[s.spec.index] = s
    count = first.spec.count
    missing = [k for k in range(count) if k not in by_index]
    if missing:
        names = ", ".join(shard_path(_stem_path(first.path), ShardSpec(k, count)).name
                          for k in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise CacheError(
            f"missing shard(s) {', '.join(map(str, missing))} of {count} "
            f"(expected {names}{more}); run `emoprobe extract --shard K/{count}` for them"
        )
    ordered = [by_index[k] for k in range(count)]
    n = int(first.info["n_utterances"])
    owner = np.full(n, -1, dtype=np.int64)
    records: list[dict[str, Any] | None] = [None] * n
    audio = np.zeros((n, 3), dtype=np.int64)
    text = first.meta.get("row_key") == TEXT_ROW_KEY
    keys: list[str] = [""] * n
    for s in ordered:
        if s.indices.size and (s.indices.min() < 0 or s.indices.max() >= n):
            raise CacheError(f"{s.path}: manifest indices outside 0..{n - 1}; file damaged")
        clash = s.indices[owner[s.indices] >= 0]
        if clash.size:
            other = ordered[int(owner[clash[0]])]
            raise CacheError(
                f"utterance {int(clash[0])} of the manifest is in both {other.path} and "
                f"{s.path}; each utterance must be in exactly one shard"
            )
        owner[s.indices] = s.spec.index
        with CacheReader(s.path) as reader:
            shard_records, shard_ids, shard_audio = reader.records, reader.ids, reader.audio
            shard_keys = reader.hashes() if text else None
            dims = (reader.n_layers, reader.dim)
        if dims != (int(first.meta["n_layers"]), int(first.meta["dim"])):
            raise CacheError(f"{s.path}: {dims[0]} layers x {dims[1]} dims, but "
                             f"{first.path} has {first.meta['n_layers']} x {first.meta['dim']}")
        for i, rec in zip(s.indices, shard_records):
            records[int(i)] = rec
        audio[s.indices] = shard_audio
        for i, key in zip(s.indices, shard_keys or []):
            keys[int(i)] = key
        own = dict(s.meta.get("fingerprint_parts") or {})
        own["audio"] = audio_part(shard_ids, shard_audio, shard_keys)
        if combine(own) != s.meta.get("fingerprint"):
            raise CacheError(f"{s.path}: its rows do not match its fingerprint; file damaged")
    absent = np.flatnonzero(owner < 0)
    if absent.size:
        raise CacheError(
            f"{absent.size} utterance(s) of the manifest are in no shard (first: index "
            f"{int(absent[0])}); the shards do not cover the manifest"
        )
    full = [r for r in records if r is not None]
    parts = first.info["fingerprint_parts"]
    ids = [str(r["id"]) for r in full]
    rebuilt = audio_part(ids, audio, keys if text else None)
    if rebuilt != parts.get("audio") or combine(parts) != first.fingerprint:
        raise CacheError(
            "the audio identities rebuilt from the shards do not match those they were "
            f"extracted from ({first.path} and the others); a shard file is damaged"
        )
    return ordered, full, audio


def _stem_path(path: Path) -> Path:
    """`DIR/name.shard-K-of-N.h5` -> `DIR/name.h5`."""
    m = SHARD_FILE_RE.match(path.name)
    return path.with_name(f"{m.group('stem')}.h5") if m else path


def default_output(paths: Sequence[PathLike]) -> Path:
    """The merged cache's path from the shard names: `DIR/name.shard-K-of-N.h5` -> `DIR/name.h5`."""
    outs = {_stem_path(Path(p)) for p in paths}
    if len(outs) != 1 or any(not SHARD_FILE_RE.match(Path(p).name) for p in paths):
        odd = [str(p) for p in paths if not SHARD_FILE_RE.match(Path(p).name)]
        raise CacheError(
            f"cannot derive one output name from the shard file names "
            f"({', '.join(odd) or 'they name different extractions'}: expected "
            "NAME.shard-K-of-N.h5); give --out")
    return outs.pop()


# ------------------------------------------------------------------------------------ writing


def _merged_meta(shards: Sequence[Shard], n: int) -> dict[str, Any]:
    first = shards[0].meta
    skip = {"shard", "complete", "completed", "last_run", "counts", "fingerprint"}
    meta = {k: v for k, v in first.items() if k not in skip}
    versions = [s.meta.get("versions") for s in shards]
    if any(v != versions[0] for v in versions):
        log.warning("the shards ran with different package versions; see merged_from")
    meta.update(
        n_utterances=n,
        fingerprint_parts={k: v for k, v in shards[0].info["fingerprint_parts"].items()
                           if k != "audio"},
        created=min(str(s.meta.get("created", "")) for s in shards),
        merged_from=[{
            "path": str(s.path.resolve()), "shard": str(s.spec),
            "created": s.meta.get("created"), "completed": s.meta.get("completed"),
            "device": (s.meta.get("settings") or {}).get("device"),
            "versions": s.meta.get("versions"), "last_run": s.meta.get("last_run"),
        } for s in shards],
    )
    return meta


def _last_run(shards: Sequence[Shard], path: Path, total: int, failed: int) -> dict[str, Any]:
    runs = [s.meta.get("last_run") or {} for s in shards]
    out: dict[str, Any] = {"path": str(path), "total": total, "failed": failed,
                           "complete": True, "shards": len(shards)}
    for key in _SUMMED:
        out[key] = round(sum(float(r.get(key) or 0) for r in runs), 6)
    wall, busy = out["wall_seconds"], out["model_seconds"] + out["wait_seconds"]
    out["speed"] = round(out["audio_hours"] * 3600 / wall, 3) if wall > 0 else 0.0
    out["wait_share"] = round(out["wait_seconds"] / busy, 4) if busy > 0 else 0.0
    return out


def _frame_layout(shards: Sequence[Shard], n: int) -> FrameLayout | None:
    """The merged cache's frame storage: each utterance's frame count as its shard holds it."""
    layers = sorted(shards[0].meta.get("frame_layers") or [])
    if not layers:
        return None
    counts = np.zeros(n, dtype=np.int64)
    dim = 0
    for s in shards:
        with h5py.File(s.path, "r", locking=False) as f:
            stored = sorted(int(k.split("_", 1)[1]) for k in f.get("frames", {}))
            if stored != layers or "frame_offsets" not in f:
                raise CacheError(f"{s.path}: frame-level layers {stored}, expected {layers}; "
                                 "the file is damaged")
            counts[s.indices] = np.diff(f["frame_offsets"][()])
            dim = int(f[f"frames/layer_{layers[0]}"].shape[1])
    return FrameLayout(tuple(layers), counts, dim)


def merge_shards(
    paths: Sequence[PathLike],
    out: PathLike | None = None,
    *,
    overwrite: bool = False,
    remove_shards: bool = False,
    progress: bool = True,
) -> MergeSummary:
    """Check the shard files of one extraction and write the single cache they make up to
    `out` (default: the shards' common name without `.shard-K-of-N`). An existing `out` that
    already holds this merge is kept; any other existing file is replaced only with
    `overwrite`. `remove_shards` deletes the shard files after a successful merge."""
    out = default_output(paths) if out is None else Path(out)
    if out.is_dir():
        out = out / default_output(paths).name
    shards, records, audio = check_shards(paths)
    first = shards[0]
    n = len(records)
    summary = MergeSummary(out, [s.path for s in shards], n, 0, 0, int(first.meta["n_layers"]),
                           int(first.meta["dim"]), list(first.meta.get("frame_layers") or []),
                           first.fingerprint)
    with CacheLock(out), sigterm_as_interrupt():
        if out.exists() and not overwrite:
            existing = read_meta(out)
            if existing.get("complete") and existing.get("fingerprint") == first.fingerprint:
                counts = existing.get("counts") or {}
                summary.usable = int(counts.get("usable", 0))
                summary.failed = int(counts.get("failed", 0))
                summary.reused = True
                _remove(shards, remove_shards)
                return summary
            raise CacheError(
                f"{out} exists and holds another extraction (or an unfinished one); pass "
                "--overwrite to replace it with this merge, or choose another --out"
            )
        tmp = out.with_name(out.name + ".merge.tmp")
        tmp.unlink(missing_ok=True)
        writer = CacheWriter.create(tmp, records, n_layers=summary.n_layers, dim=summary.dim,
                                    meta=_merged_meta(shards, n), audio=audio,
                                    frames=_frame_layout(shards, n))
        try:
            bar = progress_bar(shards, desc="merge shards", unit="shard",
                               disable=not progress, leave=False)
            for s in bar:
                writer.copy_rows_from(s.path, {i: int(g) for i, g in enumerate(s.indices)})
            if not writer.done.all():  # check_shards makes this impossible
                raise CacheError(f"{tmp}: {int((~writer.done).sum())} utterances not written")
            summary.failed = int(writer.failed.sum())
            summary.usable = n - summary.failed
            writer.finalize(meta={
                "last_run": _last_run(shards, out, n, summary.failed),
                "counts": {"total": n, "usable": summary.usable, "failed": summary.failed},
            })
        except BaseException:
            writer.close()
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, out)
    _remove(shards, remove_shards)
    return summary


def _remove(shards: Sequence[Shard], remove: bool) -> None:
    if remove:
        for s in shards:
            s.path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------- equality


def _datasets(f: h5py.File) -> dict[str, h5py.Dataset]:
    out: dict[str, h5py.Dataset] = {}
    f.visititems(lambda name, obj: out.__setitem__(name, obj)
                 if isinstance(obj, h5py.Dataset) else None)
    return out


def cache_differences(
    a: PathLike, b: PathLike, *, ignore: Sequence[str] = PER_RUN_ATTRIBUTES
) -> list[str]:
    """How caches `a` and `b` differ: datasets (names, shapes, types, bytes) and attributes
    other than `ignore`. An empty list means the caches are equal in that sense."""
    diffs: list[str] = []
    meta_a, meta_b = read_meta(a), read_meta(b)
    for key in sorted((set(meta_a) | set(meta_b)) - set(ignore)):
        if meta_a.get(key, "<absent>") != meta_b.get(key, "<absent>"):
            diffs.append(f"attribute {key}: {meta_a.get(key, '<absent>')!r} != "
                         f"{meta_b.get(key, '<absent>')!r}")
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        # the completion record is compared above, key by key, as part of the metadata
        da, db = ({k: v for k, v in _datasets(f).items() if k != "run_info"} for f in (fa, fb))
        for name in sorted(set(da) ^ set(db)):
            diffs.append(f"dataset {name}: only in {a if name in da else b}")
        for name in sorted(set(da) & set(db)):
            x, y = da[name], db[name]
            if x.shape != y.shape or x.dtype != y.dtype:
                diffs.append(f"dataset {name}: {x.shape} {x.dtype} != {y.shape} {y.dtype}")
                continue
            vx, vy = x[()], y[()]
            if isinstance(vx, np.ndarray) and vx.dtype != object:
                same = vx.tobytes() == vy.tobytes()
            else:
                same = np.array_equal(np.asarray(vx, dtype=object), np.asarray(vy, dtype=object))
            if not same:
                diffs.append(f"dataset {name}: values differ")
    return diffs


__all__ = [
    "PER_RUN_ATTRIBUTES",
    "MergeSummary",
    "Shard",
    "cache_differences",
    "check_shards",
    "default_output",
    "merge_shards",
    "read_shard",
]
