"""`emoprobe prepare`: a corpus as distributed -> a counted, checked JSONL manifest."""

from __future__ import annotations

import argparse

from emoprobe.data.prepare import GENERIC, SOURCES, prepare_corpus


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "prepare",
        help="corpus -> validated JSONL manifest",
        description="Read a corpus as distributed (or any JSONL/CSV manifest), print its "
        "per-label and per-fold counts next to the published ones, and write a manifest "
        "(docs/manifest.md).",
    )
    p.add_argument("corpus", choices=SOURCES,
                   help=f"a supported corpus, or `{GENERIC}` for a JSONL/CSV/TSV manifest")
    p.add_argument("--root", required=True,
                   help=f"the corpus folder; for `{GENERIC}`, the manifest file (or a folder "
                   "holding manifest.jsonl/.csv/.tsv)")
    p.add_argument("--out", required=True, help="the manifest to write (JSONL)")
    p.add_argument("--check", action="store_true",
                   help="list every problem (missing, corrupt or empty audio, duplicate ids, "
                   "unknown labels, empty folds, classes absent from training) and fail on any")
    p.add_argument("--allow-subset", action="store_true",
                   help="counts that differ from the published ones warn instead of failing")
    g = p.add_argument_group(f"{GENERIC} options")
    g.add_argument("--name", help="corpus name (default: the manifest's own `corpus` field, "
                   "else the file's stem, or its folder's name for manifest.*)")
    g.add_argument("--audio-root", help="resolve relative audio paths here instead of the "
                   "manifest's folder")
    g.add_argument("--folds", type=int, metavar="K",
                   help="make K speaker-independent, label-stratified folds from `speaker`")
    g.add_argument("--seed", type=int, default=0, help="shuffle seed of --folds (default 0)")
    p.add_argument("--workers", type=int, help="threads reading audio headers")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    prepare_corpus(
        args.corpus,
        args.root,
        out=args.out,
        check=args.check,
        allow_subset=args.allow_subset,
        name=args.name,
        audio_root=args.audio_root,
        folds=args.folds,
        seed=args.seed,
        workers=args.workers,
        progress=not args.no_progress,
        echo=print,
    )
    return 0
