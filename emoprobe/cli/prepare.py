"""`emoprobe prepare`: a corpus as distributed -> a counted, checked JSONL manifest."""

from __future__ import annotations

import argparse

from emoprobe.data.prepare import (
    EMOBOX,
    GENERIC,
    SOURCES,
    PrepareOptions,
    prepare_corpus,
    prepare_emobox_all,
)
from emoprobe.errors import ConfigError
from emoprobe.validation import check_options


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
    p.add_argument("--root",
                   help=f"the corpus folder; for `{GENERIC}`, the manifest file (or a folder "
                   f"holding manifest.jsonl/.csv/.tsv); for `{EMOBOX}`, EmoBox's "
                   "data/<corpus> folder")
    p.add_argument("--out", help="the manifest to write (JSONL)")
    p.add_argument("--check", action="store_true",
                   help="list every problem (missing, corrupt or empty audio, duplicate ids, "
                   "unknown labels, empty folds, classes absent from training) and fail on any")
    p.add_argument("--allow-subset", action="store_true",
                   help="counts that differ from the published ones warn instead of failing")
    p.add_argument("--audio-root", help=f"{GENERIC}: resolve relative audio paths here "
                   f"instead of the manifest's folder; {EMOBOX} (required): the folder holding "
                   "EmoBox's downloads/ or the corpus's own files")
    e = p.add_argument_group(f"{EMOBOX} options")
    e.add_argument("--all", metavar="EMOBOX_DATA", dest="emobox_all",
                   help="prepare every corpus under EmoBox's data/ folder (instead of --root)")
    e.add_argument("--out-dir", help="with --all: write <corpus>.jsonl here")
    g = p.add_argument_group(f"{GENERIC} options")
    g.add_argument("--name", help="corpus name (default: the manifest's own `corpus` field, "
                   "else the file's stem, or its folder's name for manifest.*)")
    g.add_argument("--folds", type=int, metavar="K",
                   help="make K speaker-independent, label-stratified folds from `speaker`")
    g.add_argument("--seed", type=int, default=0, help="shuffle seed of --folds (default 0)")
    p.add_argument("--workers", type=int, help="threads reading audio headers")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_options(PrepareOptions, vars(args))
    common = {"check": args.check, "allow_subset": args.allow_subset, "workers": args.workers,
              "progress": not args.no_progress, "echo": print}
    if args.emobox_all is not None or args.out_dir is not None:
        if args.corpus != EMOBOX or args.emobox_all is None or args.out_dir is None:
            raise ConfigError(f"--all EMOBOX_DATA and --out-dir D go together, with corpus "
                              f"{EMOBOX} only")
        if args.root is not None or args.out is not None:
            raise ConfigError("--all prepares every corpus: give --out-dir, not --root/--out")
        prepare_emobox_all(args.emobox_all, audio_root=args.audio_root, out_dir=args.out_dir,
                           **common)
        return 0
    missing = [opt for opt, v in (("--root", args.root), ("--out", args.out)) if v is None]
    if missing:
        raise ConfigError(f"option(s) {', '.join(missing)} required"
                          + (f" (or --all with --out-dir for {EMOBOX})"
                             if args.corpus == EMOBOX else ""))
    prepare_corpus(
        args.corpus,
        args.root,
        out=args.out,
        name=args.name,
        audio_root=args.audio_root,
        folds=args.folds,
        seed=args.seed,
        **common,
    )
    return 0
