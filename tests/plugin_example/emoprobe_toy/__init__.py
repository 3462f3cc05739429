"""An example emoprobe upstream plugin: a small random frame encoder, seeded by its argument.

`emoprobe extract --model toy:SEED` selects it once this package is installed (its
pyproject.toml registers `ToyUpstream` under the entry-point group `emoprobe.upstreams`).
Layer 0 projects every 25 ms window of audio (20 ms hop) onto `dim` random filters; layers 1
to 3 add a random per-frame tanh block each. Every frame depends on its own window only, so
padding after a waveform never changes a valid frame (`pads = True`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from emoprobe.extract.upstream.plugin import UpstreamPlugin

__version__ = "0.1.0"


class ToyUpstream(UpstreamPlugin):
    """`toy:SEED`: four layers of `dim` = 16 features per 20 ms frame."""

    sample_rate = 16000
    pads = True
    layer_convention = "0 = random filters over 25 ms windows; i = output of block i"
    win = 400
    hop = 320

    def __init__(self, arg: str, *, device: str = "cpu", dtype: str = "float32") -> None:
        super().__init__(arg, device=device, dtype=dtype)
        try:
            self.seed = int(arg or 0)
        except ValueError:
            raise ValueError(f"the toy upstream takes an integer seed, got {arg!r}") from None
        self.dim = 16
        self.n_layers = 4
        gen = torch.Generator().manual_seed(self.seed)
        self.filters = (torch.randn(self.win, self.dim, generator=gen)
                        / math.sqrt(self.win)).to(device)
        self.blocks = [
            ((torch.randn(self.dim, self.dim, generator=gen) / math.sqrt(self.dim)).to(device),
             (0.1 * torch.randn(self.dim, generator=gen)).to(device))
            for _ in range(self.n_layers - 1)
        ]

    def valid_frames(self, n_samples: int) -> int:
        return 0 if n_samples < self.win else 1 + (int(n_samples) - self.win) // self.hop

    def forward(self, waves: torch.Tensor, lengths: torch.Tensor
                ) -> tuple[Sequence[torch.Tensor], torch.Tensor]:
        if waves.shape[1] < self.win:  # shorter than one window: no valid frame anyway
            waves = torch.nn.functional.pad(waves, (0, self.win - waves.shape[1]))
        frames = waves.unfold(1, self.win, self.hop)  # (rows, frames, win)
        h = torch.tanh(10.0 * frames @ self.filters)
        layers = [h]
        for weight, bias in self.blocks:
            h = h + torch.tanh(h @ weight + bias)
            layers.append(h)
        valid = torch.where(lengths < self.win, 0, 1 + (lengths - self.win) // self.hop)
        return layers, valid

    def identity(self) -> dict[str, Any]:
        return {"seed": self.seed, "version": __version__, "dim": self.dim}
