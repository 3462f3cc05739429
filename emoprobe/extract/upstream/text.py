"""Text encoders over each utterance's transcript (the manifest's `sentence` field): any
transformers encoder-only model (BERT, RoBERTa, XLM-R, Chinese BERT) or the encoder of a
sequence-to-sequence model (T5, BART), loaded with AutoTokenizer + AutoModel from a hub id or
a local folder.

Tokens play the part of frames. A sentence is tokenised without special tokens; a sentence
longer than the model's positions is cut into balanced windows of tokens (as long audio is),
each window gets the tokenizer's own special tokens (`[CLS] ... [SEP]`, `<s> ... </s>`), and
every hidden state is averaged over the tokens of the attention mask: the sentence's tokens
and its special tokens, never padding. Batches are padded on the right with the pad token and
the mask is passed, so batched and one-at-a-time vectors agree (checked at load time).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from emoprobe.errors import ExtractionError
from emoprobe.extract.upstream.base import Prepared
from emoprobe.extract.upstream.hf import (
    HFUpstream,
    _quiet_transformers,
    hub_commit_hash,
    local_content_hash,
)

log = logging.getLogger(__name__)

TEXT_FIELD = "sentence"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json",
                    "merges.txt", "sentencepiece.bpe.model", "spiece.model",
                    "special_tokens_map.json")
_PROBE_TEXT = "emoprobe checks the special tokens"
_UNBOUNDED = 1_000_000  # tokenizers without a length limit report a huge model_max_length


class TextUpstream(HFUpstream):
    """A transformers text encoder; all L+1 hidden states, layer 0 = embedding output.

    Inputs are arrays of token ids (one sentence or one window of it); `tokenize` makes them
    from manifest records. Batching, the forward pass and pooling are HFUpstream's."""

    kind = "text"
    modality = "text"
    sample_rate = 0  # no audio: lengths count tokens

    def __init__(
        self,
        source: str,
        *,
        revision: str | None = None,
        device: str = "cpu",
        dtype: str = "float32",
    ) -> None:
        from transformers import AutoTokenizer

        source, self.tokenizer, model = self._load(source, revision, device, dtype,
                                                   AutoTokenizer)
        config = self.config
        if getattr(config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
            model = model.get_encoder()
        if getattr(model, "main_input_name", "input_ids") != "input_ids":
            raise ExtractionError(
                f"{self.name}: model type {self.model_type!r} takes {model.main_input_name!r}, "
                "not token ids; --modality text needs a text encoder (BERT, RoBERTa, XLM-R, "
                "the encoder of T5 or BART, ...)"
            )
        self.model = model
        self.n_blocks = _count_blocks(config)
        self.n_layers = self.n_blocks + 1
        self.dim = int(getattr(config, "hidden_size", 0) or getattr(config, "d_model", 0))
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:  # GPT-style vocabularies: any id works under the mask
            self.pad_id = self.tokenizer.eos_token_id or 0
        self.prefix, self.suffix = special_tokens(self.tokenizer)
        self.n_special = len(self.prefix) + len(self.suffix)
        limit = max_positions(config, self.tokenizer)
        self.max_samples = None if limit is None else limit - self.n_special
        if self.max_samples is not None and self.max_samples < 1:
            raise ExtractionError(f"{self.name}: the model takes only {limit} tokens")
        self.pass_mask = True
        self.model.eval()
        self.model.to(device=device)
        self.pads = True
        self.padding_checked = "harmless"
        if not self.padding_is_harmless():
            log.info("%s: padding changes the outputs; batching equal lengths only", source)
            self.pads = False
            self.padding_checked = "changes outputs"
        self.model.to(dtype=self.torch_dtype)
        self.commit_hash = local_content_hash(source, extra=_TOKENIZER_FILES) if self.is_local \
            else hub_commit_hash(source, revision)

    # ---------------------------------------------------------------------------- tokens

    def tokenize(self, records: Sequence[Mapping[str, Any]], indices: Iterable[int]
                 ) -> tuple[dict[int, np.ndarray], dict[int, str]]:
        """Token ids (without special tokens) of the records' sentences, and the reason for
        every record that has none: a missing, empty or non-text `sentence`, or one that
        gives no token."""
        tokens: dict[int, np.ndarray] = {}
        problems: dict[int, str] = {}
        with _quiet_transformers():  # no "longer than the maximum length" warning: windowed
            for i in map(int, indices):
                sentence = records[i].get(TEXT_FIELD)
                if sentence is None or (isinstance(sentence, str) and not sentence.strip()):
                    what = "no" if sentence is None else "an empty"
                    problems[i] = (f"{what} {TEXT_FIELD!r} (transcript) in the manifest; "
                                   "text upstreams need one per utterance")
                    continue
                if not isinstance(sentence, str):
                    problems[i] = (f"{TEXT_FIELD!r} is {type(sentence).__name__} "
                                   f"{sentence!r}, expected text")
                    continue
                ids = self.tokenizer(sentence, add_special_tokens=False)["input_ids"]
                if not ids:
                    problems[i] = f"the sentence {sentence!r} gives no token"
                    continue
                tokens[i] = np.asarray(ids, dtype=np.int64)
        return tokens, problems

    # -------------------------------------------------------------------------- contract

    def input_window(self, max_seconds: float | None) -> int | None:
        if max_seconds is not None:
            raise ExtractionError(
                "--max-seconds cuts audio; text upstreams cut sentences longer than the "
                "model's positions into windows of tokens by themselves"
            )
        return self.max_samples

    def batch_budget(self, settings: Any, device: str) -> float:
        return float(settings.resolved_batch_tokens(device))

    def valid_frames(self, n_samples: int) -> int:
        return int(n_samples) + self.n_special if n_samples > 0 else 0

    def _prepare_group(self, chunks: Sequence[np.ndarray], rows: list[int]) -> Prepared:
        seqs = [[*self.prefix, *np.asarray(c).tolist(), *self.suffix] for c in chunks]
        longest = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), longest), int(self.pad_id), dtype=torch.long)
        mask = torch.zeros((len(seqs), longest), dtype=torch.long)
        for r, s in enumerate(seqs):
            ids[r, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[r, : len(s)] = 1
        lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
        return Prepared(rows=rows, inputs={"input_ids": self.pin(ids),
                                           "attention_mask": self.pin(mask)}, lengths=lengths)

    def padding_probe(self) -> list[np.ndarray]:
        """Two random token sequences of different lengths (ordinary, non-special ids)."""
        rng = np.random.default_rng(0)
        vocab = int(getattr(self.config, "vocab_size", 0) or len(self.tokenizer))
        special = set(self.tokenizer.all_special_ids)
        ids = np.array([i for i in range(min(vocab, 4096)) if i not in special])
        longest = 7 if self.max_samples is None else min(7, self.max_samples)
        return [rng.choice(ids, n) for n in (max(longest - 4, 1), longest)]

    def pool_sentences(self, sentences: Sequence[str]) -> np.ndarray:
        """Pooled vectors (layers, len(sentences), dim) of sentences in one batch, windowed
        as extraction does. For comparisons and quick experiments; `extract` writes caches."""
        records = [{TEXT_FIELD: s} for s in sentences]
        tokens, problems = self.tokenize(records, range(len(records)))
        if problems:
            raise ExtractionError("; ".join(f"sentence {i}: {p}" for i, p in problems.items()))
        return self.pool([tokens[i] for i in range(len(records))])

    def identity(self) -> dict[str, Any]:
        d = super().identity()
        del d["sample_rate"]
        d.update(special_tokens=[list(self.prefix), list(self.suffix)],
                 max_tokens=self.max_samples)
        return d

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        del d["feat_extract_norm"]
        d.update(sample_rate=None, window_seconds=None, text_field=TEXT_FIELD,
                 max_tokens=self.max_samples)
        return d


def _count_blocks(config: Any) -> int:
    for key in ("num_hidden_layers", "encoder_layers", "num_layers", "n_layers"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    raise ExtractionError(f"cannot tell the number of layers of model type {config.model_type!r}")


def special_tokens(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after a single sentence, found by tokenising a
    probe sentence with and without special tokens (works for every tokenizer family)."""
    bare = list(tokenizer(_PROBE_TEXT, add_special_tokens=False)["input_ids"])
    full = list(tokenizer(_PROBE_TEXT, add_special_tokens=True)["input_ids"])
    for start in range(len(full) - len(bare) + 1):
        if full[start:start + len(bare)] == bare:
            return full[:start], full[start + len(bare):]
    raise ExtractionError(
        "cannot place the tokenizer's special tokens around a sentence: "
        f"{bare} does not occur in {full}"
    )


def max_positions(config: Any, tokenizer: Any) -> int | None:
    """Longest input in tokens: the tokenizer's model_max_length or the model's position
    table, whichever is smaller; None for models without a limit (relative positions)."""
    limits = []
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_limit, int) and 0 < tok_limit < _UNBOUNDED:
        limits.append(tok_limit)
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        offset = 2 if config.model_type in ("roberta", "xlm-roberta", "camembert") else 0
        limits.append(positions - offset)  # RoBERTa's table starts after the padding index
    return min(limits) if limits else None
