"""`emoprobe run`: prepare -> extract -> probe -> report from one TOML config."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "run",
        help="the whole pipeline for every corpus x upstream of a TOML config",
        description=(
            "Prepare each [[corpus]], extract each [[upstream]] over it, probe every cache "
            "(and each [[cross]] pair) with the [probe] settings, and write the report, all "
            "under the config's `out` folder. Re-running reuses valid manifests, caches "
            "(fingerprint match) and finished probe folds. See docs/probing.md for the "
            "config format and recipes/ for the benchmark's configs."
        ),
    )
    p.add_argument("config", metavar="CONFIG", help="TOML file")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan, expected cache sizes and extraction-time estimates "
                   "(CPU and GPU) without loading a model or reading audio")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.dry_run:
        from emoprobe.plan import plan_run

        print(plan_run(args.config), end="")
        return 0
    from emoprobe.pipeline import run_pipeline

    result = run_pipeline(args.config, progress=not args.no_progress)
    print(result.report_text)
    print(f"results: {result.results}")
    return 0
