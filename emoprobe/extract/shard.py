"""Sharded extraction: one deterministic, length-balanced part of a manifest per process.

A shard is an ordinary resumable cache over a subset of the manifest, written to
`<name>.shard-K-of-N.h5` (K counts from 0, like SLURM array task ids), plus a `shard`
attribute saying which manifest indices it holds and the fingerprint of the whole run.

The split works on the batches a single process would form: the utterances' audio facts are
taken from the manifest (headers are read only where a field is missing), the utterances are
planned into batches exactly as `extract` plans them (longest first),
and that sequence of batches is cut into N consecutive runs holding about equal padded audio.
A shard then re-plans its own utterances into the very same batches, so every utterance is
computed with the same batch-mates and padding as in a single-process run, and merging all
shards (`emoprobe.extract.merge`) gives that run's values bit for bit rather than values that
differ in the last float bits with the batch composition. Utterances whose audio header cannot
be read belong to no batch; they are dealt round-robin and fail in their shard as they would
in a single run.

A shard resumes or is reused like any cache; its `shard` attribute names the whole run's
fingerprint (audio identities of the whole manifest, model, settings), so a shard of another
manifest's audio is never reused, while a manifest that changes only labels or paths is.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emoprobe.errors import ConfigError, ExtractionError
from emoprobe.extract.batching import Item, plan_batches, resampled_length, window_bounds

SHARD_METHOD = "batch-runs-1"
SHARD_FILE_RE = re.compile(r"^(?P<stem>.+)\.shard-(?P<index>\d+)-of-(?P<count>\d+)\.h5$")

Records = Sequence[Mapping[str, Any]]


# ------------------------------------------------------------------------------- shard specs


@dataclass(frozen=True)
class ShardSpec:
    """Shard `index` (0-based) of `count`."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ConfigError(f"a manifest splits into at least 1 shard, not {self.count}")
        if not 0 <= self.index < self.count:
            raise ConfigError(
                f"shard {self.index} of {self.count} does not exist: shards are numbered "
                f"0..{self.count - 1} (like SLURM array task ids)"
            )

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def label(self) -> str:
        """`shard-K-of-N`, K zero-padded to the width of N - 1 so that names sort."""
        width = len(str(self.count - 1))
        return f"shard-{self.index:0{width}d}-of-{self.count}"


def shard_path(cache_path: str | os.PathLike[str], spec: ShardSpec) -> Path:
    """`DIR/name.h5` -> `DIR/name.shard-K-of-N.h5`."""
    p = Path(cache_path)
    return p.with_name(f"{p.stem}.{spec.label}{p.suffix}")


def _int_env(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name)
    if value is None or value.strip() == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ExtractionError(f"environment variable {name}={value!r} is not an integer") from None


def shard_from_slurm(env: Mapping[str, str] | None = None, count: int | None = None) -> ShardSpec:
    """The shard of this SLURM array task.

    Without `count`, the array must be one range (`--array=0-7`, `1-8` or `0-14:2`): K is the
    task's position in it, `(SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN) / SLURM_ARRAY_TASK_STEP`,
    and N is `SLURM_ARRAY_TASK_COUNT`. With `count`, K is the task id itself, which suits
    resubmitting some shards of a 0-based array (`sbatch --array=3,5 ...` with `--shard slurm/8`).
    """
    env = os.environ if env is None else env
    task = _int_env(env, "SLURM_ARRAY_TASK_ID")
    if task is None:
        raise ExtractionError(
            "--shard without K/N takes the shard from a SLURM array job, but "
            "SLURM_ARRAY_TASK_ID is not set; give the shard explicitly, e.g. --shard 0/4"
        )
    if count is not None:
        if not 0 <= task < count:
            raise ExtractionError(
                f"SLURM array task id {task} is not a shard of {count} (0..{count - 1}); "
                f"submit the array as --array=0-{count - 1} or a subset of it"
            )
        return ShardSpec(task, count)
    first = _int_env(env, "SLURM_ARRAY_TASK_MIN")
    step = _int_env(env, "SLURM_ARRAY_TASK_STEP") or 1
    n = _int_env(env, "SLURM_ARRAY_TASK_COUNT")
    last = _int_env(env, "SLURM_ARRAY_TASK_MAX")
    first = task if first is None else first
    if n is None:
        if last is None:
            raise ExtractionError(
                "SLURM_ARRAY_TASK_COUNT (and SLURM_ARRAY_TASK_MAX) are not set, so the number "
                "of shards is unknown; give it with --shard slurm/N"
            )
        n = (last - first) // step + 1
    offset = task - first
    position = offset // step
    if offset % step or not 0 <= position < n:
        raise ExtractionError(
            f"SLURM array task {task} is not at a regular position of its array (min {first}, "
            f"step {step}, {n} tasks); for an array that is a subset of the shards (e.g. "
            "shards resubmitted after a failure) use --shard slurm/N with 0-based task ids"
        )
    return ShardSpec(position, n)


def parse_shard(text: str | None, env: Mapping[str, str] | None = None) -> ShardSpec | None:
    """`--shard` values: None (no sharding), `K/N`, `slurm` (K and N from the SLURM array
    job's environment) or `slurm/N` (K = the array task id, N given)."""
    if text is None:
        return None
    value = text.strip()
    if value.lower() in ("", "slurm", "auto"):
        return shard_from_slurm(env)
    head, sep, tail = value.partition("/")
    if sep and head.strip().lower() in ("slurm", "auto"):
        try:
            return shard_from_slurm(env, int(tail))
        except ValueError:
            pass
    else:
        try:
            index, count = int(head), int(tail)
        except ValueError:
            pass
        else:
            return ShardSpec(index, count)
    raise ConfigError(
        f"--shard expects K/N (0-based K, e.g. 0/4), 'slurm' or 'slurm/N', got {text!r}"
    )


# ----------------------------------------------------------------------------- the planning


@dataclass(frozen=True)
class Unit:
    """Utterances that a single process extracts together (one batch), and their cost in
    padded samples; an utterance whose audio cannot be read is a unit of cost 0."""

    indices: tuple[int, ...]
    cost: int


def split_contiguous(costs: Sequence[int], count: int) -> list[int]:
    """Shard number of each unit when a sequence of units is cut into `count` consecutive,
    non-empty runs of about equal total cost: unit u goes where the midpoint of its cost
    falls on the cumulative scale, kept in 0..count-1, never skipping a shard and leaving
    enough units for the shards after it. Deterministic; needs len(costs) >= count."""
    n_units = len(costs)
    total = sum(int(c) for c in costs) or 1
    out: list[int] = []
    before = 0
    previous = -1
    for u, cost in enumerate(costs):
        mid = count * (2 * before + int(cost)) // (2 * total)  # exact integer arithmetic
        low = max(previous, count - (n_units - u), 0)
        high = min(previous + 1, count - 1)
        previous = min(max(mid, low), high)
        out.append(previous)
        before += int(cost)
    return out


def plan_parameters(upstream: Any, settings: Any, device: str) -> dict[str, Any]:
    """The batch-planning inputs of a run, as the runner derives them."""
    return {
        "sample_rate": int(upstream.sample_rate),
        "budget_samples": upstream.batch_budget(settings, device),
        "window": upstream.input_window(settings.max_seconds),
        "padded_row": upstream.padded_row,
        "equal_length": not upstream.pads,
    }


def plan_units(
    records: Records,
    params: Mapping[str, Any],
    *,
    infos: Sequence[Any] | None = None,
    workers: int = 8,
    progress: bool = True,
    lengths: Mapping[int, int] | None = None,
) -> list[Unit]:
    """Units of work of a whole manifest: its batches as a single process plans them, then
    one zero-cost unit per utterance whose audio is missing, unreadable or empty. The audio
    facts (`infos`, from `audio_identities`) come from the manifest's own fields, and headers
    are read only for records that lack them. `lengths` (text upstreams: tokens per utterance
    that has a sentence) replaces the audio facts; utterances without one are the zero-cost
    units."""
    items: list[Item] = []
    bad: list[int] = []
    if lengths is not None:
        items = [Item(i, int(lengths[i])) for i in range(len(records)) if i in lengths]
        bad = [i for i in range(len(records)) if i not in lengths]
    else:
        from emoprobe.data.headers import HeaderError, audio_identities

        if infos is None:
            infos = audio_identities(records, workers=workers, progress=progress)
        sr = params["sample_rate"]
        for i, info in enumerate(infos):
            if isinstance(info, HeaderError) or info.frames <= 0:
                bad.append(i)
            else:
                items.append(Item(i, resampled_length(info.frames, info.sample_rate, sr)))
    batches = plan_batches(
        items,
        budget_samples=params["budget_samples"],
        window=params["window"],
        padded_row=params["padded_row"],
        equal_length=params["equal_length"],
    )
    units = []
    for batch in batches:
        rows = [window_bounds(it.n_samples, params["window"]) for it in batch]
        longest = params["padded_row"] or max(b - a for bounds in rows for a, b in bounds)
        units.append(Unit(tuple(it.index for it in batch), sum(map(len, rows)) * longest))
    units += [Unit((i,), 0) for i in bad]
    return units


@dataclass(frozen=True)
class ShardSelection:
    """The manifest indices (ascending) of one shard, its number of batches and its share of
    the padded audio (in samples at the model's rate)."""

    spec: ShardSpec
    indices: np.ndarray
    cost: int
    total_cost: int
    batches: int


def select(units: Sequence[Unit], spec: ShardSpec, n_records: int) -> ShardSelection:
    """Shard `spec`'s part: its run of consecutive batches and every N-th unreadable utterance.
    Refuses more shards than batches."""
    batches = [u for u in units if u.cost > 0]
    unreadable = [u for u in units if u.cost == 0]
    if len(batches) < spec.count:
        raise ExtractionError(
            f"cannot split this manifest into {spec.count} shards: a single process would "
            f"extract it in {len(batches)} batch(es) at this --batch-seconds, and a batch is "
            f"never split; use at most {len(batches)} shards or a smaller --batch-seconds"
        )
    owner = split_contiguous([u.cost for u in batches], spec.count)
    dealt = [u for u, k in zip(batches, owner) if k == spec.index]
    dealt += unreadable[spec.index::spec.count]
    indices = np.array(sorted(i for u in dealt for i in u.indices), dtype=np.int64)
    covered = sum(len(u.indices) for u in units)
    if covered != n_records:  # a planning bug, never a user error
        raise ExtractionError(f"shard planning covered {covered} of {n_records} utterances")
    return ShardSelection(spec, indices, sum(u.cost for u in dealt),
                          sum(u.cost for u in units), sum(1 for u in dealt if u.cost > 0))


# ------------------------------------------------------------------------ the runner's hook


def restrict_to_shard(
    spec: ShardSpec,
    records: Records,
    infos: Sequence[Any],
    upstream: Any,
    settings: Any,
    meta: Mapping[str, Any],
    path: Path,
    *,
    device: str,
) -> tuple[list[Mapping[str, Any]], list[Any], Path, dict[str, Any]]:
    """Turn a whole-manifest run into shard `spec`'s run: (its records, their audio facts,
    its file, its cache metadata). `meta` carries the whole run's fingerprint (over the audio
    of every record), which the shard records so that merge can check its shards belong
    together. Called by `run_extraction(..., shard=spec)`."""
    params = plan_parameters(upstream, settings, device)
    lengths = None
    if upstream.modality == "text":
        tokens, _ = upstream.tokenize(records, range(len(records)))
        lengths = {i: len(t) for i, t in tokens.items()}
    units = plan_units(records, params, infos=infos, lengths=lengths)
    chosen = select(units, spec, len(records))
    target = shard_path(path, spec)
    if not settings.overwrite:
        _check_same_split(target, chosen, meta["fingerprint"], params)
    subset = [records[int(i)] for i in chosen.indices]
    out = {k: v for k, v in meta.items() if k != "fingerprint"}
    out["fingerprint_parts"] = {k: v for k, v in meta["fingerprint_parts"].items()
                                if k != "audio"}
    out["shard"] = {
        "index": spec.index,
        "count": spec.count,
        "method": SHARD_METHOD,
        "indices": chosen.indices.tolist(),
        "n_utterances": len(records),
        "fingerprint": meta["fingerprint"],
        "fingerprint_parts": dict(meta["fingerprint_parts"]),
        "plan": {**params, "batches": chosen.batches, "padded_samples": chosen.cost,
                 "total_padded_samples": chosen.total_cost},
    }
    return subset, [infos[int(i)] for i in chosen.indices], target, out


def _check_same_split(path: Path, chosen: ShardSelection, fingerprint: str,
                      params: Mapping[str, Any]) -> None:
    """An existing shard of this very extraction that was split differently (other
    --batch-seconds, or another device's default) cannot be resumed; say so plainly."""
    from emoprobe.cache.store import read_meta
    from emoprobe.errors import CacheError

    if not path.exists():
        return
    try:
        info = read_meta(path).get("shard") or {}
    except CacheError:
        return  # the runner reports a damaged file
    if info.get("fingerprint") != fingerprint or info.get("indices") == chosen.indices.tolist():
        return
    before = (info.get("plan") or {}).get("budget_samples")
    sr = params["sample_rate"]
    unit, option = (" s", "--batch-seconds") if sr else (" tokens", "--batch-tokens")
    scale = sr or 1
    raise ExtractionError(
        f"{path} holds shard {chosen.spec} of this extraction, split for batches of "
        f"{before / scale if before else '?'}{unit}; this run plans batches of "
        f"{params['budget_samples'] / scale}{unit}, which splits the manifest "
        f"differently. Run every shard with the same {option} (and device type), or "
        "pass --overwrite to start this shard again"
    )


__all__ = [
    "SHARD_METHOD",
    "ShardSelection",
    "ShardSpec",
    "Unit",
    "parse_shard",
    "plan_units",
    "restrict_to_shard",
    "select",
    "shard_from_slurm",
    "shard_path",
    "split_contiguous",
]
