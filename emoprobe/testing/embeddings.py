"""Synthetic pooled-embedding corpora with known structure, for tests and benchmarks.

The generator imitates what makes real layer-wise probing hard: the class signal rises and
falls across layers, speakers shift every utterance, dimensions are correlated through a
low-rank mixing that drifts from layer to layer, and a few dimensions carry a large offset
(the "outlier dimensions" of self-supervised models). Records are shaped like a prepared
manifest so the whole probing stage runs on them unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# IEMOCAP 4-class proportions (neu, hap+exc, ang, sad) from the corpus totals.
IEMOCAP_PRIORS = (1708 / 5531, 1636 / 5531, 1103 / 5531, 1084 / 5531)
IEMOCAP_CLASSES = ("neu", "hap", "ang", "sad")


def layer_profile(n_layers: int, peak: float = 0.6, width: float = 0.3, floor: float = 0.15):
    """A bump of class-signal strength over layers, peaking at `peak` x depth."""
    pos = np.linspace(0.0, 1.0, n_layers)
    return floor + (1.0 - floor) * np.exp(-0.5 * ((pos - peak) / width) ** 2)


def synthetic_corpus(
    *,
    n_layers: int = 13,
    n_utts: int = 5531,
    dim: int = 768,
    classes: Sequence[str] = IEMOCAP_CLASSES,
    priors: Sequence[float] | None = IEMOCAP_PRIORS,
    n_sessions: int = 5,
    speakers_per_session: int = 2,
    signal: Sequence[float] | None = None,
    separation: float = 1.0,
    speaker_effect: float = 0.8,
    latent_dim: int = 32,
    noise: float = 1.0,
    corpus: str = "iemocap",
    seed: int = 0,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Return (pooled (n_layers, n_utts, dim) float32, records) with planted class signal.

    `signal` gives the class-signal strength of every layer (default: a bump peaking at 60%
    depth); a layer with strength 0 carries no label information at all. Records carry id,
    label, speaker, gender, session and corpus; with corpus="iemocap" the labels use the raw
    codes of that corpus so its registered 4-class task and session folds apply.
    """
    rng = np.random.default_rng(seed)
    n_classes = len(classes)
    strength = (
        layer_profile(n_layers) if signal is None else np.asarray(signal, dtype=np.float64)
    )
    if strength.shape != (n_layers,):
        raise ValueError(f"signal has {strength.shape[0]} values for {n_layers} layers")
    p = np.full(n_classes, 1.0 / n_classes) if priors is None else np.asarray(priors, float)
    y = rng.choice(n_classes, size=n_utts, p=p / p.sum())
    n_speakers = n_sessions * speakers_per_session
    speaker = rng.integers(0, n_speakers, size=n_utts)

    # Latent factors: class centroids, speaker offsets, utterance nuisance.
    centroids = rng.standard_normal((n_classes, latent_dim)) * separation
    spk_offsets = rng.standard_normal((n_speakers, latent_dim)) * speaker_effect
    nuisance = rng.standard_normal((n_utts, latent_dim))
    # Each utterance sees a noisy version of its class centroid (label noise in the signal).
    wobble = rng.standard_normal((n_utts, latent_dim)) * 0.5

    pooled = np.empty((n_layers, n_utts, dim), dtype=np.float32)
    mixing = rng.standard_normal((latent_dim, dim)) / np.sqrt(latent_dim)
    outliers = rng.choice(dim, size=max(1, dim // 128), replace=False)
    for layer in range(n_layers):
        # The mixing drifts between neighbouring layers, so adjacent layers are similar.
        drift = rng.standard_normal((latent_dim, dim)) / np.sqrt(latent_dim)
        mixing = 0.9 * mixing + np.sqrt(1 - 0.9**2) * drift
        spk_weight = 1.0 - 0.6 * layer / max(n_layers - 1, 1)
        latent = (
            strength[layer] * (centroids[y] + wobble)
            + spk_weight * spk_offsets[speaker]
            + nuisance
        )
        scale = 1.0 + 2.0 * layer / max(n_layers - 1, 1)
        feats = latent @ mixing
        feats += noise * rng.standard_normal((n_utts, dim))
        feats *= scale
        feats[:, outliers] += 20.0 * scale
        pooled[layer] = feats.astype(np.float32)

    label_of = list(classes)
    records = []
    for i in range(n_utts):
        s = int(speaker[i])
        session = s // speakers_per_session + 1
        gender = "F" if s % 2 == 0 else "M"
        label = label_of[y[i]]
        if corpus == "iemocap" and label == "hap" and rng.random() < 1041 / 1636:
            label = "exc"  # IEMOCAP's excited, merged into happy by the 4-class task
        records.append(
            {
                "id": f"{corpus}_{i:05d}",
                "path": f"synthetic/{corpus}_{i:05d}.wav",
                "label": label,
                "speaker": f"spk{s:03d}",
                "gender": gender,
                "session": str(session),
                "corpus": corpus,
            }
        )
    return pooled, records
