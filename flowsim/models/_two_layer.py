"""Bias-free two-layer networks f(θ; x) = Σ_j a_j σ(⟨w_j, x⟩) with a positively homogeneous σ."""

from __future__ import annotations

import abc
import math
import numbers
from collections.abc import Callable
from typing import Any, final

import torch
from torch import Tensor

from ..errors import InvalidDataError, InvalidParameterError
from ._base import AbstractModel, NeuronGroupBlock, _positive_int


class AbstractTwoLayer(AbstractModel):
    """Bias-free two-layer network f(θ; x) = Σ_j a_j σ(⟨w_j, x⟩) with σ positively homogeneous.

    Parameters ``"W"`` of shape `(m, d)` (rows w_j) and ``"a"`` of shape `(m,)`, flattened as
    ``[W.ravel(), a]``. If σ is k-homogeneous, f has degree L = k + 1.

    Initialization (:meth:`init`, scale s): W_jk ~ N(0, 1)·s/√d and a_j ~ N(0, 1)·s/√m, W drawn first.

    Neuron j's group is (row j of W, a_j); switching surfaces are h_ij(θ) = ⟨w_j, x_i⟩ = 0.

    References:
        Lyu & Li, "Gradient Descent Maximizes the Margin of Homogeneous Neural Networks", ICLR 2020,
        arXiv:1906.05890.
    """

    width: int

    def _setup_two_layer(self, input_dim: Any, width: Any) -> None:
        model = type(self).__name__
        self.input_dim = _positive_int(input_dim, "input_dim", model)
        self.width = _positive_int(width, "width", model)
        self._md = self.width * self.input_dim
        self._setup({"W": (self.width, self.input_dim), "a": (self.width,)})

    def _split(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        if theta.dim() == 1:  # hot path: plain slices are cheaper than Ellipsis indexing
            return theta[: self._md].view(self.width, self.input_dim), theta[self._md :]
        batch = theta.shape[:-1]
        W = theta[..., : self._md].reshape(*batch, self.width, self.input_dim)
        return W, theta[..., self._md :]

    @abc.abstractmethod
    def activation(self, h: Tensor) -> Tensor:
        """The activation σ applied elementwise to pre-activations ``h`` (any shape)."""

    def _forward(self, theta: Tensor, X: Tensor) -> Tensor:
        W, a = self._split(theta)
        if theta.dim() == 1:
            return self.activation(X @ W.T) @ a
        return (self.activation(X @ W.mT) @ a.unsqueeze(-1)).squeeze(-1)

    @abc.abstractmethod
    def activation_derivative(self, h: Tensor) -> Tensor:
        """σ′(h) elementwise, with autograd's convention at a kink (relu′(0) = 0, leaky_relu′(0) = s₋)."""

    def _activation_vjp(self, H: Tensor, S: Tensor, grad: Tensor) -> Tensor:
        """σ′(H) ⊙ grad, given S = σ(H)."""
        return self.activation_derivative(H) * grad

    def forward_and_vjp(self, theta: Tensor, X: Tensor) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
        """Closed-form :meth:`AbstractModel.forward_and_vjp`: with H = X Wᵀ, f = σ(H) a and

            Σ_i w_i ∇_a f_i = σ(H)ᵀ w,    Σ_i w_i ∇_{w_j} f_i = a_j Σ_i w_i σ′(h_ij) x_i,

        i.e. ∇_W = a ⊙ (σ′(H) ⊙ w)ᵀ X: one matrix product each way, no autograd graph. Agrees with
        autograd to rounding (relative 1e-14), including its convention σ′ at kinks.
        """
        self._check_inputs(theta, X)
        W, a = self._split(theta)
        batched = theta.dim() > 1
        H = X @ W.mT
        S = self.activation(H)
        f = (S @ a.unsqueeze(-1)).squeeze(-1) if batched else S @ a

        def vjp(weights: Tensor) -> Tensor:
            G = self._activation_vjp(H, S, weights.unsqueeze(-1).expand_as(H))  # σ′(H) ⊙ w, (…, n, m)
            grad_W = (G.mT @ X) * a.unsqueeze(-1)
            grad_a = (S.mT @ weights.unsqueeze(-1)).squeeze(-1) if batched else S.T @ weights
            return torch.cat([grad_W.flatten(-2), grad_a], dim=-1)

        return f, vjp

    def preactivations(self, theta: Tensor, X: Tensor) -> Tensor:
        """Pre-activations h_ij = ⟨w_j, x_i⟩; the switching surfaces are h_ij = 0.

        Args:
            theta: flat parameters, shape `(p,)` or `(K, p)`.
            X: inputs, shape `(n, d)`.

        Returns:
            Pre-activations, shape `(n, m)` or `(K, n, m)`.

        Raises:
            InvalidDataError: on wrong shapes (as :meth:`forward`).
        """
        self._check_inputs(theta, X)
        W, _ = self._split(theta)
        return X @ W.mT

    def input_weight_representation(self, theta: Tensor) -> Tensor:
        """Input-weight representation w̃_j = |a_j| w_j of each neuron.

        Args:
            theta: flat parameters, shape `(p,)` or `(K, p)`.

        Returns:
            w̃, shape `(m, d)` or `(K, m, d)`.

        Raises:
            InvalidDataError: if ``theta`` has the wrong last dimension.
        """
        self._check_theta(theta)
        W, a = self._split(theta)
        return a.abs().unsqueeze(-1) * W

    def neuron_masses(self, theta: Tensor) -> Tensor:
        """Neuron masses ‖w̃_j‖₂ = |a_j| ‖w_j‖₂ (sparse vs dense features, CASES C15).

        Args:
            theta: flat parameters, shape `(p,)` or `(K, p)`.

        Returns:
            Masses, shape `(m,)` or `(K, m)`.

        Raises:
            InvalidDataError: if ``theta`` has the wrong last dimension.
        """
        self._check_theta(theta)
        W, a = self._split(theta)
        return a.abs() * torch.linalg.vector_norm(W, dim=-1)

    def _init_params(self, generator: torch.Generator) -> dict[str, Tensor]:
        W = self._randn((self.width, self.input_dim), generator) / math.sqrt(self.input_dim)
        a = self._randn((self.width,), generator) / math.sqrt(self.width)
        return {"W": W, "a": a}

    def _build_neuron_group_blocks(self) -> list[NeuronGroupBlock]:
        incoming = torch.arange(self._md, dtype=torch.long).reshape(self.width, self.input_dim)
        outgoing = (self._md + torch.arange(self.width, dtype=torch.long)).reshape(self.width, 1)
        return [(incoming, outgoing)]


class AbstractPiecewiseLinearTwoLayer(AbstractTwoLayer):
    """Two-layer net with a piecewise-linear σ(h) = h · (s₋ + (1 − s₋)·1[h > 0]), s₋ = ``negative_slope``.

    Degree 2, kinks on h_ij = 0. :meth:`forward_with_pattern` evaluates the smooth field of a fixed
    activation pattern (the Filippov segments of the flow solver).
    """

    negative_slope: float

    def activation(self, h: Tensor) -> Tensor:
        if self.negative_slope == 0.0:
            return torch.relu(h)
        return torch.nn.functional.leaky_relu(h, self.negative_slope)

    def _activation_vjp(self, H: Tensor, S: Tensor, grad: Tensor) -> Tensor:
        # autograd's own fused backward kernels: one pass over (n, m), identical results
        if self.negative_slope == 0.0:
            return torch.ops.aten.threshold_backward(grad, S, 0)
        return torch.ops.aten.leaky_relu_backward(grad, H, self.negative_slope, False)

    def activation_derivative(self, h: Tensor) -> Tensor:
        s = self.negative_slope
        positive = (h > 0).to(h.dtype)
        return positive if s == 0.0 else torch.where(h > 0, positive, torch.full((), s, dtype=h.dtype, device=h.device))

    def forward_with_pattern(self, theta: Tensor, X: Tensor, pattern: Tensor) -> Tensor:
        """Outputs with a fixed activation pattern: f = Σ_j a_j (s₋ + (1 − s₋) P_ij) h_ij.

        With P_ij = 1[h_ij > 0] this equals :meth:`forward`; a fractional P_ij = α ∈ [0, 1] on a sliding
        surface is the Filippov convex combination of the two one-sided fields. Smooth (bilinear) in θ.

        Args:
            theta: flat parameters, shape `(p,)` or `(K, p)`.
            X: inputs, shape `(n, d)`.
            pattern: active fraction P, shape `(n, m)` (or broadcastable to `(K, n, m)`), dtype of theta.

        Returns:
            Outputs, shape `(n,)` or `(K, n)`.

        Raises:
            InvalidDataError: on wrong shapes of ``theta``/``X``, or a ``pattern`` whose last two dimensions
                are not `(n, m)`.
        """
        self._check_inputs(theta, X)
        if not isinstance(pattern, Tensor) or tuple(pattern.shape[-2:]) != (X.shape[0], self.width):
            got = tuple(pattern.shape) if isinstance(pattern, Tensor) else type(pattern).__name__
            raise InvalidDataError(
                f"{type(self).__name__}.forward_with_pattern: pattern must have shape (n, m) = "
                f"({X.shape[0]}, {self.width}); got {got}."
            )
        W, a = self._split(theta)
        s = self.negative_slope
        gate = pattern if s == 0.0 else s + (1.0 - s) * pattern
        H = (X @ W.mT) * gate
        if H.dim() == 2 and a.dim() == 1:
            return H @ a
        return (H @ a.unsqueeze(-1)).squeeze(-1)


@final
class TwoLayerReLU(AbstractPiecewiseLinearTwoLayer):
    """Bias-free two-layer ReLU network f(θ; x) = Σ_j a_j relu(⟨w_j, x⟩), degree 2.

    Parameters ``"W"`` `(m, d)` and ``"a"`` `(m,)`; init W ~ N(0,1)·s/√d, a ~ N(0,1)·s/√m. relu′(0) = 0
    in autograd (torch's convention). Kinks on h_ij = ⟨w_j, x_i⟩ = 0.

    Args:
        input_dim: number of features d ≥ 1.
        width: number of hidden neurons m ≥ 1.

    Raises:
        InvalidParameterError: if ``input_dim`` or ``width`` is not a positive integer.

    References:
        Lyu & Li, "Gradient Descent Maximizes the Margin of Homogeneous Neural Networks", ICLR 2020,
        arXiv:1906.05890.
    """

    name = "two_layer_relu"
    has_kinks = True
    negative_slope = 0.0

    def __init__(self, input_dim: int, width: int) -> None:
        self.degree = 2
        self._setup_two_layer(input_dim, width)

    def _config_kwargs(self) -> dict[str, Any]:
        return {"input_dim": self.input_dim, "width": self.width}


@final
class TwoLayerLeakyReLU(AbstractPiecewiseLinearTwoLayer):
    """Bias-free two-layer leaky-ReLU network f(θ; x) = Σ_j a_j σ(⟨w_j, x⟩), σ(h) = max(h, s h), degree 2.

    Parameters and init as :class:`TwoLayerReLU`. Autograd uses σ′(0) = s (torch's leaky_relu); Euler's
    identity is unaffected since σ(0) = 0.

    Args:
        input_dim: number of features d ≥ 1.
        width: number of hidden neurons m ≥ 1.
        negative_slope: slope s on h < 0, with 0 < s < 1 (default 0.1).

    Raises:
        InvalidParameterError: if ``input_dim``/``width`` is not a positive integer or s ∉ (0, 1).

    References:
        Lyu & Li, "Gradient Descent Maximizes the Margin of Homogeneous Neural Networks", ICLR 2020,
        arXiv:1906.05890.
    """

    name = "two_layer_leaky_relu"
    has_kinks = True

    def __init__(self, input_dim: int, width: int, negative_slope: float = 0.1) -> None:
        if (
            isinstance(negative_slope, bool)
            or not isinstance(negative_slope, numbers.Real)
            or not 0.0 < negative_slope < 1.0
        ):
            raise InvalidParameterError(
                f"TwoLayerLeakyReLU: `negative_slope` must be a real number with 0 < negative_slope < 1; got "
                f"{negative_slope!r}. Use TwoLayerReLU for slope 0; slopes >= 1 are not leaky ReLUs."
            )
        self.negative_slope = float(negative_slope)
        self.degree = 2
        self._setup_two_layer(input_dim, width)

    def _config_kwargs(self) -> dict[str, Any]:
        return {"input_dim": self.input_dim, "width": self.width, "negative_slope": self.negative_slope}


@final
class TwoLayerReLUPower(AbstractTwoLayer):
    """Two-layer network with σ(h) = relu(h)^k: f(θ; x) = Σ_j a_j relu(⟨w_j, x⟩)^k, degree k + 1.

    A smooth comparison model (C^{k−1} with a Lipschitz (k−1)-th derivative; no kinks for k ≥ 2):
    ``has_kinks`` is False. Parameters and init as :class:`TwoLayerReLU`.

    σ is k-homogeneous, so the rescaling symmetry of neuron j is w_j → c w_j, a_j → c^(−k) a_j
    (``activation_degree = k``) and the conserved balance is Σ_i Q(w_ji) − k Q(a_j), not Σ_i Q(w_ji) − Q(a_j).

    Args:
        input_dim: number of features d ≥ 1.
        width: number of hidden neurons m ≥ 1.
        power: integer exponent k ≥ 2 (default 2).

    Raises:
        InvalidParameterError: if an argument is not a positive integer or ``power`` < 2.

    References:
        Lyu & Li, "Gradient Descent Maximizes the Margin of Homogeneous Neural Networks", ICLR 2020,
        arXiv:1906.05890.
    """

    name = "two_layer_relu_power"
    has_kinks = False

    def __init__(self, input_dim: int, width: int, power: int = 2) -> None:
        self.power = _positive_int(power, "power", "TwoLayerReLUPower", minimum=2)
        self.activation_degree = self.power
        self.degree = self.power + 1
        self._setup_two_layer(input_dim, width)

    def activation(self, h: Tensor) -> Tensor:
        r = torch.relu(h)
        return r.square() if self.power == 2 else r.pow(self.power)

    def activation_derivative(self, h: Tensor) -> Tensor:
        r = torch.relu(h)
        return 2.0 * r if self.power == 2 else self.power * r.pow(self.power - 1)

    def _config_kwargs(self) -> dict[str, Any]:
        return {"input_dim": self.input_dim, "width": self.width, "power": self.power}
