"""The fbank baseline: 80-band log-mel filterbank statistics (mean and std, 160 dims).

No weights and no dependency beyond torch: 25 ms Hamming windows every 10 ms at 16 kHz,
512-point FFT power spectrum, 80 triangular HTK-mel filters from 20 Hz to 8 kHz, natural log
floored at 1e-10. No dither, no pre-emphasis, no centring: a frame exists only where its whole
window lies in the audio, so padding never changes a valid frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from emoprobe.extract.pooling import RowStats, masked_stats
from emoprobe.extract.upstream.base import Prepared, Upstream

FBANK_VERSION = 1


def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int, fmin: float, fmax: float
                   ) -> np.ndarray:
    """(n_fft // 2 + 1, n_mels) triangular filters, peaks equally spaced on the HTK mel scale."""
    freqs = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (freqs[:, None] - lower[None, :]) / (centre - lower)[None, :]
    falling = (upper[None, :] - freqs[:, None]) / (upper - centre)[None, :]
    return np.maximum(0.0, np.minimum(rising, falling))


class FbankUpstream(Upstream):
    """Log-mel statistics as a one-layer upstream (layer 0 = the filterbank features)."""

    kind = "fbank"
    name = "fbank"
    model_type = "log-mel-filterbank"
    layer_convention = "0 = log-mel filterbank frames (single layer)"
    pooling = "mean+std"
    n_layers = 1

    def __init__(self, *, device: str = "cpu", n_mels: int = 80, sample_rate: int = 16000,
                 win_ms: float = 25.0, hop_ms: float = 10.0, n_fft: int = 512,
                 fmin: float = 20.0, fmax: float | None = None) -> None:
        self.device = device
        self.n_mels = n_mels
        self.sample_rate = sample_rate
        self.win = round(sample_rate * win_ms / 1000)
        self.hop = round(sample_rate * hop_ms / 1000)
        self.n_fft = n_fft
        self.fmin = fmin
        self.fmax = fmax if fmax is not None else sample_rate / 2
        self.dim = 2 * n_mels
        self._window = torch.hamming_window(self.win, periodic=False, dtype=torch.float64).float()
        self._mel = torch.from_numpy(
            mel_filterbank(n_fft, n_mels, sample_rate, self.fmin, self.fmax)
        ).float()

    def valid_frames(self, n_samples: int) -> int:
        return 0 if n_samples < self.win else 1 + (int(n_samples) - self.win) // self.hop

    def logmel(self, x: torch.Tensor) -> torch.Tensor:
        """(rows, samples) -> (rows, frames, n_mels) log-mel energies."""
        frames = x.unfold(-1, self.win, self.hop) * self._window.to(x.device)
        power = torch.fft.rfft(frames, n=self.n_fft).abs().pow(2)
        return torch.log(torch.clamp(power @ self._mel.to(x.device), min=1e-10))

    def prepare(self, waves: Sequence[np.ndarray]) -> list[Prepared]:
        longest = max(max(len(w) for w in waves), self.win)
        x = torch.zeros(len(waves), longest, dtype=torch.float32)
        for r, w in enumerate(waves):
            x[r, : len(w)] = torch.from_numpy(np.asarray(w, dtype=np.float32))
        lengths = torch.tensor([self.valid_frames(len(w)) for w in waves], dtype=torch.long)
        return [Prepared(rows=list(range(len(waves))), inputs={"x": self.pin(x)},
                         lengths=lengths)]

    def run(self, prepared: Prepared, frame_layers: Sequence[int] = ()) -> RowStats:
        x = prepared.inputs["x"].to(self.device, non_blocking=True)
        with torch.inference_mode():
            feats = self.logmel(x)
        return masked_stats([feats], prepared.lengths, squares=True, frame_layers=frame_layers)

    def identity(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "version": FBANK_VERSION,
            "n_mels": self.n_mels,
            "sample_rate": self.sample_rate,
            "win": self.win,
            "hop": self.hop,
            "n_fft": self.n_fft,
            "fmin": self.fmin,
            "fmax": self.fmax,
            "window": "hamming",
            "log_floor": 1e-10,
        }
