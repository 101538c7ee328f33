"""The mirror-flow vector field in dual coordinates, in plain time t or log-time s = log(1 + t).

Mirror flow d/dt ∇Φ(θ) = −∇L(θ) is integrated in dual coordinates z = ∇Φ(θ), θ = ∇Φ*(z):

    dz/dt = −∇L(θ) = Σ_i c_i(t) ∇_θ q_i(θ),   c_i = −ℓ′(q_i) ≥ 0,

which avoids the singular Hessian of |x|^p potentials at θ = 0. In **log-time**
s = log(1 + t), dt/ds = e^s, so dz/ds = Σ_i exp(s + log(−ℓ′(q_i))) ∇q_i: the factor e^s is folded into the
loss exponents and the field stays O(1) however large t is; t is never formed (docs/horizons.md).

References:
    Nemirovski & Yudin, "Problem Complexity and Method Efficiency in Optimization", 1983 (mirror descent).
    Jacobs & Montúfar, "Implicit Bias of Mirror Flow in Homogeneous Neural Networks: Sparse and Dense
    Feature Learning", arXiv 2605.19458 (2026).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .errors import InvalidParameterError
from .losses import AbstractLoss
from .models import AbstractModel
from .potentials import AbstractPotential

__all__ = ["MirrorFlowField", "TIME_MODES"]

TIME_MODES = ("log", "linear")


class MirrorFlowField:
    """Right-hand side dz/dτ of mirror flow for one model, potential, loss and data set.

    Call it as ``field(tau, z)`` with ``tau`` the integration variable (log-time s = log(1+t) when
    ``time="log"``, plain time t when ``time="linear"``) and ``z`` the dual state, shape `(p,)`, float64.
    It returns dz/dτ with the same shape and counts its evaluations in ``nfe``.

    Args:
        model: the homogeneous model f(θ; x).
        potential: the mirror potential Φ.
        loss: the margin loss ℓ.
        X: inputs, shape `(n, d)`, float64, on the state's device.
        y: labels ±1, shape `(n,)`, same dtype/device.
        time: "log" (default) or "linear".

    Raises:
        InvalidParameterError: if ``time`` is not one of ``TIME_MODES``.
    """

    def __init__(
        self,
        model: AbstractModel,
        potential: AbstractPotential,
        loss: AbstractLoss,
        X: Tensor,
        y: Tensor,
        *,
        time: str = "log",
    ) -> None:
        if time not in TIME_MODES:
            raise InvalidParameterError(f"time must be one of {TIME_MODES}, got {time!r}")
        self.model = model
        self.potential = potential
        self.loss = loss
        self.X = X
        self.y = y
        self.log_time = time == "log"
        self.nfe = 0

    def margins(self, theta: Tensor) -> Tensor:
        """q_i = y_i f(θ; x_i), shape `(n,)`."""
        return self.y * self.model.forward(theta, self.X)

    def loss_weights(self, tau: Tensor | float, q: Tensor) -> Tensor:
        """c_i ≥ 0 with dz/dτ = Σ_i c_i ∇q_i (e^s folded in for log-time). Shape `(n,)`."""
        log_c = self.loss.log_neg_derivative(q)
        if self.log_time:
            log_c = log_c + tau
        return torch.exp(log_c)

    def dual_velocity(self, tau: Tensor | float, theta: Tensor) -> Tensor:
        """dz/dτ at primal point θ, shape `(p,)`: Σ_i c_i y_i ∇_θ f(θ; x_i), one vector–Jacobian product
        (:meth:`~flowsim.models.AbstractModel.forward_and_vjp`: closed form for two-layer models, autograd
        otherwise)."""
        f, vjp = self.model.forward_and_vjp(theta, self.X)
        c = self.loss_weights(tau, self.y * f)
        return vjp(c * self.y)

    def __call__(self, tau: Tensor, z: Tensor) -> Tensor:
        self.nfe += 1
        return self.dual_velocity(tau, self.potential.inverse_mirror_map(z))
