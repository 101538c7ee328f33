"""ℓ1 and ℓ∞ max margin as linear programs (HiGHS), polished on the active set, with a uniqueness check."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import linprog, nnls

from ...errors import ReferenceSolverError
from ._common import (
    ACTIVE_TOL,
    KKT_TOL,
    MaxMarginSolution,
    _as_Z,
    _check_nonzero_rows,
    _kkt_fail,
    _margin_and_support,
    _not_separable,
)

#: HiGHS feasibility tolerances (its defaults are 1e-7; polishing then brings residuals to ~1e-15).
_HIGHS_OPTIONS = {"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10}


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


def _solve_norm_lp(lp: _LP, n: int, fn: str, check_unique: bool) -> tuple[np.ndarray, np.ndarray, dict, str, Any]:
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
