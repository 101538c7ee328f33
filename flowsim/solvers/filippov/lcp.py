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


def _candidate_lcp(
    u: Tensor, XC: Tensor, r: Tensor, sq: Tensor, fixed: Tensor, att: Tensor, pinned: Tensor, share: bool = True
) -> Tensor:
    """Filippov α of surfaces at zero that share a velocity block (:mod:`flowsim.solvers.filippov`, item 4).

    The block's velocity is u + Σ_k r_k α_k g_k (g_k = ∇h_k, rows of ``XC`` `(K, q)`; ``u`` `(q,)` the velocity
    at α = 0) and ḣ_k = g_k · D (u + Σ r α g), D = diag(``sq``²). Attracting surfaces (``att``, r_k < 0) get
    α from the bounded least-squares problem min_{α∈[0,1]} ½‖Aα − t‖², A = D^{1/2} Gᵀ diag(−r), t = D^{1/2} u
    (its KKT conditions are the Filippov conditions); repelling ones keep their side (``fixed``, 0/1) unless
    the field there points through, then they flip; ``pinned`` ones stay at ``fixed``. ``share``: coinciding
    surfaces get one α (:func:`_share_coinciding`; not inside a deep net's multilinear Newton iteration, where the
    gradients of the surfaces above depend on each α below, not on their sum). Returns α `(K,)`.
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
                al[att] = _attracting_alphas(XC[att], sq, t, A, share)
            resid = t - A @ al[att]
        else:
            resid = t
        hdot = XC @ (sq * resid)  # ḣ on all candidates
        flip = rep & ~pinned & (((al > 0.5) & (hdot < 0)) | ((al < 0.5) & (hdot > 0)))
        if not bool(flip.any()):
            break
        al[flip] = 1.0 - al[flip]
    return al


def _attracting_alphas(XA: Tensor, sq: Tensor, t: Tensor, A: Tensor, share: bool = True) -> Tensor:
    """α ∈ [0, 1]^K of attracting surfaces (rows ``XA`` `(K, q)`) from min ½‖Aα − t‖² (:func:`_candidate_lcp`), solved
    so that every surface meets its own Filippov conditions on ḣ_k, however different the surfaces' scales.

    BVLS stops at an absolute tolerance on the gradient, so the problem is solved in units where that tolerance is
    relative (:func:`_bvls_unit_scale`): a column tiny because its point's loss weight is negligible, or because
    dθ/dz → 0 on its coordinates, is weighed like the others. A surface that still misses its conditions
    (:func:`_filippov_violations`: its own terms far below the largest, e.g. a deep net's unit whose p-power weights
    sit near 0, D 1e-25 of the others) is solved again with the rest fixed, in its own units (at most three
    rounds; surfaces with parallel ∇h share their conditions, which then hold to the rounding of that split).
    Measured on such a unit: the unscaled problem gave α = 1 where its sliding surfaces had α = 0.002-0.007 and
    the run stopped 3.6e6 error scales off; the scaled one leaves ḣ_k at 4e-4 of its terms, the local solve at 8e-8.
    """
    # a column that underflowed to 0 (r_k of a point with a loss weight near the smallest double) does not move the
    # field: BVLS, given one, overflowed inside (HE β = 0.1, n = 3000) and put α at its upper bound whatever ḣ was
    live = A.norm(dim=0) > 0
    al = torch.zeros(A.shape[1], dtype=A.dtype, device=A.device)
    if bool(live.any()):
        al[live] = _bvls_unit_scale(A[:, live], t)
    for _ in range(3):
        bad = _filippov_violations(XA, sq, t, A, al) & live
        if not bool(bad.any()):
            break
        cols = A[:, bad]
        # the coordinates where their columns are above rounding (1e-14 of the column; beyond them the residual can
        # be 1e17 of its part here, and lstsq then loses that part to its own rounding)
        rows = (cols.abs() > 1e-14 * cols.norm(dim=0)).any(1)
        al[bad] = _bvls_unit_scale(cols[rows], (t - A[:, ~bad] @ al[~bad])[rows])
    if not bool(live.all()):  # ḣ of a zero column does not depend on its α: the side ḣ points to
        hdot = XA[~live] @ (sq * (t - A @ al))
        al[~live] = (hdot > 0).to(al.dtype)
    return _share_coinciding(A, al) if share else al


def _share_coinciding(A: Tensor, al: Tensor) -> Tensor:
    """α's `(K,)` with one common value on each set of coinciding attracting surfaces (columns of ``A`` parallel
    and of the same orientation to 1e-12: the same zero set to first order, e.g. a deep net's h_i = w·r_i of the
    points whose only active input to a unit is the same weight w, or duplicated data points).

    Only Σ_k ‖A_k‖ α_k along their common direction enters the field, so the least-squares solution is any split
    of it, and BVLS returns a vertex: one surface at α = 1 and the rest at 0 satisfy the Filippov conditions with
    ḣ = 0 exactly, but their modes (active, inactive) do not hold h = 0 and the state switched back and forth
    every 1e-10 of τ (p-power p = 1.25, a second-layer weight at its zero). The common value gives the same field
    and slides them together."""
    groups = _coinciding_groups(A)
    return al if groups is None else _group_average(A, al, groups)


def _coinciding_groups(A: Tensor) -> Tensor | None:
    """The coinciding sets among the columns of ``A`` `(q, K)` (parallel, same orientation, to 1e-12) as a `(K, K)`
    0/1 matrix (row k: the columns coinciding with k, itself included), or None if no two columns coincide."""
    norm = A.norm(dim=0)
    U = A / torch.where(norm > 0, norm, 1.0)
    same = (U.T @ U >= 1.0 - 1e-12) & (norm > 0).unsqueeze(0) & (norm > 0).unsqueeze(1)
    if not bool((same.sum(1) > 1).any()):
        return None
    return same.to(A.dtype)


def _group_average(A: Tensor, al: Tensor, groups: Tensor) -> Tensor:
    """α `(K,)` averaged over each coinciding set of ``groups`` (:func:`_coinciding_groups`), weighted by the
    columns' norms (Σ_k ‖A_k‖ α_k along the sets' directions, the field, is kept)."""
    norm = A.norm(dim=0)
    shared = (groups @ (norm * al)) / (groups @ norm).clamp_min(torch.finfo(A.dtype).tiny)
    return torch.where(groups.sum(1) > 1, shared, al)


def _bvls_unit_scale(A: Tensor, t: Tensor) -> Tensor:
    """argmin over α ∈ [0, 1]^K of ½‖Aα − t‖² (scipy's BVLS, Stark & Parker 1995), solved with A's columns scaled
    to norm 1 and t by c, the largest size of a gradient's terms max_k Σ_i |A_ik| |t_i| / ‖A_k‖ (β_k = ‖A_k‖ α_k / c
    ∈ [0, ‖A_k‖ / c]), so that its tolerance (1e-14 on the gradient) is relative to the problem's own scale. Zero
    columns, or a zero c, are left unscaled."""
    norm = A.norm(dim=0)
    s = torch.where(norm > 0, norm, 1.0)
    c = float(((A / s).abs().T @ t.abs()).max())
    c = c if c > 0 else 1.0
    sol = lsq_linear(
        (A / s).cpu().numpy(),
        (t / c).cpu().numpy(),
        bounds=(0.0, (s / c).cpu().numpy()),
        method="bvls",
        tol=1e-14,
        lsmr_tol=None,
    )
    return (torch.as_tensor(sol.x, dtype=t.dtype, device=t.device) * c / s).clamp(0.0, 1.0)


def _filippov_violations(XA: Tensor, sq: Tensor, t: Tensor, A: Tensor, al: Tensor) -> Tensor:
    """Which attracting surfaces (rows ``XA`` `(K, q)`) at α ``al`` violate the Filippov conditions on ḣ itself:
    ḣ_k ≠ 0 inside (0, 1), ḣ_k > 0 at 0 or ḣ_k < 0 at 1, beyond 1e-8 of the size of ḣ_k's terms; `(K,)` bool.

    The least-squares problem weighs surface k's condition by its column: a surface whose point has a negligible
    loss weight (r_k ~ 1e-20 of the others), or whose coordinates have a negligible dθ/dz, can meet a tolerance on
    the whole problem at any α, although its ḣ_k is far from zero.
    """
    hdot = XA @ (sq * (t - A @ al))
    size = XA.abs() @ (sq * (t.abs() + (A.abs() @ al)))
    tol = 1e-8 * size
    inside = (al > _ALPHA_EPS) & (al < 1.0 - _ALPHA_EPS)
    low, high = al <= _ALPHA_EPS, al >= 1.0 - _ALPHA_EPS
    return (inside & (hdot.abs() > tol)) | (low & (hdot > tol)) | (high & (hdot < -tol))


def _equivalent_control(
    sw,
    key,
    scale: dict | None,
    u: Tensor,
    XS: Tensor,
    R: Tensor,
    sq: Tensor,
    a0: Tensor,
    hS: Tensor,
    share: bool = True,
) -> Tensor:
    """Equivalent-control α of a sliding block (velocity u + Σ r α g, R = −r, rows g of ``XS``): the
    minimum-change solution of Aᵀ(t − Aα) = −λ diag(−r) h_S (ḣ_S = −λ h_S, the Baumgarte term), from ``a0``.

    The Baumgarte part is scaled by a factor fixed at a segment's first evaluation (``scale`` is then the dict
    being filled, else None and ``sw.bg_scale[key]`` is used) so that it moves α at most half way to [0, 1]'s
    bounds there: near the edge of the "at zero" band λ h_S could otherwise push α out at once (a sliding
    entry/exit cycle). ``share``: coinciding surfaces slide with one α (:func:`_share_coinciding`; not inside a
    deep net's multilinear Newton iteration).
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
    if not share:
        return a0 + delta
    # coinciding surfaces slide with one α: the minimum change splits by their columns' norms, and the one that
    # reached a bound first left alone, to its own side (measured: a group of four split across both sides). The
    # sets are found at the segment's first evaluation and kept for it (the field is evaluated millions of times)
    if scale is not None or key not in sw.coinciding:
        sw.coinciding[key] = _coinciding_groups(A)
    groups = sw.coinciding[key]
    return a0 + delta if groups is None else _group_average(A, a0 + delta, groups)


def _project_onto_surfaces(pot, z0: Tensor, G: Tensor, h_fn, rows_fn, h0: Tensor, tol: Tensor) -> Tensor:
    """z0 + Gᵀ μ with |h(∇Φ*(z0 + Gᵀ μ))| ≤ ``tol`` `(K,)` (a dual-space projection onto surfaces h = 0).

    ``G`` `(K, q)`: the directions (∇_θ h at the start, the directions the Filippov α's move z in), ``h_fn(θ)``
    `(K,)`, ``rows_fn(θ)`` ∇_θ h `(K, q)` at θ, ``h0`` = h at z0. Damped Newton on μ (steps by the
    pseudo-inverse: torch.linalg.lstsq gave run-to-run differences in the last bits), Jacobian ∇h D Gᵀ,
    D = (∇²Φ)⁻¹ (h ∘ ∇Φ* along Gᵀμ is the gradient of a convex function when ∇h is constant), each surface in units
    of its ``tol`` (a surface at 1e-35 beside others at 1e-15 fell under the pseudo-inverse's relative cut: 1,500
    evaluations, not projected), with backtracking on |h / tol|: D can change by orders of magnitude along a step
    (p-power potentials near 0), and extrapolation (steps doubled while |h / tol| falls, up to 16×) where a step
    leaves more than ¼ of it: at a root of multiplicity k (h ∝ z⁴ at a p = 1.25 weight's zero) Newton's step is
    1/k of the way.
    """
    mu = torch.zeros(G.shape[0], dtype=z0.dtype, device=z0.device)
    h = h0
    # each surface in units of its tolerance (relative to the smallest positive one, so that nothing overflows; a
    # zero tolerance counts as that one)
    positive = tol[tol > 0]
    floor = positive.min() if positive.numel() else torch.ones((), dtype=tol.dtype, device=tol.device)
    scale = floor / tol.clamp_min(floor)

    def size(x: Tensor) -> float:
        return float((scale * x).norm())

    for _ in range(50):
        if bool((h.abs() <= tol).all()):
            break
        th = pot.inverse_mirror_map(z0 + G.T @ mu)
        J = (rows_fn(th) * inverse_map_slope(pot, th)) @ G.T
        step = torch.linalg.pinv(scale.unsqueeze(1) * J) @ (scale * h)
        for _ in range(30):
            h_new = h_fn(pot.inverse_mirror_map(z0 + G.T @ (mu - step)))
            if size(h_new) < size(h):
                break
            step = 0.5 * step
        for _ in range(4):  # a root of multiplicity k (h ∝ z⁴ at a p = 1.25 weight's zero): Newton's step is 1/k of it
            if size(h_new) <= 0.25 * size(h):
                break
            h_try = h_fn(pot.inverse_mirror_map(z0 + G.T @ (mu - 2.0 * step)))
            if size(h_try) >= size(h_new):
                break
            step, h_new = 2.0 * step, h_try
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
