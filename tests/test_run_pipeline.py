"""`emoprobe run CONFIG`: prepare -> extract -> probe -> report from TOML; a second run
reuses manifests, caches and probe folds; changed inputs replace what they invalidate;
config mistakes are clear errors."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from emoprobe import run_pipeline
from emoprobe.cli import main
from emoprobe.data.demo import prepare_demo
from emoprobe.data.manifest import read_manifest, write_manifest
from emoprobe.errors import ConfigError
from emoprobe.pipeline import load_config
from emoprobe.probe.results import read_csv, read_predictions


@pytest.fixture(scope="module")
def demo_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_demo(tmp_path_factory.mktemp("demo"), sessions=3).manifest


def _config(tmp: Path, manifest: Path, extra: str = "", corpus: str = "") -> Path:
    path = tmp / "run.toml"
    path.write_text(f"""
out = "out"

[[corpus]]
source = "manifest"
root = "{manifest}"
name = "demo"
allow_subset = true
{corpus}

[[upstream]]
model = "fbank"

[probe]
seeds = 1
n_boot = 50
c_grid = [0.01, 1.0]
{extra}
""")
    return path


def test_run_then_rerun_reuses_everything(tmp_path: Path, demo_manifest: Path, capsys,
                                          caplog) -> None:
    cfg = _config(tmp_path, demo_manifest)
    first = run_pipeline(cfg, progress=False)
    out = tmp_path / "out"
    cache = out / "features" / "demo" / "fbank.h5"
    assert first.caches == {("demo", "fbank"): cache} and cache.exists()
    assert (out / "results" / "report" / "leaderboard.md").exists()
    assert (out / "results" / "report" / "layers_iemocap.png").exists()
    assert "| fbank |" in first.report_text
    rows = read_csv(out / "results" / "results.csv")
    assert {r["fold"] for r in rows} == {"session1", "session2", "session3"}
    stamp = cache.stat().st_mtime_ns
    assert (out / "results" / "config.toml").read_text() == cfg.read_text()  # run's config
    capsys.readouterr()
    with caplog.at_level(logging.INFO, logger="emoprobe"):
        second = run_pipeline(cfg, progress=False)
    assert second.reused == {"manifests": 1, "caches": 1}
    assert "reusing 3 finished unit(s)" in caplog.text  # the library logs; it does not print
    assert cache.stat().st_mtime_ns == stamp
    assert read_csv(out / "results" / "results.csv") == rows
    # Other probe settings: caches are reused, the probe runs again with them.
    cfg = _config(tmp_path, demo_manifest, "balanced = true")
    third = run_pipeline(cfg, progress=False)
    assert third.reused["caches"] == 1 and cache.stat().st_mtime_ns == stamp
    proto = json.loads((out / "results" / "protocol.json").read_text())
    assert proto["options"]["balanced"] is True


def test_changed_manifest_reuses_the_cache_and_probes_the_current_one(
        tmp_path: Path, demo_manifest: Path, capsys) -> None:
    records = read_manifest(demo_manifest)
    local = write_manifest(records, tmp_path / "corpus.jsonl")
    cfg = _config(tmp_path, local)
    first = run_pipeline(cfg, progress=False)
    cache = first.caches[("demo", "fbank")]
    before = cache.read_bytes()
    write_manifest(records[:-7], local)  # the corpus lost a few utterances
    capsys.readouterr()
    res = run_pipeline(cfg, progress=False)
    printed = capsys.readouterr().out
    assert "[extract] fbank on demo: reusing" in printed
    assert res.reused == {"manifests": 0, "caches": 1}
    assert cache.read_bytes() == before  # the cache holds the 7 still; it is not rewritten
    proto = json.loads((tmp_path / "out" / "results" / "protocol.json").read_text())
    kept = {r["id"] for r in records[:-7]}
    preds = {p["id"] for p in read_predictions(tmp_path / "out" / "results" /
                                                "predictions.csv.gz")}
    assert preds and preds <= kept
    assert proto["datasets"][0]["n_utterances"] <= len(records) - 7


def test_cli_run(tmp_path: Path, demo_manifest: Path, capsys) -> None:
    cfg = _config(tmp_path, demo_manifest, 'layers = "all"\njobs = 1')
    assert main(["run", str(cfg), "--no-progress"]) == 0
    assert "### Leaderboard" in capsys.readouterr().out


@pytest.mark.parametrize(("text", "message"), [
    ('[[corpus]]\nsource="manifest"\nroot="x"\n[[upstream]]\nmodel="fbank"', "`out`"),
    ('out="o"\n[[upstream]]\nmodel="fbank"', "no \\[\\[corpus\\]\\]"),
    ('out="o"\n[[corpus]]\nsource="manifest"\nroot="x"\nfold=3\n[[upstream]]\nmodel="fbank"',
     "\\[\\[corpus\\]\\] #1: unknown key\\(s\\) fold; valid: source, root"),
    ('out="o"\n[[corpus]]\nsource="manifest"\nroot="x"\n[[upstream]]\nmodel="fbank"\n'
     '[[cross]]\ntrain="x"\ntest="y"', "'y' is not a listed corpus|'x' is not a listed"),
    ('out="o"\n[[corpus]]\nsource="manifest"\nroot="x"\n[[upstream]]\nmodel="fbank"\n'
     '[probe]\nseedz=3', "\\[probe\\]: unknown key\\(s\\) seedz; valid: c_grid, alpha_grid, seeds"),
    ('out = [', "not valid TOML"),
    ('out="o"\n[[corpus]]\nsource="manifest"\nroot="x"\n[[upstream]]\nmodel="fbank"\n'
     '[task]\nname="v"\nclases={a="b"}',
     "\\[task\\]: unknown key\\(s\\) clases; valid: name, classes, drop"),
    ('out="o"\n[[corpus]]\nsource="manifest"\nroot="x"\n[[upstream]]\nmodel="fbank"\n'
     '[task]\nclasses={a="x", b="x"}', "'x' is given to two classes"),
    ('out="o"\n[[corpus]]\nsource="manifest"\nroot="x"\n[[upstream]]\nmodel="fbank"\n'
     '[probe]\nfolds=3', "folds = 3: expected a string"),
])
def test_config_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_small_corpus_with_a_label_map_and_probe_time_folds(tmp_path: Path) -> None:
    """The probe reads a one-session part of the demo corpus (two speakers, a probe-time
    manifest) with leave-one-speaker-out: one training speaker per fold, so no validation
    part can be carved; the run completes with C fixed, says so, and records it."""
    manifest = prepare_demo(tmp_path / "demo", sessions=2).manifest
    part = write_manifest([r for r in read_manifest(manifest) if r["session"] == 1],
                          tmp_path / "session1.jsonl")
    cfg = _config(tmp_path, manifest, corpus='manifest = "session1.jsonl"', extra="""
folds = "loso"

[task]
name = "arousal"
classes = {high = ["ang", "hap", "exc"], low = ["neu", "sad"]}
drop = ["fru", "sur", "fea", "dis", "oth", "xxx"]
""")
    res = run_pipeline(cfg, progress=False, echo=None)
    protocol = json.loads((res.results / "protocol.json").read_text())
    ds = protocol["datasets"][0]
    assert ds["task"]["name"] == "arousal" and ds["classes"] == ["high", "low"]
    assert ds["protocol"] == "leave-one-speaker-out" and len(ds["folds"]) == 2
    assert ds["sources"][0]["manifest"]["path"] == str(part.resolve())
    assert ds["excluded"]["n_not_in_manifest"] > 0
    assert not ds["excluded"]["left_out_codes"]["unmapped"]
    assert len(protocol["warnings"]) == 2 and "C fixed at 1" in protocol["warnings"][0]
    assert "Warnings:" in res.report_text
