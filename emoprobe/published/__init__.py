"""Published results to set beside ours: a registry of data files, one row per figure, each
with the protocol it was measured under and its source.

    emobox.csv   EmoBox intra-corpus figures (UA = uar, WA = war, F1 = macro_f1, in %)
    superb.csv   SUPERB-protocol emotion recognition accuracy (war, in %)
    aliases.csv  other names of the registry's upstreams

Only figures traceable to a source are listed. Matching our upstream names to the
registry's (`match_upstream`) is deliberately strict:

1. lower-case the name; keep what follows the last "/" or "--" (the organisation of a hub
   id, as in `microsoft/wavlm-large` or the cache name `microsoft--wavlm-large`); drop a
   ".h5" suffix; turn "_" and spaces into "-";
2. the result must equal a registry upstream or one of its aliases exactly: no prefixes or
   fuzzy matches, so `wavlm-base-plus` never borrows `wavlm-base`'s figure;
3. an alias listed for several upstreams (`whisper-large`: large, large-v2 or large-v3) is
   refused with an error naming the candidates; a name with no match has no published row.

A dataset matches when the registry's dataset equals ours (lower-case), or ours without the
`emobox-` prefix that `emoprobe prepare emobox` gives its corpora (`emobox-aesdd` is EmoBox's
`aesdd`), and its number of classes equals our task's. EmoBox's datasets are named after
EmoBox's `data/<folder>/`.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from emoprobe.data.emobox import PREFIX as EMOBOX_PREFIX
from emoprobe.errors import ProbeError

SOURCES = ("emobox", "superb")
TITLES = {"emobox": "EmoBox", "superb": "SUPERB"}


@dataclass(frozen=True)
class Published:
    """One published figure (a fraction: 0.5827 for 58.27%)."""

    registry: str
    dataset: str
    n_classes: int
    upstream: str
    metric: str
    value: float
    protocol: str
    source: str


def _read(name: str) -> list[dict[str, str]]:
    text = resources.files(__name__).joinpath(name).read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines()))


def load_registry(which: str | Sequence[str] = "all") -> list[Published]:
    """The published figures of `which` ("emobox", "superb" or "all")."""
    names = list(SOURCES) if which == "all" else [which] if isinstance(which, str) else list(
        which)
    bad = [n for n in names if n not in SOURCES]
    if bad:
        raise ProbeError(f"unknown published source {bad[0]!r}; known: "
                         f"{', '.join(SOURCES)}, all")
    out = []
    for name in names:
        for line, r in enumerate(_read(f"{name}.csv"), 2):
            if not r.get("source"):
                raise ProbeError(f"published/{name}.csv line {line}: no source")
            out.append(Published(name, r["dataset"], int(r["n_classes"]), r["upstream"],
                                 r["metric"], float(r["value"]) / 100.0, r["protocol"],
                                 r["source"]))
    return out


def normalise(name: str) -> str:
    """Step 1 of the matching rule."""
    s = str(name).strip().lower()
    for sep in ("/", "--"):
        if sep in s:
            s = s.rsplit(sep, 1)[1]
    s = s.removesuffix(".h5")
    return s.replace("_", "-").replace(" ", "-")


def aliases() -> dict[str, list[str]]:
    """alias -> the registry upstream(s) it may mean."""
    return {r["alias"]: r["upstream"].split("|") for r in _read("aliases.csv")}


def match_upstream(name: str, known: Sequence[str]) -> str | None:
    """The registry upstream among `known` that our upstream `name` is, by the rule in this
    module's docstring; None when there is none; an error when the name is ambiguous."""
    key = normalise(name)
    if key in known:
        return key
    candidates = aliases().get(key)
    if candidates is None:
        return None
    if len(candidates) > 1:
        raise ProbeError(f"upstream {name!r} is ambiguous for published results: it may be "
                         f"any of {', '.join(candidates)}; rename its cache after the exact "
                         "checkpoint")
    return candidates[0] if candidates[0] in known else None


def published_for(
    dataset: str, n_classes: int, upstream: str, registry: Sequence[Published]
) -> list[Published]:
    """The figures of `registry` that belong to our (dataset, task size, upstream)."""
    ours = str(dataset).lower()
    names = {ours, ours.removeprefix(EMOBOX_PREFIX)}
    mine = [p for p in registry if p.dataset in names and p.n_classes == n_classes]
    if not mine:
        return []
    match = match_upstream(upstream, sorted({p.upstream for p in mine}))
    return [p for p in mine if p.upstream == match] if match else []


def describe(p: Published) -> dict[str, Any]:
    return {"registry": p.registry, "dataset": p.dataset, "upstream": p.upstream,
            "metric": p.metric, "value": p.value, "protocol": p.protocol, "source": p.source}
