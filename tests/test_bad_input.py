"""Bad input and faults across every command: one row per case.

Each row runs the command line in-process (a few need a subprocess: resource limits, closed
pipes, signals) and asserts the exit status (2 for a usage mistake, 1 for a data or
environment problem), that the one-line message names the offending file, option or key, that
no traceback is printed, and that nothing partial is left where a complete output belongs.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pytest
import soundfile as sf

from emoprobe.cli import main
from emoprobe.testing.models import synth_wave, write_corpus
from tests.probe_fixtures import planted_cache

TRACEBACK = "Traceback (most recent call last)"


@dataclass
class World:
    """Small inputs, good and bad, built once for the module."""

    root: Path
    held: list = field(default_factory=list)  # locks held for the module's lifetime

    def __getattr__(self, name: str) -> Path:  # w.x -> root/x, for readable rows
        return self.root / name


@pytest.fixture(scope="module")
def w(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("bad-input")
    world = World(root)
    manifest = write_corpus(root / "corpus", [0.3] * 8, seed=3)
    (root / "manifest.jsonl").write_text(manifest.read_text().replace(
        '"path": "wav/', f'"path": "{root}/corpus/wav/'))
    (root / "adir").mkdir()
    (root / "afile").write_text("just a file\n")
    (root / "binary.jsonl").write_bytes(b"\x80\x81binary\n")
    (root / "latin1.csv").write_bytes(
        "id,path,label\nu1,corpus/wav/utt0000.wav,neu\ncaf\u00e9,corpus/wav/utt0001.wav,ang\n"
        .encode("latin-1"))
    (root / "dup_header.csv").write_text(
        "id,path,label,label\nu1,corpus/wav/utt0000.wav,neu,ang\n")
    rec = {"id": "u1", "path": "corpus/wav/utt0000.wav", "label": "neu", "fold": True}
    (root / "fold_true.jsonl").write_text(json.dumps(rec) + "\n")
    (root / "bad_json.jsonl").write_text('{"id": "u1", "path": "a.wav", "label": "neu"}\n{"id"\n')
    (root / "no_label.jsonl").write_text('{"id": "u1", "path": "a.wav"}\n')
    (root / "not_h5.h5").write_text("not hdf5\n")
    (root / "manifest.h5").mkdir()  # a folder where a cache file is expected
    # Audio: infinite samples (float WAV) and a WAV cut short of its header's length.
    sr = 16000
    inf = synth_wave(0.3, sr, seed=1)
    inf[100] = np.inf
    sf.write(root / "corpus" / "wav" / "inf.wav", inf, sr, subtype="FLOAT")
    whole = (root / "corpus" / "wav" / "utt0002.wav").read_bytes()
    (root / "corpus" / "wav" / "cut.wav").write_bytes(whole[: len(whole) // 2])
    lines = manifest.read_text().splitlines()
    for name in ("inf", "cut"):
        r = json.loads(lines[0])
        r.update(id=name, path=f"wav/{name}.wav")
        (root / "corpus" / f"{name}.jsonl").write_text(json.dumps(r) + "\n" + "\n".join(
            lines[1:]) + "\n")
    # A cache and a finished probe results folder, then damaged copies of the folder.
    planted_cache(root / "cache" / "up.h5")
    planted_cache(root / "cache" / "one-class.h5", classes=("neu",), priors=None)
    good = (root / "cache" / "up.h5").read_bytes()  # a damaged copy: the root group's name
    (root / "heap.h5").write_bytes(good.replace(b"HEAP", b"HEAQ", 1))  # heap unreadable
    for name in ("nodone", "badjson", "flipped"):
        (root / f"{name}.h5").write_bytes(good)
    with h5py.File(root / "nodone.h5", "r+") as f:
        del f["done"]
    with h5py.File(root / "badjson.h5", "r+") as f:
        f.attrs["_json_attrs"] = '{"broken'
    with h5py.File(root / "flipped.h5", "r+") as f:  # one stored value changed
        row = f["pooled"][0, 3]
        row[0] += 1.0
        f["pooled"][0, 3] = row
    (root / "damaged-out").mkdir()
    shutil.copy(root / "nodone.h5", root / "damaged-out" / "fbank.h5")
    assert main(["probe", str(root / "cache" / "up.h5"), "--out", str(root / "results"),
                 "--seeds", "1", "--layers", "3", "--bootstrap", "0", "--no-progress",
                 "--no-report"]) == 0
    for name, target, data in (
        ("res_protocol_cut", "protocol.json", None),
        ("res_protocol_binary", "protocol.json", b"\x00\xff\xfe"),
        ("res_summary_cut", "summary.csv", None),
        ("res_summary_binary", "summary.csv", b"dataset,task\n\xff\xfe\x00\n"),
    ):
        shutil.copytree(root / "results", root / name)
        path = root / name / target
        path.write_bytes(data if data is not None else path.read_bytes()[: -40])
    return world


def config(w: World, name: str, *, corpus: str = "", upstream: str = "", probe: str = "",
           top: str = "", report: str = "") -> Path:
    """A run config that is valid except for the lines given; `out` is w/<name>-out."""
    text = (f'out = "{name}-out"\n{top}\n'
            f'[[corpus]]\nsource = "manifest"\nroot = "manifest.jsonl"\nallow_subset = true\n'
            f'{corpus}\n[[upstream]]\nmodel = "fbank"\n{upstream}\n[probe]\nseeds = 1\n{probe}\n'
            f'[report]\n{report}\n')
    path = w.root / f"{name}.toml"
    path.write_text(text)
    return path


@dataclass
class Case:
    """One bad input: the command line, the expected status, the words the message must hold
    (`{root}` is the test folder) and outputs that must not exist afterwards."""

    argv: Callable[[World], list[str]]
    status: int
    names: tuple[str, ...]
    absent: tuple[str, ...] = ()
    report: bool = False  # the message is a report on stdout, not an error line


def _row(id: str, argv: Callable[[World], list[str]], status: int, *names: str,
         absent: tuple[str, ...] = (), report: bool = False) -> pytest.param:
    return pytest.param(Case(argv, status, names, absent, report), id=id)


EXTRACT = ["extract", "--model", "fbank", "--no-progress"]
PROBE = ["--no-progress", "--seeds", "1", "--bootstrap", "0"]


def _extract(w: World, *extra: str, manifest: str = "manifest.jsonl") -> list[str]:
    return [*EXTRACT, "--manifest", str(w.root / manifest), "--out", str(w.root / "x-out"),
            *extra]


def _probe(w: World, *extra: str, cache: str = "cache/up.h5") -> list[str]:
    return ["probe", str(w.root / cache), "--out", str(w.root / "p-out"), *PROBE, *extra]


def _prepare(w: World, root: str, *extra: str, out: str = "m-out.jsonl") -> list[str]:
    return ["prepare", "manifest", "--root", str(w.root / root), "--out", str(w.root / out),
            "--no-progress", *extra]


def _run(w: World, name: str, replace: tuple[str, str] = ("", ""), **parts: str) -> list[str]:
    path = config(w, name, **parts)
    path.write_text(path.read_text().replace(*replace))
    return ["run", str(path), "--no-progress"]


def _busy(w: World) -> list[str]:
    """A results folder another probe holds (its lock taken here, for the module)."""
    from emoprobe.cache.lock import ExclusiveLock, lock_path

    out = w.root / "busy-out"
    w.held.append(ExclusiveLock(lock_path(out), RuntimeError).acquire())
    return ["probe", str(w.root / "cache" / "up.h5"), "--out", str(out), *PROBE]


CASES = [
    # --- prepare: files and folders
    _row("prepare-missing-manifest", lambda w: _prepare(w, "nope.jsonl"), 1,
         "nope.jsonl", "no such manifest file", absent=("m-out.jsonl",)),
    _row("prepare-folder-without-manifest", lambda w: _prepare(w, "adir"), 1,
         "adir", "holds none of manifest.jsonl", absent=("m-out.jsonl",)),
    _row("prepare-binary-manifest", lambda w: _prepare(w, "binary.jsonl"), 1,
         "binary.jsonl:1", "not UTF-8 at byte 0", absent=("m-out.jsonl",)),
    _row("prepare-latin1-csv", lambda w: _prepare(w, "latin1.csv"), 1,
         "latin1.csv:3", "not UTF-8 at byte 47", "expected UTF-8 CSV", absent=("m-out.jsonl",)),
    _row("prepare-csv-duplicated-header", lambda w: _prepare(w, "dup_header.csv"), 1,
         "dup_header.csv:1", "label appear more than once", absent=("m-out.jsonl",)),
    _row("prepare-json-true-as-fold", lambda w: _prepare(w, "fold_true.jsonl"), 1,
         "fold_true.jsonl:1", "'fold' is bool True", absent=("m-out.jsonl",)),
    _row("prepare-bad-json-line", lambda w: _prepare(w, "bad_json.jsonl"), 1,
         "bad_json.jsonl:2", "not valid JSON", absent=("m-out.jsonl",)),
    _row("prepare-record-without-label", lambda w: _prepare(w, "no_label.jsonl"), 1,
         "no_label.jsonl:1", "label", absent=("m-out.jsonl",)),
    _row("prepare-out-under-a-file", lambda w: _prepare(w, "manifest.jsonl", "--folds", "2",
                                                        out="afile/m.jsonl"), 1,
         "afile", "is a file, where a folder is needed"),
    _row("prepare-out-is-a-folder", lambda w: _prepare(w, "manifest.jsonl", "--folds", "2",
                                                       out="adir"), 1, "adir", "folder"),
    # --- prepare: option values
    _row("prepare-folds-0", lambda w: _prepare(w, "manifest.jsonl", "--folds", "0"), 2,
         "--folds 0", ">= 2", absent=("m-out.jsonl",)),
    _row("prepare-folds-1", lambda w: _prepare(w, "manifest.jsonl", "--folds", "1"), 2,
         "--folds 1", ">= 2", absent=("m-out.jsonl",)),
    _row("prepare-folds-negative", lambda w: _prepare(w, "manifest.jsonl", "--folds", "-3"), 2,
         "--folds -3", absent=("m-out.jsonl",)),
    _row("prepare-workers-negative", lambda w: _prepare(w, "manifest.jsonl", "--workers", "-1"),
         2, "--workers -1", ">= 1", absent=("m-out.jsonl",)),
    _row("prepare-seed-negative", lambda w: _prepare(w, "manifest.jsonl", "--seed", "-1"), 2,
         "--seed -1", absent=("m-out.jsonl",)),
    _row("prepare-folds-on-a-named-corpus", lambda w: [
        "prepare", "iemocap", "--root", str(w.adir), "--out", str(w.root / "m-out.jsonl"),
        "--folds", "3"], 2, "folds apply only to `manifest`", absent=("m-out.jsonl",)),
    _row("prepare-unknown-corpus", lambda w: ["prepare", "timit", "--root", str(w.adir),
                                              "--out", "x"], 2, "timit", "choose from"),
    # --- extract: files and folders
    _row("extract-missing-manifest", lambda w: _extract(w, manifest="nope.jsonl"), 1,
         "nope.jsonl", "no such file", absent=("x-out",)),
    _row("extract-manifest-is-a-folder", lambda w: _extract(w, manifest="adir"), 1,
         "adir", "is a folder", absent=("x-out",)),
    _row("extract-binary-manifest", lambda w: _extract(w, manifest="binary.jsonl"), 1,
         "binary.jsonl:1", "not UTF-8", absent=("x-out",)),
    _row("extract-out-is-a-file", lambda w: [*EXTRACT, "--manifest", str(w.root / "manifest.jsonl"),
                                             "--out", str(w.afile)], 1, "afile"),
    _row("extract-missing-model-folder", lambda w: [
        *EXTRACT[:2], str(w.root / "no-model"), *EXTRACT[3:], "--manifest",
        str(w.root / "manifest.jsonl"), "--out", str(w.root / "x-out")], 1, "no-model",
        absent=("x-out/no-model.h5",)),
    _row("extract-cache-path-is-a-folder", lambda w: [
        *EXTRACT, "--manifest", str(w.root / "manifest.jsonl"), "--out", str(w.root), "--name",
        "manifest", "--overwrite"], 1, "manifest.h5", "is a folder, expected a file"),
    # --- extract: option values
    _row("extract-workers-negative", lambda w: _extract(w, "--workers", "-1"), 2,
         "--workers -1", ">= 1", absent=("x-out",)),
    _row("extract-batch-seconds-zero", lambda w: _extract(w, "--batch-seconds", "0"), 2,
         "--batch-seconds 0", "> 0", absent=("x-out",)),
    _row("extract-batch-seconds-nan", lambda w: _extract(w, "--batch-seconds", "nan"), 2,
         "--batch-seconds nan", "finite", absent=("x-out",)),
    _row("extract-max-seconds-negative", lambda w: _extract(w, "--max-seconds", "-1"), 2,
         "--max-seconds -1", absent=("x-out",)),
    _row("extract-frames-garbage", lambda w: _extract(w, "--frames", "first"), 2,
         "--frames: bad layer spec 'first'", absent=("x-out",)),
    _row("extract-name-with-parent", lambda w: _extract(w, "--name", "../escape"), 2,
         "--name '../escape'", "no path separators", absent=("x-out", "escape.h5")),
    _row("extract-name-with-slash", lambda w: _extract(w, "--name", "a/b"), 2,
         "--name 'a/b'", absent=("x-out",)),
    _row("extract-device-unknown", lambda w: _extract(w, "--device", "tpu"), 2,
         "device 'tpu'", "cuda:N", absent=("x-out",)),
    _row("extract-shard-out-of-range", lambda w: _extract(w, "--shard", "4/4"), 2,
         "shard 4 of 4 does not exist", absent=("x-out",)),
    _row("extract-shard-garbage", lambda w: _extract(w, "--shard", "first"), 2,
         "--shard expects K/N", absent=("x-out",)),
    _row("extract-launcher-without-shards", lambda w: _extract(w, "--launcher", "local"), 2,
         "--launcher needs --shards", absent=("x-out",)),
    _row("extract-shards-zero", lambda w: _extract(w, "--launcher", "local", "--shards", "0"), 2,
         "--shards must be between 1 and the 8", absent=("x-out/fbank.h5",)),
    _row("extract-retries-negative", lambda w: _extract(w, "--launcher", "local", "--shards",
                                                        "2", "--retries", "-1"), 2,
         "--retries", absent=("x-out/fbank.h5",)),
    _row("extract-cpus-per-task-zero", lambda w: _extract(w, "--launcher", "local", "--shards",
                                                          "2", "--cpus-per-task", "0"), 2,
         "--cpus-per-task 0", absent=("x-out/fbank.h5",)),
    _row("extract-time-garbage", lambda w: _extract(w, "--launcher", "local", "--shards", "2",
                                                    "--time", "soon"), 2, "--time",
         absent=("x-out/fbank.h5",)),
    _row("extract-job-option-without-launcher", lambda w: _extract(w, "--partition", "gpu"), 2,
         "--partition", "--launcher", absent=("x-out",)),
    # --- extract: audio
    _row("extract-infinite-samples", lambda w: _extract(w, manifest="corpus/inf.jsonl"), 1,
         "inf.wav", "NaN or Inf", "--on-error skip"),
    # --- merge and info
    _row("merge-missing-shard", lambda w: ["merge", str(w.root / "nope.shard-0-of-2.h5"),
                                           "--no-progress"], 1, "nope.shard-0-of-2.h5"),
    _row("merge-not-hdf5", lambda w: ["merge", str(w.root / "not_h5.h5"), "--no-progress"], 1,
         "not_h5.h5"),
    _row("info-missing-cache", lambda w: ["info", str(w.root / "nope.h5")], 1, "nope.h5"),
    _row("info-not-hdf5", lambda w: ["info", str(w.root / "not_h5.h5")], 1, "not_h5.h5"),
    _row("info-folder", lambda w: ["info", str(w.root / "manifest.h5")], 1, "manifest.h5"),
    _row("info-damaged-cache", lambda w: ["info", str(w.root / "heap.h5")], 1,
         "heap.h5", "bad local heap signature", "info --repair"),
    _row("info-cache-without-done", lambda w: ["info", str(w.root / "nodone.h5")], 1,
         "nodone.h5", "the cache is damaged", "'done'", "--repair"),
    _row("info-corrupt-json-attribute", lambda w: ["info", str(w.root / "badjson.h5")], 1,
         "badjson.h5", "the cache is damaged", "JSONDecodeError"),
    _row("info-repair-not-a-cache", lambda w: ["info", "--repair", str(w.root / "not_h5.h5")],
         1, "not_h5.h5", "cannot be repaired", report=True),
    _row("extract-over-a-damaged-cache", lambda w: [
        *EXTRACT, "--manifest", str(w.root / "manifest.jsonl"), "--out",
        str(w.root / "damaged-out")], 1, "damaged-out/fbank.h5", "the cache is damaged",
        "--overwrite"),
    # --- probe: files and option values
    _row("probe-damaged-cache", lambda w: _probe(w, cache="heap.h5"), 1, "heap.h5",
         "bad local heap signature", absent=("p-out",)),
    _row("probe-cache-without-done", lambda w: _probe(w, cache="nodone.h5"), 1, "nodone.h5",
         "the cache is damaged", absent=("p-out",)),
    _row("probe-corrupt-json-attribute", lambda w: _probe(w, cache="badjson.h5"), 1,
         "badjson.h5", "the cache is damaged", absent=("p-out",)),
    _row("probe-flipped-bytes", lambda w: _probe(w, "--out", str(w.root / "flip-out"),
                                                 cache="flipped.h5"), 1,
         "flipped.h5", "do not match their checksums", "info --repair"),
    _row("probe-missing-cache", lambda w: _probe(w, cache="nope.h5"), 1, "nope.h5",
         absent=("p-out",)),
    _row("probe-not-a-cache", lambda w: _probe(w, cache="not_h5.h5"), 1, "not_h5.h5",
         absent=("p-out",)),
    _row("probe-out-is-a-file", lambda w: ["probe", str(w.root / "cache/up.h5"), "--out",
                                           str(w.afile), *PROBE], 1, "afile"),
    _row("probe-seeds-zero", lambda w: _probe(w, "--seeds", "0"), 2, "--seeds 0",
         absent=("p-out",)),
    _row("probe-seeds-negative", lambda w: _probe(w, "--seeds", "-1"), 2, "--seeds -1",
         absent=("p-out",)),
    _row("probe-c-grid-inf", lambda w: _probe(w, "--c-grid", "inf"), 2, "--c-grid inf:",
         "positive finite", absent=("p-out",)),
    _row("probe-c-grid-nan", lambda w: _probe(w, "--c-grid", "nan"), 2, "--c-grid nan:",
         absent=("p-out",)),
    _row("probe-c-grid-zero", lambda w: _probe(w, "--c-grid", "0,1"), 2, "--c-grid",
         absent=("p-out",)),
    _row("probe-c-grid-words", lambda w: _probe(w, "--c-grid", "abc"), 2, "--c-grid",
         "expected comma-separated numbers", absent=("p-out",)),
    _row("probe-jobs-zero", lambda w: _probe(w, "--jobs", "0"), 2, "--jobs 0", ">= 1",
         absent=("p-out",)),
    _row("probe-backend-bogus", lambda w: _probe(w, "--jobs", "2", "--backend", "bogus"), 2,
         "--backend 'bogus'", "loky", absent=("p-out",)),
    _row("probe-val-fraction-one", lambda w: _probe(w, "--val-fraction", "1"), 2,
         "--val-fraction 1", absent=("p-out",)),
    _row("probe-bootstrap-negative", lambda w: _probe(w, "--bootstrap", "-5"), 2,
         "--bootstrap -5", absent=("p-out",)),
    _row("probe-layer-out-of-range", lambda w: _probe(w, "--layers", "9"), 2,
         "--layers: layer 9 does not exist", absent=("p-out",)),
    _row("probe-layer-spec-garbage", lambda w: _probe(w, "--layers", "a-b"), 2,
         "bad layer spec 'a-b'", absent=("p-out",)),
    _row("probe-unknown-task", lambda w: _probe(w, "--task", "nope"), 2,
         "defines no task 'nope'", absent=("p-out",)),
    _row("probe-single-class", lambda w: _probe(w, cache="cache/one-class.h5"), 1,
         "one-class.h5", "have no usable utterance", "expected every class to occur",
         absent=("p-out",)),
    _row("probe-more-folds-than-speakers", lambda w: _probe(w, "--folds", "kfold:20"), 1,
         "--folds kfold:20", "need at least 20 speakers, found 10", absent=("p-out",)),
    _row("probe-results-folder-busy", lambda w: _busy(w), 1,
         "busy-out", "another probe is writing to this results folder",
         absent=("busy-out",)),
    # --- report
    _row("report-missing-folder", lambda w: ["report", str(w.root / "nope")], 1, "nope",
         "no protocol.json"),
    _row("report-protocol-truncated", lambda w: ["report", str(w.res_protocol_cut)], 1,
         "res_protocol_cut/protocol.json", "damaged", absent=("res_protocol_cut/report",)),
    _row("report-protocol-binary", lambda w: ["report", str(w.res_protocol_binary)], 1,
         "res_protocol_binary/protocol.json", "not UTF-8",
         absent=("res_protocol_binary/report",)),
    _row("report-summary-truncated", lambda w: ["report", str(w.res_summary_cut)], 1,
         "res_summary_cut/summary.csv", "damaged", absent=("res_summary_cut/report",)),
    _row("report-summary-binary", lambda w: ["report", str(w.res_summary_binary)], 1,
         "res_summary_binary/summary.csv", "not UTF-8", absent=("res_summary_binary/report",)),
    _row("report-out-is-a-file", lambda w: ["report", str(w.results), "--out", str(w.afile),
                                            "--no-plots"], 1, "afile"),
    _row("demo-seed-negative", lambda w: ["demo", "--seed", "-1", "--out",
                                          str(w.root / "demo-out")], 2, "--seed -1", ">= 0",
         absent=("demo-out",)),
    # --- run: the config, validated whole before any stage runs
    _row("run-missing-config", lambda w: ["run", str(w.root / "nope.toml")], 2, "nope.toml",
         "no such config file"),
    _row("run-config-is-a-folder", lambda w: ["run", str(w.adir)], 2, "adir", "not a file"),
    _row("run-config-not-utf8", lambda w: ["run", str(w.root / "latin1.csv")], 2,
         "latin1.csv:3", "not UTF-8 at byte 47"),
    _row("run-config-not-toml", lambda w: ["run", str(w.root / "dup_header.csv")], 2,
         "dup_header.csv", "not valid TOML"),
    _row("run-upstream-key-typo", lambda w: _run(w, "typo", upstream="batch_second = 8"), 2,
         "[[upstream]] #1", "unknown key(s) batch_second", "valid: revision,",
         "batch_seconds", absent=("typo-out",)),
    _row("run-batch-seconds-string", lambda w: _run(w, "bs", upstream='batch_seconds = "8"'), 2,
         "batch_seconds = '8'", "finite number", absent=("bs-out",)),
    _row("run-upstream-workers-negative", lambda w: _run(w, "wk", upstream="workers = -1"), 2,
         "[[upstream]] #1: workers = -1", ">= 1", absent=("wk-out",)),
    _row("run-upstream-name-escapes", lambda w: _run(w, "nm", upstream='name = "../x"'), 2,
         "name = '../x'", absent=("nm-out",)),
    _row("run-upstream-model-number",
         lambda w: _run(w, "mn", replace=('model = "fbank"', "model = 3")), 2,
         "model = 3", absent=("mn-out",)),
    _row("run-folds-string", lambda w: _run(w, "fs", corpus='folds = "x"'), 2,
         "[[corpus]] #1: folds = 'x'", "an integer", absent=("fs-out",)),
    _row("run-corpus-source-unknown",
         lambda w: _run(w, "src", replace=('"manifest"', '"timit"')), 2,
         "source = 'timit'", "expected one of iemocap", absent=("src-out",)),
    _row("run-corpus-key-typo", lambda w: _run(w, "ck", corpus="allow_subsets = true"), 2,
         "unknown key(s) allow_subsets", "valid: source", absent=("ck-out",)),
    _row("run-jobs-string", lambda w: _run(w, "jb", probe='jobs = "two"'), 2,
         "[probe]: jobs = 'two'", "an integer", absent=("jb-out",)),
    _row("run-layers-number", lambda w: _run(w, "ly", probe="layers = 3"), 2,
         "[probe]: layers = 3", absent=("ly-out",)),
    _row("run-c-grid-words", lambda w: _run(w, "cg", probe='c_grid = ["abc"]'), 2,
         "[probe]: c_grid = ['abc']", absent=("cg-out",)),
    _row("run-seeds-true", lambda w: _run(w, "sd", replace=("seeds = 1", "seeds = true")), 2,
         "[probe]: seeds = True", absent=("sd-out",)),
    _row("run-probe-key-typo", lambda w: _run(w, "pk", probe="seed = 1"), 2,
         "[probe]: unknown key(s) seed", "valid: c_grid,", "seeds", absent=("pk-out",)),
    _row("run-solver-key-typo", lambda w: _run(w, "sv", probe="solver = {tols = 1}"), 2,
         "solver: unknown key(s) tols", absent=("sv-out",)),
    _row("run-unknown-top-key", lambda w: _run(w, "tk", top="outt = 1"), 2,
         "unknown top-level key(s) outt", absent=("tk-out",)),
    _row("run-report-format", lambda w: _run(w, "rf", report='format = "pdf"'), 2,
         "[report]: format = 'pdf'", "md", absent=("rf-out",)),
]




def test_at_least_fifty_cases() -> None:
    assert len(CASES) >= 50


@pytest.mark.parametrize("case", CASES)
def test_bad_input(case: Case, w: World, capsys: pytest.CaptureFixture[str],
                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(w.root)
    argv = case.argv(w)
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        status = exc.code
    out, err = capsys.readouterr()
    assert TRACEBACK not in err + out, err
    assert status == case.status, err
    said = out if case.report else err  # a report (info --repair) is the command's output
    if not case.report:
        assert [line for line in err.splitlines() if "error:" in line], err
    for word in case.names:
        assert word.replace("{root}", str(w.root)) in said, (word, said)
    for rel in case.absent:
        assert not (w.root / rel).exists(), f"{rel} left behind: {err}"


def test_file_locks_unsupported(w: World, capsys: pytest.CaptureFixture[str],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A filesystem that refuses flock (NFS without lockd, Lustre without `flock`): a clear
    message with the way out, and EMOPROBE_NO_LOCK=1 runs without the lock."""
    import emoprobe.cache.lock as lock

    def refuse(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(lock.fcntl, "flock", refuse)
    out = w.root / "nfs-results"
    argv = ["probe", str(w.root / "cache" / "up.h5"), "--out", str(out), *PROBE, "--layers",
            "3", "--no-report"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert TRACEBACK not in err and "nfs-results.lock: this filesystem does not support file " \
        "locks" in err and "EMOPROBE_NO_LOCK=1" in err
    assert not out.exists()
    monkeypatch.setenv("EMOPROBE_NO_LOCK", "1")
    assert main(argv) == 0
    assert (out / "summary.csv").exists()


def test_truncated_wav_is_warned_and_recorded(w: World, capsys: pytest.CaptureFixture[str]
                                              ) -> None:
    out = w.root / "cut-out.jsonl"
    assert main(["prepare", "manifest", "--root", str(w.root / "corpus" / "cut.jsonl"), "--out",
                 str(out), "--folds", "2", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "warning: 1 truncated audio file(s)" in printed and "cut.wav" in printed
    cut = next(r for r in map(json.loads, out.read_text().splitlines()) if r["id"] == "cut")
    assert cut["audio_warning"] == ("truncated: the header declares 4800 samples, the file "
                                    "holds 2389")
    assert cut["duration"] == round(2389 / 16000, 6)  # what the file holds
    others = [r for r in map(json.loads, out.read_text().splitlines()) if r["id"] != "cut"]
    assert not any("audio_warning" in r for r in others)


def test_debug_shows_the_traceback(w: World, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--debug", "info", str(w.root / "not_h5.h5")]) == 1
    err = capsys.readouterr().err
    assert TRACEBACK in err and "emoprobe info: error:" in err
    assert main(["info", str(w.root / "not_h5.h5"), "--debug"]) == 1
    assert TRACEBACK in capsys.readouterr().err


def test_a_bug_prints_its_traceback_and_says_so(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    import emoprobe.cli.info as info

    def broken(args: object) -> int:
        return {}["no such key"]

    monkeypatch.setattr(info, "run", broken)
    assert main(["info", "x.h5"]) == 1
    err = capsys.readouterr().err
    assert TRACEBACK in err and "KeyError" in err and "this is a bug in emoprobe" in err


# ----------------------------------------------------------------- rows that need a process


def _cli(*argv: str, **kw: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
           "OMP_NUM_THREADS": "1"}
    kw.setdefault("stdout", subprocess.PIPE)
    return subprocess.run([sys.executable, "-m", "emoprobe", *argv], env=env, text=True,
                          stderr=subprocess.PIPE, timeout=120, **kw)


@pytest.mark.slow
def test_output_into_a_closed_pipe_ends_quietly(w: World) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    caches = [str(w.root / "cache" / "up.h5")] * 200
    proc = subprocess.Popen([sys.executable, "-m", "emoprobe", "info", *caches],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.readline()
    proc.stdout.close()  # `| head -1`
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert err == "", err


@pytest.mark.slow
def test_disk_full_on_stdout_names_it(w: World) -> None:
    with open("/dev/full", "w") as full:
        proc = _cli("info", str(w.root / "cache" / "up.h5"), stdout=full)
    assert proc.returncode == 1, proc.stderr
    assert TRACEBACK not in proc.stderr and "disk full" in proc.stderr


def _file_size_limit(limit: int) -> Callable[[], None]:
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a fatal signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.slow
def test_file_size_limit_while_writing_a_manifest(w: World, tmp_path: Path) -> None:
    out = tmp_path / "m.jsonl"
    proc = _cli("prepare", "manifest", "--root", str(w.root / "manifest.jsonl"), "--out",
                str(out), "--no-progress", "--folds", "2", preexec_fn=_file_size_limit(200))
    assert proc.returncode == 1, proc.stderr
    assert TRACEBACK not in proc.stderr and "file too large" in proc.stderr, proc.stderr
    assert "m.jsonl" in proc.stderr and not out.exists()
    assert not list(tmp_path.iterdir()), "temporary file left behind"


@pytest.mark.slow
def test_file_size_limit_before_creating_a_cache(w: World, tmp_path: Path) -> None:
    proc = _cli("extract", "--manifest", str(w.root / "manifest.jsonl"), "--model", "fbank",
                "--out", str(tmp_path), "--no-progress", preexec_fn=_file_size_limit(4096))
    assert proc.returncode == 1, proc.stderr
    assert TRACEBACK not in proc.stderr and "ulimit -f" in proc.stderr, proc.stderr
    assert "fbank.h5" in proc.stderr and not list(tmp_path.iterdir())


@pytest.mark.slow
def test_merge_treats_sigterm_like_ctrl_c(tmp_path: Path) -> None:
    """SIGTERM during a merge: one line, status 130, no temporary file left."""
    from emoprobe.testing.models import write_corpus as corpus

    manifest = corpus(tmp_path / "c", [0.3] * 40, seed=5)
    out = tmp_path / "f"
    for k in range(2):
        assert main(["extract", "--manifest", str(manifest), "--model", "fbank", "--out",
                     str(out), "--shard", f"{k}/2", "--batch-seconds", "1", "--frames", "all",
                     "--no-progress"]) == 0
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    code = ("import os, signal\n"
            "from emoprobe.cache.store import CacheWriter as W\n"
            "real = W.copy_rows_from\n"
            "def slow(*a, **k):\n"
            "    real(*a, **k)\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "W.copy_rows_from = slow\n"
            "from emoprobe.cli import main\n"
            f"raise SystemExit(main(['merge', *{[str(p) for p in sorted(out.glob('*.h5'))]!r}, "
            "'--no-progress']))\n")
    proc = subprocess.run([sys.executable, "-c", code], env=env, text=True,
                          capture_output=True, timeout=120)
    assert proc.returncode == 130, proc.stderr
    assert TRACEBACK not in proc.stderr and "emoprobe merge: interrupted" in proc.stderr
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == [
        "fbank.shard-0-of-2.h5", "fbank.shard-1-of-2.h5"]


@pytest.mark.slow
def test_ctrl_c_on_the_local_launcher_prints_one_line(tmp_path: Path) -> None:
    """Ctrl-C reaches the whole process group (the launcher and submitit's job controllers):
    one line on the terminal, status 130, and no job left running."""
    import time

    manifest = write_corpus(tmp_path / "c", [2.0] * 40, seed=7)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "emoprobe", "extract", "--manifest", str(manifest), "--model",
         "fbank", "--out", str(tmp_path / "f"), "--launcher", "local", "--shards", "2",
         "--batch-seconds", "2", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True)
    deadline = time.monotonic() + 60
    while not list((tmp_path / "f").rglob("*_submitted.pkl")) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2)  # the job controllers are running
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err == "emoprobe extract: interrupted\n", err
    assert "submitted as job" in out


@pytest.mark.slow
@pytest.mark.parametrize("argv", [
    ["extract", "--manifest", "{d}/nope.jsonl", "--model", "fbank", "--out", "{d}/f"],
    ["extract", "--manifest", "{d}/adir", "--model", "fbank", "--out", "{d}/f"],
    ["prepare", "manifest", "--root", "{d}/binary.jsonl", "--out", "{d}/o.jsonl"],
    ["probe", "{d}/not_h5.h5", "--out", "{d}/p"],
    ["run", "{d}/nope.toml"],
], ids=["missing-manifest", "manifest-is-a-folder", "binary-manifest", "not-a-cache",
        "missing-config"])
def test_the_installed_command_never_shows_a_traceback(w: World, argv: list[str]) -> None:
    proc = _cli(*(a.replace("{d}", str(w.root)) for a in argv))
    assert proc.returncode in (1, 2) and TRACEBACK not in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1 and "error:" in proc.stderr
