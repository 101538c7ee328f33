"""Vectorized root finders for inverse mirror maps (φ′)⁻¹ of built-in and user potentials."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from ..errors import PotentialOverflowError
from ._base import _const

_LOG2 = math.log(2.0)
# Newton iterations for the built-in inverse mirror maps (a good start converges in 3-6).
_NEWTON_MAX_ITER = 60
# Safeguarded Newton for user potentials: bracket expansions (the step grows like 2^{k(k+1)/2}, so
# 70 expansions span the whole float64 range) and Newton/bisection iterations.
_CUSTOM_MAX_EXPAND = 70
_CUSTOM_MAX_ITER = 100


def _invert_odd_log_softplus(
    z: Tensor,
    *,
    a: float,
    b: float,
    c: float,
    d: float,
    g: Callable[[Tensor], Tensor],
    g_prime: Callable[[Tensor], Tensor],
) -> Tensor:
    """Solve g(x) = z for an odd, strictly increasing g with log g(e^y) = a + y + b·log(e^{cy} + e^d).

    Both built-in p-families have this form: the smoothed homogeneous map p x (x²+λ)^{p/2−1}
    (a = log p, b = p/2 − 1, c = 2, d = log λ) and the p-power-plus-quadratic map x^{p−1} + λx
    (a = 0, b = 1, c = p − 2, d = log λ). In y = log|x| the residual F(y) = log g(e^y) − log|z| has slope
    1 + bc·σ(cy − d) between 1 and p − 1, so Newton is well behaved. Replacing log(e^{cy} + e^d) by
    max(cy, d) (an error in [0, log 2]) gives the asymptotic power-law inverse as the start and a
    guaranteed bracket; Newton steps that leave the bracket are replaced by bisection. The log-space
    iterate is polished by one Newton step in x, giving ~1e-16 relative accuracy.

    Args:
        z: dual values, any shape, floating.
        a, b, c, d: the constants above.
        g: the map on x > 0; g_prime: its derivative.

    Returns:
        x with g(x) = z, same shape, dtype and device as `z`; 0 ↦ 0, ±inf ↦ ±inf, nan ↦ nan.
    """
    eps = torch.finfo(z.dtype).eps
    zabs = z.abs()
    work = torch.isfinite(z) & (zabs > 0)
    zw = torch.where(work, zabs, 1.0)
    target = zw.log() - a
    slope = 1.0 + b * c  # = p - 1 for both families
    width = abs(b) * _LOG2 / min(1.0, slope)
    y_power = target / slope  # root of the asymptote where c·y > d dominates
    y_linear = target - b * d  # root of the asymptote where d dominates
    pad = 0.125 + 0.125 * width  # widening a valid bracket keeps it valid and absorbs rounding
    if b >= 0.0:  # F is convex and F(y) >= 0 at the start: Newton decreases monotonically to the root
        y = torch.minimum(y_power, y_linear)
        lo, hi = y - (width + pad), y + pad
    else:  # F is concave and F(y) <= 0 at the start: Newton increases monotonically to the root
        y = torch.maximum(y_power, y_linear)
        lo, hi = y - pad, y + (width + pad)
    # y = log x, so an absolute tolerance in y is a relative tolerance in x. Newton converges
    # quadratically, so stopping after a step below tol leaves an error ~tol² (then one polish in x);
    # the second term keeps tol above the rounding floor of F (|log x| <= ~1500 in float64).
    tol = 0.01 * math.sqrt(eps) + 4096.0 * eps
    d_t = _const(d, z)
    bc = b * c
    for _ in range(_NEWTON_MAX_ITER):
        cy = y * c
        residual = torch.logaddexp(cy, d_t).mul_(b).add_(y).sub_(target)
        step = residual / torch.sigmoid(cy.sub_(d)).mul_(bc).add_(1.0)
        y_newton = y - step
        lo = torch.where(residual < 0, y, lo)
        hi = torch.where(residual > 0, y, hi)
        small = step.abs() <= tol  # a step at the rounding floor may touch the bracket
        if bool(small.all()):
            y = y_newton
            break
        inside = (y_newton > lo) & (y_newton < hi)
        y = torch.where(inside | small, y_newton, (lo + hi) * 0.5)
    x = torch.exp(y)
    x_polished = x - (g(x) - zw) / g_prime(x)
    accept = torch.isfinite(x_polished) & ((x_polished - x).abs() <= 1e-6 * x)
    x = torch.where(accept, x_polished, x)
    return torch.where(work, torch.sign(z) * x, z)


def _bracket_midpoint(lo: Tensor, hi: Tensor) -> Tensor:
    """A point strictly inside (lo, hi): arithmetic mean for narrow brackets, else geometric mean.

    The brackets of :func:`_solve_increasing` never straddle 0 (x = 0 is always evaluated first), so
    lo and hi share a sign or one of them is 0; then the geometric mean of the magnitudes (0 replaced by
    the smallest normal float) is bisection in log|x|, which narrows any bracket to a factor of 2 in
    about a dozen steps.
    """
    tiny = torch.finfo(lo.dtype).tiny
    mag_lo, mag_hi = lo.abs(), hi.abs()
    inner = torch.minimum(mag_lo, mag_hi).clamp_min(tiny)
    outer = torch.maximum(mag_lo, mag_hi)
    geometric = torch.sign(0.5 * lo + 0.5 * hi) * torch.exp(0.5 * (inner.log() + outer.log()))
    arithmetic = 0.5 * lo + 0.5 * hi
    use_arithmetic = (outer <= 2.0 * inner) | ~((geometric > lo) & (geometric < hi))
    return torch.where(use_arithmetic, arithmetic, geometric)


def _solve_increasing(
    first: Callable[[Tensor], Tensor],
    both: Callable[[Tensor], tuple[Tensor, Tensor]],
    target: Tensor,
    guesses: tuple[Tensor, ...] = (),
    what: str = "the potential",
) -> Tensor:
    """Solve f(x) = target elementwise for a strictly increasing f (vectorized safeguarded Newton).

    Starting points: 0, the Newton step from 0 (the linear regime) and `guesses` (e.g. the asymptotic
    power-law inverse); each one's residual sign tightens the bracket [lo, hi]. A missing side of the
    bracket is found by probing from the best point with steps growing like 2^{k(k+1)/2} (any float is
    reached in at most ~70 probes). Then Newton steps are taken while they stay strictly inside the
    bracket and shrink at least by half every step (as in Numerical Recipes' ``rtsafe``), bisection
    otherwise (in log|x| for brackets spanning decades). All tolerances are relative.

    Where f is not finite at an end of the bracket, or no bracket was found, f overflowed on the way (inf or nan
    where its true value is finite): :func:`_past_overflow` checks those entries (only those) and skips the region
    where f is not finite if a finite point past the target exists, rather than returning the edge of that region.

    Args:
        first: x ↦ f(x); both: x ↦ (f(x), f′(x)).
        target: values, any shape, floating.
        guesses: optional starting points, same shape as `target` (non-finite entries are ignored).
        what: how error messages name f, e.g. "SeparablePotential 'quartic'".

    Returns:
        x with f(x) = target, same shape/dtype/device; ±inf where the root lies beyond the largest float (f is
        finite there and still short of the target), nan where the target is nan.

    Raises:
        PotentialOverflowError: where f stops being finite before it reaches the target, so that its root is hidden
            (the message names the first such entry, its target and where f stops).
    """
    finite = torch.isfinite(target)
    t = torch.where(finite, target, torch.zeros_like(target))
    lo, hi, r_lo, r_hi, step = _starting_bracket(first, both, t, guesses)
    lo, hi, r_lo, r_hi, beyond = _expand_bracket(first, t, finite, lo, hi, r_lo, r_hi, step)
    bracketed = torch.isfinite(lo) & torch.isfinite(hi)
    x, lo_end = _newton_in_bracket(both, t, finite, bracketed, lo, hi, r_lo, r_hi)
    if not bool(torch.isfinite(r_lo + r_hi).all()):  # a bracket end missing or not finite (r_lo ≤ 0 ≤ r_hi)
        suspect = finite & ~beyond & ~(bracketed & torch.isfinite(r_lo + r_hi))
        if bool(suspect.any()):
            x = _past_overflow(first, both, t, suspect, bracketed, x, (lo, hi, r_lo, r_hi), what)
            bracketed = bracketed | suspect
    inf = torch.full_like(t, math.inf)
    x = torch.where(bracketed, x, torch.full_like(x, math.nan))
    x = torch.where(beyond, torch.where(lo_end > 0, inf, -inf), x)
    return torch.where(finite, x, target)


def _starting_bracket(
    first: Callable[[Tensor], Tensor],
    both: Callable[[Tensor], tuple[Tensor, Tensor]],
    t: Tensor,
    guesses: tuple[Tensor, ...],
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Bracket [lo, hi] (±inf where a side is missing) and residuals from 0, the linear step and `guesses`.

    Returns:
        (lo, hi, r_lo, r_hi, step): the bracket, its residuals f − t and the first probe step for
        :func:`_expand_bracket` (the larger of |best point| and |linear step|, else |f(0) − t|, else 1).
    """
    zero = torch.zeros_like(t)
    inf = torch.full_like(t, math.inf)
    f0, d0 = both(zero)
    r0 = f0 - t
    x_linear = zero - r0 / d0
    x_linear = torch.where(torch.isfinite(x_linear), x_linear, zero)
    points, residuals = [zero, x_linear], [r0, first(x_linear) - t]
    for guess in guesses:
        guess = torch.where(torch.isfinite(guess), guess, zero)
        points.append(guess)
        residuals.append(first(guess) - t)
    lo, hi, r_lo, r_hi = -inf, inf, -inf, inf
    best, r_best = zero, r0
    for x, r in zip(points, residuals, strict=True):
        is_lo = (r <= 0) & (x >= lo)
        is_hi = (r >= 0) & (x <= hi)
        lo, r_lo = torch.where(is_lo, x, lo), torch.where(is_lo, r, r_lo)
        hi, r_hi = torch.where(is_hi, x, hi), torch.where(is_hi, r, r_hi)
        better = r.abs() < r_best.abs()
        best, r_best = torch.where(better, x, best), torch.where(better, r, r_best)
    step = torch.maximum(best.abs(), x_linear.abs())
    step = torch.where(step > 0, step, r0.abs())
    step = torch.where(step > 0, step, torch.ones_like(step))  # only where r0 == 0 (already solved)
    return lo, hi, r_lo, r_hi, step


def _expand_bracket(
    first: Callable[[Tensor], Tensor],
    t: Tensor,
    finite: Tensor,
    lo: Tensor,
    hi: Tensor,
    r_lo: Tensor,
    r_hi: Tensor,
    step: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Find the missing side of each bracket by probing with steps growing like 2^{k(k+1)/2}.

    Returns:
        (lo, hi, r_lo, r_hi, beyond): the bracket, its residuals, and where the root lies beyond the
        largest float.
    """
    big = torch.finfo(t.dtype).max
    beyond = torch.zeros_like(t, dtype=torch.bool)
    growth = 2.0
    for _ in range(_CUSTOM_MAX_EXPAND):
        need_hi = torch.isinf(hi) & ~beyond & finite
        need_lo = torch.isinf(lo) & ~beyond & finite
        if not bool((need_hi | need_lo).any()):
            break
        probe = torch.where(need_hi, lo + step, hi - step).clamp(-big, big)
        r = first(probe) - t
        up_lo, up_hi = need_hi & (r < 0), need_hi & (r >= 0)
        down_hi, down_lo = need_lo & (r > 0), need_lo & (r <= 0)
        beyond = beyond | (up_lo & (probe >= big)) | (down_hi & (probe <= -big))
        lo = torch.where(up_lo | down_lo, probe, lo)
        r_lo = torch.where(up_lo | down_lo, r, r_lo)
        hi = torch.where(up_hi | down_hi, probe, hi)
        r_hi = torch.where(up_hi | down_hi, r, r_hi)
        step = step * growth
        growth *= 2.0
    return lo, hi, r_lo, r_hi, beyond


def _newton_in_bracket(
    both: Callable[[Tensor], tuple[Tensor, Tensor]],
    t: Tensor,
    finite: Tensor,
    bracketed: Tensor,
    lo: Tensor,
    hi: Tensor,
    r_lo: Tensor,
    r_hi: Tensor,
) -> tuple[Tensor, Tensor]:
    """Safeguarded Newton inside [lo, hi]: Newton steps that stay inside and halve, else bisection.

    Returns:
        (x, lo): the root (0 where not bracketed) and the final lower end of the bracket.
    """
    eps = torch.finfo(t.dtype).eps
    rtol = 0.01 * math.sqrt(eps)
    zero = torch.zeros_like(t)
    inf = torch.full_like(t, math.inf)
    x = torch.where(r_lo.abs() <= r_hi.abs(), lo, hi)
    x = torch.where(bracketed, x, zero)
    done = ~bracketed | ~finite | (r_lo == 0) | (r_hi == 0)
    step_old = torch.where(bracketed, hi - lo, inf)
    for _ in range(_CUSTOM_MAX_ITER):
        if bool(done.all()):
            break
        f, df = both(x)
        r = f - t
        lo = torch.where(~done & (r < 0), x, lo)  # (done entries keep theirs: an unbracketed one's sign is lo's)
        hi = torch.where(~done & (r > 0), x, hi)
        newton_step = r / df
        x_newton = x - newton_step
        finite_newton = torch.isfinite(x_newton)
        # a step at the rounding floor means convergence even if it touches the bracket
        small = finite_newton & (newton_step.abs() <= rtol * x_newton.abs())
        fast = finite_newton & (x_newton > lo) & (x_newton < hi) & (2.0 * newton_step.abs() <= step_old)
        mid = _bracket_midpoint(lo, hi)
        x_next = torch.where(small | fast, torch.minimum(torch.maximum(x_newton, lo), hi), mid)
        x_next = torch.where(r == 0, x, x_next)
        unsplittable = ~(small | fast) & ((mid <= lo) | (mid >= hi))  # bracket at float resolution
        converged = (r == 0) | small | unsplittable | ((hi - lo) <= 4.0 * eps * torch.maximum(lo.abs(), hi.abs()))
        step_old = torch.where(done, step_old, (x_next - x).abs())
        x = torch.where(done, x, x_next)
        done = done | converged
    return x, lo


def _past_overflow(
    first: Callable[[Tensor], Tensor],
    both: Callable[[Tensor], tuple[Tensor, Tensor]],
    t: Tensor,
    suspect: Tensor,
    bracketed: Tensor,
    x: Tensor,
    bracket: tuple[Tensor, Tensor, Tensor, Tensor],
    what: str,
) -> Tensor:
    """``x`` with the roots of the ``suspect`` entries: their bracket had an end where f is not finite (inf or nan),
    or none was found.

    Newton's answer is kept where the residual there confirms a root (its linearized correction within 1e-6·|x|:
    the non-finite end was an overshoot past the root). Elsewhere :func:`_bisect_past_overflow` looks for a point
    past the target where f is finite, and Newton solves in the bracket it gives.

    Raises:
        PotentialOverflowError: for entries where f is not finite anywhere past the last point short of the target.
    """
    lo, hi, r_lo, r_hi = (v[suspect] for v in bracket)
    ts, xs = t[suspect], x[suspect]
    f, df = both(xs)
    r = f - ts
    kept = bracketed[suspect] & torch.isfinite(r) & ((r == 0) | (r.abs() <= 1e-6 * xs.abs() * df.abs()))
    upward = ~(torch.isfinite(hi) & torch.isfinite(r_hi))  # the missing or non-finite end is the upper one
    near = torch.where(upward, lo, hi)
    r_near = torch.where(upward, r_lo, r_hi)
    s = _bisect_past_overflow(first, ts, upward, near, r_near, ~kept)
    roots, _ = _newton_in_bracket(both, ts, torch.ones_like(s.found), s.found, s.lo, s.hi, s.r_lo, s.r_hi)
    failed = ~kept & ~s.found
    if bool(failed.any()):
        k = int(torch.nonzero(failed)[0, 0])
        where = tuple(int(i[k]) for i in suspect.nonzero(as_tuple=True))
        near, f_near, far = float(s.near[k]), float(s.f_near[k]), float(s.far[k])
        raise PotentialOverflowError(
            f"{what}: the inverse mirror map cannot be computed at coordinate {where[0] if len(where) == 1 else where}"
            f" (z = {float(ts[k]):.17g}; {int(failed.sum())} of {t.numel()} coordinates): φ′ reaches only "
            f"{f_near:.17g} at x = {near:.17g} and is not finite (inf or nan) from x = {far:.17g} on, an overflow in "
            "φ or in its autograd derivative, so the root of φ′(x) = z is hidden (it may lie beyond the float range). "
            "Write φ so that φ′ and φ″ stay finite up to |x| ≈ 1.8e308 (e.g. torch.hypot(x, b) instead of "
            "sqrt(x**2 + b**2)), use a built-in potential, or keep |z| within the values φ′ reaches."
        )
    out = x.clone()
    out[suspect] = torch.where(kept, xs, roots)
    return out


class _Search(NamedTuple):
    """What :func:`_bisect_past_overflow` found: brackets [lo, hi] with finite residuals r_lo ≤ 0 ≤ r_hi where
    ``found``; elsewhere the last point ``near`` short of the target, f there, and the nearest point ``far`` beyond
    it where f is not finite (the end of the floats if none was met)."""

    lo: Tensor
    hi: Tensor
    r_lo: Tensor
    r_hi: Tensor
    found: Tensor
    near: Tensor
    f_near: Tensor
    far: Tensor


def _bisect_past_overflow(
    first: Callable[[Tensor], Tensor], t: Tensor, upward: Tensor, near: Tensor, r_near: Tensor, active: Tensor
) -> _Search:
    """Bisection (in log|x|) between ``near`` (f finite and short of t) and the end of the floats in the direction
    ``upward``, for a point past t where f is finite; points where f is not finite move the far end in. Entries
    not ``active`` are left as they are."""
    big = torch.full_like(t, torch.finfo(t.dtype).max)
    far = torch.where(upward, big, -big)
    lo, hi, r_lo, r_hi = near.clone(), far.clone(), r_near.clone(), torch.zeros_like(t)
    found = torch.zeros_like(active)
    searching = active & torch.isfinite(near) & torch.isfinite(r_near)
    for _ in range(_CUSTOM_MAX_ITER):
        if not bool(searching.any()):
            break
        a, b = torch.minimum(near, far), torch.maximum(near, far)
        mid = _bracket_midpoint(a, b)
        searching = searching & (mid > a) & (mid < b)  # (else near and far are neighbouring floats)
        r = first(mid) - t
        ok = torch.isfinite(r)
        past = ok & torch.where(upward, r >= 0, r <= 0)
        hit, short, wall = searching & past, searching & ok & ~past, searching & ~ok
        lo = torch.where(hit, torch.where(upward, near, mid), lo)
        hi = torch.where(hit, torch.where(upward, mid, near), hi)
        r_lo = torch.where(hit, torch.where(upward, r_near, r), r_lo)
        r_hi = torch.where(hit, torch.where(upward, r, r_near), r_hi)
        near, r_near = torch.where(short, mid, near), torch.where(short, r, r_near)
        far = torch.where(wall, mid, far)
        found = found | hit
        searching = searching & ~hit
    return _Search(lo, hi, r_lo, r_hi, found, near, r_near + t, far)
