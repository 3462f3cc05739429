"""Frame-level features waiting for the end of a run, one atomic .npz file per batch.

Frame datasets change the HDF5 structure, which the cache writer never does in place (see
cache.py). They are journalled next to the cache while the run lasts and written into the
cache when it is finalised, on a copy that replaces the file atomically.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from emoprobe.system import atomic_open


def journal_dir(cache_path: str | os.PathLike[str]) -> Path:
    p = Path(cache_path)
    return p.with_name(p.name + ".frames")


class FrameJournal:
    """Append-only store of (utterance index, layer) -> frames; later entries win."""

    def __init__(self, cache_path: str | os.PathLike[str]) -> None:
        self.dir = journal_dir(cache_path)

    def add(self, frames: Mapping[int, Mapping[int, np.ndarray]]) -> None:
        """Store one batch's frames {index: {layer: array}} atomically (temp file + rename)."""
        if not frames:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        arrays = {
            f"{index}_{layer}": np.asarray(a, dtype=np.float32)
            for index, per_layer in frames.items() for layer, a in per_layer.items()
        }
        name = f"{time.time_ns():020d}-{os.getpid()}"
        with atomic_open(self.dir / f"{name}.npz", "wb") as fh:
            np.savez(fh, **arrays)

    def _files(self) -> list[Path]:
        if not self.dir.is_dir():
            return []
        return sorted(self.dir.glob("*.npz"))

    def covered(self) -> dict[int, set[int]]:
        """index -> layers present in the journal."""
        out: dict[int, set[int]] = {}
        for f in self._files():
            with np.load(f) as z:
                for key in z.files:
                    index, layer = (int(v) for v in key.split("_"))
                    out.setdefault(index, set()).add(layer)
        return out

    def items(self, keep: set[int] | None = None) -> Iterator[tuple[int, int, np.ndarray]]:
        """(index, layer, frames), the latest entry per key, restricted to `keep` indices.

        Reads one batch file at a time, so memory stays at one batch of frames."""
        files = self._files()
        latest: dict[tuple[int, int], Path] = {}
        for f in files:
            with np.load(f) as z:
                for key in z.files:
                    index, layer = (int(v) for v in key.split("_"))
                    if keep is None or index in keep:
                        latest[(index, layer)] = f
        for f in files:
            wanted = [k for k, src in latest.items() if src == f]
            if not wanted:
                continue
            with np.load(f) as z:
                for index, layer in wanted:
                    yield index, layer, z[f"{index}_{layer}"]

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
