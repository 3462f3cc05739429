"""`emoprobe prepare` on all four sources and `emoprobe demo`, through the real entry point."""

from __future__ import annotations

import contextlib
import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from emoprobe.cli import main
from emoprobe.data.audio import load_audio
from emoprobe.data.demo import make_demo_corpus
from emoprobe.data.manifest import read_manifest
from emoprobe.testing.layouts import make_emotiontalk_tars, make_iemocap_tree, make_msp_improv_tree


def _prepare(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["prepare", *args, "--no-progress"])
    out, err = capsys.readouterr()
    return code, out, err


def test_prepare_iemocap(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fx = make_iemocap_tree(tmp_path / "IEMOCAP_full_release")
    out = tmp_path / "iemocap.jsonl"
    code, stdout, err = _prepare(capsys, "iemocap", "--root", str(fx.root), "--out", str(out),
                                 "--check")
    assert code == 1 and not out.exists()
    assert "emoprobe prepare: error: iemocap: 12 count(s) differ" in err
    assert "session 1" in stdout and "check of iemocap: 50 utterances, no problems" in stdout
    code, stdout, _ = _prepare(capsys, "iemocap", "--root", str(fx.root), "--out", str(out),
                               "--check", "--allow-subset")
    assert code == 0, stdout
    assert "warning: 12 count(s) differ from the published ones" in stdout
    assert "(1 over 30 s)" in stdout and "transcripts: 1 utterance(s) have none" in stdout
    recs = read_manifest(out)
    assert sorted(r["id"] for r in recs) == sorted(fx.utterances)


@pytest.mark.parametrize("audio_level", [True, False])
def test_prepare_msp_improv(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                            audio_level: bool) -> None:
    fx = make_msp_improv_tree(tmp_path / "MSP-IMPROV", audio_level=audio_level)
    out = tmp_path / "msp.jsonl"
    code, stdout, _ = _prepare(capsys, "msp_improv", "--root", str(fx.root), "--out", str(out),
                               "--check", "--allow-subset")
    assert code == 0, stdout
    assert "sample rates 16000 Hz x24, 48000 Hz x24" in stdout
    assert "4class: total 36 (published 7798)" in stdout
    recs = read_manifest(out)
    assert Counter(r["session"] for r in recs) == dict.fromkeys(range(1, 7), 8)


def test_prepare_emotiontalk(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fx = make_emotiontalk_tars(tmp_path / "EmotionTalk")
    out = tmp_path / "et.jsonl"
    code, stdout, _ = _prepare(capsys, "emotiontalk", "--root", str(fx.root), "--out", str(out),
                               "--check", "--allow-subset")
    assert code == 0, stdout
    assert "labels: audio-modality emotion_result" in stdout
    assert "task 7class (official-split)" in stdout and "task 4class" in stdout
    recs = read_manifest(out)
    assert {r["id"]: r["label"] for r in recs} == {
        u: f["label"] for u, f in fx.utterances.items()}
    wave, sr = load_audio(recs[0]["path"], 16000)  # the tar member, read in place
    assert sr == 16000 and wave.size > 0


def test_prepare_generic_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fx = make_msp_improv_tree(tmp_path / "msp")
    root = fx.root
    lines = ["id,path,label,speaker"] + [
        f"{u},{Path(f['path']).relative_to(root)},{f['label']},{f['speaker']}"
        for u, f in fx.utterances.items()
    ]
    (root / "list.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "generic.jsonl"
    code, stdout, err = _prepare(capsys, "manifest", "--root", str(root / "list.csv"),
                                 "--out", str(out), "--check")
    assert code == 1 and "records carry no complete fold, session or split field" in err
    code, stdout, _ = _prepare(capsys, "manifest", "--root", str(root / "list.csv"),
                               "--out", str(out), "--check", "--folds", "4", "--seed", "3",
                               "--name", "msp_generic")
    assert code == 0, stdout
    assert "folds: 4 speaker-independent folds from `speaker`, seed 3" in stdout
    assert "task all (leave-one-fold-out)" in stdout and "published" not in stdout
    recs = read_manifest(out)
    assert {r["corpus"] for r in recs} == {"msp_generic"} and {r["fold_seed"] for r in recs} == {3}
    code, _, err = _prepare(capsys, "iemocap", "--root", str(root), "--out", str(out),
                            "--folds", "3")
    assert code == 2 and "option(s) folds apply only to `manifest`" in err


def test_prepare_check_reports_bad_items(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    fx = make_iemocap_tree(tmp_path / "iem", long_utterance=False)
    gone = Path(fx.utterances["Ses02F_impro01_M001"]["path"])
    gone.unlink()
    out = tmp_path / "m.jsonl"
    code, stdout, err = _prepare(capsys, "iemocap", "--root", str(fx.root), "--out", str(out),
                                 "--check", "--allow-subset")
    assert code == 1 and not out.exists()
    assert f"missing file (1):\n  Ses02F_impro01_M001: {gone}: no such file" in stdout
    assert "1 missing file; manifest not written" in err


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("demo")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["demo", "--out", str(out)])
    assert code == 0, buf.getvalue()
    return out, buf.getvalue()


def test_demo_writes_an_iemocap_tree_and_a_checked_manifest(demo) -> None:
    out, stdout = demo
    recs = read_manifest(out / "manifest.jsonl")
    assert len(recs) == 160 and {r["corpus"] for r in recs} == {"iemocap"}
    assert Counter(r["label"] for r in recs) == {"neu": 40, "ang": 30, "sad": 30, "hap": 20,
                                                 "exc": 20, "fru": 10, "xxx": 10}
    assert len({r["speaker"] for r in recs}) == 10 and {r["session"] for r in recs} == set(
        range(1, 6))
    assert all(1.0 <= r["duration"] <= 3.0 and r["sample_rate"] == 16000 for r in recs)
    assert all(r["sentence"] for r in recs)
    assert "its counts are not IEMOCAP's" in stdout and "check of iemocap: 160 utterances, no" \
        " problems" in stdout
    assert "warning: 12 count(s) differ from the published ones" in stdout
    label_file = out / "corpus" / "Session3" / "dialog" / "EmoEvaluation" / "Ses03F_impro01.txt"
    text = label_file.read_text()
    assert text.startswith("% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]")
    assert "\nC-E1:\t" in text and "\nA-E1:\tval " in text


def _f0(wave: np.ndarray, sr: int) -> float:
    """Median cepstral pitch (70-400 Hz) of the loud 64 ms frames."""
    n = int(0.064 * sr)
    frames = wave[: len(wave) // n * n].reshape(-1, n)
    energy = (frames**2).mean(1)
    lo, hi = sr // 400, sr // 70
    f0s = []
    for fr in frames[energy > 0.3 * energy.max()]:
        cepstrum = np.fft.irfft(np.log(np.abs(np.fft.rfft(fr * np.hanning(n))) + 1e-9))
        f0s.append(sr / (lo + int(np.argmax(cepstrum[lo:hi]))))
    return float(np.median(f0s))


def test_demo_classes_differ_in_prosody(demo) -> None:
    out, _ = demo
    feats: dict[str, list[tuple[float, float, float]]] = {}
    for r in read_manifest(out / "manifest.jsonl"):
        if r["gender"] != "F" or r["label"] not in ("neu", "hap", "ang", "sad"):
            continue
        wave, sr = load_audio(r["path"])
        spectrum = np.abs(np.fft.rfft(wave)) ** 2
        centroid = float((np.fft.rfftfreq(len(wave), 1 / sr) * spectrum).sum() / spectrum.sum())
        feats.setdefault(r["label"], []).append(
            (float(np.abs(wave).max()), _f0(wave, sr), centroid))
    med = {k: np.median(v, axis=0) for k, v in feats.items()}
    peak, pitch, bright = ({k: m[i] for k, m in med.items()} for i in range(3))
    assert peak["ang"] > peak["hap"] > peak["neu"] > peak["sad"]
    assert pitch["hap"] > pitch["neu"] > pitch["sad"] and pitch["ang"] > pitch["neu"]
    assert bright["ang"] > bright["neu"] > bright["sad"]


def test_demo_generation_is_deterministic(tmp_path: Path) -> None:
    a = make_demo_corpus(tmp_path / "a", seed=3, sessions=2)
    b = make_demo_corpus(tmp_path / "b", seed=3, sessions=2)
    c = make_demo_corpus(tmp_path / "c", seed=4, sessions=2)
    assert a.n_utterances == 64 and a.labels == b.labels
    files = sorted(p.relative_to(a.root) for p in a.root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b.root) for p in b.root.rglob("*") if p.is_file())
    assert all((a.root / f).read_bytes() == (b.root / f).read_bytes() for f in files)
    wav = next(f for f in files if f.suffix == ".wav")
    assert (a.root / wav).read_bytes() != (c.root / wav).read_bytes()
    assert json.dumps(a.labels) == json.dumps(c.labels)
