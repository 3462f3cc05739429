"""The `emoprobe` command line: a thin shell over the library's public functions.

Each subcommand lives in its own module here and exposes `register(subparsers)`, which adds
its parser and sets `func` to a callable taking the parsed arguments and returning an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from emoprobe import __version__
from emoprobe.errors import EmoprobeError

# Module names under emoprobe.cli, in the order `emoprobe --help` lists them.
COMMANDS = ("prepare", "audit", "extract", "merge", "info", "probe", "report", "run", "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emoprobe",
        description="Layer-wise linear probing of speech models for emotion recognition.",
    )
    parser.add_argument("--version", action="version", version=f"emoprobe {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"emoprobe.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except EmoprobeError as exc:
        print(f"emoprobe {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"emoprobe {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
