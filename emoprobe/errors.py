"""Error classes. Each subclasses a builtin so callers can catch broadly or precisely.

`exit_code` is what the command line returns for the error: 2 for a usage mistake (an option,
a config key or a combination of them), 1 for a problem with the data or the environment.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


class EmoprobeError(Exception):
    """Base class for every error emoprobe raises on purpose."""

    exit_code = 1


class ConfigError(EmoprobeError, ValueError):
    """A setting, option or config key is unknown, of the wrong type, out of range or in
    conflict with another; the message names it and says what was expected."""

    exit_code = 2


class ManifestError(EmoprobeError, ValueError):
    """A manifest record or file is malformed; the message names the file, line or id."""


class AudioError(EmoprobeError, OSError):
    """An audio file cannot be read or is empty; the message names the file."""


class UnknownLabelError(ManifestError):
    """A label code that the corpus does not define; the message lists the known codes."""


class CountMismatchError(EmoprobeError, ValueError):
    """Counts found in a corpus differ from the published ones."""


class CacheError(EmoprobeError, ValueError):
    """A feature cache is missing, incomplete, foreign or inconsistent."""


class ProbeError(EmoprobeError, ValueError):
    """A probing run cannot proceed with the data it was given."""


class ExtractionError(EmoprobeError, RuntimeError):
    """An upstream cannot be loaded or run, or an utterance cannot be extracted."""


class LockUnsupportedError(EmoprobeError, OSError):
    """The filesystem refuses file locks (flock: ENOLCK, ENOSYS or EOPNOTSUPP)."""

    def __str__(self) -> str:  # the explanation alone, without OSError's "[Errno N]" prefix
        return str(self.strerror)


def not_utf8(path: object, exc: UnicodeDecodeError, what: str = "text") -> str:
    """The message for a file that does not decode: the file, the line, the byte offset and
    the byte (`exc` from decoding the whole file, so the offset is the file's)."""
    data = bytes(exc.object)
    line = data[:exc.start].count(b"\n") + 1
    bad = data[exc.start:exc.start + 1]
    return f"{path}:{line}: not UTF-8 at byte {exc.start} ({bad!r}); expected UTF-8 {what}"


def utf8_error(path: object, what: str = "text") -> str:
    """`not_utf8` for a file whose decoding failed while it was read in pieces: decodes the
    whole file again to find the file-level offset."""
    with open(str(path), "rb") as fh:
        data = fh.read()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return not_utf8(path, exc, what)
    return f"{path}: not UTF-8; expected UTF-8 {what}"


def read_json_file(path: object, error: Callable[[str], Exception], expected: str) -> Any:
    """Parse a JSON file; text that is not UTF-8 or not JSON raises `error(message)`, the
    message naming the file and the place of the problem and saying what was `expected`."""
    try:
        with open(str(path), encoding="utf-8") as fh:
            return json.load(fh)
    except UnicodeDecodeError:
        raise error(f"{utf8_error(path, 'JSON')} ({expected})") from None
    except json.JSONDecodeError as exc:
        raise error(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: "
                    f"{exc.msg}); expected {expected}") from None
