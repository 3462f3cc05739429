"""Damaged caches: a missing dataset, a corrupted JSON attribute or a file that is not HDF5
gives a CacheError in info, probe and extract; flipped bytes in `pooled` are caught by the
row checksums (refused by probe, listed and cleared by `info --repair`, re-extracted alone)."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import pytest
from probe_fixtures import planted

from emoprobe.cache.repair import check_cache
from emoprobe.cache.store import open_cache, write_cache
from emoprobe.cli import main
from emoprobe.errors import CacheError, ProbeError
from emoprobe.extract.runner import run_extraction
from emoprobe.probe import probe
from emoprobe.testing.models import write_corpus

KW = {"progress": False, "batch_seconds": 3.0}


def _flip(path: Path, layer: int, row: int) -> None:
    """Flip one bit of one stored float, behind HDF5's back (as a failing disk would)."""
    with h5py.File(path, "r") as f:
        ds = f["pooled"]
        offset = ds.id.get_offset() + ((layer * ds.shape[1] + row) * ds.shape[2] + 3) * 4
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0x10]))


@pytest.fixture
def fbank_cache(tmp_path: Path) -> tuple[Path, Path]:
    manifest = write_corpus(tmp_path / "c", [0.5, 0.8, 1.1, 0.7, 0.6])
    return manifest, run_extraction(manifest, "fbank", tmp_path / "f", **KW).path


def test_missing_dataset_bad_json_and_not_hdf5_are_cache_errors(fbank_cache, tmp_path: Path,
                                                                 capsys) -> None:
    manifest, path = fbank_cache
    other = tmp_path / "other.h5"
    shutil.copyfile(path, other)
    with h5py.File(path, "r+") as f:
        f.attrs["fingerprint_parts"] = "{not json"
    with pytest.raises(CacheError, match=r"damaged .*JSONDecodeError.*info --repair"):
        open_cache(path)
    with pytest.raises(CacheError, match=r"damaged.*--overwrite"):
        run_extraction(manifest, "fbank", tmp_path / "f", **KW)
    assert main(["info", str(path)]) == 1  # a data problem, not a usage mistake
    assert "damaged" in capsys.readouterr().err
    check = check_cache(path)
    assert "attribute fingerprint_parts is damaged (not JSON)" in check.problems
    with h5py.File(other, "r+") as f:
        del f["done"]
    with pytest.raises(CacheError, match=r"damaged .*KeyError"):
        open_cache(other)
    assert check_cache(other).fatal
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not an hdf5 file at all" * 10)
    with pytest.raises(CacheError, match="not a readable HDF5 cache"):
        open_cache(junk)
    with pytest.raises(CacheError, match="not a readable HDF5 cache"):
        probe([junk], progress=False)
    assert check_cache(junk).fatal


def test_flipped_bytes_are_refused_by_probe(tmp_path: Path) -> None:
    pooled, records = planted(n_utts=240)
    path = write_cache(tmp_path / "synthetic-model.h5", pooled, records,
                       meta={"model": "synthetic-model", "upstream_kind": "transformers"})
    _flip(path, layer=2, row=17)
    with pytest.raises(ProbeError, match=rf"1 utterance.*{records[17]['id']}.*info --repair"):
        probe([path], progress=False, seeds=1, n_boot=10, c_grid=(1e-2,))
    with open_cache(path) as c:
        assert c.damaged_rows() == {records[17]["id"]: [2]}


def test_repair_clears_damaged_rows_and_extract_recomputes_only_those(fbank_cache,
                                                                     capsys) -> None:
    manifest, path = fbank_cache
    with open_cache(path) as c:
        before = c.layer(0).copy()
    _flip(path, layer=0, row=3)
    assert main(["info", "--repair", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "row 'utt0003': checksum mismatch in layer 0" in printed
    assert "1 damaged row(s) cleared for re-extraction" in printed
    with open_cache(path, allow_incomplete=True) as c:
        assert not c.complete and c.done.sum() == 4
    again = run_extraction(manifest, "fbank", path.parent, **KW).summary
    assert (again.extracted, again.reused) == (1, 4)
    with open_cache(path) as c:
        assert c.layer(0).tobytes() == before.tobytes()
    assert check_cache(path).ok
    assert main(["info", "--repair", str(path)]) == 0
    assert "no problem found" in capsys.readouterr().out
