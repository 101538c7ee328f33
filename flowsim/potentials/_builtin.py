"""Built-in potentials with closed-form or Newton-inverted mirror maps, and their parameter checks."""

from __future__ import annotations

import math
from typing import Any, final

import torch
from torch import Tensor

from ..errors import InvalidParameterError
from ._base import AbstractPotential, Horizon, _as_tensor, _const
from ._roots import _invert_odd_log_softplus


def _lp_horizon(p: float, coefficient: float) -> Horizon:
    return Horizon("l2" if p == 2.0 else "lp", float(p), float(p), float(coefficient))


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


@final
class Euclidean(AbstractPotential):
    """Euclidean potential φ(x) = x²/2: mirror flow is gradient flow.

    φ′(x) = x, (φ′)⁻¹(z) = z, φ″ = 1, Q(x) = x²/2; horizon ℓ2 with Q∞(x) = x²/2.
    """

    name = "euclidean"
    inverse_hessian_finite = True  # 1/φ″ is finite at every finite θ (the Filippov driver skips its check)

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
    inverse_hessian_finite = True  # 1/φ″ is finite at every finite θ (the Filippov driver skips its check)

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

    def q_excess(self, theta: Tensor) -> Tensor:
        """Q(x) − Q(0) = √(x² + β²) − β = x²/(√(x² + β²) + β), without cancellation or overflow."""
        x = _as_tensor(theta).abs()
        return x * (x / (self._hypot(x) + self.beta))

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
    adaptive solvers take small steps there and lose accuracy. Explicit methods get across slowly (a linear
    model, rtol 1e-8: 432,000 RHS evaluations across one crossing); ``method="radau"`` applies its Newton
    updates to θ for this potential and crosses (the same model reaches log t = 40 in 9,854;
    docs/horizons.md). :class:`SmoothedHomogeneous` and :class:`PPowerPlusQuadratic` have the
    same ℓp horizon without the singularity.

    Args:
        p: exponent p > 1 (finite).

    Raises:
        InvalidParameterError: if `p` is not a finite number > 1.

    References:
        Sun et al., "Mirror Descent Maximizes Generalized Margin and Can Be Implemented Efficiently",
        NeurIPS 2022; Pesme, Dragomir & Flammarion, NeurIPS 2024, arXiv:2406.12763.
    """

    name = "p_power"
    inverse_hessian_finite = False  # 1/φ″ = inf at θ = 0 for p > 2 (set per instance)

    def __init__(self, p: float) -> None:
        self.p = _check_exponent("PPower", p)
        self.inverse_hessian_finite = self.p <= 2.0

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
    inverse_hessian_finite = True  # 1/φ″ is finite at every finite θ (the Filippov driver skips its check)

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
            # (the clamp changes only u = ±inf: x = u there, not inf·0)
            u = z / 3.0
            s = (torch.hypot(u, _const(0.5 * self.lam, u)) + 0.5 * self.lam).clamp_max(torch.finfo(u.dtype).max)
            return u * torch.rsqrt(s)
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
            # (c/r written as torch evaluates it, reciprocal(r)·c, without its Python-level detour)
            r = self._radius(theta)
            return torch.reciprocal(3.0 * (2.0 * theta * (theta / r) + torch.reciprocal(r) * self.lam))
        r, k = self._curvature(theta)  # r^{2−p} and k separately: r^{3−p} alone overflows for p < 2
        return r.pow(2.0 - self.p) / (self.p * k)

    def q_function(self, theta: Tensor) -> Tensor:
        """Q(x) = (x²+λ)^{p/2−1}((p−1)x² − λ) (reconstructed balance quantity)."""
        theta = _as_tensor(theta)
        r = self._radius(theta)
        cos, sin = theta / r, self._sqrt_lam / r
        return r.pow(self.p) * ((self.p - 1.0) * cos.square() - sin.square())

    def q_excess(self, theta: Tensor) -> Tensor:
        """Q(x) − Q(0) = Q(x) + λ^{p/2} ≥ 0 without cancellation near 0.

        For |x| ≤ √λ it is (p−1)x² r^{p−2} − λ^{p/2}·expm1((p/2 − 1)·log1p(x²/λ)) (both terms O(x²), of
        ratios that never cancel: ½pλ^{p/2−1}x² to leading order); beyond, Q(x) + λ^{p/2} directly (there
        Q(x) − Q(0) ≥ (1 − 2^{-1/2})λ^{p/2} for every p > 1, and x² is never formed, so nothing overflows).
        """
        theta = _as_tensor(theta)
        p, lam = self.p, self.lam
        floor = lam ** (0.5 * p)
        near = theta.abs() <= self._sqrt_lam
        x = torch.where(near, theta, torch.zeros_like(theta))
        x2 = x.square()
        inner = (p - 1.0) * x2 * self._radius(x).pow(p - 2.0) - floor * torch.expm1(
            (0.5 * p - 1.0) * torch.log1p(x2 / lam)
        )
        return torch.where(near, inner, self.q_function(theta) + floor).clamp_min(0.0)

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
    inverse_hessian_finite = True  # 1/φ″ is finite at every finite θ (the Filippov driver skips its check)

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
