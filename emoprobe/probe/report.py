"""`report(DIR...)`: the tables (every format), significance tests and plots of one or more
results directories.

Several directories are merged: their summaries are joined on (dataset, task, upstream,
layer, head); the same probe in two directories must carry the same numbers (a repeat of a
run), otherwise the report stops and names both directories.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emoprobe.errors import ProbeError
from emoprobe.probe.plots import plot_confusions, plot_layers
from emoprobe.probe.results import (
    KEY_COLUMNS,
    PREDICTIONS,
    SUMMARY,
    read_csv,
    read_protocol,
    write_csv,
)
from emoprobe.probe.tables import (
    FORMATS,
    RENDER,
    SUFFIX,
    Column,
    Table,
    audit_marks,
    chosen_layers,
    layer_table,
    leaderboard,
    render,
)

log = logging.getLogger(__name__)

SIGNIFICANCE = "significance"


@dataclass
class ReportResult:
    """Files a report wrote, and its tables."""

    text: str
    files: list[Path]
    leaderboard: Table
    layers: Table
    significance: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Merged:
    """The summaries, protocols and prediction files of one or more results directories."""

    summary: list[dict[str, Any]]
    protocols: list[dict[str, Any]]
    predictions: list[Path]
    n_boot: int


def merge_results(directories: Sequence[str | Path]) -> Merged:
    """Read and join results directories; a probe present in two with different numbers is
    an error naming both."""
    if not directories:
        raise ProbeError("report needs at least one results directory")
    owner: dict[tuple[Any, ...], tuple[Path, dict[str, Any]]] = {}
    summary: list[dict[str, Any]] = []
    protocols, predictions, boots = [], [], []
    for d in map(Path, directories):
        proto = read_protocol(d)  # fails clearly when this is not a results directory
        rows = read_csv(d / SUMMARY)
        if not rows:
            raise ProbeError(f"{d / SUMMARY}: no results to report")
        protocols.append(proto)
        boots.append(int((proto.get("options") or {}).get("n_boot", 1000)))
        if (d / PREDICTIONS).exists():
            predictions.append(d / PREDICTIONS)
        for r in rows:
            key = tuple(r.get(k) for k in KEY_COLUMNS)
            if key in owner:
                first, seen = owner[key]
                if seen != r:
                    what = "/".join(str(k) for k in key[:3])
                    layer = key[3] if key[3] is not None else key[4]
                    raise ProbeError(
                        f"{first} and {d} both hold {what} layer {layer} with different "
                        "numbers; report one of them, or rename the upstream in one")
                continue
            owner[key] = (d, r)
            summary.append(r)
    return Merged(summary, protocols, predictions, min(boots))


def significance_table(rows: Sequence[Mapping[str, Any]]) -> Table:
    columns = [Column(c, c) for c in ("dataset", "task", "table", "a", "layer_a", "b",
                                      "layer_b", "metric", "test", "n")]
    columns += [Column("delta [95% CI]", "delta", None, True, ("ci_lo", "ci_hi")),
                Column("p", "p"), Column("p (Holm)", "p_holm")]
    shown = []
    for r in rows:
        rec = dict(r)
        for side in ("a", "b"):
            if rec[f"layer_{side}"] is None:
                rec[f"layer_{side}"] = rec[f"head_{side}"]
        for k in ("p", "p_holm"):
            rec[k] = float(f"{r[k]:.3g}")
        shown.append(rec)
    notes = [
        "delta = a - b in points (%); paired bootstrap over test utterances (folds pooled, "
        "seeds travel with their utterance), 95% percentile interval; McNemar exact test for "
        "WAR on majority-of-seeds correctness.",
        "p (Holm) = Holm-Bonferroni over the comparisons of one table (upstreams of a dataset, "
        "or layers of an upstream against its chosen layer), per metric and test.",
    ]
    return Table("Paired significance", columns, shown, notes)


def report(
    directory: str | Path | Sequence[str | Path],
    *,
    fmt: str = "md",
    out: str | Path | None = None,
    plots: bool = True,
    sort: str | None = None,
    significance: bool = True,
    published: str | None = None,
) -> ReportResult:
    """Render the tables (every format), the paired significance tests and the plots of one
    results directory, or of several merged, into `out` (default DIR/report for one
    directory; required for several) and return the tables, with the leaderboard and the
    per-layer table as text in `fmt`. `published` ("emobox", "superb" or "all") adds the
    matching published figures and our difference to them."""
    from emoprobe.probe.significance import COLUMNS, compare, read_probe_predictions, versus

    dirs = [directory] if isinstance(directory, (str, Path)) else list(directory)
    if fmt not in RENDER:
        raise ProbeError(f"unknown report format {fmt!r}; known: {', '.join(FORMATS)}")
    merged = merge_results(dirs)
    if out is None:
        if len(dirs) > 1:
            raise ProbeError("several results directories: say where the report goes (--out)")
        out = Path(dirs[0]) / "report"
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    sig: list[dict[str, Any]] = []
    if significance and merged.predictions and merged.n_boot > 0:
        from emoprobe.probe.significance import probe_keys

        preds = read_probe_predictions(merged.predictions, probe_keys(merged.summary))
        sig = compare(merged.summary, preds, chosen_layers(merged.summary),
                      n_boot=merged.n_boot)
        write_csv(out_dir / f"{SIGNIFICANCE}.csv", sig, COLUMNS)
        md = out_dir / f"{SIGNIFICANCE}.md"
        md.write_text(render(significance_table(sig), "md"), encoding="utf-8")
        files += [out_dir / f"{SIGNIFICANCE}.csv", md]
    elif significance:
        log.info("no significance tests: %s", "no predictions.csv.gz" if not merged.predictions
                 else "the sweep ran without bootstrap resamples (n_boot = 0)")
    registry = []
    if published:
        from emoprobe.published import describe, load_registry

        registry = load_registry(published)
    marks = {k: v for proto in merged.protocols for k, v in audit_marks(proto).items()}
    board = leaderboard(merged.summary, marks, sort=sort, significance=versus(sig),
                        protocols=merged.protocols, published=registry)
    if registry:
        matched = [describe(p) for r in board.rows for p in r.get("published", ())]
        write_csv(out_dir / "published.csv", matched,
                  ["registry", "dataset", "upstream", "metric", "value", "protocol", "source"])
        files.append(out_dir / "published.csv")
    per_layer = layer_table(merged.summary)
    for f in FORMATS:
        for name, table in (("leaderboard", board), ("layers", per_layer)):
            path = out_dir / f"{name}{SUFFIX[f]}"
            path.write_text(render(table, f), encoding="utf-8")
            files.append(path)
    if plots:
        files += plot_layers(merged.summary, out_dir)
        files += plot_confusions(merged.summary, out_dir)
    text = render(board, fmt) + "\n" + render(per_layer, fmt)
    if sig:
        n_sig = sum(1 for r in sig if r["p_holm"] < 0.05)
        text += (f"\n{len(sig)} paired comparisons, {n_sig} significant at 0.05 after Holm "
                 f"({out_dir / (SIGNIFICANCE + '.md')}).\n")
    notes = [n for proto in merged.protocols for n in proto.get("warnings") or []]
    if notes:  # what the data did not allow (e.g. no validation part, C fixed)
        text += "\nWarnings:\n" + "".join(f"- {n}\n" for n in notes)
    return ReportResult(text=text, files=files, leaderboard=board, layers=per_layer,
                        significance=sig)
