"""Cache identity = audio + model + settings: a manifest that changes only labels, folds,
speakers or paths reuses the cache byte for byte; new utterances are the only ones extracted;
changed audio for a cached id is refused; extraction plans from the manifest's own audio
fields; version-1 caches stay readable and probe to the same numbers."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import soundfile as sf
from probe_fixtures import planted

from emoprobe.cache.store import open_cache, write_cache
from emoprobe.data import headers
from emoprobe.data.manifest import read_manifest, write_manifest
from emoprobe.data.prepare import prepare_corpus
from emoprobe.errors import CacheError
from emoprobe.extract.runner import run_extraction
from emoprobe.extract.shard import ShardSpec
from emoprobe.probe import probe
from emoprobe.testing.models import synth_wave, write_corpus

KW = {"progress": False, "batch_seconds": 3.0}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _prepared(folder: Path, durations: list[float], *, seed: int = 0) -> Path:
    """A corpus prepared like `emoprobe prepare manifest`: audio fields from the headers."""
    raw = write_corpus(folder, durations, seed=seed)
    records = read_manifest(raw)
    for i, r in enumerate(records):
        r.update(session=str(i % 2), path=str(Path(r["path"]).relative_to(folder)))
    write_manifest(records, raw)
    return prepare_corpus("manifest", raw, out=folder / "prepared.jsonl", progress=False).out


def test_prepare_stores_num_samples_and_extract_reads_no_header(tmp_path: Path,
                                                                monkeypatch) -> None:
    manifest = _prepared(tmp_path / "c", [0.5, 0.8, 1.1, 0.7])
    records = read_manifest(manifest)
    assert [r["num_samples"] for r in records] == [8000, 12800, 17600, 11200]
    read: list[str] = []
    real = headers.read_headers

    def counting(paths, **kw):
        read.extend(paths)
        return real(paths, **kw)

    monkeypatch.setattr(headers, "read_headers", counting)
    run_extraction(manifest, "fbank", tmp_path / "a", **KW)
    run_extraction(manifest, "fbank", tmp_path / "s", shard=ShardSpec(1, 2), **KW)
    assert read == []  # planned from the manifest, shards included
    bare = [{k: v for k, v in r.items() if k != "num_samples"} for r in records]
    bare[2]["num_samples"] = records[2]["num_samples"]
    run_extraction(write_manifest(bare, tmp_path / "bare.jsonl"), "fbank", tmp_path / "b", **KW)
    assert sorted(read) == sorted(r["path"] for i, r in enumerate(records) if i != 2)


def test_labels_folds_speakers_and_paths_reuse_the_cache_untouched(tmp_path: Path) -> None:
    manifest = _prepared(tmp_path / "c", [0.5, 0.8, 1.1, 0.7, 0.9, 0.6])
    path = run_extraction(manifest, "fbank", tmp_path / "f", frames="0", **KW).path
    before = _sha(path)
    moved = tmp_path / "elsewhere"
    shutil.copytree(tmp_path / "c" / "wav", moved)
    records = read_manifest(manifest)
    for i, r in enumerate(records):
        r.update(label="XYZ"[i % 3], speaker=f"other{i}", fold=i % 3, session=None,
                 sentence="new words", path=str(moved / Path(r["path"]).name))
    again = run_extraction(write_manifest(records, tmp_path / "relabelled.jsonl"), "fbank",
                           tmp_path / "f", frames="0", **KW).summary
    assert (again.extracted, again.reused, again.total) == (0, 6, 6)
    assert _sha(path) == before
    subset = run_extraction(write_manifest(records[:3], tmp_path / "subset.jsonl"), "fbank",
                            tmp_path / "f", frames="0", **KW).summary
    assert (subset.extracted, subset.reused) == (0, 3) and _sha(path) == before


def test_extra_utterances_are_the_only_ones_extracted(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    durations = list(rng.uniform(0.3, 0.9, 120).round(3))
    full = read_manifest(_prepared(tmp_path / "c", durations))
    first = write_manifest(full[:20], tmp_path / "first.jsonl")
    path = run_extraction(first, "fbank", tmp_path / "f", frames="0", **KW).path
    with open_cache(path) as c:
        old_rows, old_frames = c.layer(0).copy(), [c.frames(u, 0) for u in c.ids]
        old_fp = c.fingerprint
    grown = run_extraction(write_manifest(full, tmp_path / "full.jsonl"), "fbank",
                           tmp_path / "f", frames="0", **KW).summary
    assert (grown.extracted, grown.reused, grown.total) == (100, 20, 120)
    scratch = run_extraction(tmp_path / "full.jsonl", "fbank", tmp_path / "s", frames="0",
                             **KW).path
    with open_cache(path) as c, open_cache(scratch) as s:
        assert c.ids == [r["id"] for r in full] and c.usable.all()
        assert c.layer(0)[:20].tobytes() == old_rows.tobytes()  # kept, not recomputed
        assert all(np.array_equal(c.frames(u, 0), f) for u, f in zip(c.ids, old_frames))
        np.testing.assert_allclose(c.layer(0), s.layer(0), atol=1e-5)
        assert c.fingerprint == s.fingerprint != old_fp


def test_changed_audio_for_a_cached_id_is_refused(tmp_path: Path) -> None:
    manifest = write_corpus(tmp_path / "c", [0.5, 0.8, 1.1, 0.7])
    path = run_extraction(manifest, "fbank", tmp_path / "f", hash_audio=True, **KW).path
    wav = tmp_path / "c" / "wav" / "utt0002.wav"
    sf.write(wav, synth_wave(0.9, 16000, seed=9), 16000, subtype="PCM_16")  # other length
    before = _sha(path)
    with pytest.raises(CacheError, match=r"audio of 1 utterance.*'utt0002'.*17600 samples.*"
                                         r"now 14400 samples.*--overwrite"):
        run_extraction(manifest, "fbank", tmp_path / "f", **KW)
    assert _sha(path) == before
    redone = run_extraction(manifest, "fbank", tmp_path / "f", overwrite=True, **KW).summary
    assert redone.extracted == 4
    # same length, other samples: found by the hash of the decoded samples
    run_extraction(manifest, "fbank", tmp_path / "h", hash_audio=True, **KW)
    sf.write(wav, synth_wave(0.9, 16000, seed=10), 16000, subtype="PCM_16")
    assert run_extraction(manifest, "fbank", tmp_path / "h", **KW).summary.extracted == 0
    with pytest.raises(CacheError, match=r"decoded samples of 1 utterance.*'utt0002'"):
        run_extraction(manifest, "fbank", tmp_path / "h", hash_audio=True, **KW)


def _write_version_1(path: Path, pooled: np.ndarray, records: list[dict]) -> None:
    """A cache in the version-1 layout: everything in attributes, the flag an attribute."""
    n = len(records)
    meta = {"format": "emoprobe-cache", "format_version": 1, "model": "synthetic-model",
            "upstream_kind": "transformers", "n_layers": pooled.shape[0], "dim": pooled.shape[2],
            "n_utterances": n, "complete": True, "fingerprint": "ab" * 32,
            "fingerprint_parts": json.dumps({"manifest": "m", "upstream": "u", "settings": "s"})}
    with h5py.File(path, "w") as f:
        f["pooled"] = pooled
        f["ids"] = np.array([r["id"] for r in records], dtype=object).astype(
            h5py.string_dtype("utf-8"))
        f.create_dataset("manifest", data="".join(json.dumps(r, sort_keys=True) + "\n"
                                                  for r in records),
                         dtype=h5py.string_dtype("utf-8"))
        f["n_frames"] = np.ones(n, np.int64)
        f["duration"] = np.ones(n, np.float64)
        f["done"] = np.ones(n, np.uint8)
        f["failed"] = np.zeros(n, np.uint8)
        f["failure_reason"] = np.zeros(n, "S512")
        for key, value in meta.items():
            f.attrs[key] = value
        f.attrs["_json_attrs"] = json.dumps(["fingerprint_parts"])


def test_version_1_cache_probes_to_the_same_numbers(tmp_path: Path) -> None:
    pooled, records = planted(n_utts=240)
    old = tmp_path / "v1" / "synthetic-model.h5"
    old.parent.mkdir()
    _write_version_1(old, pooled, records)
    new = write_cache(tmp_path / "v2" / "synthetic-model.h5", pooled, records,
                      meta={"model": "synthetic-model", "upstream_kind": "transformers"})
    fast = {"seeds": 1, "n_boot": 50, "c_grid": (1e-2,), "progress": False}
    with open_cache(old) as c:
        assert c.format_version == 1 and c.complete and c.usable.all()
    a = probe([old], out=tmp_path / "ra", **fast)
    b = probe([new], out=tmp_path / "rb", **fast)
    assert [(r["layer"], r["fold"], r["war"], r["uar"]) for r in a.rows] == \
        [(r["layer"], r["fold"], r["war"], r["uar"]) for r in b.rows]
    with pytest.raises(CacheError, match="format version 1.*--overwrite"):
        run_extraction([{"id": r["id"], "path": "/none.wav", "label": r["label"]}
                        for r in records[:3]], "fbank", tmp_path / "v1", name="synthetic-model",
                       **KW)


@pytest.mark.slow
def test_urdu_fbank_reused_when_folds_labels_and_paths_change(urdu_dir: Path,
                                                              tmp_path: Path) -> None:
    first = prepare_corpus("manifest", urdu_dir / "manifest.jsonl", out=tmp_path / "a.jsonl",
                           folds=5, seed=0, progress=False).out
    path = run_extraction(first, "fbank", tmp_path / "f", progress=False).path
    before = _sha(path)
    copy = tmp_path / "copy"
    shutil.copytree(urdu_dir, copy, ignore=shutil.ignore_patterns("*.md"))
    second = prepare_corpus("manifest", copy / "manifest.jsonl", out=tmp_path / "b.jsonl",
                            folds=5, seed=1, progress=False).out
    records = read_manifest(second)
    codes = {"angry": "ang", "happy": "hap", "neutral": "neu", "sad": "sad"}
    for r in records:
        r["label"] = codes[r["label"]]
    relabelled = write_manifest(records, tmp_path / "c.jsonl")
    assert {r["fold"] for r in read_manifest(first)} == {r["fold"] for r in records}
    for manifest in (second, relabelled):
        summary = run_extraction(manifest, "fbank", tmp_path / "f", progress=False).summary
        assert (summary.extracted, summary.reused) == (0, 400)
    assert _sha(path) == before


def test_text_rows_are_keyed_by_their_sentence(tmp_path: Path) -> None:
    from emoprobe.testing.models import build_text_model, synth_sentence

    model = str(build_text_model("bert", tmp_path / "bert"))
    sentences = [synth_sentence(i) for i in range(4)]
    manifest = write_corpus(tmp_path / "c", [0.3] * 4, sentences=sentences)
    text = {"modality": "text", **KW}
    path = run_extraction(manifest, model, tmp_path / "f", frames="0", **text).path
    before = _sha(path)
    records = read_manifest(manifest)
    for r in records:
        r["label"], r["path"] = "neu", "/elsewhere/x.wav"  # no audio is read for text
    same = run_extraction(records, model, tmp_path / "f", frames="0", **text).summary
    assert (same.extracted, same.reused) == (0, 4) and _sha(path) == before
    records[1]["sentence"] = synth_sentence(9)
    with pytest.raises(CacheError, match=r"sentence of 1 utterance.*'utt0001'.*--overwrite"):
        run_extraction(records, model, tmp_path / "f", frames="0", **text)
    records.append({**records[0], "id": "extra", "sentence": synth_sentence(7)})
    del records[1]
    grown = run_extraction(records, model, tmp_path / "f", frames="0", **text).summary
    assert (grown.extracted, grown.reused) == (1, 3)
    with open_cache(path) as c:
        assert c.frames("extra", 0).shape[0] == c.n_frames[c.ids.index("extra")]
