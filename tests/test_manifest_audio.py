"""The manifest contract and audio reading: schema checks, paths, tar members, resampling."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emoprobe.data.audio import audio_info, load_audio, resample
from emoprobe.data.corpora import IEMOCAP, corpus_for_records, get_corpus
from emoprobe.data.folds import assign_speaker_folds, make_folds
from emoprobe.data.manifest import read_manifest, write_manifest
from emoprobe.data.tasks import identity_task
from emoprobe.errors import AudioError, ManifestError


def _tone(freq: float, sr: int, seconds: float, channels: int = 1) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    x = 0.5 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def _write_jsonl(path: Path, rows: list) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_manifest_roundtrip_resolves_relative_paths(tmp_path: Path) -> None:
    rows = [
        {"id": "a", "path": "wav/a.wav", "label": "neu", "speaker": "s1", "session": 1},
        {"id": "b", "path": "/abs/b.wav", "label": "ang", "sentence": "Hi."},
        {"id": "c", "path": "shards/x.tar::c.wav", "label": "sad"},
    ]
    _write_jsonl(tmp_path / "m.jsonl", rows)
    recs = read_manifest(tmp_path / "m.jsonl")
    assert recs[0]["path"] == str(tmp_path / "wav" / "a.wav")
    assert recs[1]["path"] == "/abs/b.wav"
    assert recs[2]["path"] == f"{tmp_path / 'shards' / 'x.tar'}::c.wav"
    other = read_manifest(tmp_path / "m.jsonl", audio_root=tmp_path / "audio")
    assert other[0]["path"] == str(tmp_path / "audio" / "wav" / "a.wav")
    write_manifest(recs, tmp_path / "out" / "m2.jsonl")
    assert read_manifest(tmp_path / "out" / "m2.jsonl") == recs


def test_seed_record_form_is_accepted(tmp_path: Path) -> None:
    _write_jsonl(
        tmp_path / "m.jsonl",
        [{"id": "Ses01F_impro01_F000", "sentence": "Excuse me.", "label": "neu", "path": "x"}],
    )
    assert read_manifest(tmp_path / "m.jsonl")[0]["sentence"] == "Excuse me."


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"id": "a", "path": "x.wav"}, r"lacks required field\(s\) label"),
        ({"id": "a", "path": "x.wav", "label": 3}, "field 'label' is int"),
        ({"id": "a", "path": "x.wav", "label": "neu", "split": "dev"}, "split 'dev'"),
        ({"id": "a", "path": "x.wav", "label": "neu", "duration": -1.0}, "duration -1.0"),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_bad_records_name_file_and_line(tmp_path: Path, row: object, message: str) -> None:
    _write_jsonl(tmp_path / "m.jsonl", [{"id": "ok", "path": "o.wav", "label": "neu"}, row])
    with pytest.raises(ManifestError, match=message) as err:
        read_manifest(tmp_path / "m.jsonl")
    assert f"{tmp_path / 'm.jsonl'}:2" in str(err.value)


def test_duplicate_ids_and_bad_json_are_errors(tmp_path: Path) -> None:
    row = {"id": "a", "path": "x.wav", "label": "neu"}
    _write_jsonl(tmp_path / "dup.jsonl", [row, row])
    with pytest.raises(ManifestError, match=r"dup.jsonl:2: duplicate id 'a' \(first seen on li"):
        read_manifest(tmp_path / "dup.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"id": "a",\n')
    with pytest.raises(ManifestError, match="bad.jsonl:1: not valid JSON"):
        read_manifest(tmp_path / "bad.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ManifestError, match="holds no records"):
        read_manifest(tmp_path / "empty.jsonl")


def test_load_audio_downmixes_and_resamples_with_antialiasing(tmp_path: Path) -> None:
    sr = 44100
    stereo = np.stack([_tone(440, sr, 1.0), np.zeros(sr, np.float32)], axis=1)
    sf.write(tmp_path / "s.wav", stereo, sr, subtype="PCM_16")
    wave, out_sr = load_audio(str(tmp_path / "s.wav"), 16000)
    assert out_sr == 16000 and wave.dtype == np.float32 and wave.ndim == 1
    assert len(wave) == 16000
    assert np.abs(wave).max() == pytest.approx(0.25, abs=0.01)  # mono = mean of channels
    # A 10 kHz tone lies above the 8 kHz Nyquist limit of 16 kHz: it must be filtered out,
    # not folded back to 6 kHz as naive decimation would.
    sf.write(tmp_path / "hi.wav", _tone(10000, sr, 1.0), sr, subtype="FLOAT")
    hi, _ = load_audio(str(tmp_path / "hi.wav"), 16000)
    assert np.sqrt(np.mean(hi[1000:-1000] ** 2)) < 0.01
    info = audio_info(str(tmp_path / "s.wav"))
    assert (info.sample_rate, info.frames, info.channels) == (sr, sr, 2)
    assert info.duration == pytest.approx(1.0)


def test_resample_identity_and_ratio() -> None:
    x = np.random.default_rng(0).standard_normal(4800).astype(np.float32)
    assert resample(x, 48000, 48000) is x
    assert resample(x, 48000, 16000).shape == (1600,)


def test_tar_members_are_read_without_extraction(tmp_path: Path) -> None:
    buf = io.BytesIO()
    sf.write(buf, _tone(220, 44100, 0.5), 44100, format="WAV", subtype="PCM_16")
    data = buf.getvalue()
    with tarfile.open(tmp_path / "shard.tar", "w") as tf:
        info = tarfile.TarInfo("G01/utt_001.wav")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    path = f"{tmp_path / 'shard.tar'}::G01/utt_001.wav"
    assert audio_info(path).frames == 22050
    wave, sr = load_audio(path, 16000)
    assert sr == 16000 and len(wave) == 8000
    with pytest.raises(AudioError, match="utt_002.wav: no such member"):
        load_audio(f"{tmp_path / 'shard.tar'}::G01/utt_002.wav")
    with pytest.raises(AudioError, match="nope.tar: cannot open tar archive"):
        load_audio(f"{tmp_path / 'nope.tar'}::x.wav")


def test_audio_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="missing.wav: unreadable audio"):
        load_audio(str(tmp_path / "missing.wav"))
    (tmp_path / "junk.wav").write_bytes(b"RIFF0000WAVEjunkjunk")
    with pytest.raises(AudioError, match="junk.wav: unreadable audio"):
        audio_info(str(tmp_path / "junk.wav"))
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="empty.wav: zero-length audio"):
        load_audio(str(tmp_path / "empty.wav"))


def test_iemocap_task_merges_exc_into_hap() -> None:
    task = IEMOCAP.task("4class")
    keep, y = task.apply(["neu", "exc", "fru", "hap", "xxx", "sad", "ang"])
    assert keep.tolist() == [0, 1, 3, 5, 6]
    assert [task.classes[i] for i in y] == ["neu", "hap", "hap", "sad", "ang"]
    with pytest.raises(ManifestError, match="defines no task '7class'; defined: 4class"):
        IEMOCAP.task("7class")
    with pytest.raises(ManifestError, match="known: iemocap, msp_improv, emotiontalk"):
        get_corpus("ravdess")


def test_published_counts_are_consistent() -> None:
    et = get_corpus("emotiontalk").expected
    assert et["7class"].total == sum(et["7class"].folds.values()) == 19250
    assert et["4class"].folds == {"train": 13243, "validation": 1610, "test": 1560}
    iem = IEMOCAP.expected["4class"]
    assert sum(iem.labels.values()) == sum(iem.folds.values()) == iem.total == 5531


def _records(n_speakers: int = 6, per: int = 8) -> list[dict]:
    labels = ["a", "b", "c", "d"]
    return [
        {"id": f"s{s}_{i}", "path": "x", "label": labels[i % 4], "speaker": f"s{s}",
         "session": s // 2 + 1}
        for s in range(n_speakers)
        for i in range(per)
    ]


def test_loso_folds_cover_each_record_once_as_test() -> None:
    recs = _records()
    spec = corpus_for_records(recs)
    assert spec.fold_key == "session" and spec.default_task == "all"
    folds = make_folds(recs, spec)
    assert [f.name for f in folds] == ["session1", "session2", "session3"]
    tested = np.concatenate([f.test for f in folds])
    assert sorted(tested.tolist()) == list(range(len(recs)))
    for f in folds:
        assert not set(f.train) & set(f.test)


def test_official_split_folds() -> None:
    recs = [
        {"id": str(i), "path": "x", "label": "a", "split": s}
        for i, s in enumerate(["train"] * 5 + ["validation"] * 2 + ["test"] * 3)
    ]
    (fold,) = make_folds(recs, corpus_for_records(recs))
    assert (fold.train.size, fold.validation.size, fold.test.size) == (5, 2, 3)
    bad = [*recs[:5], {"id": "z", "path": "x", "label": "a", "split": "train"}]
    with pytest.raises(ManifestError, match="no 'test' utterances"):
        make_folds(bad, corpus_for_records(bad))


def test_speaker_folds_are_speaker_disjoint_and_seeded() -> None:
    recs = [{k: v for k, v in r.items() if k != "session"} for r in _records(10, 8)]
    with pytest.raises(ManifestError, match="no complete fold, session or split"):
        corpus_for_records(recs)
    a = assign_speaker_folds(recs, 5, seed=1)
    b = assign_speaker_folds(recs, 5, seed=1)
    assert a == b and {r["fold_seed"] for r in a} == {1}
    spk_fold: dict[str, set] = {}
    for r in a:
        spk_fold.setdefault(r["speaker"], set()).add(r["fold"])
    assert all(len(v) == 1 for v in spk_fold.values())
    assert len(make_folds(a, corpus_for_records(a))) == 5
    with pytest.raises(ManifestError, match="need at least 20 speakers, found 10"):
        assign_speaker_folds(recs, 20)


def test_identity_task_sorts_labels() -> None:
    t = identity_task(["sad", "ang", "sad"])
    assert t.classes == ("ang", "sad")
