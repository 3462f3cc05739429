"""Settings checked against their own dataclasses: one validator for every option and config key.

The settings dataclasses (ExtractSettings, ProbeOptions, PrepareOptions, RunConfig's scalars)
are the single source of what is allowed: each field's type hint gives the type, and an
optional `rule(...)` in the field's metadata gives its range or choices. `check_settings`
validates a mapping (a TOML table, parsed command-line options) against a dataclass before
anything runs, and `check_fields` re-checks an instance in its `__post_init__`, so a field
added later is validated without further code.

Types are strict where a silent conversion would hide a mistake: `true` is not a number, `"8"`
is not a number, `3` is not a list of layers, and floats must be finite.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from emoprobe.errors import ConfigError

_RULE = "emoprobe_rule"


@dataclass(frozen=True)
class Rule:
    """Range and choices of one setting, beyond its type. `convert` turns an accepted
    shorthand into the field's type before it is checked (e.g. a seed count into seeds);
    `expected` replaces the generated description of what the value should be."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[Any, ...] | None = None
    convert: Callable[[Any], Any] | None = None
    expected: str | None = None
    path_safe: bool = False


def rule(**kwargs: Any) -> dict[str, Rule]:
    """Field metadata holding a Rule: `field(default=1, metadata=rule(ge=1))`."""
    return {_RULE: Rule(**kwargs)}


def _describe(hint: Any) -> str:
    """A type hint in words: `int`, `a list of numbers`, `a string or none`."""
    origin = typing.get_origin(hint)
    if hint is type(None):
        return "none"
    if origin in (typing.Union, types.UnionType):  # None is a default, never written
        return " or ".join(_describe(a) for a in typing.get_args(hint) if a is not type(None))
    if origin in (tuple, list):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        inner = _describe(args[0]) if args else "value"
        return f"a list of {inner}s"
    if origin is dict or hint is dict:
        return "a table"
    if dataclasses.is_dataclass(hint):
        return f"a table of {hint.__name__} settings"
    return {bool: "true or false", int: "an integer", float: "a finite number",
            str: "a string"}.get(hint, getattr(hint, "__name__", str(hint)))


class _Mismatch(Exception):
    """Raised inside the checker: the value does not have the hinted type."""


def _coerce(hint: Any, value: Any, name: str) -> Any:
    """`value` checked against `hint` (lists become tuples where a tuple is hinted)."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if hint is type(None):
        if value is None:
            return None
        raise _Mismatch
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            try:
                return _coerce(arg, value, name)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        inner = args[0] if args else Any
        items = [_coerce(inner, v, name) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise _Mismatch
        return dict(value)
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, Mapping):
            raise _Mismatch
        return hint(**check_settings(hint, value, where=name))
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise _Mismatch
            return float(value) if isinstance(value, float) else value
        raise _Mismatch
    if hint is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if isinstance(hint, type):
        if isinstance(value, hint):
            return value
        raise _Mismatch
    return value


def _in_range(r: Rule, value: Any) -> bool:
    numbers = value if isinstance(value, (list, tuple)) else [value]
    for v in numbers:
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        if ((r.ge is not None and not v >= r.ge) or (r.gt is not None and not v > r.gt)
                or (r.le is not None and not v <= r.le) or (r.lt is not None and not v < r.lt)):
            return False
    return True


def _range_words(r: Rule) -> str:
    parts = []
    if r.ge is not None:
        parts.append(f">= {r.ge:g}")
    if r.gt is not None:
        parts.append(f"> {r.gt:g}")
    if r.le is not None:
        parts.append(f"<= {r.le:g}")
    if r.lt is not None:
        parts.append(f"< {r.lt:g}")
    return " and ".join(parts)


def check_value(hint: Any, value: Any, name: str, r: Rule | None = None) -> Any:
    """One setting checked against its type hint and rule; returns the value in the field's
    type. The error names the setting, the value and what was expected."""
    r = r or Rule()
    expected = r.expected or _describe(hint)
    if name.startswith("-"):  # an option, shown as it was typed
        typed = (",".join(map(str, value)) if isinstance(value, (list, tuple))
                 else repr(value))
        shown = f"{name} {typed}"
    else:
        shown = f"{name} = {value!r}"
    try:
        if r.convert is not None and value is not None:
            value = r.convert(value)
    except ConfigError as exc:  # the converter's own words; an option's name is in them
        if name.startswith("-"):
            raise
        raise ConfigError(f"{shown}: {exc}") from None
    except (TypeError, ValueError):
        raise ConfigError(f"{shown}: expected {expected}") from None
    try:
        value = _coerce(hint, value, name)
    except ConfigError:  # a nested table's own message
        raise
    except (_Mismatch, TypeError, ValueError):
        raise ConfigError(f"{shown}: expected {expected}") from None
    if value is None:
        return value
    if r.choices is not None and value not in r.choices:
        choices = ", ".join(str(c) for c in r.choices if c is not None)
        raise ConfigError(f"{shown}: expected one of {choices}")
    if not _in_range(r, value):
        bounds = "" if r.expected else f" {_range_words(r)}"
        raise ConfigError(f"{shown}: expected {expected}{bounds}")
    if r.path_safe and isinstance(value, str) and (
            not value or "/" in value or "\\" in value or value in (".", "..")):
        raise ConfigError(f"{shown}: expected a plain file name (no path "
                          "separators, not . or ..)")
    return value


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def field_names(cls: type) -> list[str]:
    """The settings a dataclass accepts, in declaration order."""
    return [f.name for f in dataclasses.fields(cls) if f.init]


def check_settings(cls: type, values: Mapping[str, Any], *, where: str = "",
                   name: Callable[[str], str] = str, ignore: Iterable[str] = ()) -> dict[str, Any]:
    """Validate `values` against the fields of dataclass `cls` before anything runs: an
    unknown key names the valid ones, and each value is checked for type and range. `name`
    renders a field for messages (e.g. as a command-line option); `where` prefixes them.
    Returns the values converted to the fields' types."""
    prefix = f"{where}: " if where else ""
    known = field_names(cls)
    ignored = set(ignore)
    unknown = [k for k in values if k not in known and k not in ignored]
    if unknown:
        raise ConfigError(f"{prefix}unknown key(s) {', '.join(map(str, unknown))}; valid: "
                          f"{', '.join(k for k in known if k not in ignored)}")
    hints = _hints(cls)
    rules = {f.name: f.metadata.get(_RULE) for f in dataclasses.fields(cls)}
    out = {}
    for key, value in values.items():
        if key in ignored:
            continue
        out[key] = check_value(hints[key], value, f"{prefix}{name(key)}", rules[key])
    return out


def check_fields(obj: Any, *, where: str = "") -> None:
    """Re-check an instance's fields (for `__post_init__`): the same rules as for a mapping,
    so a dataclass built in code gets the same messages as a config file."""
    cls = type(obj)
    values = {f.name: getattr(obj, f.name) for f in dataclasses.fields(cls) if f.init}
    checked = check_settings(cls, values, where=where)
    for key, value in checked.items():
        if value is not values[key]:
            object.__setattr__(obj, key, value)


def option_name(field: str) -> str:
    """A settings field as the command-line option that sets it: `batch_seconds` ->
    `--batch-seconds`."""
    return "--" + field.replace("_", "-")


def check_options(cls: type, options: Mapping[str, Any],
                  renamed: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Parsed command-line options checked against `cls`: every field of `cls` present in
    `options` and not None, named as its option (or as `renamed[field]`)."""
    renamed = renamed or {}
    known = set(field_names(cls))
    given = {k: v for k, v in options.items() if k in known and v is not None}
    return check_settings(cls, given, name=lambda k: renamed.get(k, option_name(k)))
