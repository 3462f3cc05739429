"""Reduced precision check: pooled vectors in float16/bfloat16 against float32.

NaNs and drifts have been reported for half-precision inference of speech encoders; compare
on a few utterances of your corpus before trusting a low-precision cache:

>>> report = compare_precision("facebook/wav2vec2-base", waves, dtype="bfloat16")  # doctest: +SKIP
>>> max(r["max_abs_diff"] for r in report), min(r["min_cosine"] for r in report)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from emoprobe.extract.upstream import load_upstream


def agreement(reference: np.ndarray, other: np.ndarray) -> list[dict[str, Any]]:
    """Per-layer agreement of two (layers, n, dim) pooled arrays: largest absolute
    difference, largest difference relative to the reference's largest value, smallest
    cosine similarity over utterances, and whether `other` is all finite."""
    out = []
    for layer in range(reference.shape[0]):
        ref = reference[layer].astype(np.float64)
        oth = other[layer].astype(np.float64)
        finite = bool(np.isfinite(oth).all())
        diff = np.abs(ref - oth)
        num = (ref * oth).sum(axis=1)
        den = np.linalg.norm(ref, axis=1) * np.linalg.norm(oth, axis=1)
        cos = np.where(den > 0, num / np.where(den > 0, den, 1), 1.0)
        out.append({
            "layer": layer,
            "finite": finite,
            "max_abs_diff": float(diff.max()) if finite else float("inf"),
            "max_rel_diff": float(diff.max() / max(np.abs(ref).max(), 1e-12))
            if finite else float("inf"),
            "min_cosine": float(cos.min()) if finite else float("nan"),
        })
    return out


def compare_precision(
    model: str,
    waves: Sequence[np.ndarray],
    *,
    dtype: str = "bfloat16",
    device: str = "cpu",
    revision: str | None = None,
) -> list[dict[str, Any]]:
    """Pool `waves` (at the model's sample rate) in float32 and in `dtype`, one utterance at
    a time, and report per-layer agreement (see `agreement`)."""
    ref_up = load_upstream(model, revision=revision, device=device, dtype="float32")
    ref = np.concatenate([ref_up.pool([w]) for w in waves], axis=1)
    ref_up.close()
    low_up = load_upstream(model, revision=revision, device=device, dtype=dtype)
    low = np.concatenate([low_up.pool([w]) for w in waves], axis=1)
    return agreement(ref, low)
