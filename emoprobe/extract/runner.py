"""`extract()`: one upstream over one manifest into one resumable cache.

The flow: take each utterance's audio identity (sample rate, samples, channels) from the
manifest, reading a header only where a field is missing; open (or create) the cache under an
exclusive lock, refusing a file made with another model or settings, or from other audio for
an id it holds; grow it by the utterances it lacks; plan length-sorted batches of the
utterances still to do; decode, resample and featurise them in background threads while the
model runs; pool over valid frames; write each batch and mark it done; finally mark the cache
complete. Re-running the same call resumes an interrupted run; a manifest that differs only in
labels, folds, speakers, transcripts or paths reuses the cache as it is.
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

from emoprobe.cache.fingerprint import (
    audio_part,
    combine,
    describe_mismatch,
    static_parts,
    text_key,
)
from emoprobe.cache.lock import CacheLock
from emoprobe.cache.store import (
    CACHE_SUFFIX,
    FORMAT_VERSION,
    TEXT_ROW_KEY,
    CacheReader,
    CacheWriter,
    FrameLayout,
    rebuild_cache,
)
from emoprobe.data.audio import AudioInfo, decoded_digest, load_audio
from emoprobe.data.headers import UNREADABLE, HeaderError, HeaderResult, audio_identities
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
from emoprobe.extract.shard import ShardSpec, plan_parameters, restrict_to_shard
from emoprobe.extract.upstream import BASELINES, Prepared, Upstream, load_upstream
from emoprobe.extract.upstream.text import TEXT_FIELD
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
    """The cache path and the summary of the call that produced it. It is path-like, so
    `open_cache(extract(...))` reads the cache it names."""

    path: Path
    summary: ExtractSummary

    def __fspath__(self) -> str:
        return os.fspath(self.path)


@dataclass
class _Loaded:
    """One batch after background decoding: rows (windows), their owners, prepared inputs."""

    waves: list[np.ndarray]
    owners: list[int]
    groups: list[Prepared]
    failures: dict[int, str]
    seconds: dict[int, float]
    hashes: dict[int, str] = field(default_factory=dict)


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
        sr = upstream.sample_rate
        self.window = upstream.input_window(settings.max_seconds)
        self.frame_counts = writer.frame_counts()
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
        hashes: dict[int, str] = {}
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
            if self.settings.hash_audio:
                hashes[it.index] = decoded_digest(self.records[it.index]["path"])
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
        return _Loaded(waves, owners, groups, failures, seconds, hashes)

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
            if self.frame_counts is not None and item.n_frames != self.frame_counts[index]:
                failures[index] = (
                    f"the decoded audio gives {item.n_frames} frames, its audio identity "
                    f"{self.records[index].get('num_samples')} samples at "
                    f"{self.records[index].get('sample_rate')} Hz gives "
                    f"{self.frame_counts[index]}; the file changed since the manifest was "
                    "prepared (prepare it again) or its header misstates its length"
                )
                continue
            good.append(index)
        if good:
            self.writer.set_hashes({i: loaded.hashes[i] for i in good if i in loaded.hashes})
            frames = ({layer: [pooled[i].frames[layer] for i in good]
                       for layer in self.frame_layers} if self.frame_layers else None)
            self.writer.write_rows(
                good,
                np.stack([pooled[i].vectors for i in good], axis=1),
                [pooled[i].n_frames for i in good],
                [loaded.seconds[i] for i in good],
                frames=frames,
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


def identity_array(infos: Sequence[HeaderResult]) -> np.ndarray:
    """(sample rate, samples, channels) per utterance; zeros where the header is unreadable."""
    return np.array([[i.sample_rate, i.frames, i.channels] if isinstance(i, AudioInfo)
                     else [0, 0, 0] for i in infos], dtype=np.int64).reshape(-1, 3)


def _audio_problems(infos: Sequence[HeaderResult]) -> dict[int, str]:
    """Utterances whose audio cannot be extracted: missing, unreadable or empty. The probing
    checks (labels, folds) are not run here: they belong to the probe."""
    from emoprobe.data.check import ZERO_LENGTH

    problems: dict[int, str] = {}
    for i, info in enumerate(infos):
        if isinstance(info, HeaderError):
            problems[i] = f"{info.kind}: {info.message}"
        elif info.frames <= 0:
            problems[i] = f"{ZERO_LENGTH}: the audio holds no samples"
    return problems


def _row_identities(records: Records, upstream: Upstream, workers: int, progress: bool
                    ) -> tuple[list[HeaderResult], list[str] | None]:
    """What identifies each row besides its id. Audio: (sample rate, samples, channels) from
    the manifest (headers read only where a field is missing). Text: the number of tokens of
    the sentence, and a hash of the sentence as its content key."""
    if upstream.modality != "text":
        return audio_identities(records, workers=max(4, workers), progress=progress), None
    tokens, problems = upstream.tokenize(records, range(len(records)))  # type: ignore
    infos: list[HeaderResult] = [
        AudioInfo(0, len(tokens[i]), 0) if i in tokens
        else HeaderError(UNREADABLE, problems.get(i, "no sentence")) for i in range(len(records))]
    return infos, [text_key(r.get(TEXT_FIELD)) for r in records]


def _frame_layout(upstream: Upstream, settings: ExtractSettings, device: str,
                  frame_layers: Sequence[int], audio: np.ndarray) -> FrameLayout | None:
    """Frame storage sized from each utterance's audio identity (frames the model gives for
    its windows), so that frames are written in place like the pooled rows."""
    if not frame_layers:
        return None
    window = plan_parameters(upstream, settings, device)["window"]
    sr = upstream.sample_rate
    counts = np.zeros(len(audio), dtype=np.int64)
    for i, (rate, n, _) in enumerate(audio):
        if n > 0:  # text rows (rate 0) count tokens
            length = resampled_length(int(n), int(rate), sr) if rate > 0 else int(n)
            counts[i] = sum(upstream.valid_frames(b - a) for a, b in window_bounds(length, window))
    dim = upstream.dim // 2 if upstream.pooling == "mean+std" else upstream.dim
    return FrameLayout(tuple(frame_layers), counts, dim)


_PART_NAMES = {
    "upstream": "model (checkpoint, revision or weights)",
    "settings": "output settings (dtype, max_seconds, frames)",
}


def _describe_audio(row: Sequence[int]) -> str:
    rate, n, channels = (int(v) for v in row)
    return f"{n} samples at {rate} Hz, {channels} channel(s)"


@dataclass
class _Opened:
    """An open writer and the record and audio facts of each of its rows for this run."""

    writer: CacheWriter
    records: list[Mapping[str, Any]]
    infos: list[HeaderResult]
    in_manifest: np.ndarray  # row -> True when the row is one of this run's records
    complete: bool = False  # complete already: nothing to extract


def _open_or_create(
    path: Path,
    records: Records,
    infos: Sequence[HeaderResult],
    keys: Sequence[str] | None,
    upstream: Upstream,
    settings: ExtractSettings,
    meta: dict[str, Any],
    frame_layers: Sequence[int],
    device: str,
) -> _Opened | None:
    """The writer of a matching existing cache (grown by the records it lacks), a new cache,
    or None when the cache is complete and holds every record with the same audio."""
    import shutil

    for leftover in (".create.tmp", ".final.tmp", ".write.tmp", ".grow.tmp"):
        path.with_name(path.name + leftover).unlink(missing_ok=True)
    shutil.rmtree(path.with_name(path.name + ".frames"), ignore_errors=True)  # format 1
    audio = identity_array(infos)
    if path.exists() and settings.overwrite:
        path.unlink()
    if not path.exists():
        writer = CacheWriter.create(
            path, records, n_layers=upstream.n_layers, dim=upstream.dim, meta=meta, audio=audio,
            frames=_frame_layout(upstream, settings, device, frame_layers, audio))
        writer.set_hashes(dict(enumerate(keys or [])))
        return _Opened(writer, list(records), list(infos), np.ones(len(records), dtype=bool))
    try:
        reader = CacheReader(path, allow_incomplete=True)
    except CacheError as exc:
        raise CacheError(f"{exc}; pass --overwrite to extract again into {path}") from None
    with reader:
        if reader.format_version != FORMAT_VERSION:
            raise CacheError(
                f"{path} is a cache of format version {reader.format_version}, which this "
                f"emoprobe reads but does not extend (it writes version {FORMAT_VERSION}); pass "
                "--overwrite to extract again, or choose another --out or --name")
        stored_parts = reader.meta.get("fingerprint_parts") or {}
        wanted = meta["fingerprint_parts"]
        differing = [p for p in describe_mismatch(stored_parts, wanted) if p in _PART_NAMES]
        stored_shard = (reader.meta.get("shard") or {}).get("fingerprint")
        if differing or stored_shard != (meta.get("shard") or {}).get("fingerprint"):
            what = " and ".join(_PART_NAMES[d] for d in differing) or "manifest split"
            raise CacheError(
                f"{path} was extracted with a different {what}; it is never reused silently: "
                "pass --overwrite to replace it, or choose another --out or --name")
        ids, stored_audio, stored_keys = list(reader.ids), reader.audio.copy(), reader.hashes()
        usable, complete = reader.usable.copy(), reader.complete
        stored_records = list(reader.records)
    row_of = {utt: i for i, utt in enumerate(ids)}
    rows = [row_of.get(str(r["id"])) for r in records]
    known = audio[:, 0] > 0

    def same(i: int, j: int) -> bool:
        if keys is not None:
            return stored_keys[i] == keys[j]
        return not known[j] or np.array_equal(stored_audio[i], audio[j])

    changed = [j for j, i in enumerate(rows) if i is not None and usable[i] and not same(i, j)]
    if changed and keys is not None:
        shown = ", ".join(repr(records[j]["id"]) for j in changed[:5])
        raise CacheError(
            f"{path}: the {TEXT_FIELD} of {len(changed)} utterance(s) differs from the one "
            f"they were extracted from ({shown}). Pass --overwrite to extract again, or "
            "choose another --out or --name")
    if changed:
        shown = "; ".join(
            f"{records[j]['id']!r}: cached from {_describe_audio(stored_audio[rows[j]])}, "
            f"now {_describe_audio(audio[j])} ({records[j]['path']})" for j in changed[:5])
        more = f"; ... and {len(changed) - 5} more" if len(changed) > 5 else ""
        raise CacheError(
            f"{path}: the audio of {len(changed)} utterance(s) differs from the audio they were "
            f"extracted from: {shown}{more}. Pass --overwrite to extract again, or choose "
            "another --out or --name")
    new = [j for j, i in enumerate(rows) if i is None]
    retarget = [(i, j) for j, i in enumerate(rows) if i is not None and not usable[i]
                and not (np.array_equal(stored_audio[i], audio[j])
                         and (keys is None or stored_keys[i] == keys[j]))]
    finished = complete and not new and not retarget
    if finished and not settings.hash_audio:
        return None
    all_audio = stored_audio.copy()
    for i, j in retarget:
        all_audio[i] = audio[j]
    if finished:
        writer = CacheWriter(path)  # only to store audio hashes (--hash-audio)
    elif new:
        log.info("%s: adding %d utterance(s) to the %d it holds", path, len(new), len(ids))
        all_audio = np.concatenate([all_audio, audio[new]])
        layout = _frame_layout(upstream, settings, device, frame_layers, all_audio)
        all_keys = None
        if keys is not None:
            all_keys = list(stored_keys)
            for i, j in retarget:
                all_keys[i] = keys[j]
            all_keys += [keys[j] for j in new]
        writer = rebuild_cache(path, [*stored_records, *(records[j] for j in new)], all_audio,
                               frames=layout, keys=all_keys,
                               meta={k: v for k, v in meta.items() if k != "fingerprint_parts"})
    elif retarget and frame_layers:  # frame storage is sized by the audio: lay it out again
        layout = _frame_layout(upstream, settings, device, frame_layers, all_audio)
        writer = rebuild_cache(path, stored_records, all_audio, frames=layout)
        if keys is not None:
            writer.set_hashes({i: keys[j] for i, j in retarget})
    else:
        log.info("resuming %s", path)
        writer = CacheWriter(path)
        if retarget:
            writer.mark_incomplete()
        writer.set_audio([i for i, _ in retarget], all_audio[[i for i, _ in retarget]])
        if keys is not None:
            writer.set_hashes({i: keys[j] for i, j in retarget})
    # this run's record (current path) where it has one, the stored record otherwise
    work: list[Mapping[str, Any]] = [*stored_records, *(records[j] for j in new)]
    work_infos: list[HeaderResult | None] = [None] * len(work)
    in_manifest = np.zeros(len(work), dtype=bool)
    for j, rec in enumerate(records):
        i = row_of.get(str(rec["id"]), len(ids) + new.index(j) if rows[j] is None else -1)
        work[i], work_infos[i], in_manifest[i] = rec, infos[j], True
    outside = [i for i, info in enumerate(work_infos) if info is None]
    if outside:
        pending = set(writer.pending().tolist())
        for i in outside:
            work_infos[i] = (AudioInfo(*(int(v) for v in all_audio[i])) if i not in pending
                             else None)
        need = [i for i in outside if work_infos[i] is None]
        for i, info in zip(need, audio_identities([work[i] for i in need],
                                                  progress=settings.progress)):
            work_infos[i] = info
    return _Opened(writer, work, [w for w in work_infos if w is not None], in_manifest, finished)


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
        parts = static_parts(upstream.identity(), output_settings)
        workers = settings.resolved_workers()
        batch_seconds = settings.resolved_batch_seconds(device)
        infos, keys = _row_identities(records, upstream, workers, settings.progress)
        meta = {
            **upstream.describe(),
            "frame_layers": list(frame_layers),
            "manifest_path": manifest_path,
            "fingerprint_parts": parts,
            "fingerprinted_settings": output_settings,
            "settings": {**settings.to_dict(), "device": device, "batch_seconds": batch_seconds,
                         "batch_budget": upstream.batch_budget(settings, device),
                         "workers": workers, "torch_threads": threads},
            "versions": versions(),
        }
        if keys is not None:
            meta["row_key"] = TEXT_ROW_KEY
        path = Path(out_dir) / f"{settings.name or cache_name(model, settings.revision)}"
        path = path.with_name(path.name + CACHE_SUFFIX)
        if shard is not None:  # one part of the manifest in its own file (extract/shard.py)
            whole = {"audio": audio_part([str(r["id"]) for r in records],
                                         identity_array(infos), keys), **parts}
            records, infos, path, meta = restrict_to_shard(
                shard, records, infos, upstream, settings,
                {**meta, "fingerprint": combine(whole), "fingerprint_parts": whole}, path,
                device=device)
            if keys is not None:
                keys = [text_key(r.get(TEXT_FIELD)) for r in records]
        with CacheLock(path), sigterm_as_interrupt():
            return _extract_locked(path, records, infos, keys, upstream, settings, meta,
                                   device=device, frame_layers=frame_layers, workers=workers,
                                   on_batch=on_batch)


def _verify_hashes(opened: _Opened, settings: ExtractSettings, workers: int) -> None:
    """--hash-audio on finished rows: decode them again, compare with the stored hash (or
    store it where none was computed); a different hash is an error naming the ids. Audio
    that cannot be read leaves its row as it is."""
    from emoprobe.data.audit import hash_audio

    writer = opened.writer
    stored = writer.hashes()
    rows = [int(i) for i in np.flatnonzero(writer.done & ~writer.failed & opened.in_manifest)]
    digests, _ = hash_audio([str(opened.records[i]["path"]) for i in rows],
                            workers=max(1, workers), progress=settings.progress)
    found = dict(zip(rows, digests))
    changed = [i for i, h in found.items() if h and stored[i] and h != stored[i]]
    if changed:
        names = ", ".join(repr(writer.ids[i]) for i in changed[:5])
        raise CacheError(
            f"{writer.path}: the decoded samples of {len(changed)} utterance(s) differ from "
            f"those they were extracted from ({names}); pass --overwrite to extract again")
    writer.set_hashes({i: h for i, h in found.items() if h and not stored[i]})


def _extract_locked(
    path: Path,
    records: Records,
    infos: Sequence[HeaderResult],
    keys: Sequence[str] | None,
    upstream: Upstream,
    settings: ExtractSettings,
    meta: dict[str, Any],
    *,
    device: str,
    frame_layers: tuple[int, ...],
    workers: int,
    on_batch: BatchCallback | None,
) -> ExtractResult:
    opened = _open_or_create(path, records, infos, keys, upstream, settings, meta,
                             frame_layers, device)
    if opened is not None and opened.complete:
        try:
            _verify_hashes(opened, settings, workers)
        finally:
            opened.writer.close()
    if opened is None or opened.complete:
        summary = ExtractSummary(path, len(records), reused=len(records), complete=True)
        with CacheReader(path) as reader:
            wanted = {str(r["id"]) for r in records}
            summary.failed = {k: v for k, v in reader.failed.items() if k in wanted}
        log.info("%s is complete and holds every utterance of this run; nothing to do", path)
        return ExtractResult(path, summary)
    writer = opened.writer
    run = _Run(opened.records, upstream, writer, settings, device=device,
               frame_layers=frame_layers, on_batch=on_batch)
    try:
        if settings.hash_audio:
            _verify_hashes(opened, settings, workers)
        pending = writer.pending()
        run.summary.reused = int(opened.in_manifest.sum()
                                 - np.isin(np.flatnonzero(opened.in_manifest), pending).sum())
        if len(pending) and upstream.modality == "text":
            run.tokens, bad = upstream.tokenize(opened.records,  # type: ignore[attr-defined]
                                                pending)
            run.fail(bad)
            run.run([Item(i, len(t)) for i, t in run.tokens.items()], workers)
        elif len(pending):
            problems = _audio_problems(opened.infos)
            bad = {int(i): problems[int(i)] for i in pending if int(i) in problems}
            run.fail(bad)
            sr = upstream.sample_rate
            items = []
            for i in pending:
                info = opened.infos[int(i)]
                if int(i) not in bad and isinstance(info, AudioInfo):
                    items.append(Item(int(i), resampled_length(info.frames, info.sample_rate,
                                                               sr)))
            run.run(items, workers)
        run.summary.failed = {k: v for k, v in writer.failure_reasons().items()
                              if opened.in_manifest[writer.index[k]]}
        run.summary.complete = True
        summary_meta = {"last_run": run.summary.to_dict(),
                        "counts": {"total": len(writer.ids),
                                   "usable": int((writer.done & ~writer.failed).sum()),
                                   "failed": int(writer.failed.sum())}}
        writer.finalize(meta=summary_meta)
        return ExtractResult(path, run.summary)
    except KeyboardInterrupt:
        log.warning("interrupted: %d of %d utterances are saved in %s; run the same command "
                    "again to resume", int(writer.done.sum()), len(writer.ids), path)
        raise
    finally:
        writer.close()


def extract(
    manifest: str | os.PathLike[str] | Records,
    model: str,
    out_dir: str | os.PathLike[str],
    **settings: Any,
) -> ExtractResult:
    """Extract `model` over `manifest` into a cache in `out_dir`; return its path and the
    summary (extracted, reused, failed and skipped utterances).

    `model` is a transformers hub id or local checkpoint folder, `fbank` or `egemaps`.
    Settings (keywords): revision, device, dtype, batch_seconds, max_seconds, frames,
    on_error, workers, overwrite, name, progress, torch_threads, hash_audio. Re-running an
    interrupted call with the same arguments resumes it.

    >>> result = extract("manifest.jsonl", "fbank", "features/")  # doctest: +SKIP
    >>> result.path, result.summary.extracted  # doctest: +SKIP
    """
    return run_extraction(manifest, model, out_dir, **settings)


__all__ = ["ExtractResult", "ExtractSummary", "cache_name", "extract", "run_extraction"]
