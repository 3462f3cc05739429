"""`emoprobe report`: every table format renders, the plots are written, the leaderboard picks
the layer by validation (never test), and the command line runs probe -> report."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from probe_fixtures import PLANTED, planted_cache

from emoprobe.cli import main
from emoprobe.errors import ProbeError
from emoprobe.probe import probe, report
from emoprobe.probe.tables import FORMATS, leaderboard, render

FAST = {"seeds": 1, "n_boot": 50, "c_grid": (1e-3, 1e-1), "progress": False}
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("rep")
    a = planted_cache(base / "upstream-a.h5", model="a")
    b = planted_cache(base / "upstream-b.h5", model="b", seed=5)
    out = base / "results"
    probe([a, b], out=out, preset="superb", **FAST)
    return out


def test_every_format_and_plots(results: Path) -> None:
    res = report(results, fmt="md")
    out = results / "report"
    for name in ("leaderboard", "layers"):
        for suffix in (".md", ".csv", ".json", ".tex"):
            assert (out / f"{name}{suffix}").stat().st_size > 100
    md = (out / "leaderboard.md").read_text()
    assert "| upstream-a |" in md and "| upstream-b |" in md and "iemocap UAR superb" in md
    rows = list(csv.DictReader(io.StringIO((out / "leaderboard.csv").read_text())))
    assert {r["upstream"] for r in rows} == {"upstream-a", "upstream-b"}
    assert all(r["iemocap layer"] == str(PLANTED) for r in rows)
    board = json.loads((out / "leaderboard.json").read_text())
    uar = board["rows"][0]["iemocap UAR"]
    assert 0.5 < uar["mean"] <= 1 and uar["std"] >= 0
    tex = (out / "layers.tex").read_text()
    assert "\\begin{tabular}" in tex and "$\\pm$" in tex and "\\bottomrule" in tex
    layers = json.loads((out / "layers.json").read_text())["rows"]
    assert len(layers) == 2 * 6  # 2 upstreams x (5 layers + superb)
    pngs = sorted(p.name for p in res.files if p.suffix == ".png")
    assert pngs == ["confusion_iemocap_upstream-a.png", "confusion_iemocap_upstream-b.png",
                    "layers_iemocap.png"]
    for p in pngs:
        data = (out / p).read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000
    assert "Leaderboard" in res.text and "Per-layer results" in res.text
    for fmt in FORMATS:
        assert render(res.leaderboard, fmt).strip()


def _row(layer, val, test, up="m"):
    return {"dataset": "d", "task": "t", "upstream": up, "layer": layer, "val_uar_mean": val,
            "uar_mean": test, "uar_std": 0.01, "war_mean": test, "war_std": 0.02}


def test_leaderboard_uses_validation_not_test() -> None:
    summary = [_row(0, 0.50, 0.90), _row(1, 0.70, 0.60), _row(2, 0.65, 0.95),
               _row("superb", 0.99, 0.99)]
    table = leaderboard(summary)
    rec = table.rows[0]
    assert rec["d|layer"] == 1  # best validation UAR among layers; superb is its own column
    assert rec["d|uar"] == 0.60 and rec["d|uar_last"] == 0.95 and rec["d|uar_superb"] == 0.99
    md = render(table, "md")
    assert "| m | 1 | 60.0 ± 2.0 | 60.0 ± 1.0 | 95.0 ± 2.0 | 95.0 ± 1.0 |" in md


def test_report_rejects_other_directories(tmp_path: Path) -> None:
    with pytest.raises(ProbeError, match="protocol.json"):
        report(tmp_path)


def test_cli_probe_then_report(tmp_path: Path, capsys) -> None:
    cache = planted_cache(tmp_path / "up.h5")
    out = tmp_path / "res"
    code = main(["probe", str(cache), "--out", str(out), "--seeds", "1", "--layers", "1-3",
                 "--c-grid", "0.001,0.1", "--bootstrap", "20", "--balanced", "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "### Leaderboard" in printed and f"| up | {PLANTED} |" in printed
    proto = json.loads((out / "protocol.json").read_text())
    assert proto["options"]["balanced"] is True and proto["datasets"][0]["layers"] == [1, 2, 3]
    assert main(["report", str(out), "--format", "latex"]) == 0
    assert "\\begin{tabular}" in capsys.readouterr().out
    assert main(["probe", str(cache), "--task", "nope", "--out", str(out)]) == 2
    assert "defines no task 'nope'" in capsys.readouterr().err
