"""`emoprobe demo`: the whole chain on a built-in synthetic corpus (no download needed)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the pipeline on a small synthetic corpus",
        description="Generate a small synthetic emotional speech corpus in the IEMOCAP "
        "layout, prepare its manifest, extract the fbank baseline and a small random "
        "wav2vec2, probe every layer and print the WAR/UAR tables.",
    )
    p.add_argument("--out", default="demo-output", help="output folder (default demo-output)")
    p.add_argument("--seed", type=int, default=0, help="generation seed (default 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Stage 0: generate the corpus and prepare its manifest.
    from emoprobe.data.demo import prepare_demo
    from emoprobe.validation import Rule, check_value

    check_value(int, args.seed, "--seed", Rule(ge=0))

    demo = prepare_demo(args.out, seed=args.seed, echo=print)
    print(f"demo manifest: {demo.manifest}")
    # Stages 1-3: extract (fbank + a random wav2vec2), probe, report.
    from emoprobe.pipeline import run_demo

    result = run_demo(args.out, seed=args.seed, manifest=demo.manifest)
    print(result.report_text)
    print(f"results: {result.results}")
    return 0
