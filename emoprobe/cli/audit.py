"""`emoprobe audit`: leaky or unfair splits in a manifest, before a number is printed."""

from __future__ import annotations

import argparse

from emoprobe.data.audit import ERROR, WARNING, AuditSettings, audit_manifest


def register(subparsers: argparse._SubParsersAction) -> None:
    defaults = AuditSettings()
    p = subparsers.add_parser(
        "audit",
        help="speaker overlap, duplicate audio and other leaks in a manifest's folds",
        description="Audit the folds the probe would use: speakers in both training and test, "
        "identical audio under different ids, the same sentence in training and test, classes "
        "missing from a fold, small folds, imbalance, missing speakers, audio that differs "
        "from its declared spec. Exit status 1 when a finding is an error (docs/emobox.md).",
    )
    p.add_argument("manifest", help="the manifest (JSONL) to audit")
    p.add_argument("--task", help="task whose utterances are audited (default: the corpus's)")
    p.add_argument("--folds", metavar="SPEC",
                   help="the folds to audit, as `emoprobe probe --folds` takes them: a "
                   "manifest field (session, speaker, fold, split, folds), loso, "
                   "kfold:K[:SEED] or a fold file (default: the corpus's protocol)")
    p.add_argument("--no-hash", action="store_true",
                   help="skip hashing the audio (duplicate detection); only the manifest is read")
    p.add_argument("--digests", metavar="FILE",
                   help="keep the audio digests here, so an interrupted audit resumes and a "
                   "rerun hashes only new or changed files (default: MANIFEST.digests.jsonl)")
    p.add_argument("--cache", help="a feature cache of this manifest: also report "
                   "near-duplicate embeddings")
    p.add_argument("--layer", type=int, default=-1,
                   help="cache layer compared for near-duplicates (default -1, the last)")
    p.add_argument("--near", type=float, default=defaults.near,
                   help=f"cosine similarity of a near-duplicate (default {defaults.near})")
    p.add_argument("--min-fold", type=int, default=defaults.min_fold,
                   help=f"fold parts with fewer utterances are small (default "
                   f"{defaults.min_fold})")
    p.add_argument("--imbalance", type=float, default=defaults.imbalance,
                   help="largest / smallest class in a test part that counts as imbalanced "
                   f"(default {defaults.imbalance:g})")
    p.add_argument("--audio-root", help="resolve relative audio paths here")
    p.add_argument("--json", metavar="FILE", help="also write the findings as JSON")
    p.add_argument("--fail-on", choices=(ERROR, WARNING), default=ERROR,
                   help="exit 1 on findings of this severity or worse (default error)")
    p.add_argument("--workers", type=int, help="threads hashing audio")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    report = audit_manifest(
        args.manifest,
        audio_root=args.audio_root,
        task=args.task,
        folds=args.folds,
        hash_audio_files=not args.no_hash,
        digest_store=args.digests or f"{args.manifest}.digests.jsonl",
        cache=args.cache,
        layer=args.layer,
        settings=AuditSettings(min_fold=args.min_fold, imbalance=args.imbalance,
                               near=args.near),
        workers=args.workers,
        progress=not args.no_progress,
        echo=print,
    )
    if args.json:
        print(f"wrote {report.write_json(args.json)}")
    return 1 if report.failed(args.fail_on) else 0
