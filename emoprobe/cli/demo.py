"""`emoprobe demo`: the whole chain on a built-in synthetic corpus (no download needed)."""

from __future__ import annotations

import argparse

from emoprobe.data.demo import prepare_demo


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the pipeline on a small synthetic corpus",
        description="Generate a small synthetic emotional speech corpus in the IEMOCAP "
        "layout, then prepare its manifest.",
    )
    p.add_argument("--out", default="demo-output", help="output folder (default demo-output)")
    p.add_argument("--seed", type=int, default=0, help="generation seed (default 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Stage 0: generate the corpus and prepare its manifest.
    demo = prepare_demo(args.out, seed=args.seed, echo=print)
    print(f"demo manifest: {demo.manifest}")
    return 0
