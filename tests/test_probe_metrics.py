"""Metrics equal scikit-learn's on fixed predictions; the vectorised bootstrap is correct,
seeded and paired."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    recall_score,
)

from emoprobe.probe.metrics import (
    confusion,
    resample_counts,
    score_many,
    scores_from_confusion,
    uar_batch,
)

K = 4


def _cases() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, K, 300)
    noisy = np.where(rng.random(300) < 0.6, y, rng.integers(0, K, 300))
    no_class3 = np.where(y == 3, 0, y)  # class 3 absent from the reference
    never_pred2 = np.where(noisy == 2, 1, noisy)  # class 2 never predicted
    return [(y, noisy), (no_class3, noisy), (y, never_pred2), (no_class3, np.zeros(300, int))]


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("case", range(4))
def test_metrics_equal_sklearn(case: int) -> None:
    y, p = _cases()[case]
    conf = confusion(y, p, K)
    np.testing.assert_array_equal(conf, confusion_matrix(y, p, labels=range(K)))
    s = scores_from_confusion(conf)
    assert s["war"] == pytest.approx(accuracy_score(y, p))
    assert s["uar"] == pytest.approx(balanced_accuracy_score(y, p))
    assert s["macro_f1"] == pytest.approx(f1_score(y, p, average="macro", zero_division=0))
    rec = recall_score(y, p, labels=range(K), average=None, zero_division=0)
    present = np.bincount(y, minlength=K) > 0
    np.testing.assert_allclose(s["recall"][present], rec[present])
    assert np.isnan(s["recall"][~present]).all()
    (one,) = score_many(y, p[None], K, n_boot=0)
    assert one.uar == pytest.approx(balanced_accuracy_score(y, p))
    assert uar_batch(y, np.stack([p, y]), K) == pytest.approx([balanced_accuracy_score(y, p), 1])


def test_bootstrap_matches_explicit_resampling() -> None:
    y, p = _cases()[0]
    counts = resample_counts(len(y), 50, seed=3)
    assert counts.shape == (50, len(y)) and (counts.sum(1) == len(y)).all()
    # The matrix-product bootstrap equals scoring each explicit resample.
    rng = np.random.default_rng(3)
    draws = rng.integers(0, len(y), size=(50, len(y)))
    explicit = [balanced_accuracy_score(y[d], p[d]) for d in draws]
    (sc,) = score_many(y, p[None], K, n_boot=50, seed=3)
    lo, hi = np.percentile(explicit, [2.5, 97.5])
    assert sc.ci["uar"] == pytest.approx((lo, hi))


def test_bootstrap_seeded_paired_and_pooled() -> None:
    y, p = _cases()[0]
    a = score_many(y, np.stack([p, y]), K, n_boot=200, seed=1)
    b = score_many(y, np.stack([p, y]), K, n_boot=200, seed=1)
    c = score_many(y, np.stack([p, y]), K, n_boot=200, seed=2)
    assert a[0].ci == b[0].ci and a[0].ci != c[0].ci
    lo, hi = a[0].ci["war"]
    assert lo < a[0].war < hi
    assert a[1].ci["uar"] == (1.0, 1.0)  # perfect predictions stay perfect in every resample
    # (R, S, n): the S prediction vectors of a probe pool into one confusion matrix.
    (pooled,) = score_many(y, np.stack([p, y])[None], K, n_boot=0)
    np.testing.assert_array_equal(pooled.confusion, confusion(y, p, K) + confusion(y, y, K))
