"""Extraction runs: resume after SIGKILL and Ctrl-C, the writer lock, per-utterance failures,
fingerprint refusal, frames, the command line, and the real URDU corpus."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emoprobe.cache.lock import CacheLock, lock_path
from emoprobe.cli import main
from emoprobe.data.manifest import read_manifest, write_manifest
from emoprobe.errors import CacheError, ExtractionError
from emoprobe.extract import extract, open_cache, run_extraction
from emoprobe.testing.models import build_model, write_corpus

pytestmark = [pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask"),
              pytest.mark.usefixtures("one_torch_thread")]

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
WHISPER_TINY = SHARED / "models" / "whisper-tiny.en"
URDU = SHARED / "data" / "urdu"



@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model("wav2vec2-layer", tmp_path_factory.mktemp("m") / "w2v")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    return write_corpus(tmp_path_factory.mktemp("c"), list(rng.uniform(0.4, 1.2, 60).round(3)))


@pytest.fixture(scope="module")
def reference(corpus: Path, model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run, frames of layers 0 and 2 included."""
    result = extract(corpus, str(model), tmp_path_factory.mktemp("ref"), batch_seconds=4,
                     frames="0,-1", progress=False, torch_threads=1)
    assert result.summary.extracted == len(read_manifest(corpus))
    assert open_cache(result).path == result.path  # the result is path-like
    return result.path


def _child_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _assert_same_cache(path: Path, reference: Path, frames: bool = True) -> None:
    with open_cache(path) as a, open_cache(reference) as b:
        assert a.complete and a.usable.all() and a.ids == b.ids
        np.testing.assert_allclose(a.layers(), b.layers(), atol=1e-5, rtol=0)
        np.testing.assert_array_equal(a.n_frames, b.n_frames)
        assert a.fingerprint == b.fingerprint
        if frames:
            assert a.frame_layers == b.frame_layers == [0, 2]
            for utt in a.ids[::7]:
                np.testing.assert_allclose(a.frames(utt, 2), b.frames(utt, 2), atol=1e-5)


_KILL_AFTER = """
import os, signal, torch
torch.set_num_threads(1)
from emoprobe.extract import extract
def on_batch(info):
    if info["batch"] == {after}:
        os.kill(os.getpid(), signal.SIGKILL)
extract({manifest!r}, {model!r}, {out!r}, batch_seconds=4, frames="0,-1", progress=False,
        on_batch=on_batch)
"""


@pytest.mark.slow
def test_resume_after_sigkill_equals_uninterrupted(corpus: Path, model: Path, reference: Path,
                                                   tmp_path: Path) -> None:
    code = _KILL_AFTER.format(after=3, manifest=str(corpus), model=str(model),
                              out=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", code], env=_child_env(), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    path = tmp_path / "w2v.h5"
    with open_cache(path, allow_incomplete=True) as c:
        done = int(c.done.sum())
        assert not c.complete and 0 < done < 60
    result = run_extraction(corpus, str(model), tmp_path, batch_seconds=4, frames="0,-1",
                            progress=False, torch_threads=1)
    assert result.summary.reused == done and result.summary.extracted == 60 - done
    _assert_same_cache(path, reference)
    assert not lock_path(path).exists() and not (tmp_path / "w2v.h5.frames").exists()


def _wait_for_progress(path: Path, proc: subprocess.Popen, minimum: int) -> int:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _, err = proc.communicate()
            raise AssertionError(f"the extraction ended before it could be interrupted: {err}")
        if path.exists():
            try:
                with open_cache(path, allow_incomplete=True) as c:
                    if c.done.sum() >= minimum:
                        return int(c.done.sum())
            except CacheError:
                pass  # being renamed into place
        time.sleep(0.01)
    raise AssertionError("no progress within two minutes")


def _cli_child(corpus: Path, model: Path, out: Path) -> subprocess.Popen:
    args = [sys.executable, "-m", "emoprobe", "extract", "--manifest", str(corpus),
            "--model", str(model), "--out", str(out), "--batch-seconds", "0.5",
            "--frames", "0,-1", "--no-progress"]
    return subprocess.Popen(args, env=_child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_interrupted_cli_run_resumes(sig: signal.Signals, corpus: Path, model: Path,
                                     reference: Path, tmp_path: Path) -> None:
    """A real `emoprobe extract` interrupted at a random moment (SIGKILL: no cleanup at all;
    SIGINT: Ctrl-C) is finished by running the same command again."""
    proc = _cli_child(corpus, model, tmp_path)
    path = tmp_path / "w2v.h5"
    _wait_for_progress(path, proc, 2)
    time.sleep(np.random.default_rng().uniform(0, 0.05))
    os.kill(proc.pid, sig)
    _, stderr = proc.communicate(timeout=60)
    if sig == signal.SIGINT:
        assert proc.returncode == 130, stderr
        assert "interrupted" in stderr and "run the same command again to resume" in stderr
        assert not lock_path(path).exists()
    else:
        assert proc.returncode == -signal.SIGKILL
    with open_cache(path, allow_incomplete=True) as c:
        assert not c.complete and 0 < c.done.sum() < 60
    rc = main(["extract", "--manifest", str(corpus), "--model", str(model), "--out",
               str(tmp_path), "--batch-seconds", "0.5", "--frames", "0,-1", "--no-progress"])
    assert rc == 0
    _assert_same_cache(path, reference)


_HOLD_LOCK = """
import sys, time
from emoprobe.cache.lock import CacheLock
lock = CacheLock({path!r}).acquire()
print("locked", flush=True)
time.sleep(120)
"""


@pytest.mark.slow
def test_lock_refuses_a_second_writer_and_dies_with_its_owner(corpus: Path, model: Path,
                                                                tmp_path: Path) -> None:
    path = tmp_path / "w2v.h5"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK.format(path=str(path))],
                              env=_child_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(CacheError, match=rf"another extraction is writing.*pid {holder.pid}"):
            extract(corpus, str(model), tmp_path, progress=False)
        with pytest.raises(CacheError, match="another extraction"), CacheLock(path):
            pass
    finally:
        holder.kill()  # SIGKILL: no cleanup, the kernel drops the flock
        holder.wait()
    assert extract(corpus, str(model), tmp_path, progress=False, torch_threads=1).path == path
    assert not lock_path(path).exists()


@pytest.fixture()
def broken_corpus(tmp_path: Path) -> Path:
    """Good utterances plus every kind of bad one: missing, not audio, empty, NaN samples
    (header fine, decoding fails), too short for the model."""
    manifest = write_corpus(tmp_path / "c", [0.6, 0.9, 0.6])
    records = read_manifest(manifest)
    wav = tmp_path / "c" / "wav"
    (wav / "garbage.wav").write_bytes(b"RIFF not really audio")
    sf.write(wav / "empty.wav", np.zeros(0, np.float32), 16000)
    sf.write(wav / "nan.wav", np.full(8000, np.nan, np.float32), 16000, subtype="FLOAT")
    sf.write(wav / "short.wav", np.zeros(100, np.float32), 16000)
    for name in ("missing", "garbage", "empty", "nan", "short"):
        records.append({"id": name, "path": str(wav / f"{name}.wav"), "label": "neu"})
    return write_manifest(records, tmp_path / "broken.jsonl")


def test_on_error_stop_names_the_utterance(broken_corpus: Path, model: Path,
                                           tmp_path: Path) -> None:
    with pytest.raises(ExtractionError) as info:
        extract(broken_corpus, str(model), tmp_path, progress=False)
    message = str(info.value)
    for name in ("missing", "garbage", "empty"):  # found by the check before any model work
        assert f"utterance {name!r}" in message
    assert "--on-error skip" in message
    with open_cache(tmp_path / "w2v.h5", allow_incomplete=True) as c:
        assert c.done.sum() == 0


def test_on_error_skip_records_every_failure(broken_corpus: Path, model: Path,
                                             tmp_path: Path, capsys) -> None:
    rc = main(["extract", "--manifest", str(broken_corpus), "--model", str(model), "--out",
               str(tmp_path), "--on-error", "skip", "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "8 total, 3 extracted now, 0 reused from an earlier run, 5 failed" in out
    with open_cache(tmp_path / "w2v.h5") as c:
        assert c.complete and c.usable.sum() == 3
        assert set(c.failed) == {"missing", "garbage", "empty", "nan", "short"}
        assert c.failed["missing"].startswith("missing file")
        assert "NaN or Inf samples" in c.failed["nan"]
        assert "too short: 100 samples" in c.failed["short"]
        assert c.meta["counts"] == {"total": 8, "usable": 3, "failed": 5}
    assert main(["info", str(tmp_path / "w2v.h5")]) == 0
    info = capsys.readouterr().out
    assert "3 usable, 5 failed" in info and "nan: unreadable audio" not in info
    assert "short: too short" in info


def test_other_model_or_settings_are_refused_never_reused(corpus: Path, model: Path,
                                                      tmp_path: Path) -> None:
    small = write_manifest(read_manifest(corpus)[:6], tmp_path / "small.jsonl")
    path = extract(small, str(model), tmp_path, progress=False).path
    again = run_extraction(small, str(model), tmp_path, progress=False)
    assert again.summary.reused == 6 and again.summary.extracted == 0
    other = write_manifest(read_manifest(corpus)[:7], tmp_path / "other.jsonl")
    grown = run_extraction(other, str(model), tmp_path, progress=False).summary
    assert (grown.extracted, grown.reused, grown.total) == (1, 6, 7)
    with pytest.raises(CacheError, match="different output settings"):
        extract(small, str(model), tmp_path, progress=False, dtype="bfloat16")
    with pytest.raises(CacheError, match="different output settings"):
        extract(small, str(model), tmp_path, progress=False, frames="1")
    twin = build_model("wav2vec2-layer", tmp_path / "seed1" / model.name, seed=1)
    with pytest.raises(CacheError, match=r"different model \(checkpoint"):
        extract(small, str(twin), tmp_path, progress=False)  # same name, other weights
    assert extract(other, str(model), tmp_path, progress=False, overwrite=True).path == path
    with open_cache(path) as c:
        assert len(c.ids) == 7


def test_frames_are_stored_per_utterance(corpus: Path, model: Path, reference: Path) -> None:
    with open_cache(reference) as c:
        assert c.frame_layers == [0, 2] and c.meta["frame_layers"] == [0, 2]
        for i, utt in enumerate(c.ids[:10]):
            frames = c.frames(utt, 2)
            assert frames.shape == (c.n_frames[i], c.dim)
            np.testing.assert_allclose(frames.mean(0), c.layer(2)[i], atol=1e-5)


def test_info_lists_everything(reference: Path, capsys) -> None:
    assert main(["info", str(reference)]) == 0
    out = capsys.readouterr().out
    for text in ("state: complete", "60 usable, 0 failed", "3 layers x 32 dims",
                 "layer_convention: 0 = embedding output", "fingerprint: ", "versions: ",
                 "settings: ", "model_type: wav2vec2", "commit_hash: local-sha256:"):
        assert text in out, text
    assert main(["info", "--json", str(reference)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["complete"] is True and data["usable"] == 60 and data["n_layers"] == 3


@pytest.mark.slow
@pytest.mark.skipif(not (URDU / "manifest.jsonl").is_file() or not WHISPER_TINY.is_dir(),
                    reason=f"needs {URDU} and {WHISPER_TINY}")
def test_urdu_with_whisper_fbank_and_egemaps(tmp_path: Path, capsys) -> None:
    records = read_manifest(URDU / "manifest.jsonl")
    subset = [dict(r, corpus="urdu") for r in records[::50]]  # 8 utterances, all emotions
    manifest = write_manifest(subset, tmp_path / "urdu.jsonl")
    shapes = {}
    for model, name in ((str(WHISPER_TINY), "whisper-tiny.en"), ("fbank", "fbank"),
                        ("egemaps", "egemaps")):
        assert main(["extract", "--manifest", str(manifest), "--model", model, "--out",
                     str(tmp_path / "features"), "--no-progress"]) == 0
        with open_cache(tmp_path / "features" / f"{name}.h5") as c:
            assert c.complete and c.usable.all() and c.labels == [r["label"] for r in subset]
            assert np.isfinite(c.layers()).all()
            np.testing.assert_allclose(c.duration, [sf.info(r["path"]).duration
                                                    for r in subset], atol=1e-3)
            shapes[name] = (c.n_layers, c.dim)
    assert shapes == {"whisper-tiny.en": (5, 384), "fbank": (1, 160), "egemaps": (1, 88)}
    capsys.readouterr()
    assert main(["info", *(str(p) for p in sorted((tmp_path / "features").glob("*.h5")))]) == 0
    out = capsys.readouterr().out
    assert out.count("state: complete") == 3 and "model_type: whisper" in out


def test_max_seconds_shorter_than_the_receptive_field_is_refused(corpus: Path, model: Path,
                                                                 tmp_path: Path) -> None:
    with pytest.raises(ExtractionError, match=r"--max-seconds 0.005 is too short.*0.013 s"):
        extract(corpus, str(model), tmp_path, progress=False, max_seconds=0.005)
