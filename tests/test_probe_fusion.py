"""Fusion probes: fbank and a tiny wav2vec2 over the demo corpus, joined by id; the fused row
appears with the summed dimension, ids one cache lacks are counted; layers chosen on
validation by default or given; the config's [[fuse]] table."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from emoprobe.cli import main
from emoprobe.data.demo import prepare_demo
from emoprobe.data.manifest import read_manifest, write_manifest
from emoprobe.errors import ConfigError
from emoprobe.extract import extract, open_cache
from emoprobe.pipeline import load_config
from emoprobe.probe import probe
from emoprobe.probe.fusion import parse_part
from emoprobe.probe.results import read_csv
from emoprobe.probe.units import Source
from emoprobe.testing.models import build_model

N_MISSING = 7


@pytest.fixture(scope="module")
def two_caches(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """fbank over the demo corpus, and a tiny random wav2vec2 over it less N_MISSING
    utterances (so the join by id leaves them out)."""
    tmp = tmp_path_factory.mktemp("fuse")
    manifest = prepare_demo(tmp / "demo", sessions=2).manifest
    records = read_manifest(manifest)
    fewer = write_manifest(records[N_MISSING:], tmp / "fewer.jsonl")
    model = build_model("wav2vec2-group", tmp / "tiny-w2v", seed=0)
    a = extract(manifest, "fbank", tmp / "features", progress=False).path
    b = extract(fewer, str(model), tmp / "features", progress=False, torch_threads=1).path
    return a, b


def _dim(path: Path) -> int:
    with open_cache(path) as c:
        return int(c.dim)


def test_fused_row_dimension_and_missing_ids(two_caches: tuple[Path, Path], tmp_path: Path,
                                             caplog) -> None:
    a, b = two_caches
    with caplog.at_level(logging.INFO, logger="emoprobe"):
        res = probe([a, b], fuse=[[a, b]], out=tmp_path, seeds=1, n_boot=20, progress=False)
    printed = caplog.text
    name = f"{a.stem}+{b.stem}"
    fused = [r for r in res.summary if r["upstream"] == name]
    assert len(fused) == 1
    # Default layers: each cache's layer chosen on validation in the same sweep.
    chosen = {}
    for up in (a.stem, b.stem):
        mine = [r for r in res.summary if r["upstream"] == up]
        chosen[up] = max(mine, key=lambda r: (r["val_uar_mean"], -r["layer"]))["layer"]
    assert fused[0]["fused_layers"] == f"{chosen[a.stem]}+{chosen[b.stem]}"
    assert fused[0]["layer"] is None and fused[0]["head"] == "fusion"
    ds = next(d for d in res.protocol["datasets"] if d["upstream"] == name)
    assert ds["excluded"]["n_missing_from"] == {a.stem: 0, b.stem: N_MISSING}
    assert f"{N_MISSING} missing from {b.stem}" in printed
    n_a = next(d for d in res.protocol["datasets"] if d["upstream"] == a.stem)["n_utterances"]
    assert ds["n_utterances"] == n_a - N_MISSING
    assert [s["fused_dim"] for s in ds["sources"]] == [_dim(a), _dim(b)]
    data = Source((str(a), str(b)), fuse=(0, -1)).load()
    assert data.features.shape == (1, n_a - N_MISSING, _dim(a) + _dim(b))
    with open_cache(b) as c:
        last = c.n_layers - 1
    assert data.upstream == name and data.layers == [f"0+{last}"]
    # Everything per utterance follows the join: ids, targets, speakers, transcripts.
    alone = Source((str(a),), layers=(0,)).load(read=False)
    keep = [alone.ids.index(u) for u in data.ids]
    assert data.ids == alone.ids[N_MISSING:]
    assert (data.y == alone.y[keep]).all() and (data.groups == alone.groups[keep]).all()
    assert data.sentences == [alone.sentences[i] for i in keep]


def test_cli_fuse_with_given_layers(two_caches: tuple[Path, Path], tmp_path: Path,
                                    capsys) -> None:
    a, b = two_caches
    out = tmp_path / "res"
    assert main(["probe", "--fuse", str(a), f"{b}:1", "--out", str(out), "--seeds", "1",
                 "--bootstrap", "0", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    rows = read_csv(out / "summary.csv")
    # Only the fusion's unchosen part (fbank) is swept per layer; b's layer was given.
    assert {r["upstream"] for r in rows} == {a.stem, f"{a.stem}+{b.stem}"}
    assert f"| {a.stem}+{b.stem} | 0+1 |" in printed
    proto = json.loads((out / "protocol.json").read_text())
    assert proto["datasets"][-1]["layers"] == ["0+1"]


def test_parse_part_and_config() -> None:
    assert parse_part("a.h5") == ("a.h5", None)
    assert parse_part("dir/a.h5:3") == ("dir/a.h5", 3)
    assert parse_part("a.h5:-1") == ("a.h5", -1)
    assert parse_part("C:/x/a.h5") == ("C:/x/a.h5", None)


def test_config_fuse_table(tmp_path: Path) -> None:
    head = ('out="o"\n[[corpus]]\nsource="manifest"\nroot="x"\nname="c"\n'
            '[[upstream]]\nmodel="fbank"\n[[upstream]]\nmodel="org/model"\n')
    path = tmp_path / "ok.toml"
    path.write_text(head + '[[fuse]]\nmodels = ["fbank", "org/model:3"]\n')
    cfg = load_config(path)
    assert cfg.fusions == [((("fbank", None), ("org/model", 3)), ["c"])]
    path.write_text(head + '[[fuse]]\nmodels = ["fbank", "other"]\n')
    with pytest.raises(ConfigError, match="model 'other' is not a listed"):
        load_config(path)
    path.write_text(head + '[[fuse]]\nmodels = ["fbank"]\n')
    with pytest.raises(ConfigError, match="two or more upstream models"):
        load_config(path)
