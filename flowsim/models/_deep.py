"""Bias-free deep ReLU networks and the layout they share with deep linear networks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, final

import torch
from torch import Tensor

from ..errors import InvalidDataError
from ._base import AbstractModel, NeuronGroupBlock, _positive_int, _widths


class _AbstractDeep(AbstractModel):
    """Shared layout of bias-free MLPs W1 (h1, d), W2 (h2, h1), …, WL (1, h_{L−1})."""

    widths: tuple[int, ...]

    def _setup_deep(self, input_dim: Any, widths: Any) -> None:
        model = type(self).__name__
        self.input_dim = _positive_int(input_dim, "input_dim", model)
        self.widths = _widths(widths, model)
        self.degree = len(self.widths) + 1
        sizes = (self.input_dim, *self.widths, 1)
        self._sizes = sizes
        self._setup({f"W{l + 1}": (sizes[l + 1], sizes[l]) for l in range(len(sizes) - 1)})

    def _init_params(self, generator: torch.Generator) -> dict[str, Tensor]:
        return {key: self._randn(shape, generator) / math.sqrt(shape[1]) for key, shape in self._shapes.items()}

    def _build_neuron_group_blocks(self) -> list[NeuronGroupBlock]:
        blocks = []
        starts = [start for _, start, _, _ in self._layout]
        for l in range(1, len(self._sizes) - 1):  # hidden layer l, units of width sizes[l]
            fan_in, width, fan_out = self._sizes[l - 1], self._sizes[l], self._sizes[l + 1]
            j = torch.arange(width, dtype=torch.long).reshape(width, 1)
            incoming = starts[l - 1] + j * fan_in + torch.arange(fan_in, dtype=torch.long)
            outgoing = starts[l] + torch.arange(fan_out, dtype=torch.long) * width + j
            blocks.append((incoming, outgoing))
        return blocks

    def _config_kwargs(self) -> dict[str, Any]:
        return {"input_dim": self.input_dim, "widths": list(self.widths)}


@final
class DeepReLU(_AbstractDeep):
    """Bias-free ReLU MLP f(θ; x) = W_L relu(W_{L−1} ⋯ relu(W_1 x)), degree L = len(widths) + 1.

    Parameters and initialization as :class:`DeepLinear` (W_l entries N(0, 1)·s/√fan_in); neuron groups
    are the hidden units (incoming row j of W_l, outgoing column j of W_{l+1}). Kinks on every hidden
    pre-activation surface.

    Args:
        input_dim: number of features d ≥ 1.
        widths: hidden widths (h1, …, h_{L−1}), at least one, each ≥ 1.

    Raises:
        InvalidParameterError: if ``input_dim`` or a width is not a positive integer, or ``widths`` is
            empty.

    References:
        Lyu & Li, "Gradient Descent Maximizes the Margin of Homogeneous Neural Networks", ICLR 2020,
        arXiv:1906.05890.
    """

    name = "deep_relu"
    has_kinks = True

    def __init__(self, input_dim: int, widths: Sequence[int]) -> None:
        self._setup_deep(input_dim, widths)

    def _forward(self, theta: Tensor, X: Tensor) -> Tensor:
        Ws = self._views(theta)
        H = X
        for W in Ws[:-1]:
            H = torch.relu(H @ W.mT)
        return (H @ Ws[-1].mT).squeeze(-1)

    def preactivations(self, theta: Tensor, X: Tensor) -> list[Tensor]:
        """Hidden pre-activations h⁽ˡ⁾ = W_l relu(h⁽ˡ⁻¹⁾) per layer (switching surfaces h⁽ˡ⁾_ij = 0).

        Args:
            theta: flat parameters, shape `(p,)` or `(K, p)`.
            X: inputs, shape `(n, d)`.

        Returns:
            List over hidden layers of tensors of shape `(n, h_l)` (or `(K, n, h_l)`).

        Raises:
            InvalidDataError: on wrong shapes (as :meth:`forward`).
        """
        self._check_inputs(theta, X)
        Ws = self._views(theta)
        out = []
        H = X
        for W in Ws[:-1]:
            Z = H @ W.mT
            out.append(Z)
            H = torch.relu(Z)
        return out

    def forward_with_pattern(self, theta: Tensor, X: Tensor, patterns: Sequence[Tensor]) -> Tensor:
        """Outputs with fixed activation patterns: relu(h⁽ˡ⁾) replaced by P⁽ˡ⁾ ⊙ h⁽ˡ⁾.

        With P⁽ˡ⁾ = 1[h⁽ˡ⁾ > 0] this equals :meth:`forward`; it is smooth (polynomial) in θ.

        Args:
            theta: flat parameters, shape `(p,)` or `(K, p)`.
            X: inputs, shape `(n, d)`.
            patterns: one tensor per hidden layer, shape `(n, h_l)` (or broadcastable to `(K, n, h_l)`).

        Returns:
            Outputs, shape `(n,)` or `(K, n)`.

        Raises:
            InvalidDataError: on wrong shapes, or a wrong number/shape of patterns.
        """
        self._check_inputs(theta, X)
        if len(patterns) != len(self.widths):
            raise InvalidDataError(
                f"DeepReLU.forward_with_pattern: need one pattern per hidden layer ({len(self.widths)}); "
                f"got {len(patterns)}."
            )
        Ws = self._views(theta)
        H = X
        for l, (W, P) in enumerate(zip(Ws[:-1], patterns, strict=True)):
            if tuple(P.shape[-2:]) != (X.shape[0], self.widths[l]):
                raise InvalidDataError(
                    f"DeepReLU.forward_with_pattern: pattern {l} must have shape (n, h_{l + 1}) = "
                    f"({X.shape[0]}, {self.widths[l]}); got {tuple(P.shape)}."
                )
            H = (H @ W.mT) * P
        return (H @ Ws[-1].mT).squeeze(-1)
