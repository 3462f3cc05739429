"""Transformers audio encoders: wav2vec2, HuBERT, WavLM, data2vec-audio (raw-waveform input)
and Whisper (log-mel input, encoder only), loaded with AutoFeatureExtractor + AutoModel from a
hub id or a local folder.

Valid frames come from the model's own `_get_feat_extract_output_lengths`. Utterances of
different lengths share a forward pass only in a way checked at load time to give what each
gives alone (within 1e-4), tried in this order:

- `padded`: padded waveforms with an attention mask, where the feature extractor returns one
  and the convolutional front end has no group norm;
- `frame-masked`: the front end per utterance, unpadded, then the rest of the model as one
  batch with the frame mask (framemask.py); this is what batches group-norm checkpoints
  such as wav2vec2-base, HuBERT-base and WavLM-base;
- `equal-length`: otherwise only inputs of exactly equal length share a forward pass.

The cache records the batching used and the check's findings. Whisper always sees its fixed
window (30 s for the released checkpoints), padded by its feature extractor; only encoder
frames covering real audio are pooled.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emoprobe.cache.store import LAYER_CONVENTION
from emoprobe.errors import ExtractionError
from emoprobe.extract.pooling import RowStats, masked_stats
from emoprobe.extract.upstream.base import Prepared, Upstream
from emoprobe.extract.upstream.framemask import frame_masked_forward, supports_frame_masking

log = logging.getLogger(__name__)

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".msgpack", ".h5")
_CONFIG_FILES = ("config.json", "preprocessor_config.json")
_SNAPSHOT = re.compile(r"[\\/]snapshots[\\/]([0-9a-f]{40})[\\/]")
PADDED, FRAME_MASKED, EQUAL_LENGTH = "padded", "frame-masked", "equal-length"


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No weight-loading progress bars or info chatter while loading a checkpoint."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    level = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def local_content_hash(folder: str | os.PathLike[str], extra: Sequence[str] = ()) -> str:
    """`local-sha256:<hex>` over the config files, the files named in `extra` (a text
    model's tokenizer files) and every weight file (names and bytes).

    Local folders have no commit hash; hashing the weights' bytes makes two different
    checkpoints with the same file sizes distinct (about 1 s per GB)."""
    folder = Path(folder)
    h = hashlib.sha256()
    files = sorted(
        p for p in folder.iterdir()
        if p.is_file() and (p.name in _CONFIG_FILES or p.name in extra
                            or p.name.endswith(_WEIGHT_SUFFIXES))
    )
    for p in files:
        h.update(p.name.encode("utf-8") + b"\0")
        with open(p, "rb") as fh:
            for block in iter(lambda fh=fh: fh.read(1 << 22), b""):
                h.update(block)
        h.update(b"\0")
    return "local-sha256:" + h.hexdigest()


def hub_commit_hash(source: str, revision: str | None) -> str | None:
    """Commit hash of a hub checkpoint as resolved in the local hub cache, when known."""
    try:
        from transformers.utils import cached_file

        resolved = cached_file(source, "config.json", revision=revision)
    except Exception:  # offline, gated, renamed: the hash is then simply unknown
        return None
    match = _SNAPSHOT.search(str(resolved)) if resolved else None
    return match.group(1) if match else None


class HFUpstream(Upstream):
    """A transformers encoder; all L+1 hidden states, layer 0 = embedding output."""

    kind = "transformers"
    layer_convention = LAYER_CONVENTION

    def __init__(
        self,
        source: str,
        *,
        revision: str | None = None,
        device: str = "cpu",
        dtype: str = "float32",
    ) -> None:
        from transformers import AutoFeatureExtractor

        source, self.feature_extractor, model = self._load(source, revision, device, dtype,
                                                           AutoFeatureExtractor)
        fe = self.feature_extractor
        self.sample_rate = int(fe.sampling_rate)
        self.return_attention_mask = bool(getattr(fe, "return_attention_mask", False))
        if self.model_type == "whisper":
            self._init_whisper(model)
        else:
            self._init_waveform_encoder(model)
        self.n_layers = self.n_blocks + 1
        self.model.eval()  # LayerDrop and dropout off: always L+1 hidden states, deterministic
        self.model.to(device=device)
        if self.model_type != "whisper":
            self._choose_batching()
        self.model.to(dtype=self.torch_dtype)
        self.commit_hash = local_content_hash(source) if self.is_local else hub_commit_hash(
            source, revision
        )

    def _load(self, source: str, revision: str | None, device: str, dtype: str,
              processor: Any) -> tuple[str, Any, Any]:
        """Set the checkpoint's attributes (name, revision, device, dtype, is_local, config,
        model_type) and return (expanded source, processor, model), loaded quietly with
        AutoConfig, `processor` (AutoFeatureExtractor, AutoTokenizer) and AutoModel; a
        failure is an ExtractionError naming the source."""
        from transformers import AutoConfig, AutoModel

        self.name = str(source)
        self.revision = revision
        self.device = device
        self.dtype = dtype
        self.torch_dtype = TORCH_DTYPES[dtype]
        source = os.path.expanduser(str(source))
        self.is_local = os.path.isdir(source)
        if not self.is_local and source.startswith(("/", ".")):
            raise ExtractionError(f"{source}: no such model folder")
        kwargs = {} if self.is_local or revision is None else {"revision": revision}
        try:
            with _quiet_transformers():
                self.config = AutoConfig.from_pretrained(source, **kwargs)
                loaded = processor.from_pretrained(source, **kwargs)
                model = AutoModel.from_pretrained(source, **kwargs)
        except Exception as exc:
            raise ExtractionError(
                f"cannot load model {source!r} with AutoConfig/{processor.__name__}/AutoModel "
                f"({type(exc).__name__}: {exc})"
            ) from exc
        self.model_type = str(self.config.model_type)
        return source, loaded, model

    def _init_whisper(self, model: Any) -> None:
        fe = self.feature_extractor
        encoder = model.get_encoder() if hasattr(model, "get_encoder") else model.encoder
        self.model = encoder
        self.input_name = "input_features"
        self.n_blocks = int(self.config.encoder_layers)
        self.dim = int(self.config.d_model)
        self.hop = int(fe.hop_length)
        self.max_positions = int(self.config.max_source_positions)
        self.max_samples = int(fe.n_samples)
        self.padded_row = int(fe.n_samples)
        self.pads = True  # every window is padded to the same size anyway
        self.batching = PADDED
        self.pass_mask = False  # the encoder takes no mask
        self.padding_checked: str | dict[str, str] = "not needed"
        expected = self.max_positions * 2 * self.hop
        if self.max_samples != expected:
            raise ExtractionError(
                f"{self.name}: feature extractor window of {self.max_samples} samples does not "
                f"match the encoder's {self.max_positions} positions ({expected} samples)"
            )

    def _init_waveform_encoder(self, model: Any) -> None:
        if getattr(model, "main_input_name", None) != "input_values" or not hasattr(
            model, "_get_feat_extract_output_lengths"
        ):
            raise ExtractionError(
                f"{self.name}: model type {self.model_type!r} is not a supported audio encoder "
                "(supported: wav2vec2, hubert, wavlm, data2vec-audio and other raw-waveform "
                "encoders with an output-length formula, whisper, and w2v-BERT 2.0 and other "
                "encoders of feature-extractor input_features)"
            )
        self.model = model
        self.input_name = "input_values"
        self.n_blocks = int(self.config.num_hidden_layers)
        self.dim = int(self.config.hidden_size)
        self.group_norm = getattr(self.config, "feat_extract_norm", "layer") == "group"
        self.pass_mask = self.return_attention_mask
        self.batching_candidates = []
        if self.return_attention_mask and not self.group_norm:
            self.batching_candidates.append(PADDED)
        if supports_frame_masking(model):
            self.batching_candidates.append(FRAME_MASKED)
        self.batching = EQUAL_LENGTH
        self.pads = False
        self.padding_checked = {}

    def _choose_batching(self) -> None:
        """The first candidate batching that equals one at a time; else equal lengths.
        Encoders set up by a subclass hook that only sets `pads` try padded batches then."""
        candidates = getattr(self, "batching_candidates", None)
        if candidates is None:
            candidates = [PADDED] if self.pads else []
        self.batching = EQUAL_LENGTH  # the one-at-a-time reference of every check
        checks: dict[str, str] = {}
        for mode in candidates:  # padded: the subclass's own way of preparing a batch
            exact = self.batching_is_exact(None if mode == PADDED else mode)
            checks[mode] = "equals one at a time" if exact else "changes outputs"
            if exact:
                self.batching = mode
                break
        else:
            log.info("%s: no batching of different lengths equals one at a time (%s); "
                     "batching equal lengths only", self.name, checks or "none applies")
        self.pads = self.batching != EQUAL_LENGTH
        self.padding_checked = checks

    def padding_is_harmless(self, tolerance: float = 1e-4) -> bool:
        """Whether one padded batch gives what each input gives alone."""
        return self.batching_is_exact(None, tolerance)

    def batching_is_exact(self, mode: str | None, tolerance: float = 1e-4) -> bool:
        """Run two inputs of different lengths alone (the model's own forward) and as one
        batch in `mode` (None: padded; float32, before any cast) and compare pooled vectors.
        Some mask-taking models still leak padding into valid frames (data2vec-audio's
        stacked positional convolutions, for one); they are detected here instead of
        trusted from their config."""
        waves = self.padding_probe()
        alone = [self._pooled_once([w]) for w in waves]
        together = self._pooled_once(waves, mode)
        for i, single in enumerate(alone):
            scale = max(1.0, float(np.abs(single).max()))
            if float(np.abs(together[:, i] - single[:, 0]).max()) > tolerance * scale:
                return False
        return True

    def padding_probe(self) -> list[np.ndarray]:
        """Two inputs of different lengths for `batching_is_exact`."""
        rng = np.random.default_rng(0)
        return [0.1 * rng.standard_normal(n).astype(np.float32)
                for n in (self.sample_rate, int(1.37 * self.sample_rate))]

    def _pooled_once(self, waves: Sequence[np.ndarray], mode: str | None = None) -> np.ndarray:
        rows = list(range(len(waves)))
        prepared = (self._prepare_group(waves, rows) if mode is None
                    else self._prepare_group(waves, rows, mode))
        stats = self.run(prepared)
        return stats.sums / stats.count[None, :, None]

    # -------------------------------------------------------------------------- contract

    def valid_frames(self, n_samples: int) -> int:
        if n_samples <= 0:
            return 0
        if self.model_type == "whisper":
            mel = -(-int(n_samples) // self.hop)
            out = int(self.model._get_feat_extract_output_lengths(torch.tensor(mel)))
            return min(out, self.max_positions)
        out = int(self.model._get_feat_extract_output_lengths(torch.tensor(int(n_samples))))
        return max(out, 0)

    def prepare(self, waves: Sequence[np.ndarray]) -> list[Prepared]:
        return [self._prepare_group([waves[r] for r in rows], rows)
                for rows in self.share_groups(waves)]

    def _prepare_group(self, waves: Sequence[np.ndarray], rows: list[int],
                       mode: str | None = None) -> Prepared:
        fe = self.feature_extractor
        lengths = torch.tensor([self.valid_frames(len(w)) for w in waves], dtype=torch.long)
        if (mode or self.batching) == FRAME_MASKED:  # each input exactly as when alone
            singles = [fe([w], sampling_rate=self.sample_rate, return_tensors="pt",
                          return_attention_mask=False)["input_values"][0] for w in waves]
            return Prepared(rows=rows, inputs={"input_values": [self.pin(x) for x in singles]},
                            lengths=lengths, extra={"batching": FRAME_MASKED})
        if self.model_type == "whisper":
            feats = fe(list(waves), sampling_rate=self.sample_rate, return_tensors="pt",
                       padding="max_length", return_attention_mask=False)
            inputs = {"input_features": feats["input_features"]}
        else:
            feats = fe(list(waves), sampling_rate=self.sample_rate, return_tensors="pt",
                       padding=True, return_attention_mask=self.return_attention_mask)
            inputs = {"input_values": feats["input_values"]}
            if self.pass_mask:
                inputs["attention_mask"] = feats["attention_mask"]
        inputs = {k: self.pin(v) for k, v in inputs.items()}
        return Prepared(rows=rows, inputs=inputs, lengths=lengths)

    def _on_device(self, value: torch.Tensor) -> torch.Tensor:
        value = value.to(self.device, non_blocking=True)
        return value.to(self.model.dtype) if value.is_floating_point() else value

    def run(self, prepared: Prepared, frame_layers: Sequence[int] = ()) -> RowStats:
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*mismatched key_padding_mask.*")
            if prepared.extra.get("batching") == FRAME_MASKED:
                waves = [self._on_device(w) for w in prepared.inputs["input_values"]]
                out = frame_masked_forward(self.model, waves, output_hidden_states=True)
            else:
                inputs = {k: self._on_device(v) for k, v in prepared.inputs.items()}
                out = self.model(**inputs, output_hidden_states=True)
        hidden = out.hidden_states
        if hidden is None or len(hidden) != self.n_layers:
            got = 0 if hidden is None else len(hidden)
            raise ExtractionError(
                f"{self.name}: the model returned {got} hidden states, expected "
                f"{self.n_layers} ({self.n_blocks} blocks + embedding output)"
            )
        return masked_stats(hidden, prepared.lengths, frame_layers=frame_layers)

    def identity(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "source": "local" if self.is_local else self.name,
            "revision": None if self.is_local else self.revision,
            "commit_hash": self.commit_hash,
            "model_type": self.model_type,
            "n_layers": self.n_layers,
            "dim": self.dim,
            "sample_rate": self.sample_rate,
        }

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(
            revision=self.revision,
            commit_hash=self.commit_hash,
            model_path=os.path.abspath(self.name) if self.is_local else None,
            n_blocks=self.n_blocks,
            feat_extract_norm=getattr(self.config, "feat_extract_norm", None),
            attention_mask=self.pass_mask,
            batching=getattr(self, "batching", PADDED if self.pads else EQUAL_LENGTH),
            padding_check=getattr(self, "padding_checked", None),
        )
        return d

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]
