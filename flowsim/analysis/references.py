"""Independent max-margin reference solutions for linear models.

For label-signed data z_i = y_i x_i (the rows of ``Z``, shape `(n, d)`) and a norm ‖·‖, the max-margin
problem is

    min ‖w‖   subject to   ⟨z_i, w⟩ ≥ 1 for all i,                                  (P)

whose solution ŵ gives the maximal normalized margin γ = max_{‖w‖=1} min_i ⟨z_i, w⟩ = 1/‖ŵ‖. Mirror
flow on a linear model with exponential-type loss converges in direction to the solution of (P) for the
potential's horizon norm: ℓ2 for gradient flow (Soudry et al.), ℓp for p-power potentials and ℓ1 for
hyperbolic entropy (Gunasekar et al.; Pesme et al.). These solvers are the references those limits are
checked against; they share no code with the flow.

* :func:`svm_l2` – ℓ2 hard-margin SVM without bias, via the Lawson–Hanson least-distance program (an
  active-set NNLS on the SVM dual), polished on the support set by a linear solve.
* :func:`max_margin_l1`, :func:`max_margin_linf` – linear programs (scipy HiGHS), polished on the active
  set, with a uniqueness check.
* :func:`max_margin_lp` – 1 < p < ∞ with SLSQP from the ℓ2 solution, polished by Newton on the KKT system.
* :func:`max_margin` – dispatcher on ``"l2"``, ``"l1"``, ``"linf"``, or a number p.

Every solver checks its own status and the KKT conditions of its result, and raises
:class:`~flowsim.errors.ReferenceSolverError` (with the solver's message and a hint) rather than
returning an inaccurate point. All solves run on data rescaled to max_i ‖z_i‖ ~ 1 and are mapped back,
so the reported KKT residuals are relative and scale-free.

Never use ``sklearn.svm.LinearSVC`` as a reference: it solves a finite-C squared-hinge problem with a
bias, not (P).

References:
    Soudry, Hoffer, Nacson, Gunasekar & Srebro, "The Implicit Bias of Gradient Descent on Separable
    Data", JMLR 19(70), 2018 (arXiv 1710.10345).
    Gunasekar, Lee, Soudry & Srebro, "Characterizing Implicit Bias in Terms of Optimization Geometry",
    ICML 2018 (arXiv 1802.08246).
    Pesme, Dragomir & Flammarion, "Implicit Bias of Mirror Flow on Separable Data", NeurIPS 2024
    (arXiv 2406.12763).
    Lawson & Hanson, "Solving Least Squares Problems", SIAM 1995, ch. 23 (least distance programming).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import linprog, lsq_linear, minimize, nnls
from torch import Tensor

from ..data import Dataset, is_linearly_separable
from ..errors import InvalidDataError, InvalidParameterError, ReferenceSolverError

__all__ = [
    "MaxMarginSolution",
    "svm_l2",
    "max_margin_l1",
    "max_margin_linf",
    "max_margin_lp",
    "max_margin",
    "KKTResidual",
    "kkt_residual",
    "ACTIVE_TOL",
    "KKT_TOL",
]

#: A constraint is reported active (in ``support``) when ⟨z_i, w⟩ − 1 ≤ ACTIVE_TOL.
ACTIVE_TOL = 1e-9
#: Largest relative KKT residual accepted; above it a solver raises :class:`ReferenceSolverError`.
KKT_TOL = 1e-8
#: HiGHS feasibility tolerances (its defaults are 1e-7; polishing then brings residuals to ~1e-15).
_HIGHS_OPTIONS = {"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10}


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


# ----------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------


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
            raise InvalidDataError(
                f"{fn}: could not convert Z to an array ({err}); pass an (n, d) array."
            ) from err
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


# ----------------------------------------------------------------------------------------------------------
# l2: hard-margin SVM without bias
# ----------------------------------------------------------------------------------------------------------


def _kkt_l2(Z: np.ndarray, w: np.ndarray, alpha: np.ndarray) -> dict:
    q = Z @ w - 1.0
    amax = max(float(alpha.max()), 1e-300)
    return {
        "primal": float(max(0.0, -q.min())),
        "dual": float(max(0.0, -alpha.min()) / amax),
        "stationarity": float(np.abs(w - Z.T @ alpha).max() / max(np.abs(w).max(), 1e-300)),
        "complementarity": float(np.abs(alpha * q).max() / amax),
    }


def _refine_l2(Zs: np.ndarray, S: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Solve the KKT system of the ℓ2 SVM on a support guess S, adjusting S by single swaps.

    On the right support the SVM solution is the minimum-norm solution of Z_S w = 1 (it lies in the row
    space of Z_S), and α_S ≥ 0 solves Z_Sᵀ α_S = w. Returns ``(w, alpha)`` or ``None`` if no consistent
    support was found in a few swaps.
    """
    n = Zs.shape[0]
    S = list(S)
    for _ in range(2 * n + 10):
        if not S:
            return None
        ZS = Zs[S]
        w = np.linalg.lstsq(ZS, np.ones(len(S)), rcond=None)[0]
        aS = np.linalg.lstsq(ZS.T, w, rcond=None)[0]
        if aS.min() < 0:
            aN, rn = nnls(ZS.T, w, maxiter=10 * len(S) + 50)
            if rn <= 1e-12 * np.linalg.norm(w):
                aS = aN
            else:  # a non-support constraint was forced to equality: drop the most negative multiplier
                S.pop(int(np.argmin(aS)))
                continue
        viol = 1.0 - Zs @ w
        j = int(np.argmax(viol))
        if viol[j] > 1e-13:
            S.append(j)
            continue
        alpha = np.zeros(n)
        alpha[S] = aS
        return w, alpha
    return None


def svm_l2(Z: Any, *, polish: bool = True) -> MaxMarginSolution:
    """ℓ2 hard-margin SVM without bias: min ½‖w‖₂² s.t. ⟨z_i, w⟩ ≥ 1.

    Its dual is max_{α ≥ 0} Σ α_i − ½ αᵀKα with K = Z Zᵀ, and w = Σ α_i z_i. It is solved as a least
    distance program (Lawson & Hanson, ch. 23): the NNLS problem min_{u ≥ 0} ‖E u − e_{d+1}‖ with
    E = [Zᵀ; 1ᵀ] (an active-set method on the dual, finite and exact up to rounding) gives the residual
    r = E u − e_{d+1}; then w = −r_{1:d}/r_{d+1}, α = u/(1 − Σ u), and r = 0 (Σ u = 1) certifies
    infeasibility (Farkas). The result is then *polished*: on the support S = {α_i > 0} the KKT system
    Z_S w = 1, w = Z_Sᵀ α_S, α_S ≥ 0 is solved by least squares (support adjusted by single swaps if a
    multiplier turns negative or a constraint is violated) and kept if its KKT residuals are smaller;
    residuals are typically ~1e-15.

    Args:
        Z: label-signed data z_i = y_i x_i, shape `(n, d)`, or a :class:`~flowsim.data.Dataset`.
        polish: refine on the support set (default True).

    Returns:
        :class:`MaxMarginSolution` with ``norm="l2"``, ``p=2``, ``dual`` = α `(n,)`, ``unique=True``
        (w is unique by strict convexity; α is unique when the support vectors are linearly
        independent).

    Raises:
        InvalidDataError: if ``Z`` is not a finite `(n, d)` array.
        ReferenceSolverError: if the data are not separable through the origin (including an all-zero
            z_i), NNLS does not converge, or the KKT residuals exceed :data:`KKT_TOL` (measured: margins
            down to ~1e-7 · max_i ‖z_i‖ are resolved, with residuals growing like 1e-16/margin).

    References:
        Soudry et al., "The Implicit Bias of Gradient Descent on Separable Data", JMLR 2018.
        Lawson & Hanson, "Solving Least Squares Problems", SIAM 1995.

    Example:
        >>> import numpy as np
        >>> sol = svm_l2(np.array([[1.0, 0.0], [0.0, 2.0]]))
        >>> np.round(sol.w, 12).tolist(), np.round(sol.dual, 12).tolist()
        ([1.0, 0.5], [1.0, 0.25])
    """
    fn = "svm_l2"
    Z = _as_Z(Z, fn)
    n, d = Z.shape
    s = _check_nonzero_rows(Z, fn)
    Zs = Z / s
    E = np.vstack([Zs.T, np.ones((1, n))])
    f = np.zeros(d + 1)
    f[d] = 1.0
    try:
        u, _ = nnls(E, f, maxiter=50 * (n + d) + 100)
    except RuntimeError as err:
        raise ReferenceSolverError(
            f"{fn}: NNLS (Lawson–Hanson) did not converge: {err}. The data may be nearly degenerate; try "
            "max_margin_lp(Z, 2) (SLSQP) or remove duplicate points."
        ) from err
    denom = 1.0 - float(u.sum())
    if denom > 1e-13:
        alpha = u / denom
        w = Zs.T @ alpha
        kkt = _kkt_l2(Zs, w, alpha)
        how = "LDP/NNLS (Lawson–Hanson)"
        if polish:
            refined = _refine_l2(Zs, np.flatnonzero(alpha > 0))
            if refined is not None:
                kkt_r = _kkt_l2(Zs, *refined)
                if max(kkt_r.values()) <= max(kkt.values()):
                    w, alpha = refined
                    kkt = kkt_r
                    how += ", polished on the support set"
    else:
        # Σu ≈ 1: either a Farkas certificate (not separable) or a margin γ so small that
        # 1 − Σu ~ γ² underflows; the NNLS support is still informative, so solve the KKT system on it.
        if not is_linearly_separable(Zs):
            raise _not_separable(fn, " (Farkas certificate from NNLS: Σ u_i z_i ≈ 0 with Σ u_i = 1)")
        refined = _refine_l2(Zs, np.flatnonzero(u > 0))
        if refined is None:
            raise ReferenceSolverError(
                f"{fn}: the margin is too small to resolve in float64 (1 − Σu = {denom:.1e}, margin ≲ "
                f"{math.sqrt(max(denom, 0.0)):.1e} · max‖z_i‖) and the support-set solve failed; rescale "
                "or clean the data."
            )
        w, alpha = refined
        kkt = _kkt_l2(Zs, w, alpha)
        how = "support from LDP/NNLS (1 − Σu underflowed), KKT system solved on the support set"
    if max(kkt.values()) > KKT_TOL:
        raise _kkt_fail(fn, kkt, "The data may be nearly non-separable or degenerate; check the margin.")
    w_out = w / s
    margin, support = _margin_and_support(Z, w_out, 2)
    return MaxMarginSolution(
        w=w_out,
        margin=margin,
        norm="l2",
        p=2.0,
        dual=alpha / s**2,
        support=support,
        status="optimal",
        message=f"{how}; max relative KKT residual {max(kkt.values()):.1e}",
        unique=True,
        kkt=kkt,
    )


# ----------------------------------------------------------------------------------------------------------
# Linear programs (l1, linf)
# ----------------------------------------------------------------------------------------------------------


@dataclass
class _LP:
    """min cᵀx s.t. A x ≤ b, lb ≤ x ≤ ub, with a map from x to w (rows of ``W``: w = W x)."""

    c: np.ndarray
    A: np.ndarray
    b: np.ndarray
    lb: np.ndarray
    ub: np.ndarray
    W: np.ndarray

    @property
    def bounds(self) -> list[tuple[float | None, float | None]]:
        return [
            (None if not np.isfinite(lo) else float(lo), None if not np.isfinite(hi) else float(hi))
            for lo, hi in zip(self.lb, self.ub, strict=True)
        ]

    def violation(self, x: np.ndarray) -> float:
        v = max(float((self.A @ x - self.b).max(initial=0.0)), 0.0)
        v = max(v, float(np.nan_to_num(self.lb - x, nan=0.0, neginf=0.0).max(initial=0.0)))
        return max(v, float(np.nan_to_num(x - self.ub, nan=0.0, neginf=0.0).max(initial=0.0)))

    def active(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows = np.flatnonzero(self.b - self.A @ x <= ACTIVE_TOL)
        at_lb = np.flatnonzero(np.isfinite(self.lb) & (x - self.lb <= ACTIVE_TOL))
        at_ub = np.flatnonzero(np.isfinite(self.ub) & (self.ub - x <= ACTIVE_TOL))
        return rows, at_lb, at_ub

    def kkt(self, x: np.ndarray, y: np.ndarray, nl: np.ndarray, nu: np.ndarray) -> dict:
        """Relative KKT residuals; stationarity c + Aᵀy − ν_l + ν_u = 0 with y, ν ≥ 0."""
        cs = max(float(np.abs(self.c).max()), 1e-300)
        ys = max(
            float(np.abs(y).max(initial=0.0)),
            float(np.abs(nl).max(initial=0.0)),
            float(np.abs(nu).max(initial=0.0)),
            1e-300,
        )
        slack = self.b - self.A @ x
        gap_l = np.where(np.isfinite(self.lb), x - self.lb, 0.0)
        gap_u = np.where(np.isfinite(self.ub), self.ub - x, 0.0)
        comp = max(
            float(np.abs(y * slack).max(initial=0.0)),
            float(np.abs(nl * gap_l).max(initial=0.0)),
            float(np.abs(nu * gap_u).max(initial=0.0)),
        )
        return {
            "primal": self.violation(x),
            "dual": float(max(0.0, -min(y.min(initial=0.0), nl.min(initial=0.0), nu.min(initial=0.0)))) / ys,
            "stationarity": float(np.abs(self.c + self.A.T @ y - nl + nu).max()) / cs,
            "complementarity": comp / ys,
        }


def _solve_lp(lp: _LP, fn: str, extra: tuple[np.ndarray, float] | None = None):
    A, b = lp.A, lp.b
    if extra is not None:
        A = np.vstack([A, extra[0][None, :]])
        b = np.append(b, extra[1])
    return linprog(lp.c, A_ub=A, b_ub=b, bounds=lp.bounds, method="highs", options=_HIGHS_OPTIONS)


def _lp_duals_from_highs(lp: _LP, res) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # scipy's marginals are ∂(objective)/∂(right-hand side): y = −ineqlin, ν_l = lower, ν_u = −upper.
    y = -np.asarray(res.ineqlin.marginals, dtype=np.float64)
    nl = np.asarray(res.lower.marginals, dtype=np.float64)
    nu = -np.asarray(res.upper.marginals, dtype=np.float64)
    return y, nl, nu


def _polish_lp(lp: _LP, x: np.ndarray) -> tuple[np.ndarray, tuple, np.ndarray]:
    """Project x onto its active set (minimal correction), then recompute multipliers by NNLS.

    Returns ``(x, (y, ν_l, ν_u), M)`` where ``M`` is the active-constraint matrix at x.
    """
    rows, at_lb, at_ub = lp.active(x)
    nv = x.size
    eye = np.eye(nv)
    M = np.vstack([lp.A[rows], eye[at_lb], eye[at_ub]])
    rhs = np.concatenate([lp.b[rows], lp.lb[at_lb], lp.ub[at_ub]])
    x_new = x
    if M.shape[0]:
        x_try = x + np.linalg.lstsq(M, rhs - M @ x, rcond=None)[0]
        obj, obj_try = float(lp.c @ x), float(lp.c @ x_try)
        if lp.violation(x_try) <= max(lp.violation(x), 1e-15) and obj_try <= obj + 1e-12 * max(abs(obj), 1.0):
            x_new = x_try
    rows, at_lb, at_ub = lp.active(x_new)
    # stationarity: c + A_Rᵀ y_R − ν_L + ν_U = 0, all ≥ 0   <=>   [−A_Rᵀ, I_L, −I_U] v = c, v ≥ 0
    K = np.hstack([-lp.A[rows].T, eye[:, at_lb], -eye[:, at_ub]])
    y = np.zeros(lp.A.shape[0])
    nl = np.zeros(nv)
    nu = np.zeros(nv)
    if K.shape[1]:
        try:
            v, _ = nnls(K, lp.c, maxiter=50 * K.shape[1] + 100)
        except RuntimeError:
            v = None
        if v is not None:
            k1, k2 = rows.size, rows.size + at_lb.size
            y[rows], nl[at_lb], nu[at_ub] = v[:k1], v[k1:k2], v[k2:]
    M = np.vstack([lp.A[rows], eye[at_lb], eye[at_ub]])
    return x_new, (y, nl, nu), M


def _lp_unique(lp: _LP, x: np.ndarray, duals: tuple, M: np.ndarray, fn: str, check: bool) -> tuple:
    """Decide whether w = W x is the unique LP solution; returns ``(unique, how)``.

    1. Sufficient test: if the active constraints have full rank and all their multipliers are positive
       (strict complementarity), the optimal face {x feasible : those constraints tight} is a point.
    2. Otherwise, if ``check``: minimise and maximise each coordinate w_j over the (slightly relaxed)
       optimal face cᵀx ≤ opt + 1e-9·|opt| (2d extra LPs); w is declared unique if every range is
       ≤ 1e-6 · ‖w‖∞.
    """
    y, nl, nu = duals
    rows, at_lb, at_ub = lp.active(x)
    mult = np.concatenate([y[rows], nl[at_lb], nu[at_ub]])
    scale = max(float(np.abs(mult).max(initial=0.0)), 1e-300)
    if M.shape[0] and np.linalg.matrix_rank(M) == x.size and (mult > 1e-9 * scale).all():
        return True, "unique: nondegenerate vertex (full-rank active set, strict complementarity)"
    if not check:
        return None, "uniqueness not checked (degenerate vertex; pass check_unique=True)"
    obj = float(lp.c @ x)
    extra = (lp.c, obj + 1e-9 * max(abs(obj), 1.0))
    w = lp.W @ x
    tol = 1e-6 * max(float(np.abs(w).max()), 1e-300)
    for j in range(lp.W.shape[0]):
        vals = []
        for sgn in (1.0, -1.0):
            lp_j = _LP(sgn * lp.W[j], lp.A, lp.b, lp.lb, lp.ub, lp.W)
            res = _solve_lp(lp_j, fn, extra)
            if res.status != 0:
                return None, f"uniqueness LP for coordinate {j} failed ({res.message})"
            vals.append(float(lp.W[j] @ res.x))
        if vals[1] - vals[0] > tol:
            return False, (
                f"NOT unique: coordinate w_{j} ranges over [{vals[0]:.6g}, {vals[1]:.6g}] on the optimal face"
            )
    return True, f"unique: every coordinate pinned on the optimal face ({2 * lp.W.shape[0]} LPs)"


def _solve_norm_lp(
    lp: _LP, n: int, fn: str, check_unique: bool
) -> tuple[np.ndarray, np.ndarray, dict, str, Any]:
    res = _solve_lp(lp, fn)
    if res.status == 2:
        raise _not_separable(fn, f" (HiGHS: {res.message})")
    if res.status != 0 or res.x is None:
        raise ReferenceSolverError(
            f"{fn}: HiGHS ended with status {res.status}: {res.message}. The data may be badly scaled or "
            "nearly non-separable; normalize X (max_i ‖x_i‖ = 1) and check is_linearly_separable."
        )
    x0 = np.asarray(res.x, dtype=np.float64)
    duals0 = _lp_duals_from_highs(lp, res)
    kkt0 = lp.kkt(x0, *duals0)
    x1, duals1, M = _polish_lp(lp, x0)
    kkt1 = lp.kkt(x1, *duals1)
    if max(kkt1.values()) <= max(kkt0.values()):
        x, duals, kkt, how = x1, duals1, kkt1, "HiGHS, polished on the active set"
    else:
        x, duals, kkt, how = x0, duals0, kkt0, "HiGHS"
        rows, at_lb, at_ub = lp.active(x)
        M = np.vstack([lp.A[rows], np.eye(x.size)[at_lb], np.eye(x.size)[at_ub]])
    if max(kkt.values()) > KKT_TOL:
        raise _kkt_fail(fn, kkt, f"HiGHS said: {res.message}. Normalize the data or check separability.")
    unique, uhow = _lp_unique(lp, x, duals, M, fn, check_unique)
    return (
        lp.W @ x,
        duals[0][:n],
        kkt,
        f"{how}; {uhow}; max relative KKT residual {max(kkt.values()):.1e}",
        unique,
    )


def max_margin_l1(Z: Any, *, check_unique: bool = True) -> MaxMarginSolution:
    """ℓ1 max-margin: min ‖w‖₁ s.t. ⟨z_i, w⟩ ≥ 1, as a linear program.

    With w = u − v, u, v ≥ 0: min Σ_j (u_j + v_j) s.t. Z(u − v) ≥ 1, solved by HiGHS
    (``scipy.optimize.linprog(method="highs")``, feasibility tolerances 1e-10). The vertex is polished
    by a least-squares projection onto its active constraints and the multipliers recomputed by NNLS on
    the stationarity equations; KKT residuals are checked. This is the limit direction of mirror flow
    with the hyperbolic-entropy potential (and of shallow diagonal networks at small initialization).

    Uniqueness (``unique``) — ℓ1 solutions need not be unique: a nondegenerate vertex (full-rank active
    set with all multipliers positive) is certified unique at no cost; otherwise, with
    ``check_unique=True``, each coordinate w_j is minimised and maximised over the optimal face
    {‖w‖₁ ≤ opt(1 + 1e-9), Zw ≥ 1} (2d small LPs) and w is unique iff every range is ≤ 1e-6‖w‖∞.

    Args:
        Z: label-signed data z_i = y_i x_i, shape `(n, d)`, or a :class:`~flowsim.data.Dataset`.
        check_unique: run the per-coordinate uniqueness LPs when the cheap test is inconclusive.

    Returns:
        :class:`MaxMarginSolution` with ``norm="l1"``, ``p=1``; ``dual`` λ `(n,)` with Σλ_i z_i ∈ ∂‖w‖₁
        (so ‖Zᵀλ‖∞ ≤ 1) and Σλ_i = ‖w‖₁.

    Raises:
        InvalidDataError: if ``Z`` is not a finite `(n, d)` array.
        ReferenceSolverError: if the data are not separable through the origin, HiGHS fails, or the
            KKT residuals exceed :data:`KKT_TOL`.

    References:
        Gunasekar et al., "Characterizing Implicit Bias in Terms of Optimization Geometry", ICML 2018.
        Pesme, Dragomir & Flammarion, "Implicit Bias of Mirror Flow on Separable Data", NeurIPS 2024.
    """
    fn = "max_margin_l1"
    Z = _as_Z(Z, fn)
    n, d = Z.shape
    s = _check_nonzero_rows(Z, fn)
    Zs = Z / s
    eye = np.eye(d)
    lp = _LP(
        c=np.ones(2 * d),
        A=np.hstack([-Zs, Zs]),
        b=-np.ones(n),
        lb=np.zeros(2 * d),
        ub=np.full(2 * d, np.inf),
        W=np.hstack([eye, -eye]),
    )
    ws, lam, kkt, message, unique = _solve_norm_lp(lp, n, fn, check_unique)
    w = ws / s
    margin, support = _margin_and_support(Z, w, 1)
    return MaxMarginSolution(w, margin, "l1", 1.0, lam / s, support, "optimal", message, unique, kkt)


def max_margin_linf(Z: Any, *, check_unique: bool = True) -> MaxMarginSolution:
    """ℓ∞ max-margin: min ‖w‖∞ s.t. ⟨z_i, w⟩ ≥ 1, as a linear program.

    Variables (w, t): min t s.t. Z w ≥ 1, −t ≤ w_j ≤ t, solved by HiGHS, polished and KKT-checked as in
    :func:`max_margin_l1`. ℓ∞ solutions are often not unique (coordinates below ‖w‖∞ can move); the
    uniqueness test is the one of :func:`max_margin_l1`. This is the horizon of p-power potentials as
    p → ∞ (and the limit of sign-gradient / Adam-like dynamics).

    Args:
        Z: label-signed data z_i = y_i x_i, shape `(n, d)`, or a :class:`~flowsim.data.Dataset`.
        check_unique: run the per-coordinate uniqueness LPs when the cheap test is inconclusive.

    Returns:
        :class:`MaxMarginSolution` with ``norm="linf"``, ``p=inf``; ``dual`` λ `(n,)` with
        Σλ_i z_i ∈ ∂‖w‖∞ (so ‖Zᵀλ‖₁ ≤ 1) and Σλ_i = ‖w‖∞.

    Raises:
        InvalidDataError: if ``Z`` is not a finite `(n, d)` array.
        ReferenceSolverError: if the data are not separable through the origin, HiGHS fails, or the
            KKT residuals exceed :data:`KKT_TOL`.

    References:
        Gunasekar et al., "Characterizing Implicit Bias in Terms of Optimization Geometry", ICML 2018.
    """
    fn = "max_margin_linf"
    Z = _as_Z(Z, fn)
    n, d = Z.shape
    s = _check_nonzero_rows(Z, fn)
    Zs = Z / s
    eye = np.eye(d)
    one = np.ones((d, 1))
    lp = _LP(
        c=np.append(np.zeros(d), 1.0),
        A=np.vstack([np.hstack([-Zs, np.zeros((n, 1))]), np.hstack([eye, -one]), np.hstack([-eye, -one])]),
        b=np.concatenate([-np.ones(n), np.zeros(2 * d)]),
        lb=np.append(np.full(d, -np.inf), 0.0),
        ub=np.full(d + 1, np.inf),
        W=np.hstack([eye, np.zeros((d, 1))]),
    )
    ws, lam, kkt, message, unique = _solve_norm_lp(lp, n, fn, check_unique)
    w = ws / s
    margin, support = _margin_and_support(Z, w, math.inf)
    return MaxMarginSolution(w, margin, "linf", math.inf, lam / s, support, "optimal", message, unique, kkt)


# ----------------------------------------------------------------------------------------------------------
# lp, 1 < p < inf
# ----------------------------------------------------------------------------------------------------------


def _grad_pp(v: np.ndarray, p: float) -> np.ndarray:
    """∇ (1/p)‖v‖_p^p = sign(v)|v|^{p−1}."""
    return np.sign(v) * np.abs(v) ** (p - 1.0)


def _kkt_lp(Z: np.ndarray, v: np.ndarray, lam: np.ndarray, p: float) -> dict:
    g = _grad_pp(v, p)
    q = Z @ v - 1.0
    lmax = max(float(np.abs(lam).max()), 1e-300)
    return {
        "primal": float(max(0.0, -q.min())),
        "dual": float(max(0.0, -lam.min()) / lmax),
        "stationarity": float(np.abs(g - Z.T @ lam).max() / max(np.abs(g).max(), 1e-300)),
        "complementarity": float(np.abs(lam * q).max() / lmax),
    }


def _newton_kkt_lp(Z: np.ndarray, v: np.ndarray, S: np.ndarray, lamS: np.ndarray, p: float):
    """Newton on the KKT system sign(v)|v|^{p−1} − Z_Sᵀλ = 0, Z_S v = 1 (backtracking on ‖F‖∞)."""
    ZS = Z[S]
    d, k = v.size, S.size

    def F(v_, l_):
        return np.concatenate([_grad_pp(v_, p) - ZS.T @ l_, ZS @ v_ - 1.0])

    f = F(v, lamS)
    n_it = 0
    for n_it in range(1, 31):  # noqa: B007
        fn_ = float(np.abs(f).max())
        if fn_ < 1e-15:
            break
        h = (p - 1.0) * np.maximum(np.abs(v), 1e-150) ** (p - 2.0)
        J = np.block([[np.diag(h), -ZS.T], [ZS, np.zeros((k, k))]])
        step = np.linalg.lstsq(J, -f, rcond=None)[0]
        t = 1.0
        while t > 1e-6:
            v_t, l_t = v + t * step[:d], lamS + t * step[d:]
            f_t = F(v_t, l_t)
            if float(np.abs(f_t).max()) < (1.0 - 1e-4 * t) * fn_:
                break
            t *= 0.5
        else:
            break
        v, lamS, f = v_t, l_t, f_t
    return v, lamS, n_it


def _newton_dual_lp(Z: np.ndarray, S: np.ndarray, lamS: np.ndarray, p: float):
    """Newton on the dual KKT system for 1 < p < 2: Z_S h(Z_Sᵀλ) = 1 with w = h(g) = sign(g)|g|^{1/(p−1)}.

    For p < 2 the primal gradient sign(w)|w|^{p−1} has an unbounded derivative at w_j = 0 (coordinates
    that should vanish, e.g. constant-zero pixels, are returned by SLSQP as ~1e-12 with gradient ~1e-6),
    while h is C¹ with h'(g) = |g|^{1/(p−1)−1}/(p−1) bounded; so Newton runs on λ_S and w follows.
    Returns ``(w, lamS, iterations)``.
    """
    ZS = Z[S]
    r = 1.0 / (p - 1.0)

    def h(g):
        return np.sign(g) * np.abs(g) ** r

    def F(l_):
        return ZS @ h(ZS.T @ l_) - 1.0

    f = F(lamS)
    n_it = 0
    for n_it in range(1, 31):  # noqa: B007
        fn_ = float(np.abs(f).max())
        if fn_ < 1e-15:
            break
        g = ZS.T @ lamS
        J = (ZS * (r * np.abs(g) ** (r - 1.0))) @ ZS.T
        step = np.linalg.lstsq(J, -f, rcond=None)[0]
        t = 1.0
        while t > 1e-6:
            l_t = lamS + t * step
            f_t = F(l_t)
            if float(np.abs(f_t).max()) < (1.0 - 1e-4 * t) * fn_:
                break
            t *= 0.5
        else:
            break
        lamS, f = l_t, f_t
    return h(ZS.T @ lamS), lamS, n_it


def max_margin_lp(Z: Any, p: float, *, polish: bool = True) -> MaxMarginSolution:
    """ℓp max-margin for 1 < p < ∞: min ‖w‖_p s.t. ⟨z_i, w⟩ ≥ 1.

    Solves the equivalent smooth problem min (1/p)‖w‖_p^p s.t. Z w ≥ 1 with SLSQP (analytic gradient
    sign(w)|w|^{p−1} and constraint Jacobian Z, ``ftol=1e-15``), started from the ℓ2 SVM solution rescaled
    to ‖w₀‖_p = 1 (the data are scaled by ‖ŵ_ℓ2‖_p so that the objective is O(1)). Multipliers on the
    near-active set S = {⟨z_i, w⟩ − 1 ≤ 1e-6} come from NNLS on sign(w)|w|^{p−1} = Z_Sᵀλ; then Newton's
    method on the KKT system polishes (w, λ) to ~1e-15 when it lowers the residuals: on (w, λ_S) for
    p ≥ 2, and on λ_S alone with w = sign(g)|g|^{1/(p−1)}, g = Z_Sᵀλ_S, for p < 2 (there the primal
    gradient is not Lipschitz at w_j = 0 and SLSQP alone stalls at relative residuals ~1e-6, e.g. on
    digits with its constant-zero pixels). A non-success SLSQP exit (e.g. "Positive directional
    derivative for linesearch" when started at the optimum, as for p = 2) is accepted only if the final
    KKT residuals are below :data:`KKT_TOL`.

    This is the direction that mirror flow with a p-power potential (φ(x) = |x|^p/p or its non-homogeneous
    variants) converges to on linear models. Measured on digits 0 vs 1 (d = 64): p from 1.05 to 20 solve
    to KKT residuals ≤ 1e-12, while p = 1.01 and p ≥ 30 raise; nearer 1 use :func:`max_margin_l1`, for
    large p :func:`max_margin_linf`.

    Args:
        Z: label-signed data z_i = y_i x_i, shape `(n, d)`, or a :class:`~flowsim.data.Dataset`.
        p: exponent, 1 < p < ∞.
        polish: Newton-polish the KKT system (default True).

    Returns:
        :class:`MaxMarginSolution` with ``norm="lp"`` (``"l2"`` if p = 2), ``dual`` λ `(n,)` such that
        sign(w)|w|^{p−1} = Σλ_i z_i (for p = 2 the SVM α), ``unique=True`` (strictly convex).

    Raises:
        InvalidParameterError: if p is not a number in (1, ∞).
        InvalidDataError: if ``Z`` is not a finite `(n, d)` array.
        ReferenceSolverError: if the data are not separable, or SLSQP fails and the KKT residuals exceed
            :data:`KKT_TOL`.

    References:
        Gunasekar, Lee, Soudry & Srebro, "Characterizing Implicit Bias in Terms of Optimization Geometry",
        ICML 2018 (arXiv 1802.08246).
    """
    fn = "max_margin_lp"
    if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)):
        raise InvalidParameterError(f"{fn}: p must be a number in (1, inf); got {p!r}.")
    p = float(p)
    if math.isnan(p) or p <= 1.0 or math.isinf(p):
        hint = "use max_margin_l1 for p = 1" if p == 1.0 else "use max_margin_linf for p = inf"
        raise InvalidParameterError(f"{fn}: p must satisfy 1 < p < inf; got p = {p}; {hint}.")
    Z = _as_Z(Z, fn)
    n, d = Z.shape
    try:
        sol2 = svm_l2(Z)
    except ReferenceSolverError as err:
        raise ReferenceSolverError(f"{fn}: the ℓ2 starting point failed: {err}") from err
    c = float(np.linalg.norm(sol2.w, ord=p))
    Zs = c * Z
    v0 = sol2.w / c

    def fun(v):
        return float(np.sum(np.abs(v) ** p)) / p

    def jac(v):
        return _grad_pp(v, p)

    cons = {"type": "ineq", "fun": lambda v: Zs @ v - 1.0, "jac": lambda v: Zs}
    res = minimize(
        fun, v0, jac=jac, method="SLSQP", constraints=[cons], options={"ftol": 1e-15, "maxiter": 2000}
    )
    v = np.asarray(res.x, dtype=np.float64)
    if not np.isfinite(v).all():
        raise ReferenceSolverError(
            f"{fn}: SLSQP returned non-finite values ({res.message}); try a p closer to 2 or normalize X."
        )

    def multipliers(v_: np.ndarray, S_: np.ndarray) -> np.ndarray:
        lam_ = np.zeros(n)
        if S_.size:
            try:
                lam_[S_] = nnls(Zs[S_].T, _grad_pp(v_, p), maxiter=50 * S_.size + 100)[0]
            except RuntimeError:
                pass
        return lam_

    S = np.flatnonzero(Zs @ v - 1.0 <= 1e-6)
    lam = multipliers(v, S)
    kkt = _kkt_lp(Zs, v, lam, p)
    how = f"SLSQP ({res.message}, {res.nit} iterations)"
    if polish and S.size:
        if p < 2.0:
            v_n, lamS_n, n_it = _newton_dual_lp(Zs, S, lam[S], p)
        else:
            v_n, lamS_n, n_it = _newton_kkt_lp(Zs, v, S, lam[S], p)
        lam_n = np.zeros(n)
        lam_n[S] = lamS_n
        kkt_n = _kkt_lp(Zs, v_n, lam_n, p)
        if max(kkt_n.values()) < max(kkt.values()):
            v, lam, kkt = v_n, lam_n, kkt_n
            how += f", Newton-polished on the active set ({n_it} iterations)"
    if max(kkt.values()) > KKT_TOL:
        raise _kkt_fail(
            fn,
            kkt,
            f"SLSQP said: {res.message} (status {res.status}). Try p closer to 2, normalize X, or use "
            "max_margin_l1 / max_margin_linf for p near 1 / very large p.",
        )
    w = c * v
    margin, support = _margin_and_support(Z, w, p)
    return MaxMarginSolution(
        w=w,
        margin=margin,
        norm="l2" if p == 2.0 else "lp",
        p=p,
        dual=lam * c**p,
        support=support,
        status="optimal",
        message=f"{how}; max relative KKT residual {max(kkt.values()):.1e}",
        unique=True,
        kkt=kkt,
    )


# ----------------------------------------------------------------------------------------------------------
# Dispatcher
# ----------------------------------------------------------------------------------------------------------


def max_margin(Z: Any, norm_or_p: str | float, **kwargs: Any) -> MaxMarginSolution:
    """Max-margin solution in the norm named by ``norm_or_p``.

    Args:
        Z: label-signed data z_i = y_i x_i, shape `(n, d)`, or a :class:`~flowsim.data.Dataset`.
        norm_or_p: ``"l2"``/``2`` → :func:`svm_l2`; ``"l1"``/``1`` → :func:`max_margin_l1`;
            ``"linf"``/``"inf"``/``math.inf`` → :func:`max_margin_linf`; any other p > 1 (number, or a
            string ``"l1.5"``) → :func:`max_margin_lp`.
        **kwargs: passed to the solver (``check_unique`` for the LPs, ``polish`` for ℓ2/ℓp).

    Returns:
        :class:`MaxMarginSolution`.

    Raises:
        InvalidParameterError: on an unknown norm name or p < 1.
        ReferenceSolverError: from the solver.
    """
    p: float
    if isinstance(norm_or_p, str):
        key = norm_or_p.strip().lower().replace("_", "").replace("ℓ", "l")
        if key in ("linf", "inf", "l∞", "max"):
            p = math.inf
        else:
            try:
                p = float(key[1:] if key.startswith("l") else key)
            except ValueError:
                p = math.nan
            if math.isnan(p):
                raise InvalidParameterError(
                    f"unknown norm {norm_or_p!r}; use 'l2', 'l1', 'linf', a string like 'l1.5', or a number "
                    "p ≥ 1."
                ) from None
    elif isinstance(norm_or_p, bool) or not isinstance(norm_or_p, (int, float, np.integer, np.floating)):
        raise InvalidParameterError(f"norm_or_p must be a norm name or a number p ≥ 1; got {norm_or_p!r}.")
    else:
        p = float(norm_or_p)
    if math.isnan(p) or p < 1.0:
        raise InvalidParameterError(
            f"p must be ≥ 1 (a norm); got {norm_or_p!r}. Use 1, 2, a p > 1, or 'linf'."
        )
    if p == 2.0:
        return svm_l2(Z, **kwargs)
    if p == 1.0:
        return max_margin_l1(Z, **kwargs)
    if math.isinf(p):
        return max_margin_linf(Z, **kwargs)
    return max_margin_lp(Z, p, **kwargs)


# ----------------------------------------------------------------------------------------------------------
# KKT residuals of homogeneous networks (Lyu & Li form) and their ℓp / ℓ1 (Q-margin) analogues
# ----------------------------------------------------------------------------------------------------------


@dataclass
class KKTResidual:
    """Approximate-KKT residuals of a point θ for min R(θ) s.t. q_i(θ) ≥ 1 (see :func:`kkt_residual`).

    Attributes:
        stationarity: min over λ ≥ 0 (and g ∈ ∂R for ℓ1) of ‖g(θ̃) − Σ_{i∈S} λ_i ∇q_i(θ̃)‖₂ / ‖g(θ̃)‖₂ at the
            rescaled point θ̃ = θ / q_min^{1/L} (so min_i q_i(θ̃) = 1); scale-free, 0 at a KKT point.
        complementarity: Σ_i λ_i (q_i(θ̃) − 1) / Σ_i λ_i (Lyu & Li's δ, relative).
        dual: multipliers λ, shape `(n,)` (0 off the near-active set).
        active: indices of the near-active set S = {i: q_i(θ̃) ≤ 1 + active_tol}.
        p: exponent of the regularizer R (2: ½‖θ‖₂², Lyu & Li; 1 < p: ‖θ‖_p^p/p; 1: ‖θ‖₁).
        q_min: min_i q_i(θ) of the input point (before rescaling).
        status: ``"optimal"`` (solver failures raise :class:`~flowsim.errors.ReferenceSolverError`).
        message: what was solved.
    """

    stationarity: float
    complementarity: float
    dual: np.ndarray
    active: np.ndarray
    p: float
    q_min: float
    status: str
    message: str


def _margins_and_jacobian(model: Any, theta: Any, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray, int]:
    """Margins q_i(θ) `(n,)` and their Jacobian ∂q_i/∂θ `(n, p)` by autograd (float64)."""
    import torch

    th = torch.as_tensor(np.asarray(theta, dtype=np.float64) if not isinstance(theta, Tensor) else theta)
    th = th.detach().to(torch.float64).clone()
    Xt = torch.as_tensor(X.detach().cpu().numpy() if isinstance(X, Tensor) else np.asarray(X, dtype=np.float64))
    yt = torch.as_tensor(y.detach().cpu().numpy() if isinstance(y, Tensor) else np.asarray(y, dtype=np.float64))
    Xt, yt = Xt.to(torch.float64), yt.to(torch.float64)

    def margins(t: Tensor) -> Tensor:
        return yt * model.forward(t, Xt)

    with torch.enable_grad():
        J = torch.autograd.functional.jacobian(margins, th)
    q = margins(th).detach()
    return q.cpu().numpy(), J.detach().cpu().numpy(), int(model.degree)


def kkt_residual(
    model: Any,
    theta: Any,
    X: Any,
    y: Any,
    *,
    p: float = 2.0,
    active_tol: float = 1e-2,
    zero_tol: float = 1e-6,
) -> KKTResidual:
    """KKT residual of θ for the margin problem min R(θ) s.t. y_i f(θ; x_i) ≥ 1 of an L-homogeneous model.

    Lyu & Li's form for R = ½‖θ‖₂² (p = 2): rescale θ̃ = θ / q_min^{1/L} so that min_i q_i(θ̃) = 1, take the
    near-active set S = {i: q_i(θ̃) ≤ 1 + active_tol} and solve the NNLS problem

        min_{λ ≥ 0} ‖∇R(θ̃) − Σ_{i∈S} λ_i ∇q_i(θ̃)‖₂,   reported relative to ‖∇R(θ̃)‖₂,

    with ∇R(θ) = θ. For the Q-margin problem of a potential with an ℓp horizon (1 < p) the regularizer is
    the horizon function Q∞(θ) ∝ ‖θ‖_p^p and ∇R = sign(θ)|θ|^{p−1} (constants are absorbed by λ); for
    p = 1 (hyperbolic entropy) the subdifferential ∂‖θ‖₁ is used: g_k = sign θ̃_k where
    |θ̃_k| > zero_tol·‖θ̃‖∞ and g_k ∈ [−1, 1] free otherwise, a bounded least-squares problem
    (``scipy.optimize.lsq_linear``) over (λ, g_free). The residual vanishes at a KKT point, e.g. at the
    max-margin solutions of :func:`max_margin` for linear models; Lyu & Li prove that gradient-flow limit
    directions of homogeneous networks are KKT points (residual → 0 along the flow).

    Args:
        model: an L-homogeneous flowsim model (``forward(theta, X)``, ``degree``).
        theta: parameters, shape `(p,)` (numpy or torch), float64; must classify all points (q_min > 0).
        X: inputs `(n, d)`; y: labels `(n,)` in {−1, +1}.
        p: exponent of the regularizer: 2 (Lyu & Li), any p > 1 (ℓp horizon), or 1 (ℓ1 horizon).
        active_tol: relative slack defining the near-active set.
        zero_tol: coordinates with |θ̃_k| ≤ zero_tol·‖θ̃‖∞ get a free subgradient (p = 1 only).

    Returns:
        :class:`KKTResidual`.

    Raises:
        InvalidParameterError: if p < 1, active_tol < 0, or θ does not classify every point (q_min ≤ 0:
            the margin problem's rescaling is undefined).
        ReferenceSolverError: if NNLS / the bounded least-squares solver fails or reports a bad status.

    References:
        Lyu & Li, "Gradient Descent Maximizes the Margin of Homogeneous Neural Networks", ICLR 2020
        (arXiv 1906.05890), Definition of (ε, δ)-KKT points.
        Pesme, Dragomir & Flammarion, "Implicit Bias of Mirror Flow on Separable Data", NeurIPS 2024
        (arXiv 2406.12763) (horizon functions).
    """
    fn = "kkt_residual"
    p = float(p)
    if not (p >= 1.0 and math.isfinite(p)):
        raise InvalidParameterError(f"{fn}: p must be a finite number ≥ 1 (1: ℓ1 horizon); got {p}.")
    if not active_tol >= 0.0:
        raise InvalidParameterError(f"{fn}: active_tol must be ≥ 0; got {active_tol}.")
    q, J, L = _margins_and_jacobian(model, theta, X, y)
    th = np.asarray(theta.detach().cpu().numpy() if isinstance(theta, Tensor) else theta, dtype=np.float64)
    q_min = float(q.min())
    if not q_min > 0.0:
        raise InvalidParameterError(
            f"{fn}: θ does not classify every point (min_i q_i = {q_min:.3g} ≤ 0); the KKT residual of the "
            "margin problem is defined only for q_min > 0 (run the flow longer)."
        )
    c = q_min ** (1.0 / L)
    th_s = th / c
    q_s = q / q_min
    J_s = J / c ** (L - 1)  # ∇q_i is (L−1)-homogeneous
    S = np.flatnonzero(q_s - 1.0 <= active_tol)
    A = J_s[S].T  # (p, |S|)
    lam = np.zeros(q.size)
    if p > 1.0:
        g = np.sign(th_s) * np.abs(th_s) ** (p - 1.0)
        gn = float(np.linalg.norm(g))
        try:
            lam_S, rnorm = nnls(A, g, maxiter=50 * (S.size + 10))
        except RuntimeError as err:
            raise ReferenceSolverError(
                f"{fn}: NNLS did not converge on {S.size} near-active constraints: {err}"
            ) from err
        if not np.isfinite(rnorm):
            raise ReferenceSolverError(f"{fn}: NNLS returned a non-finite residual.")
        stat = float(rnorm / gn)
        how = f"NNLS on {S.size} near-active constraints, R = ‖θ‖_{p:g}^{p:g}/{p:g}"
    else:
        scale = float(np.abs(th_s).max())
        free = np.abs(th_s) <= zero_tol * scale
        g = np.where(free, 0.0, np.sign(th_s))
        E = np.eye(th_s.size)[:, free]
        M = np.hstack([A, -E])
        lb = np.concatenate([np.zeros(S.size), -np.ones(int(free.sum()))])
        ub = np.concatenate([np.full(S.size, np.inf), np.ones(int(free.sum()))])
        res = lsq_linear(M, g, bounds=(lb, ub), method="bvls", tol=1e-14, max_iter=50 * (M.shape[1] + 10))
        if res.status < 1 or not np.isfinite(res.x).all():
            raise ReferenceSolverError(
                f"{fn}: bounded least squares (BVLS) failed with status {res.status}: {res.message}"
            )
        lam_S = res.x[: S.size]
        gn = float(np.linalg.norm(g + E @ res.x[S.size :]))
        stat = float(np.linalg.norm(M @ res.x - g) / max(gn, 1e-300))
        how = f"BVLS over λ ≥ 0 and the ℓ1 subgradient ({int(free.sum())} free coordinates), {S.size} near-active"
    lam[S] = lam_S
    lsum = float(lam.sum())
    comp = float(lam @ (q_s - 1.0) / lsum) if lsum > 0 else 0.0
    return KKTResidual(
        stationarity=stat,
        complementarity=comp,
        dual=lam,
        active=S,
        p=p,
        q_min=q_min,
        status="optimal",
        message=f"{how}; relative stationarity residual {stat:.2e}",
    )
