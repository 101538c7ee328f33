"""ℓ2 max margin: the hard-margin SVM without bias, by Lawson–Hanson least-distance programming."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.optimize import nnls

from ...data import is_linearly_separable
from ...errors import ReferenceSolverError
from ._common import (
    KKT_TOL,
    MaxMarginSolution,
    _as_Z,
    _check_nonzero_rows,
    _kkt_fail,
    _margin_and_support,
    _not_separable,
)


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
            z_i), NNLS does not converge, or the KKT residuals exceed :data:`KKT_TOL` (margins
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
        w, alpha, kkt, how = _svm_from_ldp(Zs, u, denom, polish)
    else:
        w, alpha, kkt, how = _svm_on_nnls_support(Zs, u, denom, fn)
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


def _svm_from_ldp(
    Zs: np.ndarray, u: np.ndarray, denom: float, polish: bool
) -> tuple[np.ndarray, np.ndarray, dict, str]:
    """(w, α, KKT residuals, description) from the LDP solution u: α = u/(1 − Σu), optionally polished."""
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
    return w, alpha, kkt, how


def _svm_on_nnls_support(
    Zs: np.ndarray, u: np.ndarray, denom: float, fn: str
) -> tuple[np.ndarray, np.ndarray, dict, str]:
    """(w, α, KKT residuals, description) from the KKT system on the NNLS support when 1 − Σu underflows."""
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
    return w, alpha, kkt, how
