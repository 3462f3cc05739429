"""Exact batching for encoders whose convolutional front end must not see padding.

The group norm in the first convolution of wav2vec2-base, HuBERT-base and WavLM-base(+)
normalises each channel over all time steps of its input, so zero padding changes every
frame. Here the front end runs per utterance, unpadded, so every frame feature is what it
is when the utterance is alone; the features are padded with zero frames and handed to the
rest of the model's own forward (feature projection, positional convolution, transformer)
as one batch, with the frame mask that the model derives from the utterances' sample
counts. The model zeroes padded frames before its positional convolution, which then sees
zeros beyond an utterance's end exactly as it sees its own zero padding when alone; attention
ignores padded frames. `HFUpstream` checks at load time that a batch run this way equals the
model's own forward on each utterance alone, and batches by equal lengths where it does not
(data2vec-audio's stacked positional convolutions, for one).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

FRONT_END = "feature_extractor"  # the convolutional front end's attribute in transformers


class _Precomputed(nn.Module):
    """Stands in for the front end during one forward pass: returns the given features."""

    def __init__(self, features: torch.Tensor) -> None:
        super().__init__()
        self.features = features

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        return self.features


def supports_frame_masking(model: Any) -> bool:
    """Whether `model` has the parts this batching relies on: a convolutional front end
    module and the model's own frame mask from sample counts."""
    return isinstance(getattr(model, FRONT_END, None), nn.Module) and hasattr(
        model, "_get_feature_vector_attention_mask")


@contextlib.contextmanager
def _front_end_replaced(model: nn.Module, features: torch.Tensor) -> Iterator[None]:
    original = getattr(model, FRONT_END)
    setattr(model, FRONT_END, _Precomputed(features))
    try:
        yield
    finally:
        setattr(model, FRONT_END, original)


def frame_masked_forward(model: nn.Module, waves: Sequence[torch.Tensor], **kwargs: Any) -> Any:
    """The model's forward on several 1-D waveforms of any lengths: front end per utterance,
    everything after it as one batch with the frame mask. Keyword arguments go to the
    model's forward (e.g. output_hidden_states=True); returns its output."""
    front_end = getattr(model, FRONT_END)
    feats = [front_end(w.reshape(1, -1)) for w in waves]  # (1, channels, frames) each
    longest = max(f.shape[-1] for f in feats)
    padded = feats[0].new_zeros(len(feats), feats[0].shape[1], longest)
    for i, f in enumerate(feats):
        padded[i, :, : f.shape[-1]] = f[0]
    samples = torch.tensor([w.shape[-1] for w in waves], device=padded.device)
    n_max = int(samples.max())
    # Sample-level mask: the model turns it into frames with its own output-length formula.
    mask = (torch.arange(n_max, device=padded.device)[None, :] < samples[:, None]).to(torch.int32)
    stand_in = padded.new_zeros(1, 1).expand(len(feats), n_max)  # never read: no memory
    with _front_end_replaced(model, padded):
        return model(stand_in, attention_mask=mask, **kwargs)
