"""Upstream plugins: any package can add an upstream without changing emoprobe.

A package registers a class under the entry-point group `emoprobe.upstreams`:

    [project.entry-points."emoprobe.upstreams"]
    emotion2vec = "my_package.upstreams:Emotion2vecUpstream"

and `emoprobe extract --model emotion2vec:iic/emotion2vec_plus_base` selects it: the text
before the first `:` names the entry point, the rest (ARG) goes to the class. The class
implements `UpstreamPlugin`: waveforms in, per-layer frame features and valid lengths out.
emoprobe does the rest as for its own upstreams (batching, windows, masked mean pooling,
the cache and its fingerprint, resuming, sharding). docs/upstreams.md has worked examples.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from emoprobe.errors import ExtractionError
from emoprobe.extract.pooling import RowStats, masked_stats
from emoprobe.extract.upstream.base import Prepared, Upstream

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "emoprobe.upstreams"


class UpstreamPlugin(ABC):
    """What a plugin class implements.

    Set `n_layers` and `dim` (per-layer feature width) by the end of `__init__`;
    `sample_rate` is the rate audio is resampled to before `forward`. `pads = True` promises
    that zero padding after a waveform never changes its valid frames (emoprobe then batches
    rows of different lengths); with False, only rows of exactly equal length share a call.
    `max_samples` cuts longer audio into windows whose frames are pooled together.
    """

    sample_rate: int = 16000
    n_layers: int = 0
    dim: int = 0
    pads: bool = False
    max_samples: int | None = None
    layer_convention: str = "0 = first layer returned by the plugin; i = its i-th layer"

    def __init__(self, arg: str, *, device: str = "cpu", dtype: str = "float32") -> None:
        """`arg` is the text after `NAME:` in `--model NAME:ARG` (a checkpoint name, a path);
        `device` is where `forward` receives its tensors; `dtype` the requested precision."""
        self.arg = arg
        self.device = device
        self.dtype = dtype

    @abstractmethod
    def forward(self, waves: torch.Tensor, lengths: torch.Tensor
                ) -> tuple[Sequence[torch.Tensor], torch.Tensor]:
        """Frame features of a batch.

        `waves` is (rows, samples) float32 on `device`, zero-padded after each row's
        `lengths[r]` samples. Return `n_layers` tensors of shape (rows, frames, dim) and the
        number of valid frames of each row (rows,); frames past a row's count are ignored.
        Called under `torch.inference_mode()`."""

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """JSON-able facts that determine the output values (checkpoint name and version or
        a hash of its weights, options). They go into the cache fingerprint, so a cache is
        never reused for another checkpoint."""

    def valid_frames(self, n_samples: int) -> int | None:
        """Optional: valid frames for `n_samples` samples (lets emoprobe refuse audio too
        short for one frame before running it). None: unknown."""
        return None


def installed_plugins() -> dict[str, Any]:
    """The entry points of group `emoprobe.upstreams`, by name."""
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def plugin_name(model: str) -> str | None:
    """NAME of a `--model NAME:ARG` value; None without a `NAME:` prefix (hub ids and
    folder names have none)."""
    name, sep, _ = model.partition(":")
    if not sep or not name:
        return None
    return name


class PluginUpstream(Upstream):
    """An UpstreamPlugin behind emoprobe's upstream contract."""

    kind = "plugin"

    def __init__(self, plugin_cls: Any, name: str, arg: str, *, device: str = "cpu",
                 dtype: str = "float32", distribution: tuple[str, str] | None = None) -> None:
        self.name = f"{name}:{arg}"
        self.model_type = name
        self.plugin_arg = arg
        self.device = device
        self.dtype = dtype
        self.distribution = distribution
        try:
            plugin = plugin_cls(arg, device=device, dtype=dtype)
        except Exception as exc:
            raise ExtractionError(
                f"upstream plugin {name!r}{_from(distribution)} could not start with argument "
                f"{arg!r}: {type(exc).__name__}: {exc}"
            ) from exc
        self.plugin = plugin
        for attr in ("n_layers", "dim", "sample_rate"):
            value = getattr(plugin, attr, None)
            if not isinstance(value, int) or value < 1:
                raise ExtractionError(
                    f"upstream plugin {name!r}{_from(distribution)}: {attr} is {value!r}, "
                    "expected a positive integer (see UpstreamPlugin)"
                )
        self.n_layers = plugin.n_layers
        self.dim = plugin.dim
        self.sample_rate = plugin.sample_rate
        self.pads = bool(getattr(plugin, "pads", False))
        self.max_samples = getattr(plugin, "max_samples", None)
        self.layer_convention = str(getattr(plugin, "layer_convention", ""))

    def valid_frames(self, n_samples: int) -> int:
        known = self.plugin.valid_frames(int(n_samples))
        if known is None:  # unknown: anything non-empty may give a frame
            return 1 if n_samples > 0 else 0
        return int(known)

    def prepare(self, waves: Sequence[np.ndarray]) -> list[Prepared]:
        out = []
        for rows in self.share_groups(waves):
            samples = [len(waves[r]) for r in rows]
            x = torch.zeros(len(rows), max(samples), dtype=torch.float32)
            for i, r in enumerate(rows):
                x[i, : samples[i]] = torch.from_numpy(np.asarray(waves[r], dtype=np.float32))
            counts = torch.tensor(samples, dtype=torch.long)
            out.append(Prepared(rows=rows, inputs={"waves": self.pin(x), "lengths": counts},
                                lengths=counts))
        return out

    def run(self, prepared: Prepared, frame_layers: Sequence[int] = ()) -> RowStats:
        waves = prepared.inputs["waves"].to(self.device, non_blocking=True)
        samples = prepared.inputs["lengths"].to(self.device)
        with torch.inference_mode():
            layers, lengths = self.plugin.forward(waves, samples)
        layers = list(layers)
        lengths = torch.as_tensor(lengths).to(dtype=torch.long)
        rows = len(prepared.rows)
        where = f"upstream plugin {self.model_type!r}"
        if len(layers) != self.n_layers:
            raise ExtractionError(
                f"{where} returned {len(layers)} layers, declared {self.n_layers}")
        for i, h in enumerate(layers):
            if h.dim() != 3 or h.shape[0] != rows or h.shape[2] != self.dim:
                raise ExtractionError(f"{where}: layer {i} has shape {tuple(h.shape)}, expected "
                                      f"({rows}, frames, {self.dim})")
            if h.shape[1] != layers[0].shape[1]:
                raise ExtractionError(f"{where}: layers have different frame counts "
                                      f"({layers[0].shape[1]} and {h.shape[1]})")
        if tuple(lengths.shape) != (rows,):
            raise ExtractionError(f"{where} returned valid lengths of shape "
                                  f"{tuple(lengths.shape)}, expected ({rows},)")
        return masked_stats(layers, lengths, frame_layers=frame_layers)

    def identity(self) -> dict[str, Any]:
        dist_name, dist_version = self.distribution or (None, None)
        return {
            "kind": self.kind,
            "plugin": self.model_type,
            "arg": self.plugin_arg,
            "distribution": dist_name,
            "version": dist_version,
            "n_layers": self.n_layers,
            "dim": self.dim,
            "sample_rate": self.sample_rate,
            "plugin_identity": self.plugin.identity(),
        }

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        dist_name, dist_version = self.distribution or (None, None)
        d.update(plugin_distribution=dist_name, plugin_version=dist_version,
                 batching="padded" if self.pads else "equal-length")
        return d

    def close(self) -> None:
        self.plugin = None


def load_plugin(model: str, *, revision: str | None = None, device: str = "cpu",
                dtype: str = "float32") -> PluginUpstream:
    """The upstream for `--model NAME:ARG`, NAME an entry point of `emoprobe.upstreams`."""
    name = plugin_name(model)
    arg = model.partition(":")[2]
    plugins = installed_plugins()
    if name not in plugins:
        known = ", ".join(sorted(plugins)) or "none installed"
        raise ExtractionError(
            f"--model {model!r}: no upstream plugin named {name!r} (entry-point group "
            f"{ENTRY_POINT_GROUP!r}: {known}), and no model folder of that name; "
            "docs/upstreams.md shows how to add one"
        )
    if revision is not None:
        raise ExtractionError(f"--revision applies to transformers checkpoints, not to the "
                              f"upstream plugin {name!r}; put the version in its argument")
    ep = plugins[name]
    dist = getattr(ep, "dist", None)
    distribution = (dist.name, dist.version) if dist is not None else None
    try:
        plugin_cls = ep.load()
    except Exception as exc:
        raise ExtractionError(
            f"upstream plugin {name!r}{_from(distribution)} cannot be imported ({ep.value}): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    return PluginUpstream(plugin_cls, name, arg, device=device, dtype=dtype,
                          distribution=distribution)


def _from(distribution: tuple[str, str] | None) -> str:
    return f" (from {distribution[0]} {distribution[1]})" if distribution else ""


__all__ = ["ENTRY_POINT_GROUP", "PluginUpstream", "UpstreamPlugin", "installed_plugins",
           "load_plugin", "plugin_name"]
