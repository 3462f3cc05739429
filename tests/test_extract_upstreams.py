"""Upstream correctness for every supported family, on tiny random checkpoints saved with
save_pretrained and on the real whisper-tiny.en: batched == one at a time, both == an
independent transformers reference, windowing == its definition, eval mode, layer
convention, padding detection, baselines, reduced precision and NaN/Inf refusal."""

from __future__ import annotations

import functools
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from emoprobe.cache.store import LAYER_CONVENTION
from emoprobe.data.audio import load_audio
from emoprobe.data.manifest import read_manifest, write_manifest
from emoprobe.errors import ExtractionError
from emoprobe.extract import open_cache, run_extraction
from emoprobe.extract.precision import compare_precision
from emoprobe.extract.upstream import load_upstream
from emoprobe.extract.upstream.fbank import mel_filterbank
from emoprobe.testing.models import FAMILIES, build_model, synth_wave, write_corpus

pytestmark = [pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask"),
              pytest.mark.usefixtures("one_torch_thread")]

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
WHISPER_TINY = SHARED / "models" / "whisper-tiny.en"
URDU = SHARED / "data" / "urdu"
needs_whisper = pytest.mark.skipif(not WHISPER_TINY.is_dir(),
                                   reason=f"real checkpoint not found at {WHISPER_TINY}")
needs_urdu = pytest.mark.skipif(not (URDU / "manifest.jsonl").is_file(),
                                reason=f"URDU corpus not found at {URDU}")

# Equal lengths (so equal-length batching really batches), windowed ones for Whisper's 2 s
# window, and one shorter than any window.
DURATIONS = [1.0, 1.5, 1.0, 2.5, 0.7, 1.0, 3.1, 1.5]
TOL = 1e-4



@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"), DURATIONS)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {family: build_model(family, root / family) for family in FAMILIES}


@functools.lru_cache(maxsize=8)
def _hf(model_dir: str) -> tuple:
    from transformers import AutoFeatureExtractor, AutoModel

    fe = AutoFeatureExtractor.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir, dtype=torch.float32).eval()
    whisper = model.config.model_type == "whisper"
    seq2seq = model.config.is_encoder_decoder  # Whisper, Speech2Text: the encoder alone
    return fe, (model.get_encoder() if seq2seq else model), whisper


def hf_reference(model_dir: str | Path, wave: np.ndarray, window: int | None = None) -> np.ndarray:
    """What a careful researcher computes by hand, one utterance at a time: transformers
    feature extractor and model, mean over the frames that cover real audio (Whisper: 20 ms
    per encoder frame, i.e. ceil(n / 320)), and for long inputs the frame-weighted mean of
    the per-window means over ceil(n / window) equal windows."""
    fe, model, whisper = _hf(str(model_dir))
    n = len(wave)
    win = window or (fe.n_samples if whisper else n)
    k = math.ceil(n / win)
    edges = [round(i * n / k) for i in range(k + 1)]
    means, weights = [], []
    for a, b in itertools.pairwise(edges):
        inputs = fe([wave[a:b]], sampling_rate=16000, return_tensors="pt")
        if whisper:
            inputs = {"input_features": inputs["input_features"]}
            valid = math.ceil((b - a) / 320)
        elif "input_features" in inputs:  # the feature extractor's real frames, subsampled
            valid = int(model._get_feat_extract_output_lengths(inputs["attention_mask"].sum()))
        else:
            valid = int(model._get_feat_extract_output_lengths(torch.tensor(b - a)))
        with torch.no_grad():
            hidden = model(**inputs, output_hidden_states=True).hidden_states
        means.append(np.stack([h[0, :valid].double().mean(0).numpy() for h in hidden]))
        weights.append(valid)
    return sum(w * m for w, m in zip(weights, means)) / sum(weights)


def _extract(manifest: Path, model: str | Path, out: Path, **kw) -> tuple[Path, list[int]]:
    sizes: list[int] = []
    result = run_extraction(manifest, str(model), out, progress=False, torch_threads=1,
                            on_batch=lambda info: sizes.append(info["done"]), **kw)
    return result.path, sizes


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_equals_one_at_a_time_and_reference(family: str, corpus: Path, models: dict,
                                                    tmp_path: Path) -> None:
    batched, progress = _extract(corpus, models[family], tmp_path / "big", batch_seconds=20)
    single, single_progress = _extract(corpus, models[family], tmp_path / "one",
                                       batch_seconds=0.01)
    assert len(single_progress) == len(DURATIONS)  # one utterance per batch
    assert len(progress) < len(DURATIONS)  # real batching happened
    records = read_manifest(corpus)
    with open_cache(batched) as a, open_cache(single) as b:
        assert a.n_layers == 3 and a.meta["layer_convention"] == LAYER_CONVENTION
        assert a.meta["n_blocks"] == 2 and a.dim == 32 and a.usable.all()
        assert np.abs(a.layers() - b.layers()).max() <= TOL
        for i, rec in enumerate(records):
            wave, _ = load_audio(rec["path"], 16000)
            ref = hf_reference(models[family], wave)
            assert np.abs(a.layers()[:, i] - ref).max() <= TOL, rec["id"]
        if family == "whisper":  # 2 s window: utterances of 2.5 and 3.1 s use two windows
            frames = [math.ceil(d * 16000 / 320) if d <= 2 else 2 * math.ceil(d * 8000 / 320)
                      for d in DURATIONS]
            np.testing.assert_array_equal(a.n_frames, frames)


@pytest.mark.parametrize("family", ["wav2vec2-group", "wavlm", "w2v-bert"])
def test_windowed_pooling_matches_definition(family: str, corpus: Path, models: dict,
                                             tmp_path: Path) -> None:
    path, _ = _extract(corpus, models[family], tmp_path, max_seconds=0.6, batch_seconds=5)
    window = int(0.6 * 16000)
    with open_cache(path) as c:
        for i, rec in enumerate(read_manifest(corpus)):
            wave, _ = load_audio(rec["path"], 16000)
            ref = hf_reference(models[family], wave, window)
            assert np.abs(c.layers()[:, i] - ref).max() <= TOL, rec["id"]
        assert c.meta["fingerprinted_settings"]["max_seconds"] == 0.6


def test_padding_check_detects_models_that_leak_padding(models: dict) -> None:
    """Mask-taking models are tested at load time: data2vec-audio's positional convolution
    stack carries padding into valid frames, so it is batched by equal lengths only."""
    d2v = load_upstream(str(models["data2vec-audio"]))
    assert d2v.return_attention_mask and not d2v.group_norm
    assert not d2v.pads and d2v.describe()["padding_check"]["padded"] == "changes outputs"
    w2v = load_upstream(str(models["wav2vec2-layer"]))
    assert w2v.pads and w2v.describe()["batching"] == "padded"
    group = load_upstream(str(models["wav2vec2-group"]))
    assert not group.pass_mask  # group norm: waveforms never padded, no mask
    assert group.describe()["batching"] == "frame-masked"  # front end per utterance
    # The detection is real: padding does change data2vec-audio's pooled vectors.
    rng = np.random.default_rng(5)
    waves = [0.1 * rng.standard_normal(n).astype(np.float32) for n in (16000, 22000)]
    d2v.pads, d2v.batching = True, "padded"
    together = d2v.pool(waves)
    alone = np.concatenate([d2v.pool([w]) for w in waves], axis=1)
    assert np.abs(together - alone).max() > 1e-3


def test_eval_mode_fixes_layerdrop(tmp_path: Path) -> None:
    folder = build_model("wav2vec2-layer", tmp_path / "m", layerdrop=0.9, hidden_dropout=0.5,
                         num_hidden_layers=4)
    from transformers import AutoModel

    model = AutoModel.from_pretrained(folder).train()
    x = torch.randn(1, 8000)
    counts = {len(model(x, output_hidden_states=True).hidden_states) for _ in range(20)}
    assert counts != {5}, "in training mode LayerDrop varies the number of hidden states"
    up = load_upstream(str(folder))
    assert not up.model.training
    wave = synth_wave(1.2)
    first, second = up.pool([wave]), up.pool([wave])
    assert first.shape == (5, 1, 32)
    np.testing.assert_array_equal(first, second)


@pytest.mark.slow
@needs_whisper
def test_real_whisper_tiny_batched_single_and_windowed(tmp_path: Path) -> None:
    """whisper-tiny.en: 30 s windows; a 36 s input is cut into two 18 s windows."""
    recs = read_manifest(URDU / "manifest.jsonl")[:20]
    waves = [load_audio(r["path"], 16000)[0] for r in recs]  # 44.1 kHz files, resampled
    long_wave = np.concatenate(waves)[: 36 * 16000]
    assert len(long_wave) == 36 * 16000
    folder = tmp_path / "corpus"
    folder.mkdir()
    sf.write(folder / "long.wav", long_wave, 16000, subtype="FLOAT")
    manifest = write_manifest(
        [dict(r, path=str(r["path"])) for r in recs[:3]]
        + [{"id": "long", "path": str(folder / "long.wav"), "label": "angry"}],
        folder / "manifest.jsonl")
    batched, progress = _extract(manifest, WHISPER_TINY, tmp_path / "a", batch_seconds=150)
    single, _ = _extract(manifest, WHISPER_TINY, tmp_path / "b", batch_seconds=1)
    assert len(progress) == 1
    with open_cache(batched) as a, open_cache(single) as b:
        assert (a.n_layers, a.dim) == (5, 384) and a.meta["window_seconds"] == 30.0
        assert np.abs(a.layers() - b.layers()).max() <= TOL
        half = len(long_wave) // 2
        assert a.n_frames[3] == math.ceil(half / 320) + math.ceil((len(long_wave) - half) / 320)
        for i, wave in enumerate([*waves[:3], long_wave]):
            ref = hf_reference(WHISPER_TINY, wave)
            assert np.abs(a.layers()[:, i] - ref).max() <= TOL
    up = load_upstream(str(WHISPER_TINY))
    for n in (1, 319, 320, 321, 16000, 44101, 480000):
        assert up.valid_frames(n) == math.ceil(n / 320)


def test_fbank_filterbank_frames_and_tone(tmp_path: Path) -> None:
    from transformers.audio_utils import mel_filter_bank

    ours = mel_filterbank(512, 80, 16000, 20.0, 8000.0)
    theirs = mel_filter_bank(num_frequency_bins=257, num_mel_filters=80, min_frequency=20.0,
                             max_frequency=8000.0, sampling_rate=16000, norm=None,
                             mel_scale="htk")
    np.testing.assert_allclose(ours, theirs, atol=1e-10)
    up = load_upstream("fbank")
    assert (up.n_layers, up.dim, up.pooling) == (1, 160, "mean+std")
    assert [up.valid_frames(n) for n in (399, 400, 559, 560, 16000)] == [0, 1, 1, 2, 98]
    t = np.arange(16000) / 16000
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    pooled = up.pool([tone])[0, 0]
    centres = np.argmax(ours, axis=0) * 16000 / 512
    assert np.argmax(pooled[:80]) == np.argmin(np.abs(centres - 1000))
    assert (pooled[80:] >= 0).all()
    waves = [synth_wave(d, seed=i) for i, d in enumerate((0.5, 1.3, 0.9))]
    batched = up.pool(waves)
    single = np.concatenate([up.pool([w]) for w in waves], axis=1)
    assert np.abs(batched - single).max() <= TOL
    frames = up.logmel(torch.from_numpy(waves[1])[None])[0].double().numpy()
    np.testing.assert_allclose(single[0, 1], np.concatenate([frames.mean(0), frames.std(0)]),
                               rtol=1e-4, atol=1e-4)


def test_egemaps_matches_opensmile(corpus: Path, tmp_path: Path) -> None:
    import opensmile

    path, _ = _extract(corpus, "egemaps", tmp_path)
    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                            feature_level=opensmile.FeatureLevel.Functionals)
    with open_cache(path) as c:
        assert (c.n_layers, c.dim) == (1, 88) and len(c.meta["feature_names"]) == 88
        for i, rec in enumerate(read_manifest(corpus)[:3]):
            wave, _ = load_audio(rec["path"], 16000)
            ref = smile.process_signal(wave, 16000).to_numpy()[0]
            np.testing.assert_allclose(c.layer(0)[i], ref, rtol=1e-5, atol=1e-5)


def test_bfloat16_against_float32(models: dict, corpus: Path, tmp_path: Path) -> None:
    waves = [synth_wave(d, seed=i) for i, d in enumerate((0.8, 1.4))]
    report = compare_precision(str(models["wav2vec2-layer"]), waves, dtype="bfloat16")
    assert len(report) == 3 and all(r["finite"] for r in report)
    assert all(0 < r["max_rel_diff"] < 0.1 and r["min_cosine"] > 0.99 for r in report)
    low, _ = _extract(corpus, models["wav2vec2-layer"], tmp_path / "bf16", dtype="bfloat16")
    ref, _ = _extract(corpus, models["wav2vec2-layer"], tmp_path / "fp32")
    with open_cache(low) as a, open_cache(ref) as b:
        assert a.meta["dtype"] == "bfloat16" and a.usable.all()
        assert 0 < np.abs(a.layers() - b.layers()).max() < 0.1 * np.abs(b.layers()).max()


def test_upstream_producing_inf_is_refused(tmp_path: Path, corpus: Path) -> None:
    """A checkpoint whose feed-forward weights overflow float32 yields Inf/NaN hidden
    states; nothing of it may be written."""
    from transformers import AutoModel

    folder = build_model("wav2vec2-layer", tmp_path / "m")
    model = AutoModel.from_pretrained(folder)
    with torch.no_grad():
        model.encoder.layers[0].feed_forward.output_dense.weight.mul_(1e37)
    model.save_pretrained(folder)
    with pytest.raises(ExtractionError, match=r"utterance 'utt\d+'.*non-finite values"):
        run_extraction(corpus, str(folder), tmp_path / "stop", progress=False)
    result = run_extraction(corpus, str(folder), tmp_path / "skip", progress=False,
                            on_error="skip")
    assert len(result.summary.failed) == len(DURATIONS) and result.summary.extracted == 0
    with open_cache(result.path) as c:
        assert c.complete and not c.usable.any()
        assert all("non-finite values" in r and "layer(s) [2]" in r for r in c.failed.values())
        assert np.isnan(c.layers()).all()


def test_unsupported_or_missing_models_name_the_source(tmp_path: Path) -> None:
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(tmp_path / "bert")
    with pytest.raises(ExtractionError, match="bert"):
        load_upstream(str(tmp_path / "bert"))
    with pytest.raises(ExtractionError, match="no such model folder"):
        load_upstream(str(tmp_path / "nothing"))
    with pytest.raises(ExtractionError, match="fbank baseline computes in float32"):
        load_upstream("fbank", dtype="bfloat16")


def test_hub_checkpoint_records_its_commit_hash(tmp_path: Path, monkeypatch) -> None:
    """A hub id resolved from the local hub cache (offline) records the snapshot's commit."""
    import huggingface_hub.constants as hub

    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--acme--tiny-w2v"
    build_model("wav2vec2-layer", repo / "snapshots" / sha)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    up = load_upstream("acme/tiny-w2v")
    assert up.commit_hash == sha
    assert up.identity()["source"] == "acme/tiny-w2v" and up.describe()["model_path"] is None


def test_feature_input_encoders_store_l_plus_1_layers(models: dict, corpus: Path,
                                                      tmp_path: Path) -> None:
    """w2v-BERT 2.0 and Speech2Text take the feature extractor's input_features. w2v-BERT's
    conformer masks padding, so it batches padded inputs; Speech2Text's convolutional
    subsampler carries padding into valid frames, which the load-time check catches."""
    fbank = [1 + (round(d * 16000) - 400) // 160 for d in DURATIONS]  # 25 ms / 10 ms frames
    half = [(f - 1) // 2 + 1 for f in fbank]
    expected = {"w2v-bert": ("padded", [f // 2 for f in fbank]),  # pairs of frames stacked
                "speech2text": ("equal-length", [(h - 1) // 2 + 1 for h in half])}
    for family, (batching, frames) in expected.items():
        path, _ = _extract(corpus, models[family], tmp_path / family, batch_seconds=20)
        with open_cache(path) as cache:
            assert cache.meta["input"] == "input_features"
            assert cache.meta["batching"] == batching, family
            assert cache.n_layers == cache.meta["n_blocks"] + 1 == 3
            assert cache.n_frames.tolist() == frames, family
