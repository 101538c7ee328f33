"""Margins of multi-class homogeneous models: the minimum margin, normalised and Q-margins.

For logits f(θ; x) ∈ R^K of an L-homogeneous model and labels y_i ∈ {0..K−1}, the margin of point i is
q_i = f_{y_i}(θ; x_i) − max_{c≠y_i} f_c(θ; x_i) (:func:`flowsim.losses.multiclass_margins`), which is
L-homogeneous in θ like the binary margin y_i f(θ; x_i); the normalisations are the binary ones
(:mod:`flowsim.analysis.diagnostics`).

References:
    Lyu & Li, "Gradient Descent Maximizes the Margin of Homogeneous Neural Networks", ICLR 2020
    (arXiv:1906.05890), multi-class margins.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..losses import multiclass_margins
from ..models import AbstractModel
from ..potentials import AbstractPotential

__all__ = ["multiclass_margin_summary"]


@torch.no_grad()
def multiclass_margin_summary(
    model: AbstractModel, potential: AbstractPotential, theta: Tensor, X: Tensor, labels: Tensor
) -> dict[str, float]:
    """Minimum multi-class margin and its normalisations at θ.

    Args:
        model: an L-homogeneous model with ``num_classes`` = K ≥ 2 outputs.
        potential: the mirror potential (its horizon Q∞, of homogeneity α, normalises the Q-margin).
        theta: parameters, shape `(p,)`.
        X: inputs `(n, d)`, dtype of θ; labels: 0..K−1, shape `(n,)`.

    Returns:
        ``q_min`` = min_i q_i, ``normalized_margin`` = q_min / ‖θ‖₂^L and ``q_margin`` =
        q_min / (Σ_k Q∞(θ_k))^{L/α}.
    """
    q_min = float(multiclass_margins(model.forward(theta, X), labels.long()).min())
    L = model.degree
    l2 = float(torch.linalg.vector_norm(theta))
    hz = float(potential.horizon_function(theta).clamp_min(0.0)) ** (1.0 / float(potential.horizon.alpha))
    return {
        "q_min": q_min,
        "normalized_margin": q_min / l2**L if l2 > 0 else float("nan"),
        "q_margin": q_min / hz**L if hz > 0 else float("nan"),
    }
