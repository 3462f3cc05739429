"""Probe settings: one frozen object, recorded verbatim next to every result."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from emoprobe.errors import ProbeError
from emoprobe.probe.selection import DEFAULT_ALPHA_GRID, DEFAULT_C_GRID


@dataclass(frozen=True)
class SolverOptions:
    """Stopping rule and memory of the batched L-BFGS.

    `tol` bounds the largest absolute gradient entry of the (mean-scaled) objective, the
    quantity scikit-learn's lbfgs compares with its own `tol`; `ftol` stops a problem whose
    relative decrease in one step falls below it.
    """

    tol: float = 1e-5
    ftol: float = 1e-9
    max_iter: int = 1000
    history: int = 10
    max_linesearch: int = 30
    precondition: bool = True


REFIT_CHOICES = ("train+val", "train")
PRESETS = (None, "superb")
SUPERB_NORMS = ("standardise", "none")


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

    c_grid: tuple[float, ...] = DEFAULT_C_GRID
    alpha_grid: tuple[float, ...] = DEFAULT_ALPHA_GRID
    seeds: tuple[int, ...] = (0, 1, 2)
    refit: str = "train+val"
    balanced: bool = False
    val_fraction: float = 0.2
    preset: str | None = None
    superb_norm: str = "standardise"
    n_boot: int = 1000
    max_chunk_mb: float = 1024.0
    solver: SolverOptions = field(default_factory=SolverOptions)

    def __post_init__(self) -> None:
        if not self.c_grid or any(c <= 0 for c in self.c_grid):
            raise ProbeError(f"c_grid must be non-empty positive values, got {self.c_grid}")
        if len(set(self.c_grid)) != len(self.c_grid):
            raise ProbeError(f"c_grid has repeated values: {self.c_grid}")
        if not self.alpha_grid or any(a <= 0 for a in self.alpha_grid):
            raise ProbeError(f"alpha_grid must be non-empty positive values, got {self.alpha_grid}")
        if len(set(self.alpha_grid)) != len(self.alpha_grid):
            raise ProbeError(f"alpha_grid has repeated values: {self.alpha_grid}")
        if not self.seeds:
            raise ProbeError("at least one seed is needed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ProbeError(f"seeds repeat: {self.seeds}")
        if self.refit not in REFIT_CHOICES:
            raise ProbeError(f"refit must be one of {REFIT_CHOICES}, got {self.refit!r}")
        if self.preset not in PRESETS:
            raise ProbeError(f"preset must be one of {PRESETS}, got {self.preset!r}")
        if self.superb_norm not in SUPERB_NORMS:
            raise ProbeError(
                f"superb_norm must be one of {SUPERB_NORMS}, got {self.superb_norm!r}"
            )
        if not 0.0 < self.val_fraction < 1.0:
            raise ProbeError(f"val_fraction must lie in (0, 1), got {self.val_fraction}")
        if self.n_boot < 0:
            raise ProbeError(f"n_boot must be >= 0, got {self.n_boot}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["c_grid"] = list(self.c_grid)
        d["alpha_grid"] = list(self.alpha_grid)
        d["seeds"] = list(self.seeds)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ProbeOptions:
        """Build from a mapping (a TOML table or a protocol JSON); unknown keys are errors."""
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ProbeError(f"unknown probe settings {unknown}; known: {sorted(known)}")
        kw = dict(d)
        if "c_grid" in kw:
            kw["c_grid"] = tuple(float(c) for c in kw["c_grid"])
        if "alpha_grid" in kw:
            kw["alpha_grid"] = tuple(float(a) for a in kw["alpha_grid"])
        if "seeds" in kw:
            kw["seeds"] = seeds_from(kw["seeds"])
        if "solver" in kw and isinstance(kw["solver"], Mapping):
            skeys = set(SolverOptions.__dataclass_fields__)
            bad = sorted(set(kw["solver"]) - skeys)
            if bad:
                raise ProbeError(f"unknown solver settings {bad}; known: {sorted(skeys)}")
            kw["solver"] = SolverOptions(**kw["solver"])
        return cls(**kw)

    def with_(self, **changes: Any) -> ProbeOptions:
        return replace(self, **changes)


def seeds_from(value: int | Sequence[int]) -> tuple[int, ...]:
    """A seed count N means seeds 0..N-1; a list is taken as given."""
    if isinstance(value, int):
        if value < 1:
            raise ProbeError(f"--seeds must be at least 1, got {value}")
        return tuple(range(value))
    return tuple(int(s) for s in value)
