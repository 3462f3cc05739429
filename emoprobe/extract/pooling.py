"""Pooling over valid frames only, and the combination of an utterance's windows.

An upstream reports, for each input row (one window of one utterance), the number of valid
frames and per-layer sums over those frames (plus sums of squares for mean+std pooling).
Summing these over an utterance's windows and dividing by its total frame count gives the
frame-weighted mean of the per-window means, which for a single window is the masked mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

POOLINGS = ("mean", "mean+std")


def frame_mask(lengths: torch.Tensor, n_frames: int) -> torch.Tensor:
    """(rows, n_frames) boolean mask, True on the first `lengths[r]` frames of row r."""
    return torch.arange(n_frames, device=lengths.device)[None, :] < lengths[:, None]


@dataclass
class RowStats:
    """Per-row statistics of one forward pass: rows are windows, layers first."""

    count: np.ndarray  # (rows,) valid frames
    sums: np.ndarray  # (layers, rows, dim) float64
    sumsq: np.ndarray | None = None  # same shape, for mean+std pooling
    frames: dict[int, list[np.ndarray]] = field(default_factory=dict)  # layer -> per row

    @staticmethod
    def concat(parts: Sequence[RowStats]) -> RowStats:
        if len(parts) == 1:
            return parts[0]
        frames: dict[int, list[np.ndarray]] = {}
        for p in parts:
            for layer, rows in p.frames.items():
                frames.setdefault(layer, []).extend(rows)
        sumsq = None
        if parts[0].sumsq is not None:
            sumsq = np.concatenate([p.sumsq for p in parts], axis=1)  # type: ignore[misc]
        return RowStats(
            count=np.concatenate([p.count for p in parts]),
            sums=np.concatenate([p.sums for p in parts], axis=1),
            sumsq=sumsq,
            frames=frames,
        )

    def select(self, rows: Sequence[int]) -> RowStats:
        rows = list(rows)
        return RowStats(
            count=self.count[rows],
            sums=self.sums[:, rows],
            sumsq=None if self.sumsq is None else self.sumsq[:, rows],
            frames={k: [v[r] for r in rows] for k, v in self.frames.items()},
        )


def masked_stats(
    hidden_states: Sequence[torch.Tensor],
    lengths: torch.Tensor,
    *,
    squares: bool = False,
    frame_layers: Sequence[int] = (),
) -> RowStats:
    """Sums (and sums of squares) of each layer's (rows, T, dim) states over valid frames.

    Reduced-precision states are summed in float32; the result is float64 on the CPU."""
    lengths = lengths.to(hidden_states[0].device)
    n_frames = hidden_states[0].shape[1]
    if int(lengths.max()) > n_frames:
        raise ValueError(f"valid lengths {lengths.tolist()} exceed the {n_frames} output frames")
    mask = frame_mask(lengths, n_frames).unsqueeze(-1).to(torch.float32)
    sums, sumsq = [], []
    frames: dict[int, list[np.ndarray]] = {}
    for layer, h in enumerate(hidden_states):
        h32 = h.to(torch.float32)
        hm = h32 * mask
        sums.append(hm.sum(dim=1))
        if squares:
            sumsq.append((hm * h32).sum(dim=1))
        if layer in frame_layers:
            cpu = h32.cpu().numpy()
            frames[layer] = [cpu[r, : int(n)].copy() for r, n in enumerate(lengths.tolist())]
    return RowStats(
        count=lengths.cpu().numpy().astype(np.int64),
        sums=torch.stack(sums).cpu().numpy().astype(np.float64),
        sumsq=torch.stack(sumsq).cpu().numpy().astype(np.float64) if squares else None,
        frames=frames,
    )


@dataclass
class Pooled:
    """One utterance's pooled vectors (layers, dim), its total valid frames, frames if kept."""

    vectors: np.ndarray
    n_frames: int
    frames: dict[int, np.ndarray] = field(default_factory=dict)


def pool_utterances(stats: RowStats, owners: Sequence[int], pooling: str) -> dict[int, Pooled]:
    """Combine rows by owner (utterance index). Owners with zero valid frames are left out;
    the caller reports them. mean+std concatenates the mean and the population std."""
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; known: {', '.join(POOLINGS)}")
    owners_arr = np.asarray(owners)
    out: dict[int, Pooled] = {}
    for owner in dict.fromkeys(owners):
        rows = np.flatnonzero(owners_arr == owner)
        count = int(stats.count[rows].sum())
        if count == 0:
            continue
        mean = stats.sums[:, rows].sum(axis=1) / count
        if pooling == "mean+std":
            assert stats.sumsq is not None
            var = stats.sumsq[:, rows].sum(axis=1) / count - mean**2
            vectors = np.concatenate([mean, np.sqrt(np.maximum(var, 0.0))], axis=-1)
        else:
            vectors = mean
        frames = {
            layer: np.concatenate([per_row[r] for r in rows], axis=0)
            for layer, per_row in stats.frames.items()
        }
        out[int(owner)] = Pooled(vectors.astype(np.float32), count, frames)
    return out
