"""The batched trainer solves scikit-learn's LogisticRegression problem: same coefficients
(to the solver tolerance), same predictions and UAR, with or without the preconditioner,
batched over layers, carvings and C values; standardisation equals StandardScaler."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.preprocessing import StandardScaler

from emoprobe.data.folds import Fold
from emoprobe.probe.config import ProbeOptions, SolverOptions
from emoprobe.probe.engine import carvings_for, probe_fold
from emoprobe.probe.linear import (
    GramPreconditioner,
    SoftmaxObjective,
    lbfgs,
    single_thread,
    weighted_moments,
)
from emoprobe.testing.embeddings import synthetic_corpus

CLASSES = ("a", "b", "c")


@pytest.fixture(scope="module")
def small() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    X, recs = synthetic_corpus(n_layers=3, n_utts=700, dim=20, seed=1, separation=0.5,
                               priors=(0.5, 0.3, 0.2), classes=CLASSES, corpus="syn",
                               latent_dim=6)
    y = np.array([CLASSES.index(r["label"]) for r in recs])
    spk = np.array([r["speaker"] for r in recs])
    sess = np.array([r["session"] for r in recs])
    return X, y, spk, sess


def _sk(X: np.ndarray, y: np.ndarray, C: float, balanced: bool = False) -> LogisticRegression:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return LogisticRegression(C=C, max_iter=10000, tol=1e-7,
                                  class_weight="balanced" if balanced else None).fit(X, y)


def test_moments_equal_standard_scaler(small) -> None:
    X, *_ = small
    Xt = torch.from_numpy(X) * 50 + 1000  # large offsets: the float32 sums must not cancel
    mask = torch.zeros((2, X.shape[1]), dtype=torch.float64)
    mask[0, :300] = 1
    mask[1, 200:] = 1
    mean, std = weighted_moments(Xt, mask)
    for s, rows in enumerate((slice(0, 300), slice(200, None))):
        sc = StandardScaler().fit(Xt[1, rows].double().numpy())
        np.testing.assert_allclose(mean[1, s].numpy(), sc.mean_, rtol=1e-6)
        np.testing.assert_allclose(std[1, s].numpy(), sc.scale_, rtol=1e-4)


@pytest.mark.parametrize("precondition", [True, False])
def test_batched_solution_equals_sklearn(small, precondition: bool) -> None:
    X, y, _, _ = small
    Xt = torch.from_numpy(X)
    grid = (1e-3, 0.1, 10.0)
    n = X.shape[1]
    # One batch: 3 layers x 3 C values (as groups), each with its own standardisation.
    weight = torch.ones((len(grid), n), dtype=torch.float64)
    mean, scale = weighted_moments(Xt, weight)
    lam = torch.tensor([[1.0 / (c * n) for c in grid]] * 3, dtype=torch.float64)
    obj = SoftmaxObjective(Xt, torch.from_numpy(y), 3, weight, mean, scale, lam)
    pc = None
    if precondition:
        pc = GramPreconditioner((Xt - Xt.mean(1, keepdim=True)) / Xt.std(1, keepdim=True), 3, 3)
        pc.set_lam(lam.mean(1))
    opts = SolverOptions(tol=1e-7, max_iter=3000)
    with single_thread():
        theta, info = lbfgs(obj, torch.zeros((9, 3 * 21), dtype=torch.float64), options=opts,
                            precond=pc)
    assert info.converged.all()
    theta = theta.view(3, 3, 3, 21)
    for layer in range(3):
        Xs = StandardScaler().fit_transform(X[layer])
        for g, C in enumerate(grid):
            ref = _sk(Xs, y, C)
            ours = theta[layer, g].numpy()
            tol = 2e-3 * max(1.0, abs(ref.coef_).max())
            np.testing.assert_allclose(ours[:, :20], ref.coef_, atol=tol)
            pred = obj.logits(theta)[layer, g].argmax(0).numpy()
            assert np.mean(pred == ref.predict(Xs)) > 0.995


@pytest.mark.parametrize(("balanced", "refit"), [(False, "train+val"), (True, "train")])
def test_fold_matches_sklearn_pipeline(small, balanced: bool, refit: str) -> None:
    """The whole fold protocol (carving, C choice on validation UAR, refit, prediction)
    reproduces StandardScaler + LogisticRegression run by hand with the same carvings."""
    X, y, spk, sess = small
    fold = Fold("s1", np.flatnonzero(sess != "1"), np.flatnonzero(sess == "1"))
    opts = ProbeOptions(seeds=(0, 1), c_grid=(1e-3, 1e-2, 0.1, 1.0), balanced=balanced,
                        refit=refit, n_boot=0)
    with single_thread():
        fit = probe_fold(X, y, fold, CLASSES, opts, groups=spk)
    carvings, notes = carvings_for(fold, y, spk, opts, CLASSES, "test")
    assert notes == []  # every seed could carve a speaker-disjoint validation part
    te = fold.test
    for layer in range(3):
        for s, (fit_rows, val_rows) in enumerate(carvings):
            sc = StandardScaler().fit(X[layer, fit_rows])
            vals = [balanced_accuracy_score(y[val_rows], _sk(
                sc.transform(X[layer, fit_rows]), y[fit_rows], C, balanced).predict(
                sc.transform(X[layer, val_rows]))) for C in opts.c_grid]
            C = opts.c_grid[int(np.argmax(vals))]
            assert fit.chosen_c[layer, s] == C
            assert fit.val_uar[layer, s] == pytest.approx(max(vals))
            rows = np.union1d(fit_rows, val_rows) if refit == "train+val" else fit_rows
            sc = StandardScaler().fit(X[layer, rows])
            ref = _sk(sc.transform(X[layer, rows]), y[rows], C, balanced)
            pred = ref.predict(sc.transform(X[layer, te]))
            assert np.mean(pred == fit.test_pred[layer, s]) >= 0.99
            assert balanced_accuracy_score(y[te], fit.test_pred[layer, s]) == pytest.approx(
                balanced_accuracy_score(y[te], pred), abs=0.01)
            np.testing.assert_allclose(
                fit.test_prob[layer, s], ref.predict_proba(sc.transform(X[layer, te])), atol=0.02)
