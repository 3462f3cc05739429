"""`emoprobe merge`: combine the shard files of one extraction into a single cache."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "merge",
        help="combine the shard files of a sharded extraction into one cache",
        description=(
            "Check that the files written by `emoprobe extract --shard K/N` are all N shards "
            "of one extraction (same manifest, model and settings; every utterance exactly "
            "once; each shard complete) and write the single cache they make up, equal to a "
            "single-process run's. See docs/scaling.md."
        ),
    )
    p.add_argument("shards", nargs="+", metavar="SHARD", help="shard files (*.shard-K-of-N.h5)")
    p.add_argument("--out", metavar="CACHE",
                   help="merged cache file, or a folder for it (default: the shards' name "
                        "without .shard-K-of-N, next to them)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out that holds something else")
    p.add_argument("--remove-shards", action="store_true",
                   help="delete the shard files after a successful merge")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from emoprobe.extract.merge import merge_shards

    summary = merge_shards(args.shards, args.out, overwrite=args.overwrite,
                           remove_shards=args.remove_shards, progress=not args.no_progress)
    print(summary.format())
    return 0
