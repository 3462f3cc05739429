"""Batch planning (length-sorted buckets by total padded audio) and background loading.

An utterance longer than the upstream's window is cut into balanced windows; all windows of
an utterance travel in the same batch, so pooling never spans batches. Upstreams that must
not see padding (group-norm front ends without an attention mask) get batches whose
utterances have exactly the same length.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from math import gcd
from typing import Generic, TypeVar

T = TypeVar("T")


def resampled_length(frames: int, orig_sr: int, target_sr: int) -> int:
    """Samples after polyphase resampling (scipy's resample_poly gives ceil(n * up / down))."""
    if orig_sr == target_sr:
        return int(frames)
    g = gcd(int(orig_sr), int(target_sr))
    up, down = target_sr // g, orig_sr // g
    return -(-int(frames) * up // down)


def window_bounds(n_samples: int, max_samples: int | None) -> list[tuple[int, int]]:
    """Cut [0, n) into ceil(n / max) windows of near-equal length (lengths differ by <= 1).

    Balanced windows avoid a tiny last window with almost no context."""
    if max_samples is None or n_samples <= max_samples:
        return [(0, n_samples)]
    k = math.ceil(n_samples / max_samples)
    edges = [round(i * n_samples / k) for i in range(k + 1)]
    return [(edges[i], edges[i + 1]) for i in range(k)]


@dataclass(frozen=True)
class Item:
    """One utterance to extract: its manifest index and expected length at the model's rate."""

    index: int
    n_samples: int


def plan_batches(
    items: Sequence[Item],
    *,
    budget_samples: float,
    window: int | None = None,
    padded_row: int | None = None,
    equal_length: bool = False,
) -> list[list[Item]]:
    """Group utterances into batches, longest first, so that a batch's padded size
    (rows x longest row, or rows x `padded_row` for fixed-size inputs such as Whisper's)
    stays within `budget_samples`. A batch holds at least one utterance."""
    ordered = sorted(items, key=lambda it: (-it.n_samples, it.index))
    batches: list[list[Item]] = []
    current: list[Item] = []
    rows = 0
    row_len = 0
    for it in ordered:
        bounds = window_bounds(it.n_samples, window)
        n_rows = len(bounds)
        longest = padded_row or max(b - a for a, b in bounds)
        if current:
            new_len = max(row_len, longest)
            fits = (rows + n_rows) * new_len <= budget_samples
            same = not equal_length or it.n_samples == current[0].n_samples
            if not (fits and same):
                batches.append(current)
                current, rows, row_len = [], 0, 0
        current.append(it)
        rows += n_rows
        row_len = max(row_len, longest)
    if current:
        batches.append(current)
    return batches


class Prefetcher(Generic[T]):
    """Run `load(batch)` for upcoming batches in background threads; yield results in order.

    At most `depth` batches are loaded ahead, so memory stays bounded whatever the corpus
    size. `wait_seconds` accumulates the time the consumer spent blocked on a batch that was
    not ready yet (the model waiting for audio)."""

    def __init__(
        self,
        batches: Sequence[Sequence[Item]],
        load: Callable[[Sequence[Item]], T],
        *,
        workers: int = 1,
        depth: int | None = None,
    ) -> None:
        self.batches = batches
        self.load = load
        self.workers = max(1, int(workers))
        self.depth = max(2, depth if depth is not None else 2 * self.workers)
        self.wait_seconds = 0.0
        self._pool: ThreadPoolExecutor | None = None

    def __iter__(self) -> Iterator[tuple[Sequence[Item], T]]:
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="emoprobe-load")
        self._pool = pool
        pending: deque[tuple[Sequence[Item], Future[T]]] = deque()
        it = iter(self.batches)
        try:
            for batch in it:
                pending.append((batch, pool.submit(self.load, batch)))
                if len(pending) >= self.depth:
                    break
            while pending:
                batch, fut = pending.popleft()
                nxt = next(it, None)
                if nxt is not None:
                    pending.append((nxt, pool.submit(self.load, nxt)))
                start = time.perf_counter()
                result = fut.result()
                self.wait_seconds += time.perf_counter() - start
                yield batch, result
        finally:
            for _, fut in pending:
                fut.cancel()
            pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
