"""Stage zero: corpora as distributed -> validated JSONL manifests.

>>> from emoprobe.data import prepare_corpus
>>> result = prepare_corpus("iemocap", "/data/IEMOCAP", out="iemocap.jsonl")  # doctest: +SKIP

Names are imported when first used, so `import emoprobe.data` stays light.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "prepare_corpus": "emoprobe.data.prepare",
    "load_corpus": "emoprobe.data.prepare",
    "PrepareResult": "emoprobe.data.prepare",
    "check_manifest": "emoprobe.data.check",
    "read_manifest": "emoprobe.data.manifest",
    "write_manifest": "emoprobe.data.manifest",
    "validate_record": "emoprobe.data.manifest",
    "load_audio": "emoprobe.data.audio",
    "audio_info": "emoprobe.data.audio",
    "get_corpus": "emoprobe.data.corpora",
    "corpus_for_records": "emoprobe.data.corpora",
    "CorpusSpec": "emoprobe.data.corpora",
    "make_folds": "emoprobe.data.folds",
    "resolve_folds": "emoprobe.data.folds",
    "Fold": "emoprobe.data.folds",
    "FoldProtocol": "emoprobe.data.folds",
    "Task": "emoprobe.data.tasks",
    "label_map_task": "emoprobe.data.tasks",
    "read_label_map": "emoprobe.data.tasks",
    "count_records": "emoprobe.data.counts",
    "load_emobox": "emoprobe.data.emobox",
    "read_emobox": "emoprobe.data.emobox",
    "prepare_emobox_all": "emoprobe.data.prepare",
    "audit_manifest": "emoprobe.data.audit",
    "audit_records": "emoprobe.data.audit",
    "AuditReport": "emoprobe.data.audit",
    "prepare_demo": "emoprobe.data.demo",
    "make_demo_corpus": "emoprobe.data.demo",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'emoprobe.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
