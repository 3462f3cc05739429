"""Finishing a cache in place: a SIGKILL at every step of finishing leaves a cache that is
either complete or resumes to complete, and equals an uninterrupted run."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from emoprobe.cache.store import CacheWriter, FrameLayout, open_cache

# The children import this module for `build`: the extraction stage (torch) is imported by
# the tests only, so that a child starts in a fraction of a second.

N, LAYERS, DIM = 40, 3, 8
COUNTS = np.arange(N) % 5 + 1

# Armed once finishing starts: every dataset write, flush and fsync counts as a step, and
# the process dies by SIGKILL (no cleanup of any kind) at step k.
_ARM = textwrap.dedent("""
    import os, signal, sys
    import h5py
    from emoprobe.cache import store

    k, seen, armed = int(sys.argv[1]), [0], [False]

    def step(fn):
        def wrapped(*args, **kwargs):
            if armed[0]:
                seen[0] += 1
                if seen[0] == k:
                    os.kill(os.getpid(), signal.SIGKILL)
            return fn(*args, **kwargs)
        return wrapped

    h5py.Dataset.__setitem__ = step(h5py.Dataset.__setitem__)
    h5py.File.flush = step(h5py.File.flush)
    os.fsync = step(os.fsync)
    finalize = store.CacheWriter.finalize

    def arming(self, **kw):
        armed[0] = True
        return finalize(self, **kw)

    store.CacheWriter.finalize = arming
""")

_WRITE = _ARM + textwrap.dedent("""
    sys.path.insert(0, sys.argv[3])
    from test_cache_finish import build
    build(sys.argv[2])
    print("steps", seen[0])
""")


def build(path: str) -> None:
    """Create, fill and finish a cache with frames (the uninterrupted run)."""
    recs = [{"id": f"u{i}", "path": f"/a/{i}.wav", "label": "ab"[i % 2]} for i in range(N)]
    layout = FrameLayout((0, 2), COUNTS, DIM)
    w = CacheWriter.create(path, recs, n_layers=LAYERS, dim=DIM, frames=layout,
                           audio=[[16000, 100 * i + 50, 1] for i in range(N)])
    idx = np.arange(N)
    pooled = np.stack([np.full((N, DIM), layer, np.float32) + idx[:, None] for layer in
                       range(LAYERS)])
    frames = {layer: [np.full((c, DIM), layer + i, np.float32) for i, c in enumerate(COUNTS)]
              for layer in (0, 2)}
    w.write_rows(idx, pooled, COUNTS, idx * 0.1, frames=frames)
    w.finalize(meta={"last_run": {"extracted": N}})


def _child(code: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.mark.slow
def test_sigkill_at_every_step_of_finishing(tmp_path: Path) -> None:
    from emoprobe.extract.merge import cache_differences

    reference = tmp_path / "ref.h5"
    build(str(reference))
    outcomes = []
    for k in range(1, 30):
        cache = tmp_path / f"k{k}" / "c.h5"
        cache.parent.mkdir()
        proc = _child(_WRITE, str(k), str(cache), str(Path(__file__).parent))
        if proc.returncode == 0:  # k is past the last step: finishing ran to its end
            assert "steps" in proc.stdout and k > 4, proc.stderr
            break
        assert proc.returncode == -9, proc.stderr
        with open_cache(cache, allow_incomplete=True) as c:
            complete = c.complete
            assert c.done.all()  # every row was on disk before finishing began
        outcomes.append(complete)
        if not complete:  # resuming finds every row done and only finishes
            w = CacheWriter(cache)
            assert w.pending().size == 0
            w.finalize(meta={"last_run": {"extracted": N}})
        assert cache_differences(reference, cache) == []
        assert [p.name for p in cache.parent.iterdir()] == ["c.h5"]  # no copy, no temp file
    else:
        pytest.fail("finishing never completed")
    assert False in outcomes and True in outcomes  # killed before and after the flag


@pytest.mark.slow
def test_extraction_killed_while_finishing_resumes_to_the_same_cache(tmp_path: Path) -> None:
    from emoprobe.extract.merge import cache_differences
    from emoprobe.extract.runner import run_extraction
    from emoprobe.testing.models import write_corpus

    manifest = write_corpus(tmp_path / "c", [0.4, 0.9, 0.6, 1.3, 0.7])
    kw = {"frames": "0", "batch_seconds": 2.0, "progress": False}
    reference = run_extraction(manifest, "fbank", tmp_path / "ref", **kw).path
    code = _ARM + f"from emoprobe.extract.runner import run_extraction\n" \
                  f"run_extraction(sys.argv[2], 'fbank', sys.argv[3], **{kw!r})\n"
    proc = _child(code, "2", str(manifest), str(tmp_path / "out"))
    assert proc.returncode == -9, proc.stderr
    with pytest.raises(Exception, match="incomplete"):
        open_cache(tmp_path / "out" / "fbank.h5")
    again = run_extraction(manifest, "fbank", tmp_path / "out", **kw).summary
    assert again.extracted == 0 and again.reused == 5 and again.complete
    assert cache_differences(reference, tmp_path / "out" / "fbank.h5") == []
