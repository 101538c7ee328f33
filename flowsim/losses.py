"""Margin-based losses for binary classification, evaluated in log-space.

The training objective is the **sum** over points, L(θ) = Σ_i ℓ(q_i(θ)) with margins q_i = y_i f(θ; x_i)
(the convention of Soudry et al. and Lyu & Li; a mean only rescales time by n). Everything flowsim
needs from a loss is available in log-space, so nothing underflows when L ≈ 1e-300 or below:

* ``log_value(q)`` = log L = log Σ_i ℓ(q_i), by log-sum-exp;
* ``log_neg_derivative(q)`` = log(−ℓ′(q_i)) per point: the mirror-flow field is
  dz/dt = −∇L = Σ_i (−ℓ′(q_i)) ∇q_i, and in log-time s = log(1+t) the factor e^s is folded into these
  exponents, c_i = exp(s + log(−ℓ′(q_i))), so the right-hand side stays O(1) and t is never formed.

References:
    Soudry, Hoffer, Nacson, Gunasekar & Srebro, "The Implicit Bias of Gradient Descent on Separable Data",
    JMLR 2018. Lyu & Li, "Gradient Descent Maximizes the Margin of Homogeneous Neural Networks", ICLR 2020.
"""

from __future__ import annotations

import abc

import torch
from torch import Tensor

from .errors import InvalidParameterError

__all__ = ["AbstractLoss", "ExponentialLoss", "LogisticLoss", "get_loss", "LOSSES"]


class AbstractLoss(abc.ABC):
    """A decreasing margin loss ℓ: R → (0, ∞) with ℓ(q) ~ e^{−q} as q → ∞."""

    name: str

    @abc.abstractmethod
    def log_pointwise(self, q: Tensor) -> Tensor:
        """log ℓ(q_i) per point. Args: q margins `(..., n)` float64. Returns `(..., n)`."""

    @abc.abstractmethod
    def log_neg_derivative(self, q: Tensor) -> Tensor:
        """log(−ℓ′(q_i)) per point. Args: q margins `(..., n)`. Returns `(..., n)`."""

    def log_value(self, q: Tensor) -> Tensor:
        """log L = log Σ_i ℓ(q_i) (sum convention), via log-sum-exp over the last dim.

        Args:
            q: margins, shape `(..., n)`, float64.
        Returns:
            shape `(...)`; finite even when L underflows float64.
        """
        return torch.logsumexp(self.log_pointwise(q), dim=-1)

    def value(self, q: Tensor) -> Tensor:
        """L = Σ_i ℓ(q_i) (may underflow to 0; use :meth:`log_value` for diagnostics)."""
        return torch.exp(self.log_value(q))

    @property
    def value_at_zero(self) -> float:
        """ℓ(0): once L < ℓ(0) every point is classified correctly (Lyu & Li's condition)."""
        return float(torch.exp(self.log_pointwise(torch.zeros(1, dtype=torch.float64)))[0])

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ExponentialLoss(AbstractLoss):
    """ℓ(q) = e^{−q}; log ℓ = −q, log(−ℓ′) = −q."""

    name = "exponential"

    def log_pointwise(self, q: Tensor) -> Tensor:
        return -q

    def log_neg_derivative(self, q: Tensor) -> Tensor:
        return -q


def _log_softplus_neg(q: Tensor) -> Tensor:
    """log(log(1 + e^{−q})) computed stably for all q (≈ −q for large q, log(−q) for very negative q)."""
    pos = q > 0
    qp = torch.where(pos, q, torch.zeros_like(q))
    u = torch.exp(-qp)  # in (0, 1]
    ratio = torch.where(u > 1e-8, torch.log1p(u) / torch.where(u > 0, u, torch.ones_like(u)), 1.0 - 0.5 * u)
    large = -qp + torch.log(ratio)
    qn = torch.where(pos, torch.zeros_like(q), q)
    small = torch.log(torch.nn.functional.softplus(-qn))
    return torch.where(pos, large, small)


class LogisticLoss(AbstractLoss):
    """ℓ(q) = log(1 + e^{−q}); log(−ℓ′(q)) = log σ(−q) = −softplus(q)."""

    name = "logistic"

    def log_pointwise(self, q: Tensor) -> Tensor:
        return _log_softplus_neg(q)

    def log_neg_derivative(self, q: Tensor) -> Tensor:
        return -torch.nn.functional.softplus(q)


LOSSES: dict[str, type[AbstractLoss]] = {"exponential": ExponentialLoss, "logistic": LogisticLoss}


def get_loss(loss: str | AbstractLoss) -> AbstractLoss:
    """Return a loss object from its name ("exponential" or "logistic") or pass one through.

    Raises:
        InvalidParameterError: for an unknown name (the message lists the valid names).
    """
    if isinstance(loss, AbstractLoss):
        return loss
    key = str(loss).lower().replace("-", "_")
    aliases = {"exp": "exponential", "logistic": "logistic", "log": "logistic", "exponential": "exponential"}
    key = aliases.get(key, key)
    if key not in LOSSES:
        raise InvalidParameterError(
            f"unknown loss {loss!r}; valid losses are {sorted(LOSSES)} (e.g. loss='exponential')"
        )
    return LOSSES[key]()
