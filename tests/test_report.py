"""`emoprobe report`: every table format renders; the leaderboard ranks by the chosen metric
at the layer picked on validation (never test), with pooled intervals, fewer-class marks and
the paired test against the best; folders merge and conflicting ones are refused; plots are
written with the right series; results load back typed; the command line runs probe ->
report."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from probe_fixtures import PLANTED, planted_cache

from emoprobe.cli import main
from emoprobe.errors import ProbeError
from emoprobe.probe import load_results, probe, report
from emoprobe.probe.plots import layer_figure, seed_mean_confusion
from emoprobe.probe.results import read_csv
from emoprobe.probe.tables import FORMATS, leaderboard, render

FAST = {"seeds": 2, "n_boot": 100, "c_grid": (1e-3, 1e-1), "progress": False}
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def caches(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("caches")
    # Same utterances (seed 0) for all three; upstream-b carries a weaker signal, and the
    # baseline has one layer only.
    return {
        "a": planted_cache(base / "upstream-a.h5", model="a"),
        "b": planted_cache(base / "upstream-b.h5", model="b", separation=0.35),
        "base": planted_cache(base / "baseline.h5", model="base", n_layers=1, signal=[0.6]),
    }


@pytest.fixture(scope="module")
def swept(caches: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("rep") / "results"
    return probe([caches["a"], caches["b"], caches["base"]], out=out, preset="superb", **FAST)


@pytest.fixture(scope="module")
def results(swept) -> Path:
    return swept.out


def test_every_format_and_plots(results: Path) -> None:
    res = report(results, fmt="md")
    out = results / "report"
    for name in ("leaderboard", "layers"):
        for suffix in (".md", ".csv", ".json", ".tex"):
            assert (out / f"{name}{suffix}").stat().st_size > 100
    md = (out / "leaderboard.md").read_text()
    assert "| upstream-a |" in md and "| upstream-b |" in md and "UAR superb" in md
    rows = list(csv.DictReader(io.StringIO((out / "leaderboard.csv").read_text())))
    assert rows[0]["upstream"] == "upstream-a" and [r["rank"] for r in rows] == ["1", "2", "3"]
    assert {r["layer"] for r in rows if r["upstream"] != "baseline"} == {str(PLANTED)}
    board = json.loads((out / "leaderboard.json").read_text())
    uar = board["rows"][0]["UAR pooled [95% CI]"]
    assert 0.5 < uar["lo"] < uar["value"] < uar["hi"] <= 1
    tex = (out / "layers.tex").read_text()
    assert "\\begin{tabular}" in tex and "$\\pm$" in tex and "\\bottomrule" in tex
    layers = json.loads((out / "layers.json").read_text())["rows"]
    assert len(layers) == 2 * 6 + 2  # 2 upstreams x (5 layers + superb), baseline 1 + superb
    pngs = sorted(p.name for p in res.files if p.suffix == ".png")
    ups = ("baseline", "upstream-a", "upstream-b")
    assert pngs == sorted([f"confusion_iemocap_{u}{v}.png" for u in ups
                           for v in ("", "_normalised")] + ["layers_iemocap.png"])
    for p in pngs:
        data = (out / p).read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000
    assert "Leaderboard" in res.text and "Per-layer results" in res.text
    for fmt in FORMATS:
        assert render(res.leaderboard, fmt).strip()


def test_significance_finds_the_planted_difference(results: Path) -> None:
    res = report(results, plots=False)
    sig = read_csv(results / "report" / "significance.csv")
    assert list(sig[0])[:12] == ["dataset", "task", "a", "layer_a", "b", "layer_b", "metric",
                                 "delta", "ci_lo", "ci_hi", "p", "p_holm"]
    pair = [r for r in sig if {r["a"], r["b"]} == {"upstream-a", "upstream-b"}
            and r["table"] == "upstreams"]
    assert {(r["metric"], r["test"]) for r in pair} == {
        ("war", "paired bootstrap"), ("uar", "paired bootstrap"),
        ("macro_f1", "paired bootstrap"), ("war", "McNemar exact")}
    for r in pair:
        sign = 1 if r["a"] == "upstream-a" else -1
        assert sign * r["delta"] > 0.1 and sign * r["ci_lo"] > 0 and r["p_holm"] < 0.05
        assert r["n"] == 600 and r["layer_a"] == PLANTED == r["layer_b"]
    # Each layer of an upstream against its chosen layer; superb included, layer empty.
    mine = [r for r in sig if r["table"] == "layers of upstream-a" and r["metric"] == "uar"
            and r["test"] == "paired bootstrap"]
    assert sorted((r["layer_a"] is None, r["head_a"]) for r in mine) == [
        (False, "linear")] * 4 + [(True, "superb")]
    assert all(r["b"] == "upstream-a" and r["layer_b"] == PLANTED for r in mine)
    # Holm: adjusted >= raw, and the smallest raw p of a family times its size.
    fam = [r["p"] for r in mine]
    assert min(r["p_holm"] for r in mine) == pytest.approx(min(1.0, min(fam) * len(fam)))
    assert all(r["p_holm"] >= r["p"] for r in sig)
    # The leaderboard ranks upstream-a first and says upstream-b differs from it.
    top = res.leaderboard.rows
    assert top[0]["upstream"] == "upstream-a" and top[0]["vs_best"] == "best"
    b = next(r for r in top if r["upstream"] == "upstream-b")
    assert b["vs_best"].startswith("p=") and "n.s." not in b["vs_best"]
    assert "significance.md" in res.text and (results / "report" / "significance.md").exists()


def _row(layer, val, test, up="m", pooled=None, head="linear"):
    return {"dataset": "d", "task": "t", "upstream": up, "layer": layer, "head": head,
            "val_uar_mean": val, "uar_mean": test, "uar_std": 0.01, "war_mean": test,
            "war_std": 0.02, "pooled_uar": pooled if pooled is not None else test,
            "pooled_uar_lo": None, "pooled_uar_hi": None}


def test_leaderboard_uses_validation_not_test_and_ranks() -> None:
    summary = [_row(0, 0.50, 0.90), _row(1, 0.70, 0.60), _row(2, 0.65, 0.95),
               _row(None, 0.99, 0.99, head="superb"),
               _row(0, 0.40, 0.70, up="n"), _row(0, 0.40, 0.65, up="o", pooled=0.80)]
    table = leaderboard(summary)
    rec = {r["upstream"]: r for r in table.rows}
    assert rec["m"]["layer"] == 1  # best validation UAR among layers; superb is its own column
    assert rec["m"]["pooled_uar"] == 0.60 and rec["m"]["last"] == 0.95
    assert rec["m"]["superb"] == 0.99
    # Ranked by pooled UAR (o: 0.80 pooled though its fold mean is lowest), then n, then m.
    assert [r["upstream"] for r in table.rows] == ["o", "n", "m"]
    assert [r["rank"] for r in table.rows] == [1, 2, 3]
    assert [r["upstream"] for r in leaderboard(summary, sort="war").rows] == ["n", "o", "m"]
    md = render(table, "md")
    assert "| d | 3 | m | 1 |  | 60.0 ± 2.0 | 60.0 | 60.0 ± 1.0 | 95.0 | 99.0 |" in md
    with pytest.raises(ProbeError, match="cannot sort by 'ccc'"):
        leaderboard(summary, sort="ccc")


def test_metric_names_are_data_and_fewer_class_folds_are_marked() -> None:
    rows = [{**_row(0, 0.5, 0.6), "ccc_mean": 0.41, "ccc_std": 0.05, "pooled_ccc": 0.43,
             "pooled_ccc_lo": 0.40, "pooled_ccc_hi": 0.46}]
    proto = {"datasets": [{"dataset": "d", "task": {"name": "t"}, "upstream": "m", "folds": [
        {"test_classes": {"x": 3, "y": 0}}, {"test_classes": {"x": 2, "y": 4}}]}]}
    table = leaderboard(rows, sort="ccc", protocols=[proto])
    headers = [c.header for c in table.columns]
    assert "CCC pooled [95% CI]" in headers and "CCC mean ± std" in headers
    md = render(table, "md")
    assert "0.430 [0.400, 0.460]" in md and "0.410 ± 0.050 *" in md and "60.0 ± 1.0 *" in md
    assert table.rows[0]["fewer_class_folds"] == "1/2"
    assert any("lack a class" in n for n in table.notes)


def test_merge_folders_and_refuse_conflicts(caches, results: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    probe([caches["base"]], out=other, **{**FAST, "seeds": 1})
    # Same dataset/upstream as in `results` but other seeds: different numbers -> refused.
    with pytest.raises(ProbeError, match=f"{results}.*{other}|{other}.*{results}"):
        report([results, other], out=tmp_path / "merged")
    # A renamed copy merges; a verbatim copy of a folder adds nothing and agrees.
    copy = tmp_path / "copy"
    shutil.copytree(results, copy, ignore=shutil.ignore_patterns("units", "report"))
    merged = report([results, copy], out=tmp_path / "merged", plots=False)
    assert len(merged.layers.rows) == len(read_csv(results / "summary.csv"))
    with pytest.raises(ProbeError, match="--out"):
        report([results, copy])
    renamed = tmp_path / "renamed"
    probe([caches["base"]], out=renamed, **{**FAST, "seeds": 1})
    text = (renamed / "summary.csv").read_text().replace("baseline", "fbank")
    (renamed / "summary.csv").write_text(text)
    both = report([results, renamed], out=tmp_path / "both", plots=False, significance=False)
    assert {r["upstream"] for r in both.leaderboard.rows} == {
        "upstream-a", "upstream-b", "baseline", "fbank"}


def test_plots_draw_the_right_series(results: Path) -> None:
    summary = read_csv(results / "summary.csv")
    fig = layer_figure(summary, "iemocap", "4class")
    for ax in fig.axes:
        assert len(ax.containers) == 2  # error bars for the two multi-layer upstreams
        labels = [line.get_label() for line in ax.get_lines()]
        assert labels.count("baseline (one layer)") == 1
        assert "baseline (superb)" not in labels  # superb only for multi-layer upstreams
        assert {"upstream-a (superb)", "upstream-b (superb)"} <= set(labels)
        bars = ax.containers[0]
        lo_hi = bars.lines[2][0].get_segments()
        assert all(seg[0][1] < seg[1][1] for seg in lo_hi)  # real intervals, not zero-width
    proto = json.loads((results / "protocol.json").read_text())
    counts = proto["datasets"][0]["class_counts"]
    row = next(r for r in summary if r["upstream"] == "upstream-a" and r["layer"] == PLANTED)
    conf = seed_mean_confusion(row)
    np.testing.assert_allclose(conf.sum(1), [counts[c] for c in row["classes"]])


def test_load_results_round_trips_the_sweep(swept) -> None:
    rows = load_results(swept.out)
    assert len(rows) == len(swept.rows)
    for got, want in zip(rows, swept.rows):
        assert got.layer == want["layer"] and got.head == want["head"]
        assert isinstance(got.layer, (int, type(None)))
        assert (got.layer is None) == (got.head == "superb")
        for k in ("war", "uar", "macro_f1", "uar_lo", "C", "val_uar", "n_test"):
            assert got[k] == want[k], k  # exact: numbers are written with repr()
        assert got["confusion"] == want["confusion"]
    summary = load_results(swept.out, table="summary")
    assert [r.as_dict()["pooled_uar"] for r in summary] == [r["pooled_uar"] for r in
                                                          swept.summary]
    with pytest.raises(ProbeError, match="unknown results table"):
        load_results(swept.out, table="nope")


def test_to_pandas_where_installed(swept) -> None:
    pd = pytest.importorskip("pandas")
    frame = load_results(swept.out, table="summary").to_pandas()
    assert isinstance(frame, pd.DataFrame) and str(frame["layer"].dtype) == "Int64"
    assert frame["head"].isin(["linear", "superb"]).all()
    numeric = frame[frame["head"] == "linear"].sort_values("layer")
    assert numeric["layer"].dropna().is_monotonic_increasing
    assert frame["pooled_uar"].dtype == float


def test_report_rejects_other_directories(tmp_path: Path) -> None:
    with pytest.raises(ProbeError, match="protocol.json"):
        report(tmp_path)


@pytest.mark.slow
def test_cli_probe_then_report(caches, tmp_path: Path, capsys) -> None:
    out = tmp_path / "res"
    code = main(["probe", str(caches["a"]), "--out", str(out), "--seeds", "1", "--layers",
                 "1-3", "--c-grid", "0.001,0.1", "--bootstrap", "20", "--balanced",
                 "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "### Leaderboard" in printed and "| upstream-a |" in printed
    assert "iemocap/4class/upstream-a: 600 utterances" in printed  # library log, shown plain
    assert (out / "report" / "significance.md").exists()  # probe writes the report
    proto = json.loads((out / "protocol.json").read_text())
    assert proto["options"]["balanced"] is True and proto["datasets"][0]["layers"] == [1, 2, 3]
    per_seed = proto["datasets"][0]["folds"][0]["per_seed"][0]
    assert len(per_seed["validation_speakers"]) == per_seed["val_speakers"] > 0
    assert main(["report", str(out), "--format", "latex", "--sort", "war"]) == 0
    assert "\\begin{tabular}" in capsys.readouterr().out
    quiet = tmp_path / "quiet"
    assert main(["--quiet", "probe", str(caches["a"]), "--out", str(quiet), "--seeds", "1",
                 "--layers", "3", "--bootstrap", "0", "--no-report", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "utterances" not in printed and not (quiet / "report").exists()
    assert main(["probe", str(caches["a"]), "--task", "nope", "--out", str(out)]) == 2
    assert "defines no task 'nope'" in capsys.readouterr().err
