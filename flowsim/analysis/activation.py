"""Activation patterns of ReLU networks at saved states: how many (point, unit) pairs are active, and how
many sit on a switching surface h = 0 (sliding or switching there)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..models import AbstractModel, DeepReLU


def activation_summary(model: AbstractModel, theta: Tensor, X: Tensor, rel_tol: float = 1e-7) -> dict:
    """Activation pattern of a two-layer or deep ReLU net at saved states: active pairs and pairs on a switching
    surface (deep nets: all hidden layers, a pair is (point, hidden unit)).

    Args:
        model: a two-layer (leaky-)ReLU model or a :class:`~flowsim.models.DeepReLU`.
        theta: parameters, shape `(k, p)`.
        X: inputs, shape `(n, d)`.
        rel_tol: (i, j) is on its surface when |h_ij| ≤ rel_tol · ‖input_i‖ ‖w_j‖ (the unit's layer input and
            incoming weights).

    Returns:
        dict of int64 numpy arrays of shape `(k,)`: ``active_pairs`` (#{h_ij > tol}), ``zero_pairs``
        (#{|h_ij| ≤ tol}: sliding or switching surfaces) and ``zero_neurons`` (hidden units with a zero pair).
    """
    if isinstance(model, DeepReLU):
        Ws = model._views(theta)
        Hs = model.preactivations(theta, X)  # (k, n, h_l) each
        ins = [X.expand(theta.shape[0], *X.shape)] + [torch.relu(h) for h in Hs[:-1]]
        Hl, tl = [], []
        for W, h, a in zip(Ws[:-1], Hs, ins, strict=True):
            Hl.append(h)
            tl.append(torch.linalg.vector_norm(a, dim=-1)[..., None] * torch.linalg.vector_norm(W, dim=-1)[:, None])
        # a unit whose layer input is 0 has h = 0 identically (dead input): not on a switching surface
        H, tol = torch.cat(Hl, -1), rel_tol * torch.cat(tl, -1)
        tol = torch.where(tol > 0, tol, -1.0)
    else:
        W = model.unflatten(theta)["W"]  # (k, m, d)
        H = X @ W.transpose(-1, -2)  # (k, n, m)
        tol = rel_tol * torch.linalg.vector_norm(X, dim=1)[:, None] * torch.linalg.vector_norm(W, dim=-1)[:, None, :]
    zero = H.abs() <= tol
    return {
        "active_pairs": ((H > tol).sum((1, 2))).cpu().numpy(),
        "zero_pairs": zero.sum((1, 2)).cpu().numpy(),
        "zero_neurons": zero.any(1).sum(1).cpu().numpy(),
    }
