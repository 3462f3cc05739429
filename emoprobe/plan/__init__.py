"""What `emoprobe run CONFIG` would do, without loading a model or reading audio: the corpora
and their expected sizes, each upstream's cache size, an extraction-time estimate on CPU and
GPU, and the probe sweep.

Estimates come from the data files beside this module. models.csv: the hidden states and
width of the upstreams the recipes use (from their model configs; a local checkpoint folder
is read from its config.json). throughput.csv: extraction speeds measured on the reference
machine (docs/performance.md), scaled to other models of a family by blocks x width^2 (the
cost of a transformer block grows with the square of its width). Whisper encoders run one
30 s window per utterance (more for longer ones), so their time follows the utterance count,
not the audio length. No GPU speed has been measured yet, so the GPU column says so instead
of guessing. Corpus sizes are the published counts (emoprobe.data.corpora) and the audio
hours in CORPUS_HOURS.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from emoprobe.errors import ProbeError

# Audio hours of the default task of each corpus (../shared/docs/corpora.md); MSP-IMPROV's
# is not documented, so its estimate assumes IEMOCAP's mean utterance length.
CORPUS_HOURS = {"iemocap": 6.99, "emotiontalk": 23.6}
MEAN_SECONDS_FALLBACK = 4.55  # IEMOCAP 4-class mean utterance length (corpora.md)
WINDOW_S = 30.0


@dataclass(frozen=True)
class UpstreamPlan:
    """One upstream of a run: its cache shape and the estimates for one corpus."""

    model: str
    family: str | None
    hidden_states: int | None
    dim: int | None
    cache_bytes: int | None
    cpu_seconds: float | None
    basis: str


def _table(name: str) -> list[dict[str, str]]:
    text = resources.files(__name__).joinpath(name).read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines()))


def model_shape(model: str) -> tuple[str | None, int | None, int | None]:
    """(family, hidden states, width) of a model id, baseline name or local folder, from
    models.csv or the folder's config.json; Nones when unknown (nothing is downloaded)."""
    for r in _table("models.csv"):
        if r["model"] == model or r["model"].split("/")[-1] == model:
            return r["family"], int(r["hidden_states"]), int(r["dim"])
    cfg = Path(model).expanduser() / "config.json"
    if cfg.is_file():
        c = json.loads(cfg.read_text(encoding="utf-8"))
        if c.get("model_type") == "whisper":
            return "whisper", int(c["encoder_layers"]) + 1, int(c["d_model"])
        if "num_hidden_layers" in c and "hidden_size" in c:
            return "transformer", int(c["num_hidden_layers"]) + 1, int(c["hidden_size"])
    return None, None, None


def _throughput() -> dict[str, dict[str, str]]:
    return {r["family"]: r for r in _table("throughput.csv") if r["device"] == "cpu"}


def estimate_cpu_seconds(family: str | None, hidden_states: int | None, dim: int | None,
                         n_utts: int, audio_s: float, n_windows: int) -> tuple[float | None,
                                                                                 str]:
    """CPU seconds on the reference machine (2 cores) and what the figure is based on."""
    ref = _throughput().get(family or "")
    if ref is None or hidden_states is None or dim is None:
        return None, "no measured speed for this kind of upstream"
    value = float(ref["value"])
    if family in ("fbank", "egemaps"):
        return audio_s / value, f"{ref['reference']}: {value:g} x real time"
    scale = ((hidden_states - 1) * dim**2) / (int(ref["blocks"]) * int(ref["dim"]) ** 2)
    if family == "whisper":
        return n_windows * value * scale, (f"{ref['reference']}: {value:g} s per window, "
                                           f"x{scale:.3g} for blocks x width^2")
    return audio_s / value * scale, (f"{ref['reference']}: {value:g} x real time, "
                                     f"x{scale:.3g} for blocks x width^2")


def _size(n: float | None) -> str:
    if n is None:
        return "?"
    for unit, k in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= k:
            return f"{n / k:.3g} {unit}"
    return f"{n:.0f} B"


def _duration(s: float | None) -> str:
    if s is None:
        return "?"
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def corpus_size(source: str, task: str | None) -> tuple[int | None, float | None, str]:
    """(utterances, audio seconds, note) of a registered corpus's task."""
    from emoprobe.data.corpora import CORPORA

    spec = CORPORA.get(source)
    if spec is None:
        return None, None, "a manifest: sizes are known once it is prepared"
    name = task or spec.default_task
    expected = spec.expected.get(name)
    n = expected.total if expected is not None else None
    hours = CORPUS_HOURS.get(source)
    if hours is not None and name == spec.default_task:
        return n, hours * 3600, f"{hours} h (corpora.md)"
    if n is None:
        return None, None, "no published size"
    return n, n * MEAN_SECONDS_FALLBACK, (f"duration not documented: assumed "
                                          f"{MEAN_SECONDS_FALLBACK} s per utterance")


def plan_run(config: str | Path | Mapping[str, Any]) -> str:
    """The plan of a run config as text: corpora, upstreams with cache sizes and extraction
    time estimates (CPU and GPU), and the probe sweep. Loads no model and reads no audio."""
    from emoprobe.data.corpora import CORPORA
    from emoprobe.pipeline import load_config, parse_config

    cfg = load_config(config) if isinstance(config, (str, Path)) else parse_config(config)
    lines = [f"plan for {config if isinstance(config, (str, Path)) else 'config'} "
             "(dry run: nothing is loaded, extracted or probed)", f"output folder: {cfg.out}",
             ""]
    total_bytes, total_cpu = 0, 0.0
    for entry in cfg.corpora:
        task = entry.task if isinstance(entry.task, str) else None
        n, audio_s, note = corpus_size(entry.source, task)
        root = Path(entry.root)
        found = "found" if root.exists() else "NOT FOUND: set `root` to the corpus folder"
        spec = CORPORA.get(entry.source)
        protocol = spec.protocol if spec is not None else "from the manifest"
        lines += [f"corpus {entry.name} ({entry.source}, task "
                  f"{task or (spec.default_task if spec else 'default')}, {protocol}): "
                  f"{n if n is not None else '?'} utterances, {note}",
                  f"  root {entry.root}: {found}", ""]
        windows = None if n is None or audio_s is None else max(
            n, math.ceil(audio_s / WINDOW_S))
        header = ("  upstream", "states x dim", "cache", "CPU (2 cores)", "GPU",
                  "CPU estimate basis")
        rows = []
        for up in cfg.upstreams:
            model = str(up["model"])
            family, states, dim = model_shape(model)
            size = None if None in (n, states, dim) else n * states * dim * 4
            if n is None or audio_s is None:
                cpu, basis = None, "corpus size unknown"
            else:
                cpu, basis = estimate_cpu_seconds(family, states, dim, n, audio_s, windows or n)
            if family is None:
                basis = "unknown model (not in emoprobe/plan/models.csv); the run reads it"
            total_bytes += size or 0
            total_cpu += cpu or 0.0
            rows.append((f"  {model}", f"{states or '?'} x {dim or '?'}", _size(size),
                         _duration(cpu), "not measured", basis))
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        for r in [header, *rows]:
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        lines.append("")
    opts = cfg.options
    lines += [
        f"probe: {len(cfg.corpora) * len(cfg.upstreams)} dataset x upstream pair(s), "
        f"{len(opts.seeds)} seed(s), C grid {list(opts.c_grid)}, preset {opts.preset or 'none'}"
        f", {opts.n_boot} bootstrap resamples; every layer of every cache, per fold",
        f"total: caches {_size(total_bytes)}, extraction on CPU about {_duration(total_cpu)}",
        "CPU estimates scale speeds measured on the reference machine (docs/performance.md) by "
        "blocks x width^2; no GPU speed has been measured yet (benchmarks/bench_extract.py "
        "--device cuda measures one).",
    ]
    return "\n".join(lines) + "\n"


def check_known(model: str) -> None:
    """Raise when a model is unknown to the planner (used by tests of the recipes)."""
    if model_shape(model)[0] is None:
        raise ProbeError(f"{model}: unknown to emoprobe/plan/models.csv")
