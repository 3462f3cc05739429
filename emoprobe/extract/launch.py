"""Running an extraction's shards as jobs through submitit, then merging them.

`launch_extraction(..., shards=N, launcher="slurm")` submits a SLURM array of N jobs, one per
shard; `launcher="local"` runs the same jobs as local processes through submitit's
LocalExecutor. Either way each job calls `run_extraction(..., shard=ShardSpec(k, N))`, so a job
that is killed, pre-empted or timed out leaves a resumable shard file, and submitting it again
continues where it stopped. The launcher shows progress over finished shards, resubmits a
failed job up to `retries` times, and merges the shards into `DIR/<name>.h5` when all are
complete. Job logs go to `DIR/logs/<name>/`. submitit is an optional dependency
(`pip install 'emoprobe[slurm]'`), imported only here, when a launcher is used.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py

from emoprobe.cache.store import CACHE_SUFFIX, read_meta
from emoprobe.errors import CacheError, ConfigError, EmoprobeError, ExtractionError
from emoprobe.extract.merge import MergeSummary, merge_shards
from emoprobe.extract.settings import ExtractSettings
from emoprobe.extract.shard import ShardSpec, shard_path
from emoprobe.progress import progress_bar
from emoprobe.validation import check_fields, rule

log = logging.getLogger(__name__)

LAUNCHERS = ("slurm", "local")
DEFAULT_SLURM_MINUTES = 240
DEFAULT_LOCAL_MINUTES = 7 * 24 * 60
DEFAULT_POLL_SECONDS = {"slurm": 15.0, "local": 0.5}

Event = dict[str, Any]


# ---------------------------------------------------------------------------------- options


@dataclass(frozen=True)
class JobOptions:
    """Resources and behaviour of the shard jobs. `parallel` caps the jobs running at once
    (the SLURM array throttle, or the number of local processes); `setup` lines run in the job
    script before Python starts (SLURM), e.g. `module load cuda`."""

    partition: str | None = None
    time_minutes: int | None = field(default=None, metadata=rule(ge=1))
    gpus_per_task: int | None = field(default=None, metadata=rule(ge=0))
    cpus_per_task: int | None = field(default=None, metadata=rule(ge=1))
    mem_gb: float | None = field(default=None, metadata=rule(gt=0))
    extra: Mapping[str, str] = field(default_factory=dict)
    setup: tuple[str, ...] = ()
    parallel: int | None = field(default=None, metadata=rule(ge=1))
    poll_seconds: float | None = field(default=None, metadata=rule(gt=0))

    def __post_init__(self) -> None:
        check_fields(self)


def slurm_parameters(job: JobOptions, name: str) -> dict[str, Any]:
    """SlurmExecutor parameters for the shard jobs of cache `name`."""
    params: dict[str, Any] = {
        "job_name": f"emoprobe-{name}",
        "time": job.time_minutes or DEFAULT_SLURM_MINUTES,
    }
    if job.partition:
        params["partition"] = job.partition
    if job.gpus_per_task:
        params["gpus_per_task"] = job.gpus_per_task
    if job.cpus_per_task:
        params["cpus_per_task"] = job.cpus_per_task
    if job.mem_gb:
        params["mem"] = f"{max(1, round(job.mem_gb * 1024))}M"
    if job.parallel:
        params["array_parallelism"] = job.parallel
    if job.setup:
        params["setup"] = list(job.setup)
    if job.extra:
        params["additional_parameters"] = dict(job.extra)
    return params


def _submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise ExtractionError(
            "--launcher needs submitit, an optional dependency: pip install 'emoprobe[slurm]'"
        ) from None
    return submitit


def make_executor(launcher: str, folder: Path, job: JobOptions, name: str) -> Any:
    """A submitit executor writing its job files and logs to `folder`."""
    submitit = _submitit()
    if launcher == "slurm":
        try:
            executor = submitit.SlurmExecutor(folder=folder)
        except RuntimeError as exc:
            raise ExtractionError(
                f"--launcher slurm needs SLURM's sbatch and srun on PATH ({exc}); run it on the "
                "cluster's login node, or use --launcher local to run the shards here"
            ) from None
        executor.update_parameters(**slurm_parameters(job, name))
        return executor
    if launcher == "local":
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=job.time_minutes or DEFAULT_LOCAL_MINUTES)
        return executor
    raise ExtractionError(f"unknown launcher {launcher!r}; choose one of {', '.join(LAUNCHERS)}")


@contextlib.contextmanager
def _child_stderr(path: Path) -> Iterator[None]:
    """Processes started in the block write their stderr to `path`. submitit's local job
    controllers inherit the terminal's stderr and print a traceback each when Ctrl-C reaches
    them; with this, Ctrl-C ends the launcher with one line and their reports stay in the log
    folder. The block only starts processes, so nothing of this process's own is redirected."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(fd, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(fd)


def _local_gpu_slots(job: JobOptions) -> list[list[int]] | None:
    """Disjoint GPU sets for concurrent local jobs, or None when the jobs use no GPU."""
    if not job.gpus_per_task:
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() and all(t.strip().isdigit()
                                                       for t in visible.split(",")):
        ids = [int(t) for t in visible.split(",")]
    else:
        import torch

        ids = list(range(torch.cuda.device_count()))
    slots = [ids[i:i + job.gpus_per_task]
             for i in range(0, len(ids) - job.gpus_per_task + 1, job.gpus_per_task)]
    if not slots:
        raise ExtractionError(
            f"--gpus-per-task {job.gpus_per_task}: only {len(ids)} GPU(s) are visible here"
        )
    return slots


# ------------------------------------------------------------------- the submitted functions


def _job_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


def extract_shard(
    manifest: str | Sequence[Mapping[str, Any]],
    model: str,
    out_dir: str,
    index: int,
    count: int,
    options: Mapping[str, Any],
) -> dict[str, Any]:
    """One shard job: `run_extraction` on shard `index` of `count`. Returns a summary; an
    error emoprobe raises on purpose (bad input, foreign cache) is returned, not raised, since
    running the job again cannot fix it. On pre-emption or time-out submitit requeues the same
    call, which resumes the shard file."""
    _job_logging()
    from emoprobe.extract.runner import run_extraction

    log.info("emoprobe shard %d of %d, model %s, on %s", index, count, model,
             socket.gethostname())
    try:
        result = run_extraction(manifest, model, out_dir, shard=ShardSpec(index, count),
                                **dict(options))
        info = read_meta(result.path)["shard"]
    except EmoprobeError as exc:
        return {"ok": False, "shard": index, "error": str(exc)}
    print(result.summary.format(), flush=True)
    return {"ok": True, "shard": index, "path": str(result.path),
            "fingerprint": info["fingerprint"], "summary": result.summary.to_dict()}


def _requeue_shard(
    manifest: Any, model: str, out_dir: str, index: int, count: int, options: Mapping[str, Any]
) -> Any:
    """submitit's checkpoint hook on pre-emption or time-out: requeue the same call, never
    with `overwrite`, so that the requeued job resumes the shard file."""
    from submitit.helpers import DelayedSubmission

    return DelayedSubmission(extract_shard, manifest, model, out_dir, index, count,
                             {**dict(options), "overwrite": False})


# submitit requeues a job on pre-emption or time-out when its function has `checkpoint`
extract_shard.checkpoint = _requeue_shard  # type: ignore[attr-defined]


def _check_covers(path: Path, manifest: str | Sequence[Mapping[str, Any]]) -> None:
    """A merged cache that lacks some of the manifest's utterances is not grown here (that
    would extract them in this process, not in jobs): say how to add them."""
    from emoprobe.cache.store import CacheReader
    from emoprobe.data.manifest import read_manifest

    records = read_manifest(manifest) if isinstance(manifest, str) else manifest
    with CacheReader(path, allow_incomplete=True) as cache:
        held = set(cache.ids)
    missing = [str(r["id"]) for r in records if str(r["id"]) not in held]
    if missing:
        raise CacheError(
            f"{path} lacks {len(missing)} utterance(s) of this manifest (e.g. "
            f"{', '.join(missing[:3])}); add them with `emoprobe extract` without --launcher "
            "(only those are extracted), or pass --overwrite to extract every shard again")


def verify_cache(
    manifest: str | Sequence[Mapping[str, Any]],
    model: str,
    out_dir: str,
    options: Mapping[str, Any],
) -> dict[str, Any]:
    """Check a merged cache against this model and settings with the runner's own
    fingerprint check, in this process; a complete, matching cache is left as it is (nothing
    is extracted)."""
    from emoprobe.extract.runner import run_extraction

    try:
        result = run_extraction(manifest, model, out_dir, **{**dict(options), "overwrite": False})
    except EmoprobeError as exc:
        return {"ok": False, "shard": None, "error": str(exc)}
    return {"ok": True, "shard": None, "path": str(result.path),
            "summary": result.summary.to_dict()}


# ---------------------------------------------------------------------------- the job loop


@dataclass
class _Running:
    job: Any
    attempt: int
    slot: list[int] | None


def _tail(text: str | None, lines: int = 15) -> str:
    if not text:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


class _JobLoop:
    """Submit jobs (keyed by shard number), wait, resubmit failures, collect results."""

    def __init__(self, executor: Any, launcher: str, job: JobOptions, *, retries: int,
                 progress: bool, desc: str, on_event: Callable[[Event], None] | None,
                 watch: Callable[[], str] | None = None) -> None:
        self.executor = executor
        self.launcher = launcher
        self.retries = retries
        self.progress = progress
        self.desc = desc
        self.on_event = on_event
        self.watch = watch
        self.poll = job.poll_seconds or DEFAULT_POLL_SECONDS[launcher]
        self.slots = _local_gpu_slots(job) if launcher == "local" else None
        # SLURM gets the whole array at once and throttles it itself (array_parallelism)
        self.limit: int | None = None
        if launcher == "local":
            caps = [c for c in (job.parallel, len(self.slots) if self.slots else None) if c]
            self.limit = min(caps) if caps else None

    def _event(self, **event: Any) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def _submit(self, keys: list[Any], make_args: Callable[[Any, int], tuple[Any, ...]],
                fn: Callable[..., Any], attempts: dict[Any, int],
                free: list[list[int]] | None) -> dict[Any, _Running]:
        out: dict[Any, _Running] = {}
        if self.launcher == "slurm" and len(keys) > 1:
            with self.executor.batch():
                jobs = [self.executor.submit(fn, *make_args(k, attempts[k])) for k in keys]
            out = {k: _Running(j, attempts[k], None) for k, j in zip(keys, jobs)}
        else:
            for k in keys:
                slot = free.pop(0) if free is not None else None
                if slot is not None:
                    self.executor.update_parameters(gpus_per_node=len(slot), visible_gpus=slot)
                with _child_stderr(Path(self.executor.folder) / "controllers.err"):
                    job = self.executor.submit(fn, *make_args(k, attempts[k]))
                out[k] = _Running(job, attempts[k], slot)
        for k, run in out.items():
            self._event(kind="submitted", key=k, attempt=run.attempt, job_id=str(run.job.job_id),
                        log=str(run.job.paths.stderr))
        return out

    def _outcome(self, run: _Running) -> tuple[str, Any]:
        job = run.job
        if self.launcher == "local" and not job.paths.result_pickle.exists():
            detail = _tail(job.stderr()) or "no output"
            return "lost", f"the process ended without a result (killed?):\n{detail}"
        try:
            exc = job.exception()
            if exc is not None:
                return "lost", _tail(str(exc))
            payload = job.result()
        except Exception as exc:  # job state unreadable: count it as a failed attempt
            return "lost", f"{type(exc).__name__}: {exc}"
        return ("ok" if payload.get("ok") else "error"), payload

    def _finished(self, running: Mapping[Any, _Running]) -> list[Any]:
        """Keys of the jobs that have ended, waiting at most one poll interval for the first
        (submitit's `as_completed`), so the progress bar still refreshes while jobs run."""
        from submitit.helpers import as_completed

        if not running:
            return []
        jobs = [r.job for r in running.values()]
        try:
            next(as_completed(jobs, timeout=self.poll, poll_frequency=self.poll / 5))
        except TimeoutError:
            return []
        return [k for k, r in running.items() if r.job.done()]

    def run(self, keys: Sequence[Any], fn: Callable[..., Any],
            make_args: Callable[[Any, int], tuple[Any, ...]],
            total: int | None = None) -> tuple[dict[Any, dict[str, Any]], dict[Any, str],
                                               dict[Any, int]]:
        """Run `fn(*make_args(key, attempt))` for every key; returns (results by key, errors
        by key, attempts by key). Failures without a result are resubmitted."""
        pending: deque[Any] = deque(keys)
        running: dict[Any, _Running] = {}
        attempts: dict[Any, int] = dict.fromkeys(keys, 0)
        results: dict[Any, dict[str, Any]] = {}
        errors: dict[Any, str] = {}
        free = [list(s) for s in self.slots] if self.slots is not None else None
        total = len(keys) if total is None else total
        bar = progress_bar(total=total, initial=total - len(keys), desc=self.desc,
                           unit="shard", disable=not self.progress, dynamic_ncols=True)
        try:
            while pending or running:
                room = len(pending) if self.limit is None else self.limit - len(running)
                batch = [pending.popleft() for _ in range(min(room, len(pending)))]
                if batch:
                    for k in batch:
                        attempts[k] += 1
                    running.update(self._submit(batch, make_args, fn, attempts, free))
                for k in self._finished(running):
                    run = running.pop(k)
                    if run.slot is not None and free is not None:
                        free.append(run.slot)
                    status, detail = self._outcome(run)
                    if status == "ok":
                        results[k] = detail
                        bar.update(1)
                        self._event(kind="finished", key=k, attempt=run.attempt)
                    elif status == "error":
                        errors[k] = detail["error"]
                        self._event(kind="error", key=k, attempt=run.attempt,
                                    error=detail["error"], log=str(run.job.paths.stderr))
                    elif attempts[k] <= self.retries:
                        self._event(kind="retry", key=k, attempt=run.attempt, error=detail,
                                    log=str(run.job.paths.stderr))
                        pending.append(k)
                    else:
                        errors[k] = (f"failed {attempts[k]} time(s); last: {detail}\n"
                                     f"log: {run.job.paths.stderr}")
                        self._event(kind="failed", key=k, attempt=run.attempt, error=detail,
                                    log=str(run.job.paths.stderr))
                if self.watch is not None:
                    bar.set_postfix_str(self.watch(), refresh=False)
                bar.refresh()
        except KeyboardInterrupt:
            for run in running.values():
                try:
                    run.job.cancel(check=False)
                except Exception as exc:  # already gone
                    log.debug("cancel %s: %s", run.job.job_id, exc)
            raise
        finally:
            bar.close()
        return results, errors, attempts


# ------------------------------------------------------------------------------- public API


@dataclass
class LaunchResult:
    """The merged cache, how each shard went, and where the job logs are."""

    path: Path
    logs: Path
    shards: list[Path]
    attempts: dict[int, int] = field(default_factory=dict)
    merge: MergeSummary | None = None
    up_to_date: bool = False

    def format(self) -> str:
        if self.up_to_date:
            return (f"{self.path} is complete and matches this model, manifest and settings; "
                    "nothing to do (pass --overwrite to extract again)")
        lines = [self.merge.format()] if self.merge is not None else []
        ran = {k: a for k, a in self.attempts.items() if a}
        if ran:
            again = ", ".join(f"{k} ({a - 1}x)" for k, a in sorted(ran.items()) if a > 1)
            lines.append(f"shard jobs run: {len(ran)} of {len(self.shards)}"
                         + (f"; resubmitted: {again}" if again else ""))
        kept = [p for p in self.shards if p.exists()]
        if kept:
            lines.append(f"shard files kept: {kept[0].parent}/"
                         f"{kept[0].name.split('.shard-')[0]}.shard-*-of-{len(self.shards)}.h5")
        lines.append(f"job logs: {self.logs}")
        return "\n".join(lines)


def _is_complete(path: Path) -> bool:
    if not path.exists():
        return False
    try:
        return bool(read_meta(path).get("complete"))
    except CacheError:
        return False


def _done_counter(paths: Sequence[Path], total: int) -> Callable[[], str]:
    """Utterances done over all shard files, read from their `done` masks (a file being
    written is read without HDF5's lock, which is safe: its structure never changes)."""
    def count() -> str:
        done = 0
        for p in paths:
            if not p.exists():
                continue
            try:
                with h5py.File(p, "r", locking=False) as f:
                    done += int(f["done"][()].sum())
            except (OSError, KeyError):
                continue
        return f"{done}/{total} utterances"
    return count


def launch_extraction(
    manifest: str | os.PathLike[str] | Sequence[Mapping[str, Any]],
    model: str,
    out_dir: str | os.PathLike[str],
    *,
    shards: int,
    launcher: str = "slurm",
    job: JobOptions | None = None,
    retries: int = 2,
    remove_shards: bool = False,
    on_event: Callable[[Event], None] | None = None,
    **options: Any,
) -> LaunchResult:
    """Extract `model` over `manifest` as `shards` jobs and merge them into `out_dir/<name>.h5`.

    `options` are the extraction settings (as for `run_extraction`; `progress` also shows
    the launcher's bar over shards). Re-running the same call
    resumes: complete shards are not run again, incomplete ones continue. At least one job
    always runs, and it checks the existing files against this model and settings, so a stale
    cache is never reused silently. `on_event` receives a dict per job event (submitted,
    finished, retry, error, failed) with the shard number, attempt, job id and log path."""
    from emoprobe.data.manifest import read_manifest
    from emoprobe.extract.runner import cache_name

    if launcher not in LAUNCHERS:
        raise ConfigError(f"unknown launcher {launcher!r}; choose one of "
                          f"{', '.join(LAUNCHERS)}")
    if retries < 0:
        raise ConfigError(f"--retries must be 0 or more, got {retries}")
    job = job or JobOptions()
    settings = ExtractSettings(**options)
    if isinstance(manifest, (str, os.PathLike)):
        manifest_arg: str | list[dict[str, Any]] = os.path.abspath(manifest)
        n_records = len(read_manifest(manifest_arg))
    else:
        manifest_arg = [dict(r) for r in manifest]
        n_records = len(manifest_arg)
    if not 1 <= shards <= n_records:
        raise ConfigError(f"--shards must be between 1 and the {n_records} utterances of "
                          f"the manifest, got {shards}")
    out = Path(out_dir).resolve()
    name = settings.name or cache_name(model, settings.revision)
    final = out / f"{name}{CACHE_SUFFIX}"
    logs = out / "logs" / name
    paths = [shard_path(final, ShardSpec(k, shards)) for k in range(shards)]
    # Every job runs with the torch thread count a single process would use (the configured
    # one, else the runner's default): CPU kernels round differently with other thread counts,
    # and the merge promises a single-process run's numbers bit for bit.
    job_options = settings.to_dict()
    executor = make_executor(launcher, logs, job, name)
    loop = _JobLoop(executor, launcher, job, retries=retries, progress=settings.progress,
                    desc=f"shards of {name}", on_event=on_event,
                    watch=_done_counter(paths, n_records))
    common = (manifest_arg, model, str(out))

    if final.exists() and not settings.overwrite:
        meta = read_meta(final)
        if not meta.get("complete"):
            raise CacheError(
                f"{final} holds an unfinished single-process extraction; resume it with "
                "`emoprobe extract` without --launcher, or pass --overwrite to replace it "
                "with a sharded one"
            )
        _check_covers(final, manifest_arg)
        checked = verify_cache(*common, {**job_options, "overwrite": False,
                                          "progress": False})
        if not checked["ok"]:
            raise CacheError(checked["error"])
        return LaunchResult(final, logs, paths, up_to_date=True)

    todo = list(range(shards)) if settings.overwrite else [
        k for k in range(shards) if not _is_complete(paths[k])]
    if not todo:  # one job re-checks the shard files against this model and settings
        todo = [0]

    def shard_args(k: int, attempt: int) -> tuple[Any, ...]:
        opts = {**job_options, "progress": settings.progress,
                "overwrite": settings.overwrite and attempt == 1}
        return (*common, k, shards, opts)

    results, errors, attempts = loop.run(todo, extract_shard, shard_args, total=shards)
    if errors:
        by_message: dict[str, list[int]] = {}
        for k, msg in sorted(errors.items()):
            by_message.setdefault(msg, []).append(k)
        lines = [f"shard{'s' if len(ks) > 1 else ''} {', '.join(map(str, ks))}: {msg}"
                 for msg, ks in by_message.items()]
        raise ExtractionError(
            f"{len(errors)} of {shards} shard(s) did not complete:\n" + "\n".join(lines)
            + f"\njob logs: {logs}\nfinished shards are kept; fix the cause and run the same "
            "command again to resume"
        )
    fingerprint = next(iter(results.values()))["fingerprint"]
    for path in paths:
        stored = read_meta(path).get("shard", {}).get("fingerprint")
        if stored != fingerprint:
            raise CacheError(
                f"{path} was extracted with another manifest, model or settings than this run; "
                "pass --overwrite to extract every shard again"
            )
    summary = merge_shards(paths, final, overwrite=settings.overwrite,
                           remove_shards=remove_shards, progress=settings.progress)
    return LaunchResult(final, logs, paths, attempts, summary)


def describe_event(event: Event) -> str | None:
    """One line for a job event, as the command line prints it."""
    kind, key = event["kind"], event["key"]
    what = f"shard {key}"
    if kind == "submitted":
        again = f" (attempt {event['attempt']})" if event["attempt"] > 1 else ""
        return f"{what}: submitted as job {event['job_id']}{again}"
    if kind == "retry":
        first = str(event["error"]).strip().splitlines()[-1:] or [""]
        return f"{what}: job failed ({first[0]}); resubmitting; log {event['log']}"
    if kind in ("error", "failed"):
        return f"{what}: failed; log {event['log']}"
    return None


__all__ = [
    "LAUNCHERS",
    "JobOptions",
    "LaunchResult",
    "describe_event",
    "extract_shard",
    "launch_extraction",
    "make_executor",
    "slurm_parameters",
    "verify_cache",
]
