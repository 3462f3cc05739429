"""Extraction settings: what the caller may choose, validated once, split into the part that
changes the cached numbers (fingerprinted) and the part that only changes speed."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from emoprobe.errors import ExtractionError
from emoprobe.layers import parse_layer_spec, resolve_layers
from emoprobe.system import available_cpus

DTYPES = ("float32", "float16", "bfloat16")
DEVICES = ("auto", "cpu", "cuda")
ON_ERROR = ("stop", "skip")
MODALITIES = ("audio", "text")
# CPU: per-utterance cost is flat or worse with batch size (measured: docs/performance.md),
# so batches stay small; GPUs need large batches to be busy.
DEFAULT_BATCH_SECONDS = {"cpu": 8.0, "cuda": 400.0}
# Text upstreams: padded tokens per batch (rows x longest row).
DEFAULT_BATCH_TOKENS = {"cpu": 2048, "cuda": 65536}


@dataclass(frozen=True)
class ExtractSettings:
    """Options of one extraction run. Only `dtype`, `max_seconds` and `frames` change the
    cached values; the rest (device, batching, workers) change speed, not results."""

    revision: str | None = None
    modality: str = "audio"
    device: str = "auto"
    dtype: str = "float32"
    batch_seconds: float | None = None
    batch_tokens: int | None = None
    max_seconds: float | None = None
    frames: tuple[int, ...] | str = field(default=())
    on_error: str = "stop"
    workers: int | None = None
    overwrite: bool = False
    name: str | None = None
    progress: bool = True
    torch_threads: int | None = None

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ExtractionError(f"dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            raise ExtractionError(
                f"device {self.device!r} is not one of {', '.join(DEVICES)} (or cuda:N)"
            )
        if self.modality not in MODALITIES:
            raise ExtractionError(
                f"modality {self.modality!r} is not one of {', '.join(MODALITIES)}"
            )
        if self.batch_tokens is not None and self.batch_tokens < 1:
            raise ExtractionError(f"batch_tokens must be at least 1, got {self.batch_tokens}")
        if self.on_error not in ON_ERROR:
            raise ExtractionError(f"on_error {self.on_error!r} is not one of {', '.join(ON_ERROR)}")
        for name in ("batch_seconds", "max_seconds"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ExtractionError(f"{name} must be a positive number of seconds, got {value}")
        if self.workers is not None and self.workers < 1:
            raise ExtractionError(f"workers must be at least 1, got {self.workers}")
        object.__setattr__(self, "frames", parse_layer_spec(self.frames, option="frames"))

    def resolved_device(self) -> str:
        import torch

        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ExtractionError(f"device {self.device!r} requested but CUDA is not available")
        return self.device

    def resolved_batch_seconds(self, device: str) -> float:
        if self.batch_seconds is not None:
            return float(self.batch_seconds)
        return DEFAULT_BATCH_SECONDS["cuda" if device.startswith("cuda") else "cpu"]

    def resolved_batch_tokens(self, device: str) -> int:
        if self.batch_tokens is not None:
            return int(self.batch_tokens)
        return DEFAULT_BATCH_TOKENS["cuda" if device.startswith("cuda") else "cpu"]

    def resolved_workers(self) -> int:
        if self.workers is not None:
            return int(self.workers)
        return max(1, min(4, available_cpus() // 2))

    def frame_layers(self, n_layers: int) -> tuple[int, ...]:
        """Frame layers as sorted indices 0..n_layers-1, checked against the upstream."""
        return tuple(sorted(resolve_layers(self.frames, n_layers, option="frames",
                                           default_all=False)))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["frames"] = self.frames if isinstance(self.frames, str) else list(self.frames)
        return d
