"""Polynomials of a Runge–Kutta step's dense output and Gauss–Legendre quadrature along it.

A step's dense output is a polynomial Σ_p c_p x^p in the step fraction x ∈ [0, 1] (coefficients `(P, p)`,
torchdiffeq's ``interp_coeff``). The soft-crossing corrections integrate smooth functions of it with the
interpolating polynomial at 8 Gauss–Legendre nodes (exact weights on any sub-interval).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

_ARANGE_CACHE: dict = {}


def _arange(lo: int, hi: int, like: Tensor, step: int = 1) -> Tensor:
    """torch.arange(lo, hi, step) with the dtype and device of ``like`` (cached: read-only, never modified)."""
    key = (lo, hi, step, like.dtype, like.device)
    out = _ARANGE_CACHE.get(key)
    if out is None:
        with torch.inference_mode(False):  # a normal tensor even when first asked for under inference mode
            out = _ARANGE_CACHE[key] = torch.arange(lo, hi, step, dtype=like.dtype, device=like.device)
    return out


def _powers(x: Tensor, P: int, derivative: bool = True) -> tuple[Tensor, Tensor | None]:
    """x^p and d(x^p)/dx (None without ``derivative``) for p = 0..P−1 at points ``x`` `(K,)` → `(K, P)` each."""
    pw = x.unsqueeze(1) ** _arange(0, P, x)
    if not derivative:
        return pw, None
    dpw = torch.zeros_like(pw)
    dpw[:, 1:] = pw[:, :-1] * _arange(1, P, x)
    return pw, dpw


_SAMPLE_CACHE: dict = {}


def _sample_powers(P: int, n: int, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The step fractions x = linspace(0, 1, n) (float64, on the device of ``like``) and :func:`_powers` of them for
    P coefficients, `(n,)`, `(n, P)`, `(n, P)` (cached: read-only, never modified)."""
    key = (P, n, like.device)
    out = _SAMPLE_CACHE.get(key)
    if out is None:
        with torch.inference_mode(False):
            xs = torch.linspace(0.0, 1.0, n, dtype=torch.float64, device=like.device)
            out = _SAMPLE_CACHE[key] = (xs, *_powers(xs, P))
    return out


def _poly_eval(coeff: list[Tensor], x: Tensor) -> tuple[Tensor, Tensor]:
    """Dense-output polynomial Σ_p c_p x^p and its x-derivative at points ``x`` `(K,)` → `(K, p)` each."""
    C = torch.stack(coeff)  # (P, dim)
    pw, dpw = _powers(x, C.shape[0])
    return pw @ C, dpw @ C


def _horner(coeff: Tensor, x: float) -> Tensor:
    """Σ_p coeff_p x^p (dense-output polynomial in the step fraction x)."""
    out = coeff[-1]
    for c in coeff[:-1].flip(0):
        out = c + x * out
    return out


_GL_N = 8  # Gauss–Legendre nodes per step for the soft-crossing correction integrals
_GL_CACHE: dict = {}


def _gl_nodes(dtype, device, with_end: bool = False):
    """Gauss–Legendre nodes on [0, 1], `(N,)`, and with ``with_end`` also those nodes followed by 1, `(N + 1,)`
    (cached with the inverse Vandermonde matrix of their interpolant)."""
    key = (dtype, str(device))
    if key not in _GL_CACHE:
        u, _ = np.polynomial.legendre.leggauss(_GL_N)
        vinv = np.linalg.inv(np.vander(u, _GL_N, increasing=True))  # L_q(u) = Σ_p vinv[p, q] u^p
        x = 0.5 * (u + 1)
        _GL_CACHE[key] = tuple(torch.as_tensor(v, dtype=dtype, device=device) for v in (x, vinv, np.append(x, 1.0)))
    return _GL_CACHE[key][::2] if with_end else _GL_CACHE[key][0]


def _gl_vinv(gx: Tensor) -> Tensor:
    return _GL_CACHE[(gx.dtype, str(gx.device))][1]


def _gl_interval_weights(gx: Tensor, lo: Tensor, hi: Tensor, rows: int = 3) -> Tensor:
    """Weights w `(rows, K, N)`: Σ_q w_jkq g(gx_q) = ∫_{lo_k}^{hi_k} (1 − s)^j p(s) ds, j = 0, …, rows − 1 (at most
    2), p the interpolant of g at the nodes gx."""
    N = gx.shape[0]
    pw = _arange(1, N + 3, gx)
    ua, ub = (2 * lo - 1).unsqueeze(1), (2 * hi - 1).unsqueeze(1)
    mom = (ub**pw - ua**pw) / _arange(2, 2 * N + 6, gx, 2)  # ∫ u^p ds over [lo, hi] (÷ 2p), u = 2s − 1, p = 0..N+1
    # 1 − s = (1 − u)/2, (1 − s)² = (1 − 2u + u²)/4
    first = 0.5 * (mom[:, :N] - mom[:, 1 : N + 1])
    if rows < 3:
        return torch.stack([mom[:, :N], first][:rows]) @ _gl_vinv(gx)
    second = 0.25 * (mom[:, :N] - 2 * mom[:, 1 : N + 1] + mom[:, 2 : N + 2])
    return torch.stack([mom[:, :N], first, second]) @ _gl_vinv(gx)


def _gl_interp_matrix(gx: Tensor, x: Tensor) -> Tensor:
    """Lagrange basis of the nodes gx at points x: `(K, N)`, Σ_q L_kq g(gx_q) = p(x_k)."""
    pw = torch.arange(gx.shape[0], dtype=gx.dtype, device=gx.device)
    return ((2 * x - 1).unsqueeze(1) ** pw) @ _gl_vinv(gx)
