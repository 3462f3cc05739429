"""Labels, tasks and folds chosen when probing: a manifest joined by id, label maps, fold
specs (field, loso, kfold, fold files in our and EmoBox's layout), resume keys that follow
them, the results-folder lock, and the errors for each bad input."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from probe_fixtures import planted

from emoprobe.cache.lock import ExclusiveLock, lock_path
from emoprobe.cache.store import write_cache
from emoprobe.cli import main
from emoprobe.data.folds import resolve_folds
from emoprobe.data.manifest import write_manifest
from emoprobe.errors import ManifestError, ProbeError
from emoprobe.probe import ProbeOptions, probe
from emoprobe.probe.dataset import load_cache
from emoprobe.probe.selection import carve_validation
from emoprobe.probe.sweep import UNITS, run_sweep
from emoprobe.probe.units import Source

FAST = {"seeds": 1, "n_boot": 0, "c_grid": (1e-2, 1e-1), "progress": False}


def _cache(path: Path, seed: int = 0, **kw) -> tuple[Path, list[dict]]:
    pooled, records = planted(seed=seed, n_layers=2, n_utts=300, dim=12, signal=[0.0, 1.0],
                              **kw)
    meta = {"model": "synthetic-model", "upstream_kind": "transformers"}
    return write_cache(path, pooled, records, meta=meta), records


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    return _cache(tmp_path_factory.mktemp("cache") / "up.h5")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _uar(res) -> list[float]:
    return [r["uar"] for r in res.rows]


# ------------------------------------------------------------------------- manifest join


def test_manifest_joined_by_id(small, tmp_path: Path, caplog) -> None:
    cache, records = small
    before = _sha(cache)
    default = probe([cache], out=tmp_path / "default", **FAST)
    # The cache's own records as a manifest file, reordered: the same numbers.
    same = write_manifest(list(reversed(records)), tmp_path / "same.jsonl")
    res = probe([cache], manifest=same, out=tmp_path / "same", **FAST)
    key = lambda r: (r["layer"], r["fold"])  # noqa: E731
    assert sorted((key(r), r["uar"]) for r in res.rows) == sorted(
        (key(r), r["uar"]) for r in default.rows)
    # 40 cache ids left out of the manifest, 7 ids the cache lacks: both counted and listed.
    extra = [dict(records[0], id=f"new_{k}") for k in range(7)]
    subset = write_manifest(records[40:] + extra, tmp_path / "subset.jsonl")
    with caplog.at_level(logging.INFO, logger="emoprobe"):
        res = probe([cache], manifest=subset, out=tmp_path / "subset", **FAST)
    printed = caplog.text
    ds = res.protocol["datasets"][0]
    ex = ds["excluded"]
    assert ex["n_not_in_manifest"] == 40 and ex["not_in_manifest"] == [
        r["id"] for r in records[:40]]
    assert ex["n_not_in_cache"] == 7 and set(ex["not_extracted"]) == {e["id"] for e in extra}
    assert ds["n_utterances"] == 260
    src = ds["sources"][0]
    assert src["manifest"]["sha256"] == _sha(subset) and src["fingerprint"]
    assert "40 cache rows not in the manifest" in printed and "7 manifest ids" in printed
    assert _sha(cache) == before  # probing never writes the cache


def test_resume_keys_follow_the_manifest(small, tmp_path: Path) -> None:
    cache, records = small
    out = tmp_path / "out"
    probe([cache], out=out, **FAST)
    n_units = len(list((out / UNITS).glob("*.npz")))
    relabelled = [dict(r, label="sad" if r["label"] == "neu" else r["label"]) for r in records]
    relabelled[0]["label"] = "neu"  # keep all four classes (one neu)
    for r in relabelled:
        if r["label"] == "neu" and r is not relabelled[0]:
            r["label"] = "sad"
    man = write_manifest(relabelled, tmp_path / "m.jsonl")
    with pytest.raises(ProbeError):  # one neu utterance: absent from most training folds
        probe([cache], manifest=man, out=out, **FAST)
    man = write_manifest([dict(r, session=str(int(r["session"]) % 3 + 1)) for r in records],
                         tmp_path / "m2.jsonl")
    res = probe([cache], manifest=man, out=out, **FAST)
    # Another fold assignment: nothing reused, new units saved beside the old ones.
    assert len(list((out / UNITS).glob("*.npz"))) == n_units + len(res.units)
    again = probe([cache], manifest=man, out=out, **FAST)
    assert _uar(again) == _uar(res)
    assert len(list((out / UNITS).glob("*.npz"))) == n_units + len(res.units)


# ----------------------------------------------------------------------------- label maps


def test_label_map_merges_codes_and_counts_the_rest(small, tmp_path: Path, caplog) -> None:
    cache, records = small
    lm = tmp_path / "valence.json"
    lm.write_text(json.dumps({"neg": ["ang", "sad"], "pos": ["hap"], "neu": "neu",
                              "drop": ["xxx"]}))
    with caplog.at_level(logging.INFO, logger="emoprobe"):
        res = probe([cache], label_map=lm, out=tmp_path / "out", **FAST)
    ds = res.protocol["datasets"][0]
    assert ds["task"]["name"] == "valence" and ds["classes"] == ["neg", "pos", "neu"]
    raw = [r["label"] for r in records]
    assert ds["class_counts"] == {"neg": raw.count("ang") + raw.count("sad"),
                                  "pos": raw.count("hap"), "neu": raw.count("neu")}
    assert ds["excluded"]["left_out_codes"]["unmapped"] == {"exc": raw.count("exc")}
    assert f"unmapped: exc {raw.count('exc')}" in caplog.text
    assert {r["task"] for r in res.rows} == {"valence"}


def test_label_map_errors(small, tmp_path: Path) -> None:
    cache, _ = small
    out = tmp_path / "out"
    lm = tmp_path / "lm.json"
    lm.write_text(json.dumps({"ang": ["ang"], "fear": ["fea"]}))
    with pytest.raises(ProbeError, match=r"\['fear'\].*no usable utterance.*'fea'"):
        probe([cache], label_map=lm, out=out, **FAST)
    assert not out.exists()  # nothing written
    lm.write_text(json.dumps({"ang": ["ang"], "hap": ["ang", "hap"]}))
    with pytest.raises(ManifestError, match="'ang' is given to two classes"):
        probe([cache], label_map=lm, out=out, **FAST)
    lm.write_text(json.dumps({"ang": ["ang", "sad"]}))
    with pytest.raises(ManifestError, match="at least 2 classes"):
        probe([cache], label_map=lm, **FAST)
    lm.write_text(json.dumps({"ang": "Angry", "neu": "Neutral"}))  # code -> class: reversed
    with pytest.raises(ProbeError, match="looks reversed"):
        probe([cache], label_map=lm, **FAST)
    lm.write_text("{not json")
    with pytest.raises(ManifestError, match=r"lm.json: not valid JSON"):
        probe([cache], label_map=lm, **FAST)
    assert not (out / "results.csv").exists()


def test_single_class_task_is_refused(tmp_path: Path) -> None:
    pooled, records = planted(n_layers=2, n_utts=100, dim=8, signal=[0.0, 1.0])
    for r in records:
        r.update(label="neu", corpus="mono")
    path = write_cache(tmp_path / "mono.h5", pooled, records, meta={"model": "m"})
    with pytest.raises(ProbeError, match=r"1 class\(es\) \['neu'\]; a probe needs at least 2"):
        probe([path], out=tmp_path / "out", **FAST)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------- folds


def test_fold_specs(small, tmp_path: Path) -> None:
    _, records = small
    speakers = sorted({r["speaker"] for r in records})
    loso = resolve_folds(records, "loso")
    assert loso.name == "leave-one-speaker-out" and len(loso.folds) == len(speakers)
    for f in loso.folds:
        assert len({records[i]["speaker"] for i in f.test}) == 1
    k3 = resolve_folds(records, "kfold:3:1")
    assert len(k3.folds) == 3 and k3.details == {"k": 3, "seed": 1}
    covered = np.sort(np.concatenate([f.test for f in k3.folds]))
    assert (covered == np.arange(len(records))).all()
    for f in k3.folds:  # speaker-independent
        assert not {records[i]["speaker"] for i in f.test} & {
            records[i]["speaker"] for i in f.train}
    again = resolve_folds(records, "kfold:3:1")
    assert all((a.test == b.test).all() for a, b in zip(k3.folds, again.folds))
    default = resolve_folds(records)
    assert default.name == "leave-one-session-out"
    assert [f.name for f in resolve_folds(records, "session").folds] == [
        f.name for f in default.folds]
    with pytest.raises(ManifestError, match=r"--folds sesion: neither a manifest field.*"
                                            r"session, speaker"):
        resolve_folds(records, "sesion")
    with pytest.raises(ManifestError, match="expected kfold:K or kfold:K:SEED"):
        resolve_folds(records, "kfold:x")


def test_fold_files(small, tmp_path: Path) -> None:
    cache, records = small
    # JSON id -> fold, and the same as JSONL: the same folds.
    fold_of = {r["id"]: 1 + (int(r["speaker"][3:]) % 4) for r in records}
    as_json = tmp_path / "folds.json"
    as_json.write_text(json.dumps(fold_of))
    as_jsonl = tmp_path / "folds.jsonl"
    as_jsonl.write_text("".join(json.dumps({"id": k, "fold": v}) + "\n"
                                for k, v in fold_of.items()))
    a, b = resolve_folds(records, str(as_json)), resolve_folds(records, str(as_jsonl))
    assert [f.name for f in a.folds] == ["fold1", "fold2", "fold3", "fold4"]
    assert all((x.test == y.test).all() for x, y in zip(a.folds, b.folds))
    assert a.details["sha256"] == _sha(as_json)
    res = probe([cache], folds=str(as_json), out=tmp_path / "out", **FAST)
    ds = res.protocol["datasets"][0]
    assert ds["protocol"] == "fold file folds.json" and len(ds["folds"]) == 4
    assert sum(f["n_test"] for f in ds["folds"]) == len(records)
    assert ds["folds"][0]["train_classes"]
    # Missing ids and a JSON true as a fold are refused, naming them; nothing written.
    del fold_of[records[5]["id"]]
    as_json.write_text(json.dumps(fold_of))
    with pytest.raises(ManifestError, match=rf"no fold for 1 of the 300.*{records[5]['id']}"):
        probe([cache], folds=str(as_json), out=tmp_path / "bad", **FAST)
    fold_of[records[5]["id"]] = True
    as_json.write_text(json.dumps(fold_of))
    with pytest.raises(ManifestError, match="fold True; expected a fold name or number"):
        probe([cache], folds=str(as_json), out=tmp_path / "bad", **FAST)
    assert not (tmp_path / "bad").exists()


def test_emobox_fold_layout(small, tmp_path: Path) -> None:
    _, records = small
    # EmoBox's layout: keys `<dataset>-<id>`, fold_<k>/<corpus>_{train,test}_fold_<k>.jsonl.
    root = tmp_path / "emobox" / "iemocap"
    for k in (1, 2):
        (root / f"fold_{k}").mkdir(parents=True)
        for part in ("train", "test"):
            rows = [r for r in records if (int(r["session"]) in (k, k + 2)) == (part == "test")]
            (root / f"fold_{k}" / f"iemocap_{part}_fold_{k}.jsonl").write_text("".join(
                json.dumps({"key": f"iemocap-{r['id'][len('iemocap_'):]}", "dataset": "iemocap",
                            "wav": f"downloads/{r['path']}", "emo": r["label"]}) + "\n"
                for r in rows))
    both = resolve_folds(records, str(root))
    assert [f.name for f in both.folds] == ["fold1", "fold2"]
    assert both.details["matched_by"] == {"id without the dataset prefix": 2 * len(records)}
    one = resolve_folds(records, str(root / "fold_2" / "iemocap_test_fold_2.jsonl"))
    assert len(one.folds) == 1 and (one.folds[0].test == both.folds[1].test).all()
    assert {int(records[i]["session"]) for i in one.folds[0].test} == {2, 4}


# ---------------------------------------------------------------------- CLI and the lock


def test_cli_options_and_bad_input(small, tmp_path: Path, capsys) -> None:
    cache, _ = small
    lm = tmp_path / "lm.json"
    lm.write_text(json.dumps({"ang": "ang", "hap": ["hap", "exc"], "neu": "neu", "sad": "sad"}))
    out = tmp_path / "out"
    code = main(["probe", str(cache), "--folds", "kfold:3", "--label-map", str(lm), "--task",
                 "four", "--seeds", "1", "--bootstrap", "0", "--c-grid", "0.01",
                 "--no-progress", "--no-report", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "folds: 3-fold speaker-independent (seed 0)" in printed
    assert "fold1: train" in printed and "test" in printed
    proto = json.loads((out / "protocol.json").read_text())["datasets"][0]
    assert proto["task"]["name"] == "four" and proto["fold_protocol"]["spec"] == "kfold:3"
    for argv, needle in (  # problems with the data named by an option: status 1
        (["--folds", "nosuchfield"], "--folds nosuchfield: neither a manifest field"),
        (["--manifest", str(tmp_path / "none.jsonl")], "none.jsonl: no such manifest file"),
        (["--label-map", str(tmp_path / "none.json")], "none.json: no such label-map file"),
        (["--folds", "kfold:1"], "need an integer K of at least 2"),
    ):
        bad = tmp_path / "bad"
        code = main(["probe", str(cache), "--no-progress", "--out", str(bad), *argv])
        err = capsys.readouterr().err
        assert code == 1 and needle in err and "Traceback" not in err
        assert not bad.exists()
    # Options that would be ignored are refused: cross-corpus takes its own manifests.
    code = main(["probe", "--train-on", str(cache), "--test-on", str(cache), "--manifest",
                 str(cache), "--out", str(tmp_path / "x")])
    assert code == 2 and "--train-manifest and --test-manifest" in capsys.readouterr().err


def test_results_folder_is_locked(small, tmp_path: Path) -> None:
    cache, _ = small
    out = tmp_path / "out"
    busy = "another probe is writing to this results folder"
    with ExclusiveLock(lock_path(out), RuntimeError), pytest.raises(ProbeError, match=busy):
        probe([cache], out=out, **FAST)
    assert not (out / "results.csv").exists()
    probe([cache], out=out, **FAST)  # free again once the other run ends
    assert (out / "results.csv").exists() and not lock_path(out).exists()


# ------------------------------------------------------------------------ degenerate data


def _tiny(n_speakers: int, per_speaker: int, seed: int = 0) -> tuple[np.ndarray, list[dict]]:
    """`n_speakers` speakers, `per_speaker` utterances each, classes in turn; class signal
    in every dimension."""
    rng = np.random.default_rng(seed)
    classes = ("neu", "hap", "ang", "sad")
    records, y = [], []
    for s in range(n_speakers):
        for k in range(per_speaker):
            c = (s + k) % 4
            y.append(c)
            records.append({"id": f"u{s}_{k}", "path": f"u{s}_{k}.wav", "label": classes[c],
                            "speaker": f"s{s}", "corpus": "tiny"})
    x = rng.standard_normal((1, len(y), 6)) + 2.0 * np.eye(6)[np.asarray(y)][None]
    return x.astype(np.float32), records


def test_degenerate_data_carves_what_it_allows(tmp_path: Path) -> None:
    from emoprobe.probe import probe_arrays
    from emoprobe.probe.report import report

    # Two speakers, leave-one-speaker-out: one training speaker, no validation part can be
    # carved: C fixed (the grid value nearest 1), a warning in protocol.json and the report.
    x, records = _tiny(2, 16)
    res = probe_arrays(x, records, folds="loso", out=tmp_path / "two", **FAST)
    assert {r["C"] for r in res.rows} == {0.1} and {r["n_val"] for r in res.rows} == {0}
    warnings = res.protocol["warnings"]
    assert len(warnings) == 2 and "found 1; fitted on the whole training part" in warnings[0]
    assert "s0" in warnings[0] and "C fixed at 0.1" in warnings[0]
    assert "Warnings:" in report(tmp_path / "two", plots=False).text
    # Every class smaller than the validation splits (5 for val_fraction 0.2; scikit-learn
    # refuses that): fewer splits, a larger validation share, still speaker-disjoint.
    _, records = _tiny(5, 2)
    y = np.asarray([("neu", "hap", "ang", "sad").index(r["label"]) for r in records])
    groups = np.asarray([r["speaker"] for r in records])
    fit, val = carve_validation(np.arange(10), y, groups, seed=0, fraction=0.2)
    assert len(val) and not set(groups[fit]) & set(groups[val])
    # One class per speaker, two speakers per class: holding out a validation speaker can
    # leave a class without fitting utterances; that seed fits on the whole training part
    # instead, and the warning names the class, fold and seed.
    x, records = _tiny(8, 4)
    for r in records:
        r["label"] = ("neu", "hap", "ang", "sad")[int(r["speaker"][1:]) % 4]
    res = probe_arrays(x, records, folds="loso", seeds=(0, 1), n_boot=0,
                       c_grid=(1e-2, 1e-1), progress=False)
    assert re.search(r"fold 'speakers\d', seed \d: holding out validation speakers would leave "
                     r"class\(es\) \['(neu|hap|ang|sad)'\] without fitting utterances; fitted on "
                     r"the whole training part", " ".join(res.protocol["warnings"]))
    # Fewer than two classes in a fold's training part stays an error naming class and fold.
    x, records = _tiny(2, 16)
    for r in records:
        if r["speaker"] == "s1":
            r["label"] = "neu"
    with pytest.raises(ProbeError, match=r"absent from the training part of fold 'speakers0'"):
        probe_arrays(x, records, folds="loso", **FAST)
    # Speaker folds asking for more folds than any class has members: a clear error.
    with pytest.raises(ManifestError, match="need at least 4 utterances in some class"):
        resolve_folds(_tiny(6, 1)[1], "kfold:4")


# ------------------------------------------------------------- a cache replaced mid-run


@dataclass(frozen=True)
class _Replaced(Source):
    """A cache that another process replaces (atomically) right after the sweep planned."""

    other: str = ""

    def load(self, read: bool = True):
        data = super().load(read)
        if not read:
            tmp = Path(self.caches[0]).with_suffix(".tmp")
            shutil.copyfile(self.other, tmp)
            os.replace(tmp, self.caches[0])
        return data


def test_cache_replaced_while_probing_never_lends_its_results(tmp_path: Path) -> None:
    a, _ = _cache(tmp_path / "a" / "up.h5", seed=0)
    b, _ = _cache(tmp_path / "b" / "up.h5", seed=5)
    original = tmp_path / "a.orig.h5"
    shutil.copyfile(a, original)
    opts = ProbeOptions(seeds=(0,), n_boot=0, c_grid=(1e-2, 1e-1))
    out = tmp_path / "out"
    with pytest.raises(ProbeError, match="changed while probing"):
        run_sweep([_Replaced((str(a),), other=str(b))], opts, out=out, progress=False)
    # The original file back: its probe must give its own numbers, not the other file's.
    shutil.copyfile(original, a.with_suffix(".tmp"))
    os.replace(a.with_suffix(".tmp"), a)
    again = run_sweep([Source((str(a),))], opts, out=out, progress=False)
    fresh = run_sweep([Source((str(a),))], opts, out=tmp_path / "fresh", progress=False)
    assert [r["uar"] for r in again.rows] == [r["uar"] for r in fresh.rows]
    other = run_sweep([Source((str(b),))], opts, progress=False)
    assert [r["uar"] for r in again.rows] != [r["uar"] for r in other.rows]
    # Features opened after a replacement are refused, never read from the new file.
    data = load_cache(a, read=False)
    shutil.copyfile(b, a.with_suffix(".tmp"))
    os.replace(a.with_suffix(".tmp"), a)
    with pytest.raises(ProbeError, match="replaced while probing"):
        data.features.block(slice(0, 1), np.arange(3))
