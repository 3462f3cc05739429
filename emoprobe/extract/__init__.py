"""Stage one: run an upstream once over a corpus and cache pooled per-layer embeddings.

`extract(manifest, model, out_dir, **settings)` writes the cache; `open_cache(path)` reads it
(emoprobe.cache, docs/cache-format.md). Heavy imports (torch, transformers) happen only
when extraction is used, so reading a cache stays light.
"""

from __future__ import annotations

from typing import Any

from emoprobe.cache import CacheReader, open_cache, read_meta, write_cache

__all__ = [
    "CacheReader",
    "ExtractResult",
    "ExtractSettings",
    "extract",
    "open_cache",
    "read_meta",
    "run_extraction",
    "write_cache",
]

_LAZY = {
    "extract": "emoprobe.extract.runner",
    "run_extraction": "emoprobe.extract.runner",
    "ExtractResult": "emoprobe.extract.runner",
    "ExtractSettings": "emoprobe.extract.settings",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'emoprobe.extract' has no attribute {name!r}")
