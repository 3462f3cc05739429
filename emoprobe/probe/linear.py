"""Batched multinomial logistic regression: many linear probes solved as one problem.

A probe is softmax regression with an L2 penalty on the weights (not the intercept), the
objective of scikit-learn's `LogisticRegression(C=...)`, scaled like its lbfgs solver:

    f(W, b) = sum_i w_i * CE(softmax(W x_i + b), y_i) / sum_i w_i + ||W||^2 / (2 C sum_i w_i)

`x_i` is the standardised feature vector. Every layer of a fold and every validation carving
(seed) is one problem in a batch; all of them share one float32 feature tensor, so a function
evaluation is two batched matrix products over the data for the whole batch. The problems are
convex; a batched L-BFGS with an Armijo line search and a Gram-matrix preconditioner solves
them to the same optimum scikit-learn's lbfgs reaches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from emoprobe.probe.config import SolverOptions

Tensor = torch.Tensor


@dataclass
class LbfgsInfo:
    """Per-problem outcome: iterations taken, whether the gradient test passed, final f."""

    n_iter: np.ndarray
    converged: np.ndarray
    loss: np.ndarray
    n_evals: int


def lbfgs(
    fg: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]],
    x0: Tensor,
    *,
    options: SolverOptions,
    precond: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> tuple[Tensor, LbfgsInfo]:
    """Minimise P independent smooth functions at once.

    `fg(x, need)` maps parameters (P, m) float64 to values (P,) and gradients (P, m); it must
    fill the rows where the bool mask `need` (P,) is set and may skip the others (they are
    ignored), so finished problems stop costing work. `precond(v, need)` applies an
    approximate inverse Hessian H0 (a fixed symmetric positive definite linear map) to (P, m)
    vectors. H0 is applied once per iteration, to the new gradient: by linearity, H0 of the
    two-loop's vector is assembled from stored H0 g and H0 y.
    """
    x = x0.clone()
    n_prob = x.shape[0]
    every = torch.ones(n_prob, dtype=torch.bool)
    f, g = fg(x, every)
    n_evals = 1
    apply_h0 = precond if precond is not None else (lambda v, need: v)
    hg = apply_h0(g, every)
    hist = options.history
    s_hist = torch.zeros((hist, *x.shape), dtype=x.dtype)
    y_hist = torch.zeros_like(s_hist)
    hy_hist = torch.zeros_like(s_hist)
    rho = torch.zeros((hist, n_prob), dtype=x.dtype)
    gamma = torch.ones(n_prob, dtype=x.dtype)
    n_iter = torch.zeros(n_prob, dtype=torch.long)
    active = g.abs().amax(1) > options.tol
    converged = ~active

    for it in range(options.max_iter):
        if not bool(active.any()):
            break
        # Two-loop recursion (unused slots hold zeros and rho 0, so they drop out).
        q = g.clone()
        hq = hg.clone()
        alphas = []
        order = [(it - 1 - k) % hist for k in range(min(it, hist))]
        for k in order:
            a = rho[k] * (s_hist[k] * q).sum(1)
            q -= a[:, None] * y_hist[k]
            hq -= a[:, None] * hy_hist[k]
            alphas.append(a)
        r = gamma[:, None] * hq
        for k, a in zip(reversed(order), reversed(alphas)):
            b = rho[k] * (y_hist[k] * r).sum(1)
            r += (a - b)[:, None] * s_hist[k]
        d = -r
        gd = (g * d).sum(1)
        bad = gd >= 0  # not a descent direction: fall back to the preconditioned gradient
        if bool(bad.any()):
            d[bad] = -hg[bad]
            gd = (g * d).sum(1)
        d[~active] = 0.0
        gd[~active] = 0.0
        if it == 0 and precond is None:
            t = torch.clamp(1.0 / g.abs().sum(1), max=1.0)
        else:
            t = torch.ones(n_prob, dtype=x.dtype)

        # Backtracking Armijo search, batched: problems that pass keep their new point.
        x_new, f_new, g_new = x.clone(), f.clone(), g.clone()
        pending = active.clone()
        for _ls in range(options.max_linesearch):
            trial = x + t[:, None] * d
            ft, gt = fg(trial, pending)
            n_evals += 1
            ok = pending & torch.isfinite(ft) & (ft <= f + 1e-4 * t * gd)
            x_new[ok], f_new[ok], g_new[ok] = trial[ok], ft[ok], gt[ok]
            pending &= ~ok
            if not bool(pending.any()):
                break
            # Safeguarded quadratic interpolation of the step.
            denom = 2.0 * (ft - f - gd * t)
            t_quad = torch.where(
                torch.isfinite(ft) & (denom > 0), -gd * t * t / denom, 0.5 * t
            )
            t = torch.where(pending, torch.clamp(t_quad, 0.1 * t, 0.5 * t), t)
        stalled = pending  # no acceptable step: the problem is at its numerical optimum
        moved = active & ~stalled
        hg_new = hg.clone()
        if bool(moved.any()):
            hg_new[moved] = apply_h0(g_new, moved)[moved]
        s = x_new - x
        yv = g_new - g
        hy = hg_new - hg
        sy = (s * yv).sum(1)
        yhy = (yv * hy).sum(1)
        good = moved & (sy > 1e-12 * (s.norm(dim=1) * yv.norm(dim=1))) & (yhy > 0)
        slot = it % hist
        s_hist[slot] = torch.where(good[:, None], s, 0.0)
        y_hist[slot] = torch.where(good[:, None], yv, 0.0)
        hy_hist[slot] = torch.where(good[:, None], hy, 0.0)
        rho[slot] = torch.where(good, 1.0 / torch.where(good, sy, 1.0), 0.0)
        gamma = torch.where(good, sy / torch.where(good, yhy, 1.0), gamma)
        rel = (f - f_new) / torch.clamp(torch.maximum(f.abs(), f_new.abs()), min=1.0)
        n_iter += active.long()
        x, f, g, hg = x_new, f_new, g_new, hg_new
        gmax = g.abs().amax(1)
        done = (gmax <= options.tol) | (rel <= options.ftol)
        converged |= active & done
        active &= ~(done | stalled)
    info = LbfgsInfo(
        n_iter=n_iter.numpy(),
        converged=converged.numpy(),
        loss=f.numpy(),
        n_evals=n_evals,
    )
    return x, info


def weighted_moments(X: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation (ddof 0) of X (L, n, D) over the rows each weight row of
    `weight` (S, n) selects (weight > 0, unweighted, as StandardScaler on those rows).
    Returns (L, S, D) float64 each; a zero deviation becomes 1, as in scikit-learn.

    Sums run in float32 matrix products on data shifted by a per-layer reference (the mean of
    the first rows), which keeps large offsets from cancelling digits; moments are float64.
    """
    mask = (weight > 0).to(torch.float32)
    count = mask.sum(1).to(torch.float64)  # (S,)
    n_layers, n_rows, dim = X.shape
    mean = torch.empty((n_layers, mask.shape[0], dim), dtype=torch.float64)
    std = torch.empty_like(mean)
    for layer in range(n_layers):
        xl = X[layer]
        shift = xl[: min(n_rows, 256)].to(torch.float64).mean(0)
        xc = xl - shift.to(torch.float32)
        m1 = (mask @ xc).to(torch.float64) / count[:, None]
        xc.mul_(xc)
        m2 = (mask @ xc).to(torch.float64) / count[:, None]
        mean[layer] = m1 + shift
        std[layer] = torch.sqrt(torch.clamp(m2 - m1 * m1, min=0.0))
    std = torch.where(std < 1e-12 * (1.0 + mean.abs()), 1.0, std)
    return mean, std


def _span(need: Tensor, n_layers: int) -> tuple[int, int]:
    """The smallest contiguous layer range [lo, hi) holding every needed problem."""
    rows = need.view(n_layers, -1).any(1).nonzero().flatten()
    if rows.numel() == 0:
        return 0, 0
    return int(rows[0]), int(rows[-1]) + 1


class ObjectiveBase:
    """What every batched softmax objective holds: rows X (L, n, D) float32, already roughly
    centred and scaled; class indices y (n,); sample weights (P, n) of P problems (0 leaves a
    row out), normalised to sum to 1; per-layer standardisation mean/scale (L, P, D) float64;
    L2 strengths lam in the mean-scaled objective; one-hot targets (K, n)."""

    def __init__(
        self,
        X: Tensor,
        y: Tensor,
        n_classes: int,
        weight: Tensor,
        mean: Tensor,
        scale: Tensor,
        lam: Tensor,
    ) -> None:
        self.X = X
        self.XT = X.transpose(1, 2)
        self.n_layers, self.n_rows, self.dim = X.shape
        self.n_problems = weight.shape[0]
        self.n_classes = n_classes
        self.y = y
        self.mean = mean
        self.scale = scale
        self.lam = lam
        self.wn = (weight / weight.sum(1, keepdim=True)).to(torch.float32)
        self.onehot = torch.nn.functional.one_hot(y, n_classes).T.to(torch.float32)


class SoftmaxObjective(ObjectiveBase):
    """The batched probe objective over L layers x S groups (carvings or C values).

    X: (L, n, D) float32, the rows any group may use, already roughly centred and scaled
    (for float32 accuracy). y: (n,) class indices. weight: (S, n) float64 sample weights of
    each group (0 leaves a row out). mean/scale: (L, S, D) float64 standardisation of each
    problem. lam: (L, S) L2 strength in the mean-scaled objective, 1 / (C * sum of weights).
    Parameters are (L, S, K, D + 1): the weight matrix in standardised space, then the
    intercept.
    """

    def __init__(self, X: Tensor, y: Tensor, n_classes: int, weight: Tensor, mean: Tensor,
                 scale: Tensor, lam: Tensor) -> None:
        super().__init__(X, y, n_classes, weight, mean, scale, lam)
        self.n_groups = self.n_problems
        self.y_index = y.view(1, 1, 1, -1).expand(self.n_layers, self.n_groups, 1, -1)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.n_layers, self.n_groups, self.n_classes, self.dim + 1)

    def effective(self, theta: Tensor, lo: int = 0, hi: int | None = None) -> tuple[Tensor, Tensor]:
        """Weights and intercepts acting on the rows of X: (l, S, K, D), (l, S, K) for the
        layers [lo, hi) that `theta` (l, S, K, D + 1) holds."""
        hi = self.n_layers if hi is None else hi
        W = theta[..., : self.dim]
        w_eff = W / self.scale[lo:hi, :, None, :]
        b_eff = theta[..., self.dim] - (w_eff * self.mean[lo:hi, :, None, :]).sum(-1)
        return w_eff, b_eff

    def logits(
        self, theta: Tensor, X: Tensor | None = None, span: tuple[int, int] | None = None
    ) -> Tensor:
        """(l, S, K, n) float32 logits of the problems of layers span = [lo, hi) (default:
        all) on X (default: the training rows)."""
        lo, hi = span if span is not None else (0, self.n_layers)
        w_eff, b_eff = self.effective(theta[lo:hi], lo, hi)
        XT = (self.XT if X is None else X.transpose(1, 2))[lo:hi]
        S, K = self.n_groups, self.n_classes
        z = torch.bmm(w_eff.reshape(hi - lo, S * K, self.dim).to(torch.float32), XT)
        return z.view(hi - lo, S, K, -1) + b_eff.to(torch.float32)[..., None]

    def __call__(self, flat: Tensor, need: Tensor | None = None) -> tuple[Tensor, Tensor]:
        L, S, K, D = self.n_layers, self.n_groups, self.n_classes, self.dim
        lo, hi = (0, L) if need is None else _span(need, L)
        f = torch.zeros((L, S), dtype=torch.float64)
        grad = torch.zeros((L, S, K, D + 1), dtype=torch.float64)
        if hi == lo:
            return f.reshape(-1), grad.reshape(L * S, -1)
        theta = flat.view(L, S, K, D + 1)[lo:hi]
        z = self.logits(flat.view(L, S, K, D + 1), span=(lo, hi))
        lse = torch.logsumexp(z, dim=2)
        zy = z.gather(2, self.y_index[lo:hi]).squeeze(2)
        ce = (lse - zy).to(torch.float64)
        W = theta[..., :D]
        lam = self.lam[lo:hi]
        f[lo:hi] = (ce * self.wn.to(torch.float64)).sum(-1) + 0.5 * lam * (W * W).sum((-1, -2))
        resid = torch.exp(z - lse[:, :, None, :])
        resid -= self.onehot
        resid *= self.wn[None, :, None, :]
        g_eff = torch.bmm(resid.view(hi - lo, S * K, -1), self.X[lo:hi])
        g_eff = g_eff.view(hi - lo, S, K, D).to(torch.float64)
        g_b = resid.sum(-1).to(torch.float64)
        mean, scale = self.mean[lo:hi, :, None, :], self.scale[lo:hi, :, None, :]
        g_w = (g_eff - g_b[..., None] * mean) / scale
        g_w += lam[..., None, None] * W
        grad[lo:hi, ..., :D] = g_w
        grad[lo:hi, ..., D] = g_b
        return f.reshape(-1), grad.reshape(L * S, -1)


class single_thread:
    """Run LAPACK factorisations single-threaded: multi-threaded MKL LAPACK calls stall badly
    when the cores are shared (busy-waiting threads), while one thread is fast and steady."""

    def __enter__(self) -> None:
        self.n = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.n)


class GramPreconditioner:
    """Approximate inverse Hessian of the probe objective from each layer's feature Gram.

    The Hessian of softmax regression is close to kron(I_K, G / K) + lam * I for the
    standardised Gram G; the spread of G's eigenvalues (correlated features) is what slows
    plain gradient steps. `set_lam` inverts G / K + lam I per layer (Cholesky), and the
    preconditioner applies that inverse to every class column of every group.
    """

    def __init__(self, X: Tensor, n_groups: int, n_classes: int) -> None:
        n_layers, n_rows, dim = X.shape
        self.gram = torch.bmm(X.transpose(1, 2), X) / n_rows
        self.n_layers = n_layers
        self.n_groups = n_groups
        self.n_classes = n_classes
        self.dim = dim
        self.kappa = 1.0 / n_classes
        self.inverse: Tensor | None = None

    def set_lam(self, lam: Tensor) -> None:
        """Invert for L2 strengths lam (L,) (one value per layer; per-group differences are
        left to L-BFGS's own curvature pairs)."""
        m = self.gram.mul(self.kappa)
        diag = m.diagonal(dim1=-2, dim2=-1)
        diag.add_(lam.to(torch.float32)[:, None])
        with single_thread():
            factor, info = torch.linalg.cholesky_ex(m)
            if bool((info != 0).any()):  # numerically singular: add a little ridge
                diag.add_(1e-5 * diag.mean(-1, keepdim=True))
                factor = torch.linalg.cholesky(m)
            del m
            self.inverse = torch.cholesky_inverse(factor)

    def __call__(self, v: Tensor, need: Tensor | None = None) -> Tensor:
        assert self.inverse is not None, "set_lam() first"
        L, S, K, D = self.n_layers, self.n_groups, self.n_classes, self.dim
        lo, hi = (0, L) if need is None else _span(need, L)
        t = v.view(L, S, K, D + 1)
        out = torch.zeros_like(t)
        if hi > lo:
            w = t[lo:hi, ..., :D].reshape(hi - lo, S * K, D).to(torch.float32)
            sol = torch.bmm(w, self.inverse[lo:hi])  # the inverse is symmetric
            out[lo:hi, ..., :D] = sol.view(hi - lo, S, K, D)
            out[lo:hi, ..., D] = t[lo:hi, ..., D] / self.kappa
        return out.reshape(L * S, -1)
