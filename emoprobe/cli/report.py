"""`emoprobe report`: leaderboard and per-layer tables and plots of a probe results folder."""

from __future__ import annotations

import argparse

from emoprobe.probe.tables import FORMATS


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report",
        help="tables and plots of a probe results directory",
        description=(
            "Render the leaderboard (per upstream: WAR/UAR at the layer chosen on validation "
            "and at the last layer) and the per-layer table in Markdown, CSV, JSON and LaTeX, "
            "plus PNG plots, into DIR/report; print the tables in --format."
        ),
    )
    p.add_argument("directory", metavar="DIR", help="results directory of `emoprobe probe`")
    p.add_argument("--format", default="md", choices=FORMATS, help="printed format (default md)")
    p.add_argument("--out", metavar="DIR", help="where to write (default DIR/report)")
    p.add_argument("--no-plots", action="store_true", help="tables only")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from emoprobe.probe.report import report

    result = report(args.directory, fmt=args.format, out=args.out, plots=not args.no_plots)
    print(result.text)
    print(f"wrote {len(result.files)} files to {result.files[0].parent}")
    return 0
