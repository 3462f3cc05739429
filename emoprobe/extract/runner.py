"""`extract()`: one upstream over one manifest into one resumable cache.

The flow: check the manifest's audio headers; open (or create) the cache under an exclusive
lock, refusing a file made from another manifest, model or settings; plan length-sorted
batches of the utterances still to do; decode, resample and featurise them in background
threads while the model runs; pool over valid frames; write each batch and mark it done;
finally mark the cache complete. Re-running the same call resumes an interrupted run.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emoprobe.cache.fingerprint import compute_fingerprint, describe_mismatch
from emoprobe.cache.journal import FrameJournal
from emoprobe.cache.lock import CacheLock
from emoprobe.cache.store import CACHE_SUFFIX, FORMAT_VERSION, CacheWriter, read_meta
from emoprobe.data.audio import load_audio
from emoprobe.data.manifest import read_manifest
from emoprobe.errors import AudioError, CacheError, ExtractionError
from emoprobe.extract.batching import (
    Item,
    Prefetcher,
    plan_batches,
    resampled_length,
    window_bounds,
)
from emoprobe.extract.pooling import Pooled, RowStats, pool_utterances
from emoprobe.extract.settings import ExtractSettings
from emoprobe.extract.shard import ShardSpec, restrict_to_shard
from emoprobe.extract.upstream import BASELINES, Prepared, Upstream, load_upstream
from emoprobe.progress import progress_bar
from emoprobe.system import available_cpus, sigterm_as_interrupt, versions

log = logging.getLogger(__name__)

Records = Sequence[Mapping[str, Any]]
BatchCallback = Callable[[Mapping[str, Any]], None]


# ------------------------------------------------------------------------------ small pieces


def cache_name(model: str, revision: str | None = None) -> str:
    """File stem of a model's cache: the folder name of a local checkpoint, `org--name` for a
    hub id, plus `@revision` when one is given."""
    if model in BASELINES:
        return model
    path = Path(os.path.expanduser(model))
    base = path.resolve().name if path.is_dir() else model.strip("/").replace("/", "--")
    if revision:
        base += f"@{revision}"
    return re.sub(r"[^A-Za-z0-9._@+-]", "_", base)


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
        or "not enough memory" in text
    )


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class ExtractSummary:
    """What one call did. `failed` maps utterance id -> reason (all failures in the cache)."""

    path: Path
    total: int
    extracted: int = 0
    reused: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    model_seconds: float = 0.0
    wait_seconds: float = 0.0
    complete: bool = False

    @property
    def speed(self) -> float:
        """Audio seconds per wall second over this call's extracted audio."""
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def wait_share(self) -> float:
        """Share of the model loop's time spent waiting for decoded audio."""
        busy = self.model_seconds + self.wait_seconds
        return self.wait_seconds / busy if busy > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path), "total": self.total, "extracted": self.extracted,
            "reused": self.reused, "failed": len(self.failed),
            "audio_hours": round(self.audio_seconds / 3600, 6),
            "wall_seconds": round(self.wall_seconds, 3), "speed": round(self.speed, 3),
            "model_seconds": round(self.model_seconds, 3),
            "wait_seconds": round(self.wait_seconds, 3), "wait_share": round(self.wait_share, 4),
            "complete": self.complete,
        }

    def format(self) -> str:
        lines = [
            f"cache: {self.path} ({'complete' if self.complete else 'INCOMPLETE'})",
            f"utterances: {self.total} total, {self.extracted} extracted now, "
            f"{self.reused} reused from an earlier run, {len(self.failed)} failed",
        ]
        if self.extracted and not self.audio_seconds:  # text: no audio
            lines.append(f"text: {self.extracted} sentences in {self.wall_seconds:.1f} s")
        elif self.extracted:
            lines.append(
                f"audio: {self.audio_seconds / 3600:.3f} h in {self.wall_seconds:.1f} s "
                f"({self.speed:.1f}x real time); model waited for audio "
                f"{100 * self.wait_share:.1f}% of the time"
            )
        for utt, reason in list(self.failed.items())[:20]:
            lines.append(f"  failed {utt}: {reason}")
        if len(self.failed) > 20:
            lines.append(f"  ... and {len(self.failed) - 20} more (emoprobe info {self.path})")
        return "\n".join(lines)


@dataclass
class ExtractResult:
    """The cache path and the summary of the call that produced it."""

    path: Path
    summary: ExtractSummary


@dataclass
class _Loaded:
    """One batch after background decoding: rows (windows), their owners, prepared inputs."""

    waves: list[np.ndarray]
    owners: list[int]
    groups: list[Prepared]
    failures: dict[int, str]
    seconds: dict[int, float]


# ------------------------------------------------------------------------------------ runner


class _Run:
    def __init__(
        self,
        records: Records,
        upstream: Upstream,
        writer: CacheWriter,
        settings: ExtractSettings,
        *,
        device: str,
        frame_layers: tuple[int, ...],
        on_batch: BatchCallback | None,
    ) -> None:
        self.records = records
        self.up = upstream
        self.writer = writer
        self.settings = settings
        self.device = device
        self.frame_layers = frame_layers
        self.on_batch = on_batch
        self.journal = FrameJournal(writer.path)
        sr = upstream.sample_rate
        self.window = upstream.input_window(settings.max_seconds)
        self.min_samples = upstream.min_samples()
        self.tokens: dict[int, np.ndarray] = {}  # text upstreams: token ids per utterance
        if upstream.modality == "audio" and self.window is not None \
                and self.window < 2 * self.min_samples:
            raise ExtractionError(
                f"--max-seconds {settings.max_seconds} is too short for {upstream.name}: "
                f"windows need at least {2 * self.min_samples / sr:.3f} s"
            )
        self.summary = ExtractSummary(writer.path, len(records))

    # --- failures

    def fail(self, failures: Mapping[int, str]) -> None:
        """Record failures; under on_error=stop raise for the first, naming the utterance."""
        if not failures:
            return
        if self.settings.on_error == "stop":
            items = sorted(failures.items())
            lines = [f"utterance {self.records[i]['id']!r} ({self.records[i]['path']}): {reason}"
                     for i, reason in items[:10]]
            if len(items) > 10:
                lines.append(f"... and {len(items) - 10} more")
            raise ExtractionError(
                "\n".join(lines) + "\npass --on-error skip to record failures and go on"
            )
        self.writer.mark_failed(failures)
        for index, reason in failures.items():
            log.warning("skipped %s: %s", self.records[index]["id"], reason)

    # --- background work (loader threads)

    def load(self, batch: Sequence[Item]) -> _Loaded:
        sr = self.up.sample_rate
        waves: list[np.ndarray] = []
        owners: list[int] = []
        failures: dict[int, str] = {}
        seconds: dict[int, float] = {}
        for it in batch:
            if self.up.modality == "text":  # tokenised up front; no duration
                seconds[it.index] = 0.0
                for a, b in window_bounds(len(self.tokens[it.index]), self.window):
                    waves.append(self.tokens[it.index][a:b])
                    owners.append(it.index)
                continue
            try:
                wave, _ = load_audio(self.records[it.index]["path"], sr)
            except AudioError as exc:
                failures[it.index] = str(exc)
                continue
            if len(wave) < self.min_samples:
                failures[it.index] = (
                    f"too short: {len(wave)} samples at {sr} Hz give no output frame "
                    f"(the upstream needs at least {self.min_samples})"
                )
                continue
            seconds[it.index] = len(wave) / sr
            for a, b in window_bounds(len(wave), self.window):
                waves.append(wave[a:b])
                owners.append(it.index)
        groups = self.up.prepare(waves) if waves else []
        return _Loaded(waves, owners, groups, failures, seconds)

    # --- model thread

    def forward(self, loaded: _Loaded) -> tuple[list[int], RowStats | None, dict[int, str]]:
        """All rows of a batch -> (rows that ran, their stats in that order, failures).

        A group that runs out of memory is split in halves and retried; a single window that
        still does not fit fails its utterance (never dropped silently)."""
        placed: dict[int, RowStats] = {}
        failures: dict[int, str] = {}
        todo = list(loaded.groups)
        while todo:
            group = todo.pop()
            try:
                stats = self.up.run(group, self.frame_layers)
                oom = False
            except Exception as exc:
                if not _is_oom(exc):
                    raise
                oom = True  # handled below, once the traceback (and its tensors) is freed
            if oom:
                if self.device.startswith("cuda"):
                    torch.cuda.empty_cache()
                if len(group.rows) == 1:
                    row = group.rows[0]
                    failures[loaded.owners[row]] = (
                        f"out of memory on {self.device} even alone "
                        f"({len(loaded.waves[row]) / self.up.sample_rate:.1f} s window)"
                    )
                    continue
                log.info("out of memory on %d rows; retrying in halves", len(group.rows))
                half = len(group.rows) // 2
                for part in (group.rows[:half], group.rows[half:]):
                    for sub in self.up.prepare([loaded.waves[r] for r in part]):
                        sub.rows = [part[r] for r in sub.rows]
                        todo.append(sub)
                continue
            for pos, row in enumerate(group.rows):
                placed[row] = stats.select([pos])
        rows = sorted(placed)
        if not rows:
            return [], None, failures
        return rows, RowStats.concat([placed[r] for r in rows]), failures

    def commit(self, loaded: _Loaded, stats: RowStats | None, failures: dict[int, str],
               rows: list[int]) -> int:
        """Pool, check, write one batch; returns the number of utterances written."""
        failures = {**loaded.failures, **failures}
        owners = [loaded.owners[r] for r in rows]
        pooled: dict[int, Pooled] = {}
        if stats is not None:
            pooled = pool_utterances(stats, owners, self.up.pooling)
        good: list[int] = []
        for index in dict.fromkeys(loaded.owners):
            if index in failures:
                continue
            item = pooled.get(index)
            if item is None:
                failures[index] = "no valid output frame"
                continue
            bad = [layer for layer in range(item.vectors.shape[0])
                   if not np.isfinite(item.vectors[layer]).all()]
            bad += [layer for layer, fr in item.frames.items()
                    if layer not in bad and not np.isfinite(fr).all()]
            if bad:
                hint = getattr(self.up, "nonfinite_hint", "")
                if not hint:
                    hint = ("compare with --dtype float32" if self.up.dtype != "float32"
                            else "the model itself produces them")
                failures[index] = (
                    f"non-finite values (NaN or Inf) in layer(s) {sorted(set(bad))} with dtype "
                    f"{self.up.dtype}; refusing to write them ({hint})"
                )
                continue
            good.append(index)
        if good:
            if self.frame_layers:
                self.journal.add({i: pooled[i].frames for i in good})
            self.writer.write_rows(
                good,
                np.stack([pooled[i].vectors for i in good], axis=1),
                [pooled[i].n_frames for i in good],
                [loaded.seconds[i] for i in good],
            )
        self.fail(failures)
        return len(good)

    def run(self, items: Sequence[Item], workers: int) -> None:
        sr = self.up.sample_rate
        batches = plan_batches(
            items,
            budget_samples=self.up.batch_budget(self.settings, self.device),
            window=self.window,
            padded_row=self.up.padded_row,
            equal_length=not self.up.pads,
        )
        prefetch = Prefetcher(batches, self.load, workers=workers)
        start = time.perf_counter()
        label = os.path.basename(os.path.normpath(self.up.name)) or self.up.name
        if self.up.modality == "text":  # progress in sentences
            bar = progress_bar(total=len(items), unit="sentence", desc=f"extract {label}",
                               disable=not self.settings.progress, dynamic_ncols=True)
        else:
            bar = progress_bar(total=sum(it.n_samples for it in items) / sr / 3600,
                               unit="h audio", desc=f"extract {label}",
                               disable=not self.settings.progress, dynamic_ncols=True,
                               bar_format="{l_bar}{bar}| {n:.3f}/{total:.3f} h [{elapsed}<"
                                          "{remaining}{postfix}]")
        utterances = 0
        try:
            for n_batch, (batch, loaded) in enumerate(prefetch, 1):
                t0 = time.perf_counter()
                rows, stats, failures = self.forward(loaded)
                written = self.commit(loaded, stats, failures, rows)
                self.summary.model_seconds += time.perf_counter() - t0
                self.summary.extracted += written
                self.summary.audio_seconds += sum(loaded.seconds.values())
                utterances += len(batch)
                if self.up.modality == "text":
                    bar.update(len(batch))
                else:
                    speed = self.summary.audio_seconds / max(time.perf_counter() - start, 1e-9)
                    bar.set_postfix_str(
                        f"{utterances}/{len(items)} utterances, {speed:.1f}x real time "
                        f"(real-time factor {1 / speed if speed else math.inf:.3f})",
                        refresh=False)
                    bar.update(sum(it.n_samples for it in batch) / sr / 3600)
                if self.on_batch is not None:
                    self.on_batch({"batch": n_batch, "batches": len(batches),
                                   "done": int(self.writer.done.sum()),
                                   "total": len(self.records)})
        finally:
            bar.close()
            self.summary.wait_seconds += prefetch.wait_seconds
            self.summary.wall_seconds += time.perf_counter() - start


# ------------------------------------------------------------------------------- public API


def _audio_problems(records: Records, infos: Sequence[Any], progress: bool) -> dict[int, str]:
    """Per-utterance audio problems (missing, unreadable, empty) from the manifest check;
    its other findings (labels, folds) concern probing, so they are logged, not fatal."""
    from emoprobe.data.check import MISSING, UNREADABLE, ZERO_LENGTH, check_manifest

    report = check_manifest(records, infos=infos, progress=progress)
    index = {r["id"]: i for i, r in enumerate(records)}
    problems: dict[int, str] = {}
    other = []
    for p in report.problems:
        if p.kind in (MISSING, UNREADABLE, ZERO_LENGTH) and p.item in index:
            problems[index[p.item]] = f"{p.kind}: {p.detail}"
        else:
            other.append(str(p))
    if other:
        more = f"; ... and {len(other) - 5} more" if len(other) > 5 else ""
        log.info("manifest check (not blocking extraction): %s%s", "; ".join(other[:5]), more)
    return problems


_PART_NAMES = {
    "manifest": "manifest",
    "upstream": "model (checkpoint, revision or weights)",
    "settings": "output settings (dtype, max_seconds, frames)",
}


def _open_or_create(
    path: Path,
    records: Records,
    upstream: Upstream,
    meta: dict[str, Any],
    parts: dict[str, str],
    overwrite: bool,
) -> CacheWriter | None:
    """The writer of a matching existing cache, a new cache, or None when already complete."""
    for leftover in (".create.tmp", ".final.tmp", ".write.tmp"):
        path.with_name(path.name + leftover).unlink(missing_ok=True)
    if path.exists() and overwrite:
        path.unlink()
        FrameJournal(path).remove()
    if path.exists():
        try:
            stored = read_meta(path)
        except CacheError as exc:
            raise CacheError(f"{exc}; pass --overwrite to extract again into {path}") from None
        if stored.get("fingerprint") != meta["fingerprint"]:
            differing = describe_mismatch(stored.get("fingerprint_parts") or {}, parts)
            what = " and ".join(_PART_NAMES[d] for d in differing) or "cache format"
            raise CacheError(
                f"{path} was extracted from a different {what} (stored fingerprint "
                f"{str(stored.get('fingerprint'))[:12]}, this run {meta['fingerprint'][:12]}); "
                "it is never reused silently: pass --overwrite to replace it, or choose "
                "another --out or --name"
            )
        if stored.get("complete"):
            FrameJournal(path).remove()  # left over if the last run died right after finishing
            return None
        log.info("resuming %s", path)
        return CacheWriter(path)
    FrameJournal(path).remove()
    return CacheWriter.create(path, records, n_layers=upstream.n_layers, dim=upstream.dim,
                              meta=meta)


def run_extraction(
    manifest: str | os.PathLike[str] | Records,
    model: str,
    out_dir: str | os.PathLike[str],
    *,
    settings: ExtractSettings | None = None,
    on_batch: BatchCallback | None = None,
    shard: ShardSpec | None = None,
    **options: Any,
) -> ExtractResult:
    """Extract pooled embeddings of every layer of `model` for every utterance of `manifest`
    into `out_dir/<name>.h5`; returns the path and a summary. Options are the fields of
    ExtractSettings. `on_batch` is called after each written batch with progress counts.
    With `shard`, only that part of the manifest, into `out_dir/<name>.shard-K-of-N.h5`."""
    settings = settings or ExtractSettings(**options)
    if isinstance(manifest, (str, os.PathLike)):
        manifest_path: str | None = str(manifest)
        records: Records = read_manifest(manifest)
    else:
        manifest_path, records = None, list(manifest)
    device = settings.resolved_device()
    threads = settings.torch_threads or (available_cpus() if device == "cpu" else None)
    with _torch_threads(threads):
        upstream = load_upstream(model, revision=settings.revision, device=device,
                                 dtype=settings.dtype, modality=settings.modality)
        frame_layers = settings.frame_layers(upstream.n_layers)
        if frame_layers and upstream.kind == "egemaps":
            raise ExtractionError("egemaps has no frame-level output; drop --frames")
        output_settings = {
            "format_version": FORMAT_VERSION,
            "dtype": upstream.dtype,
            "max_seconds": settings.max_seconds,
            "frames": list(frame_layers),
            "pooling": upstream.pooling,
        }
        fingerprint, parts = compute_fingerprint(records, upstream.identity(), output_settings)
        workers = settings.resolved_workers()
        batch_seconds = settings.resolved_batch_seconds(device)
        meta = {
            **upstream.describe(),
            "frame_layers": list(frame_layers),
            "manifest_path": manifest_path,
            "fingerprint": fingerprint,
            "fingerprint_parts": parts,
            "fingerprinted_settings": output_settings,
            "settings": {**settings.to_dict(), "device": device, "batch_seconds": batch_seconds,
                         "batch_budget": upstream.batch_budget(settings, device),
                         "workers": workers, "torch_threads": threads},
            "versions": versions(),
        }
        path = Path(out_dir) / f"{settings.name or cache_name(model, settings.revision)}"
        path = path.with_name(path.name + CACHE_SUFFIX)
        if shard is not None:  # one part of the manifest in its own file (extract/shard.py)
            records, path, meta, parts = restrict_to_shard(
                shard, records, upstream, settings, meta, path, device=device)
        with CacheLock(path), sigterm_as_interrupt():
            return _extract_locked(path, records, upstream, settings, meta, parts,
                                   device=device, frame_layers=frame_layers, workers=workers,
                                   on_batch=on_batch)


def _extract_locked(
    path: Path,
    records: Records,
    upstream: Upstream,
    settings: ExtractSettings,
    meta: dict[str, Any],
    parts: dict[str, str],
    *,
    device: str,
    frame_layers: tuple[int, ...],
    workers: int,
    on_batch: BatchCallback | None,
) -> ExtractResult:
    writer = _open_or_create(path, records, upstream, meta, parts, settings.overwrite)
    if writer is None:
        summary = ExtractSummary(path, len(records), reused=len(records), complete=True)
        with contextlib.closing(_reader(path)) as reader:
            summary.failed = dict(reader.failed)
        log.info("%s is complete and matches this run; nothing to do", path)
        return ExtractResult(path, summary)
    run = _Run(records, upstream, writer, settings, device=device,
               frame_layers=frame_layers, on_batch=on_batch)
    try:
        if frame_layers:  # frames lost with a deleted journal: extract those rows again
            covered = run.journal.covered()
            lost = [i for i in np.flatnonzero(writer.done & ~writer.failed)
                    if not set(frame_layers) <= covered.get(int(i), set())]
            if lost:
                writer.done[lost] = False
        pending = writer.pending()
        run.summary.reused = len(records) - len(pending)
        if len(pending) and upstream.modality == "text":
            run.tokens, bad = upstream.tokenize(records, pending)  # type: ignore[attr-defined]
            run.fail(bad)
            run.run([Item(i, len(t)) for i, t in run.tokens.items()], workers)
        elif len(pending):
            from emoprobe.data.headers import read_headers

            infos = read_headers([records[i]["path"] for i in range(len(records))],
                                 workers=max(4, workers), progress=settings.progress)
            problems = _audio_problems(records, infos, settings.progress)
            bad = {int(i): problems[int(i)] for i in pending if int(i) in problems}
            run.fail(bad)
            sr = upstream.sample_rate
            items = [
                Item(int(i), resampled_length(infos[i].frames, infos[i].sample_rate, sr))
                for i in pending if int(i) not in bad
            ]
            run.run(items, workers)
        run.summary.failed = writer.failure_reasons()
        run.summary.complete = True
        summary_meta = {"last_run": run.summary.to_dict(),
                        "counts": {"total": len(records),
                                   "usable": int((writer.done & ~writer.failed).sum()),
                                   "failed": int(writer.failed.sum())}}
        keep = {int(i) for i in np.flatnonzero(writer.done & ~writer.failed)}
        frames = run.journal.items(keep) if frame_layers else None
        writer.finalize(frames=frames, meta=summary_meta)
        run.journal.remove()
        return ExtractResult(path, run.summary)
    except KeyboardInterrupt:
        log.warning("interrupted: %d of %d utterances are saved in %s; run the same command "
                    "again to resume", int(writer.done.sum()), len(records), path)
        raise
    finally:
        writer.close()


def _reader(path: Path) -> Any:
    from emoprobe.cache.store import CacheReader

    return CacheReader(path)


def extract(
    manifest: str | os.PathLike[str] | Records,
    model: str,
    out_dir: str | os.PathLike[str],
    **settings: Any,
) -> Path:
    """Extract `model` over `manifest` into a cache in `out_dir` and return its path.

    `model` is a transformers hub id or local checkpoint folder, `fbank` or `egemaps`.
    Settings (keywords): revision, device, dtype, batch_seconds, max_seconds, frames,
    on_error, workers, overwrite, name, progress, torch_threads. Re-running an interrupted
    call with the same arguments resumes it.

    >>> path = extract("manifest.jsonl", "fbank", "features/")  # doctest: +SKIP
    """
    return run_extraction(manifest, model, out_dir, **settings).path


__all__ = ["ExtractResult", "ExtractSummary", "cache_name", "extract", "run_extraction"]
