"""Ridge probes equal scikit-learn's Ridge on the fold protocol; regression metrics equal
their formulas; a planted linear target is recovered and a noise target is not."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr
from sklearn.linear_model import Ridge
from sklearn.metrics import mean_absolute_error, mean_squared_error
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from emoprobe.data.folds import Fold
from emoprobe.data.targets import target_strata
from emoprobe.probe.config import ProbeOptions
from emoprobe.probe.metrics import resample_counts
from emoprobe.probe.regression_metrics import ccc_batch, regression_scores, score_regression
from emoprobe.probe.ridge import probe_folds_ridge, ridge_coefficients, ridge_path
from emoprobe.probe.selection import carve_validation

ALPHAS = np.asarray([1e-2, 1.0, 30.0, 1e3, 1e5])


def _data(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * rng.uniform(0.5, 20, d) + rng.uniform(-5, 5, d)
    X[:, 1] = 3.0  # a constant dimension (scale 1, as StandardScaler)
    y = X[:, :5] @ rng.standard_normal(5) + rng.standard_normal(n) * 4 + 2.5
    return X, y


@pytest.mark.parametrize("shape", [(200, 12), (30, 60)], ids=["primal", "dual"])
def test_ridge_path_equals_sklearn_pipeline(shape: tuple[int, int]) -> None:
    X, y = _data(*shape)
    Xa = _data(50, shape[1], seed=1)[0]
    (pred,) = ridge_path(torch.from_numpy(X), torch.from_numpy(y), torch.from_numpy(ALPHAS),
                         torch.from_numpy(Xa))
    for g, alpha in enumerate(ALPHAS):
        ref = make_pipeline(StandardScaler(), Ridge(alpha=alpha)).fit(X, y).predict(Xa)
        np.testing.assert_allclose(pred[:, g].numpy(), ref, rtol=1e-7, atol=1e-7)
        w, b = ridge_coefficients(X, y, alpha)
        np.testing.assert_allclose(Xa @ w + b, ref, rtol=1e-7, atol=1e-7)


def _planted(n: int = 400, d: int = 10, n_layers: int = 3, seed: int = 0):
    """Layer 1 holds a linear target plus noise; layers 0 and 2 are noise (the last dimension
    of every layer is constant)."""
    rng = np.random.default_rng(seed)
    feats = rng.standard_normal((n_layers, n, d)) * 2.0 + 1.0
    feats[:, :, -1] = 1.5  # a constant dimension: scale 1, as StandardScaler
    w = rng.standard_normal(d)
    y = feats[1] @ w * 0.7 + rng.standard_normal(n) + 4.0
    speakers = np.arange(n) % 10
    sessions = speakers // 2
    folds = [Fold(str(s), np.flatnonzero(sessions != s), np.flatnonzero(sessions == s))
             for s in range(5)]
    return feats.astype(np.float32), y, speakers.astype(str), folds


@pytest.mark.parametrize("refit", ["train+val", "train"])
def test_fold_protocol_equals_sklearn(refit: str) -> None:
    feats, y, groups, folds = _planted()
    opts = ProbeOptions(seeds=(0, 1), alpha_grid=tuple(ALPHAS), refit=refit)
    fits = list(probe_folds_ridge(feats, y, folds, opts, groups=groups, threads=2))
    for fold, fit in zip(folds[:2], fits[:2]):
        strata = np.zeros(len(y), dtype=np.int64)  # target quantiles of the training part only
        strata[fold.train] = target_strata(y[fold.train])
        for s, seed in enumerate(opts.seeds):
            fit_rows, val_rows = carve_validation(fold.train, strata, groups, seed=seed)
            assert fit.n_fit[s] == len(fit_rows) and fit.n_val[s] == len(val_rows)
            assert not set(groups[fit_rows]) & set(groups[val_rows])
            for layer in range(feats.shape[0]):
                X = feats[layer].astype(np.float64)
                val_ccc = []
                for alpha in ALPHAS:
                    m = make_pipeline(StandardScaler(), Ridge(alpha=alpha))
                    p = m.fit(X[fit_rows], y[fit_rows]).predict(X[val_rows])
                    val_ccc.append(_ccc_direct(y[val_rows], p))
                np.testing.assert_allclose(fit.val_grid[layer, s], val_ccc, atol=1e-9)
                best = max(range(len(ALPHAS)), key=lambda g: (val_ccc[g], ALPHAS[g]))
                assert fit.chosen_c[layer, s] == ALPHAS[best]
                rows = fold.train if refit == "train+val" else fit_rows
                m = make_pipeline(StandardScaler(), Ridge(alpha=ALPHAS[best]))
                ref = m.fit(X[rows], y[rows]).predict(X[fit.test_index])
                np.testing.assert_allclose(fit.test_pred[layer, s], ref, rtol=1e-6, atol=1e-6)


def test_planted_target_recovered_noise_target_not() -> None:
    feats, y, groups, folds = _planted(n=600, seed=3)
    opts = ProbeOptions(seeds=(0,))
    fits = list(probe_folds_ridge(feats, y, folds, opts, groups=groups))
    test = np.concatenate([f.test_index for f in fits])
    pred = np.concatenate([f.test_pred[:, 0] for f in fits], axis=1)  # (L, n)
    ccc = ccc_batch(y[test], pred)
    assert ccc[1] > 0.85
    assert abs(ccc[0]) < 0.15 and abs(ccc[2]) < 0.15
    noise = np.random.default_rng(9).standard_normal(len(y))
    fits = list(probe_folds_ridge(feats, noise, folds, opts, groups=groups))
    pred = np.concatenate([f.test_pred[:, 0] for f in fits], axis=1)
    assert np.abs(ccc_batch(noise[test], pred)).max() < 0.15


def _ccc_direct(y: np.ndarray, p: np.ndarray) -> float:
    """Lin's CCC from numpy's biased covariance matrix."""
    cov = np.cov(y, p, bias=True)
    return 2 * cov[0, 1] / (cov[0, 0] + cov[1, 1] + (y.mean() - p.mean()) ** 2)


def test_metrics_equal_formulas_and_libraries() -> None:
    rng = np.random.default_rng(0)
    y = rng.standard_normal(300) * 2 + 1
    p = 0.6 * y + rng.standard_normal(300) + 0.5
    s = regression_scores(y, np.stack([p, y, np.full(300, 1.0)]))
    assert s["ccc"][0] == pytest.approx(_ccc_direct(y, p), rel=1e-12)
    # The equivalent form 1 - MSE / (var y + var p + (mean y - mean p)^2).
    alt = 1 - np.mean((y - p) ** 2) / (y.var() + p.var() + (y.mean() - p.mean()) ** 2)
    assert s["ccc"][0] == pytest.approx(alt, rel=1e-12)
    assert s["pearson"][0] == pytest.approx(pearsonr(y, p)[0], rel=1e-10)
    assert s["rmse"][0] == pytest.approx(np.sqrt(mean_squared_error(y, p)), rel=1e-10)
    assert s["mae"][0] == pytest.approx(mean_absolute_error(y, p), rel=1e-10)
    assert s["ccc"][1] == pytest.approx(1.0) and s["rmse"][1] == pytest.approx(0.0)
    assert s["ccc"][2] == pytest.approx(0.0) and np.isnan(s["pearson"][2])


def test_bootstrap_matches_explicit_resampling_and_pools_seeds() -> None:
    rng = np.random.default_rng(1)
    y = rng.standard_normal(120)
    p = np.stack([[0.5 * y + rng.standard_normal(120) for _ in range(2)]])  # (1, S=2, n)
    (sc,) = score_regression(y, p, n_boot=200, seed=4)
    counts = resample_counts(len(y), 200, seed=4).astype(int)
    boot = []
    for c in counts:
        idx = np.repeat(np.arange(len(y)), c)
        boot.append(_ccc_direct(np.tile(y[idx], 2), np.concatenate([p[0, 0, idx], p[0, 1, idx]])))
    assert sc.ci["ccc"] == pytest.approx(tuple(np.percentile(boot, [2.5, 97.5])), rel=1e-9)
    pooled = _ccc_direct(np.tile(y, 2), p[0].ravel())
    assert sc.ccc == pytest.approx(pooled, rel=1e-12)
    assert sc.ci["ccc"][0] < sc.ccc < sc.ci["ccc"][1]
