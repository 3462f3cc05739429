"""Model selection without the test fold: speaker-disjoint validation carving, the choice of
the L2 strength on it, and the choice of a layer from validation scores."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from emoprobe.errors import ProbeError

DEFAULT_C_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
# Ridge penalties (scikit-learn's Ridge alpha on standardised features; sum-of-squares loss,
# so the useful range grows with the number of fitting rows). Closed form: every one is cheap.
DEFAULT_ALPHA_GRID = (1e-1, 1.0, 10.0, 1e2, 1e3, 1e4, 1e5, 1e6)


class CarvingError(ProbeError):
    """No speaker-disjoint validation part can be carved from a training part."""


def carve_validation(
    train: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    *,
    seed: int,
    fraction: float = 0.2,
    where: str = "",
) -> tuple[np.ndarray, np.ndarray]:
    """Split training indices into (fit, validation) with no speaker in both.

    About `fraction` of the training speakers go to validation, chosen by scikit-learn's
    StratifiedGroupKFold (shuffled with `seed`) so that the class mix of the two parts stays
    close: its first fold is the validation part. With fewer speakers than 1/fraction, one
    speaker in k is held out. Both parts are sorted index arrays into the records.
    """
    if not 0.0 < fraction < 1.0:
        raise ProbeError(f"validation fraction must lie in (0, 1), got {fraction}")
    g = groups[train]
    n_groups = len(np.unique(g))
    if n_groups < 2:
        raise CarvingError(
            f"{where}: a speaker-disjoint validation split needs at least 2 speakers in the "
            f"training part, found {n_groups}"
        )
    # Fewer splits when even the largest class has fewer members than splits (scikit-learn
    # refuses those): a larger validation share, the most the data allows.
    largest = int(np.bincount(np.asarray(y)[train]).max()) if len(train) else 0
    n_splits = min(max(2, round(1.0 / fraction)), n_groups, largest)
    if n_splits < 2:
        raise CarvingError(f"{where}: every class has at most one training utterance; no "
                           "validation part can be carved")
    from sklearn.model_selection import StratifiedGroupKFold  # lazy: keeps the CLI light

    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # "The least populated class has only k members": expected with few speakers; the
        # split stays speaker-disjoint and as stratified as the speakers allow.
        warnings.filterwarnings("ignore", message="The least populated class",
                                category=UserWarning)
        splits = list(splitter.split(np.zeros(len(train)), y[train], g))
    # scikit-learn orders speakers by their class mix and uses the seed only to break ties,
    # so its first split rarely changes with the seed: the seed picks one of the splits.
    fit_pos, val_pos = splits[seed % len(splits)]
    return np.sort(train[fit_pos]), np.sort(train[val_pos])


def choose_c(scores: np.ndarray, grid: Sequence[float]) -> np.ndarray:
    """Index of the best C per problem from validation scores (..., G).

    Ties go to the smallest C (strongest regularisation), the most conservative choice;
    NaN scores (no validation utterances of any class) never win.
    """
    order = np.argsort(np.asarray(grid, dtype=float), kind="stable")
    s = np.where(np.isnan(scores), -np.inf, scores)[..., order]
    return order[np.argmax(s, axis=-1)]


def choose_layer(layers: Sequence[int | str], val_scores: Sequence[float]) -> int | str:
    """The layer with the best mean validation score (first one on ties); never test."""
    if len(layers) == 0:
        raise ProbeError("no layers to choose from")
    s = np.asarray(val_scores, dtype=float)
    s = np.where(np.isnan(s), -np.inf, s)
    return layers[int(np.argmax(s))]
