"""Public generators of test inputs: tiny randomly initialised checkpoints of every supported
family (saved with `save_pretrained`, so they load exactly like downloaded ones) and small
synthetic corpora with a manifest. Used by the test suite and the benchmarks; handy for
trying emoprobe without network access.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emoprobe.data.manifest import write_manifest

FAMILIES = ("wav2vec2-group", "wav2vec2-layer", "hubert", "wavlm", "wavlm-group",
            "data2vec-audio", "whisper", "w2v-bert", "speech2text")
TEXT_FAMILIES = ("bert", "roberta", "bart")

_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_WORDS = ("i", "you", "we", "am", "is", "are", "not", "so", "very", "the", "a", "this", "that",
          "happy", "angry", "sad", "calm", "today", "again", "really", "line", "of", "said",
          "plainly", "what", "why", "no", "yes", "it", "was", "great", "terrible", "fine")

_TINY_CONV = {
    "conv_dim": (16, 16, 16),
    "conv_stride": (5, 4, 2),
    "conv_kernel": (10, 8, 4),
    "num_conv_pos_embeddings": 8,
    "num_conv_pos_embedding_groups": 2,
}
_TINY = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "vocab_size": 12,
    **_TINY_CONV,
}


def build_model(
    family: str,
    folder: str | os.PathLike[str],
    *,
    seed: int = 0,
    whisper_window_seconds: int = 2,
    **config: Any,
) -> Path:
    """Save a randomly initialised checkpoint of `family` (one of FAMILIES) in `folder`.

    Defaults are tiny (hidden 32, 2 blocks, 3 conv layers with 40x downsampling; w2v-BERT
    2.0: 2 conformer blocks over 160-dim stacked fbank features at 50 Hz; Speech2Text: its
    encoder, 4x subsampling of 80-band fbank features); keyword
    arguments override config fields (e.g. layerdrop=0.5). The Whisper model's window is
    `whisper_window_seconds` (its feature extractor's chunk length) instead of 30 s, so
    windowing can be tested on short audio."""
    import torch
    import transformers as tf

    torch.manual_seed(seed)
    folder = Path(folder)
    if family == "whisper":
        positions = whisper_window_seconds * 50
        cfg = tf.WhisperConfig(**{
            "d_model": 32, "encoder_layers": 2, "encoder_attention_heads": 2,
            "decoder_layers": 1, "decoder_attention_heads": 2, "encoder_ffn_dim": 64,
            "decoder_ffn_dim": 64, "num_mel_bins": 80, "max_source_positions": positions,
            "max_target_positions": 16, "vocab_size": 16, "pad_token_id": 1,
            "bos_token_id": 2, "eos_token_id": 3, "decoder_start_token_id": 2, **config})
        tf.WhisperModel(cfg).save_pretrained(folder)
        tf.WhisperFeatureExtractor(
            feature_size=80, chunk_length=whisper_window_seconds).save_pretrained(folder)
        return folder
    if family == "w2v-bert":  # w2v-BERT 2.0: conformer over stacked 80-band fbank frames
        cfg = tf.Wav2Vec2BertConfig(**{
            "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
            "intermediate_size": 64, "feature_projection_input_dim": 160,
            "conv_depthwise_kernel_size": 5, "left_max_position_embeddings": 16,
            "right_max_position_embeddings": 4, "vocab_size": 12, **config})
        tf.Wav2Vec2BertModel(cfg).save_pretrained(folder)
        tf.SeamlessM4TFeatureExtractor(
            feature_size=80, num_mel_bins=80, sampling_rate=16000, stride=2,
            return_attention_mask=True).save_pretrained(folder)
        return folder
    if family == "speech2text":  # the encoder of a seq2seq model over fbank features
        cfg = tf.Speech2TextConfig(**{
            "d_model": 32, "encoder_layers": 2, "decoder_layers": 1,
            "encoder_attention_heads": 2, "decoder_attention_heads": 2, "encoder_ffn_dim": 64,
            "decoder_ffn_dim": 64, "conv_channels": 32, "input_feat_per_channel": 80,
            "max_source_positions": 400, "max_target_positions": 16, "vocab_size": 16,
            **config})
        tf.Speech2TextModel(cfg).save_pretrained(folder)
        tf.Speech2TextFeatureExtractor(
            feature_size=80, num_mel_bins=80, return_attention_mask=True).save_pretrained(folder)
        return folder
    fields = dict(_TINY)
    mask = True
    if family == "wav2vec2-group":
        cls, fields["feat_extract_norm"], mask = tf.Wav2Vec2Config, "group", False
    elif family == "wav2vec2-layer":
        cls = tf.Wav2Vec2Config
        fields.update(feat_extract_norm="layer", do_stable_layer_norm=True)
    elif family == "hubert":
        cls, fields["feat_extract_norm"], mask = tf.HubertConfig, "group", False
    elif family == "wavlm":
        cls = tf.WavLMConfig
        fields.update(feat_extract_norm="layer", do_stable_layer_norm=True, num_buckets=16,
                      max_bucket_distance=40)
    elif family == "wavlm-group":  # WavLM-base(-plus): group norm, no attention mask
        cls, fields["feat_extract_norm"], mask = tf.WavLMConfig, "group", False
        fields.update(num_buckets=16, max_bucket_distance=40)
    elif family == "data2vec-audio":
        cls = tf.Data2VecAudioConfig
    else:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    fields.update(config)
    model = tf.AutoModel.from_config(cls(**fields))
    model.save_pretrained(folder)
    tf.Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
        return_attention_mask=mask,
    ).save_pretrained(folder)
    return folder


def build_text_model(
    family: str,
    folder: str | os.PathLike[str],
    *,
    seed: int = 0,
    max_positions: int = 32,
    **config: Any,
) -> Path:
    """Save a randomly initialised text encoder of `family` (one of TEXT_FAMILIES: `bert`,
    `roberta` (positions counted after the padding index), or `bart` for the encoder of a
    sequence-to-sequence model) with a small WordPiece tokenizer (English letters and a few
    dozen words) in `folder`.

    Hidden 32, 2 blocks; `max_positions` tokens per input (special tokens included), so
    that windowing of long sentences can be tested on short text."""
    import torch
    import transformers as tf

    torch.manual_seed(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    letters = "abcdefghijklmnopqrstuvwxyz0123456789"
    vocab = [*_SPECIAL_TOKENS, *letters, *".,!?'-:", *(f"##{c}" for c in letters), *_WORDS]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    try:  # transformers >= 5 builds the fast tokenizer from the vocabulary itself
        tokenizer = tf.BertTokenizer(vocab={w: i for i, w in enumerate(vocab)})
    except TypeError:
        tokenizer = tf.BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))
    tokenizer.model_max_length = max_positions
    tokenizer.save_pretrained(folder)
    ids = {"vocab_size": len(vocab), "pad_token_id": 0}
    if family == "bert":
        cfg = tf.BertConfig(**{"hidden_size": 32, "num_hidden_layers": 2,
                               "num_attention_heads": 2, "intermediate_size": 64,
                               "max_position_embeddings": max_positions, **ids, **config})
    elif family == "roberta":
        cfg = tf.RobertaConfig(**{"hidden_size": 32, "num_hidden_layers": 2,
                                  "num_attention_heads": 2, "intermediate_size": 64,
                                  "max_position_embeddings": max_positions + 2, **ids,
                                  **config})
    elif family == "bart":
        cfg = tf.BartConfig(**{"d_model": 32, "encoder_layers": 2, "decoder_layers": 1,
                               "encoder_attention_heads": 2, "decoder_attention_heads": 2,
                               "encoder_ffn_dim": 64, "decoder_ffn_dim": 64,
                               "max_position_embeddings": max_positions, "bos_token_id": 2,
                               "eos_token_id": 3, "decoder_start_token_id": 2, **ids,
                               **config})
    else:
        raise ValueError(f"unknown text family {family!r}; known: {', '.join(TEXT_FAMILIES)}")
    tf.AutoModel.from_config(cfg).save_pretrained(folder)
    return folder


def synth_sentence(index: int, *, words: int | None = None, seed: int = 0) -> str:
    """A short English-like sentence from the tiny tokenizer's words (`words` of them, or
    3 to 12), different for every index."""
    rng = np.random.default_rng([seed, index])
    n = int(words) if words is not None else int(rng.integers(3, 13))
    picked = [_WORDS[int(k)] for k in rng.integers(0, len(_WORDS), n)]
    return " ".join(picked).capitalize() + (".", "!", "?")[index % 3]


def build_wav2vec2_base(folder: str | os.PathLike[str], *, seed: int = 0) -> Path:
    """A randomly initialised model of wav2vec2-base's size and shape (12 blocks, 768 dims,
    the real 7-layer conv front end with group norm, no attention mask), for benchmarks."""
    import torch
    import transformers as tf

    torch.manual_seed(seed)
    folder = Path(folder)
    cfg = tf.Wav2Vec2Config(feat_extract_norm="group", do_stable_layer_norm=False)
    tf.Wav2Vec2Model(cfg).save_pretrained(folder)
    tf.Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
        return_attention_mask=False,
    ).save_pretrained(folder)
    return folder


def synth_wave(seconds: float, sample_rate: int = 16000, *, seed: int = 0) -> np.ndarray:
    """A voiced-like test signal: harmonic tone with a moving pitch, plus a little noise."""
    rng = np.random.default_rng(seed)
    n = max(1, round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    f0 = 110 + 40 * rng.random() + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    wave = sum(np.sin(k * phase) / k for k in range(1, 6))
    wave = 0.3 * wave / np.max(np.abs(wave)) + 0.01 * rng.standard_normal(n)
    return wave.astype(np.float32)


def write_corpus(
    folder: str | os.PathLike[str],
    durations: Sequence[float],
    *,
    sample_rate: int = 16000,
    labels: Sequence[str] = ("neu", "ang", "hap", "sad"),
    seed: int = 0,
    sentences: Sequence[str | None] | None = None,
) -> Path:
    """WAV files of the given durations and a manifest.jsonl naming them; returns the
    manifest path. Speakers alternate between two ids. With `sentences` (one per
    utterance, None for an untranscribed one), records carry a `sentence` field."""
    import soundfile as sf

    folder = Path(folder)
    (folder / "wav").mkdir(parents=True, exist_ok=True)
    records = []
    for i, seconds in enumerate(durations):
        path = folder / "wav" / f"utt{i:04d}.wav"
        sf.write(path, synth_wave(seconds, sample_rate, seed=seed + i), sample_rate,
                 subtype="PCM_16")
        records.append({"id": f"utt{i:04d}", "path": f"wav/{path.name}",
                        "label": labels[i % len(labels)], "speaker": f"spk{i % 2}"})
        if sentences is not None:
            records[-1]["sentence"] = sentences[i]
    return write_manifest(records, folder / "manifest.jsonl")
