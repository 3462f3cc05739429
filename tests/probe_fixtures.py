"""Small synthetic caches with planted structure, shared by the probe tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from emoprobe.cache.store import write_cache
from emoprobe.testing.embeddings import synthetic_corpus

N_LAYERS, N_UTTS, DIM = 5, 600, 24
PLANTED = 3  # the only layer that carries label information in `planted()`


def planted(seed: int = 0, **kw: Any) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """IEMOCAP-shaped records (5 sessions, 10 speakers); only layer PLANTED is informative."""
    signal = [0.0] * N_LAYERS
    signal[PLANTED] = 1.0
    args = {"n_layers": N_LAYERS, "n_utts": N_UTTS, "dim": DIM, "signal": signal,
            "separation": 0.8, "latent_dim": 8, "seed": seed}
    args.update(kw)
    return synthetic_corpus(**args)


def planted_cache(path: Path, *, model: str = "synthetic-model", seed: int = 0,
                  failed: dict[str, str] | None = None, **kw: Any) -> Path:
    pooled, records = planted(seed=seed, **kw)
    meta = {"model": model, "upstream_kind": "transformers"}
    return write_cache(path, pooled, records, meta=meta, failed=failed)
