"""The potential interface: :class:`AbstractPotential`, its :class:`Horizon`, and tensor helpers."""

from __future__ import annotations

import abc
import functools
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

# Bregman divergence: Gauss-Legendre quadrature of δ² ∫₀¹ (1−s) φ″(b + sδ) ds when |δ| is at most this
# fraction of the distance from b to the nearest singularity of φ″ (there 8 nodes give ~1e-16 relative).
_BREGMAN_QUAD_FRACTION = 0.25
_gl_nodes, _gl_weights = np.polynomial.legendre.leggauss(8)
_BREGMAN_QUAD_NODES = (_gl_nodes + 1.0) / 2.0
_BREGMAN_QUAD_WEIGHTS = _gl_weights / 2.0 * (1.0 - _BREGMAN_QUAD_NODES)


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

    def q_excess(self, theta: Tensor) -> Tensor:
        """Excess Q(x) − Q(0) ≥ 0 of :meth:`q_function` over its minimum, elementwise.

        Q′(x) = xφ″(x) has the sign of x, so Q is smallest at 0 and Q − Q(0) is never negative; it is the
        scale the balance drift is measured against (Q(0) = −φ(0) can be negative, e.g. −λ^{p/2} for the
        smoothed homogeneous potential, so Q itself is no scale). The base class subtracts Q(0) and clamps
        rounding at 0; subclasses whose Q(0) ≠ 0 override it with a form free of cancellation near 0.

        Args:
            theta: parameters, any shape, floating.

        Returns:
            Tensor of the same shape, dtype and device, ≥ 0.
        """
        theta = _as_tensor(theta)
        return (self.q_function(theta) - self.q_function(torch.zeros_like(theta))).clamp_min(0.0)

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
