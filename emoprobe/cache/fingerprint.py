"""Cache fingerprints: one hash of what went in (audio, upstream, output-relevant settings).

A cache row is identified by its utterance id and its audio identity (sample rate, number of
samples, channels); labels, folds, speakers, transcripts and paths are not part of it, so a
manifest that changes only those reuses the cache. A cache is reused only when the upstream
and settings parts match as well, in the spirit of Hugging Face datasets' fingerprints: hashing
the inputs alone would return stale features after the model or the settings change. Each part
is kept, so a mismatch can say *what* changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from emoprobe.data.manifest import dumps_records

FINGERPRINT_PARTS = ("audio", "upstream", "settings")


def digest(obj: Any) -> str:
    """SHA-256 hex digest of `obj` as canonical JSON (sorted keys, no whitespace)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def manifest_digest(records: Sequence[Mapping[str, Any]]) -> str:
    """Hash of a manifest: every field of every record, in order."""
    return hashlib.sha256(dumps_records(records).encode("utf-8")).hexdigest()


def audio_part(ids: Sequence[str], audio: np.ndarray | Sequence[Sequence[int]],
               keys: Sequence[str] | None = None) -> str:
    """Hash of the rows' identities: (id, sample rate, samples, channels), sorted by id, so
    it does not depend on the order of the manifest. `keys` adds a content hash per row (the
    sentence, for text upstreams)."""
    rows = np.asarray(audio, dtype=np.int64).reshape(len(ids), -1).tolist()
    extra = [[] if keys is None else [str(keys[i])] for i in range(len(ids))]
    return digest(sorted([str(utt), *row, *more] for utt, row, more in zip(ids, rows, extra)))


def text_key(text: Any) -> str:
    """Content hash of a text row (its sentence): what identifies it besides its id."""
    return hashlib.sha256(str(text if text is not None else "").encode("utf-8")).hexdigest()


def compute_fingerprint(
    audio: str, upstream: Mapping[str, Any], settings: Mapping[str, Any]
) -> tuple[str, dict[str, str]]:
    """Return (fingerprint, parts) from the audio part (`audio_part`), the upstream identity
    and the output-relevant settings. The single place where a cache fingerprint is defined."""
    parts = {"audio": audio, **static_parts(upstream, settings)}
    return combine(parts), parts


def static_parts(upstream: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, str]:
    """The parts fixed when a cache is created: upstream identity and output settings."""
    return {"upstream": digest(dict(upstream)), "settings": digest(dict(settings))}


def combine(parts: Mapping[str, str]) -> str:
    """The cache fingerprint from its parts (in the order of FINGERPRINT_PARTS; a version-1
    cache's `manifest` part takes the place of `audio`)."""
    names = [n for n in ("manifest", *FINGERPRINT_PARTS) if n in parts]
    return digest([[name, parts[name]] for name in names])


def describe_mismatch(stored: Mapping[str, str], wanted: Mapping[str, str]) -> list[str]:
    """Names of the parts that differ between two part dictionaries."""
    names = [n for n in ("manifest", *FINGERPRINT_PARTS) if n in stored or n in wanted]
    return [name for name in names if stored.get(name) != wanted.get(name)]
