"""`emoprobe report`: ranked leaderboard, per-layer table, paired significance and plots of
one or more probe results folders."""

from __future__ import annotations

import argparse

from emoprobe.probe.tables import FORMATS


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report",
        help="tables, significance tests and plots of probe results directories",
        description=(
            "Render the leaderboard (upstreams ranked per dataset at the layer chosen on "
            "validation, pooled figures with 95%% intervals and mean ± std over folds), the "
            "per-layer table, paired significance tests (report/significance.csv and .md) and "
            "PNG plots, into DIR/report; print the tables in --format. Several DIRs are merged "
            "into one report (--out required); the same probe with different numbers in two "
            "folders is an error."
        ),
    )
    p.add_argument("directories", nargs="+", metavar="DIR",
                   help="results directories of `emoprobe probe` or `emoprobe run`")
    p.add_argument("--format", default="md", choices=FORMATS, help="printed format (default md)")
    p.add_argument("--out", metavar="DIR", help="where to write (default DIR/report)")
    p.add_argument("--sort", metavar="METRIC",
                   help="rank by this metric (default: uar; ccc for a regression task; war, "
                   "macro_f1, rmse, ...)")
    p.add_argument("--published", choices=["emobox", "superb", "all"],
                   help="add published figures (EmoBox, SUPERB) and our difference to them "
                   "where dataset and upstream match (docs/probing.md)")
    p.add_argument("--no-plots", action="store_true", help="tables only")
    p.add_argument("--no-significance", action="store_true",
                   help="skip the paired tests (they read predictions.csv.gz)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from emoprobe.probe.report import report

    result = report(args.directories, fmt=args.format, out=args.out, plots=not args.no_plots,
                    sort=args.sort, significance=not args.no_significance,
                    published=args.published)
    print(result.text)
    print(f"wrote {len(result.files)} files to {result.files[0].parent}")
    return 0
