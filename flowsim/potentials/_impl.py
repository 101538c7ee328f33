"""Separable mirror-flow potentials Φ(θ) = Σ_k φ(θ_k).

Mirror flow d/dt ∇Φ(θ) = −∇L(θ) is integrated in dual coordinates z = ∇Φ(θ), θ = ∇Φ*(z), so the two
methods on the hot path are :meth:`AbstractPotential.mirror_map` (φ′) and
:meth:`AbstractPotential.inverse_mirror_map` ((φ′)⁻¹). Every method acts elementwise on tensors of any
shape (the sums :meth:`~AbstractPotential.value`, :meth:`~AbstractPotential.bregman_divergence` and
:meth:`~AbstractPotential.horizon_function` reduce over the last dimension), takes dtype and device from
its input and never touches global torch state (default dtype, RNG).

| potential | φ(x) | φ′ | (φ′)⁻¹ | 1/φ″ | Q = xφ′ − φ | horizon Q∞ |
|---|---|---|---|---|---|---|
| :class:`Euclidean` | x²/2 | x | z | 1 | x²/2 | ℓ2, x²/2 |
| :class:`HyperbolicEntropy` | x·asinh(x/β) − √(x²+β²) | asinh(x/β) | β sinh z | √(x²+β²) | √(x²+β²) | ℓ1, \\|x\\| |
| :class:`PPower` | \\|x\\|^p/p | sign(x)\\|x\\|^{p−1} | closed form | \\|x\\|^{2−p}/(p−1) | (1−1/p)\\|x\\|^p | ℓp |
| :class:`SmoothedHomogeneous` | (x²+λ)^{p/2} | p x (x²+λ)^{p/2−1} | Newton | closed | closed | ℓp, (p−1)\\|x\\|^p |
| :class:`PPowerPlusQuadratic` | \\|x\\|^p/p + λx²/2 | sign(x)\\|x\\|^{p−1} + λx | Newton | closed | closed | ℓp/ℓ2 |

:class:`SeparablePotential` wraps a user's φ (value only): φ′ and φ″ come from autograd, (φ′)⁻¹ from a
vectorized safeguarded Newton iteration and the horizon from :func:`estimate_horizon`.
:func:`get_potential` builds a built-in potential from its name.

References:
    Pesme, Dragomir & Flammarion, "Implicit Bias of Mirror Flow on Separable Data", NeurIPS 2024,
    arXiv:2406.12763 (horizon functions).
    Jacobs & Montúfar, arXiv:2605.19458 (2026), the seed paper of this project. Its body could not be
    read: the two non-homogeneous p-families and the balance quantity Q are reconstructions (see the
    class docstrings).
"""

from __future__ import annotations

import abc
import functools
import inspect
import math
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple, final

import numpy as np
import torch
from torch import Tensor

from ..errors import InvalidParameterError

__all__ = [
    "Horizon",
    "AbstractPotential",
    "Euclidean",
    "HyperbolicEntropy",
    "PPower",
    "SmoothedHomogeneous",
    "PPowerPlusQuadratic",
    "SeparablePotential",
    "estimate_horizon",
    "get_potential",
    "POTENTIALS",
]

_LOG2 = math.log(2.0)
# Newton iterations for the built-in inverse mirror maps (a good start converges in 3-6).
_NEWTON_MAX_ITER = 60
# Safeguarded Newton for user potentials: bracket expansions (the step grows like 2^{k(k+1)/2}, so
# 70 expansions span the whole float64 range) and Newton/bisection iterations.
_CUSTOM_MAX_EXPAND = 70
_CUSTOM_MAX_ITER = 100
# Bregman divergence: Gauss-Legendre quadrature of δ² ∫₀¹ (1−s) φ″(b + sδ) ds when |δ| is at most this
# fraction of the distance from b to the nearest singularity of φ″ (there 8 nodes give ~1e-16 relative).
_BREGMAN_QUAD_FRACTION = 0.25
_gl_nodes, _gl_weights = np.polynomial.legendre.leggauss(8)
_BREGMAN_QUAD_NODES = (_gl_nodes + 1.0) / 2.0
_BREGMAN_QUAD_WEIGHTS = _gl_weights / 2.0 * (1.0 - _BREGMAN_QUAD_NODES)
# estimate_horizon: Q is sampled at |x| = 1e6, 1e7, ..., 1e14.
_HORIZON_EXPONENTS = tuple(range(6, 15))
_HORIZON_SNAP = 1e-3


def _as_tensor(x: Any) -> Tensor:
    """Return `x` as a floating tensor (float64 for Python numbers and integer tensors)."""
    if isinstance(x, Tensor):
        return x if x.is_floating_point() else x.to(torch.float64)
    return torch.as_tensor(x, dtype=torch.float64)


def _const(value: float, like: Tensor) -> Tensor:
    """A 0-d tensor holding `value` with the dtype and device of `like` (cached: read-only, never modified)."""
    return _cached_const(value, like.dtype, like.device)


@functools.lru_cache(maxsize=256)
def _cached_const(value: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    # a normal tensor even when first asked for under inference mode (the Filippov driver's): autograd
    # (Hessians of generic potentials) may save it for backward later
    with torch.inference_mode(False):
        return torch.as_tensor(value, dtype=dtype, device=device)


# --------------------------------------------------------------------------------------------------
# Horizon
# --------------------------------------------------------------------------------------------------


class Horizon(NamedTuple):
    """Horizon of a separable potential: the asymptote Q∞(x) = coefficient·|x|^alpha of Q = φ*∘φ′.

    The horizon function Σ_k Q∞(θ_k) is an α-homogeneous power of the ℓp gauge ‖θ‖_p that governs the
    implicit bias of mirror flow: on linearly separable data the iterates converge in direction to
    argmin ‖w‖_p subject to y_i⟨x_i, w⟩ ≥ 1.

    Attributes:
        name: ``"l2"``, ``"l1"`` or ``"lp"``.
        p: exponent of the ℓp gauge of the horizon (2, 1 or p).
        alpha: homogeneity degree of Q∞ (2 Euclidean, 1 hyperbolic entropy, p for the p-families;
            2 for p-power plus quadratic with p < 2).
        coefficient: Q∞(x) = coefficient·|x|^alpha elementwise.

    References:
        Pesme, Dragomir & Flammarion, "Implicit Bias of Mirror Flow on Separable Data", NeurIPS 2024,
        arXiv:2406.12763.
    """

    name: str
    p: float
    alpha: float
    coefficient: float

    def function(self, theta: Tensor) -> Tensor:
        """Horizon function Σ_k coefficient·|θ_k|^alpha over the last dimension.

        Args:
            theta: parameters, shape `(..., d)`, floating (Python numbers become float64).

        Returns:
            Tensor of shape `(...)`, dtype and device of `theta`.
        """
        theta = _as_tensor(theta)
        return (self.coefficient * theta.abs().pow(self.alpha)).sum(-1)


def _lp_horizon(p: float, coefficient: float) -> Horizon:
    return Horizon("l2" if p == 2.0 else "lp", float(p), float(p), float(coefficient))


# --------------------------------------------------------------------------------------------------
# Parameter validation
# --------------------------------------------------------------------------------------------------


def _real(owner: str, name: str, value: Any, example: str) -> float:
    bad = isinstance(value, (bool, str, bytes))
    if not bad:
        try:
            v = float(value)
        except (TypeError, ValueError, RuntimeError):
            bad = True
    if bad:
        raise InvalidParameterError(
            f"{owner} needs a real number for {name}, got {value!r} of type {type(value).__name__}; "
            f"pass a float such as {name}={example}"
        )
    return v


def _check_positive(owner: str, name: str, value: Any, example: str, what: str) -> float:
    v = _real(owner, name, value, example)
    if not math.isfinite(v):
        raise InvalidParameterError(
            f"{owner} needs a finite {name} > 0, got {v!r}; pass a positive {what} such as {name}={example}"
        )
    if v <= 0.0:
        raise InvalidParameterError(
            f"{owner} needs {name} > 0, got {v!r}; pass a positive {what} such as {name}={example}"
        )
    return v


def _check_exponent(owner: str, value: Any) -> float:
    p = _real(owner, "p", value, "1.5")
    if not math.isfinite(p) or p <= 1.0:
        raise InvalidParameterError(
            f"{owner} needs a finite exponent p > 1, got p={p!r}: for p <= 1 the potential is not strictly "
            f"convex with an invertible mirror map (p = 1 is the non-smooth l1 norm). Pass e.g. p=1.5 or "
            f"p=3; for an l1-type implicit bias use HyperbolicEntropy(beta=0.1) instead"
        )
    return p


def _is_even_integer(p: float) -> bool:
    return p == math.floor(p) and int(p) % 2 == 0


# --------------------------------------------------------------------------------------------------
# Root finding
# --------------------------------------------------------------------------------------------------


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
) -> Tensor:
    """Solve f(x) = target elementwise for a strictly increasing f (vectorized safeguarded Newton).

    Starting points: 0, the Newton step from 0 (the linear regime) and `guesses` (e.g. the asymptotic
    power-law inverse); each one's residual sign tightens the bracket [lo, hi]. A missing side of the
    bracket is found by probing from the best point with steps growing like 2^{k(k+1)/2} (any float is
    reached in at most ~70 probes). Then Newton steps are taken while they stay strictly inside the
    bracket and shrink at least by half every step (as in Numerical Recipes' ``rtsafe``), bisection
    otherwise (in log|x| for brackets spanning decades). All tolerances are relative.

    Args:
        first: x ↦ f(x); both: x ↦ (f(x), f′(x)).
        target: values, any shape, floating.
        guesses: optional starting points, same shape as `target` (non-finite entries are ignored).

    Returns:
        x with f(x) = target, same shape/dtype/device; ±inf where the root lies beyond the largest float
        (or f never reaches the target), nan where f is nan along the way.
    """
    finfo = torch.finfo(target.dtype)
    eps, big = finfo.eps, finfo.max
    rtol = 0.01 * math.sqrt(eps)
    finite = torch.isfinite(target)
    t = torch.where(finite, target, torch.zeros_like(target))
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
    bracketed = torch.isfinite(lo) & torch.isfinite(hi)
    x = torch.where(r_lo.abs() <= r_hi.abs(), lo, hi)
    x = torch.where(bracketed, x, zero)
    done = ~bracketed | ~finite | (r_lo == 0) | (r_hi == 0)
    step_old = torch.where(bracketed, hi - lo, inf)
    for _ in range(_CUSTOM_MAX_ITER):
        if bool(done.all()):
            break
        f, df = both(x)
        r = f - t
        lo = torch.where(r < 0, x, lo)
        hi = torch.where(r > 0, x, hi)
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
    x = torch.where(bracketed, x, torch.full_like(x, math.nan))
    x = torch.where(beyond, torch.where(lo > 0, inf, -inf), x)
    return torch.where(finite, x, target)


# --------------------------------------------------------------------------------------------------
# Base class
# --------------------------------------------------------------------------------------------------


class AbstractPotential(abc.ABC):
    """A separable Legendre potential Φ(θ) = Σ_k φ(θ_k) with φ strictly convex and φ′ onto R.

    Subclasses implement φ, φ′, (φ′)⁻¹, φ″, the horizon and their parameters; the base class derives
    Φ, the inverse Hessian, the Bregman divergence, Q and the horizon function from them. Every method
    is elementwise on tensors of any shape (sums reduce the last dimension), takes dtype and device from
    its input and converts Python numbers to float64 tensors.

    Mirror flow is integrated in dual coordinates, dz/dt = −∇L(∇Φ*(z)), so only :meth:`mirror_map`
    and :meth:`inverse_mirror_map` are on the hot path; the Hessian methods serve the primal form
    dθ/dt = −(∇²Φ(θ))⁻¹∇L(θ) and diagnostics and may be infinite or zero at θ = 0 (p-power families).

    Attributes:
        name: registry name of the potential (e.g. ``"hyperbolic_entropy"``).
        horizon: the :class:`Horizon` of Q = φ*∘φ′.
    """

    name: str = "abstract"

    @property
    @abc.abstractmethod
    def horizon(self) -> Horizon:
        """The horizon Q∞(x) = coefficient·|x|^alpha of Q (see :class:`Horizon`)."""

    @abc.abstractmethod
    def phi(self, x: Tensor) -> Tensor:
        """Elementwise φ(x); any shape, dtype and device of `x`."""

    @abc.abstractmethod
    def mirror_map(self, theta: Tensor) -> Tensor:
        """Mirror map z = ∇Φ(θ) = φ′(θ) elementwise; any shape, dtype and device of `theta`."""

    @abc.abstractmethod
    def inverse_mirror_map(self, z: Tensor) -> Tensor:
        """Inverse mirror map θ = ∇Φ*(z) = (φ′)⁻¹(z) elementwise; any shape, dtype and device of `z`."""

    @abc.abstractmethod
    def hessian_diag(self, theta: Tensor) -> Tensor:
        """Diagonal of ∇²Φ(θ), i.e. φ″(θ) elementwise; any shape, dtype and device of `theta`."""

    @abc.abstractmethod
    def params(self) -> dict[str, Any]:
        """Constructor keyword arguments as a JSON-able dict, e.g. ``{"beta": 0.1}``."""

    def value(self, theta: Tensor) -> Tensor:
        """Potential Φ(θ) = Σ_k φ(θ_k) over the last dimension.

        Args:
            theta: parameters, shape `(..., d)`, floating.

        Returns:
            Tensor of shape `(...)`.
        """
        return self.phi(theta).sum(-1)

    def inverse_hessian_diag(self, theta: Tensor) -> Tensor:
        """Diagonal of (∇²Φ(θ))⁻¹, i.e. 1/φ″(θ) elementwise (0 where φ″ = inf, inf where φ″ = 0).

        Args:
            theta: parameters, any shape, floating.

        Returns:
            Tensor of the same shape, dtype and device.
        """
        return torch.reciprocal(self.hessian_diag(theta))

    def inverse_hessian_action(self, theta: Tensor, v: Tensor) -> Tensor:
        """(∇²Φ(θ))⁻¹ v for a separable Φ: the elementwise product (1/φ″(θ))·v.

        Where 1/φ″ is infinite (p-power with p > 2 at θ_k = 0) the result is ±inf, or nan if v_k = 0;
        flows are integrated in dual coordinates, where this singularity does not arise.

        Args:
            theta: parameters, shape `(..., d)`, floating.
            v: vector, broadcastable with `theta`.

        Returns:
            Tensor of the broadcast shape.
        """
        return self.inverse_hessian_diag(theta) * _as_tensor(v)

    def bregman_divergence(self, a: Tensor, b: Tensor) -> Tensor:
        """Bregman divergence D_Φ(a, b) = Φ(a) − Φ(b) − ⟨∇Φ(b), a − b⟩, summed over the last dimension.

        Each coordinate term is computed as φ(a) − φ(b) − φ′(b)(a − b), clipped at 0 (its exact value
        is ≥ 0 by convexity); when |a − b| is small compared with the distance from b to the nearest
        singularity of φ″ (built-in potentials only) it is computed instead as
        (a − b)² ∫₀¹ (1 − s) φ″(b + s(a − b)) ds by 8-point Gauss-Legendre quadrature, which keeps full
        relative accuracy as a → b where the direct formula cancels.

        Args:
            a, b: parameters, broadcastable shapes `(..., d)`, floating.

        Returns:
            Tensor of shape `(...)`, non-negative, 0 where a = b.
        """
        a, b = _as_tensor(a), _as_tensor(b)
        dtype = torch.promote_types(a.dtype, b.dtype)
        a, b = torch.broadcast_tensors(a.to(dtype), b.to(dtype))
        delta = a - b
        divergence = (self.phi(a) - self.phi(b) - self.mirror_map(b) * delta).clamp_min(0.0)
        radius = self._analytic_radius(b)
        if radius is not None:
            near = (delta.abs() <= _BREGMAN_QUAD_FRACTION * radius) & (delta != 0)
            if bool(near.any()):
                nodes = torch.as_tensor(_BREGMAN_QUAD_NODES, dtype=dtype, device=a.device)
                weights = torch.as_tensor(_BREGMAN_QUAD_WEIGHTS, dtype=dtype, device=a.device)
                points = b.unsqueeze(-1) + nodes * delta.unsqueeze(-1)
                quadrature = delta.square() * (self.hessian_diag(points) * weights).sum(-1)
                divergence = torch.where(near, quadrature, divergence)
        return divergence.sum(-1)

    def _analytic_radius(self, b: Tensor) -> Tensor | None:
        """Distance from b to the nearest singularity of φ″ in the complex plane (None: unknown)."""
        return None

    def q_function(self, theta: Tensor) -> Tensor:
        """Balance quantity Q(x) = φ*(φ′(x)) = xφ′(x) − φ(x), elementwise.

        Q_Φ(θ) = Φ*(∇Φ(θ)) satisfies d/dt Q_Φ(θ_t) = ⟨θ_t, d/dt ∇Φ(θ_t)⟩; with the rescaling symmetry
        of positively homogeneous activations this makes B_j = Σ_k Q(w_jk) − Σ_r Q(a_jr) a conserved
        quantity of mirror flow for every hidden neuron j. This is a reconstruction of the seed paper's
        "balance equation from convex duality" (its body could not be read).

        Args:
            theta: parameters, any shape, floating.

        Returns:
            Tensor of the same shape, dtype and device.

        References:
            Jacobs & Montúfar, arXiv:2605.19458 (2026).
        """
        theta = _as_tensor(theta)
        return theta * self.mirror_map(theta) - self.phi(theta)

    def q_horizon(self, theta: Tensor) -> Tensor:
        """Asymptote Q∞(x) = coefficient·|x|^alpha of :meth:`q_function`, elementwise.

        Args:
            theta: parameters, any shape, floating.

        Returns:
            Tensor of the same shape, dtype and device.
        """
        horizon = self.horizon
        return horizon.coefficient * _as_tensor(theta).abs().pow(horizon.alpha)

    def horizon_function(self, theta: Tensor) -> Tensor:
        """Horizon function Σ_k Q∞(θ_k) over the last dimension (``self.horizon.function(theta)``).

        Args:
            theta: parameters, shape `(..., d)`, floating.

        Returns:
            Tensor of shape `(...)`.

        References:
            Pesme, Dragomir & Flammarion, "Implicit Bias of Mirror Flow on Separable Data",
            NeurIPS 2024, arXiv:2406.12763.
        """
        return self.horizon.function(theta)

    def __repr__(self) -> str:
        args = ", ".join(f"{key}={value!r}" for key, value in self.params().items())
        return f"{type(self).__name__}({args})"


# --------------------------------------------------------------------------------------------------
# Built-in potentials
# --------------------------------------------------------------------------------------------------


@final
class Euclidean(AbstractPotential):
    """Euclidean potential φ(x) = x²/2: mirror flow is gradient flow.

    φ′(x) = x, (φ′)⁻¹(z) = z, φ″ = 1, Q(x) = x²/2; horizon ℓ2 with Q∞(x) = x²/2.
    """

    name = "euclidean"

    def __init__(self) -> None:
        pass

    @property
    def horizon(self) -> Horizon:
        return Horizon("l2", 2.0, 2.0, 0.5)

    def phi(self, x: Tensor) -> Tensor:
        x = _as_tensor(x)
        return 0.5 * x.square()

    def mirror_map(self, theta: Tensor) -> Tensor:
        return _as_tensor(theta).clone()

    def inverse_mirror_map(self, z: Tensor) -> Tensor:
        return _as_tensor(z).clone()

    def hessian_diag(self, theta: Tensor) -> Tensor:
        return torch.ones_like(_as_tensor(theta))

    def inverse_hessian_diag(self, theta: Tensor) -> Tensor:
        return torch.ones_like(_as_tensor(theta))

    def bregman_divergence(self, a: Tensor, b: Tensor) -> Tensor:
        """D(a, b) = ‖a − b‖²/2 over the last dimension."""
        return (0.5 * (_as_tensor(a) - _as_tensor(b)).square()).sum(-1)

    def q_function(self, theta: Tensor) -> Tensor:
        return self.phi(theta)

    def params(self) -> dict[str, Any]:
        return {}


@final
class HyperbolicEntropy(AbstractPotential):
    """Hyperbolic entropy φ(x) = x·asinh(x/β) − √(x² + β²), β > 0.

    φ′(x) = asinh(x/β), (φ′)⁻¹(z) = β sinh(z), φ″(x) = 1/√(x² + β²), Q(x) = √(x² + β²); horizon ℓ1
    with Q∞(x) = |x|. Near the origin this is gradient flow with learning rate β; gradient flow on the
    diagonal network θ = u⊙v from u₀ = α·1, v₀ = 0 is mirror flow with mirror map
    ½ asinh(2θ/α²) = ½φ′ for β = α²/2 (this potential's flow at twice the speed).

    Args:
        beta: scale β > 0 (finite).

    Raises:
        InvalidParameterError: if `beta` is not a finite positive number.

    References:
        Woodworth et al., "Kernel and Rich Regimes in Overparametrized Models", COLT 2020;
        Pesme, Dragomir & Flammarion, NeurIPS 2024, arXiv:2406.12763.
    """

    name = "hyperbolic_entropy"

    def __init__(self, beta: float) -> None:
        self.beta = _check_positive("HyperbolicEntropy", "beta", beta, "0.1", "scale")

    @property
    def horizon(self) -> Horizon:
        return Horizon("l1", 1.0, 1.0, 1.0)

    def _hypot(self, x: Tensor) -> Tensor:
        return torch.hypot(x, _const(self.beta, x))

    def phi(self, x: Tensor) -> Tensor:
        x = _as_tensor(x)
        return x * torch.asinh(x / self.beta) - self._hypot(x)

    def mirror_map(self, theta: Tensor) -> Tensor:
        return torch.asinh(_as_tensor(theta) / self.beta)

    def inverse_mirror_map(self, z: Tensor) -> Tensor:
        """θ = β sinh(z) (overflows to ±inf for |z| > ~710)."""
        return self.beta * torch.sinh(_as_tensor(z))

    def hessian_diag(self, theta: Tensor) -> Tensor:
        return torch.reciprocal(self._hypot(_as_tensor(theta)))

    def inverse_hessian_diag(self, theta: Tensor) -> Tensor:
        return self._hypot(_as_tensor(theta))

    def q_function(self, theta: Tensor) -> Tensor:
        """Q(x) = √(x² + β²) (reconstructed balance quantity, see :meth:`AbstractPotential.q_function`)."""
        return self._hypot(_as_tensor(theta))

    def _analytic_radius(self, b: Tensor) -> Tensor:
        return self._hypot(b)

    def params(self) -> dict[str, Any]:
        return {"beta": self.beta}


@final
class PPower(AbstractPotential):
    """p-power potential φ(x) = |x|^p / p, p > 1.

    φ′(x) = sign(x)|x|^{p−1}, (φ′)⁻¹(z) = sign(z)|z|^{1/(p−1)}, φ″(x) = (p−1)|x|^{p−2},
    Q(x) = (1 − 1/p)|x|^p; horizon ℓp with Q∞ = Q.

    At x = 0, φ″ is infinite for p < 2 (so :meth:`inverse_hessian_diag` is 0 there: the primal flow
    sticks at 0) and 0 for p > 2 (the inverse Hessian is inf there: the primal flow is singular). Flows
    are integrated in dual coordinates, where only the (continuous) mirror maps are used; for p > 2 the dual
    field is still only Hölder continuous where a coordinate passes through 0 (θ = sign(z)|z|^{1/(p−1)}), so
    adaptive solvers take small steps there and lose accuracy. Measured on ReLU student–teacher data: p = 3
    runs reach 30-300× rtol (Filippov sliding surfaces projected back, :mod:`flowsim.kinks`); p = 4 at rtol
    1e-5 did not finish in 60 s, naive or Filippov. :class:`SmoothedHomogeneous` and
    :class:`PPowerPlusQuadratic` have the same ℓp horizon without the singularity.

    Args:
        p: exponent p > 1 (finite).

    Raises:
        InvalidParameterError: if `p` is not a finite number > 1.

    References:
        Sun et al., "Mirror Descent Maximizes Generalized Margin and Can Be Implemented Efficiently",
        NeurIPS 2022; Pesme, Dragomir & Flammarion, NeurIPS 2024, arXiv:2406.12763.
    """

    name = "p_power"

    def __init__(self, p: float) -> None:
        self.p = _check_exponent("PPower", p)

    @property
    def horizon(self) -> Horizon:
        return _lp_horizon(self.p, 1.0 - 1.0 / self.p)

    def phi(self, x: Tensor) -> Tensor:
        return _as_tensor(x).abs().pow(self.p) / self.p

    def mirror_map(self, theta: Tensor) -> Tensor:
        theta = _as_tensor(theta)
        return torch.sign(theta) * theta.abs().pow(self.p - 1.0)

    def inverse_mirror_map(self, z: Tensor) -> Tensor:
        z = _as_tensor(z)
        return torch.sign(z) * z.abs().pow(1.0 / (self.p - 1.0))

    def hessian_diag(self, theta: Tensor) -> Tensor:
        """φ″(x) = (p−1)|x|^{p−2}: inf at 0 for p < 2, 0 at 0 for p > 2."""
        return (self.p - 1.0) * _as_tensor(theta).abs().pow(self.p - 2.0)

    def inverse_hessian_diag(self, theta: Tensor) -> Tensor:
        """1/φ″(x) = |x|^{2−p}/(p−1): 0 at 0 for p < 2, inf at 0 for p > 2."""
        return _as_tensor(theta).abs().pow(2.0 - self.p) / (self.p - 1.0)

    def q_function(self, theta: Tensor) -> Tensor:
        """Q(x) = (1 − 1/p)|x|^p (reconstructed balance quantity)."""
        return (1.0 - 1.0 / self.p) * _as_tensor(theta).abs().pow(self.p)

    def _analytic_radius(self, b: Tensor) -> Tensor:
        return torch.full_like(b, math.inf) if _is_even_integer(self.p) else b.abs()

    def params(self) -> dict[str, Any]:
        return {"p": self.p}


@final
class SmoothedHomogeneous(AbstractPotential):
    """Smoothed homogeneous potential φ(x) = (x² + λ)^{p/2}, p > 1, λ > 0.

    With r = √(x² + λ): φ′(x) = p x r^{p−2}, φ″(x) = p r^{p−4}((p−1)x² + λ) > 0,
    Q(x) = xφ′ − φ = r^{p−2}((p−1)x² − λ); horizon ℓp with Q∞(x) = (p−1)|x|^p. (φ′)⁻¹ has no closed
    form for general p and is computed by a vectorized safeguarded Newton iteration in log|x| started from the
    asymptotic power-law inverse (about 3-6 iterations, ~1e-16 relative accuracy for any z); for p = 3 it is
    the closed form x = u·√(2/(λ + √(λ² + 4u²))), u = z/3 (x² solves a quadratic; ~4e-16 relative accuracy).
    For |x| ≪ √λ the flow behaves like gradient flow with learning rate 1/(p λ^{p/2−1}).

    The seed paper's exact "smoothed homogeneous potential (p, λ)" could not be read; this family and
    :class:`PPowerPlusQuadratic` are offered as reconstructions with the same horizon.

    Args:
        p: exponent p > 1 (finite).
        lam: smoothing λ > 0 (finite).

    Raises:
        InvalidParameterError: if `p` is not a finite number > 1 or `lam` not a finite number > 0.

    References:
        Jacobs & Montúfar, arXiv:2605.19458 (2026) (reconstructed);
        Pesme, Dragomir & Flammarion, NeurIPS 2024, arXiv:2406.12763.
    """

    name = "smoothed_homogeneous"

    def __init__(self, p: float, lam: float) -> None:
        self.p = _check_exponent("SmoothedHomogeneous", p)
        self.lam = _check_positive("SmoothedHomogeneous", "lam", lam, "1.0", "smoothing")
        self._sqrt_lam = math.sqrt(self.lam)

    @property
    def horizon(self) -> Horizon:
        return _lp_horizon(self.p, self.p - 1.0)

    def _radius(self, x: Tensor) -> Tensor:
        return torch.hypot(x, _const(self._sqrt_lam, x))

    def phi(self, x: Tensor) -> Tensor:
        return self._radius(_as_tensor(x)).pow(self.p)

    def mirror_map(self, theta: Tensor) -> Tensor:
        theta = _as_tensor(theta)
        return self.p * theta * self._radius(theta).pow(self.p - 2.0)

    def inverse_mirror_map(self, z: Tensor) -> Tensor:
        p = self.p
        z = _as_tensor(z)
        if p == 3.0:
            # closed form: x²(x² + λ) = (z/3)² is a quadratic in x², solved without cancellation or overflow:
            # x = u √(2/(λ + √(λ² + 4u²))) = u / √(λ/2 + hypot(λ/2, u))
            u = z / 3.0
            x = u * torch.rsqrt(torch.hypot(u, _const(0.5 * self.lam, u)) + 0.5 * self.lam)
            return torch.where(torch.isinf(u), u, x)
        return _invert_odd_log_softplus(
            _as_tensor(z),
            a=math.log(p),
            b=0.5 * p - 1.0,
            c=2.0,
            d=math.log(self.lam),
            g=self.mirror_map,
            g_prime=self.hessian_diag,
        )

    def _curvature(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        """r and (p−1)x²/r² + λ/r², written without forming x² (no overflow)."""
        r = self._radius(theta)
        cos, sin = theta / r, self._sqrt_lam / r
        return r, (self.p - 1.0) * cos.square() + sin.square()

    def hessian_diag(self, theta: Tensor) -> Tensor:
        r, k = self._curvature(_as_tensor(theta))
        return self.p * r.pow(self.p - 2.0) * k

    def inverse_hessian_diag(self, theta: Tensor) -> Tensor:
        theta = _as_tensor(theta)
        if self.p == 3.0:
            # 1/φ″ = 1/(3 r k), r k = ((p−1)x² + λ)/r = 2x·(x/r) + λ/r: fewer operations, no x² formed (no overflow)
            r = self._radius(theta)
            return 1.0 / (3.0 * (2.0 * theta * (theta / r) + self.lam / r))
        r, k = self._curvature(theta)  # r^{2−p} and k separately: r^{3−p} alone overflows for p < 2
        return r.pow(2.0 - self.p) / (self.p * k)

    def q_function(self, theta: Tensor) -> Tensor:
        """Q(x) = (x²+λ)^{p/2−1}((p−1)x² − λ) (reconstructed balance quantity)."""
        theta = _as_tensor(theta)
        r = self._radius(theta)
        cos, sin = theta / r, self._sqrt_lam / r
        return r.pow(self.p) * ((self.p - 1.0) * cos.square() - sin.square())

    def _analytic_radius(self, b: Tensor) -> Tensor:
        return self._radius(b)

    def params(self) -> dict[str, Any]:
        return {"p": self.p, "lam": self.lam}


@final
class PPowerPlusQuadratic(AbstractPotential):
    """p-power plus quadratic potential φ(x) = |x|^p/p + λx²/2, p > 1, λ > 0.

    φ′(x) = sign(x)|x|^{p−1} + λx, φ″(x) = (p−1)|x|^{p−2} + λ, Q(x) = (1 − 1/p)|x|^p + λx²/2.
    Horizon: ℓp with Q∞ = (1 − 1/p)|x|^p for p > 2; ℓ2 with Q∞ = λx²/2 for p < 2; ℓ2 with
    Q∞ = (1+λ)x²/2 for p = 2. (φ′)⁻¹ is computed by a vectorized safeguarded Newton iteration in
    log|x| (see :class:`SmoothedHomogeneous`). For p > 2 the flow is gradient-flow like for
    |x| ≪ λ^{1/(p−2)}. At x = 0 with p < 2, φ″ = inf and :meth:`inverse_hessian_diag` is 0.

    The seed paper's exact "smoothed homogeneous potential (p, λ)" could not be read; this family and
    :class:`SmoothedHomogeneous` are offered as reconstructions.

    Args:
        p: exponent p > 1 (finite).
        lam: weight λ > 0 (finite) of the quadratic term.

    Raises:
        InvalidParameterError: if `p` is not a finite number > 1 or `lam` not a finite number > 0.

    References:
        Jacobs & Montúfar, arXiv:2605.19458 (2026) (reconstructed);
        Pesme, Dragomir & Flammarion, NeurIPS 2024, arXiv:2406.12763.
    """

    name = "p_power_quadratic"

    def __init__(self, p: float, lam: float) -> None:
        self.p = _check_exponent("PPowerPlusQuadratic", p)
        self.lam = _check_positive("PPowerPlusQuadratic", "lam", lam, "1.0", "weight")

    @property
    def horizon(self) -> Horizon:
        if self.p > 2.0:
            return _lp_horizon(self.p, 1.0 - 1.0 / self.p)
        if self.p < 2.0:
            return Horizon("l2", 2.0, 2.0, 0.5 * self.lam)
        return Horizon("l2", 2.0, 2.0, 0.5 * (1.0 + self.lam))

    def phi(self, x: Tensor) -> Tensor:
        x = _as_tensor(x)
        return x.abs().pow(self.p) / self.p + 0.5 * self.lam * x.square()

    def mirror_map(self, theta: Tensor) -> Tensor:
        theta = _as_tensor(theta)
        return torch.sign(theta) * theta.abs().pow(self.p - 1.0) + self.lam * theta

    def inverse_mirror_map(self, z: Tensor) -> Tensor:
        return _invert_odd_log_softplus(
            _as_tensor(z),
            a=0.0,
            b=1.0,
            c=self.p - 2.0,
            d=math.log(self.lam),
            g=self.mirror_map,
            g_prime=self.hessian_diag,
        )

    def hessian_diag(self, theta: Tensor) -> Tensor:
        """φ″(x) = (p−1)|x|^{p−2} + λ (inf at 0 for p < 2)."""
        return (self.p - 1.0) * _as_tensor(theta).abs().pow(self.p - 2.0) + self.lam

    def q_function(self, theta: Tensor) -> Tensor:
        """Q(x) = (1 − 1/p)|x|^p + λx²/2 (reconstructed balance quantity)."""
        theta = _as_tensor(theta)
        return (1.0 - 1.0 / self.p) * theta.abs().pow(self.p) + 0.5 * self.lam * theta.square()

    def _analytic_radius(self, b: Tensor) -> Tensor:
        return torch.full_like(b, math.inf) if _is_even_integer(self.p) else b.abs()

    def params(self) -> dict[str, Any]:
        return {"p": self.p, "lam": self.lam}


# --------------------------------------------------------------------------------------------------
# User-defined potentials
# --------------------------------------------------------------------------------------------------


@final
class SeparablePotential(AbstractPotential):
    """A separable potential from a user's elementwise φ (value only).

    φ′ and φ″ are computed by autograd (φ acts elementwise, so the gradient of Σ φ(x) is φ′(x));
    (φ′)⁻¹ by a vectorized safeguarded Newton iteration with bracket expansion and bisection fallback
    (relative tolerances only); Q = xφ′ − φ; the horizon, if not given, by :func:`estimate_horizon`.
    φ must be strictly convex with φ′ onto R (e.g. superlinear); where the solution of φ′(x) = z lies
    beyond the float range (or φ′ never reaches z) :meth:`inverse_mirror_map` returns ±inf.

    This is much slower than the built-ins (autograd in every Newton iteration); prefer a built-in
    when one fits.

    Args:
        phi: elementwise torch function x ↦ φ(x) returning a tensor of the same shape and dtype,
            differentiable twice by autograd.
        name: a label for reports (default ``"custom"``).
        horizon: the :class:`Horizon` of Q, or None to estimate it numerically.

    Raises:
        InvalidParameterError: if `phi` is not callable, not elementwise, not convex at test points,
            `horizon` is not a :class:`Horizon`, or the horizon cannot be estimated.

    Example:
        >>> pot = SeparablePotential(lambda x: x**4 / 4 + x**2 / 2, name="quartic")
        >>> pot.horizon.name, round(pot.horizon.alpha, 6)
        ('lp', 4.0)
    """

    def __init__(
        self,
        phi: Callable[[Tensor], Tensor],
        name: str = "custom",
        horizon: Horizon | None = None,
    ) -> None:
        if not callable(phi):
            raise InvalidParameterError(
                f"SeparablePotential needs a callable phi (an elementwise torch function), got "
                f"{type(phi).__name__}; pass e.g. phi=lambda x: x**4 / 4 + x**2 / 2"
            )
        if not isinstance(name, str) or not name:
            raise InvalidParameterError(
                f"SeparablePotential needs a non-empty string name, got {name!r}; pass e.g. name='quartic'"
            )
        self._phi = phi
        self.name = name
        self._horizon: Horizon | None = None  # set below; inverse_mirror_map uses it as a starting guess
        self._check_phi()
        if horizon is None:
            self.horizon_estimated = True
            horizon = estimate_horizon(self)
        elif isinstance(horizon, Horizon):
            self.horizon_estimated = False
        else:
            raise InvalidParameterError(
                f"SeparablePotential needs horizon=None or a Horizon, got {type(horizon).__name__}; pass "
                f"e.g. horizon=Horizon('lp', 4.0, 4.0, 0.75) or leave it None to estimate it"
            )
        self._horizon = horizon

    def _check_phi(self) -> None:
        x = torch.tensor([-3.0, -1.0, -0.5, 0.5, 1.0, 3.0], dtype=torch.float64)
        y = self._phi(x)
        if not isinstance(y, Tensor) or y.shape != x.shape or not y.is_floating_point():
            raise InvalidParameterError(
                f"SeparablePotential: phi must map a float64 tensor of shape {tuple(x.shape)} to a floating "
                f"tensor of the same shape (elementwise), got {type(y).__name__} "
                f"{tuple(getattr(y, 'shape', ()))}; use torch operations, not math/numpy"
            )
        single = self._phi(x[2:3])
        if not torch.allclose(single, y[2:3], rtol=1e-12, atol=0.0):
            raise InvalidParameterError(
                "SeparablePotential: phi must act elementwise (phi(x)[k] may depend on x[k] only); "
                "wrap a scalar function of each coordinate"
            )
        curvature = self.hessian_diag(x)
        if not bool((curvature > 0).all()):
            raise InvalidParameterError(
                f"SeparablePotential: phi must be strictly convex, but phi'' at {x.tolist()} is "
                f"{curvature.tolist()}; pass a strictly convex phi such as x**4/4 + x**2/2"
            )

    @property
    def horizon(self) -> Horizon:
        assert self._horizon is not None
        return self._horizon

    def phi(self, x: Tensor) -> Tensor:
        return self._phi(_as_tensor(x))

    def _derivatives(self, x: Tensor, second: bool) -> tuple[Tensor, Tensor | None]:
        """φ′(x) and (if `second`) φ″(x) by autograd; differentiable if `x` requires grad."""
        keep_graph = x.requires_grad
        with torch.inference_mode(False), torch.enable_grad():
            if keep_graph:
                xg = x
            else:
                xg = (x.clone() if x.is_inference() else x.detach()).requires_grad_(True)
            (first,) = torch.autograd.grad(self._phi(xg).sum(), xg, create_graph=keep_graph or second)
            curvature = None
            if second:
                if first.requires_grad:
                    (curvature,) = torch.autograd.grad(first.sum(), xg, create_graph=keep_graph, allow_unused=True)
                curvature = torch.zeros_like(x) if curvature is None else curvature
        if not keep_graph:
            first = first.detach()
            curvature = None if curvature is None else curvature.detach()
        return first, curvature

    def mirror_map(self, theta: Tensor) -> Tensor:
        return self._derivatives(_as_tensor(theta), second=False)[0]

    def hessian_diag(self, theta: Tensor) -> Tensor:
        curvature = self._derivatives(_as_tensor(theta), second=True)[1]
        assert curvature is not None
        return curvature

    def inverse_mirror_map(self, z: Tensor) -> Tensor:
        """Solve φ′(x) = z by safeguarded Newton (±inf where the root is beyond the float range)."""
        z = _as_tensor(z)

        def first(x: Tensor) -> Tensor:
            return self._derivatives(x, second=False)[0]

        def both(x: Tensor) -> tuple[Tensor, Tensor]:
            f, df = self._derivatives(x, second=True)
            assert df is not None
            return f, df

        z = z.detach()
        guesses = ()
        horizon = self._horizon
        if horizon is not None and horizon.alpha > 1.0 and horizon.coefficient > 0.0:
            # asymptotic inverse of φ′ ≈ sign(x)·(α c/(α−1))|x|^{α−1}, from Q∞ = c|x|^α = (α−1)φ
            alpha, coefficient = horizon.alpha, horizon.coefficient
            scale = (alpha - 1.0) / (alpha * coefficient)
            guesses = (torch.sign(z) * (z.abs() * scale).pow(1.0 / (alpha - 1.0)),)
        with torch.no_grad():
            return _solve_increasing(first, both, z, guesses)

    def params(self) -> dict[str, Any]:
        """``{"name": name}`` (the callable phi itself cannot be serialized)."""
        return {"name": self.name}


# --------------------------------------------------------------------------------------------------
# Horizon estimation and registry
# --------------------------------------------------------------------------------------------------


def _aitken_limit(sequence: list[float]) -> float:
    """Limit of a sequence from its last three terms by Aitken's Δ² when it converges geometrically.

    Falls back to the last term when there are fewer than three terms, the differences are at the
    rounding level, or their ratio is not in (0, 0.9).
    """
    last = sequence[-1]
    if len(sequence) < 3:
        return last
    d1, d2 = sequence[-2] - sequence[-3], last - sequence[-2]
    if abs(d1) <= 1e-10 * max(1.0, abs(last)) or abs(d2) <= 1e-10 * max(1.0, abs(last)):
        return last
    ratio = d2 / d1
    if not 0.0 < ratio < 0.9:
        return last
    return last + d2 * ratio / (1.0 - ratio)


def estimate_horizon(potential: AbstractPotential) -> Horizon:
    """Estimate the horizon Q∞(x) = coefficient·|x|^alpha of a potential from Q at large |x|.

    Q is symmetrized, Q̄(x) = (Q(x) + Q(−x))/2, and sampled at |x| = 1e6, 1e7, ..., 1e14 (points where
    it is not finite and positive are dropped). alpha is the log-log slope of Q̄ between the two
    largest points, improved by Aitken extrapolation when the slopes converge geometrically (as for
    corrections like |x|^{p−2}); alpha within 1e-3 of 1 or 2 is snapped to it ("l1"/"l2"), otherwise
    the name is "lp" with p = alpha. coefficient is the limit of Q̄(x)/|x|^alpha (last point, Aitken
    extrapolated likewise). An asymmetric φ gets the symmetrized horizon. Corrections that decay slowly
    (|x|^{p−2} with p near 2) limit the accuracy.

    Args:
        potential: any :class:`AbstractPotential` (only its ``q_function`` is used).

    Returns:
        The estimated :class:`Horizon`.

    Raises:
        InvalidParameterError: if Q is not finite and positive at two consecutive sample points, or does
            not grow (alpha ≤ 0): then φ is not superlinear, or pass the horizon explicitly.

    Warns:
        RuntimeWarning: if the local slopes have not settled (change > 1e-3 over the last decades).

    References:
        Pesme, Dragomir & Flammarion, NeurIPS 2024, arXiv:2406.12763.
    """
    xs = torch.tensor([10.0**k for k in _HORIZON_EXPONENTS], dtype=torch.float64)
    q = 0.5 * (potential.q_function(xs) + potential.q_function(-xs))
    valid = [bool(v) for v in torch.isfinite(q) & (q > 0)]
    run: list[int] = []
    for i in reversed(range(len(valid))):
        if valid[i]:
            run.insert(0, i)
        elif run:
            break
    if len(run) < 2:
        raise InvalidParameterError(
            f"cannot estimate the horizon of {potential!r}: Q(x) = x*phi'(x) - phi(x) is not finite and "
            f"positive at large |x| (values {q.tolist()} at |x| = {xs.tolist()}); check that phi is "
            f"superlinear and overflow-free, or pass horizon=Horizon(...) explicitly"
        )
    log_x = torch.log(xs[run])
    log_q = torch.log(q[run])
    slopes = [float(s) for s in (log_q[1:] - log_q[:-1]) / (log_x[1:] - log_x[:-1])]
    alpha = _aitken_limit(slopes)
    if not math.isfinite(alpha) or alpha <= 0.0:
        raise InvalidParameterError(
            f"cannot estimate the horizon of {potential!r}: Q does not grow at large |x| (log-log slope "
            f"{alpha!r}); phi must be superlinear, or pass horizon=Horizon(...) explicitly"
        )
    if len(slopes) >= 2 and abs(slopes[-1] - slopes[-2]) > 1e-3 * max(1.0, alpha):
        warnings.warn(
            f"horizon estimate of {potential!r} may be inaccurate: the log-log slope of Q is still "
            f"changing at |x| = {float(xs[run[-1]]):.0e} ({slopes[-2]:.6g} -> {slopes[-1]:.6g}); pass "
            f"horizon=Horizon(...)",
            RuntimeWarning,
            stacklevel=2,
        )
    if abs(alpha - 1.0) <= _HORIZON_SNAP:
        name, alpha = "l1", 1.0
    elif abs(alpha - 2.0) <= _HORIZON_SNAP:
        name, alpha = "l2", 2.0
    else:
        name = "lp"
    coefficient = math.exp(_aitken_limit([float(v) for v in log_q - alpha * log_x]))
    return Horizon(name, alpha, alpha, coefficient)


POTENTIALS: dict[str, type[AbstractPotential]] = {
    "euclidean": Euclidean,
    "hyperbolic_entropy": HyperbolicEntropy,
    "p_power": PPower,
    "smoothed_homogeneous": SmoothedHomogeneous,
    "p_power_quadratic": PPowerPlusQuadratic,
}
_ALIASES = {"he": "hyperbolic_entropy"}
_EXAMPLES = {
    "euclidean": "",
    "hyperbolic_entropy": "beta=0.1",
    "p_power": "p=3.0",
    "smoothed_homogeneous": "p=3.0, lam=1.0",
    "p_power_quadratic": "p=3.0, lam=1.0",
}


def get_potential(name: str, **params: Any) -> AbstractPotential:
    """Build a built-in potential from its name and parameters.

    Args:
        name: ``"euclidean"``, ``"hyperbolic_entropy"`` (alias ``"he"``), ``"p_power"``,
            ``"smoothed_homogeneous"`` or ``"p_power_quadratic"`` (case and ``-``/``_`` ignored).
        **params: constructor parameters (``beta``; ``p``; ``p`` and ``lam``).

    Returns:
        The potential.

    Raises:
        InvalidParameterError: for an unknown name (the message lists the valid ones), an unknown or
            missing parameter, or an invalid parameter value.

    Example:
        >>> get_potential("he", beta=0.1)
        HyperbolicEntropy(beta=0.1)
    """
    valid = ", ".join(f"'{key}'" for key in POTENTIALS) + " (alias 'he' for 'hyperbolic_entropy')"
    if not isinstance(name, str):
        raise InvalidParameterError(f"potential name must be a string, got {name!r}; valid names: {valid}")
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    key = _ALIASES.get(key, key)
    if key not in POTENTIALS:
        raise InvalidParameterError(
            f"unknown potential {name!r}; valid names: {valid}. For your own phi use SeparablePotential(phi)"
        )
    cls = POTENTIALS[key]
    signature = inspect.signature(cls.__init__)
    accepted = [n for n in signature.parameters if n != "self"]
    unknown = sorted(set(params) - set(accepted))
    example = f"get_potential({key!r}{', ' if _EXAMPLES[key] else ''}{_EXAMPLES[key]})"
    if unknown:
        takes = ", ".join(accepted) if accepted else "no parameters"
        raise InvalidParameterError(
            f"potential {key!r} does not take {', '.join(unknown)}; it takes {takes}, e.g. {example}"
        )
    missing = [n for n in accepted if n not in params]
    if missing:
        raise InvalidParameterError(f"potential {key!r} needs {', '.join(missing)}, e.g. {example}")
    return cls(**params)
