"""`report(DIR)`: a results directory's tables in every format, and its plots."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from emoprobe.errors import ProbeError
from emoprobe.probe.plots import plot_confusions, plot_layers
from emoprobe.probe.results import SUMMARY, read_csv, read_protocol
from emoprobe.probe.tables import (
    FORMATS,
    RENDER,
    SUFFIX,
    Table,
    audit_marks,
    layer_table,
    leaderboard,
    render,
)


@dataclass
class ReportResult:
    """Files a report wrote, and the leaderboard in the requested format."""

    text: str
    files: list[Path]
    leaderboard: Table
    layers: Table


def report(
    directory: str | Path,
    *,
    fmt: str = "md",
    out: str | Path | None = None,
    plots: bool = True,
) -> ReportResult:
    """Render the tables (every format) and plots of a results directory into `out`
    (default DIR/report) and return the leaderboard and per-layer table in `fmt`."""
    directory = Path(directory)
    if fmt not in RENDER:
        raise ProbeError(f"unknown report format {fmt!r}; known: {', '.join(FORMATS)}")
    protocol = read_protocol(directory)  # fails clearly when this is not a results directory
    summary = read_csv(directory / SUMMARY)
    if not summary:
        raise ProbeError(f"{directory / SUMMARY}: no results to report")
    out_dir = Path(out) if out is not None else directory / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    board, per_layer = leaderboard(summary, audit_marks(protocol)), layer_table(summary)
    files = []
    for f in FORMATS:
        for name, table in (("leaderboard", board), ("layers", per_layer)):
            path = out_dir / f"{name}{SUFFIX[f]}"
            path.write_text(render(table, f), encoding="utf-8")
            files.append(path)
    if plots:
        files += plot_layers(summary, out_dir)
        files += plot_confusions(summary, out_dir)
    text = render(board, fmt) + "\n" + render(per_layer, fmt)
    notes = protocol.get("warnings") or []
    if notes:  # what the data did not allow (e.g. no validation part, C fixed)
        text += "\nWarnings:\n" + "".join(f"- {n}\n" for n in notes)
    return ReportResult(text=text, files=files, leaderboard=board, layers=per_layer)
