"""Text upstreams (--modality text) on tiny random BERT and BART checkpoints saved with
save_pretrained: batched == one at a time, both == transformers by hand, long sentences
windowed by tokens, missing sentences counted as failures, sharding and the CLI."""

from __future__ import annotations

import functools
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from emoprobe.cache.store import LAYER_CONVENTION
from emoprobe.cli import main
from emoprobe.errors import ExtractionError
from emoprobe.extract import open_cache, run_extraction
from emoprobe.extract.merge import merge_shards
from emoprobe.extract.shard import ShardSpec
from emoprobe.testing.models import TEXT_FAMILIES, build_text_model, synth_sentence, write_corpus

TOL = 1e-4
# Varied lengths; index 5 is longer than the tiny models' 32 positions (three windows).
SENTENCES = [synth_sentence(i) for i in range(5)] + [synth_sentence(5, words=70)] + [
    synth_sentence(i) for i in range(6, 10)]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("text-models")
    return {family: build_text_model(family, root / family) for family in TEXT_FAMILIES}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("text-corpus"), [0.3] * len(SENTENCES),
                        sentences=SENTENCES)


@pytest.fixture(scope="module")
def gappy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Utterance 2 has no sentence, utterance 4 an empty one."""
    sentences: list[str | None] = list(SENTENCES[:6])
    sentences[2], sentences[4] = None, "  "
    return write_corpus(tmp_path_factory.mktemp("gappy"), [0.3] * 6, sentences=sentences)


@functools.lru_cache(maxsize=4)
def _hf(model_dir: Path) -> tuple:
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(model_dir, dtype=torch.float32).eval()
    encoder = model.get_encoder() if model.config.is_encoder_decoder else model
    return AutoTokenizer.from_pretrained(model_dir), encoder


def reference(model_dir: Path, sentence: str) -> np.ndarray:
    """By hand with transformers: tokenise with special tokens and average every hidden
    state over the attention mask; a sentence over the model's 32 positions is cut into
    ceil(n / 30) equal windows of tokens, each with [CLS] and [SEP], and the windows are
    combined weighted by their token counts."""
    tok, encoder = _hf(model_dir)
    ids = tok(sentence, add_special_tokens=False)["input_ids"]
    k = math.ceil(len(ids) / 30)
    edges = [round(i * len(ids) / k) for i in range(k + 1)]
    sums, count = 0.0, 0
    for a, b in itertools.pairwise(edges):
        window = [tok.cls_token_id, *ids[a:b], tok.sep_token_id]
        with torch.no_grad():
            hidden = encoder(input_ids=torch.tensor([window]), output_hidden_states=True)
        sums = sums + np.stack([h[0].double().sum(0).numpy() for h in hidden.hidden_states])
        count += len(window)
    return sums / count


@pytest.mark.parametrize("family", TEXT_FAMILIES)
def test_batched_equals_one_at_a_time_and_reference(family: str, models: dict, corpus: Path,
                                                    tmp_path: Path) -> None:
    sizes: dict[str, list[int]] = {"big": [], "one": []}
    paths = {}
    for name, budget in (("big", 4096), ("one", 1)):
        paths[name] = run_extraction(
            corpus, str(models[family]), tmp_path / name, modality="text", batch_tokens=budget,
            progress=False, torch_threads=1,
            on_batch=lambda info, name=name: sizes[name].append(info["done"])).path
    assert len(sizes["one"]) == len(SENTENCES) and len(sizes["big"]) == 1
    with open_cache(paths["big"]) as a, open_cache(paths["one"]) as b:
        assert a.meta["upstream_kind"] == "text" and a.meta["model_type"] == family
        assert a.n_layers == 3 and a.meta["n_blocks"] == 2 and a.dim == 32
        assert a.meta["layer_convention"] == LAYER_CONVENTION and a.usable.all()
        assert np.abs(a.layers() - b.layers()).max() <= TOL
        for i, sentence in enumerate(SENTENCES):
            ref = reference(models[family], sentence)
            assert np.abs(a.layers()[:, i] - ref).max() <= TOL, sentence
        # tokens pooled: the long sentence's 71 tokens in three windows with 2 specials each
        assert a.n_frames[5] == 71 + 3 * 2
        np.testing.assert_array_equal(a.n_frames, b.n_frames)


def test_missing_sentence_is_a_counted_failure(models: dict, gappy: Path, tmp_path: Path) -> None:
    with pytest.raises(ExtractionError, match=r"utterance 'utt0002'.*no 'sentence'"):
        run_extraction(gappy, str(models["bert"]), tmp_path / "stop", modality="text",
                       progress=False, torch_threads=1)
    result = run_extraction(gappy, str(models["bert"]), tmp_path / "skip", modality="text",
                            on_error="skip", progress=False, torch_threads=1)
    assert sorted(result.summary.failed) == ["utt0002", "utt0004"]
    assert "empty 'sentence'" in result.summary.failed["utt0004"]
    assert result.summary.extracted == 4
    with open_cache(result.path) as cache:
        assert cache.meta["counts"] == {"total": 6, "usable": 4, "failed": 2}
        assert cache.usable.tolist() == [True, True, False, True, False, True]
        assert np.isnan(cache.layer(0)[2]).all()
        assert "no 'sentence'" in cache.failed["utt0002"]


def test_cli_text_extract_prints_the_summary(models: dict, gappy: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    args = ["extract", "--modality", "text", "--manifest", str(gappy), "--model",
            str(models["bert"]), "--out", str(tmp_path), "--on-error", "skip", "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "4 extracted now" in out and "2 failed" in out and "text: 4 sentences" in out
    assert main(args) == 0  # complete and matching: reused, nothing extracted
    assert "6 reused" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "bert.h5")]) == 0
    info = capsys.readouterr().out
    assert "upstream_kind: text" in info and "shape: 3 layers x 32 dims;" in info
    assert "tokens" in info and "h of audio" not in info


def test_max_seconds_is_refused_for_text(models: dict, corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(ExtractionError, match="--max-seconds cuts audio"):
        run_extraction(corpus, str(models["bert"]), tmp_path, modality="text", max_seconds=5,
                       progress=False, torch_threads=1)


def test_an_audio_model_is_refused_as_text(tmp_path: Path, corpus: Path) -> None:
    from emoprobe.testing.models import build_model

    audio = build_model("wav2vec2-layer", tmp_path / "w2v")
    with pytest.raises(ExtractionError, match="takes 'input_values', not token ids|cannot load"):
        run_extraction(corpus, str(audio), tmp_path / "out", modality="text", progress=False,
                       torch_threads=1)


def test_text_shards_merge_into_the_single_process_cache(models: dict, gappy: Path,
                                                         tmp_path: Path) -> None:
    kw = {"modality": "text", "batch_tokens": 20, "on_error": "skip", "progress": False,
          "torch_threads": 1}
    whole = run_extraction(gappy, str(models["bert"]), tmp_path / "whole", **kw).path
    shards = [run_extraction(gappy, str(models["bert"]), tmp_path / "parts",
                             shard=ShardSpec(k, 2), **kw).path for k in range(2)]
    merged = merge_shards(shards, tmp_path / "merged.h5", progress=False).path
    with open_cache(whole) as a, open_cache(merged) as b:
        np.testing.assert_array_equal(a.layers(), b.layers())
        assert a.failed == b.failed and len(a.failed) == 2


def test_text_upstream_in_a_run_config_is_probed_and_fused(models: dict, tmp_path: Path) -> None:
    """`modality = "text"` in an [[upstream]] table: the text cache is probed beside fbank
    and fused with it, through the same tables as audio upstreams."""
    from emoprobe import run_pipeline
    from emoprobe.data.demo import prepare_demo

    manifest = prepare_demo(tmp_path / "demo", sessions=2).manifest
    bert = models["bert"]
    config = {
        "out": str(tmp_path / "out"),
        "corpus": [{"source": "manifest", "root": str(manifest), "name": "demo",
                    "allow_subset": True}],
        "upstream": [{"model": "fbank"}, {"model": str(bert), "modality": "text"}],
        "fuse": [{"models": ["fbank", str(bert)]}],
        "probe": {"seeds": 1, "n_boot": 20, "c_grid": [0.01, 1.0]},
    }
    result = run_pipeline(config, progress=False)
    cache = result.caches[("demo", str(bert))]
    with open_cache(cache) as c:
        assert c.meta["upstream_kind"] == "text" and c.usable.all()
    assert "| bert |" in result.report_text and "| fbank+bert |" in result.report_text
