"""Shared pieces of the max-margin references: tolerances, :class:`MaxMarginSolution`, input checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import Tensor

from ...data import Dataset
from ...errors import InvalidDataError, ReferenceSolverError

#: A constraint is reported active (in ``support``) when ⟨z_i, w⟩ − 1 ≤ ACTIVE_TOL.
ACTIVE_TOL = 1e-9
#: Largest relative KKT residual accepted; above it a solver raises :class:`ReferenceSolverError`.
KKT_TOL = 1e-8


@dataclass
class MaxMarginSolution:
    """Solution of the max-margin problem min ‖w‖ s.t. Z w ≥ 1 in one norm.

    Attributes:
        w: minimiser, shape `(d,)`, float64, in the units of the input ``Z`` (feasible: Z w ≥ 1).
        margin: min_i ⟨z_i, w⟩ / ‖w‖ in the problem's norm; equals 1/‖w‖, the maximal normalized margin.
        norm: ``"l2"``, ``"l1"``, ``"linf"`` or ``"lp"``.
        p: the exponent (2, 1, ``inf`` or p).
        dual: Lagrange multipliers λ ≥ 0, shape `(n,)`, with the convention of each solver:
            ℓ2: SVM dual α with w = Σ α_i z_i and Σ α_i = ‖w‖₂²; ℓp: multipliers of
            min (1/p)‖w‖_p^p, so sign(w)|w|^{p−1} = Σ λ_i z_i (p = 2 gives α); ℓ1 / ℓ∞: multipliers of
            min ‖w‖₁ (resp. ‖w‖∞), so Σ λ_i z_i ∈ ∂‖w‖ and Σ λ_i = ‖w‖.
        support: indices of the active constraints, ⟨z_i, w⟩ − 1 ≤ :data:`ACTIVE_TOL`.
        status: ``"optimal"`` (all solvers raise rather than return a failure).
        message: what was solved and how (solver message, polishing, uniqueness test).
        unique: whether w is the unique minimiser (``True`` for ℓ2 and ℓp by strict convexity; for the
            LPs the result of the uniqueness test, ``None`` if it was skipped).
        kkt: relative KKT residuals (``primal``, ``dual``, ``stationarity``, ``complementarity``).
    """

    w: np.ndarray
    margin: float
    norm: str
    p: float
    dual: np.ndarray | None
    support: np.ndarray
    status: str
    message: str
    unique: bool | None
    kkt: dict = field(default_factory=dict)

    @property
    def direction(self) -> np.ndarray:
        """The ℓ2-normalized direction w/‖w‖₂, shape `(d,)` (what mirror-flow iterates are compared to)."""
        return self.w / np.linalg.norm(self.w)

    @property
    def norm_value(self) -> float:
        """‖w‖ in the problem's norm (= 1/margin at the optimum)."""
        return float(np.linalg.norm(self.w, ord=self.p))

    def __repr__(self) -> str:
        return (
            f"MaxMarginSolution(norm={self.norm!r}, p={self.p}, margin={self.margin:.6g}, d={self.w.size}, "
            f"support={self.support.size}, unique={self.unique}, "
            f"kkt_max={max(self.kkt.values(), default=float('nan')):.1e})"
        )


def _as_Z(Z: Any, fn: str) -> np.ndarray:
    """Return the `(n, d)` float64 matrix of z_i = y_i x_i from a Dataset, tensor or array."""
    if isinstance(Z, Dataset):
        Za = Z.Z.detach().cpu().numpy()
    elif isinstance(Z, Tensor):
        Za = Z.detach().cpu().numpy()
    else:
        try:
            Za = np.asarray(Z)
        except (ValueError, TypeError) as err:
            raise InvalidDataError(f"{fn}: could not convert Z to an array ({err}); pass an (n, d) array.") from err
    try:
        Za = np.array(Za, dtype=np.float64)
    except (ValueError, TypeError) as err:
        raise InvalidDataError(f"{fn}: Z must be numeric; got dtype {Za.dtype} ({err}).") from err
    if Za.ndim != 2 or Za.shape[0] < 1 or Za.shape[1] < 1:
        raise InvalidDataError(
            f"{fn}: Z must have shape (n, d) with n, d ≥ 1 (rows z_i = y_i x_i); got shape {Za.shape}. "
            "Pass a flowsim Dataset or dataset.Z."
        )
    if not np.isfinite(Za).all():
        r = int(np.flatnonzero(~np.isfinite(Za).all(axis=1))[0])
        raise InvalidDataError(f"{fn}: Z has NaN/inf entries (first in row {r}); clean the data first.")
    return Za


def _check_nonzero_rows(Z: np.ndarray, fn: str) -> float:
    norms = np.linalg.norm(Z, axis=1)
    zero = np.flatnonzero(norms == 0)
    if zero.size:
        raise ReferenceSolverError(
            f"{fn}: the max-margin problem is infeasible: z_i = 0 for {zero.size} sample(s) (first i = "
            f"{int(zero[0])}), and ⟨0, w⟩ ≥ 1 has no solution; remove all-zero inputs x_i."
        )
    return float(norms.max())


def _not_separable(fn: str, detail: str = "") -> ReferenceSolverError:
    return ReferenceSolverError(
        f"{fn}: the data are not linearly separable through the origin (no w with y_i⟨x_i, w⟩ ≥ 1 for "
        f"all i, up to a relative tolerance ~1e-10), so the max-margin problem is infeasible{detail}. "
        "Check the labels, remove contradicting points, or use a nonlinear model; "
        "flowsim.data.is_linearly_separable tests this."
    )


def _margin_and_support(Z: np.ndarray, w: np.ndarray, p: float) -> tuple[float, np.ndarray]:
    q = Z @ w
    nrm = float(np.linalg.norm(w, ord=p))
    return float(q.min() / nrm), np.flatnonzero(q - 1.0 <= ACTIVE_TOL)


def _kkt_fail(fn: str, kkt: dict, hint: str) -> ReferenceSolverError:
    worst = max(kkt, key=kkt.get)
    res = ", ".join(f"{k}={v:.1e}" for k, v in kkt.items())
    return ReferenceSolverError(
        f"{fn}: the solution does not satisfy the KKT conditions to the required relative tolerance "
        f"{KKT_TOL:g} (worst: {worst}; residuals {res}). {hint}"
    )
