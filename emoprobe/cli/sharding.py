"""The sharding and job options of `emoprobe extract` (--shard, --launcher and their resources).

Not a subcommand of its own: `emoprobe.cli.extract` adds these options to its parser and hands
a run that uses them to `run_scaled`.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from emoprobe.errors import ConfigError

LAUNCHER_CHOICES = ("slurm", "local")


def parse_time(text: str | int | None) -> int | None:
    """A SLURM time limit in whole minutes (rounded up): `90`, `MM:SS`, `HH:MM:SS`, `D-HH`,
    `D-HH:MM` or `D-HH:MM:SS`."""
    if text is None or isinstance(text, int):
        return text
    value = text.strip()
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", value)
    if not m:
        raise ConfigError(
            f"--time expects minutes or [D-]HH:MM:SS (as sbatch --time does), got {text!r}"
        )
    days, a, b, c = (int(g) if g is not None else None for g in m.groups())
    if days is not None:  # D-HH[:MM[:SS]]
        seconds = days * 86400 + a * 3600 + (b or 0) * 60 + (c or 0)
    elif c is not None:  # HH:MM:SS
        seconds = a * 3600 + b * 60 + c
    elif b is not None:  # MM:SS
        seconds = a * 60 + b
    else:  # minutes
        seconds = a * 60
    if seconds <= 0:
        raise ConfigError(f"--time must be positive, got {text!r}")
    return -(-seconds // 60)


def parse_extra(pairs: Sequence[str]) -> dict[str, str]:
    """`KEY=VALUE` strings -> {KEY: VALUE} for sbatch options submitit has no name for
    (account, qos, constraint, reservation, ...); a leading `--` on KEY is dropped."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().lstrip("-")
        if not sep or not key:
            raise ConfigError(f"--slurm-extra expects KEY=VALUE (e.g. account=abc), "
                              f"got {pair!r}")
        out[key] = value.strip()
    return out


def add_scaling_arguments(p: argparse.ArgumentParser) -> None:
    """Add the sharding and launcher options to the extract parser."""
    g = p.add_argument_group(
        "several processes or cluster jobs (docs/scaling.md)",
        "Split the manifest into N shards of about equal audio, one cache file each "
        "(DIR/<name>.shard-K-of-N.h5, K from 0), then combine them with `emoprobe merge`; or "
        "let --launcher run all shards as jobs and merge them.",
    )
    g.add_argument("--shard", nargs="?", const="slurm", metavar="K/N",
                   help="extract only shard K of N (K = 0..N-1); without a value, K and N come "
                        "from the SLURM array job (SLURM_ARRAY_TASK_ID, _MIN, _COUNT); "
                        "'slurm/N' takes K from the array task id and N as given")
    g.add_argument("--launcher", choices=LAUNCHER_CHOICES,
                   help="run --shards N shard jobs through submitit, as a SLURM array (slurm) "
                        "or local processes (local), wait for them and merge them")
    g.add_argument("--shards", type=int, metavar="N", help="number of shard jobs (--launcher)")
    g.add_argument("--retries", type=int, default=2, metavar="R",
                   help="resubmit a shard job that died without a result up to R times "
                        "(default 2); it resumes its shard file")
    g.add_argument("--partition", help="SLURM partition of the shard jobs")
    g.add_argument("--time", metavar="T",
                   help="time limit per shard job, minutes or [D-]HH:MM:SS (default 4:00:00 on "
                        "SLURM); a job that hits it is requeued and resumes")
    g.add_argument("--gpus-per-task", type=int, metavar="G", help="GPUs per shard job")
    g.add_argument("--cpus-per-task", type=int, metavar="C", help="CPU cores per shard job")
    g.add_argument("--mem-gb", type=float, metavar="GB", help="memory per shard job")
    g.add_argument("--parallel", type=int, metavar="P",
                   help="at most P shard jobs at once (SLURM array throttle; local processes)")
    g.add_argument("--slurm-extra", action="append", default=[], metavar="KEY=VALUE",
                   help="any other sbatch option, e.g. account=abc, qos=high (repeatable)")
    g.add_argument("--slurm-setup", action="append", default=[], metavar="LINE",
                   help="shell line run in each job before Python, e.g. 'module load cuda' "
                        "(repeatable)")
    g.add_argument("--remove-shards", action="store_true",
                   help="delete the shard files once they are merged")


_JOB_OPTIONS = ("shards", "partition", "time", "gpus_per_task", "cpus_per_task", "mem_gb",
                "parallel", "slurm_extra", "slurm_setup", "remove_shards")


def uses_scaling(args: argparse.Namespace) -> bool:
    """Whether any option of this group was given (so `run_scaled` handles the run)."""
    given = [name for name in ("shard", "launcher", *_JOB_OPTIONS)
             if getattr(args, name, None) not in (None, False, [])]
    return bool(given)


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """Extraction settings from the parsed options: every ExtractSettings field that the
    extract parser defines, under the same name."""
    from emoprobe.extract.settings import ExtractSettings

    out = {f.name: getattr(args, f.name) for f in fields(ExtractSettings) if hasattr(args, f.name)}
    out["progress"] = not args.no_progress
    return out


def run_scaled(args: argparse.Namespace) -> int:
    """`emoprobe extract` with --shard or --launcher."""

    options = _settings(args)
    if args.launcher is None:
        stray = [f"--{name.replace('_', '-')}" for name in _JOB_OPTIONS
                 if getattr(args, name) not in (None, False, [])]
        if stray:
            raise ConfigError(f"{', '.join(stray)} go(es) with --launcher; to extract one "
                              "shard yourself use --shard K/N")
        from emoprobe.extract.runner import run_extraction
        from emoprobe.extract.shard import parse_shard

        shard = parse_shard(args.shard)
        result = run_extraction(args.manifest, args.model, args.out, shard=shard, **options)
        print(result.summary.format())
        stem = result.path.name.split(".shard-")[0]
        print(f"shard {shard} done; once all {shard.count} shards are: emoprobe merge "
              f"{result.path.parent}/{stem}.shard-*-of-{shard.count}.h5 --out "
              f"{result.path.parent}/{stem}.h5")
        return 0
    if args.shard is not None:
        raise ConfigError("--shard and --launcher exclude each other: the launcher runs "
                          "every shard itself")
    if args.shards is None:
        raise ConfigError("--launcher needs --shards N, the number of shard jobs")
    from tqdm.auto import tqdm

    from emoprobe.extract.launch import (
        JobOptions,
        describe_event,
        launch_extraction,
    )
    from emoprobe.validation import check_options

    check_options(JobOptions, vars(args))

    job = JobOptions(
        partition=args.partition,
        time_minutes=parse_time(args.time),
        gpus_per_task=args.gpus_per_task,
        cpus_per_task=args.cpus_per_task,
        mem_gb=args.mem_gb,
        extra=parse_extra(args.slurm_extra),
        setup=tuple(args.slurm_setup),
        parallel=args.parallel,
    )

    def show(event: dict[str, Any]) -> None:
        line = describe_event(event)
        if line:
            tqdm.write(line)

    result = launch_extraction(
        args.manifest, args.model, args.out, shards=args.shards, launcher=args.launcher,
        job=job, retries=args.retries, remove_shards=args.remove_shards, on_event=show, **options,
    )
    print(result.format())
    return 0
