"""ℓp max margin, 1 < p < ∞: SLSQP from the ℓ2 solution, Newton-polished on the KKT system."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.optimize import minimize, nnls

from ...errors import InvalidParameterError, ReferenceSolverError
from ._common import (
    KKT_TOL,
    MaxMarginSolution,
    _as_Z,
    _kkt_fail,
    _margin_and_support,
)
from ._svm import svm_l2


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
    variants) converges to on linear models. SLSQP fails for p very near 1 and for very large p: there use
    :func:`max_margin_l1` or :func:`max_margin_linf`.

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
    p = _check_lp_exponent(p, fn)
    Z = _as_Z(Z, fn)
    try:
        sol2 = svm_l2(Z)
    except ReferenceSolverError as err:
        raise ReferenceSolverError(f"{fn}: the ℓ2 starting point failed: {err}") from err
    c = float(np.linalg.norm(sol2.w, ord=p))
    Zs = c * Z
    v0 = sol2.w / c
    v, res = _slsqp_lp(Zs, v0, p, fn)
    S = np.flatnonzero(Zs @ v - 1.0 <= 1e-6)
    lam = _multipliers_lp(Zs, v, S, p)
    kkt = _kkt_lp(Zs, v, lam, p)
    how = f"SLSQP ({res.message}, {res.nit} iterations)"
    if polish and S.size:
        v, lam, kkt, polished = _newton_polish_lp(Zs, v, S, lam, kkt, p)
        how += polished
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


def _check_lp_exponent(p: Any, fn: str) -> float:
    """p as a float in (1, ∞); raises :class:`InvalidParameterError` otherwise (with a hint for 1 and ∞)."""
    if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)):
        raise InvalidParameterError(f"{fn}: p must be a number in (1, inf); got {p!r}.")
    p = float(p)
    if math.isnan(p) or p <= 1.0 or math.isinf(p):
        hint = "use max_margin_l1 for p = 1" if p == 1.0 else "use max_margin_linf for p = inf"
        raise InvalidParameterError(f"{fn}: p must satisfy 1 < p < inf; got p = {p}; {hint}.")
    return p


def _slsqp_lp(Zs: np.ndarray, v0: np.ndarray, p: float, fn: str) -> tuple[np.ndarray, Any]:
    """SLSQP on min (1/p)‖v‖_p^p s.t. Zs v ≥ 1 from v0: the solution `(d,)` and scipy's result."""

    def fun(v):
        return float(np.sum(np.abs(v) ** p)) / p

    def jac(v):
        return _grad_pp(v, p)

    cons = {"type": "ineq", "fun": lambda v: Zs @ v - 1.0, "jac": lambda v: Zs}
    res = minimize(fun, v0, jac=jac, method="SLSQP", constraints=[cons], options={"ftol": 1e-15, "maxiter": 2000})
    v = np.asarray(res.x, dtype=np.float64)
    if not np.isfinite(v).all():
        raise ReferenceSolverError(
            f"{fn}: SLSQP returned non-finite values ({res.message}); try a p closer to 2 or normalize X."
        )
    return v, res


def _multipliers_lp(Zs: np.ndarray, v: np.ndarray, S: np.ndarray, p: float) -> np.ndarray:
    """Multipliers λ `(n,)`: NNLS on sign(v)|v|^{p−1} = Z_Sᵀλ_S over the near-active set S, 0 elsewhere."""
    lam = np.zeros(Zs.shape[0])
    if S.size:
        try:
            lam[S] = nnls(Zs[S].T, _grad_pp(v, p), maxiter=50 * S.size + 100)[0]
        except RuntimeError:
            pass
    return lam


def _newton_polish_lp(
    Zs: np.ndarray, v: np.ndarray, S: np.ndarray, lam: np.ndarray, kkt: dict, p: float
) -> tuple[np.ndarray, np.ndarray, dict, str]:
    """Newton on the KKT system over S; the polished (v, λ, KKT residuals) and a note if they are better."""
    if p < 2.0:
        v_n, lamS_n, n_it = _newton_dual_lp(Zs, S, lam[S], p)
    else:
        v_n, lamS_n, n_it = _newton_kkt_lp(Zs, v, S, lam[S], p)
    lam_n = np.zeros(Zs.shape[0])
    lam_n[S] = lamS_n
    kkt_n = _kkt_lp(Zs, v_n, lam_n, p)
    if max(kkt_n.values()) < max(kkt.values()):
        return v_n, lam_n, kkt_n, f", Newton-polished on the active set ({n_it} iterations)"
    return v, lam, kkt, ""
