"""Ridge regression probes for dimensional targets, in closed form for every penalty at once.

A probe is ridge regression on the pooled vectors, standardised on the rows it is fitted on
(zero-variance dimensions get scale 1), with the target standardised on the same rows. The
penalty follows scikit-learn's `Ridge(alpha)`: minimise `||y - X w - b||^2 + alpha ||w||^2`
(sum of squares, intercept not penalised) on the standardised features; predictions are
mapped back to the target's units, so they equal those of
`make_pipeline(StandardScaler(), Ridge(alpha))` fitted on the same rows (standardising the
target scales the solution linearly and does not change them).

One eigendecomposition per layer and fitting part gives the solution for the whole penalty
grid: with `Z^T Z = V diag(s) V^T` (or the n x n Gram matrix when there are fewer rows than
dimensions), `w(alpha) = V diag(1 / (s + alpha)) V^T Z^T y` for every alpha at once. The Gram
matrix of a fold's training part is computed once per layer; each validation carving's
fitting rows get theirs by subtracting the held-out rows' part. The penalty is chosen per
layer and seed by CCC on the same speaker-disjoint validation part the categorical probes use;
ties go to the larger penalty.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from emoprobe.data.folds import Fold
from emoprobe.data.targets import target_strata
from emoprobe.errors import ProbeError
from emoprobe.probe.config import ProbeOptions
from emoprobe.probe.engine import FoldFit, _blocks, _source
from emoprobe.probe.linear import single_thread
from emoprobe.probe.regression_metrics import ccc_batch
from emoprobe.probe.selection import carve_validation, choose_c
from emoprobe.system import available_cpus

Tensor = torch.Tensor

def standardise(X: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and scale per dimension of rows X (..., n, D); zero-variance dimensions get 1."""
    var, mean = torch.var_mean(X, dim=-2, correction=0, keepdim=True)
    std = torch.sqrt(var)
    std = torch.where(std > 1e-12 * (1.0 + mean.abs()), std, torch.ones_like(std))
    return mean, std


class RidgePool:
    """The rows a layer's probes may be fitted on (a fold's training part), centred once, with
    their Gram matrix: the fitting rows of each validation carving get theirs by subtracting
    the held-out rows' Gram, so each carving costs a product over its held-out rows only."""

    def __init__(self, X: Tensor) -> None:
        X = X.to(torch.float64)
        self.center = X.mean(0)
        self.X = X - self.center
        self._gram: Tensor | None = None

    @property
    def gram(self) -> Tensor:
        if self._gram is None:
            self._gram = self.X.T @ self.X
        return self._gram

    def solve(self, fit: np.ndarray | None, y: Tensor, alphas: Tensor) -> tuple[Tensor, Tensor]:
        """Ridge on rows `fit` (positions in the pool; None: all) with targets `y` (for those
        rows) for every alpha: weights W (D, G) and intercepts b (G,) such that `A @ W + b`
        predicts rows A centred like the pool (`rows - self.center`)."""
        n_pool, d = self.X.shape
        Xf = self.X if fit is None else self.X[torch.from_numpy(np.asarray(fit, np.int64))]
        n = Xf.shape[0]
        mean = Xf.mean(0)
        var = ((Xf - mean) ** 2).mean(0)
        sd = torch.sqrt(var)
        const = sd <= 1e-12 * (1.0 + (self.center + mean).abs())  # as in standardise()
        sd = torch.where(const, torch.ones_like(sd), sd)
        y = y.to(torch.float64)
        y_mean = y.mean()
        y_sd = y.std(correction=0)
        y_sd = y_sd if float(y_sd) > 0 else torch.ones_like(y_sd)
        t = (y - y_mean) / y_sd
        keep = (~const).to(torch.float64)
        a = alphas.to(torch.float64)
        if n >= d:  # primal: D x D, from the pool's Gram matrix when that is cheaper
            if fit is None:
                S = self.gram.clone()
            elif 2 * n > n_pool:
                held = np.setdiff1d(np.arange(n_pool), np.asarray(fit, np.int64))
                Xh = self.X[torch.from_numpy(held)]
                S = self.gram - Xh.T @ Xh
            else:
                S = Xf.T @ Xf
            C = S - n * torch.outer(mean, mean)
            C.diagonal().copy_(n * var)  # the exact two-pass variances
            C *= torch.outer(keep / sd, keep / sd)  # Z^T Z, constant dimensions zero
            zt = (Xf.T @ t) * keep / sd  # Z^T t (t sums to zero)
            s, V = torch.linalg.eigh(C)
            coef = (V.T @ zt)[:, None] / (s.clamp(min=0.0)[:, None] + a[None, :])
            W = V @ coef
        else:  # dual: n x n
            Z = (Xf - mean) * (keep / sd)
            s, U = torch.linalg.eigh(Z @ Z.T)
            coef = (U.T @ t)[:, None] / (s.clamp(min=0.0)[:, None] + a[None, :])
            W = Z.T @ (U @ coef)
        W = W * (y_sd / sd)[:, None]
        return W, y_mean - mean @ W


def ridge_path(
    X_fit: Tensor, y_fit: Tensor, alphas: Tensor, *X_apply: Tensor
) -> list[Tensor]:
    """Predictions of ridge fitted on (X_fit (n, D), y_fit (n,)) for every alpha (G,), on each
    of X_apply (m, D): a list of (m, G) float64 tensors in the target's units."""
    pool = RidgePool(X_fit)
    W, b = pool.solve(None, y_fit, alphas)
    return [(A.to(torch.float64) - pool.center) @ W + b for A in X_apply]


def ridge_coefficients(X: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """Weights and intercept, in the units of the raw features, of the ridge probe fitted on
    (X (n, D), y (n,)) with penalty `alpha`: `X @ w + b` gives its predictions."""
    pool = RidgePool(torch.from_numpy(np.asarray(X, dtype=np.float64)))
    W, b = pool.solve(None, torch.from_numpy(np.asarray(y, dtype=np.float64)),
                      torch.tensor([float(alpha)], dtype=torch.float64))
    w = W[:, 0]
    return w.numpy(), float(b[0] - pool.center @ w)


def check_regression_fold(fold: Fold, where: str) -> None:
    """A fold needs fitting, (given) validation and test rows."""
    for part, rows in (("training", fold.train), ("test", fold.test),
                       ("validation", fold.validation)):
        if rows is not None and len(rows) == 0:
            raise ProbeError(f"{where}: fold {fold.name!r} has an empty {part} part")


@dataclass
class _RidgePlan:
    fold: Fold
    pool: np.ndarray  # training-part rows (fitting + validation), sorted
    test: np.ndarray
    carvings: list[tuple[np.ndarray, np.ndarray]]  # per seed: (fit, val) positions in pool
    fits: list[tuple[np.ndarray, np.ndarray]]  # per seed: (fit, val) row indices


def _plan(y: np.ndarray, fold: Fold, options: ProbeOptions, groups: np.ndarray | None,
          where: str) -> _RidgePlan:
    check_regression_fold(fold, where)
    if fold.validation is not None:
        fits = [(np.sort(fold.train), np.sort(fold.validation))] * len(options.seeds)
    else:
        if groups is None:
            raise ProbeError(
                f"{where}: a speaker-disjoint validation split needs a speaker (or session) "
                "for every utterance; the records carry neither"
            )
        # quantile edges from the training part only: test targets never shape the carving
        strata = np.zeros(len(y), dtype=np.int64)
        strata[fold.train] = target_strata(np.asarray(y)[fold.train])
        fits = [carve_validation(fold.train, strata, groups, seed=seed,
                                 fraction=options.val_fraction, where=where)
                for seed in options.seeds]
    parts = [fold.train] + ([fold.validation] if fold.validation is not None else [])
    pool = np.unique(np.concatenate(parts)).astype(np.int64)
    carvings = [(np.searchsorted(pool, f), np.searchsorted(pool, v)) for f, v in fits]
    test = np.sort(np.asarray(fold.test, dtype=np.int64))
    return _RidgePlan(fold, pool, test, carvings, fits)


def _fit_layers(source: object, rows: slice, plan: _RidgePlan, y: np.ndarray,
                alphas: np.ndarray, refit: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validation CCC per penalty (r, S, G), chosen index (r, S) and test predictions
    (r, S, n_test) for the layers `rows`."""
    Xp_all, Xt_all = source.block(rows, plan.pool, plan.test)  # type: ignore[attr-defined]
    y_pool = torch.from_numpy(np.asarray(y[plan.pool], dtype=np.float64))
    a = torch.from_numpy(alphas)
    n_r, n_s, n_g = Xp_all.shape[0], len(plan.carvings), len(alphas)
    val = np.full((n_r, n_s, n_g), np.nan)
    chosen = np.zeros((n_r, n_s), dtype=np.int64)
    pred = np.zeros((n_r, n_s, len(plan.test)))
    # Seeds sharing one carving (an official validation split) share its solution.
    distinct: dict[bytes, int] = {}
    y_np = np.asarray(y[plan.pool], dtype=np.float64)
    for k in range(n_r):
        pool = RidgePool(torch.from_numpy(Xp_all[k]))
        Xt = torch.from_numpy(Xt_all[k]).to(torch.float64) - pool.center
        solved: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for s, (fit, vpos) in enumerate(plan.carvings):
            key = distinct.setdefault(fit.tobytes() + b"|" + vpos.tobytes(), len(distinct))
            if key not in solved:
                W, b = pool.solve(fit, y_pool[torch.from_numpy(fit)], a)
                pv = pool.X[torch.from_numpy(vpos)] @ W + b
                pt = Xt @ W + b if refit == "train" else None
                solved[key] = (pv.T.numpy(), None if pt is None else pt.numpy())
            pv, pt = solved[key]
            val[k, s] = ccc_batch(y_np[vpos], pv)
            # Ties go to the larger penalty: choose_c prefers the smallest of its grid.
            chosen[k, s] = choose_c(val[k, s], 1.0 / alphas)
            if pt is not None:
                pred[k, s] = pt[:, chosen[k, s]]
        if refit == "train+val":
            W, b = pool.solve(None, y_pool, a)
            pred[k] = (Xt @ W + b).numpy()[:, chosen[k]].T
    return val, chosen, pred


def probe_folds_ridge(
    features: object,
    y: np.ndarray,
    folds: Sequence[Fold],
    options: ProbeOptions,
    *,
    groups: np.ndarray | None = None,
    layer_ids: Sequence[int] | None = None,
    where: str = "",
    threads: int | None = None,
) -> Iterator[FoldFit]:
    """Ridge probes of every layer of `features` (L, N, D) on each fold, against the numeric
    targets `y` (N,); yields one FoldFit per fold, in order (see engine.probe_folds for the
    feature sources accepted). `chosen_c` holds the chosen penalty, `val_grid` and `val_uar`
    the validation CCC, `test_pred` the predicted values."""
    shape = tuple(features.shape)  # type: ignore[attr-defined]
    if len(shape) != 3:
        raise ProbeError(f"{where}: features must be (layers, utterances, dim), got {shape}")
    n_layers, n_rows, dim = shape
    y = np.asarray(y, dtype=np.float64)
    if len(y) != n_rows:
        raise ProbeError(f"{where}: {len(y)} targets for {n_rows} feature rows")
    alphas = np.asarray(options.alpha_grid, dtype=np.float64)
    plans = [_plan(y, fold, options, groups, where) for fold in folds]
    threads = max(1, threads or available_cpus())
    source = _source(features)
    with single_thread(), ThreadPoolExecutor(max_workers=threads) as ex:
        pending = []
        for plan in plans:
            blocks = _blocks(n_layers, len(plan.pool) * dim * 8, threads, len(plans),
                             options.max_chunk_mb * 2**20)
            pending.append((plan, [
                ex.submit(_fit_layers, source, b, plan, y, alphas, options.refit)
                for b in blocks]))
        try:
            for plan, futures in pending:
                outs = [f.result() for f in futures]
                val = np.concatenate([o[0] for o in outs])
                chosen = np.concatenate([o[1] for o in outs])
                pred = np.concatenate([o[2] for o in outs])
                yield FoldFit(
                    name=plan.fold.name,
                    layers=list(layer_ids if layer_ids is not None else range(n_layers)),
                    seeds=list(options.seeds),
                    classes=[],
                    c_grid=[float(a) for a in alphas],
                    chosen_c=alphas[chosen],
                    val_grid=val,
                    val_uar=np.take_along_axis(val, chosen[..., None], 2)[..., 0],
                    test_index=plan.test,
                    test_pred=pred,
                    test_prob=np.zeros((*pred.shape, 0), dtype=np.float32),
                    n_iter=np.zeros(chosen.shape, dtype=np.int64),
                    converged=np.ones(chosen.shape, dtype=bool),
                    n_fit=[len(f) for f, _ in plan.fits],
                    n_val=[len(v) for _, v in plan.fits],
                    fit_speakers=[len(np.unique(groups[f])) if groups is not None else 0
                                  for f, _ in plan.fits],
                    val_speakers=[len(np.unique(groups[v])) if groups is not None else 0
                                  for _, v in plan.fits],
                )
        finally:
            for _, futures in pending:
                for f in futures:
                    f.cancel()
