"""Tables from results directories: a ranked leaderboard and a per-layer table, in Markdown,
CSV, JSON and LaTeX.

The leaderboard has one row per dataset, task and upstream, ranked within each dataset by a
metric (UAR unless told otherwise) at the layer chosen on validation (best mean validation
UAR over folds and seeds; the test folds play no part). For every metric it shows the figure
pooled over all test utterances with its 95% bootstrap interval next to the mean ± std over
folds and seeds; a mean marked * includes folds whose test part lacks a class, so their UAR
and macro-F1 average over fewer classes than the task has. The last column gives the
Holm-adjusted p-value of the paired test against the best upstream of the dataset
(emoprobe.probe.significance). Metric names are data: any `M_mean`/`M_std` pair of the summary
rows becomes a metric.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from emoprobe.errors import ProbeError
from emoprobe.probe.results import FUSION, LINEAR, SUPERB, layer_key
from emoprobe.probe.selection import choose_layer

FORMATS = ("md", "csv", "json", "latex")
SUFFIX = {"md": ".md", "csv": ".csv", "json": ".json", "latex": ".tex"}
NAMES = {"war": "WAR", "uar": "UAR", "macro_f1": "macro-F1"}
PERCENT = frozenset(NAMES)  # metrics shown in %; others with 3 decimals
NAMES.update({"ccc": "CCC", "pearson": "Pearson r", "rmse": "RMSE", "mae": "MAE"})
LOWER_IS_BETTER = frozenset({"mae", "mse", "rmse"})
NOT_METRICS = frozenset({"val_uar", "val_ccc"})
DEFAULT_SORT = {False: "uar", True: "ccc"}  # classification, regression
ALPHA = 0.05


@dataclass
class Column:
    """A table column: its header, the record key of its value and, for a mean, its std;
    `ci` names the interval's keys and `mark` a key whose text follows the value."""

    header: str
    key: str
    std_key: str | None = None
    percent: bool = False
    ci: tuple[str, str] | None = None
    mark: str | None = None
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
    return not isinstance(v, bool) and (
        isinstance(v, int) or (isinstance(v, float) and v.is_integer()))


def metric_name(m: str) -> str:
    return NAMES.get(m, m)


def metrics_of(summary: Sequence[Mapping[str, Any]]) -> list[str]:
    """The metrics of summary rows: every `M_mean` with an `M_std` (WAR, UAR, macro-F1
    first, then the others by name)."""
    keys: set[str] = set()
    for r in summary:
        keys.update(k for k, v in r.items() if v is not None)
    found = {k[: -len("_mean")] for k in keys
             if k.endswith("_mean") and f"{k[: -len('_mean')]}_std" in keys}
    found -= NOT_METRICS
    return [m for m in NAMES if m in found] + sorted(found - set(NAMES))


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
        if (r.get("head", LINEAR) == LINEAR and is_layer(r["layer"])) or r.get("head") == FUSION:
            groups.setdefault((r["dataset"], r["task"], r["upstream"]), []).append(r)
    chosen = {k: choose_layer([layer_key(r) for r in rows],
                              [number(r.get(validation_key(r))) or math.nan for r in rows])
              for k, rows in groups.items()}
    return {k: int(v) if is_layer(v) else v for k, v in chosen.items()}


def fewer_class_folds(protocols: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str, str],
                                                                        tuple[int, int]]:
    """(dataset, task, upstream) -> (folds whose test part lacks a class, folds)."""
    out = {}
    for proto in protocols:
        for ds in proto.get("datasets", []):
            folds = ds.get("folds") or []
            short = sum(1 for f in folds if any(n == 0 for n in (f.get("test_classes") or {})
                                                .values()))
            task = ds["task"]["name"] if isinstance(ds.get("task"), Mapping) else ds.get("task")
            out[(ds["dataset"], task, ds["upstream"])] = (short, len(folds))
    return out


def _pooled(r: Mapping[str, Any], m: str) -> float | None:
    return number(r.get(f"pooled_{m}"))


def _score(r: Mapping[str, Any] | None, m: str) -> float | None:
    """The figure a leaderboard ranks by: pooled when the sweep pooled it, else the mean."""
    if r is None:
        return None
    v = _pooled(r, m)
    return v if v is not None else number(r.get(f"{m}_mean"))


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


def leaderboard(
    summary: Sequence[Mapping[str, Any]],
    marks: Mapping[tuple[str, str, str], str] | None = None,
    *,
    sort: str | None = None,
    significance: Mapping[tuple[Any, ...], float] | None = None,
    protocols: Sequence[Mapping[str, Any]] = (),
    published: Sequence[Any] = (),
) -> Table:
    """Upstreams ranked per dataset by `sort` at the validation-chosen layer: every metric
    pooled [95% CI] and mean ± std over folds and seeds, `sort` at the last layer and for
    the superb head when run, the p-value against the best upstream (`significance`:
    (dataset, task, frozenset({a, b}), metric) -> Holm-adjusted p of the paired bootstrap,
    emoprobe.probe.significance.versus), and the `published`
    figures (emoprobe.published) that match with our mean minus theirs. `marks` (from
    `audit_marks`) flag results whose protocol the audit found leaky or unfair."""
    from emoprobe.data.audit import MARK_MEANINGS
    from emoprobe.published import TITLES, published_for

    marks = dict(marks or {})
    metrics = metrics_of(summary)
    if sort is not None and sort not in metrics:
        raise ProbeError(f"cannot sort by {sort!r}: the results have "
                         f"{', '.join(metrics) or 'no metrics'}")
    labels = dataset_labels(summary)
    chosen = chosen_layers(summary)
    short = fewer_class_folds(protocols)
    by_key = {(r["dataset"], r["task"], r["upstream"], layer_key(r)): r for r in summary}
    has_superb = any(r.get("head") == SUPERB for r in summary)
    pub_cols: dict[tuple[str, str], None] = {}
    rows = []
    sorts: dict[str, None] = {}
    for (d, t), lab in labels.items():
        mine = [r for r in summary if (r["dataset"], r["task"]) == (d, t)]
        key = sort if sort in metrics_of(mine) else DEFAULT_SORT[
            any(is_regression_row(r) for r in mine)]
        sorts[key] = None
        sign = 1.0 if key in LOWER_IS_BETTER else -1.0
        entries = []
        for up in sorted({r["upstream"] for r in summary if (r["dataset"], r["task"]) == (d, t)},
                         key=str):
            layer = chosen.get((d, t, up))
            r = by_key.get((d, t, up, layer)) if layer is not None else None
            if r is None:
                continue
            rec: dict[str, Any] = {"dataset": lab, "upstream": up, "layer": layer}
            for m in metrics:
                rec[f"pooled_{m}"] = _pooled(r, m)
                rec[f"pooled_{m}_lo"] = number(r.get(f"pooled_{m}_lo"))
                rec[f"pooled_{m}_hi"] = number(r.get(f"pooled_{m}_hi"))
                rec[f"{m}_mean"], rec[f"{m}_std"] = number(r.get(f"{m}_mean")), number(
                    r.get(f"{m}_std"))
            n_short, n_folds = short.get((d, t, up), (0, 0))
            rec["mark"] = " *" if n_short else ""
            rec["fewer_class_folds"] = f"{n_short}/{n_folds}" if n_folds else None
            numeric = [k[3] for k in by_key if k[:3] == (d, t, up) and is_layer(k[3])]
            last = max(numeric) if numeric else None  # a fusion has one (fused) layer
            rec["last"] = _score(by_key.get((d, t, up, last)), key)
            rec["audit"] = marks.get((str(d), str(t), str(up)))
            rec["superb"] = _score(by_key.get((d, t, up, SUPERB)), key)
            rec["_score"] = _score(r, key)
            rec["ranked_by"] = metric_name(key)
            rec["published"] = published_for(d, len(r.get("classes") or ()), up, published)
            for p in rec["published"]:
                ours = number(r.get(f"{p.metric}_mean"))
                rec[f"pub|{p.registry}|{p.metric}"] = p.value
                rec[f"pub_delta|{p.registry}|{p.metric}"] = (
                    None if ours is None else ours - p.value)
                pub_cols.setdefault((p.registry, p.metric), None)
            entries.append(rec)
        entries.sort(key=lambda e: (e["_score"] is None,
                                    sign * (e["_score"] if e["_score"] is not None else 0.0),
                                    str(e["upstream"])))
        for rank, rec in enumerate(entries, 1):
            rec["rank"] = rank
            if rank == 1:
                rec["vs_best"] = "best"
            elif significance:
                p = significance.get(
                    (d, t, frozenset({entries[0]["upstream"], rec["upstream"]}), key))
                if p is not None:
                    rec["vs_best"] = f"p={p:.2g}" + (" (n.s.)" if p >= ALPHA else "")
            del rec["_score"]
        rows += entries
    sname = " / ".join(metric_name(k) for k in sorts) or "UAR"
    pct = all(k in PERCENT for k in sorts)
    columns = [Column("dataset", "dataset"), Column("rank", "rank"),
               Column("upstream", "upstream"), Column("layer", "layer")]
    if len(sorts) > 1:
        columns.append(Column("ranked by", "ranked_by"))
    if any(r["mark"] for r in rows):
        columns.append(Column("folds lacking a class", "fewer_class_folds"))
    if any(r.get("audit") for r in rows):
        columns.append(Column("audit", "audit"))
    for m in metrics:
        p, dec = m in PERCENT, (None if m in PERCENT else 3)
        columns += [
            Column(f"{metric_name(m)} pooled [95% CI]", f"pooled_{m}", None, p,
                   (f"pooled_{m}_lo", f"pooled_{m}_hi"), decimals=dec),
            Column(f"{metric_name(m)} mean ± std", f"{m}_mean", f"{m}_std", p, mark="mark",
                   decimals=dec),
        ]
    dec = None if pct else 3
    columns.append(Column(f"{sname} last layer", "last", None, pct, decimals=dec))
    if has_superb:
        columns.append(Column(f"{sname} superb", "superb", None, pct, decimals=dec))
    if significance:
        columns.append(Column(f"vs best ({sname}, Holm)", "vs_best"))
    for reg, m in pub_cols:
        title = f"{TITLES.get(reg, reg)} {metric_name(m)}"
        columns += [Column(title, f"pub|{reg}|{m}", None, m in PERCENT),
                    Column(f"Δ vs {title}", f"pub_delta|{reg}|{m}", None, m in PERCENT)]
    notes = [
        f"Ranked by pooled {sname} at the layer chosen on validation (best mean validation "
        "UAR over folds and seeds, CCC for a regression task; never the test folds).",
        ("pooled = every test utterance of every fold and seed scored at once (one confusion "
         "matrix for a categorical task, all predicted ratings for a regression task), with "
         if any(is_regression_row(r) for r in summary) else
         "pooled = one confusion matrix over every test utterance of every fold and seed, with ")
        + "a 95% bootstrap interval over utterances; mean ± std over folds and seeds."
        + ("  % figures." if set(metrics) & PERCENT else ""),
        f"'last layer' = {sname} (pooled) of the last layer probed.",
    ]
    if any(r["mark"] for r in rows):
        notes.append("* some test folds lack a class (see `fewer_class_folds` in the CSV): "
                     "their per-fold UAR and macro-F1 average over fewer classes than the "
                     "task has, so the fold mean and the pooled figure can rank upstreams "
                     "differently.")
    if has_superb:
        notes.append("superb = softmax-weighted sum of all layers learned with the linear "
                     "layer.")
    if significance:
        notes.append(f"vs best: paired bootstrap over test utterances of {sname} against the "
                     f"rank-1 upstream, Holm-adjusted; n.s. = not significantly different "
                     f"at {ALPHA} (report/significance.md).")
    shown = sorted({m for v in marks.values() for m in v})
    notes += [f"audit {m} = {MARK_MEANINGS[m]} (protocol.json has the findings; "
              "`emoprobe audit` lists them)." for m in shown if m in MARK_MEANINGS]
    if pub_cols:
        notes.append("Published figures (report/published.csv has their protocol and source) "
                     "were measured under other protocols; Δ = our mean over folds and seeds "
                     "at the chosen layer minus the published figure.")
    elif published:
        notes.append("No published figure matches these datasets and upstreams "
                     "(docs/probing.md: the name-matching rule).")
    return Table("Leaderboard", columns, rows, notes)


def layer_table(summary: Sequence[Mapping[str, Any]]) -> Table:
    """One row per dataset, task, upstream and layer (plus the superb row)."""
    chosen = chosen_layers(summary)
    rows = []
    for r in summary:
        rec = dict(r)
        rec["chosen"] = (r.get("head", LINEAR) != SUPERB and
                         chosen.get((r["dataset"], r["task"], r["upstream"])) == layer_key(r))
        if r.get("head") == FUSION:
            rec["layer"] = r.get("fused_layers")
        rows.append(rec)
    columns = [
        Column("dataset", "dataset"), Column("task", "task"), Column("upstream", "upstream"),
        Column("layer", "layer"), Column("head", "head"), Column("chosen", "chosen"),
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
    num = number(v) if col.percent or col.std_key or col.ci or col.decimals is not None else None
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
    if col.mark and rec.get(col.mark):
        text += str(rec[col.mark])
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
