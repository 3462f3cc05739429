"""The results directory of a sweep: tidy tables, per-utterance predictions, the protocol.

    results.csv          one row per (dataset, task, upstream, layer, head, fold, seed): every
                         metric with its bootstrap interval, per-class recall, the confusion
                         matrix and the chosen hyper-parameters
    summary.csv          one row per (dataset, task, upstream, layer, head): mean and std over folds
                         and seeds, mean validation UAR, and the figures pooled over all test
                         utterances (and seeds) with intervals
    selection.csv        validation UAR of every C of the grid, per layer, fold and seed
    predictions.csv.gz   one row per test utterance and probe: label, prediction, probabilities
    protocol.json        everything needed to reproduce the numbers
    config.toml          the `emoprobe run` config that made the directory (runs only)

`layer` is the cache layer a probe read (0 = embedding output), empty for the superb head
and fusions; `head` is "linear" (one layer), "superb" (softmax-weighted sum of every layer)
or "fusion" (one layer of each of several caches, listed in `fused_layers` as `7+0`), so the
layer column holds numbers only. `load_results(DIR)` returns the rows typed.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np

from emoprobe.errors import ProbeError, read_json_file, utf8_error
from emoprobe.system import atomic_open, atomic_write

RESULTS = "results.csv"
SUMMARY = "summary.csv"
SELECTION = "selection.csv"
PREDICTIONS = "predictions.csv.gz"
PROTOCOL = "protocol.json"

KEY_COLUMNS = ("dataset", "task", "upstream", "layer", "head")
LINEAR, SUPERB, FUSION = "linear", "superb", "fusion"
HEADS = (LINEAR, SUPERB, FUSION)
RESULT_COLUMNS = (
    *KEY_COLUMNS, "fold", "seed", "n_fit", "n_val", "n_test", "fit_speakers", "val_speakers",
    "C", "val_uar", "war", "war_lo", "war_hi", "uar", "uar_lo", "uar_hi", "macro_f1",
    "macro_f1_lo", "macro_f1_hi",
)
RESULT_TAIL = ("confusion", "classes", "n_iter", "converged", "layer_weights", "fused_layers")
# Regression tasks: the chosen ridge penalty, validation CCC and the regression metrics.
REGRESSION_RESULT_COLUMNS = (
    "alpha", "val_ccc", "ccc", "ccc_lo", "ccc_hi", "pearson", "pearson_lo", "pearson_hi",
    "rmse", "rmse_lo", "rmse_hi", "mae", "mae_lo", "mae_hi",
)
SUMMARY_COLUMNS = (
    *KEY_COLUMNS, "n_runs", "n_folds", "n_seeds", "war_mean", "war_std", "uar_mean", "uar_std",
    "macro_f1_mean", "macro_f1_std", "val_uar_mean", "val_uar_std", "C_mode",
    "pooled_n", "pooled_war", "pooled_war_lo", "pooled_war_hi", "pooled_uar", "pooled_uar_lo",
    "pooled_uar_hi", "pooled_macro_f1", "pooled_macro_f1_lo", "pooled_macro_f1_hi",
    "pooled_confusion", "classes", "fused_layers",
)
REGRESSION_SUMMARY_COLUMNS = (
    "ccc_mean", "ccc_std", "pearson_mean", "pearson_std", "rmse_mean", "rmse_std",
    "mae_mean", "mae_std", "val_ccc_mean", "val_ccc_std", "alpha_mode",
    "pooled_ccc", "pooled_ccc_lo", "pooled_ccc_hi", "pooled_pearson", "pooled_pearson_lo",
    "pooled_pearson_hi", "pooled_rmse", "pooled_rmse_lo", "pooled_rmse_hi", "pooled_mae",
    "pooled_mae_lo", "pooled_mae_hi",
)


def summary_columns(*, regression: bool = False) -> list[str]:
    """The summary.csv header; regression columns when a regression task was probed."""
    return [*SUMMARY_COLUMNS, *(REGRESSION_SUMMARY_COLUMNS if regression else ())]


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (float, np.floating)):
        return "" if math.isnan(v) else repr(float(v))
    if isinstance(v, (list, dict, tuple)):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """Write rows (missing keys = empty cells) with a fixed header, atomically."""
    def write(fh: IO) -> None:
        w = csv.writer(fh)
        w.writerow(columns)
        for r in rows:
            w.writerow([_fmt(r.get(c)) for c in columns])

    atomic_write(path, write)


def result_columns(classes: Iterable[str], *, regression: bool = False) -> list[str]:
    """The results.csv header for the union of the class names of every dataset (and the
    regression columns when a regression task was probed)."""
    return [*RESULT_COLUMNS, *(f"recall_{c}" for c in classes),
            *(REGRESSION_RESULT_COLUMNS if regression else ()), *RESULT_TAIL]


def _parse(v: str) -> Any:
    if v == "":
        return None
    if v in ("true", "false"):
        return v == "true"
    if v[0] in "[{":
        return json.loads(v)
    try:
        f = float(v)
    except ValueError:
        return v
    return int(f) if f.is_integer() and "." not in v and "e" not in v.lower() else f


REWRITE = "run `emoprobe probe` again with the same --out to rewrite it"


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a results table with numbers, booleans and JSON cells decoded (and the
    layer/head split applied to tables written before it existed); a damaged table
    (truncated, binary, cut rows) is a ProbeError naming the file and line."""
    path = Path(path)
    if not path.exists():
        raise ProbeError(f"{path}: no such results table")
    rows = []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        try:
            for row in reader:
                if None in row or None in row.values():
                    raise ProbeError(f"{path}:{reader.line_num}: damaged results table (the row "
                                     f"does not match the header); {REWRITE}")
                rows.append({k: _parse(v) for k, v in row.items()})
        except UnicodeDecodeError:
            raise ProbeError(f"{utf8_error(path, 'CSV')}; {REWRITE}") from None
        except (csv.Error, ValueError) as exc:
            raise ProbeError(f"{path}:{reader.line_num}: damaged results table ({exc}); "
                             f"{REWRITE}") from None
    return [split_head(r) if "layer" in r else r for r in rows]


def split_head(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row with `layer` (int, or None) and `head`: "linear" (one layer), "superb" (the
    weighted sum of all layers) or "fusion" (one layer of each of several caches, listed in
    `fused_layers` as `7+0`). Sweeps name the superb row's layer "superb" and a fusion's
    layer `7+0`; tables and files keep `layer` numeric."""
    out = dict(row)
    layer, head = out.get("layer"), out.get("head")
    if layer == SUPERB or head == SUPERB:
        out["layer"], out["head"] = None, SUPERB
    elif head == FUSION or (isinstance(layer, str) and FUSED.fullmatch(layer)):
        if layer is not None:
            out["fused_layers"] = str(layer)
        out["layer"], out["head"] = None, FUSION
    else:
        out["layer"] = None if layer is None else int(layer)
        out["head"] = LINEAR
    return out


FUSED = re.compile(r"-?\d+(\+-?\d+)+")


def layer_key(row: Mapping[str, Any]) -> int | str:
    """The probe a row describes within its upstream: the layer index, "superb", or the
    fused layers (`7+0`)."""
    if row.get("head") == SUPERB or row.get("layer") == SUPERB:
        return SUPERB
    if row.get("head") == FUSION:
        return str(row.get("fused_layers"))
    return row["layer"]


# ---------------------------------------------------------------------------- typed rows


@dataclass(frozen=True)
class ResultRow:
    """One row of results.csv (a probe on one fold and seed) or summary.csv (fold and seed
    None): its identity typed, every other column in `values` (numbers as numbers, lists and
    matrices decoded). `row["uar"]` reads a value."""

    dataset: str
    task: str
    upstream: str
    layer: int | None
    head: Literal["linear", "superb", "fusion"]
    fold: str | None = None
    seed: int | None = None
    values: Mapping[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        if key in _IDENTITY:
            return getattr(self, key)
        return self.values[key]

    def as_dict(self) -> dict[str, Any]:
        """Identity and values as one flat record (the CSV's columns)."""
        return {**{k: getattr(self, k) for k in _IDENTITY}, **self.values}


_IDENTITY = ("dataset", "task", "upstream", "layer", "head", "fold", "seed")


class ResultRows(list):
    """A list of ResultRow with a pandas view."""

    def to_pandas(self) -> Any:
        """A DataFrame with one column per CSV column (`layer` a nullable integer); needs
        pandas (`pip install 'emoprobe[pandas]'`)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError(
                "to_pandas() needs pandas: pip install 'emoprobe[pandas]'") from None
        frame = pd.DataFrame([r.as_dict() for r in self])
        if "layer" in frame:
            frame["layer"] = frame["layer"].astype("Int64")
        return frame


def load_results(directory: str | Path, table: str = "results") -> ResultRows:
    """Typed rows of a results directory: `table="results"` (one per probe, fold and seed)
    or `"summary"` (one per probe, folds and seeds pooled)."""
    files = {"results": RESULTS, "summary": SUMMARY}
    if table not in files:
        raise ProbeError(f"unknown results table {table!r}; known: {', '.join(files)}")
    read_protocol(directory)  # fails clearly when this is not a results directory
    out = ResultRows()
    for r in read_csv(Path(directory) / files[table]):
        ident = {k: r.pop(k, None) for k in _IDENTITY}
        ident["fold"] = None if ident["fold"] is None else str(ident["fold"])
        out.append(ResultRow(**ident, values=r))
    return out


class PredictionWriter:
    """Streams per-utterance predictions into predictions.csv.gz, probe by probe."""

    def __init__(self, path: Path, classes: Sequence[str]) -> None:
        self.path = path
        self.classes = list(classes)
        self._target = atomic_open(path, "wb")  # finished (renamed) or removed by close()
        raw = self._target.__enter__()
        self.fh = io.TextIOWrapper(
            gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1), encoding="utf-8", newline="")
        cols = [*KEY_COLUMNS, "fold", "seed", "id", "label", "pred"]
        self.fh.write(",".join(cols + [f"p_{c}" for c in self.classes]) + "\n")

    def write(
        self,
        key: Sequence[Any],
        ids: Sequence[str],
        labels: Sequence[str],
        preds: Sequence[str],
        probs: np.ndarray,
        classes: Sequence[str],
    ) -> None:
        """One probe's predictions; `probs` (n, K) in the order of `classes`. `ids` may be
        given pre-escaped (`escape_ids`) when many probes share them."""
        q = np.clip(np.rint(np.asarray(probs, dtype=np.float64) * 10000), 0, 10000)
        cells = _PROB_TEXT[q.astype(np.int64)]  # (n, K) strings, formatted once for all
        cols = np.full((len(ids), len(self.classes)), "", dtype=object)
        for k, c in enumerate(classes):
            cols[:, self.classes.index(c)] = cells[:, k]
        prefix = ",".join(_csv_cell(_fmt(v)) for v in key)
        ids = ids if isinstance(ids, _Escaped) else escape_ids(ids)
        sep = "," if self.classes else ""  # no probability columns when nothing has classes
        lines = [
            f"{prefix},{i},{lab},{p}{sep}{','.join(row)}\n"
            for i, lab, p, row in zip(ids, labels, preds, cols.tolist())
        ]
        self.fh.write("".join(lines))

    def close(self, ok: bool = True) -> None:
        """Finish the file (renamed into place), or with ok=False drop it."""
        self.fh.close()
        if ok:
            self._target.__exit__(None, None, None)
        else:
            exc = RuntimeError("predictions abandoned")
            with contextlib.suppress(RuntimeError):
                self._target.__exit__(type(exc), exc, None)


class _Escaped(list):
    """Utterance ids already escaped for CSV."""


def escape_ids(ids: Sequence[str]) -> _Escaped:
    return _Escaped(_csv_cell(str(i)) for i in ids)


# "0.0000" ... "1.0000": probabilities are written with 4 decimals through this table.
_PROB_TEXT = np.asarray([f"{k / 10000:.4f}" for k in range(10001)], dtype=object)


def _csv_cell(s: str) -> str:
    if any(ch in s for ch in ',"\n'):
        return '"' + s.replace('"', '""') + '"'
    return s


def read_predictions(path: str | Path) -> list[dict[str, Any]]:
    """predictions.csv.gz as rows (small results only; for analysis scripts and tests)."""
    with gzip.open(path, "rt", encoding="utf-8", newline="") as fh:
        return [{k: _parse(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def read_protocol(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / PROTOCOL
    if not path.exists():
        raise ProbeError(f"{directory}: no {PROTOCOL}; is this a probe results directory?")
    protocol = read_json_file(path, lambda msg: ProbeError(f"{msg}; the file is damaged: "
                                                          f"{REWRITE}"), "a probe's protocol")
    if not isinstance(protocol, dict):
        raise ProbeError(f"{path}: damaged (expected a JSON object); {REWRITE}")
    return protocol
