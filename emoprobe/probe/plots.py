"""PNG figures of a results directory (matplotlib, Agg backend): WAR/UAR (CCC and Pearson r
for a regression task) against layer per dataset with a band of one standard deviation over
folds and seeds, and the pooled confusion matrix at the layer chosen on validation."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emoprobe.probe.tables import (
    SUPERB,
    chosen_layers,
    dataset_labels,
    is_fused_layer,
    is_layer,
    is_regression_row,
    number,
)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "x"


def plot_layers(summary: Sequence[Mapping[str, Any]], out_dir: Path) -> list[Path]:
    """One figure per dataset: WAR and UAR (%) against layer, a line per upstream."""
    plt = _pyplot()
    chosen = chosen_layers(summary)
    files = []
    for (dataset, task), label in dataset_labels(summary).items():
        mine = [r for r in summary if (r["dataset"], r["task"]) == (dataset, task)]
        reg = any(is_regression_row(r) for r in mine)
        metrics = (("ccc", "CCC"), ("pearson", "Pearson r")) if reg else (
            ("war", "WAR (%)"), ("uar", "UAR (%)"))
        scale = 1.0 if reg else 100.0
        upstreams = sorted({r["upstream"] for r in mine}, key=str)
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for k, up in enumerate(upstreams):
            rows = sorted((r for r in mine if r["upstream"] == up and is_layer(r["layer"])),
                          key=lambda r: r["layer"])
            superb = next((r for r in mine if r["upstream"] == up and r["layer"] == SUPERB), None)
            fused = next((r for r in mine if r["upstream"] == up and is_fused_layer(r["layer"])),
                         None)
            x = np.asarray([r["layer"] for r in rows], dtype=float)
            color = colors[k % len(colors)]
            if fused is not None:  # one probe over several caches: a level, not a curve
                for ax, (metric, _) in zip(axes, metrics):
                    ax.axhline(number(fused[f"{metric}_mean"]) * scale, color=color, ls=":",
                               lw=1.6, label=f"{up} (layers {fused['layer']})")
                continue
            for ax, (metric, _) in zip(axes, metrics):
                m = np.asarray([number(r[f"{metric}_mean"]) for r in rows], dtype=float) * scale
                s = np.asarray([number(r[f"{metric}_std"]) or 0.0 for r in rows],
                               dtype=float) * scale
                ax.plot(x, m, marker="o", ms=3.5, color=color, label=up)
                ax.fill_between(x, m - s, m + s, color=color, alpha=0.18, linewidth=0)
                best = chosen.get((dataset, task, up))
                if best is not None and best in [r["layer"] for r in rows]:
                    i = [r["layer"] for r in rows].index(best)
                    ax.plot([x[i]], [m[i]], marker="*", ms=13, color=color,
                            markeredgecolor="black", zorder=5)
                if superb is not None:
                    ax.axhline(number(superb[f"{metric}_mean"]) * scale, color=color, ls="--",
                               lw=1.2, label=f"{up} (superb)")
        for ax, (_, name) in zip(axes, metrics):
            ax.set_xlabel("layer (0 = embedding output)")
            ax.set_ylabel(name)
            ax.set_title(f"{label}: {name.split(' (')[0]} by layer")
            ax.grid(alpha=0.3)
            if len(x) and len(x) <= 30:
                ax.set_xticks(np.unique(np.concatenate(
                    [[r["layer"] for r in mine if is_layer(r["layer"])]])).astype(int))
        axes[1].legend(fontsize=8, loc="best")
        fig.text(0.5, 0.005, "band: ±1 std over folds and seeds; star: layer chosen on validation",
                 ha="center", fontsize=8, color="0.3")
        fig.tight_layout(rect=(0, 0.03, 1, 1))
        path = out_dir / f"layers_{_safe(label)}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        files.append(path)
    return files


def plot_confusions(summary: Sequence[Mapping[str, Any]], out_dir: Path) -> list[Path]:
    """Pooled confusion matrix (row-normalised %, with counts) at the chosen layer, one figure
    per dataset and upstream."""
    plt = _pyplot()
    labels = dataset_labels(summary)
    files = []
    for (dataset, task, up), layer in chosen_layers(summary).items():
        row = next(r for r in summary if (r["dataset"], r["task"], r["upstream"], r["layer"])
                   == (dataset, task, up, layer))
        if is_regression_row(row):  # no classes, no confusion matrix
            continue
        conf = np.asarray(row["pooled_confusion"], dtype=float)
        classes = list(row["classes"])
        with np.errstate(invalid="ignore", divide="ignore"):
            pct = 100 * conf / conf.sum(1, keepdims=True)
        k = len(classes)
        size = max(3.8, 0.75 * k + 2.2)
        fig, ax = plt.subplots(figsize=(size + 0.8, size))
        im = ax.imshow(np.nan_to_num(pct), cmap="Blues", vmin=0, vmax=100)
        for i in range(k):
            for j in range(k):
                v = pct[i, j]
                ax.text(j, i, f"{v:.0f}%\n{int(conf[i, j])}", ha="center", va="center",
                        fontsize=8 if k > 5 else 9, color="white" if v > 55 else "black")
        ax.set_xticks(range(k), classes)
        ax.set_yticks(range(k), classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("reference")
        uar = number(row["pooled_uar"]) or 0.0
        n_seeds = int(row.get("n_seeds") or 1)
        ax.set_title(f"{labels[(dataset, task)]} / {up}, layer {layer}\n"
                     f"pooled UAR {100 * uar:.1f}% (all folds x {n_seeds} seed(s))", fontsize=10)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="% of reference class")
        fig.tight_layout()
        path = out_dir / f"confusion_{_safe(labels[(dataset, task)])}_{_safe(str(up))}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        files.append(path)
    return files
