"""The generic loader: JSONL/CSV/TSV manifests, relative paths, folds, and bad rows named by
file and line; and on real speech (../shared/data/urdu)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import soundfile as sf

from emoprobe.data.audio import load_audio
from emoprobe.data.corpora import corpus_for_records
from emoprobe.data.folds import make_folds
from emoprobe.data.generic import load_manifest_file
from emoprobe.errors import ManifestError
from emoprobe.testing.layouts import tone

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
URDU = SHARED / "data" / "urdu"


def _corpus(root: Path, n_speakers: int = 4, per: int = 4) -> list[dict]:
    rows = []
    for s in range(n_speakers):
        for i in range(per):
            rel = f"wav/s{s}/u{i}.wav"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            sf.write(root / rel, tone(0.1 + 0.01 * i, 8000), 8000)
            rows.append({"id": f"s{s}_u{i}", "path": rel, "label": "ab"[i % 2],
                         "speaker": f"spk{s}", "session": s // 2 + 1})
    return rows


def _csv(path: Path, rows: list[dict], sep: str = ",") -> None:
    cols = list(rows[0])
    path.write_text(sep.join(cols) + "\n" + "".join(
        sep.join(str(r[c]) for c in cols) + "\n" for r in rows))


def test_csv_manifest_with_relative_paths_and_session_folds(tmp_path: Path) -> None:
    rows = _corpus(tmp_path)
    _csv(tmp_path / "my_corpus.csv", rows)
    recs = load_manifest_file(tmp_path / "my_corpus.csv", progress=False)
    assert [r["id"] for r in recs] == [r["id"] for r in rows]
    assert recs[5]["path"] == str(tmp_path / "wav" / "s1" / "u1.wav")
    assert recs[5]["session"] == 1 and recs[5]["corpus"] == "my_corpus"
    assert recs[5]["duration"] == pytest.approx(0.11) and recs[5]["sample_rate"] == 8000
    spec = corpus_for_records(recs)
    assert spec.fold_key == "session" and len(make_folds(recs, spec)) == 2


def test_tsv_with_audio_root_and_name(tmp_path: Path) -> None:
    rows = _corpus(tmp_path / "audio")
    _csv(tmp_path / "list.tsv", rows, sep="\t")
    recs = load_manifest_file(tmp_path / "list.tsv", audio_root=tmp_path / "audio",
                              name="mine", progress=False)
    assert recs[0]["path"] == str(tmp_path / "audio" / "wav" / "s0" / "u0.wav")
    assert {r["corpus"] for r in recs} == {"mine"}
    assert all(r["duration"] for r in recs)


def test_jsonl_split_column_and_folder_root(tmp_path: Path) -> None:
    rows = _corpus(tmp_path)
    for r in rows:
        del r["session"]
        r["split"] = {"spk0": "train", "spk1": "train", "spk2": "validation"}.get(
            r["speaker"], "test")
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recs = load_manifest_file(tmp_path, progress=False)  # a folder holding manifest.jsonl
    assert recs[0]["corpus"] == tmp_path.name
    (fold,) = make_folds(recs, corpus_for_records(recs))
    assert (len(fold.train), len(fold.validation), len(fold.test)) == (8, 4, 4)


def test_generated_speaker_folds(tmp_path: Path) -> None:
    rows = _corpus(tmp_path, n_speakers=6)
    for r in rows:
        del r["session"]
    _csv(tmp_path / "m.csv", rows)
    with pytest.raises(ManifestError, match="prepare it with `emoprobe prepare manifest --folds"):
        load_manifest_file(tmp_path / "m.csv", audio_info=False)
    recs = load_manifest_file(tmp_path / "m.csv", folds=3, seed=7, progress=False)
    assert {r["fold_seed"] for r in recs} == {7}
    fold_of_speaker = {}
    for r in recs:
        assert fold_of_speaker.setdefault(r["speaker"], r["fold"]) == r["fold"]
    assert sorted(Counter(fold_of_speaker.values()).values()) == [2, 2, 2]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("id,path\na,x.wav\n", r"m.csv:1: header lacks column\(s\) label"),
        ("id,path,label,session\na,x.wav,neu,1\nb,y.wav,neu\n",
         "m.csv:3: row has 3 fields, the header has 4"),
        ("id,path,label,session\na,x.wav,neu,1\nb,y.wav,,1\n",
         r"m.csv:3: record 'b' lacks required field\(s\) label"),
        ("id,path,label,duration,session\na,x.wav,neu,long,1\n",
         "m.csv:2: column 'duration' holds 'long', not a number"),
        ("id,path,label,session\na,x.wav,neu,1\n\na,y.wav,sad,2\n",
         r"m.csv:4: duplicate id 'a' \(first seen on line 2\)"),
        ('id,path,label,session\na,"x.wav,neu,1\n', "m.csv:2: row has 2 fields"),
    ],
)
def test_bad_csv_rows_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(ManifestError, match=message):
        load_manifest_file(tmp_path / "m.csv", audio_info=False)


def test_bad_jsonl_rows_and_formats(tmp_path: Path) -> None:
    (tmp_path / "m.jsonl").write_text('{"id": "a", "path": "x.wav", "label": "n", "fold": 1}\n'
                                      '{"id": "b", "path": "y.wav"}\n')
    with pytest.raises(ManifestError, match=r"m.jsonl:2: record 'b' lacks required field"):
        load_manifest_file(tmp_path / "m.jsonl", audio_info=False)
    (tmp_path / "m.xlsx").write_text("")
    with pytest.raises(ManifestError, match="unknown manifest format '.xlsx'"):
        load_manifest_file(tmp_path / "m.xlsx")
    with pytest.raises(ManifestError, match="no such manifest file"):
        load_manifest_file(tmp_path / "none.csv")
    (tmp_path / "sub").mkdir()
    with pytest.raises(ManifestError, match="folder holds none of manifest.jsonl"):
        load_manifest_file(tmp_path / "sub")


@pytest.mark.skipif(not URDU.is_dir(), reason=f"real speech corpus absent: {URDU} not found "
                    "(../shared is beside the repository in CI only)")
def test_generic_loader_on_real_urdu_speech() -> None:
    recs = load_manifest_file(URDU / "manifest.jsonl", folds=5, seed=0, progress=False)
    assert len(recs) == 400 and {r["corpus"] for r in recs} == {"urdu"}
    assert Counter(r["label"] for r in recs) == dict.fromkeys(
        ("angry", "happy", "neutral", "sad"), 100)
    assert {r["sample_rate"] for r in recs} == {44100} and {r["channels"] for r in recs} == {1}
    durations = Counter(round(r["duration"], 1) for r in recs)
    assert durations == {2.0: 200, 3.0: 199, 1.0: 1}
    assert all(Path(r["path"]).is_absolute() and Path(r["path"]).is_file() for r in recs)
    # Speaker-independent folds from `speaker`.
    folds = make_folds(recs, corpus_for_records(recs))
    assert len(folds) == 5
    for f in folds:
        assert not {recs[i]["speaker"] for i in f.test} & {recs[i]["speaker"] for i in f.train}
    # Audio resampled to 16 kHz on load: length = duration x 16000.
    for r in recs[::40]:
        wave, sr = load_audio(r["path"], 16000)
        assert sr == 16000 and abs(len(wave) - r["duration"] * 16000) <= 1
