"""Exact batching of group-norm checkpoints on utterances of all-different lengths: the front
end per utterance, the rest of the model batched with the frame mask (framemask.py).

Checked on tiny random wav2vec2, HuBERT and WavLM group-norm models: the split forward equals
the model's own forward frame by frame on single utterances; a batch of distinct lengths
equals one utterance at a time; an extraction records the batching it used; a model that
still leaks padding (data2vec-audio) keeps the equal-length fallback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from emoprobe.extract import open_cache, run_extraction
from emoprobe.extract.upstream import load_upstream
from emoprobe.extract.upstream.framemask import frame_masked_forward
from emoprobe.testing.models import build_model, write_corpus

pytestmark = [pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask"),
              pytest.mark.usefixtures("one_torch_thread")]

GROUP_NORM = ("wav2vec2-group", "hubert", "wavlm-group")
LENGTHS = (4000, 5123, 8000, 9871, 12000, 16001)  # all different, 0.25 .. 1 s
TOL = 1e-4



@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {f: build_model(f, root / f) for f in (*GROUP_NORM, "data2vec-audio")}


@pytest.fixture(scope="module")
def waves() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [0.1 * rng.standard_normal(n).astype(np.float32) for n in LENGTHS]


def _own_forward(up, wave: np.ndarray) -> tuple[torch.Tensor, ...]:
    """The model's own forward on one utterance, as transformers documents it."""
    inputs = up.feature_extractor([wave], sampling_rate=16000, return_tensors="pt")
    with torch.inference_mode():
        return up.model(inputs["input_values"], output_hidden_states=True).hidden_states


def _split_forward(up, waves: list[np.ndarray]) -> tuple[torch.Tensor, ...]:
    singles = [up.feature_extractor([w], sampling_rate=16000, return_tensors="pt")
               ["input_values"][0] for w in waves]
    with torch.inference_mode():
        return frame_masked_forward(up.model, singles, output_hidden_states=True).hidden_states


@pytest.mark.parametrize("family", GROUP_NORM)
def test_split_forward_equals_the_models_own_forward(family: str, models: dict,
                                                     waves: list) -> None:
    up = load_upstream(str(models[family]))
    assert up.group_norm and not up.pass_mask
    assert up.batching == "frame-masked" and up.pads
    batched = _split_forward(up, waves)
    for i, wave in enumerate(waves):
        own = _own_forward(up, wave)
        alone = _split_forward(up, [wave])
        frames = up.valid_frames(len(wave))
        assert len(own) == len(alone) == len(batched) == up.n_layers
        for layer in range(up.n_layers):
            assert own[layer].shape[1] == frames == alone[layer].shape[1]
            # single utterance: the split is the model's forward, frame by frame
            assert torch.allclose(alone[layer][0], own[layer][0], atol=TOL, rtol=0)
            # in a batch of distinct lengths: every valid frame as when alone
            assert torch.allclose(batched[layer][i, :frames], own[layer][0], atol=TOL, rtol=0)


@pytest.mark.parametrize("family", GROUP_NORM)
def test_batched_pooling_equals_one_at_a_time(family: str, models: dict, waves: list) -> None:
    up = load_upstream(str(models[family]))
    assert len(up.prepare(waves)) == 1  # one forward pass for all six lengths
    together = up.pool(waves)
    alone = np.concatenate([up.pool([w]) for w in waves], axis=1)
    assert together.shape == (up.n_layers, len(waves), up.dim)
    assert np.abs(together - alone).max() <= TOL


def test_naive_padding_would_not_be_exact(models: dict, waves: list) -> None:
    """Why the split is needed: padding the waveforms of a group-norm model changes its
    outputs, so the comparison above can fail."""
    up = load_upstream(str(models["wav2vec2-group"]))
    padded = up.feature_extractor(waves, sampling_rate=16000, return_tensors="pt",
                                  padding=True)["input_values"]
    with torch.inference_mode():
        last = up.model(padded, output_hidden_states=True).hidden_states[-1]
    frames = up.valid_frames(len(waves[0]))
    own = _own_forward(up, waves[0])[-1][0]
    assert (last[0, :frames] - own).abs().max() > 1e-2


def test_leaking_model_keeps_equal_length_batches(models: dict, waves: list) -> None:
    d2v = load_upstream(str(models["data2vec-audio"]))
    assert d2v.batching == "equal-length" and not d2v.pads
    assert d2v.describe()["padding_check"] == {"padded": "changes outputs",
                                               "frame-masked": "changes outputs"}
    assert len(d2v.prepare(waves)) == len(waves)
    # The finding is real: the split forward does change data2vec-audio's valid frames.
    batched = _split_forward(d2v, waves)[-1]
    own = _own_forward(d2v, waves[0])[-1][0]
    assert (batched[0, : own.shape[0]] - own).abs().max() > 1e-3


def test_extraction_batches_distinct_lengths_and_records_it(models: dict,
                                                           tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus", [0.31, 0.47, 0.52, 0.66, 0.73, 0.9, 1.04])
    sizes: list[int] = []
    batched = run_extraction(corpus, str(models["hubert"]), tmp_path / "big", progress=False,
                             batch_seconds=20, torch_threads=1,
                             on_batch=lambda info: sizes.append(info["done"])).path
    single = run_extraction(corpus, str(models["hubert"]), tmp_path / "one", progress=False,
                            batch_seconds=0.01, torch_threads=1).path
    assert sizes == [7]  # all seven lengths in one batch
    with open_cache(batched) as a, open_cache(single) as b:
        assert a.meta["batching"] == "frame-masked"
        assert a.meta["padding_check"] == {"frame-masked": "equals one at a time"}
        assert np.abs(a.layers() - b.layers()).max() <= TOL
        np.testing.assert_array_equal(a.n_frames, b.n_frames)
