"""Complementarity solves of the Filippov classification and sliding: box-LCPs, equivalent control, projection.

On surfaces at zero the Filippov field is u + Σ_k r_k α_k g_k (g_k = ∇h_k), affine in the convex-combination
weights α ∈ [0, 1]^K. The Filippov conditions — ḣ_k = 0 for 0 < α_k < 1, ḣ_k ≤ 0 at α_k = 0, ḣ_k ≥ 0 at
α_k = 1 — form a box-constrained linear complementarity problem (box-LCP). For attracting surfaces of the ReLU
systems it is the KKT system of a bounded least-squares problem (:func:`_candidate_lcp`, scipy BVLS); a
generic small system enumerates the patterns (:func:`_box_lcp`).

References:
    Acary & Brogliato, "Numerical Methods for Nonsmooth Dynamical Systems", Springer, 2008 (LCP view).
    Stark & Parker, "Bounded-variable least-squares: an algorithm and applications", Comput. Statist. 10, 1995.
"""

from __future__ import annotations

import itertools

import torch
from scipy.optimize import lsq_linear
from torch import Tensor

from .state import _ALPHA_EPS, inverse_map_slope


def _symmetric_pinv(G: Tensor) -> Tensor:
    """Pseudo-inverse of a batch of symmetric matrices ``G`` `(J, k, k)`, eigenvalues below 1e-12 of each matrix's
    largest cut. For k = 1 (sets of one point) the reciprocal: what ``torch.linalg.pinv`` gives there, bitwise
    (1/g for finite g ≠ 0, else 0), without an eigendecomposition."""
    if G.shape[-1] == 1:
        ok = torch.isfinite(G) & (G != 0)
        return torch.where(ok, G.masked_fill(~ok, 1.0).reciprocal(), 0.0)
    return torch.linalg.pinv(G, hermitian=True, rtol=1e-12)


def _candidate_lcp(u: Tensor, XC: Tensor, r: Tensor, sq: Tensor, fixed: Tensor, att: Tensor, pinned: Tensor) -> Tensor:
    """Filippov α of surfaces at zero that share a velocity block (:mod:`flowsim.solvers.filippov`, item 4).

    The block's velocity is u + Σ_k r_k α_k g_k (g_k = ∇h_k, rows of ``XC`` `(K, q)`; ``u`` `(q,)` the velocity
    at α = 0) and ḣ_k = g_k · D (u + Σ r α g), D = diag(``sq``²). Attracting surfaces (``att``, r_k < 0) get
    α from the bounded least-squares problem min_{α∈[0,1]} ½‖Aα − t‖², A = D^{1/2} Gᵀ diag(−r), t = D^{1/2} u
    (its KKT conditions are the Filippov conditions); repelling ones keep their side (``fixed``, 0/1) unless
    the field there points through, then they flip; ``pinned`` ones stay at ``fixed``. Returns α `(K,)`.
    """
    al = fixed.clone()
    for _ in range(2 * len(r) + 2):
        rep = ~att
        base = u + (XC[rep].T @ (r[rep] * al[rep])) if bool(rep.any()) else u
        t = sq * base
        n_att = int(att.sum())
        if n_att:
            A = (sq.unsqueeze(1) * XC[att].T) * (-r[att])
            AA = float(A.square().sum()) if n_att == 1 else 0.0
            if AA > 0:  # one attracting surface: the minimizer of a convex quadratic on [0, 1], clipped
                al[att] = (A[:, 0] @ t / AA).clamp(0.0, 1.0)
            else:
                sol = lsq_linear(
                    A.cpu().numpy(), t.cpu().numpy(), bounds=(0.0, 1.0), method="bvls", tol=1e-14, lsmr_tol=None
                )
                al[att] = torch.as_tensor(sol.x, dtype=u.dtype, device=u.device)
                if _misses_filippov_conditions(XC[att], sq, t, A, al[att]):
                    al[att] = _unscaled_lcp(XC[att], sq, t, -r[att])
            resid = t - A @ al[att]
        else:
            resid = t
        hdot = XC @ (sq * resid)  # ḣ on all candidates
        flip = rep & ~pinned & (((al > 0.5) & (hdot < 0)) | ((al < 0.5) & (hdot > 0)))
        if not bool(flip.any()):
            break
        al[flip] = 1.0 - al[flip]
    return al


def _misses_filippov_conditions(XA: Tensor, sq: Tensor, t: Tensor, A: Tensor, al: Tensor) -> bool:
    """Whether α of attracting surfaces (rows ``XA`` `(K, q)`) violates the Filippov conditions on ḣ itself:
    ḣ_k ≠ 0 inside (0, 1), ḣ_k > 0 at 0 or ḣ_k < 0 at 1, beyond 1e-8 of the size of ḣ_k's terms.

    The least-squares problem of :func:`_candidate_lcp` weighs surface k's condition by |r_k| (its loss weight):
    a surface whose point has a negligible loss weight (r_k ~ 1e-20 of the others) meets BVLS's tolerance at any
    α, although its ḣ_k is far from zero.
    """
    hdot = XA @ (sq * (t - A @ al))
    size = XA.abs() @ (sq * (t.abs() + (A.abs() @ al)))
    tol = 1e-8 * size
    inside = (al > _ALPHA_EPS) & (al < 1.0 - _ALPHA_EPS)
    bad = (
        (inside & (hdot.abs() > tol)) | ((al <= _ALPHA_EPS) & (hdot > tol)) | ((al >= 1.0 - _ALPHA_EPS) & (hdot < -tol))
    )
    return bool(bad.any())


def _unscaled_lcp(XA: Tensor, sq: Tensor, t: Tensor, R: Tensor) -> Tensor:
    """α of attracting surfaces from the least-squares problem in β = R α ∈ [0, R] (R = −r > 0): the same
    Filippov conditions, with ḣ_k itself (not R_k ḣ_k) as the gradient that BVLS drives to its tolerance."""
    B = sq.unsqueeze(1) * XA.T  # (q, K)
    sol = lsq_linear(
        B.cpu().numpy(), t.cpu().numpy(), bounds=(0.0, R.cpu().numpy()), method="bvls", tol=1e-14, lsmr_tol=None
    )
    beta = torch.as_tensor(sol.x, dtype=t.dtype, device=t.device)
    return (beta / R).clamp(0.0, 1.0)


def _equivalent_control(
    sw, key, scale: dict | None, u: Tensor, XS: Tensor, R: Tensor, sq: Tensor, a0: Tensor, hS: Tensor
) -> Tensor:
    """Equivalent-control α of a sliding block (velocity u + Σ r α g, R = −r, rows g of ``XS``): the
    minimum-change solution of Aᵀ(t − Aα) = −λ diag(−r) h_S (ḣ_S = −λ h_S, the Baumgarte term), from ``a0``.

    The Baumgarte part is scaled by a factor fixed at a segment's first evaluation (``scale`` is then the dict
    being filled, else None and ``sw.bg_scale[key]`` is used) so that it moves α at most half way to [0, 1]'s
    bounds there: near the edge of the "at zero" band λ h_S could otherwise push α out at once (a sliding
    entry/exit cycle).
    """
    A = (sq.unsqueeze(1) * XS.T) * R  # (q, k)
    t = sq * u
    M = A.T @ A
    if not bool(torch.isfinite(M).all()):  # a trial RK stage far off: a non-finite field, the step is rejected
        return torch.full_like(a0, float("nan"))
    if M.shape[0] == 1:
        Minv = 1.0 / M if bool(M[0, 0] > 0) else torch.zeros_like(M)
    else:
        # the metric's part of each column scaled to 1 before the pseudo-inverse's relative cut: a surface whose row
        # is tiny because dθ/dz → 0 (h ∝ z⁴ at a p-power weight's zero) is still controlled; one whose point has a
        # negligible loss weight (R_k → 0) is still cut (scaled by it too, α blew up: non-finite states)
        norm = (sq.unsqueeze(1) * XS.T).norm(dim=0)
        s = torch.where(norm > 0, 1.0 / torch.where(norm > 0, norm, 1.0), 0.0)
        Minv = s.unsqueeze(1) * torch.linalg.pinv(s.unsqueeze(1) * M * s, hermitian=True, rtol=1e-12) * s
    delta = Minv @ (A.T @ (t - A @ a0))
    if sw.lam:
        d_bg = Minv @ (sw.lam * R * hS)
        if scale is not None:  # the segment's first evaluation (its start): fix the Baumgarte factor
            al_eq = a0 + delta
            room = float(torch.minimum(al_eq, 1.0 - al_eq).min())
            big = float(d_bg.abs().max())
            scale[key] = min(1.0, 0.5 * max(room, 0.0) / big) if big > 0 else 1.0
        delta = delta + (scale[key] if scale is not None else sw.bg_scale.get(key, 1.0)) * d_bg
    return a0 + delta


def _project_onto_surfaces(pot, z0: Tensor, G: Tensor, h_fn, rows_fn, h0: Tensor, tol: Tensor) -> Tensor:
    """z0 + Gᵀ μ with |h(∇Φ*(z0 + Gᵀ μ))| ≤ ``tol`` `(K,)` (a dual-space projection onto surfaces h = 0).

    ``G`` `(K, q)`: the directions (∇_θ h at the start, the directions the Filippov α's move z in), ``h_fn(θ)``
    `(K,)`, ``rows_fn(θ)`` ∇_θ h `(K, q)` at θ, ``h0`` = h at z0. Damped Newton on μ (steps by the
    pseudo-inverse: torch.linalg.lstsq gave run-to-run differences in the last bits), Jacobian ∇h D Gᵀ,
    D = (∇²Φ)⁻¹ (h ∘ ∇Φ* along Gᵀμ is the gradient of a convex function when ∇h is constant), with backtracking
    on |h|: D can change by orders of magnitude along a step (p-power potentials near 0).
    """
    mu = torch.zeros(G.shape[0], dtype=z0.dtype, device=z0.device)
    h = h0
    for _ in range(50):
        if bool((h.abs() <= tol).all()):
            break
        th = pot.inverse_mirror_map(z0 + G.T @ mu)
        J = (rows_fn(th) * inverse_map_slope(pot, th)) @ G.T
        step = torch.linalg.pinv(J) @ h
        for _ in range(30):
            h_new = h_fn(pot.inverse_mirror_map(z0 + G.T @ (mu - step)))
            if bool(h_new.norm() < h.norm()):
                break
            step = 0.5 * step
        mu, h = mu - step, h_new
    return z0 + G.T @ mu


def _box_lcp(b: Tensor, M: Tensor, side: Tensor, free: Tensor, tol: float) -> tuple[Tensor, bool]:
    """α ∈ [0,1]^k with w = b + Mα: α_k interior ⇒ w_k = 0, α_k = 0 ⇒ w_k ≤ 0, α_k = 1 ⇒ w_k ≥ 0.

    ``side``: the current side (0/1) of each surface; ``free``: surfaces allowed to move (others fixed at
    ``side``). Enumerates the patterns (k ≤ 8), ranking valid solutions by (#repelling sliding, #changed sides).
    Returns (α, resolved).
    """
    k = b.numel()
    idx_free = [i for i in range(k) if bool(free[i])]
    best, best_cost = None, None
    rep = torch.diagonal(M) >= 0
    for pat in itertools.product((0, 1, 2), repeat=len(idx_free)):  # 0: α=0, 1: α=1, 2: interior
        al = side.clone()
        I = [i for i, c in zip(idx_free, pat, strict=True) if c == 2]
        for i, c in zip(idx_free, pat, strict=True):
            if c < 2:
                al[i] = float(c)
        if I:
            Ii = torch.tensor(I)
            rest = b + M @ torch.where(torch.isin(torch.arange(k), Ii), torch.zeros_like(al), al)
            MI = M[Ii][:, Ii]
            sol = torch.linalg.lstsq(MI, -rest[Ii].unsqueeze(1), rcond=None).solution.flatten()
            al[Ii] = sol
            if bool((sol <= _ALPHA_EPS).any() | (sol >= 1.0 - _ALPHA_EPS).any()):
                continue
        w = b + M @ al
        ok = True
        for i, c in zip(idx_free, pat, strict=True):
            if (c == 2 and abs(float(w[i])) > tol) or (c == 0 and float(w[i]) > tol) or (c == 1 and float(w[i]) < -tol):
                ok = False
                break
        if not ok:
            continue
        cost = (
            sum(1 for i, c in zip(idx_free, pat, strict=True) if c == 2 and bool(rep[i])),
            sum(1 for i, c in zip(idx_free, pat, strict=True) if c < 2 and c != int(side[i])),
        )
        if best_cost is None or cost < best_cost:
            best, best_cost = al, cost
    if best is None:
        return side.clone(), False
    return best, True
