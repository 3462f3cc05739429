"""Human-readable description of a cache (used by `emoprobe info`)."""

from __future__ import annotations

import json
from typing import Any

from emoprobe.cache.store import CacheReader

_SHOWN = (
    "format", "format_version", "model", "upstream_kind", "model_type", "revision",
    "commit_hash", "model_path", "n_layers", "n_blocks", "dim", "layer_convention", "pooling",
    "dtype", "sample_rate", "window_seconds", "batching", "attention_mask", "frame_layers",
    "manifest_path", "created", "completed", "fingerprint",
)


def _fmt(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def describe_cache(reader: CacheReader, *, max_failures: int = 50) -> str:
    """A multi-line report: state and counts first, then every attribute."""
    meta = reader.meta
    n = len(reader.ids)
    state = "complete" if reader.complete else "INCOMPLETE (re-run the extract command)"
    hours = float(reader.duration[reader.usable].sum()) / 3600
    amount = f"{hours:.3f} h of audio"
    if meta.get("upstream_kind") == "text":  # no audio: tokens pooled
        amount = f"{int(reader.n_frames[reader.usable].sum())} tokens"
    lines = [
        f"{reader.path}",
        f"  state: {state}",
        f"  utterances: {n} in manifest, {int(reader.done.sum())} done, "
        f"{int(reader.usable.sum())} usable, {len(reader.failed)} failed",
        f"  shape: {reader.n_layers} layers x {reader.dim} dims; {amount}",
    ]
    for key in _SHOWN:
        if key in meta and meta[key] not in (None, "", []):
            lines.append(f"  {key}: {_fmt(meta[key])}")
    for key in sorted(set(meta) - set(_SHOWN) - {"complete", "n_utterances"}):
        if key == "feature_names":
            lines.append(f"  feature_names: {len(meta[key])} names")
            continue
        lines.append(f"  {key}: {_fmt(meta[key])}")
    if reader.failed:
        lines.append(f"  failures ({len(reader.failed)}):")
        for utt, reason in list(reader.failed.items())[:max_failures]:
            lines.append(f"    {utt}: {reason}")
        if len(reader.failed) > max_failures:
            lines.append(f"    ... and {len(reader.failed) - max_failures} more (--json)")
    return "\n".join(lines)
