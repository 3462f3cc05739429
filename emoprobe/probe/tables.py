"""Tables from a results directory: a leaderboard and a per-layer table, in Markdown, CSV,
JSON and LaTeX.

The leaderboard has one row per upstream and, per dataset, WAR and UAR at the layer chosen on
validation (best mean validation UAR over folds and seeds; the test folds play no part), at the
last probed layer, and for the weighted-sum (superb) probe when it was run. Figures are
percentages: mean and standard deviation over folds and seeds.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from emoprobe.errors import ProbeError
from emoprobe.probe.selection import choose_layer

FORMATS = ("md", "csv", "json", "latex")
SUFFIX = {"md": ".md", "csv": ".csv", "json": ".json", "latex": ".tex"}
SUPERB = "superb"


@dataclass
class Column:
    """A table column: its header, the record key of its value and, for a mean, its std."""

    header: str
    key: str
    std_key: str | None = None
    percent: bool = False
    ci: tuple[str, str] | None = None
    decimals: int | None = None  # fixed decimals for plain numbers (CCC: 3)


@dataclass
class Table:
    """Rows are flat records (numbers unformatted); columns say how to show them."""

    title: str
    columns: list[Column]
    rows: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)


def number(v: Any) -> float | None:
    if v is None or v == "":
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def is_layer(v: Any) -> bool:
    return isinstance(v, int) or (isinstance(v, float) and v.is_integer())


def is_fused_layer(v: Any) -> bool:
    """Whether a `layer` value names the layers of a fusion probe (`7+0`, one per cache)."""
    return isinstance(v, str) and re.fullmatch(r"-?\d+(\+-?\d+)+", v) is not None


def dataset_labels(summary: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], str]:
    """Column label per (dataset, task): the dataset name, with the task when a dataset
    appears with several tasks."""
    pairs = sorted({(r["dataset"], r["task"]) for r in summary},
                   key=lambda p: (str(p[0]), str(p[1])))
    tasks_of: dict[str, int] = {}
    for d, _ in pairs:
        tasks_of[d] = tasks_of.get(d, 0) + 1
    return {(d, t): (f"{d}:{t}" if tasks_of[d] > 1 else str(d)) for d, t in pairs}


def is_regression_row(row: Mapping[str, Any]) -> bool:
    """Whether a summary row belongs to a regression task (it carries CCC, not UAR)."""
    return number(row.get("ccc_mean")) is not None or number(row.get("val_ccc_mean")) is not None


def validation_key(row: Mapping[str, Any]) -> str:
    """The summary column layers are chosen by: mean validation UAR, or CCC for regression."""
    return "val_ccc_mean" if is_regression_row(row) else "val_uar_mean"


def chosen_layers(summary: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str, str], Any]:
    """(dataset, task, upstream) -> the layer with the best mean validation UAR (CCC for a
    regression task)."""
    groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    for r in summary:
        if is_layer(r["layer"]) or is_fused_layer(r["layer"]):
            groups.setdefault((r["dataset"], r["task"], r["upstream"]), []).append(r)
    chosen = {k: choose_layer([r["layer"] for r in rows],
                              [number(r.get(validation_key(r))) or math.nan for r in rows])
              for k, rows in groups.items()}
    return {k: int(v) if is_layer(v) else v for k, v in chosen.items()}


def audit_marks(protocol: Mapping[str, Any]) -> dict[tuple[str, str, str], str]:
    """(dataset, task, upstream) -> the audit's marks of its protocol (protocol.json), e.g.
    `S` for a speaker overlap; only results that have a mark."""
    out = {}
    for d in protocol.get("datasets", []):
        marks = ((d.get("audit") or {}).get("summary") or {}).get("marks") or []
        if marks:
            task = d["task"]["name"] if isinstance(d.get("task"), Mapping) else d.get("task")
            out[(str(d["dataset"]), str(task), str(d["upstream"]))] = "".join(marks)
    return out


def leaderboard(summary: Sequence[Mapping[str, Any]],
                marks: Mapping[tuple[str, str, str], str] | None = None) -> Table:
    """One row per upstream; per dataset WAR/UAR at the validation-chosen layer, at the last
    layer and (when present) for the superb weighted sum. `marks` (from `audit_marks`) flag
    results whose protocol the audit found leaky or unfair, in a column of their own."""
    from emoprobe.data.audit import MARK_MEANINGS

    marks = dict(marks or {})
    labels = dataset_labels(summary)
    chosen = chosen_layers(summary)
    by_key = {(r["dataset"], r["task"], r["upstream"], r["layer"]): r for r in summary}
    upstreams = sorted({r["upstream"] for r in summary}, key=str)
    has_superb = {(r["dataset"], r["task"]) for r in summary if r["layer"] == SUPERB}
    regression = {(r["dataset"], r["task"]) for r in summary if is_regression_row(r)}
    columns = [Column("upstream", "upstream")]
    for (d, t), lab in labels.items():
        if any(k[:2] == (str(d), str(t)) for k in marks):
            columns.append(Column(f"{lab} audit", f"{lab}|audit"))
        if (d, t) in regression:
            columns += [
                Column(f"{lab} layer", f"{lab}|layer"),
                Column(f"{lab} CCC", f"{lab}|ccc", f"{lab}|ccc_std", decimals=3),
                Column(f"{lab} CCC last", f"{lab}|ccc_last", f"{lab}|ccc_last_std", decimals=3),
            ]
            continue
        columns += [
            Column(f"{lab} layer", f"{lab}|layer"),
            Column(f"{lab} WAR", f"{lab}|war", f"{lab}|war_std", True),
            Column(f"{lab} UAR", f"{lab}|uar", f"{lab}|uar_std", True),
            Column(f"{lab} WAR last", f"{lab}|war_last", f"{lab}|war_last_std", True),
            Column(f"{lab} UAR last", f"{lab}|uar_last", f"{lab}|uar_last_std", True),
        ]
        if (d, t) in has_superb:
            columns += [
                Column(f"{lab} WAR superb", f"{lab}|war_superb", f"{lab}|war_superb_std", True),
                Column(f"{lab} UAR superb", f"{lab}|uar_superb", f"{lab}|uar_superb_std", True),
            ]
    rows = []
    for up in upstreams:
        rec: dict[str, Any] = {"upstream": up}
        for (d, t), lab in labels.items():
            layer = chosen.get((d, t, up))
            if layer is None:
                continue
            numeric = [r["layer"] for r in summary
                       if (r["dataset"], r["task"], r["upstream"]) == (d, t, up)
                       and is_layer(r["layer"])]
            last = max(numeric) if numeric else None  # a fusion has one (fused) layer
            for suffix, lay in (("", layer), ("_last", last), ("_superb", SUPERB)):
                r = by_key.get((d, t, up, lay))
                if r is None:
                    continue
                if (d, t) in regression:
                    rec[f"{lab}|ccc{suffix}"] = number(r["ccc_mean"])
                    rec[f"{lab}|ccc{suffix}_std"] = number(r["ccc_std"])
                    continue
                rec[f"{lab}|war{suffix}"] = number(r["war_mean"])
                rec[f"{lab}|war{suffix}_std"] = number(r["war_std"])
                rec[f"{lab}|uar{suffix}"] = number(r["uar_mean"])
                rec[f"{lab}|uar{suffix}_std"] = number(r["uar_std"])
            rec[f"{lab}|layer"] = layer
            rec[f"{lab}|audit"] = marks.get((str(d), str(t), str(up)))
        rows.append(rec)
    notes = []
    if len(regression) < len(labels):
        notes += ["WAR/UAR in %, mean ± std over folds and seeds.",
                  "layer = the layer with the best mean validation UAR (never the test folds); "
                  "'last' = the last layer probed."]
    if regression:
        notes.append("CCC (regression tasks): concordance correlation, mean ± std over folds "
                     "and seeds; layer chosen by validation CCC.")
    if has_superb:
        notes.append("superb = softmax-weighted sum of all layers learned with the linear layer.")
    shown = sorted({m for v in marks.values() for m in v})
    notes += [f"audit {m} = {MARK_MEANINGS[m]} (protocol.json has the findings; "
              "`emoprobe audit` lists them)." for m in shown if m in MARK_MEANINGS]
    return Table("Leaderboard", columns, rows, notes)


def layer_table(summary: Sequence[Mapping[str, Any]]) -> Table:
    """One row per dataset, task, upstream and layer (plus the superb row)."""
    chosen = chosen_layers(summary)
    rows = []
    for r in summary:
        rec = dict(r)
        rec["chosen"] = chosen.get((r["dataset"], r["task"], r["upstream"])) == r["layer"]
        rows.append(rec)
    columns = [
        Column("dataset", "dataset"), Column("task", "task"), Column("upstream", "upstream"),
        Column("layer", "layer"), Column("chosen", "chosen"),
    ]
    notes = []
    if not all(is_regression_row(r) for r in summary):
        columns += [
            Column("WAR", "war_mean", "war_std", True), Column("UAR", "uar_mean", "uar_std", True),
            Column("macro-F1", "macro_f1_mean", "macro_f1_std", True),
            Column("val UAR", "val_uar_mean", "val_uar_std", True),
            Column("pooled UAR [95% CI]", "pooled_uar", None, True,
                   ("pooled_uar_lo", "pooled_uar_hi")),
            Column("C", "C_mode"),
        ]
        notes += ["% figures: mean ± std over folds and seeds; pooled = all test utterances of "
                  "every fold and seed, with a 95% bootstrap interval; C = most frequent choice.",
                  "chosen = best mean validation UAR."]
    if any(is_regression_row(r) for r in summary):
        columns += [
            Column("CCC", "ccc_mean", "ccc_std", decimals=3),
            Column("r", "pearson_mean", "pearson_std", decimals=3),
            Column("RMSE", "rmse_mean", "rmse_std", decimals=3),
            Column("MAE", "mae_mean", "mae_std", decimals=3),
            Column("val CCC", "val_ccc_mean", "val_ccc_std", decimals=3),
            Column("pooled CCC [95% CI]", "pooled_ccc", None, decimals=3,
                   ci=("pooled_ccc_lo", "pooled_ccc_hi")),
            Column("alpha", "alpha_mode"),
        ]
        notes += ["Regression tasks: CCC, Pearson r, RMSE and MAE (target units), mean ± std "
                  "over folds and seeds; pooled CCC over all test utterances with a 95% "
                  "bootstrap interval; alpha = most frequent ridge penalty; chosen = best mean "
                  "validation CCC."]
    columns.append(Column("runs", "n_runs"))
    return Table("Per-layer results", columns, rows, notes)


def _cell(rec: Mapping[str, Any], col: Column, plain: bool = False) -> str:
    v = rec.get(col.key)
    if v is None:
        return ""
    num = number(v) if col.percent or col.std_key or col.decimals is not None else None
    if num is None:
        if isinstance(v, bool):
            return "yes" if v else ""
        if isinstance(v, float):
            return f"{v:g}"
        return str(v)
    scale = 100.0 if col.percent else 1.0
    spec = ".1f" if col.percent else (f".{col.decimals}f" if col.decimals is not None else "g")
    text = f"{num * scale:{spec}}"
    std = number(rec.get(col.std_key)) if col.std_key else None
    if std is not None:
        pm = "$\\pm$" if plain else "±"
        text += f" {pm} {std * scale:{'.1f' if spec == 'g' else spec}}"
    if col.ci:
        lo, hi = (number(rec.get(k)) for k in col.ci)
        if lo is not None and hi is not None:
            cspec = ".1f" if spec == "g" else spec
            text += f" [{lo * scale:{cspec}}, {hi * scale:{cspec}}]"
    return text


def to_markdown(table: Table) -> str:
    head = [c.header for c in table.columns]
    lines = [f"### {table.title}", "", "| " + " | ".join(head) + " |",
             "|" + "|".join("---" for _ in head) + "|"]
    for r in table.rows:
        lines.append("| " + " | ".join(_cell(r, c) for c in table.columns) + " |")
    lines.append("")
    lines += [f"{n}" for n in table.notes]
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    """Unformatted numbers (fractions, not %): one column per value and per std."""
    header = []
    for c in table.columns:
        header.append(c.header)
        if c.std_key:
            header.append(f"{c.header} std")
        if c.ci:
            header += [f"{c.header} lo", f"{c.header} hi"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in table.rows:
        line = []
        for c in table.columns:
            line.append(_plain(r.get(c.key)))
            if c.std_key:
                line.append(_plain(r.get(c.std_key)))
            if c.ci:
                line += [_plain(r.get(k)) for k in c.ci]
        w.writerow(line)
    return buf.getvalue()


def _plain(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(v)
    return str(v)


def to_json(table: Table) -> str:
    out = []
    for r in table.rows:
        rec: dict[str, Any] = {}
        for c in table.columns:
            v = r.get(c.key)
            if c.std_key:
                rec[c.header] = {"mean": number(v), "std": number(r.get(c.std_key))}
            elif c.ci:
                rec[c.header] = {"value": number(v), "lo": number(r.get(c.ci[0])),
                                 "hi": number(r.get(c.ci[1]))}
            else:
                rec[c.header] = None if isinstance(v, float) and math.isnan(v) else v
        out.append(rec)
    return json.dumps({"title": table.title, "notes": table.notes, "rows": out}, indent=2) + "\n"


_LATEX_ESCAPE = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
                 "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                 "\\": r"\textbackslash{}"}


def _tex(s: str) -> str:
    return "".join(_LATEX_ESCAPE.get(ch, ch) for ch in s)


def to_latex(table: Table) -> str:
    """A booktabs tabular (needs \\usepackage{booktabs})."""
    spec = "l" * min(len(table.columns), 1) + "r" * (len(table.columns) - 1)
    lines = [f"% {_tex(table.title)}", f"\\begin{{tabular}}{{{spec}}}", "\\toprule",
             " & ".join(_tex(c.header) for c in table.columns) + " \\\\", "\\midrule"]
    for r in table.rows:
        cells = []
        for c in table.columns:
            text = _cell(r, c, plain=True)
            cells.append(text if "$\\pm$" in text else _tex(text))
        lines.append(" & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    lines += [f"% {_tex(n)}" for n in table.notes]
    return "\n".join(lines) + "\n"


RENDER = {"md": to_markdown, "csv": to_csv, "json": to_json, "latex": to_latex}


def render(table: Table, fmt: str) -> str:
    if fmt not in RENDER:
        raise ProbeError(f"unknown report format {fmt!r}; known: {', '.join(FORMATS)}")
    return RENDER[fmt](table)
