"""Cache fingerprints: one hash of what went in (manifest, upstream, output-relevant settings).

A cache is reused only when all three parts match, in the spirit of Hugging Face datasets'
fingerprints: hashing the inputs alone would return stale features after the model or the
settings change. Each part is kept as well, so a mismatch can say *what* changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from emoprobe.data.manifest import dumps_records

FINGERPRINT_PARTS = ("manifest", "upstream", "settings")


def digest(obj: Any) -> str:
    """SHA-256 hex digest of `obj` as canonical JSON (sorted keys, no whitespace)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def manifest_digest(records: Sequence[Mapping[str, Any]]) -> str:
    """Hash of the manifest as stored in a cache: every field of every record, in order."""
    return hashlib.sha256(dumps_records(records).encode("utf-8")).hexdigest()


def fingerprint_parts(
    records: Sequence[Mapping[str, Any]], upstream: Mapping[str, Any], settings: Mapping[str, Any]
) -> dict[str, str]:
    """The three part digests: manifest records, upstream identity, output-relevant settings."""
    return {
        "manifest": manifest_digest(records),
        "upstream": digest(dict(upstream)),
        "settings": digest(dict(settings)),
    }


def combine(parts: Mapping[str, str]) -> str:
    """The cache fingerprint from its parts (order fixed by FINGERPRINT_PARTS)."""
    return digest([[name, parts[name]] for name in FINGERPRINT_PARTS])


def compute_fingerprint(
    records: Sequence[Mapping[str, Any]], upstream: Mapping[str, Any], settings: Mapping[str, Any]
) -> tuple[str, dict[str, str]]:
    """Return (fingerprint, parts). The single place where a cache fingerprint is defined."""
    parts = fingerprint_parts(records, upstream, settings)
    return combine(parts), parts


def describe_mismatch(stored: Mapping[str, str], wanted: Mapping[str, str]) -> list[str]:
    """Names of the parts that differ between two part dictionaries."""
    return [name for name in FINGERPRINT_PARTS if stored.get(name) != wanted.get(name)]
