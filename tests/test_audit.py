"""The audit: planted duplicates (also re-encoded), missing classes and speakers, sentence
overlap, near-duplicate embeddings, the JSON report and the command's exit status."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emoprobe.cache.store import write_cache
from emoprobe.cli import main
from emoprobe.data.audio import decoded_digest
from emoprobe.data.audit import (
    DUPLICATE_AUDIO,
    KINDS,
    MISSING_CLASS,
    MISSING_SPEAKER,
    NEAR_DUPLICATE,
    SENTENCE_OVERLAP,
    SMALL_FOLD,
    SPEAKER_OVERLAP,
    audit_records,
)
from emoprobe.data.manifest import write_manifest
from emoprobe.testing.layouts import tone

LABELS = ("ang", "hap", "neu", "sad")


def _corpus(root: Path, *, speakers: int = 4, per_speaker: int = 8) -> list[dict]:
    """Distinct tones; fold = speaker number, so leave-one-fold-out is speaker-disjoint."""
    records = []
    for s in range(speakers):
        for u in range(per_speaker):
            rid = f"s{s}_u{u}"
            path = root / f"{rid}.wav"
            sf.write(path, tone(0.1, 16000, 200.0 + 13.0 * len(records)), 16000,
                     subtype="PCM_16")
            records.append({"id": rid, "path": str(path), "label": LABELS[u % 4],
                            "speaker": f"spk{s}", "fold": str(s + 1), "corpus": "toy",
                            "sentence": f"sentence {u}"})
    return records


def _kinds(report, kind):
    return [f for f in report.findings if f.kind == kind]


def test_clean_corpus_has_no_leak(tmp_path):
    records = _corpus(tmp_path)
    report = audit_records(records, hash_audio_files=True, progress=False)
    for kind in (SPEAKER_OVERLAP, DUPLICATE_AUDIO, MISSING_CLASS, MISSING_SPEAKER):
        assert not _kinds(report, kind), report.summary()
    assert not report.failed()
    assert "audio hashes" in report.checks


@pytest.mark.parametrize("fmt, subtype", [("WAV", "PCM_16"), ("FLAC", "PCM_16"),
                                          ("WAV", "PCM_24"), ("WAV", "FLOAT")])
def test_planted_duplicate_is_found_in_any_container_and_width(tmp_path, fmt, subtype):
    records = _corpus(tmp_path)
    source = records[3]  # speaker 0, fold 1
    wave_, sr = sf.read(source["path"], dtype="float64")
    copy = tmp_path / f"copy.{fmt.lower()}"
    sf.write(copy, wave_, sr, format=fmt, subtype=subtype)
    assert decoded_digest(str(copy)) == decoded_digest(source["path"])
    # The copy under a new id and speaker, in fold 2: training of fold 1, test of fold 2.
    records.append({**source, "id": "planted", "path": str(copy), "speaker": "new",
                    "fold": "2"})
    report = audit_records(records, hash_audio_files=True, progress=False)
    dups = _kinds(report, DUPLICATE_AUDIO)
    assert {f.fold for f in dups} == {"fold1", "fold2"}
    assert all(f.severity == "error" and f.count == 1 for f in dups)
    assert all(sorted(f.examples[0]) == sorted([source["id"], "planted"]) for f in dups)
    assert report.failed()


def test_duplicate_within_one_part_is_a_warning(tmp_path):
    records = _corpus(tmp_path)
    records.append({**records[0], "id": "again", "speaker": "spk0"})  # same file, same fold
    report = audit_records(records, hash_audio_files=True, progress=False)
    (dup,) = _kinds(report, DUPLICATE_AUDIO)
    assert dup.severity == "warning" and dup.fold is None and dup.count == 1
    assert not report.failed() and report.failed("warning")


def test_fold_without_a_class_and_manifest_without_speakers(tmp_path):
    records = _corpus(tmp_path)
    no_sad_in_fold2 = [r for r in records if not (r["fold"] == "2" and r["label"] == "sad")]
    report = audit_records(no_sad_in_fold2, progress=False)
    (missing,) = _kinds(report, MISSING_CLASS)
    assert (missing.fold, missing.examples, missing.detail["part"]) == ("fold2", ["sad"], "test")
    assert "C" in report.marks
    anonymous = [{k: v for k, v in r.items() if k != "speaker"} for r in records]
    (nospk,) = _kinds(audit_records(anonymous, progress=False), MISSING_SPEAKER)
    assert nospk.count == len(records) and nospk.severity == "warning"


def test_speaker_overlap_and_sentence_overlap(tmp_path):
    records = _corpus(tmp_path)
    records[0]["fold"] = "2"  # one utterance of spk0 moves to spk1's fold
    report = audit_records(records, progress=False)
    overlaps = {f.fold: f for f in _kinds(report, SPEAKER_OVERLAP)}
    assert set(overlaps) == {"fold1", "fold2"}
    assert overlaps["fold2"].examples == ["spk0"]
    assert overlaps["fold2"].detail["test_utterances"] == 1
    sentences = _kinds(report, SENTENCE_OVERLAP)
    assert sentences and all(f.severity == "info" for f in sentences)
    assert sum(f.count for f in sentences) == len(records)


def test_small_fold(tmp_path):
    records = _corpus(tmp_path, per_speaker=4)
    small = _kinds(audit_records(records, progress=False), SMALL_FOLD)
    assert {f.fold for f in small if f.detail["part"] == "test"} == {
        "fold1", "fold2", "fold3", "fold4"}


def test_near_duplicates_from_a_cache(tmp_path):
    records = _corpus(tmp_path)
    rng = np.random.default_rng(0)
    pooled = rng.normal(size=(2, len(records), 16)).astype(np.float32)
    pooled[1, 9] = pooled[1, 2] * 1.0001  # utterances 2 (fold 1) and 9 (fold 2)
    cache = write_cache(tmp_path / "c.h5", pooled, records)
    report = audit_records(records, cache=cache, layer=-1, progress=False)
    near = _kinds(report, NEAR_DUPLICATE)
    assert near and all(f.severity == "warning" for f in near)
    assert {f.fold for f in near} == {"fold1", "fold2"}
    assert sorted(near[0].examples[0]) == ["s0_u2", "s1_u1"]
    assert not _kinds(audit_records(records, cache=cache, layer=0, progress=False),
                      NEAR_DUPLICATE)


def test_cli_json_and_exit_status(tmp_path, capsys):
    records = _corpus(tmp_path)
    clean = write_manifest(records, tmp_path / "clean.jsonl")
    assert main(["audit", str(clean), "--no-progress", "--json", str(tmp_path / "a.json")]) == 0
    data = json.loads((tmp_path / "a.json").read_text())
    assert set(data) == {"findings", "summary"}
    assert data["summary"]["error"] == 0
    records[0]["fold"] = "2"
    leaky = write_manifest(records, tmp_path / "leaky.jsonl")
    assert main(["audit", str(leaky), "--no-hash", "--json", str(tmp_path / "b.json")]) == 1
    data = json.loads((tmp_path / "b.json").read_text())
    for f in data["findings"]:
        assert f["kind"] in KINDS and {"severity", "fold", "count", "examples"} <= set(f)
    assert "speaker_overlap" in capsys.readouterr().out
    # Warnings only (small folds): 0, or 1 with --fail-on warning.
    (tmp_path / "few").mkdir()
    few = write_manifest(_corpus(tmp_path / "few", per_speaker=4), tmp_path / "few.jsonl")
    assert main(["audit", str(few), "--no-hash"]) == 0
    assert main(["audit", str(few), "--no-hash", "--fail-on", "warning"]) == 1
    assert main(["audit", str(tmp_path / "none.jsonl")]) == 1  # a missing file: data, not usage


def test_folds_are_resolved_as_the_probe_resolves_them(tmp_path):
    records = _corpus(tmp_path)
    records[0]["fold"] = "2"  # a leak in the manifest's own folds
    assert _kinds(audit_records(records, progress=False), SPEAKER_OVERLAP)
    held_out = audit_records(records, folds="loso", progress=False)
    assert held_out.protocol == "leave-one-speaker-out" and len(held_out.folds) == 4
    assert not _kinds(held_out, SPEAKER_OVERLAP)
    kfold = audit_records(records, folds="kfold:2", progress=False)
    assert len(kfold.folds) == 2 and not _kinds(kfold, SPEAKER_OVERLAP)
    with pytest.raises(ValueError, match="--folds nowhere"):
        audit_records(records, folds="nowhere", progress=False)
    # A manifest without folds of its own is audited on the folds given, as probe does.
    no_folds = [{k: v for k, v in r.items() if k != "fold"} for r in records]
    with pytest.raises(ValueError, match="no complete fold"):
        audit_records(no_folds, progress=False)
    assert len(audit_records(no_folds, folds="loso", progress=False).folds) == 4


def test_probe_stores_the_audit_and_the_leaderboard_marks_it(tmp_path):
    from emoprobe.probe import probe, report
    from emoprobe.probe.tables import audit_marks, leaderboard, to_markdown

    records = _corpus(tmp_path)
    records[0]["fold"] = "2"  # spk0 in the training part of fold 2 and its test part
    y = np.asarray([LABELS.index(r["label"]) for r in records])
    pooled = np.random.default_rng(0).normal(size=(2, len(records), 8)).astype(np.float32)
    pooled[:, :, 0] += y
    cache = write_cache(tmp_path / "toy.h5", pooled, records)
    result = probe([cache], out=tmp_path / "res", seeds=1, progress=False)
    (entry,) = result.protocol["datasets"]
    kinds = {f["kind"] for f in entry["audit"]["findings"]}
    assert SPEAKER_OVERLAP in kinds and entry["audit"]["summary"]["marks"] == ["S"]
    assert SENTENCE_OVERLAP in kinds  # the manifest's transcripts repeat across folds
    marks = audit_marks(result.protocol)
    assert marks == {("toy", "all", "toy"): "S"}
    board = to_markdown(leaderboard(result.summary, marks))
    assert "| audit |" in board and "| S |" in board and "audit S = speaker overlap" in board
    assert "audit S" in report(tmp_path / "res", plots=False).text
    # Held-out speakers: the same cache, no mark and no audit column.
    clean = probe([cache], folds="loso", seeds=1, progress=False)
    assert audit_marks(clean.protocol) == {}
    assert "audit" not in to_markdown(leaderboard(clean.summary, audit_marks(clean.protocol)))


def test_audio_digests_are_kept_so_an_interrupted_audit_resumes(tmp_path):
    from emoprobe.data.audit import DigestStore, hash_audio

    records = _corpus(tmp_path)
    paths = [r["path"] for r in records]
    store_path = tmp_path / "digests.jsonl"
    # A first run stopped half-way: only the first half is hashed and kept.
    first, _ = hash_audio(paths[:16], progress=False, store=DigestStore(store_path))
    with open(store_path, "a") as fh:
        fh.write('{"path": "torn')  # the last line of a killed run
    store = DigestStore(store_path)
    again, failures = hash_audio(paths, progress=False, store=store)
    assert store.reused == 16 and not failures
    assert again[:16] == first and again == [decoded_digest(p) for p in paths]
    # A changed file is hashed again, not taken from the store.
    sf.write(paths[0], tone(0.1, 16000, 999.0), 16000, subtype="PCM_16")
    store = DigestStore(store_path)
    third, _ = hash_audio(paths, progress=False, store=store)
    assert third[0] != first[0] and store.reused == len(paths) - 1
    report = audit_records(records, hash_audio_files=True, digest_store=store_path,
                           progress=False)
    assert any("reused" in n for n in report.notes)
