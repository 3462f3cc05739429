"""Stage two: linear probes over cached embeddings, WAR/UAR tables, plots.

`probe(caches, out=DIR)` runs a sweep over layers, folds and seeds; `report(DIR)` renders its
tables, significance tests and plots; `load_results(DIR)` returns its rows typed. Heavy
imports (torch) happen only when a probe runs; `emoprobe.run_pipeline` chains every stage
from one TOML file.
"""

from __future__ import annotations

from typing import Any

from emoprobe.probe.config import ProbeOptions
from emoprobe.probe.report import report  # eager: the function shadows its module's name
from emoprobe.probe.results import ResultRow, ResultRows, load_results

__all__ = [
    "ProbeOptions",
    "ResultRow",
    "ResultRows",
    "SweepResult",
    "load_results",
    "probe",
    "probe_arrays",
    "probe_cross",
    "report",
]

_LAZY = {
    "probe": "emoprobe.probe.sweep",
    "probe_arrays": "emoprobe.probe.sweep",
    "probe_cross": "emoprobe.probe.sweep",
    "SweepResult": "emoprobe.probe.sweep",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'emoprobe.probe' has no attribute {name!r}")
