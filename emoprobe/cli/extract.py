"""`emoprobe extract`: run an upstream over a manifest into a pooled-embedding cache."""

from __future__ import annotations

import argparse

from emoprobe.cli.sharding import add_scaling_arguments, run_scaled, uses_scaling
from emoprobe.extract.settings import DEVICES, DTYPES, MODALITIES, ON_ERROR, ExtractSettings
from emoprobe.validation import check_options


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "extract",
        help="cache mean-pooled embeddings of every layer of a model",
        description=(
            "Run a speech model once over a manifest and store the mean-pooled embedding of "
            "every layer per utterance in DIR/<model>.h5. Re-running an interrupted command "
            "resumes it. --model fbank and --model egemaps select the baselines; "
            "--modality text runs a text encoder over each utterance's sentence."
        ),
    )
    p.add_argument("--manifest", required=True, metavar="FILE", help="JSONL manifest")
    p.add_argument("--model", required=True, metavar="ID_OR_PATH",
                   help="transformers hub id or local checkpoint folder, fbank or egemaps, "
                        "or NAME:ARG for an installed upstream plugin (docs/upstreams.md)")
    p.add_argument("--modality", default="audio", choices=MODALITIES,
                   help="audio (default), or text: a text encoder over each utterance's "
                        "sentence (transcript)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the cache file")
    p.add_argument("--revision", help="hub revision (branch, tag or commit)")
    p.add_argument("--device", default="auto", help=f"{' | '.join(DEVICES)} | cuda:N")
    p.add_argument("--dtype", default="float32", choices=DTYPES,
                   help="compute precision (pooled values are stored as float32)")
    p.add_argument("--batch-seconds", type=float, metavar="S",
                   help="padded audio seconds per batch (default 8 on CPU, 400 on CUDA)")
    p.add_argument("--batch-tokens", type=int, metavar="N",
                   help="--modality text: padded tokens per batch (default 2048 on CPU, "
                        "65536 on CUDA)")
    p.add_argument("--max-seconds", type=float, metavar="S",
                   help="cut longer utterances into windows (pooled over all of them)")
    p.add_argument("--frames", metavar="LAYERS",
                   help="also store frame-level features of these layers, e.g. 0,6,-1 or all")
    p.add_argument("--on-error", default="stop", choices=ON_ERROR,
                   help="stop at the first failed utterance (default) or record it and go on")
    p.add_argument("--workers", type=int, metavar="N", help="audio decoding threads")
    p.add_argument("--name", help="cache file stem (default: derived from --model)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing cache made with another model or settings, or "
                        "from other audio for one of its ids")
    p.add_argument("--hash-audio", action="store_true",
                   help="also store a digest of each utterance's decoded samples and check "
                        "the cached ones against the audio (decodes the cached audio again)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_scaling_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_options(ExtractSettings, vars(args))
    if uses_scaling(args):
        return run_scaled(args)
    from emoprobe.extract.runner import run_extraction

    result = run_extraction(
        args.manifest,
        args.model,
        args.out,
        revision=args.revision,
        modality=args.modality,
        device=args.device,
        dtype=args.dtype,
        batch_seconds=args.batch_seconds,
        batch_tokens=args.batch_tokens,
        max_seconds=args.max_seconds,
        frames=args.frames,
        on_error=args.on_error,
        workers=args.workers,
        name=args.name,
        overwrite=args.overwrite,
        hash_audio=args.hash_audio,
        progress=not args.no_progress,
    )
    print(result.summary.format())
    return 0
