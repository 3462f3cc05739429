"""PNG figures of results (matplotlib, Agg backend): WAR and UAR (CCC and Pearson r for a
regression task) against layer per dataset
with 95% bootstrap intervals of the pooled figure, the layer chosen on validation starred,
one-layer baselines and superb heads as labelled horizontal lines; and the confusion matrix
at the chosen layer averaged over seeds (rows sum to the class counts), with a
row-normalised variant."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emoprobe.probe.results import FUSION, SUPERB, layer_key
from emoprobe.probe.tables import (
    chosen_layers,
    dataset_labels,
    is_layer,
    is_regression_row,
    metric_name,
    metrics_of,
    number,
)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "x"


def _plotted_metrics(summary: Sequence[Mapping[str, Any]]) -> list[str]:
    found = metrics_of(summary)
    wanted = ("ccc", "pearson") if any(is_regression_row(r) for r in summary) else ("war", "uar")
    pair = [m for m in wanted if m in found]
    return pair or found[:2]


def _value(r: Mapping[str, Any], m: str) -> tuple[float, float, float]:
    """(value, lo, hi) in display units: pooled with its interval, else the mean (no bar)."""
    scale = 100.0 if m in ("war", "uar", "macro_f1") else 1.0
    v = number(r.get(f"pooled_{m}"))
    if v is None:
        v = number(r.get(f"{m}_mean"))
        return (np.nan if v is None else v * scale), np.nan, np.nan
    lo, hi = number(r.get(f"pooled_{m}_lo")), number(r.get(f"pooled_{m}_hi"))
    return v * scale, (np.nan if lo is None else lo * scale), (np.nan if hi is None else hi * scale)


def layer_figure(summary: Sequence[Mapping[str, Any]], dataset: str, task: str) -> Any:
    """The layer-curve figure of one dataset and task (a matplotlib Figure): per metric, a
    curve with 95% error bars per multi-layer upstream, its chosen layer starred, its superb
    head dashed; each one-layer upstream and each fusion as a labelled dotted horizontal
    line."""
    plt = _pyplot()
    chosen = chosen_layers(summary)
    label = dataset_labels(summary)[(dataset, task)]
    mine = [r for r in summary if (r["dataset"], r["task"]) == (dataset, task)]
    metrics = _plotted_metrics(mine)
    upstreams = sorted({r["upstream"] for r in mine}, key=str)
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.6 * len(metrics), 4.3), squeeze=False)
    axes = axes[0]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    ticks = sorted({int(r["layer"]) for r in mine if is_layer(r["layer"])})
    for k, up in enumerate(upstreams):
        rows = sorted((r for r in mine if r["upstream"] == up and is_layer(r["layer"])),
                      key=lambda r: r["layer"])
        superb = next((r for r in mine if r["upstream"] == up and r.get("head") == SUPERB),
                      None)
        color = colors[k % len(colors)]
        x = np.asarray([r["layer"] for r in rows], dtype=float)
        fused = next((r for r in mine if r["upstream"] == up and r.get("head") == FUSION), None)
        if fused is not None:  # one probe over several caches: a level, not a curve
            for ax, m in zip(axes, metrics):
                ax.axhline(_value(fused, m)[0], color=color, ls=":", lw=1.6,
                           label=f"{up} (layers {fused.get('fused_layers')})")
            continue
        for ax, m in zip(axes, metrics):
            vals = np.asarray([_value(r, m) for r in rows], dtype=float).reshape(-1, 3)
            if len(rows) == 1:
                ax.axhline(vals[0, 0], color=color, ls=":", lw=1.6, label=f"{up} (one layer)")
                ax.annotate(up, xy=(1.0, vals[0, 0]), xycoords=("axes fraction", "data"),
                            xytext=(-4, 3), textcoords="offset points", ha="right",
                            fontsize=8, color=color)
                continue
            v, lo, hi = vals.T
            err = np.vstack([v - lo, hi - v])
            ax.errorbar(x, v, yerr=np.where(np.isnan(err), 0.0, err), marker="o", ms=3.5,
                        capsize=2.5, color=color, label=up)
            best = chosen.get((dataset, task, up))
            if best is not None and best in [r["layer"] for r in rows]:
                i = [r["layer"] for r in rows].index(best)
                ax.plot([x[i]], [v[i]], marker="*", ms=14, color=color,
                        markeredgecolor="black", zorder=5, linestyle="none")
            if superb is not None:
                ax.axhline(_value(superb, m)[0], color=color, ls="--", lw=1.2,
                           label=f"{up} (superb)")
    for ax, m in zip(axes, metrics):
        unit = " (%)" if m in ("war", "uar", "macro_f1") else ""
        ax.set_xlabel("layer (0 = embedding output)")
        ax.set_ylabel(f"{metric_name(m)}{unit}, pooled")
        ax.set_title(f"{label}: {metric_name(m)} by layer")
        ax.grid(alpha=0.3)
        if ticks and len(ticks) <= 30:
            ax.set_xticks(ticks)
    axes[-1].legend(fontsize=8, loc="best")
    fig.text(0.5, 0.005, "bars: 95% bootstrap interval over test utterances (folds and seeds "
             "pooled); star: layer chosen on validation", ha="center", fontsize=8, color="0.3")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


def plot_layers(summary: Sequence[Mapping[str, Any]], out_dir: Path) -> list[Path]:
    """One PNG per dataset and task: `layer_figure`."""
    plt = _pyplot()
    files = []
    for (dataset, task), label in dataset_labels(summary).items():
        fig = layer_figure(summary, dataset, task)
        path = out_dir / f"layers_{_safe(label)}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        files.append(path)
    return files


def seed_mean_confusion(row: Mapping[str, Any]) -> np.ndarray:
    """The pooled confusion matrix of a summary row divided by its number of seeds: each
    utterance counted once, so rows sum to the class counts of the tested utterances."""
    conf = np.asarray(row["pooled_confusion"], dtype=float)
    return conf / max(1, int(row.get("n_seeds") or 1))


def plot_confusions(summary: Sequence[Mapping[str, Any]], out_dir: Path) -> list[Path]:
    """At the chosen layer, per dataset and upstream: the confusion matrix averaged over
    seeds (counts) and its row-normalised variant (% of the reference class)."""
    plt = _pyplot()
    labels = dataset_labels(summary)
    files = []
    for (dataset, task, up), layer in chosen_layers(summary).items():
        row = next(r for r in summary if (r["dataset"], r["task"], r["upstream"])
                   == (dataset, task, up) and layer_key(r) == layer)
        if is_regression_row(row) or row.get("pooled_confusion") is None:
            continue  # a regression task has no classes, hence no confusion matrix
        conf = seed_mean_confusion(row)
        classes = list(row["classes"])
        with np.errstate(invalid="ignore", divide="ignore"):
            pct = 100 * conf / conf.sum(1, keepdims=True)
        n_seeds = int(row.get("n_seeds") or 1)
        k = len(classes)
        stem = f"confusion_{_safe(labels[(dataset, task)])}_{_safe(str(up))}"
        for variant, shown in (("", conf), ("_normalised", pct)):
            size = max(3.8, 0.75 * k + 2.2)
            fig, ax = plt.subplots(figsize=(size + 0.8, size))
            vmax = 100 if variant else max(1.0, float(np.nanmax(conf)))
            im = ax.imshow(np.nan_to_num(shown), cmap="Blues", vmin=0, vmax=vmax)
            for i in range(k):
                for j in range(k):
                    v = shown[i, j]
                    if np.isnan(v):  # a class with no test utterance: no row to normalise
                        text = "-"
                    else:
                        text = f"{v:.0f}%" if variant else (f"{v:.0f}" if n_seeds == 1
                                                             else f"{v:.1f}")
                    ax.text(j, i, text, ha="center", va="center", fontsize=8 if k > 5 else 9,
                            color="white" if np.nan_to_num(v) > 0.55 * vmax else "black")
            ax.set_xticks(range(k), classes)
            ax.set_yticks(range(k), classes)
            ax.set_xlabel("predicted")
            ax.set_ylabel("reference")
            uar = number(row.get("pooled_uar"))
            what = "% of reference class" if variant else f"utterances, mean of {n_seeds} seed(s)"
            ax.set_title(f"{labels[(dataset, task)]} / {up}, layer {layer}\n"
                         + (f"pooled UAR {100 * uar:.1f}%, " if uar is not None else "")
                         + what, fontsize=9)
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04,
                         label="% of reference class" if variant else "utterances")
            fig.tight_layout()
            path = out_dir / f"{stem}{variant}.png"
            fig.savefig(path, dpi=120)
            plt.close(fig)
            files.append(path)
    return files
