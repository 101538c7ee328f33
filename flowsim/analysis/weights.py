"""Weights of trained networks: per-layer magnitude histograms, sparsity statistics, dead units, and
magnitude pruning without retraining.

The seed paper compares the first- and last-layer weight distributions of networks trained by mirror
descent under different potentials (hyperbolic entropy: many near-zero weights and a few large ones;
p-power potentials with p > 2: magnitudes closer together) and their accuracy after magnitude pruning.

References:
    Jacobs & Montúfar, "Implicit Bias of Mirror Flow in Homogeneous Neural Networks: Sparse and Dense
    Feature Learning", arXiv 2605.19458 (2026).
    Hoyer, "Non-negative Matrix Factorization with Sparseness Constraints", JMLR 5, 2004 (sparseness).
    Han, Pool, Tran & Dally, "Learning both Weights and Connections for Efficient Neural Networks",
    NeurIPS 2015 (magnitude pruning).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import InvalidParameterError
from ..models import AbstractModel, VGGNet

__all__ = [
    "sparsity_statistics",
    "layer_sparsity",
    "magnitude_histograms",
    "dead_unit_fractions",
    "prune_by_magnitude",
    "pruning_curve",
    "KEEP_FRACTIONS",
]

#: Keep fractions of :func:`pruning_curve` by default, from 1 (no pruning) to 0.01, log-spaced.
KEEP_FRACTIONS = tuple(float(f) for f in np.round(np.geomspace(1.0, 0.01, 13), 4))


def sparsity_statistics(w: Tensor, *, small: float = 0.1) -> dict[str, float]:
    """Sparsity of one weight tensor from its magnitudes a = |w| / max |w|.

    * ``participation`` = (Σ a)² / (N Σ a²) ∈ [1/N, 1]: 1 when all magnitudes are equal, 1/N for one
      nonzero weight (the effective fraction of weights in use; lower is sparser);
    * ``hoyer`` = (√N − ‖w‖₁/‖w‖₂) / (√N − 1) ∈ [0, 1] (Hoyer 2004; higher is sparser);
    * ``small_fraction``: fraction of weights with a < ``small``.

    Args:
        w: weights, any shape, not all zero.
        small: threshold on the normalised magnitude.

    Returns:
        dict of floats with the three statistics and ``n`` (the number of weights).

    Raises:
        InvalidParameterError: if ``w`` is empty or all zero.
    """
    a = w.detach().abs().reshape(-1).to(torch.float64)
    N = a.numel()
    if N == 0 or not float(a.max()) > 0:
        raise InvalidParameterError("sparsity_statistics: the weights are empty or all zero.")
    a = a / a.max()
    l1, l2 = float(a.sum()), float(torch.linalg.vector_norm(a))
    hoyer = (math.sqrt(N) - l1 / l2) / (math.sqrt(N) - 1.0) if N > 1 else 0.0
    return {
        "participation": l1**2 / (N * l2**2),
        "hoyer": hoyer,
        "small_fraction": float((a < small).double().mean()),
        "n": float(N),
    }


def layer_sparsity(model: AbstractModel, theta: Tensor, *, small: float = 0.1) -> dict[str, dict[str, float]]:
    """:func:`sparsity_statistics` of every named parameter tensor (layer) of ``model`` at θ `(p,)`."""
    return {name: sparsity_statistics(t, small=small) for name, t in model.unflatten(theta).items()}


def magnitude_histograms(model: AbstractModel, theta: Tensor, *, bins: int = 40) -> dict[str, np.ndarray]:
    """Per-layer histograms of |w| / max |w| on [0, 1] (densities, so layers of any size compare).

    Args:
        model: the model; theta: parameters `(p,)`; bins: number of equal bins on [0, 1].

    Returns:
        ``{"edges": (bins + 1,), layer name: (bins,) densities}``.
    """
    edges = np.linspace(0.0, 1.0, bins + 1)
    out: dict[str, np.ndarray] = {"edges": edges}
    for name, t in model.unflatten(theta).items():
        a = t.detach().abs().reshape(-1).to(torch.float64).cpu().numpy()
        a = a / a.max() if a.max() > 0 else a
        out[name] = np.histogram(a, bins=edges, density=True)[0]
    return out


@torch.no_grad()
def dead_unit_fractions(model: VGGNet, theta: Tensor, X: Tensor, *, chunk: int = 2048) -> dict[str, float]:
    """Fraction of the channels (convolutions) or units (hidden linear layers) of each layer whose ReLU
    output is zero on every input of X (dead: they never influence f on these inputs).

    Args:
        model: a :class:`~flowsim.models.VGGNet`; theta: `(p,)`; X: inputs `(n, d)`, dtype of θ.

    Returns:
        dict from layer name to the dead fraction.

    Raises:
        InvalidParameterError: if ``model`` is not a VGGNet.
    """
    if not isinstance(model, VGGNet):
        raise InvalidParameterError(f"dead_unit_fractions needs a VGGNet, got {type(model).__name__}")
    alive: dict[str, Tensor] = {}
    for start in range(0, X.shape[0], chunk):
        for name, H in model.hidden_activations(theta, X[start : start + chunk]).items():
            dims = (0, 2, 3) if H.dim() == 4 else (0,)
            on = H.amax(dim=dims) > 0
            alive[name] = on if name not in alive else alive[name] | on
    return {name: 1.0 - float(on.double().mean()) for name, on in alive.items()}


def prune_by_magnitude(model: AbstractModel, theta: Tensor, keep: float) -> Tensor:
    """θ with all but the largest ``keep`` fraction of |w| set to 0, layer by layer (each named tensor
    keeps ⌈keep · size⌉ weights; per layer, because potentials put different scales on different layers).

    Args:
        model: the model; theta: `(p,)`; keep: fraction in (0, 1].

    Returns:
        Pruned parameters `(p,)` (a copy).

    Raises:
        InvalidParameterError: if ``keep`` is not in (0, 1].
    """
    if not 0.0 < float(keep) <= 1.0:
        raise InvalidParameterError(f"keep must lie in (0, 1], got {keep!r}")
    out = theta.detach().clone()
    for sl in model.layer_slices().values():
        w = out[sl]
        k = max(1, math.ceil(float(keep) * w.numel()))
        if k < w.numel():
            thresh = torch.topk(w.abs(), k, sorted=True).values[-1]
            w[w.abs() < thresh] = 0.0
    return out


@torch.no_grad()
def pruning_curve(
    model: AbstractModel,
    theta: Tensor,
    X: Tensor,
    y: Tensor,
    keeps: Sequence[float] = KEEP_FRACTIONS,
) -> dict[str, np.ndarray]:
    """Accuracy after magnitude pruning (:func:`prune_by_magnitude`) without retraining.

    Args:
        model: the model; theta: `(p,)`; X: inputs `(n, d)`; y: labels 0..K−1 (multi-class) or ±1.
        keeps: keep fractions.

    Returns:
        ``{"keep": (k,), "accuracy": (k,)}``.
    """
    acc = []
    for keep in keeps:
        out = model.forward(prune_by_magnitude(model, theta, keep), X)
        correct = out.argmax(-1) == y if out.dim() == 2 else (y * out) > 0
        acc.append(float(correct.double().mean()))
    return {"keep": np.asarray(keeps, dtype=np.float64), "accuracy": np.asarray(acc)}
