"""Upstreams behind one contract (base.Upstream): transformers audio and text encoders, two
baselines, and plugins registered by other packages."""

from __future__ import annotations

from emoprobe.extract.upstream.base import Prepared, Upstream

BASELINES = ("fbank", "egemaps")

__all__ = ["BASELINES", "Prepared", "Upstream", "load_upstream"]


def load_upstream(
    model: str,
    *,
    revision: str | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    modality: str = "audio",
) -> Upstream:
    """`fbank` and `egemaps` select the baselines; anything else is a transformers hub id or
    a local checkpoint folder: an audio encoder, or with `modality="text"` a text encoder run
    over each utterance's sentence. `NAME:ARG` selects the upstream plugin registered as NAME
    in the entry-point group `emoprobe.upstreams` (upstream/plugin.py)."""
    import os

    from emoprobe.extract.upstream.plugin import load_plugin, plugin_name

    if plugin_name(model) is not None and not os.path.isdir(os.path.expanduser(model)):
        if modality == "text":
            from emoprobe.errors import ExtractionError

            raise ExtractionError(f"upstream plugins take audio; drop --modality text for "
                                  f"{model!r}")
        return load_plugin(model, revision=revision, device=device, dtype=dtype)
    if modality == "text":
        from emoprobe.errors import ExtractionError
        from emoprobe.extract.upstream.text import TextUpstream

        if model in BASELINES:
            raise ExtractionError(f"{model} is an audio baseline; drop --modality text")
        return TextUpstream(model, revision=revision, device=device, dtype=dtype)
    if model in BASELINES and dtype != "float32":
        from emoprobe.errors import ExtractionError

        raise ExtractionError(f"the {model} baseline computes in float32; drop --dtype {dtype}")
    if model == "fbank":
        from emoprobe.extract.upstream.fbank import FbankUpstream

        return FbankUpstream(device=device)
    if model == "egemaps":
        from emoprobe.extract.upstream.egemaps import EgemapsUpstream

        return EgemapsUpstream(device=device)
    from emoprobe.extract.upstream.features import FeatureEncoderUpstream, takes_features
    from emoprobe.extract.upstream.hf import HFUpstream

    cls = FeatureEncoderUpstream if takes_features(model, revision) else HFUpstream
    return cls(model, revision=revision, device=device, dtype=dtype)
