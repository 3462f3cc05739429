"""Probe settings: one frozen object, recorded verbatim next to every result."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from emoprobe.errors import ConfigError
from emoprobe.probe.selection import DEFAULT_ALPHA_GRID, DEFAULT_C_GRID
from emoprobe.validation import check_fields, check_settings, rule


@dataclass(frozen=True)
class SolverOptions:
    """Stopping rule and memory of the batched L-BFGS.

    `tol` bounds the largest absolute gradient entry of the (mean-scaled) objective, the
    quantity scikit-learn's lbfgs compares with its own `tol`; `ftol` stops a problem whose
    relative decrease in one step falls below it.
    """

    tol: float = field(default=1e-5, metadata=rule(gt=0))
    ftol: float = field(default=1e-9, metadata=rule(ge=0))
    max_iter: int = field(default=1000, metadata=rule(ge=1))
    history: int = field(default=10, metadata=rule(ge=1))
    max_linesearch: int = field(default=30, metadata=rule(ge=1))
    precondition: bool = True

    def __post_init__(self) -> None:
        check_fields(self, where="solver")


REFIT_CHOICES = ("train+val", "train")
PRESETS = (None, "superb")
SUPERB_NORMS = ("standardise", "none")


def seeds_from(value: int | Sequence[int]) -> tuple[int, ...]:
    """A seed count N means seeds 0..N-1; a list is taken as given (checked as integers by
    the field's type)."""
    if isinstance(value, bool):
        raise TypeError(f"seeds = {value!r}: expected a count or a list of seeds")
    if isinstance(value, int):
        if value < 1:
            raise ValueError(f"seeds = {value}: expected a count of at least 1")
        return tuple(range(value))
    return tuple(value)


@dataclass(frozen=True)
class ProbeOptions:
    """How every probe of a sweep is trained, selected and scored.

    c_grid: inverse L2 strengths tried (scikit-learn's C). alpha_grid: ridge penalties tried
    for regression tasks (scikit-learn's Ridge alpha, on standardised features). seeds: one
    validation carving (and bootstrap stream) per seed. refit: after C is chosen, refit on the
    fitting and validation parts together ("train+val", scikit-learn's GridSearchCV default)
    or keep the model fitted on the fitting part ("train"). balanced: class-balanced loss
    (weights n / (K n_c)). val_fraction: share of training speakers carved out for validation
    when the corpus has no validation split. preset "superb" adds a learned softmax-weighted
    sum of all layers. n_boot: bootstrap resamples for 95% intervals (0 = none). max_chunk_mb
    bounds the copy of one fold's features held at once (layers are processed in chunks
    under it).
    """

    c_grid: tuple[float, ...] = field(default=DEFAULT_C_GRID, metadata=rule(
        gt=0, expected="a list of positive finite numbers"))
    alpha_grid: tuple[float, ...] = field(default=DEFAULT_ALPHA_GRID, metadata=rule(
        gt=0, expected="a list of positive finite numbers"))
    seeds: tuple[int, ...] = field(default=(0, 1, 2), metadata=rule(
        convert=seeds_from, ge=0,
        expected="a count N >= 1 (seeds 0..N-1) or a list of integers >= 0"))
    refit: str = field(default="train+val", metadata=rule(choices=REFIT_CHOICES))
    balanced: bool = False
    val_fraction: float = field(default=0.2, metadata=rule(gt=0, lt=1))
    preset: str | None = field(default=None, metadata=rule(choices=PRESETS))
    superb_norm: str = field(default="standardise", metadata=rule(choices=SUPERB_NORMS))
    n_boot: int = field(default=1000, metadata=rule(ge=0))
    max_chunk_mb: float = field(default=1024.0, metadata=rule(gt=0))
    solver: SolverOptions = field(default_factory=SolverOptions)

    def __post_init__(self) -> None:
        check_fields(self)
        if not self.c_grid:
            raise ConfigError("c_grid is empty: expected at least one positive number")
        if len(set(self.c_grid)) != len(self.c_grid):
            raise ConfigError(f"c_grid has repeated values: {list(self.c_grid)}")
        if not self.alpha_grid:
            raise ConfigError("alpha_grid is empty: expected at least one positive number")
        if len(set(self.alpha_grid)) != len(self.alpha_grid):
            raise ConfigError(f"alpha_grid has repeated values: {list(self.alpha_grid)}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds repeat: {list(self.seeds)}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["c_grid"] = list(self.c_grid)
        d["alpha_grid"] = list(self.alpha_grid)
        d["seeds"] = list(self.seeds)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "") -> ProbeOptions:
        """Build from a mapping (a TOML table or a protocol JSON); unknown keys and values of
        the wrong type or range are ConfigErrors naming the key."""
        return cls(**check_settings(cls, d, where=where))

    def with_(self, **changes: Any) -> ProbeOptions:
        return replace(self, **changes)


