"""The feature cache: the contract between extraction (writer) and probing (reader).

The HDF5 format (`store`), its fingerprint, the writer lock, the check and repair, and the
`info` description live here, so both stages depend on this package and not on each other.
"""

from __future__ import annotations

from emoprobe.cache.store import (
    CACHE_SUFFIX,
    LAYER_CONVENTION,
    CacheReader,
    CacheWriter,
    open_cache,
    read_meta,
    write_cache,
)

__all__ = [
    "CACHE_SUFFIX",
    "LAYER_CONVENTION",
    "CacheReader",
    "CacheWriter",
    "open_cache",
    "read_meta",
    "write_cache",
]
