"""Sharded extraction: shard specs and SLURM array environments, the balanced contiguous split,
and the central promise: N shards merged equal the single-process cache bit for bit (fbank
with frames and failures; a tiny padded transformers model with windowing; Whisper)."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from emoprobe.cache.store import open_cache, read_meta
from emoprobe.cli import main
from emoprobe.errors import ConfigError, ExtractionError
from emoprobe.extract.merge import cache_differences, merge_shards
from emoprobe.extract.runner import run_extraction
from emoprobe.extract.shard import (
    ShardSpec,
    parse_shard,
    shard_from_slurm,
    shard_path,
    split_contiguous,
)
from emoprobe.testing.models import build_model, write_corpus

# ------------------------------------------------------------------------------ shard specs


def test_parse_shard_forms_and_errors() -> None:
    assert parse_shard(None) is None
    assert parse_shard("0/4") == ShardSpec(0, 4)
    assert parse_shard(" 3/4 ") == ShardSpec(3, 4)
    assert ShardSpec(7, 12).label == "shard-07-of-12" and ShardSpec(2, 3).label == "shard-2-of-3"
    assert shard_path("out/wavlm.h5", ShardSpec(1, 3)) == Path("out/wavlm.shard-1-of-3.h5")
    with pytest.raises(ConfigError, match=r"shard 4 of 4 does not exist.*0\.\.3"):
        parse_shard("4/4")
    with pytest.raises(ConfigError, match="at least 1 shard"):
        parse_shard("0/0")
    for bad in ("-1/4",):
        with pytest.raises(ConfigError, match="does not exist"):
            parse_shard(bad)
    for bad in ("3", "a/b", "1/2/3", "slurm/x"):
        with pytest.raises(ConfigError, match="expects K/N"):
            parse_shard(bad)


def test_slurm_array_environment_selects_the_shard() -> None:
    # --array=0-3: task 2 is shard 2 of 4
    env = {"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_COUNT": "4"}
    assert parse_shard("slurm", env) == ShardSpec(2, 4)
    assert parse_shard("", env) == ShardSpec(2, 4)
    # --array=1-8 (1-based): task 1 is shard 0 of 8
    env = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "8"}
    assert shard_from_slurm(env) == ShardSpec(0, 8)
    # --array=0-14:2: task 6 is shard 3 of 8
    env = {"SLURM_ARRAY_TASK_ID": "6", "SLURM_ARRAY_TASK_MIN": "0",
           "SLURM_ARRAY_TASK_STEP": "2", "SLURM_ARRAY_TASK_COUNT": "8"}
    assert shard_from_slurm(env) == ShardSpec(3, 8)
    # no COUNT: derived from MIN, MAX and STEP
    env = {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "2", "SLURM_ARRAY_TASK_MAX": "9"}
    assert shard_from_slurm(env) == ShardSpec(3, 8)
    # resubmitting shards 3 and 5 of 8 (--array=3,5): only slurm/N reads that right
    env = {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "3", "SLURM_ARRAY_TASK_MAX": "5",
           "SLURM_ARRAY_TASK_COUNT": "2"}
    assert parse_shard("slurm/8", env) == ShardSpec(5, 8)
    with pytest.raises(ExtractionError, match="regular position.*slurm/N"):
        shard_from_slurm(env)
    with pytest.raises(ExtractionError, match="not a shard of 4"):
        parse_shard("slurm/4", {"SLURM_ARRAY_TASK_ID": "4"})
    with pytest.raises(ExtractionError, match="SLURM_ARRAY_TASK_ID is not set.*--shard 0/4"):
        parse_shard("slurm", {})
    with pytest.raises(ExtractionError, match="SLURM_ARRAY_TASK_ID='x' is not an integer"):
        parse_shard("slurm", {"SLURM_ARRAY_TASK_ID": "x"})


# ------------------------------------------------------------------------------- the split


def test_split_is_contiguous_complete_and_balanced() -> None:
    rng = np.random.default_rng(0)
    for trial in range(400):
        count = int(rng.integers(1, 30))
        costs = rng.integers(1, 1000, int(rng.integers(count, 300)))
        if trial % 2:  # heavy-tailed batch sizes
            costs = (rng.pareto(1.5, costs.size) * 100 + 1).astype(int)
        owner = split_contiguous(costs.tolist(), count)
        assert owner == split_contiguous(costs.tolist(), count)  # deterministic
        assert owner[0] == 0 and owner[-1] == count - 1
        assert all(b - a in (0, 1) for a, b in pairwise(owner))  # consecutive, none empty
        loads = np.bincount(owner, weights=costs, minlength=count)
        assert np.abs(loads - costs.sum() / count).max() < costs.max()  # within one batch
    assert split_contiguous([5, 5, 5, 5], 2) == [0, 0, 1, 1]
    assert split_contiguous([9, 1, 1, 1], 2) == [0, 1, 1, 1]
    assert split_contiguous([1, 1, 1], 3) == [0, 1, 2]


# ------------------------------------------------------------------ merged == single process


def _extract_all(manifest: Path, model: str, out: Path, n: int, **kw: object) -> tuple[Path,
                                                                                       list[Path]]:
    single = run_extraction(manifest, model, out / "single", progress=False, **kw).path
    shards = [run_extraction(manifest, model, out / "shards", progress=False,
                             shard=ShardSpec(k, n), **kw).path for k in range(n)]
    return single, shards


def test_fbank_shards_merge_to_the_single_process_cache(tmp_path: Path) -> None:
    durations = [0.4, 2.2, 1.1, 3.0, 0.7, 1.9, 2.6, 0.9, 1.4, 2.0, 0.6, 1.7, 2.9, 1.2]
    manifest = write_corpus(tmp_path / "corpus", durations, seed=3)
    wav = tmp_path / "corpus" / "wav"
    (wav / "utt0005.wav").write_bytes(b"RIFF but not really a wave file")  # unreadable header
    import soundfile as sf

    sf.write(wav / "utt0009.wav", np.zeros(200, np.float32), 16000)  # too short for one frame
    kw = {"batch_seconds": 4, "max_seconds": 1.5, "frames": "0", "on_error": "skip"}
    single, shards = _extract_all(manifest, "fbank", tmp_path, 3, **kw)

    indices = [read_meta(p)["shard"]["indices"] for p in shards]
    assert sorted(i for part in indices for i in part) == list(range(len(durations)))
    assert all(part == sorted(part) and part for part in indices)
    info = read_meta(shards[1])["shard"]
    assert (info["index"], info["count"], info["n_utterances"]) == (1, 3, len(durations))
    assert info["fingerprint"] == read_meta(single)["fingerprint"]
    assert read_meta(shards[1])["fingerprint"] != info["fingerprint"]  # the shard's own

    summary = merge_shards(shards, tmp_path / "merged.h5", progress=False)
    assert (summary.total, summary.failed, summary.usable) == (14, 2, 12)
    assert cache_differences(single, summary.path) == []
    with open_cache(summary.path) as c, open_cache(single) as s:
        assert c.failed == s.failed and set(c.failed) == {"utt0005", "utt0009"}
        assert "unreadable" in c.failed["utt0005"] and "too short" in c.failed["utt0009"]
        assert c.frame_layers == [0]
        np.testing.assert_array_equal(c.frames("utt0003", 0), s.frames("utt0003", 0))
        assert c.meta["fingerprint"] == s.meta["fingerprint"]
        assert c.meta["counts"] == s.meta["counts"] and "shard" not in c.meta
        assert [m["shard"] for m in c.meta["merged_from"]] == ["0/3", "1/3", "2/3"]
    # the equality check itself notices a changed byte
    import h5py

    with h5py.File(summary.path, "r+") as f:
        f["pooled"][0, 0, 0] += 1
    assert cache_differences(single, summary.path) == ["dataset pooled: values differ"]


@pytest.mark.parametrize("family", ["wav2vec2-layer", "whisper"])
def test_transformers_shards_merge_bit_for_bit(tmp_path: Path, family: str) -> None:
    """Padded batches of several utterances: the shards re-form the single run's batches, so
    even float rounding that depends on batch-mates comes out the same."""
    model = build_model(family, tmp_path / family, whisper_window_seconds=2)
    rng = np.random.default_rng(1)
    manifest = write_corpus(tmp_path / "corpus", list(rng.uniform(0.4, 3.5, 14)))
    kw = {"batch_seconds": 6, "frames": "-1"}
    if family != "whisper":
        kw["max_seconds"] = 1.6
    single, shards = _extract_all(manifest, str(model), tmp_path, 3, **kw)
    summary = merge_shards(shards, tmp_path / "merged.h5", progress=False)
    assert cache_differences(single, summary.path) == []
    assert read_meta(shards[0])["shard"]["plan"]["padded_row"] == (
        32000 if family == "whisper" else None)


def test_more_shards_than_batches_is_refused(tmp_path: Path) -> None:
    manifest = write_corpus(tmp_path / "corpus", [1.0, 1.2, 0.8])
    with pytest.raises(ExtractionError, match=r"into 4 shards.*in 1 batch\(es\).*at most 1"):
        run_extraction(manifest, "fbank", tmp_path / "out", progress=False,
                       shard=ShardSpec(0, 4))


def test_shard_split_with_other_batch_seconds_is_refused(tmp_path: Path) -> None:
    manifest = write_corpus(tmp_path / "corpus", [1.0, 1.5, 0.8, 2.0, 1.1, 0.6, 1.3, 1.7])
    first = run_extraction(manifest, "fbank", tmp_path / "out", progress=False, batch_seconds=4,
                           shard=ShardSpec(0, 2)).path
    with pytest.raises(ExtractionError, match=r"shard 0/2 of this extraction, split for batches "
                                              r"of 4\.0 s; this run plans batches of 2\.0 s"):
        run_extraction(manifest, "fbank", tmp_path / "out", progress=False, batch_seconds=2,
                       shard=ShardSpec(0, 2))
    again = run_extraction(manifest, "fbank", tmp_path / "out", progress=False, batch_seconds=2,
                           shard=ShardSpec(0, 2), overwrite=True)
    assert again.path == first and again.summary.extracted == len(
        read_meta(first)["shard"]["indices"])


def test_cli_shard_from_slurm_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    manifest = write_corpus(tmp_path / "corpus", [1.0, 1.5, 0.8, 2.0, 1.1, 0.6])
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "4")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "3")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "3")
    args = ["extract", "--manifest", str(manifest), "--model", "fbank", "--out",
            str(tmp_path / "out"), "--batch-seconds", "1", "--no-progress"]
    assert main([*args, "--shard"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "out" / "fbank.shard-1-of-3.h5").exists()
    assert "emoprobe merge" in out and "fbank.shard-*-of-3.h5" in out
    assert not (tmp_path / "out" / "fbank.h5").exists()
    assert main([*args, "--shards", "3"]) == 2  # --shards belongs to --launcher
    assert "--shards go(es) with --launcher" in capsys.readouterr().err
