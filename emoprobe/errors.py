"""Error classes. Each subclasses a builtin so callers can catch broadly or precisely."""

from __future__ import annotations


class EmoprobeError(Exception):
    """Base class for every error emoprobe raises on purpose."""


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


class ConfigError(EmoprobeError, ValueError):
    """A setting, option or config value is invalid, or options conflict; the message names
    the option or key, the value given and what was expected."""
