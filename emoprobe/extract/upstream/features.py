"""Transformers audio encoders fed with features rather than waveforms: w2v-BERT 2.0
(`Wav2Vec2BertModel`, whose feature extractor stacks pairs of 80-band fbank frames into
160-dim `input_features`) and any other encoder whose `main_input_name` is `input_features`
(the encoder of a sequence-to-sequence model such as Speech2Text is taken alone). Whisper,
which pads every input to a fixed window, keeps its own path in hf.py.

The feature extractor runs on each waveform as it is; its attention mask says which feature
frames are real, and the model's own output-length formula (without an adapter: hidden states
are the encoder's, before any adapter) turns that into valid encoder frames. Batches are
padded only when the feature extractor returns an attention mask and the load-time check
finds that padding leaves pooled vectors unchanged; otherwise only equal lengths share a
forward pass.
"""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from emoprobe.errors import ExtractionError
from emoprobe.extract.upstream.base import Prepared
from emoprobe.extract.upstream.hf import HFUpstream, _quiet_transformers


def takes_features(source: str, revision: str | None = None) -> bool:
    """Whether a checkpoint is an audio encoder fed with feature-extractor features (other
    than Whisper), judged from its config without loading weights. False when the config
    cannot be read: HFUpstream then reports the loading error."""
    from transformers import MODEL_MAPPING, AutoConfig

    source = os.path.expanduser(str(source))
    kwargs = {} if os.path.isdir(source) or revision is None else {"revision": revision}
    try:
        with _quiet_transformers():
            config = AutoConfig.from_pretrained(source, **kwargs)
        model_class = MODEL_MAPPING[type(config)]
    except Exception:  # unreadable or unknown: the full load says why
        return False
    return (config.model_type != "whisper"
            and getattr(model_class, "main_input_name", None) == "input_features")


class FeatureEncoderUpstream(HFUpstream):
    """An audio encoder whose inputs are its feature extractor's `input_features`."""

    def _init_waveform_encoder(self, model: Any) -> None:
        """HFUpstream's set-up hook for non-Whisper encoders, for feature inputs."""
        if getattr(self.config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
            model = model.get_encoder()
        self.model = model
        self.input_name = "input_features"
        config = self.config
        self.n_blocks = int(getattr(config, "num_hidden_layers", 0)
                            or getattr(config, "encoder_layers", 0))
        self.dim = int(getattr(config, "hidden_size", 0) or getattr(config, "d_model", 0))
        if not self.n_blocks or not self.dim:
            raise ExtractionError(f"{self.name}: cannot tell the layers and width of model "
                                  f"type {self.model_type!r}")
        self.output_lengths = _output_length_formula(model)
        self.pads = self.return_attention_mask
        self.pass_mask = self.return_attention_mask
        self.padding_checked = "not needed" if not self.pads else "harmless"
        self._frames: dict[int, int] = {}

    # -------------------------------------------------------------------------- contract

    def feature_frames(self, n_samples: int) -> int:
        """Real feature frames the feature extractor makes from `n_samples` samples."""
        n = int(n_samples)
        if n not in self._frames:
            try:
                with warnings.catch_warnings():  # statistics of 0 or 1 frame: NaN, unused
                    warnings.simplefilter("ignore", RuntimeWarning)
                    feats = self.feature_extractor(
                        [np.zeros(n, dtype=np.float32)], sampling_rate=self.sample_rate,
                        return_tensors="np", padding=True, return_attention_mask=True)
            except Exception:  # too short for one analysis window
                self._frames[n] = 0
            else:
                mask = feats.get("attention_mask")
                self._frames[n] = int(mask.sum()) if mask is not None \
                    else int(feats["input_features"].shape[1])
        return self._frames[n]

    def valid_frames(self, n_samples: int) -> int:
        if n_samples <= 0:
            return 0
        return self.output_lengths(self.feature_frames(n_samples))

    def _prepare_group(self, waves: Sequence[np.ndarray], rows: list[int]) -> Prepared:
        feats = self.feature_extractor(list(waves), sampling_rate=self.sample_rate,
                                       return_tensors="pt", padding=True,
                                       return_attention_mask=True)
        inputs = {"input_features": feats["input_features"]}
        mask = feats.get("attention_mask")
        if self.pass_mask:
            inputs["attention_mask"] = mask
        frames = mask.sum(dim=1).tolist() if mask is not None \
            else [self.feature_frames(len(w)) for w in waves]
        lengths = torch.tensor([self.output_lengths(int(f)) for f in frames], dtype=torch.long)
        return Prepared(rows=rows, inputs={k: self.pin(v) for k, v in inputs.items()},
                        lengths=lengths)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(input="input_features", feat_extract_norm=None)
        return d


def _output_length_formula(model: Any) -> Any:
    """Encoder frames from feature frames: the model's `_get_feat_extract_output_lengths`
    (asked for the encoder's own frames where it can add an adapter), or the identity for
    encoders that keep the feature frame rate."""
    formula = getattr(model, "_get_feat_extract_output_lengths", None)
    if formula is None:
        return int
    kwargs = {}
    if "add_adapter" in inspect.signature(formula).parameters:
        kwargs["add_adapter"] = False  # hidden states are the encoder's, before the adapter

    def lengths(frames: int) -> int:
        return max(int(formula(torch.tensor(int(frames)), **kwargs)), 0) if frames > 0 else 0

    return lengths
