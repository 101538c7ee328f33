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

__all__ = [
    "AbstractLoss",
    "ExponentialLoss",
    "LogisticLoss",
    "get_loss",
    "LOSSES",
    "multiclass_margins",
    "AbstractMulticlassLoss",
    "MulticlassExponentialLoss",
    "CrossEntropyLoss",
    "MULTICLASS_LOSSES",
    "get_multiclass_loss",
]


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


def _softplus(q: Tensor) -> Tensor:
    """log(1 + e^q) to rounding for every q (torch's ``softplus`` returns q itself above q = 20, 2e-9 off)."""
    return torch.logaddexp(q, torch.zeros_like(q))


def _log_softplus_neg(q: Tensor) -> Tensor:
    """log(log(1 + e^{−q})) computed stably for all q (≈ −q for large q, log(−q) for very negative q)."""
    pos = q > 0
    qp = torch.where(pos, q, torch.zeros_like(q))
    u = torch.exp(-qp)  # in (0, 1]
    ratio = torch.where(u > 1e-8, torch.log1p(u) / torch.where(u > 0, u, torch.ones_like(u)), 1.0 - 0.5 * u)
    large = -qp + torch.log(ratio)
    qn = torch.where(pos, torch.zeros_like(q), q)
    small = torch.log(_softplus(-qn))
    return torch.where(pos, large, small)


class LogisticLoss(AbstractLoss):
    """ℓ(q) = log(1 + e^{−q}); log(−ℓ′(q)) = log σ(−q) = −softplus(q)."""

    name = "logistic"

    def log_pointwise(self, q: Tensor) -> Tensor:
        return _log_softplus_neg(q)

    def log_neg_derivative(self, q: Tensor) -> Tensor:
        return -_softplus(q)


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


# ---- multi-class ------------------------------------------------------------------------------------------


def _check_logits(F: Tensor, labels: Tensor) -> None:
    if F.dim() < 2 or F.shape[-1] < 2 or F.shape[-2] != labels.shape[-1] or labels.dim() != 1:
        raise InvalidParameterError(
            f"multi-class losses need logits of shape (..., n, K) with K >= 2 and labels of shape (n,); got "
            f"logits {tuple(F.shape)} and labels {tuple(labels.shape)}. Use a model with num_classes = K."
        )


def _label_gaps(F: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """(F_ic − F_{i,y_i} with −inf at c = y_i, the one-hot mask of y_i), both `(..., n, K)`."""
    _check_logits(F, labels)
    onehot = torch.nn.functional.one_hot(labels.long(), F.shape[-1]).to(dtype=torch.bool, device=F.device)
    f_y = (F * onehot).sum(-1, keepdim=True)
    gaps = torch.where(onehot, torch.full_like(F, -torch.inf), F - f_y)
    return gaps, onehot


def multiclass_margins(F: Tensor, labels: Tensor) -> Tensor:
    """Multi-class margins q_i = f_{y_i}(x_i) − max_{c≠y_i} f_c(x_i).

    Args:
        F: logits, shape `(..., n, K)`, K ≥ 2.
        labels: class indices 0..K−1, shape `(n,)`, integer.

    Returns:
        Margins, shape `(..., n)` (positive where x_i is classified correctly with a gap).

    Raises:
        InvalidParameterError: if the shapes do not match.

    References:
        Lyu & Li, "Gradient Descent Maximizes the Margin of Homogeneous Neural Networks", ICLR 2020,
        appendix (multi-class margins).
    """
    gaps, _ = _label_gaps(F, labels)
    return -gaps.max(dim=-1).values


class AbstractMulticlassLoss(abc.ABC):
    """A multi-class loss L = Σ_i ℓ_i of the gaps d_ic = f_{y_i}(x_i) − f_c(x_i), c ≠ y_i, in log-space.

    Subclasses give log ℓ_i and the log-weights log w_ic = log(−∂ℓ_i/∂d_ic); then
    −∂L/∂f_ic = −w_ic for c ≠ y_i and Σ_{c≠y_i} w_ic for c = y_i (:meth:`logit_weights`).
    """

    name: str

    @abc.abstractmethod
    def log_pointwise(self, F: Tensor, labels: Tensor) -> Tensor:
        """log ℓ_i per point. Args: F logits `(..., n, K)`; labels `(n,)`. Returns `(..., n)`."""

    @abc.abstractmethod
    def log_weights(self, F: Tensor, labels: Tensor) -> Tensor:
        """log w_ic = log(−∂ℓ_i/∂d_ic), −inf at c = y_i. Returns `(..., n, K)`."""

    def log_value(self, F: Tensor, labels: Tensor) -> Tensor:
        """log L = log Σ_i ℓ_i (sum convention), shape `(...)`; finite when L underflows float64."""
        return torch.logsumexp(self.log_pointwise(F, labels), dim=-1)

    def logit_weights(self, F: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """−∂L/∂F = e^m G in log-space scaling.

        Args:
            F: logits, shape `(n, K)`; labels: `(n,)`.

        Returns:
            ``(m, G)``: m = max_ic log w_ic (0-dim tensor) and G of shape `(n, K)` with entries O(1), so a
            vector–Jacobian product with G is O(1) however small L is.
        """
        log_w = self.log_weights(F, labels)
        m = log_w.max()
        w = torch.exp(log_w - m)
        _, onehot = _label_gaps(F, labels)
        return m, torch.where(onehot, w.sum(-1, keepdim=True), -w)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class MulticlassExponentialLoss(AbstractMulticlassLoss):
    """ℓ_i = Σ_{c≠y_i} e^{−(f_{y_i} − f_c)}; log ℓ_i = logsumexp_c (f_c − f_{y_i}), log w_ic = f_c − f_{y_i}.

    For a linear model this is the binary exponential loss on Kesler's construction (one point
    (e_{y_i} − e_c) ⊗ x_i per pair), so gradient flow converges in direction to the Crammer–Singer
    max-margin classifier (Soudry et al. 2018, section 4.3; Lyu & Li 2020).
    """

    name = "multiclass_exponential"

    def log_pointwise(self, F: Tensor, labels: Tensor) -> Tensor:
        return torch.logsumexp(_label_gaps(F, labels)[0], dim=-1)

    def log_weights(self, F: Tensor, labels: Tensor) -> Tensor:
        return _label_gaps(F, labels)[0]


class CrossEntropyLoss(AbstractMulticlassLoss):
    """Softmax cross-entropy ℓ_i = log(1 + Σ_{c≠y_i} e^{f_c − f_{y_i}}) = −log softmax(f)_{y_i}.

    With u_i = logsumexp_{c≠y_i}(f_c − f_{y_i}): log ℓ_i = log softplus(u_i) and
    log w_ic = (f_c − f_{y_i}) − softplus(u_i) (w_ic is the softmax probability of class c).
    """

    name = "cross_entropy"

    def log_pointwise(self, F: Tensor, labels: Tensor) -> Tensor:
        u = torch.logsumexp(_label_gaps(F, labels)[0], dim=-1)
        return _log_softplus_neg(-u)

    def log_weights(self, F: Tensor, labels: Tensor) -> Tensor:
        gaps, _ = _label_gaps(F, labels)
        u = torch.logsumexp(gaps, dim=-1, keepdim=True)
        return gaps - _softplus(u)


MULTICLASS_LOSSES: dict[str, type[AbstractMulticlassLoss]] = {
    "multiclass_exponential": MulticlassExponentialLoss,
    "cross_entropy": CrossEntropyLoss,
}


def get_multiclass_loss(loss: str | AbstractMulticlassLoss) -> AbstractMulticlassLoss:
    """A multi-class loss from its name or passed through; ``"exponential"`` and ``"logistic"`` name the
    multi-class exponential loss and the cross-entropy (the logistic loss's multi-class form).

    Raises:
        InvalidParameterError: for an unknown name (the message lists the valid names).
    """
    if isinstance(loss, AbstractMulticlassLoss):
        return loss
    key = str(loss).lower().replace("-", "_")
    aliases = {"exponential": "multiclass_exponential", "exp": "multiclass_exponential", "logistic": "cross_entropy"}
    key = aliases.get(key, key)
    if key not in MULTICLASS_LOSSES:
        raise InvalidParameterError(
            f"unknown multi-class loss {loss!r}; valid: {sorted(MULTICLASS_LOSSES)} (or 'exponential', 'logistic')"
        )
    return MULTICLASS_LOSSES[key]()
