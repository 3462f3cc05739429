"""Stage two: linear probes over cached embeddings, WAR/UAR tables, plots.

`probe(caches, out=DIR)` runs a sweep over layers, folds and seeds; `report(DIR)` renders its
tables and plots; `run_pipeline(config)` chains prepare, extract, probe and report from one
TOML file. Heavy imports (torch) happen only when a probe runs.
"""

from __future__ import annotations

from typing import Any

from emoprobe.probe.config import ProbeOptions

__all__ = [
    "ProbeOptions",
    "SweepResult",
    "probe",
    "probe_arrays",
    "probe_cross",
    "report",
    "run_pipeline",
]

_LAZY = {
    "probe": "emoprobe.probe.sweep",
    "probe_arrays": "emoprobe.probe.sweep",
    "probe_cross": "emoprobe.probe.sweep",
    "SweepResult": "emoprobe.probe.sweep",
    "report": "emoprobe.probe.tables",
    "run_pipeline": "emoprobe.probe.pipeline",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'emoprobe.probe' has no attribute {name!r}")
