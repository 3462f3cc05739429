"""`emoprobe probe`: linear probes on every layer of cached embeddings, per fold and seed."""

from __future__ import annotations

import argparse

from emoprobe.errors import ConfigError


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}") from None


def joblib_backends() -> list[str]:
    """The joblib backends `--backend` accepts: those registered, and those joblib knows how
    to register when their package is installed (dask, ray)."""
    from joblib import parallel

    return sorted({*parallel.BACKENDS, *parallel.EXTERNAL_BACKENDS})


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "probe",
        help="train linear probes on every layer of one or more caches",
        description=(
            "Per layer, fold and seed: standardise on the training part, fit softmax "
            "regression with L2, choose C on a speaker-disjoint validation part, refit, and "
            "score the test fold (WAR, UAR, macro-F1, per-class recall, bootstrap intervals). "
            "Writes results.csv, summary.csv, selection.csv, predictions.csv.gz and "
            "protocol.json to --out, and the report (tables, paired significance, plots) to "
            "--out/report; an interrupted run resumes from the folds it finished."
        ),
    )
    p.add_argument("caches", nargs="*", metavar="CACHE", help="cache files (.h5) from extract")
    p.add_argument("--task", help="task name (default: the corpus's default task); with "
                   "--label-map, the name of the task it defines; a regression task (valence, "
                   "arousal, dominance, continuous) or any numeric manifest field is probed "
                   "by ridge regression and scored by CCC")
    p.add_argument("--manifest", action="append", metavar="FILE",
                   help="manifest (JSONL) whose labels, speakers and folds to use, joined to "
                   "the cache by id (default: the copy inside the cache); once for every "
                   "cache, or once per cache in their order")
    p.add_argument("--label-map", metavar="FILE",
                   help='JSON label map, class -> raw codes: {"ang": ["Angry", "A"], ...}; '
                   "codes outside it are left out and counted")
    p.add_argument("--folds", metavar="SPEC",
                   help="folds: loso (one per speaker), kfold:K[:SEED] (speaker-independent, "
                   "label-stratified), a manifest field (session, speaker, fold, split) or "
                   "a fold file (JSON/JSONL id -> fold, or EmoBox's corpus folder or "
                   "fold_K/*_test_fold_K.jsonl); default: the corpus's protocol")
    p.add_argument("--layers", default="all", help="all, or e.g. 0,3,5-8 or -1 (default all)")
    p.add_argument("--seeds", type=int, default=3, metavar="N",
                   help="validation carvings (seeds 0..N-1) per fold (default 3)")
    p.add_argument("--out", default="probe-results", metavar="DIR",
                   help="results directory (default probe-results)")
    p.add_argument("--balanced", action="store_true", help="class-balanced loss")
    p.add_argument("--preset", choices=["superb"],
                   help="superb: also learn a softmax-weighted sum of all layers")
    p.add_argument("--superb-norm", choices=["standardise", "none"], default="standardise",
                   help="standardise each layer before the weighted sum (default) or not")
    p.add_argument("--train-on", metavar="CACHE", help="cross-corpus: cache to train on")
    p.add_argument("--test-on", metavar="CACHE", help="cross-corpus: cache to test on")
    p.add_argument("--train-manifest", metavar="FILE",
                   help="cross-corpus: manifest of the --train-on cache")
    p.add_argument("--test-manifest", metavar="FILE",
                   help="cross-corpus: manifest of the --test-on cache")
    p.add_argument("--fuse", nargs="+", action="append", metavar="CACHE[:LAYER]", default=[],
                   help="fusion probe: the concatenation of one layer of each cache (same "
                   "corpus, joined by id; default each cache's layer chosen on validation); "
                   "give --fuse again for another fusion")
    p.add_argument("--c-grid", type=_floats, metavar="C,C,...",
                   help="inverse L2 strengths to choose from (default 1e-4,1e-3,1e-2,0.1,1)")
    p.add_argument("--alpha-grid", type=_floats, metavar="A,A,...",
                   help="ridge penalties to choose from for regression tasks (scikit-learn's "
                   "Ridge alpha; default 0.1,1,...,1e6)")
    p.add_argument("--refit", choices=["train+val", "train"], default="train+val",
                   help="after choosing C, refit on train+validation (default) or keep the "
                   "fit on the training part")
    p.add_argument("--val-fraction", type=float, default=0.2, metavar="F",
                   help="share of training speakers held out for validation (default 0.2)")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="B",
                   help="bootstrap resamples for 95%% intervals (0 = none; default 1000)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="folds to run in parallel (joblib; default 1)")
    p.add_argument("--backend", default=None,
                   help="joblib backend for --jobs (loky, threading, dask, ray; default loky)")
    p.add_argument("--fresh", action="store_true",
                   help="recompute every fold instead of reusing finished ones in --out")
    p.add_argument("--no-report", action="store_true",
                   help="do not write DIR/report (tables, significance, plots) nor print the "
                   "leaderboard")
    p.add_argument("--sort", metavar="METRIC",
                   help="rank the leaderboard by this metric (default: uar; ccc for a "
                   "regression task)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from emoprobe.pipeline import RunConfig
    from emoprobe.probe.config import ProbeOptions
    from emoprobe.probe.report import report
    from emoprobe.probe.sweep import probe
    from emoprobe.probe.tables import to_markdown
    from emoprobe.validation import check_options

    check_options(RunConfig, {"jobs": args.jobs})
    if args.backend is not None and args.backend not in joblib_backends():
        raise ConfigError(f"--backend {args.backend!r}: expected one of "
                          f"{', '.join(joblib_backends())}")
    settings = {
        "seeds": args.seeds,
        "balanced": args.balanced,
        "preset": args.preset,
        "superb_norm": args.superb_norm,
        "refit": args.refit,
        "val_fraction": args.val_fraction,
        "n_boot": args.bootstrap,
    }
    if args.c_grid is not None:
        settings["c_grid"] = tuple(args.c_grid)
    if args.alpha_grid is not None:
        settings["alpha_grid"] = tuple(args.alpha_grid)
    settings = check_options(ProbeOptions, settings, renamed={"n_boot": "--bootstrap"})

    def go():
        return probe(
            args.caches, task=args.task, label_map=args.label_map, manifest=args.manifest,
            folds=args.folds, layers=args.layers, out=args.out,
            train_on=args.train_on, test_on=args.test_on, fuse=args.fuse,
            train_manifest=args.train_manifest, test_manifest=args.test_manifest, jobs=args.jobs,
            progress=not args.no_progress, resume=not args.fresh, **settings,
        )

    if args.backend:
        from joblib import parallel_config

        with parallel_config(backend=args.backend):
            result = go()
    else:
        result = go()
    if not args.no_report:
        rep = report(result.out, sort=args.sort)
        print(to_markdown(rep.leaderboard))
        print(f"report: {len(rep.files)} files in {rep.files[0].parent}")
    print(f"results: {result.out}")
    return 0
