"""The cache format: round trips, refusal of incomplete or foreign files, incremental writes
in any order, and crash safety of the writer under SIGKILL at random instants."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from emoprobe.cache.store import (
    FORMAT_VERSION,
    CacheWriter,
    FrameLayout,
    frame_dataset_name,
    open_cache,
    read_meta,
    write_cache,
)
from emoprobe.errors import CacheError

L, D = 4, 16


def records(n: int) -> list[dict]:
    return [{"id": f"u{i:05d}", "path": f"/corpus/u{i}.wav", "label": "ab"[i % 2],
             "speaker": f"s{i % 3}"} for i in range(n)]


def expected_rows(idx: np.ndarray, layers: int = L, dim: int = D) -> np.ndarray:
    """Deterministic row values: a row's contents identify (layer, utterance)."""
    idx = np.asarray(idx)
    layer = np.arange(layers)[:, None, None]
    col = np.arange(dim)[None, None, :]
    return (layer * 1000 + idx[None, :, None] + col / 100).astype(np.float32)


def test_write_cache_round_trip(tmp_path: Path) -> None:
    recs = records(30)
    pooled = expected_rows(np.arange(30))
    path = write_cache(tmp_path / "c.h5", pooled, recs,
                       meta={"model": "synthetic", "settings": {"seed": 3}, "note": None},
                       n_frames=np.arange(30) + 5, duration=np.arange(30) * 0.5,
                       failed={"u00007": "corrupt wav"})
    with open_cache(path) as c:
        assert c.complete and c.ids == [r["id"] for r in recs]
        assert c.records == recs and c.labels == [r["label"] for r in recs]
        assert (c.n_layers, c.dim) == (L, D)
        assert c.failed == {"u00007": "corrupt wav"}
        assert c.usable.sum() == 29 and not c.usable[7] and c.done.all()
        for i in range(L):
            np.testing.assert_array_equal(c.layer(i)[c.usable], pooled[i][c.usable])
        assert np.isnan(c.layer(0)[7]).all()  # failed rows are NaN, never zeros
        np.testing.assert_array_equal(c.layers([3, 1]), c.layers()[[3, 1]])
        np.testing.assert_array_equal(c.layer(-1), c.layer(L - 1))
        assert c.n_frames[3] == 8 and c.duration[4] == 2.0
        assert c.meta["settings"] == {"seed": 3} and c.meta["note"] is None
        assert c.meta["format"] == "emoprobe-cache" and c.meta["format_version"] == FORMAT_VERSION
        assert len(c.fingerprint) == 64 and c.meta["complete"] is True
        with pytest.raises(CacheError, match="no layer 4"):
            c.layer(4)


def test_pooled_layout_is_contiguous_and_preallocated(tmp_path: Path) -> None:
    """One layer of all utterances is one sequential read; nothing is allocated later."""
    w = CacheWriter.create(tmp_path / "c.h5", records(50), n_layers=L, dim=D)
    w.close()
    with h5py.File(tmp_path / "c.h5", "r") as f:
        ds = f["pooled"]
        assert ds.chunks is None and ds.compression is None
        assert ds.id.get_storage_size() == L * 50 * D * 4
        for name in ("done", "failed", "failure_reason", "n_frames", "duration"):
            assert f[name].id.get_storage_size() > 0, name


def test_incremental_rows_in_any_order_and_incomplete_refusal(tmp_path: Path) -> None:
    recs = records(40)
    w = CacheWriter.create(tmp_path / "c.h5", recs, n_layers=L, dim=D, meta={"model": "m"})
    idx = np.array([31, 2, 17, 5])
    w.write_rows(idx, expected_rows(idx), [1, 2, 3, 4], [0.1, 0.2, 0.3, 0.4])
    w.mark_failed({9: "unreadable audio: x.wav"})
    w.close()
    with pytest.raises(CacheError, match=r"incomplete \(5 of 40 utterances done\)"):
        open_cache(tmp_path / "c.h5")
    with open_cache(tmp_path / "c.h5", allow_incomplete=True) as c:
        assert not c.complete
        assert sorted(np.flatnonzero(c.done)) == [2, 5, 9, 17, 31]
        assert sorted(np.flatnonzero(c.usable)) == [2, 5, 17, 31]
        np.testing.assert_array_equal(c.layer(2)[idx], expected_rows(idx)[2])
        assert c.n_frames[31] == 1 and c.n_frames[5] == 4
        assert c.failed == {"u00009": "unreadable audio: x.wav"}
    w = CacheWriter(tmp_path / "c.h5")
    assert 9 in w.pending() and 2 not in w.pending()  # failures are retried on resume
    w.write_rows([9], expected_rows([9]), [7], [1.0])  # a retried failure that succeeds
    assert not w.failed[9] and w.failure_reasons() == {}
    with pytest.raises(CacheError, match="not done yet"):
        w.finalize()


def test_writer_refuses_nan_inf_and_bad_shapes(tmp_path: Path) -> None:
    w = CacheWriter.create(tmp_path / "c.h5", records(5), n_layers=L, dim=D)
    rows = expected_rows([1, 3])
    rows[2, 1, 4] = np.inf
    with pytest.raises(CacheError, match="NaN or Inf for utterance.*u00003"):
        w.write_rows([1, 3], rows, [1, 1], [1.0, 1.0])
    with pytest.raises(CacheError, match="shape"):
        w.write_rows([1], expected_rows([1, 3]), [1], [1.0])
    assert not w.done.any()
    w.close()


def test_foreign_and_future_files_are_refused(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(CacheError, match="not an emoprobe cache"):
        open_cache(tmp_path / "other.h5")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(CacheError, match="not a readable HDF5"):
        open_cache(tmp_path / "text.h5")
    with pytest.raises(CacheError, match="no such cache"):
        open_cache(tmp_path / "missing.h5")
    path = write_cache(tmp_path / "c.h5", expected_rows(np.arange(3)), records(3))
    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(CacheError, match=f"format version {FORMAT_VERSION + 1}"):
        open_cache(path)


def test_write_cache_validates_inputs(tmp_path: Path) -> None:
    with pytest.raises(CacheError, match="duplicate utterance id 'u00001'"):
        write_cache(tmp_path / "c.h5", expected_rows(np.arange(3)), records(2) + records(2)[1:])
    with pytest.raises(CacheError, match=r"pooled must be \(layers, 3 utterances"):
        write_cache(tmp_path / "c.h5", expected_rows(np.arange(4)), records(3))
    with pytest.raises(CacheError, match="not in the records"):
        write_cache(tmp_path / "c.h5", expected_rows(np.arange(3)), records(3),
                    failed={"nope": "x"})


def test_frames_are_written_in_place_and_finalize_never_copies(tmp_path: Path) -> None:
    recs = records(3)
    recs[1]["id"] = "dir/with%slash"
    layout = FrameLayout((0, 3), np.array([2, 3, 4]), D)
    w = CacheWriter.create(tmp_path / "c.h5", recs, n_layers=L, dim=D, frames=layout)
    inode = os.stat(tmp_path / "c.h5").st_ino
    frames = {layer: [np.full((i + 2, D), i + layer, np.float32) for i in range(3)]
              for layer in (0, 3)}
    with pytest.raises(CacheError, match=r"'u00000' has frames of shape \(5, 16\)"):
        w.write_rows([0], expected_rows([0]), [2], [1],
                     frames={0: [np.zeros((5, D))], 3: [np.zeros((5, D))]})
    w.write_rows([0, 1, 2], expected_rows([0, 1, 2]), [2, 3, 4], [1, 1, 1], frames=frames)
    w.finalize(meta={"last_run": {"extracted": 3}})
    assert os.stat(tmp_path / "c.h5").st_ino == inode  # finished in place, not replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.h5"]
    with open_cache(tmp_path / "c.h5") as c:
        assert c.frame_layers == [0, 3] and c.meta["last_run"] == {"extracted": 3}
        np.testing.assert_array_equal(c.frames("dir/with%slash", 3), np.full((3, D), 4))
        with pytest.raises(CacheError, match="no frames for utterance 'u00000' in layer 1"):
            c.frames("u00000", 1)
    assert frame_dataset_name("a/b%c") == "a%2Fb%25c"
    assert read_meta(tmp_path / "c.h5")["complete"] is True


_CHILD = """
import sys, numpy as np
sys.path.insert(0, {tests!r})
from test_cache import expected_rows
from emoprobe.cache.store import CacheWriter
w = CacheWriter({path!r})
order = np.random.default_rng({seed}).permutation(w.pending())
print("ready", flush=True)
for k in range(0, len(order), 7):
    idx = order[k:k + 7]
    w.write_rows(idx, expected_rows(idx, {layers}, {dim}), idx + 1, idx * 0.5)
    if k % 3 == 0:
        w.mark_failed({{int(idx[0]): "reason %d" % idx[0]}})
print("finished", flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_writer_survives_sigkill_at_random_instants(tmp_path: Path, seed: int) -> None:
    """Kill a writing process at a random moment; the file must open, every row marked done
    must hold its data, and resuming must finish to the same file as an uninterrupted run."""
    n, layers, dim = 3000, 3, 64
    path = tmp_path / "c.h5"
    CacheWriter.create(path, records(n), n_layers=layers, dim=dim).close()
    code = _CHILD.format(tests=str(Path(__file__).parent), path=str(path), seed=seed,
                         layers=layers, dim=dim)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    time.sleep(np.random.default_rng(seed).uniform(0.02, 0.3))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    w = CacheWriter(path)  # opens: the structure was never touched after creation
    done_ok = np.flatnonzero(w.done & ~w.failed)
    assert 0 < w.done.sum() < n, "the kill should land mid-run"
    with open_cache(path, allow_incomplete=True) as c:
        np.testing.assert_array_equal(c.layers()[:, done_ok], expected_rows(done_ok, layers,
                                                                             dim))
        np.testing.assert_array_equal(c.n_frames[done_ok], done_ok + 1)
        assert all(c.failed[c.ids[i]] == f"reason {i}" for i in np.flatnonzero(w.failed))
    rest = w.pending()
    w.write_rows(rest, expected_rows(rest, layers, dim), rest + 1, rest * 0.5)
    w.finalize()
    with open_cache(path) as c:
        assert c.usable.all()
        np.testing.assert_array_equal(c.layers(), expected_rows(np.arange(n), layers, dim))

