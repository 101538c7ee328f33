"""Approximate-KKT residuals of homogeneous networks (Lyu & Li) and their ℓp / ℓ1 (Q-margin) analogues."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.optimize import lsq_linear, nnls
from torch import Tensor

from ...errors import InvalidParameterError, ReferenceSolverError


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
        lam_S, stat, how = _stationarity_lp(A, th_s, S, p, fn)
    else:
        lam_S, stat, how = _stationarity_l1(A, th_s, S, zero_tol, fn)
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


def _stationarity_lp(
    A: np.ndarray, th_s: np.ndarray, S: np.ndarray, p: float, fn: str
) -> tuple[np.ndarray, float, str]:
    """Multipliers λ_S ≥ 0 `(|S|,)` by NNLS for ∇R = sign(θ)|θ|^{p−1}, the relative residual and a description."""
    g = np.sign(th_s) * np.abs(th_s) ** (p - 1.0)
    gn = float(np.linalg.norm(g))
    try:
        lam_S, rnorm = nnls(A, g, maxiter=50 * (S.size + 10))
    except RuntimeError as err:
        raise ReferenceSolverError(f"{fn}: NNLS did not converge on {S.size} near-active constraints: {err}") from err
    if not np.isfinite(rnorm):
        raise ReferenceSolverError(f"{fn}: NNLS returned a non-finite residual.")
    stat = float(rnorm / gn)
    how = f"NNLS on {S.size} near-active constraints, R = ‖θ‖_{p:g}^{p:g}/{p:g}"
    return lam_S, stat, how


def _stationarity_l1(
    A: np.ndarray, th_s: np.ndarray, S: np.ndarray, zero_tol: float, fn: str
) -> tuple[np.ndarray, float, str]:
    """Multipliers λ_S ≥ 0 `(|S|,)` by BVLS over (λ, free ℓ1 subgradient), the relative residual and a description."""
    scale = float(np.abs(th_s).max())
    free = np.abs(th_s) <= zero_tol * scale
    g = np.where(free, 0.0, np.sign(th_s))
    E = np.eye(th_s.size)[:, free]
    M = np.hstack([A, -E])
    lb = np.concatenate([np.zeros(S.size), -np.ones(int(free.sum()))])
    ub = np.concatenate([np.full(S.size, np.inf), np.ones(int(free.sum()))])
    res = lsq_linear(M, g, bounds=(lb, ub), method="bvls", tol=1e-14, max_iter=50 * (M.shape[1] + 10))
    if res.status < 1 or not np.isfinite(res.x).all():
        raise ReferenceSolverError(f"{fn}: bounded least squares (BVLS) failed with status {res.status}: {res.message}")
    lam_S = res.x[: S.size]
    gn = float(np.linalg.norm(g + E @ res.x[S.size :]))
    stat = float(np.linalg.norm(M @ res.x - g) / max(gn, 1e-300))
    how = f"BVLS over λ ≥ 0 and the ℓ1 subgradient ({int(free.sum())} free coordinates), {S.size} near-active"
    return lam_S, stat, how
