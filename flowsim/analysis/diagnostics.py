"""Diagnostics of a trajectory at its save times: loss, margins, norms, balance, neuron masses.

All quantities are computed from the saved primal states θ and log-times s, in log-space where they could
underflow. For an L-homogeneous model with margins q_i = y_i f(θ; x_i) and q_min = min_i q_i:

* ``normalized_margin`` q_min / ‖θ‖₂^L (Lyu & Li 2020);
* ``q_margin`` q_min / Q∞(θ)^{L/α}, where Q∞ is the α-homogeneous horizon of Q = φ*∘φ′ (the potential's
  geometry at infinity: α = 2 Euclidean, 1 hyperbolic entropy, p for the p-families);
* ``smoothed_margin`` log(1/L) / ‖θ‖₂^L and ``smoothed_q_margin`` log(1/L) / Q∞(θ)^{L/α}
  (non-decreasing along the flow once L < ℓ(0) for gradient flow, Lyu & Li 2020);
* ``balance`` B_j = Σ_{k∈in(j)} Q(θ_k) − Σ_{r∈out(j)} Q(θ_r) per hidden neuron j, conserved by mirror
  flow with a separable potential (a reconstruction of the seed paper's balance equation from convex
  duality; the paper body was not available), and ``balance_drift`` max_j |B_j(t) − B_j(0)| relative to
  the current scale max_j (Σ_in (Q − Q(0)) + k Σ_out (Q − Q(0))) (Q − Q(0) ≥ 0 per coordinate: Q itself can
  be negative, e.g. Q(0) = −λ^{p/2} for the smoothed homogeneous potential);
* ``neuron_mass`` ‖w̃_j‖₂ with w̃_j = |a_j| w_j and ``active_neurons`` (two-layer models).

References:
    Lyu & Li, "Gradient Descent Maximizes the Margin of Homogeneous Neural Networks", ICLR 2020.
    Du, Hu & Lee, "Algorithmic Regularization in Learning Deep Homogeneous Models", NeurIPS 2018.
    Jacobs & Montúfar, arXiv 2605.19458 (2026).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..losses import AbstractLoss
from ..models import AbstractModel, AbstractPiecewiseLinearTwoLayer, AbstractTwoLayer, DeepReLU
from ..potentials import AbstractPotential
from ..timegrid import log_t_from_s
from .activation import activation_summary

__all__ = ["compute_diagnostics", "balance"]


def balance(model: AbstractModel, potential: AbstractPotential, theta: Tensor) -> tuple[Tensor, Tensor]:
    """Per-neuron balance B_j and its scale S_j.

    B_j = Σ_in Q(θ_k) − k Σ_out Q(θ_r) with Q = φ*∘φ′ and k the activation's homogeneity degree
    (:meth:`~flowsim.models.AbstractModel.neuron_balance`); S_j = Σ_in (Q − Q(0)) + k Σ_out (Q − Q(0)) ≥ 0
    (:meth:`~flowsim.potentials.AbstractPotential.q_excess`, never negative, unlike Q) is the scale that
    drifts are measured against.

    Args:
        model: the model (its ``neuron_groups`` define in/out weights).
        potential: separable potential with ``q_function`` Q = φ*∘φ′.
        theta: parameters, shape `(k, p)` float64.

    Returns:
        (B, S), each of shape `(k, m)` with m = number of hidden neurons (0 for linear models).
    """
    B = model.neuron_balance(theta, potential.q_function)
    k = model.activation_degree
    S = model.neuron_balance(theta, potential.q_excess) + 2 * k * _out_sum(model, potential, theta)
    return B, S


def _out_sum(model: AbstractModel, potential: AbstractPotential, theta: Tensor) -> Tensor:
    blocks = model.neuron_group_blocks(theta.device)
    if not blocks:
        return theta.new_zeros((*theta.shape[:-1], 0))
    qt = potential.q_excess(theta)
    parts = [qt[..., out].sum(-1) for _, out in blocks]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


@torch.no_grad()
def compute_diagnostics(
    model: AbstractModel,
    potential: AbstractPotential,
    loss: AbstractLoss,
    X: Tensor,
    y: Tensor,
    theta: Tensor,
    s,
    *,
    active_threshold: float = 1e-2,
) -> dict[str, np.ndarray]:
    """Diagnostics at k saved states.

    Args:
        model, potential, loss: as passed to :func:`flowsim.simulate`.
        X: inputs `(n, d)`; y: labels `(n,)` (±1), float64.
        theta: primal states `(k, p)`, float64.
        s: log-times s = log(1 + t) of the states, shape `(k,)`.
        active_threshold: neuron j is active when mass_j ≥ active_threshold · max_j mass_j.

    Returns:
        dict of numpy arrays with leading dimension k: ``log_t``, ``loss``, ``log_loss``, ``log_t_loss``
        (log(t·L)), ``q_min``, ``l2_norm``, ``normalized_margin``, ``horizon_norm`` (Q∞^{1/α}),
        ``q_margin``, ``smoothed_margin``, ``smoothed_q_margin``, ``norm_<layer>`` per named tensor, and for
        models with hidden neurons ``balance`` `(k, m)`, ``balance_drift``, ``balance_drift_abs``; for
        two-layer models ``neuron_mass`` `(k, m)` and ``active_neurons``; for two-layer (leaky-)ReLU and deep
        ReLU models the activation pattern ``active_pairs``, ``zero_pairs`` (pairs on a switching surface:
        sliding) and ``zero_neurons`` (:func:`flowsim.analysis.activation.activation_summary`).
    """
    theta = theta.to(dtype=torch.float64)
    L = float(model.degree)
    alpha = float(potential.horizon.alpha)
    q = torch.stack([y * model.forward(th, X) for th in theta])  # (k, n)
    log_loss = loss.log_value(q)
    q_min = q.min(dim=1).values
    l2 = torch.linalg.vector_norm(theta, dim=1)
    hz = potential.horizon_function(theta).clamp_min(0.0) ** (1.0 / alpha)
    log_t = log_t_from_s(np.asarray(s, dtype=np.float64))

    def ratio(num: Tensor, den_norm: Tensor) -> Tensor:
        den = den_norm**L
        return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.nan)

    out: dict[str, np.ndarray] = {
        "log_t": log_t,
        "log_loss": log_loss.cpu().numpy(),
        "loss": torch.exp(log_loss).cpu().numpy(),
        "q_min": q_min.cpu().numpy(),
        "l2_norm": l2.cpu().numpy(),
        "normalized_margin": ratio(q_min, l2).cpu().numpy(),
        "horizon_norm": hz.cpu().numpy(),
        "q_margin": ratio(q_min, hz).cpu().numpy(),
        "smoothed_margin": ratio(-log_loss, l2).cpu().numpy(),
        "smoothed_q_margin": ratio(-log_loss, hz).cpu().numpy(),
    }
    with np.errstate(invalid="ignore"):
        out["log_t_loss"] = log_t + out["log_loss"]
    params = model.unflatten(theta)
    for name, tensor in params.items():
        out[f"norm_{name}"] = torch.linalg.vector_norm(tensor.reshape(theta.shape[0], -1), dim=1).cpu().numpy()
    B, S = balance(model, potential, theta)
    if B.shape[1] > 0:
        drift_abs = (B - B[:1]).abs().max(dim=1).values
        scale = S.max(dim=1).values.clamp_min(torch.finfo(torch.float64).tiny)
        out["balance"] = B.cpu().numpy()
        out["balance_drift_abs"] = drift_abs.cpu().numpy()
        out["balance_drift"] = (drift_abs / scale).cpu().numpy()
    if isinstance(model, AbstractTwoLayer):
        mass = torch.stack([model.neuron_masses(th) for th in theta])
        mmax = mass.max(dim=1, keepdim=True).values
        out["neuron_mass"] = mass.cpu().numpy()
        out["active_neurons"] = (mass >= active_threshold * mmax).sum(dim=1).cpu().numpy()
    if isinstance(model, (AbstractPiecewiseLinearTwoLayer, DeepReLU)):
        out.update(activation_summary(model, theta, X))
    return out
