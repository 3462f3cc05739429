"""The upstream contract: waveforms in, per-layer statistics over valid frames out.

Every upstream (a transformers encoder, the fbank and eGeMAPS baselines) looks the same to
the runner: `prepare` turns a list of waveforms into model inputs on the CPU (it runs in the
background loader threads), `run` does the forward pass and returns `RowStats` (valid frame
counts and per-layer sums) in the row order it was given.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from emoprobe.extract.pooling import RowStats


@dataclass
class Prepared:
    """Model inputs for some rows of a batch (rows = positions in the waveform list)."""

    rows: list[int]
    inputs: dict[str, Any]
    lengths: torch.Tensor  # valid output frames per row
    extra: dict[str, Any] = field(default_factory=dict)


class Upstream(ABC):
    """Base class. Attributes describe the upstream; see the module docstring for the flow."""

    kind: str = ""
    modality: str = "audio"  # what is read from a manifest record: "audio" or "text"
    name: str = ""
    model_type: str = ""
    sample_rate: int = 16000
    n_layers: int = 1  # stored layers (transformers: blocks + 1)
    dim: int = 0  # pooled dimension
    pooling: str = "mean"
    layer_convention: str = ""
    max_samples: int | None = None  # longest input the model takes in one window
    padded_row: int | None = None  # fixed input size per row (Whisper pads every window)
    pads: bool = True  # False: only equal-length rows may share a forward pass
    device: str = "cpu"
    dtype: str = "float32"

    def input_window(self, max_seconds: float | None) -> int | None:
        """Longest input row in samples: the model's own window or `max_seconds`, whichever
        is shorter (None: no limit)."""
        limits = [m for m in (self.max_samples,
                              None if max_seconds is None
                              else int(max_seconds * self.sample_rate)) if m]
        return min(limits) if limits else None

    def batch_budget(self, settings: Any, device: str) -> float:
        """Padded input size allowed per batch, in samples (`--batch-seconds`)."""
        return float(settings.resolved_batch_seconds(device) * self.sample_rate)

    @abstractmethod
    def valid_frames(self, n_samples: int) -> int:
        """Output frames that cover real audio for an input of `n_samples` samples."""

    def share_groups(self, waves: Sequence[np.ndarray]) -> list[list[int]]:
        """Rows that may share a forward pass: all of them when padding is harmless
        (`pads`), otherwise rows of exactly equal length."""
        if self.pads:
            return [list(range(len(waves)))]
        by_len: dict[int, list[int]] = {}
        for r, w in enumerate(waves):
            by_len.setdefault(len(w), []).append(r)
        return list(by_len.values())

    @abstractmethod
    def prepare(self, waves: Sequence[np.ndarray]) -> list[Prepared]:
        """CPU-side preparation of one batch; groups rows that may share a forward pass."""

    @abstractmethod
    def run(self, prepared: Prepared, frame_layers: Sequence[int] = ()) -> RowStats:
        """Forward pass of one prepared group; statistics in `prepared.rows` order."""

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """What determines the output values (goes into the cache fingerprint)."""

    def describe(self) -> dict[str, Any]:
        """Cache attributes describing this upstream."""
        return {
            "model": self.name,
            "upstream_kind": self.kind,
            "model_type": self.model_type,
            "n_layers": self.n_layers,
            "dim": self.dim,
            "pooling": self.pooling,
            "layer_convention": self.layer_convention,
            "sample_rate": self.sample_rate,
            "dtype": self.dtype,
            "window_seconds": None if self.max_samples is None or not self.sample_rate
            else self.max_samples / self.sample_rate,
            "upstream": self.identity(),
        }

    def min_samples(self, limit: int = 1 << 20) -> int:
        """Fewest samples that give one output frame (binary search on `valid_frames`)."""
        lo, hi = 1, limit
        if self.valid_frames(hi) < 1:
            return hi
        while lo < hi:
            mid = (lo + hi) // 2
            if self.valid_frames(mid) >= 1:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def pool(self, waves: Sequence[np.ndarray], *, window: int | None = None) -> np.ndarray:
        """Pooled vectors (layers, len(waves), dim) of waveforms at `sample_rate`, in one
        batch; inputs longer than `window` (or the model's own window) are cut into windows
        as extraction does. For comparisons and quick experiments; `extract` writes caches."""
        from emoprobe.extract.batching import window_bounds
        from emoprobe.extract.pooling import pool_utterances

        limits = [m for m in (self.max_samples, window) if m]
        limit = min(limits) if limits else None
        rows: list[np.ndarray] = []
        owners: list[int] = []
        for i, wave in enumerate(waves):
            for a, b in window_bounds(len(wave), limit):
                row = np.asarray(wave[a:b])
                rows.append(row.astype(np.float32) if row.dtype.kind == "f" else row)
                owners.append(i)
        parts, order = [], []
        for group in self.prepare(rows):
            parts.append(self.run(group))
            order += group.rows
        stats = RowStats.concat(parts)
        pooled = pool_utterances(stats, [owners[r] for r in order], self.pooling)
        missing = [i for i in range(len(waves)) if i not in pooled]
        if missing:
            raise ValueError(f"inputs {missing} are too short for one output frame")
        return np.stack([pooled[i].vectors for i in range(len(waves))], axis=1)

    def pin(self, tensor: torch.Tensor) -> torch.Tensor:
        """Pinned host memory when feeding a GPU, so copies can overlap compute."""
        if self.device.startswith("cuda"):
            return tensor.pin_memory()
        return tensor

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release model memory (optional)."""
