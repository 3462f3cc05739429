"""The one layer grammar, shared by `--layers` (probing) and `--frames` (extraction).

A spec is `all`, a layer `N` (negative counts from the end: `-1` is the last), a range `N-M`
(inclusive), or a comma-separated list of those: `0,6,-1`, `5-8`, `0,3,5-8`. Layer 0 is the
embedding output before the first transformer block, layer i the output of block i.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from emoprobe.errors import ConfigError

ALL = "all"
_PART = re.compile(r"(-?\d+)(?:-(-?\d+))?")

LayerSpec = tuple[int, ...] | str


def parse_layer_spec(spec: str | Sequence[int] | None, *, option: str = "layers") -> LayerSpec:
    """Check a spec's syntax without knowing the model: "all", or a tuple of layer numbers
    (ranges expanded, negative numbers kept); None or "" give () (no layers)."""
    if spec is None:
        return ()
    if isinstance(spec, str):
        text = spec.strip()
        if text.lower() == ALL:
            return ALL
        out: list[int] = []
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            m = _PART.fullmatch(part.replace(" ", ""))
            if m is None or (m.group(2) is not None and int(m.group(2)) < int(m.group(1))):
                raise ConfigError(
                    f"--{option}: bad layer spec {part!r} in {spec!r}; expected all, N, N-M or "
                    "a comma-separated list of those (e.g. 0,6,-1 or 5-8)"
                )
            lo = int(m.group(1))
            hi = lo if m.group(2) is None else int(m.group(2))
            out.extend(range(lo, hi + 1))
        return tuple(out)
    if isinstance(spec, (bool, int)) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in spec
    ):
        raise ConfigError(f"--{option}: expected a layer spec string or a list of layer "
                          f"numbers, got {spec!r}")
    return tuple(int(v) for v in spec)


def resolve_layers(
    spec: str | Sequence[int] | None, n_layers: int, *, option: str = "layers",
    default_all: bool = True,
) -> list[int]:
    """Layer indices 0..n_layers-1 in the spec's order, without repeats. An empty spec means
    every layer (`default_all`) or none; a layer outside the model is an error naming it."""
    parsed = parse_layer_spec(spec, option=option)
    if parsed == ALL or (not parsed and default_all):
        return list(range(n_layers))
    resolved: list[int] = []
    for v in parsed:
        idx = v + n_layers if v < 0 else v
        if not 0 <= idx < n_layers:
            raise ConfigError(f"--{option}: layer {v} does not exist; there are layers "
                              f"0..{n_layers - 1}")
        if idx not in resolved:
            resolved.append(idx)
    return resolved
