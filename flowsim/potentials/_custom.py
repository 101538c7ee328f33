"""Potentials from a user's φ: :class:`SeparablePotential` and the numerical :func:`estimate_horizon`."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any, final

import torch
from torch import Tensor

from ..errors import InvalidParameterError
from ._base import AbstractPotential, Horizon, _as_tensor
from ._roots import _solve_increasing

# estimate_horizon: Q is sampled at |x| = 1e6, 1e7, ..., 1e14.
_HORIZON_EXPONENTS = tuple(range(6, 15))
_HORIZON_SNAP = 1e-3


@final
class SeparablePotential(AbstractPotential):
    """A separable potential from a user's elementwise φ (value only).

    φ′ and φ″ are computed by autograd (φ acts elementwise, so the gradient of Σ φ(x) is φ′(x));
    (φ′)⁻¹ by a vectorized safeguarded Newton iteration with bracket expansion and bisection fallback
    (relative tolerances only); Q = xφ′ − φ; the horizon, if not given, by :func:`estimate_horizon`.
    φ must be strictly convex with φ′ onto R (e.g. superlinear); where the solution of φ′(x) = z lies
    beyond the float range (φ′ finite and still short of z at the largest float) :meth:`inverse_mirror_map`
    returns ±inf. Where φ′ computed by torch stops being finite first (inf or nan: an overflow in φ or its
    derivative, e.g. ``x / beta`` or ``x**2`` near the float range) the root is hidden, and
    :meth:`inverse_mirror_map` raises :class:`~flowsim.errors.PotentialOverflowError` naming the coordinate,
    unless a point past z where φ′ is finite brackets the root (then it is found as usual).

    This is much slower than the built-ins (autograd in every Newton iteration); prefer a built-in
    when one fits.

    Args:
        phi: elementwise torch function x ↦ φ(x) returning a tensor of the same shape and dtype,
            differentiable twice by autograd.
        name: a label for reports (default ``"custom"``).
        horizon: the :class:`Horizon` of Q, or None to estimate it numerically.

    Raises:
        InvalidParameterError: if `phi` is not callable, not differentiable by autograd, not elementwise, not
            strictly convex at test points (φ″ > 0),
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
        with torch.enable_grad():
            differentiable = self._phi(x.clone().requires_grad_(True)).requires_grad
        if not differentiable:
            raise InvalidParameterError(
                "SeparablePotential: phi must be differentiable by torch autograd, but phi(x) does not depend on x "
                "through torch operations (a constant, a detached tensor or a numpy round trip); write phi with "
                "torch operations on x, e.g. phi=lambda x: x**4 / 4 + x**2 / 2"
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
                # (where φ″ ≡ 0, e.g. φ = |x|, autograd returns an unallocated zero tensor: .tolist() fails on it)
                curvature = torch.zeros_like(x) if curvature is None else curvature.clone()
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
        """Solve φ′(x) = z by safeguarded Newton (±inf where the root is beyond the float range).

        Raises:
            PotentialOverflowError: where φ′ stops being finite (inf or nan) before it reaches z (see the class
                docstring); the message names this potential, the coordinate, z and where φ′ stops. In a run this
                ends it with status ``failed``, its trajectory so far kept.
        """
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
            return _solve_increasing(first, both, z, guesses, what=f"SeparablePotential {self.name!r}")

    def params(self) -> dict[str, Any]:
        """``{"name": name}`` (the callable phi itself cannot be serialized)."""
        return {"name": self.name}


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
