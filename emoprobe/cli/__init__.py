"""The `emoprobe` command line: a thin shell over the library's public functions.

Each subcommand lives in its own module here and exposes `register(subparsers)`, which adds
its parser and sets `func` to a callable taking the parsed arguments and returning an exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import logging
import os
import sys
import traceback
from collections.abc import Iterator, Sequence
from types import TracebackType

from emoprobe import __version__
from emoprobe.errors import EmoprobeError

# Module names under emoprobe.cli, in the order `emoprobe --help` lists them.
COMMANDS = ("prepare", "audit", "extract", "merge", "info", "probe", "report", "run", "demo")

USAGE, DATA = 2, 1  # exit status of a usage mistake, of a problem with data or environment
INTERRUPTED, BROKEN_PIPE = 130, 141  # 128 + SIGINT, 128 + SIGPIPE, as a shell reports them
BUG_REPORT = ("this is a bug in emoprobe: please report it with the command line, the "
              "traceback above and the output of `emoprobe --version`")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emoprobe",
        description="Layer-wise linear probing of speech models for emotion recognition.",
    )
    parser.add_argument("--version", action="version", version=f"emoprobe {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true",
                        help="print the full traceback of any error")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="only warnings and errors (no progress messages)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"emoprobe.cli.{name}").register(sub)
    for command in sub.choices.values():  # `emoprobe CMD ... --debug` works too
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="print the full traceback of any error")
    return parser


def _hdf5_file(tb: TracebackType | None) -> str | None:
    """The HDF5 file an error was raised on, when h5py raised it (None otherwise)."""
    frames = list(traceback.walk_tb(tb))
    if not frames or "h5py" not in frames[-1][0].f_code.co_filename:
        return None
    for frame, _ in reversed(frames):  # an open h5py object, else our own `path`
        for value in frame.f_locals.values():
            try:
                name = value.file.filename
            except Exception:  # not an h5py object, or one already closed
                continue
            if isinstance(name, str):
                return name
    for frame, _ in reversed(frames):
        local = frame.f_locals
        for value in (local.get("path"), getattr(local.get("self"), "path", None)):
            if isinstance(value, (str, os.PathLike)):
                return os.fspath(value)
    return "?"


def _os_error(exc: OSError) -> str:
    """An OSError in words, with the path, and the bytes needed when a disk is full."""
    path = exc.filename if exc.filename is not None else ""
    code = exc.errno
    if code == errno.ENOSPC:
        needed = getattr(exc, "bytes_needed", None)
        more = f" ({needed} bytes needed)" if needed else ""
        return f"disk full writing {path or 'a file'}{more}; free space and run again (the " \
               "work done so far is kept)"
    if code == errno.EFBIG:
        return f"file too large: {path or 'a file'} exceeds the file-size limit (`ulimit -f`)"
    if code in (errno.ENOLCK, errno.ENOSYS):
        return (f"file locking is not supported here{': ' + str(path) if path else ''} "
                "(common on NFS and Lustre); see docs/troubleshooting.md")
    words = {errno.ENOENT: "no such file or folder", errno.EACCES: "permission denied",
             errno.EPERM: "operation not permitted", errno.EISDIR: "is a folder, expected a file",
             errno.ENOTDIR: "not a folder", errno.EROFS: "read-only file system",
             errno.EEXIST: "already exists", errno.ENOTEMPTY: "folder not empty"}
    what = words.get(code) or exc.strerror or str(exc)
    if code == errno.EEXIST and path and os.path.isfile(path):  # mkdir over a file
        what = "is a file, where a folder is needed"
    if exc.filename2 is not None:
        return f"{path} -> {exc.filename2}: {what}"
    return f"{path}: {what}" if path else what


def describe_failure(exc: BaseException) -> tuple[int, str] | None:
    """(exit status, one-line message) for an expected failure; None for a bug."""
    if isinstance(exc, EmoprobeError):
        return exc.exit_code, str(exc)
    hdf5 = _hdf5_file(exc.__traceback__)
    if hdf5 is not None:
        text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        if isinstance(exc, OSError) and (exc.errno in (errno.ENOSPC, errno.EFBIG)
                                         or "errno = 28" in text or "errno = 27" in text):
            full = exc.errno == errno.ENOSPC or "errno = 28" in text
            return DATA, _os_error(OSError(errno.ENOSPC if full else errno.EFBIG,
                                           "", hdf5))
        return DATA, (f"cache damaged: {hdf5}: {text}; run `emoprobe info --repair {hdf5}` "
                      "or extract with `--overwrite`")
    if isinstance(exc, UnicodeDecodeError):
        return DATA, (f"not UTF-8 at byte {exc.start} "
                      f"({bytes(exc.object[exc.start:exc.start + 1])!r}); expected UTF-8 text")
    if isinstance(exc, OSError):
        return DATA, _os_error(exc)
    if isinstance(exc, MemoryError):
        return DATA, "out of memory; use smaller batches (--batch-seconds) or fewer jobs"
    return None


def _quiet_stdout() -> None:
    """After a closed pipe: point stdout at /dev/null so the interpreter's final flush
    cannot fail again and print a second error."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout replaced (tests) or already closed
        pass


class _Plain(logging.Handler):
    """Messages as plain lines on the current stdout (warnings prefixed)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.levelno >= logging.WARNING:
                text = f"{record.levelname.lower()}: {text}"
            sys.stdout.write(text + "\n")
        except Exception:  # logging must never raise
            self.handleError(record)


@contextlib.contextmanager
def _plain_messages(name: str, level: int) -> Iterator[None]:
    """While a command runs, show a library logger's messages the way the command line has
    always shown them: plain lines on stdout."""
    logger = logging.getLogger(name)
    handler = _Plain()
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code. Expected failures
    end in one line `emoprobe CMD: error: ...` (status 2 for a usage mistake, 1 for a data or
    environment problem); anything else is a bug and prints its traceback."""
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    prefix = f"emoprobe {args.command}"
    try:
        with _plain_messages("emoprobe.probe", level):
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if args.debug:
            traceback.print_exc()
        print(f"{prefix}: interrupted", file=sys.stderr)
        return INTERRUPTED
    except BrokenPipeError:  # the reader went away (`emoprobe info x.h5 | head`)
        _quiet_stdout()
        return BROKEN_PIPE
    except Exception as exc:
        known = describe_failure(exc)
        if args.debug or known is None:
            traceback.print_exc()
        if known is None:
            print(f"{prefix}: error: {type(exc).__name__}: {exc}\n{prefix}: {BUG_REPORT}",
                  file=sys.stderr)
            return DATA
        status, message = known
        print(f"{prefix}: error: {message}", file=sys.stderr)
        return status


if __name__ == "__main__":
    sys.exit(main())
