"""EmoBox corpora -> manifests: the real URDU and IEMOCAP metadata, a generated corpus, and
every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from emoprobe.cli import main
from emoprobe.data.audit import SPEAKER_OVERLAP, audit_records
from emoprobe.data.corpora import corpus_for_records
from emoprobe.data.folds import make_folds
from emoprobe.data.manifest import read_manifest
from emoprobe.data.prepare import prepare_corpus, prepare_emobox_all
from emoprobe.errors import ConfigError, ManifestError
from emoprobe.testing.layouts import make_emobox_audio, make_emobox_corpus


def _keys(path: Path) -> list[str]:
    return [json.loads(line)["key"] for line in path.read_text().splitlines() if line.strip()]


def _stm_speakers(path: Path) -> dict[str, str]:
    return {f[0]: f[2] for f in (line.split() for line in path.read_text().splitlines()) if f}


# ---------------------------------------------------------------------------------------------
# Real EmoBox metadata


def test_urdu_from_emobox_with_real_audio(emobox_dir, urdu_dir, tmp_path):
    meta = emobox_dir / "urdu"
    out = tmp_path / "urdu.jsonl"
    lines: list[str] = []
    result = prepare_corpus("emobox", meta, audio_root=urdu_dir, out=out, progress=False,
                            echo=lines.append)
    text = "\n".join(lines)
    records = read_manifest(out)
    assert len(records) == 400
    assert "400 via DIR/<wav without downloads/<corpus>/>" in text
    assert "corpus.cfg says 16000, the files have 44100 x400" in text
    spec = corpus_for_records(records)
    assert spec.protocol == "official-split"
    assert spec.task(None).classes == ("Angry", "Happy", "Neutral", "Sad")
    folds = make_folds(records, spec)
    assert len(folds) == 1
    stm = _stm_speakers(meta / "data.seg.wrd.stm")
    assert {r["id"]: r["speaker"] for r in records} == stm
    assert all(Path(r["path"]).is_file() and r["sample_rate"] == 44100 for r in records)
    assert result.count_warnings == []

    # The expected overlap, computed from the fold files and the STM alone.
    test_keys = _keys(meta / "fold_1" / "urdu_test_fold_1.jsonl")
    train_keys = _keys(meta / "fold_1" / "urdu_train_fold_1.jsonl")
    shared = {stm[k] for k in test_keys} & {stm[k] for k in train_keys}
    leaked = sum(stm[k] in shared for k in test_keys)
    report = audit_records(records)
    (overlap,) = [f for f in report.findings if f.kind == SPEAKER_OVERLAP]
    assert overlap.severity == "error"
    assert overlap.count == len(shared) and sorted(overlap.examples) == sorted(shared)
    assert overlap.detail["test_utterances"] == leaked
    assert overlap.detail["test_speakers"] == len({stm[k] for k in test_keys})
    assert report.failed()
    assert "S" in report.marks


def test_iemocap_metadata_on_a_tree_with_emobox_paths(emobox_dir, tmp_path):
    meta = emobox_dir / "iemocap"
    written = make_emobox_audio(meta, tmp_path / "EmoBox")
    assert written == 5531
    out = tmp_path / "iemocap.jsonl"
    lines: list[str] = []
    prepare_corpus("emobox", meta, audio_root=tmp_path / "EmoBox", out=out, progress=False,
                   echo=lines.append)
    assert "5531 via DIR/<wav>" in "\n".join(lines)
    records = read_manifest(out)
    assert len({r["id"] for r in records}) == 5531
    spec = corpus_for_records(records)
    assert spec.protocol == "leave-one-fold-out"
    task = spec.task(None)
    assert task.classes == ("Angry", "Happy", "Neutral", "Sad")
    assert task.mapping["exc"] == task.mapping["hap"] == "Happy"
    # Folds equal sessions: fold k tests exactly session k (Ses0k in the key).
    for fold in make_folds(records, spec):
        sessions = {records[i]["id"].split("-", 1)[1][3:5] for i in fold.test}
        assert sessions == {f"{int(fold.name.removeprefix('fold')):02d}"}
    report = audit_records(records)
    assert not [f for f in report.findings if f.kind == SPEAKER_OVERLAP]
    assert not report.failed()


# ---------------------------------------------------------------------------------------------
# A generated corpus


@pytest.fixture
def toy(tmp_path):
    corpus = make_emobox_corpus(tmp_path / "data", tmp_path / "EmoBox")
    return corpus, tmp_path / "data" / "toy", tmp_path / "EmoBox"


def test_generated_corpus_fields_and_folds(toy, tmp_path):
    corpus, meta, audio = toy
    out = tmp_path / "toy.jsonl"
    prepare_corpus("emobox", meta, audio_root=audio, out=out, progress=False, check=True)
    records = read_manifest(out)
    assert [r["id"] for r in records] == list(corpus.utterances)
    for r in records:
        want = corpus.utterances[r["id"]]
        assert (r["label"], r["class"], r["speaker"], r["fold"], r["path"]) == (
            want["label"], want["class"], want["speaker"], want["fold"], want["path"])
        assert r["corpus"] == "emobox-toy" and r["emobox_wav"] == want["wav"]
    folds = make_folds(records, corpus_for_records(records))
    assert [f.name for f in folds] == ["fold1", "fold2", "fold3"]


def test_audio_root_rules_are_tried_in_order(toy, tmp_path):
    _, meta, audio = toy
    lines: list[str] = []
    # The user's downloads/ folder itself: `downloads/` removed.
    prepare_corpus("emobox", meta, audio_root=audio / "downloads", out=tmp_path / "a.jsonl",
                   progress=False, echo=lines.append)
    assert "30 via DIR/<wav without downloads/>" in "\n".join(lines)


def test_explicit_lists_are_kept_when_train_is_not_the_rest(toy, tmp_path):
    _, meta, audio = toy
    train = meta / "fold_1" / "toy_train_fold_1.jsonl"
    kept = train.read_text().splitlines()
    dropped = json.loads(kept[0])["key"]
    train.write_text("\n".join(kept[1:]) + "\n")
    out = tmp_path / "toy.jsonl"
    lines: list[str] = []
    prepare_corpus("emobox", meta, audio_root=audio, out=out, progress=False,
                   echo=lines.append)
    assert "explicit lists in `folds`" in "\n".join(lines)
    records = read_manifest(out)
    spec = corpus_for_records(records)
    assert spec.protocol == "listed-folds"
    folds = make_folds(records, spec)
    ids = np.asarray([r["id"] for r in records])
    assert dropped not in ids[folds[0].train] and dropped not in ids[folds[0].test]
    assert dropped in ids[folds[2].train]
    assert len(folds[0].train) == len(_keys(train))


def test_all_mode_writes_one_manifest_per_corpus(tmp_path):
    make_emobox_corpus(tmp_path / "data", tmp_path / "EmoBox", name="toy")
    make_emobox_corpus(tmp_path / "data", tmp_path / "EmoBox", name="other", folds=2)
    results = prepare_emobox_all(tmp_path / "data", audio_root=tmp_path / "EmoBox",
                                 out_dir=tmp_path / "out", progress=False)
    assert sorted(results) == ["other", "toy"]
    assert len(read_manifest(tmp_path / "out" / "other.jsonl")) == 30
    # A corpus whose audio is absent fails by name; the others are still written.
    make_emobox_corpus(tmp_path / "data", None, name="noaudio")
    with pytest.raises(ManifestError, match="noaudio"):
        prepare_emobox_all(tmp_path / "data", audio_root=tmp_path / "EmoBox",
                           out_dir=tmp_path / "out2", progress=False)
    assert sorted(p.name for p in (tmp_path / "out2").iterdir()) == ["other.jsonl",
                                                                     "toy.jsonl"]


def test_cli_prepare_emobox_and_all(toy, tmp_path, capsys):
    _, meta, audio = toy
    assert main(["prepare", "emobox", "--root", str(meta), "--audio-root", str(audio),
                 "--out", str(tmp_path / "t.jsonl"), "--no-progress"]) == 0
    assert "wrote 30 records" in capsys.readouterr().out
    assert main(["prepare", "emobox", "--all", str(meta.parent), "--audio-root", str(audio),
                 "--out-dir", str(tmp_path / "all"), "--no-progress"]) == 0
    assert (tmp_path / "all" / "toy.jsonl").is_file()
    assert main(["prepare", "emobox", "--root", str(meta), "--out", "x.jsonl"]) == 2
    assert "--audio-root" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Bad inputs: a clear error naming the file and line; nothing written.


def _line_of(path: Path, key: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if key in line)


def _expect_error(meta: Path, audio: Path, out: Path, *patterns: str) -> None:
    with pytest.raises(ManifestError) as info:
        prepare_corpus("emobox", meta, audio_root=audio, out=out, progress=False)
    for pattern in patterns:
        assert pattern in str(info.value), str(info.value)
    assert not out.exists()


def test_missing_fold_file(toy, tmp_path):
    _, meta, audio = toy
    (meta / "fold_2" / "toy_test_fold_2.jsonl").unlink()
    _expect_error(meta, audio, tmp_path / "o.jsonl",
                  str(meta / "fold_2" / "toy_test_fold_2.jsonl"), "no such file")


def test_fold_key_not_in_corpus_list(toy, tmp_path):
    _, meta, audio = toy
    path = meta / "fold_1" / "toy_test_fold_1.jsonl"
    with open(path, "a") as fh:
        fh.write(json.dumps({"key": "toy-ghost", "wav": "downloads/toy/ghost.wav"}) + "\n")
    _expect_error(meta, audio, tmp_path / "o.jsonl",
                  f"{path}:{_line_of(path, 'toy-ghost')}", "'toy-ghost'", "not in the corpus")


def test_emo_code_missing_from_label_map(toy, tmp_path):
    _, meta, audio = toy
    label_map = json.loads((meta / "label_map.json").read_text())
    del label_map["exc"]
    (meta / "label_map.json").write_text(json.dumps(label_map))
    corpus_list = meta / "toy.jsonl"
    first_exc = next(i for i, line in enumerate(corpus_list.read_text().splitlines(), 1)
                     if '"emo": "exc"' in line)
    _expect_error(meta, audio, tmp_path / "o.jsonl", f"{corpus_list}:{first_exc}",
                  "'exc'", "label_map.json")


def test_malformed_stm_line(toy, tmp_path):
    _, meta, audio = toy
    stm = meta / "data.seg.wrd.stm"
    lines = stm.read_text().splitlines()
    lines[6] = lines[6].split()[0] + " 1 S02"
    stm.write_text("\n".join(lines) + "\n")
    _expect_error(meta, audio, tmp_path / "o.jsonl", f"{stm}:7", "malformed STM line")


def test_unresolvable_wav_lists_the_files(toy, tmp_path):
    corpus, meta, audio = toy
    gone = list(corpus.utterances)[4]
    Path(corpus.utterances[gone]["path"]).unlink()
    out = tmp_path / "o.jsonl"
    _expect_error(meta, audio, out, "1 of 30 audio file(s) not found", gone,
                  corpus.utterances[gone]["wav"], "--allow-subset")
    # With --allow-subset: a warning, the rest written, counts compared with EmoBox's lists.
    lines: list[str] = []
    result = prepare_corpus("emobox", meta, audio_root=audio, out=out, allow_subset=True,
                            progress=False, echo=lines.append)
    assert len(read_manifest(out)) == 29
    assert any("total 29 (published 30)" in w for w in result.count_warnings)
    assert "left out of the manifest" in "\n".join(lines)


def test_segment_records_and_missing_audio_root(toy, tmp_path):
    _, meta, audio = toy
    with pytest.raises(ConfigError, match="audio_root"):
        prepare_corpus("emobox", meta, out=tmp_path / "o.jsonl", progress=False)
    lines = (meta / "toy.jsonl").read_text().splitlines()
    rec = json.loads(lines[2])
    rec["start_time"], rec["end_time"] = 0.0, 0.05
    lines[2] = json.dumps(rec)
    (meta / "toy.jsonl").write_text("\n".join(lines) + "\n")
    _expect_error(meta, audio, tmp_path / "o.jsonl", f"{meta / 'toy.jsonl'}:3", "segment")


def test_audit_of_emobox_fold_files_given_as_folds(emobox_dir, urdu_dir, tmp_path):
    # The same fold files read by the probe's --folds resolution give the same finding.
    out = tmp_path / "urdu.jsonl"
    prepare_corpus("emobox", emobox_dir / "urdu", audio_root=urdu_dir, out=out, progress=False)
    records = read_manifest(out)
    own = [f for f in audit_records(records).findings if f.kind == SPEAKER_OVERLAP]
    given = audit_records(records, folds=str(emobox_dir / "urdu")).findings
    assert [(f.count, f.detail["test_utterances"]) for f in given
            if f.kind == SPEAKER_OVERLAP] == [(own[0].count, own[0].detail["test_utterances"])]


def test_emobox_corpus_through_every_stage_from_a_run_config(tmp_path):
    from emoprobe import run_pipeline
    from emoprobe.pipeline import load_config

    make_emobox_corpus(tmp_path / "data", tmp_path / "EmoBox", name="toy")
    make_emobox_corpus(tmp_path / "data", tmp_path / "EmoBox", name="other", folds=2)
    cfg = tmp_path / "run.toml"
    cfg.write_text(f"""
out = "out"

[[corpus]]
source = "emobox"
root = "{tmp_path / 'data' / 'toy'}"
audio_root = "{tmp_path / 'EmoBox'}"

[[upstream]]
model = "fbank"

[probe]
seeds = 1
n_boot = 20
c_grid = [0.01, 1.0]

[report]
plots = false
""")
    result = run_pipeline(cfg, progress=False)
    assert set(result.caches) == {("toy", "fbank")}
    protocol = json.loads((tmp_path / "out" / "results" / "protocol.json").read_text())
    (entry,) = protocol["datasets"]
    assert entry["dataset"] == "emobox-toy" and entry["task"]["name"] == "classes"
    assert [f["name"] for f in entry["folds"]] == ["fold1", "fold2", "fold3"]
    assert entry["audit"]["summary"]["error"] == 0
    # Several EmoBox corpora in one config are named after their folders.
    two = cfg.read_text().replace("[[upstream]]", f"""[[corpus]]
source = "emobox"
root = "{tmp_path / 'data' / 'other'}"
audio_root = "{tmp_path / 'EmoBox'}"

[[upstream]]""")
    cfg.write_text(two)
    assert [c.name for c in load_config(cfg).corpora] == ["toy", "other"]
