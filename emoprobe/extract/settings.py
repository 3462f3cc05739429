"""Extraction settings: what the caller may choose, validated once, split into the part that
changes the cached numbers (fingerprinted) and the part that only changes speed."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from emoprobe.errors import ConfigError, ExtractionError
from emoprobe.layers import parse_layer_spec, resolve_layers
from emoprobe.system import available_cpus
from emoprobe.validation import check_fields, rule

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
    cached values; the rest (device, batching, workers) change speed, not results.
    `hash_audio` also stores (and checks) a hash of each utterance's decoded samples."""

    revision: str | None = None
    modality: str = field(default="audio", metadata=rule(choices=MODALITIES))
    device: str = field(default="auto", metadata=rule(expected=f"{' | '.join(DEVICES)} | cuda:N"))
    dtype: str = field(default="float32", metadata=rule(choices=DTYPES))
    batch_seconds: float | None = field(default=None, metadata=rule(gt=0))
    batch_tokens: int | None = field(default=None, metadata=rule(ge=1))
    max_seconds: float | None = field(default=None, metadata=rule(gt=0))
    frames: tuple[int, ...] | str = field(default=(), metadata=rule(
        convert=lambda v: parse_layer_spec(v, option="frames"),
        expected="a layer spec such as 0,6,-1, 5-8 or all"))
    on_error: str = field(default="stop", metadata=rule(choices=ON_ERROR))
    workers: int | None = field(default=None, metadata=rule(ge=1))
    overwrite: bool = False
    name: str | None = field(default=None, metadata=rule(path_safe=True))
    progress: bool = True
    torch_threads: int | None = field(default=None, metadata=rule(ge=1))
    hash_audio: bool = False

    def __post_init__(self) -> None:
        if self.frames is None:  # "no frames", as the command line passes it
            object.__setattr__(self, "frames", ())
        check_fields(self)
        if self.device not in DEVICES and not (
                self.device.startswith("cuda:") and self.device[5:].isdigit()):
            raise ConfigError(
                f"device {self.device!r} is not one of {', '.join(DEVICES)} (or cuda:N)"
            )

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
