"""emoprobe: how much emotion information a speech model carries, per layer and corpus."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {"run_pipeline": "emoprobe.pipeline", "run_demo": "emoprobe.pipeline"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'emoprobe' has no attribute {name!r}")
