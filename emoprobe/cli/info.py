"""`emoprobe info`: everything a cache records about itself."""

from __future__ import annotations

import argparse
import json
import sys

from emoprobe.cache.info import describe_cache
from emoprobe.cache.store import open_cache


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "info",
        help="show a feature cache's metadata",
        description="Print a cache's format, model, layers, counts, failures, fingerprint, "
                    "settings and versions, complete or not.",
    )
    p.add_argument("cache", metavar="CACHE", nargs="+", help="cache file(s) (.h5)")
    p.add_argument("--json", action="store_true", help="all attributes as JSON")
    p.add_argument("--repair", action="store_true",
                   help="check structure, flags and row checksums, list what is wrong, clear "
                        "damaged rows for re-extraction and rebuild damaged metadata")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.repair:
        from emoprobe.cache.repair import repair_cache

        fatal = False
        for path in args.cache:
            check = repair_cache(path)
            print(check.format())
            fatal |= check.fatal
        return 1 if fatal else 0
    for i, path in enumerate(args.cache):
        with open_cache(path, allow_incomplete=True) as reader:
            if args.json:
                out = {**reader.meta, "path": str(reader.path), "failed": reader.failed,
                       "done": int(reader.done.sum()), "usable": int(reader.usable.sum())}
                json.dump(out, sys.stdout, indent=2, sort_keys=True, default=str)
                print()
            else:
                if i:
                    print()
                print(describe_cache(reader))
    return 0
