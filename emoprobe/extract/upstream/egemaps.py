"""The eGeMAPS baseline: openSMILE eGeMAPSv02 functionals (88 dims) as a one-layer upstream.

Needs the optional extra `pip install 'emoprobe[opensmile]'`. Audio is resampled to 16 kHz
first so every utterance is measured the same way. Functionals summarise a whole signal; when
an utterance is cut into windows (--max-seconds), the window functionals are averaged with
weights equal to each window's number of 10 ms frames.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from emoprobe.errors import ExtractionError
from emoprobe.extract.pooling import RowStats
from emoprobe.extract.upstream.base import Prepared, Upstream

FEATURE_SET = "eGeMAPSv02"


def _import_opensmile() -> Any:
    try:
        import opensmile
    except ImportError:
        raise ExtractionError(
            "the egemaps baseline needs the opensmile package: pip install 'emoprobe[opensmile]'"
        ) from None
    return opensmile


class EgemapsUpstream(Upstream):
    """openSMILE functionals; computed on the CPU in the model thread, row by row."""

    kind = "egemaps"
    name = "egemaps"
    model_type = "opensmile-functionals"
    layer_convention = "0 = eGeMAPSv02 functionals (single layer)"
    pooling = "mean"
    n_layers = 1
    dim = 88
    sample_rate = 16000
    hop = 160  # openSMILE's 10 ms frame step; window weights count these frames
    nonfinite_hint = "openSMILE fills segments too short for its analysis with NaN"

    def __init__(self, *, device: str = "cpu") -> None:
        opensmile = _import_opensmile()
        self.device = "cpu"
        self.opensmile_version = getattr(opensmile, "__version__", "unknown")
        self.smile = opensmile.Smile(
            feature_set=getattr(opensmile.FeatureSet, FEATURE_SET),
            feature_level=opensmile.FeatureLevel.Functionals,
        )
        self.feature_names = list(self.smile.feature_names)
        if len(self.feature_names) != self.dim:
            raise ExtractionError(
                f"openSMILE {FEATURE_SET} gives {len(self.feature_names)} features, expected 88"
            )

    def valid_frames(self, n_samples: int) -> int:
        return int(n_samples) // self.hop

    def prepare(self, waves: Sequence[np.ndarray]) -> list[Prepared]:
        lengths = torch.tensor([self.valid_frames(len(w)) for w in waves], dtype=torch.long)
        return [Prepared(rows=list(range(len(waves))), inputs={"waves": list(waves)},
                         lengths=lengths)]

    def run(self, prepared: Prepared, frame_layers: Sequence[int] = ()) -> RowStats:
        if frame_layers:
            raise ExtractionError("egemaps has no frame-level output; drop --frames")
        waves = prepared.inputs["waves"]
        count = prepared.lengths.numpy().astype(np.int64)
        sums = np.zeros((1, len(waves), self.dim), dtype=np.float64)
        for r, wave in enumerate(waves):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # too short -> NaN, reported later
                values = self.smile.process_signal(wave, self.sample_rate).to_numpy()
            sums[0, r] = values.reshape(-1).astype(np.float64) * count[r]
        return RowStats(count=count, sums=sums)

    def identity(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "feature_set": FEATURE_SET,
            "feature_level": "Functionals",
            "opensmile": self.opensmile_version,
            "sample_rate": self.sample_rate,
        }

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["feature_names"] = self.feature_names
        return d
