"""Batch planning, windows, resampled lengths, background prefetching, settings parsing."""

from __future__ import annotations

import itertools
import threading
import time

import numpy as np
import pytest
from scipy.signal import resample_poly

from emoprobe.cache.fingerprint import audio_part, compute_fingerprint, describe_mismatch
from emoprobe.errors import ConfigError
from emoprobe.extract.batching import (
    Item,
    Prefetcher,
    plan_batches,
    resampled_length,
    window_bounds,
)
from emoprobe.extract.runner import cache_name
from emoprobe.extract.settings import ExtractSettings
from emoprobe.layers import parse_layer_spec


@pytest.mark.parametrize("orig", [8000, 16000, 22050, 44100, 48000])
@pytest.mark.parametrize("n", [1, 99, 44100, 88200, 132456])
def test_resampled_length_matches_scipy(orig: int, n: int) -> None:
    from math import gcd

    g = gcd(orig, 16000)
    out = resample_poly(np.zeros(n, np.float32), 16000 // g, orig // g)
    assert resampled_length(n, orig, 16000) == len(out)


def test_window_bounds_are_balanced_and_cover_everything() -> None:
    assert window_bounds(100, None) == [(0, 100)]
    assert window_bounds(100, 100) == [(0, 100)]
    bounds = window_bounds(481_000, 480_000)
    assert bounds == [(0, 240_500), (240_500, 481_000)]
    for n, w in [(1001, 100), (12345, 1000), (7, 2)]:
        b = window_bounds(n, w)
        assert b[0][0] == 0 and b[-1][1] == n and len(b) == -(-n // w)
        assert all(x[1] == y[0] for x, y in itertools.pairwise(b))
        lengths = [y - x for x, y in b]
        assert max(lengths) <= w and max(lengths) - min(lengths) <= 1


def test_plan_batches_budget_order_and_equal_lengths() -> None:
    items = [Item(i, n) for i, n in enumerate([100, 300, 200, 300, 100, 250])]
    batches = plan_batches(items, budget_samples=600)
    assert [[it.index for it in b] for b in batches] == [[1, 3], [5, 2], [0, 4]]
    for b in batches:  # rows x longest row within budget
        assert len(b) * max(it.n_samples for it in b) <= 600
    equal = plan_batches(items, budget_samples=10_000, equal_length=True)
    assert [[it.n_samples for it in b] for b in equal] == [[300, 300], [250], [200], [100, 100]]
    huge = plan_batches([Item(0, 5000)], budget_samples=10)
    assert len(huge) == 1  # an utterance over budget still gets its own batch
    # Fixed-size rows (Whisper): each window costs the full padded row whatever its length;
    # a 1000-sample utterance with a 400-sample window is 3 rows.
    fixed = plan_batches([Item(0, 1000), Item(1, 50), Item(2, 60)], budget_samples=1600,
                         window=400, padded_row=400)
    assert [[it.index for it in b] for b in fixed] == [[0, 2], [1]]


def test_prefetcher_keeps_order_bounds_memory_and_counts_waits() -> None:
    batches = [[Item(i, 1)] for i in range(12)]
    active = []
    running = 0
    lock = threading.Lock()

    def load(batch):
        nonlocal running
        with lock:
            running += 1
            active.append(running)
        time.sleep(0.01)
        with lock:
            running -= 1
        return batch[0].index * 10

    pre = Prefetcher(batches, load, workers=2, depth=3)
    out = [(b[0].index, r) for b, r in pre]
    assert out == [(i, i * 10) for i in range(12)]
    assert max(active) <= 2 and pre.wait_seconds > 0


def test_prefetcher_propagates_errors_and_stops() -> None:
    def load(batch):
        if batch[0].index == 2:
            raise ValueError("bad batch 2")
        return batch[0].index

    seen = []
    with pytest.raises(ValueError, match="bad batch 2"):
        for _, r in Prefetcher([[Item(i, 1)] for i in range(6)], load):
            seen.append(r)
    assert seen == [0, 1]


def test_settings_validation_and_layers() -> None:
    assert parse_layer_spec("0, 6,-1") == (0, 6, -1) and parse_layer_spec("ALL") == "all"
    assert parse_layer_spec(None) == () and parse_layer_spec([1, 2]) == (1, 2)
    assert parse_layer_spec("5-8,-1") == (5, 6, 7, 8, -1)
    for bad in ("first", "8-5", "1,,x", "3-"):
        with pytest.raises(ConfigError, match="--frames: bad layer spec"):
            ExtractSettings(frames=bad)
    assert ExtractSettings(frames="5-7").frame_layers(13) == (5, 6, 7)
    s = ExtractSettings(frames="0,-1")
    assert s.frame_layers(13) == (0, 12)
    assert ExtractSettings(frames="all").frame_layers(3) == (0, 1, 2)
    with pytest.raises(ConfigError, match="--frames: layer 13 does not exist.*0..12"):
        ExtractSettings(frames="13").frame_layers(13)
    for bad in ({"dtype": "int8"}, {"device": "tpu"}, {"on_error": "ignore"},
                {"batch_seconds": 0}, {"max_seconds": -1}, {"workers": 0}):
        with pytest.raises(ConfigError):
            ExtractSettings(**bad)
    assert ExtractSettings().resolved_batch_seconds("cpu") == 8.0
    assert ExtractSettings(batch_seconds=5).resolved_batch_seconds("cuda") == 5.0


def test_fingerprint_parts_and_names() -> None:
    # rows are identified by id and audio (sample rate, samples, channels), in any order
    audio = audio_part(["a", "b"], [[16000, 100, 1], [16000, 50, 1]])
    assert audio == audio_part(["b", "a"], [[16000, 50, 1], [16000, 100, 1]])
    fp, parts = compute_fingerprint(audio, {"kind": "m"}, {"dtype": "float32"})
    fp2, parts2 = compute_fingerprint(audio, {"kind": "m"}, {"dtype": "bfloat16"})
    other = audio_part(["a", "b"], [[16000, 101, 1], [16000, 50, 1]])
    fp3, parts3 = compute_fingerprint(other, {"kind": "m"}, {"dtype": "float32"})
    assert len({fp, fp2, fp3}) == 3
    assert describe_mismatch(parts, parts2) == ["settings"]
    assert describe_mismatch(parts, parts3) == ["audio"]
    assert compute_fingerprint(audio, {"kind": "m"}, {"dtype": "float32"})[0] == fp
    assert cache_name("facebook/wav2vec2-base") == "facebook--wav2vec2-base"
    assert cache_name("org/model", "v1.0") == "org--model@v1.0"
    assert cache_name("fbank") == "fbank"
