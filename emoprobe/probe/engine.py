"""One fold of a sweep: every layer and seed probed as one batched problem.

For a fold, each seed carves its own speaker-disjoint validation part from the training part
(or all seeds share the corpus's own validation split). The probes of a block of layers and
all distinct carvings are solved together along the C grid, from strongest to weakest
regularisation, each C warm-started from the previous solution. C is chosen per layer and
seed on validation UAR, the probe is refitted (by default on fitting + validation part) and
the test part is predicted. Features arrive as one (L, N, D) array; everything returned is
numpy.

Threads: blocks of layers run concurrently in a thread pool, each with single-threaded torch
math. Layers are independent problems, so results do not depend on the blocking or the
number of threads (bitwise), and no OpenMP thread ever waits at a barrier for a descheduled
peer, which on a shared machine costs far more than it saves on the many small operations of
an L-BFGS iteration.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from emoprobe.data.folds import Fold
from emoprobe.errors import ProbeError
from emoprobe.probe.config import ProbeOptions
from emoprobe.probe.linear import (
    GramPreconditioner,
    SoftmaxObjective,
    lbfgs,
    single_thread,
    weighted_moments,
)
from emoprobe.probe.metrics import uar_batch
from emoprobe.probe.selection import CarvingError, carve_validation, choose_c
from emoprobe.probe.superb import WeightedSumObjective
from emoprobe.system import available_cpus

log = logging.getLogger(__name__)
Tensor = torch.Tensor
Features = Any  # an (L, N, D) array, or an object with `shape` and `block` (see probe_folds)

SUPERB_LAYER = "superb"


@dataclass
class FoldFit:
    """Everything one fold produced. Row r of the (R, S, ...) arrays is `layers[r]` (an int
    layer index, or "superb"); S runs over `seeds`."""

    name: str
    layers: list[int | str]
    seeds: list[int]
    classes: list[str]
    c_grid: list[float]
    chosen_c: np.ndarray  # (R, S)
    val_grid: np.ndarray  # (R, S, G) validation UAR per C (grid order of c_grid)
    val_uar: np.ndarray  # (R, S) at the chosen C
    test_index: np.ndarray  # (n_test,) indices into the probed rows
    test_pred: np.ndarray  # (R, S, n_test)
    test_prob: np.ndarray  # (R, S, n_test, K) float32
    n_iter: np.ndarray  # (R, S) solver iterations of the final fit
    converged: np.ndarray  # (R, S)
    n_fit: list[int]
    n_val: list[int]
    fit_speakers: list[int]
    val_speakers: list[int]
    layer_weights: np.ndarray | None = None  # (S, L) for the superb row
    notes: list[str] = field(default_factory=list)


def _balanced(y: np.ndarray, mask: np.ndarray, n_classes: int) -> np.ndarray:
    """Row weights n / (K n_c) over the rows in mask (scikit-learn's "balanced")."""
    counts = np.bincount(y[mask], minlength=n_classes).astype(np.float64)
    present = counts > 0
    w = np.zeros(n_classes)
    w[present] = mask.sum() / (present.sum() * counts[present])
    return w[y] * mask


def check_fold(fold: Fold, y: np.ndarray, classes: Sequence[str], where: str) -> None:
    """A fold must have test rows and every class in its training part."""
    if len(fold.train) == 0:
        raise ProbeError(f"{where}: fold {fold.name!r} has an empty training part")
    if len(fold.test) == 0:
        raise ProbeError(f"{where}: fold {fold.name!r} has an empty test part")
    if fold.validation is not None and len(fold.validation) == 0:
        raise ProbeError(f"{where}: fold {fold.name!r} has an empty validation part")
    counts = np.bincount(y[fold.train], minlength=len(classes))
    missing = [c for c, n in zip(classes, counts) if n == 0]
    if missing:
        raise ProbeError(
            f"{where}: class(es) {missing} absent from the training part of fold "
            f"{fold.name!r}; every class of the task ({list(classes)}) must be trained on"
        )


def fixed_c(grid: Sequence[float]) -> int:
    """Index of the C used when no validation part can be carved: the grid value closest to
    1 on a log scale (scikit-learn's default C)."""
    return int(np.argmin(np.abs(np.log(np.asarray(grid, dtype=float)))))


def carvings_for(
    fold: Fold,
    y: np.ndarray,
    groups: np.ndarray | None,
    options: ProbeOptions,
    classes: Sequence[str],
    where: str,
) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[str]]:
    """(fit, validation) index arrays per seed, and notes on what the data did not allow.

    When no validation part can be carved (one training speaker, classes too small) or the
    carving leaves a class without fitting utterances, that seed fits on the whole training
    part with a fixed C (an empty validation part; see `fixed_c`), and a note says so."""
    if fold.validation is not None:
        return [(np.sort(fold.train), np.sort(fold.validation))] * len(options.seeds), []
    if groups is None:
        raise ProbeError(
            f"{where}: a speaker-disjoint validation split needs a speaker (or session) for "
            "every utterance; the records carry neither"
        )
    out, notes = [], []
    c = options.c_grid[fixed_c(options.c_grid)]
    whole = (np.sort(fold.train), np.zeros(0, dtype=np.int64))
    for seed in options.seeds:
        try:
            fit, val = carve_validation(
                fold.train, y, groups, seed=seed, fraction=options.val_fraction, where=where
            )
        except CarvingError as exc:
            notes.append(f"fold {fold.name!r}, seed {seed}: {str(exc).split(': ', 1)[-1]}; "
                         f"fitted on the whole training part with C fixed at {c:g}")
            out.append(whole)
            continue
        counts = np.bincount(y[fit], minlength=len(classes))
        missing = [k for k, n in zip(classes, counts) if n == 0]
        if missing:
            notes.append(f"fold {fold.name!r}, seed {seed}: holding out validation speakers "
                         f"would leave class(es) {missing} without fitting utterances; fitted "
                         f"on the whole training part with C fixed at {c:g}")
            out.append(whole)
            continue
        out.append((fit, val))
    return out, notes


@dataclass
class _Setup:
    """What every block of a fold shares: rows, carvings, weights, grid."""

    pool: np.ndarray  # training-part rows (fitting + validation), sorted
    test: np.ndarray
    n_classes: int
    y_pool: np.ndarray
    fit_mask: np.ndarray  # (U, n_pool)
    val_pos: list[np.ndarray]  # positions in pool of each carving's validation rows
    fit_w: Tensor  # (U, n_pool) sample weights of the fits along the grid
    ref_w: Tensor  # (U, n_pool) sample weights of the refit
    grid: np.ndarray
    path: np.ndarray  # grid indices, strongest regularisation first
    options: ProbeOptions

    @property
    def n_u(self) -> int:
        return self.fit_mask.shape[0]

    def choose(self, val_grid: np.ndarray) -> np.ndarray:
        """Grid index per (row, carving): best validation UAR, or the fixed C for a carving
        without a validation part."""
        chosen = choose_c(val_grid, self.grid)
        for u, vp in enumerate(self.val_pos):
            if len(vp) == 0:
                chosen[:, u] = fixed_c(self.grid)
        return chosen


@dataclass
class _BlockOut:
    """Outputs of a block of rows (layers, or the superb head) for every distinct carving."""

    rows: slice
    val_grid: np.ndarray  # (r, U, G)
    chosen: np.ndarray  # (r, U) grid index
    pred: np.ndarray  # (r, U, n_test)
    prob: np.ndarray  # (r, U, n_test, K)
    n_iter: np.ndarray
    converged: np.ndarray
    layer_weights: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)


# A block smaller than this is not worth its own solver loop: per-iteration overheads would
# dominate its matrix products.
MIN_BLOCK_BYTES = 32 * 2**20


def _blocks(n_layers: int, layer_bytes: int, threads: int, n_folds: int,
            budget: float) -> list[slice]:
    """Contiguous layer blocks of one fold: enough tasks over all folds to keep `threads`
    workers balanced (about eight per worker), blocks no smaller than MIN_BLOCK_BYTES, and
    `threads` blocks in flight within the memory budget."""
    per_mem = max(1, int(budget // max(threads * layer_bytes, 1)))
    want = -(-8 * threads // max(n_folds, 1)) if threads > 1 else 1  # blocks per fold
    per_bal = max(1, -(-n_layers // want))
    per_min = max(1, -(-MIN_BLOCK_BYTES // max(layer_bytes, 1)))
    per = max(1, min(per_mem, max(per_bal, per_min)))
    return [slice(i, min(i + per, n_layers)) for i in range(0, n_layers, per)]


class _ArraySource:
    """Blocks of an in-memory (L, N, D) array."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = np.ascontiguousarray(array, dtype=np.float32)
        self.shape = self.array.shape

    def block(self, layers: slice, *row_sets: np.ndarray) -> list[np.ndarray]:
        block = torch.from_numpy(self.array[layers])
        return [block.index_select(1, torch.from_numpy(np.asarray(r, np.int64))).numpy()
                for r in row_sets]


def _source(features: Features) -> Any:
    return features if hasattr(features, "block") else _ArraySource(np.asarray(features))


def _gather(source: Any, rows: slice, setup: _Setup) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Copy a block's training-part and test rows, standardised with the training part's
    statistics (so float32 sums stay accurate); returns Xp, Xt, mean, std of that transform."""
    Xp, Xt = (torch.from_numpy(a) for a in source.block(rows, setup.pool, setup.test))
    var, mean = torch.var_mean(Xp, dim=1, correction=0, keepdim=True)
    std = torch.sqrt(var)
    std = torch.where(std > 1e-12 * (1.0 + mean.abs()), std, torch.ones_like(std))
    Xp.sub_(mean).div_(std)
    Xt.sub_(mean).div_(std)
    return Xp, Xt, mean.to(torch.float64), std.to(torch.float64)


def _fit_block(source: Any, rows: slice, setup: _Setup, where: str) -> _BlockOut:
    """Grid path, choice of C, refit and test predictions for the layers `rows`."""
    opts, solver = setup.options, setup.options.solver
    Xp, Xt, _, _ = _gather(source, rows, setup)
    lc, _, dim = Xp.shape
    n_u, n_classes, grid = setup.n_u, setup.n_classes, setup.grid
    y_pool = torch.from_numpy(setup.y_pool)
    mean_u, scale_u = weighted_moments(Xp, torch.from_numpy(setup.fit_mask.astype(np.float64)))
    sw_fit = setup.fit_w.sum(1)
    precond = GramPreconditioner(Xp, n_u, n_classes) if solver.precondition else None
    theta = torch.zeros((lc * n_u, n_classes * (dim + 1)), dtype=torch.float64)
    thetas: list[Tensor] = [theta] * len(grid)
    val_grid = np.full((lc, n_u, len(grid)), np.nan)
    for g in setup.path:
        lam = (1.0 / (grid[g] * sw_fit))[None, :].expand(lc, n_u).contiguous()
        obj = SoftmaxObjective(Xp, y_pool, n_classes, setup.fit_w, mean_u, scale_u, lam)
        if precond is not None:
            precond.set_lam(lam.mean(1))
        theta, info = lbfgs(obj, theta, options=solver, precond=precond)
        thetas[g] = theta
        pred = obj.logits(theta.view(obj.shape)).argmax(2).numpy()  # (lc, U, n_pool)
        for u in range(n_u):
            vp = setup.val_pos[u]
            if len(vp):  # no validation part: C is fixed (see carvings_for)
                val_grid[:, u, g] = uar_batch(setup.y_pool[vp], pred[:, u, vp], n_classes)
        log.debug("%s layers %s C=%g: iterations %s", where, rows, grid[g], info.n_iter.tolist())
    chosen = setup.choose(val_grid)  # (lc, U)
    stacked = torch.stack(thetas).view(len(grid), lc, n_u, n_classes, dim + 1)
    start = stacked[torch.from_numpy(chosen), torch.arange(lc)[:, None], torch.arange(n_u)]
    notes = []
    if opts.refit == "train+val":
        # Re-express each chosen probe on the training-part standardisation, then refit on
        # fitting + validation rows with its C.
        obj_fit = SoftmaxObjective(Xp, y_pool, n_classes, setup.fit_w, mean_u, scale_u,
                                   torch.ones(lc, n_u, dtype=torch.float64))
        w_eff, b_eff = obj_fit.effective(start)
        start = torch.cat([w_eff, b_eff[..., None]], -1)
        lam = torch.from_numpy(1.0 / grid[chosen]) / setup.ref_w.sum(1)[None, :]
        obj = SoftmaxObjective(Xp, y_pool, n_classes, setup.ref_w, torch.zeros_like(mean_u),
                               torch.ones_like(scale_u), lam)
        if precond is not None:
            precond.set_lam(torch.exp(torch.log(lam).mean(1)))
        final, info = lbfgs(obj, start.reshape(lc * n_u, -1), options=solver, precond=precond)
        n_iter = info.n_iter.reshape(lc, n_u)
        converged = info.converged.reshape(lc, n_u)
    else:
        obj = SoftmaxObjective(Xp, y_pool, n_classes, setup.fit_w, mean_u, scale_u,
                               torch.ones(lc, n_u, dtype=torch.float64))
        final = start.reshape(lc * n_u, -1)
        n_iter = np.full((lc, n_u), -1)  # no refit: the grid solution is used as it is
        converged = np.ones((lc, n_u), dtype=bool)
    if not converged.all():
        notes.append(f"{int((~converged).sum())} probe(s) stopped at the iteration limit "
                     f"({solver.max_iter}) before the gradient tolerance {solver.tol}")
    z = obj.logits(final.view(obj.shape), Xt)  # (lc, U, K, n_test)
    prob = torch.softmax(z, dim=2).permute(0, 1, 3, 2).numpy()
    return _BlockOut(rows, val_grid, chosen, z.argmax(2).numpy(), prob, n_iter, converged,
                     notes=notes)


def _fit_superb(source: Any, setup: _Setup, row: int) -> _BlockOut:
    """The weighted-sum head over every layer, along the grid, chosen, refitted, predicted."""
    opts, solver = setup.options, setup.options.solver
    Xp, Xt, c_mean, c_std = _gather(source, slice(0, source.shape[0]), setup)
    n_u, n_classes, grid = setup.n_u, setup.n_classes, setup.grid
    y_pool = torch.from_numpy(setup.y_pool)
    sw_fit = setup.fit_w.sum(1)
    if opts.superb_norm == "none":
        # Undo the training-part standardisation: raw x = Xp * std + mean.
        mean_s = (-c_mean / c_std).expand(-1, n_u, -1).contiguous()
        scale_s = (1.0 / c_std).expand(-1, n_u, -1).contiguous()
        mean_ref, scale_ref = mean_s, scale_s
    else:
        mean_s, scale_s = weighted_moments(
            Xp, torch.from_numpy(setup.fit_mask.astype(np.float64)))
        mean_ref, scale_ref = torch.zeros_like(mean_s), torch.ones_like(scale_s)
    theta = None
    thetas: list[Tensor] = []
    val_grid = np.full((1, n_u, len(grid)), np.nan)
    for g in setup.path:
        lam = 1.0 / (grid[g] * sw_fit)
        obj = WeightedSumObjective(Xp, y_pool, n_classes, setup.fit_w, mean_s, scale_s, lam)
        theta = obj.init() if theta is None else theta
        theta, _ = lbfgs(obj, theta, options=solver)
        thetas.append(theta)
        pred = obj.logits(theta).argmax(1).numpy()  # (U, n_pool)
        for u in range(n_u):
            vp = setup.val_pos[u]
            if len(vp):
                val_grid[0, u, g] = uar_batch(setup.y_pool[vp], pred[u, vp], n_classes)
    by_grid = dict(zip(setup.path.tolist(), thetas))
    chosen = setup.choose(val_grid)  # (1, U)
    start = torch.stack([by_grid[int(chosen[0, u])][u] for u in range(n_u)])
    if opts.refit == "train+val":
        if opts.superb_norm != "none":
            # Keep the layer weights and W, move each carving's standardisation offsets into
            # the intercept; per-layer rescaling cannot be folded exactly, the refit adjusts.
            tmp = WeightedSumObjective(Xp, y_pool, n_classes, setup.fit_w, mean_s, scale_s,
                                       sw_fit)
            a, W, b = tmp.unpack(start)
            alpha = torch.softmax(a, 1)
            w_eff = W[None] / scale_s[:, :, None, :]
            b = b - (alpha.T[:, :, None] * (w_eff * mean_s[:, :, None, :]).sum(-1)).sum(0)
            start = torch.cat([a, W.reshape(n_u, -1), b], 1)
        lam = torch.from_numpy(1.0 / grid[chosen[0]]) / setup.ref_w.sum(1)
        obj = WeightedSumObjective(Xp, y_pool, n_classes, setup.ref_w, mean_ref, scale_ref, lam)
        final, info = lbfgs(obj, start, options=solver)
        n_iter, converged = info.n_iter[None], info.converged[None]
    else:
        obj = WeightedSumObjective(Xp, y_pool, n_classes, setup.fit_w, mean_s, scale_s, sw_fit)
        final = start
        n_iter, converged = np.full((1, n_u), -1), np.ones((1, n_u), dtype=bool)
    z = obj.logits(final, Xt)  # (U, K, n_test)
    prob = torch.softmax(z, dim=1).permute(0, 2, 1).numpy()[None]
    notes = []
    if not converged.all():
        notes.append("the superb head stopped at the iteration limit on some carvings")
    return _BlockOut(slice(row, row + 1), val_grid, chosen, z.argmax(1).numpy()[None], prob,
                     n_iter, converged, layer_weights=obj.layer_weights(final).numpy(),
                     notes=notes)


@dataclass
class _Plan:
    """A fold ready to run: its shared setup and how carvings map back to seeds."""

    fold: Fold
    setup: _Setup
    seed_to_u: list[int]
    uniq: list[tuple[np.ndarray, np.ndarray]]
    notes: list[str] = field(default_factory=list)  # what the data did not allow


def _plan(y: np.ndarray, fold: Fold, classes: Sequence[str], options: ProbeOptions,
          groups: np.ndarray | None, where: str) -> _Plan:
    """Check a fold and work out its carvings, rows and weights (cheap, no features)."""
    n_classes = len(classes)
    check_fold(fold, y, classes, where)
    carvings, notes = carvings_for(fold, y, groups, options, classes, where)
    # Distinct carvings are solved once (all seeds share an official validation split).
    keys: dict[bytes, int] = {}
    seed_to_u = []
    uniq: list[tuple[np.ndarray, np.ndarray]] = []
    for fit, val in carvings:
        k = fit.tobytes() + b"|" + val.tobytes()
        if k not in keys:
            keys[k] = len(uniq)
            uniq.append((fit, val))
        seed_to_u.append(keys[k])
    parts = [fold.train] + ([fold.validation] if fold.validation is not None else [])
    pool = np.unique(np.concatenate(parts)).astype(np.int64)
    test = np.sort(np.asarray(fold.test, dtype=np.int64))
    n_u = len(uniq)
    fit_mask = np.zeros((n_u, len(pool)), dtype=bool)
    val_pos = []
    for u, (fit, val) in enumerate(uniq):
        fit_mask[u, np.searchsorted(pool, fit)] = True
        val_pos.append(np.searchsorted(pool, val))
    y_pool = y[pool]
    if options.balanced:
        fit_w = np.stack([_balanced(y_pool, fit_mask[u], n_classes) for u in range(n_u)])
        ref_w = _balanced(y_pool, np.ones(len(pool), bool), n_classes)
    else:
        fit_w = fit_mask.astype(np.float64)
        ref_w = np.ones(len(pool))
    grid = np.asarray(options.c_grid, dtype=np.float64)
    setup = _Setup(
        pool=pool, test=test, n_classes=n_classes, y_pool=y_pool, fit_mask=fit_mask,
        val_pos=val_pos, fit_w=torch.from_numpy(fit_w),
        ref_w=torch.from_numpy(np.repeat(ref_w[None], n_u, 0)), grid=grid,
        path=np.argsort(grid, kind="stable"), options=options,
    )
    return _Plan(fold, setup, seed_to_u, uniq, notes)


def _assemble(plan: _Plan, outs: Sequence[_BlockOut], n_layers: int, classes: Sequence[str],
              options: ProbeOptions, groups: np.ndarray | None,
              layer_ids: Sequence[int] | None) -> FoldFit:
    setup, superb = plan.setup, options.preset == "superb"
    n_u, grid, n_test = setup.n_u, setup.grid, len(setup.test)
    n_out = n_layers + int(superb)
    val_grid = np.full((n_out, n_u, len(grid)), np.nan)
    chosen = np.zeros((n_out, n_u), dtype=np.int64)
    pred = np.zeros((n_out, n_u, n_test), dtype=np.int64)
    prob = np.zeros((n_out, n_u, n_test, len(classes)), dtype=np.float32)
    n_iter = np.zeros((n_out, n_u), dtype=np.int64)
    converged = np.zeros((n_out, n_u), dtype=bool)
    weights = None
    notes: list[str] = []
    for o in outs:
        val_grid[o.rows], chosen[o.rows], pred[o.rows], prob[o.rows] = (
            o.val_grid, o.chosen, o.pred, o.prob)
        n_iter[o.rows], converged[o.rows] = o.n_iter, o.converged
        notes += o.notes
        if o.layer_weights is not None:
            weights = o.layer_weights
    su = np.asarray(plan.seed_to_u)
    fits = [plan.uniq[u] for u in plan.seed_to_u]
    layer_names: list[int | str] = list(layer_ids if layer_ids is not None else range(n_layers))
    return FoldFit(
        name=plan.fold.name,
        layers=layer_names + ([SUPERB_LAYER] if superb else []),
        seeds=list(options.seeds),
        classes=list(classes),
        c_grid=[float(c) for c in grid],
        chosen_c=grid[chosen[:, su]],
        val_grid=val_grid[:, su],
        val_uar=np.take_along_axis(val_grid[:, su], chosen[:, su, None], 2)[..., 0],
        test_index=setup.test,
        test_pred=pred[:, su],
        test_prob=prob[:, su],
        n_iter=n_iter[:, su],
        converged=converged[:, su],
        n_fit=[len(f) for f, _ in fits],
        n_val=[len(v) for _, v in fits],
        fit_speakers=[len(np.unique(groups[f])) if groups is not None else 0 for f, _ in fits],
        val_speakers=[len(np.unique(groups[v])) if groups is not None else 0 for _, v in fits],
        layer_weights=None if weights is None else weights[su],
        notes=plan.notes + sorted(set(notes)),
    )


def probe_folds(
    features: Features,
    y: np.ndarray,
    folds: Sequence[Fold],
    classes: Sequence[str],
    options: ProbeOptions,
    *,
    groups: np.ndarray | None = None,
    layer_ids: Sequence[int] | None = None,
    where: str = "",
    threads: int | None = None,
) -> Iterator[FoldFit]:
    """Probe every layer of `features` (L, N, D) on each fold, yielding the folds in order.

    Indices of the folds and rows of `y` / `groups` refer to the N rows; `layer_ids` names
    the L layers in the output. `features` is an array or anything with `shape` and
    `block(layers: slice, *row_sets) -> [(l, len(rows), D) per row set]` (a cache read block
    by block, emoprobe.probe.dataset.CacheFeatures). Blocks
    of layers of every fold go through one pool of `threads` workers (default: the CPUs
    available), so no worker idles at the end of a fold; all folds are checked first.
    """
    shape = tuple(features.shape)
    if len(shape) != 3:
        raise ProbeError(f"{where}: features must be (layers, utterances, dim), got {shape}")
    n_layers, n_rows, dim = shape
    if len(y) != n_rows:
        raise ProbeError(f"{where}: {len(y)} labels for {n_rows} feature rows")
    y = np.asarray(y, dtype=np.int64)
    plans = [_plan(y, fold, classes, options, groups, where) for fold in folds]
    threads = max(1, threads or available_cpus())
    superb = options.preset == "superb"
    source = _source(features)
    with single_thread(), ThreadPoolExecutor(max_workers=threads) as ex:
        pending = []
        for plan in plans:
            futures = []
            if superb:  # the largest task goes first
                futures.append(ex.submit(_fit_superb, source, plan.setup, n_layers))
            blocks = _blocks(n_layers, len(plan.setup.pool) * dim * 4, threads, len(plans),
                             options.max_chunk_mb * 2**20)
            futures += [ex.submit(_fit_block, source, b, plan.setup, where) for b in blocks]
            pending.append((plan, futures))
        try:
            for plan, futures in pending:
                outs = [f.result() for f in futures]
                yield _assemble(plan, outs, n_layers, classes, options, groups, layer_ids)
        finally:
            for _, futures in pending:
                for f in futures:
                    f.cancel()


def probe_fold(
    features: Features,
    y: np.ndarray,
    fold: Fold,
    classes: Sequence[str],
    options: ProbeOptions,
    **kwargs: object,
) -> FoldFit:
    """Probe every layer of `features` on one fold (see probe_folds)."""
    return next(probe_folds(features, y, [fold], classes, options, **kwargs))
