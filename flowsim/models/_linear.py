"""Models linear in x: linear, diagonal linear and deep linear networks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, final

import torch
from torch import Tensor

from ..errors import InvalidParameterError
from ._base import AbstractModel, NeuronGroupBlock, _positive_int
from ._deep import _AbstractDeep


@final
class Linear(AbstractModel):
    """Linear model f(θ; x) = ⟨w, x⟩, degree 1, parameter ``"w"`` of shape `(d,)`.

    Initialization (scale s): w_k ~ N(0, 1)·s/√d; ``scale=0`` gives w = 0 (the classic start of
    Soudry et al.). No hidden neurons: :meth:`neuron_groups` is empty.

    Args:
        input_dim: number of features d ≥ 1.

    Raises:
        InvalidParameterError: if ``input_dim`` is not a positive integer.

    References:
        Soudry et al., "The Implicit Bias of Gradient Descent on Separable Data", JMLR 2018.
    """

    name = "linear"
    has_kinks = False

    def __init__(self, input_dim: int) -> None:
        self.input_dim = _positive_int(input_dim, "input_dim", "Linear")
        self.degree = 1
        self._setup({"w": (self.input_dim,)})

    def _forward(self, theta: Tensor, X: Tensor) -> Tensor:
        return theta @ X.T

    def _init_params(self, generator: torch.Generator) -> dict[str, Tensor]:
        return {"w": self._randn((self.input_dim,), generator) / math.sqrt(self.input_dim)}

    def _build_neuron_group_blocks(self) -> list[NeuronGroupBlock]:
        return []

    def _config_kwargs(self) -> dict[str, Any]:
        return {"input_dim": self.input_dim}


_DIAGONAL_INIT_MODES = ("constant", "zero_last", "gaussian")


@final
class DiagonalLinear(AbstractModel):
    """Depth-D diagonal linear network f(θ; x) = ⟨u⁽¹⁾ ⊙ u⁽²⁾ ⊙ … ⊙ u⁽ᴰ⁾, x⟩, degree D.

    Parameters ``"u1"``, …, ``"uD"``, each of shape `(d,)`. For depth 2 this is θ = u ⊙ v.

    Initialization (:meth:`init`, scale s) is chosen at construction by ``init_mode`` so that
    ``model.init(scale=...)`` keeps the common signature:

    - ``"constant"`` (default): every u⁽ˡ⁾ = s·1 (effective weights s^D·1); deterministic.
    - ``"zero_last"``: u⁽¹⁾ = … = u⁽ᴰ⁻¹⁾ = s·1 and u⁽ᴰ⁾ = 0. For D = 2 this is CASES C6 (u₀ = α·1, v₀ = 0
      with α = s), whose gradient flow equals hyperbolic-entropy mirror flow on θ = u ⊙ v with
      ∇Φ(θ) = ½ asinh(2θ/α²). Deterministic.
    - ``"gaussian"``: every entry N(0, 1)·s (no fan-in factor: coordinates do not mix), seeded.

    Neuron groups (rescaling symmetry u⁽ˡ⁾_k → c u⁽ˡ⁾_k, u⁽ˡ⁺¹⁾_k → u⁽ˡ⁺¹⁾_k / c): one group per
    coordinate k and consecutive layer pair (l, l+1), l = 1..D−1, ordered by l then k, with incoming
    {u⁽ˡ⁾_k} and outgoing {u⁽ˡ⁺¹⁾_k}. For D = 2 this is (u_k, v_k) and the balance u_k² − v_k² is conserved
    by gradient flow. (For D > 2 the pairs are not independent neurons but each pair is a symmetry.)

    Args:
        input_dim: number of features d ≥ 1.
        depth: number of factors D ≥ 2 (default 2).
        init_mode: ``"constant"``, ``"zero_last"`` or ``"gaussian"`` (see above).

    Raises:
        InvalidParameterError: if ``input_dim`` is not positive, ``depth`` < 2, or ``init_mode`` is unknown.

    References:
        Woodworth et al., "Kernel and Rich Regimes in Overparametrized Models", COLT 2020, arXiv:2002.09277.
    """

    name = "diagonal_linear"
    has_kinks = False

    def __init__(self, input_dim: int, depth: int = 2, init_mode: str = "constant") -> None:
        self.input_dim = _positive_int(input_dim, "input_dim", "DiagonalLinear")
        self.depth = _positive_int(depth, "depth", "DiagonalLinear", minimum=2)
        if init_mode not in _DIAGONAL_INIT_MODES:
            raise InvalidParameterError(
                f"DiagonalLinear: unknown init_mode {init_mode!r}; valid modes are {', '.join(_DIAGONAL_INIT_MODES)}."
            )
        self.init_mode = init_mode
        self.degree = self.depth
        self._setup({f"u{l + 1}": (self.input_dim,) for l in range(self.depth)})

    def _factors(self, theta: Tensor) -> Tensor:
        return theta.reshape(*theta.shape[:-1], self.depth, self.input_dim)

    def _product(self, theta: Tensor) -> Tensor:
        u = self._factors(theta)
        w = u[..., 0, :] * u[..., 1, :]
        for l in range(2, self.depth):
            w = w * u[..., l, :]
        return w

    def effective_weights(self, theta: Tensor) -> Tensor:
        """Effective linear predictor w = u⁽¹⁾ ⊙ … ⊙ u⁽ᴰ⁾ (f(θ; x) = ⟨w, x⟩).

        Args:
            theta: flat parameters, shape `(p,)` or `(K, p)`, p = D·d.

        Returns:
            w, shape `(d,)` or `(K, d)`.

        Raises:
            InvalidDataError: if ``theta`` has the wrong last dimension.
        """
        self._check_theta(theta)
        return self._product(theta)

    def _forward(self, theta: Tensor, X: Tensor) -> Tensor:
        return self._product(theta) @ X.T

    def _init_params(self, generator: torch.Generator) -> dict[str, Tensor]:
        d = self.input_dim
        dev = generator.device
        if self.init_mode == "gaussian":
            return {f"u{l + 1}": self._randn((d,), generator) for l in range(self.depth)}
        params = {f"u{l + 1}": torch.ones(d, dtype=torch.float64, device=dev) for l in range(self.depth)}
        if self.init_mode == "zero_last":
            params[f"u{self.depth}"] = torch.zeros(d, dtype=torch.float64, device=dev)
        return params

    def _build_neuron_group_blocks(self) -> list[NeuronGroupBlock]:
        d = self.input_dim
        k = torch.arange(d, dtype=torch.long).reshape(d, 1)
        return [(l * d + k, (l + 1) * d + k) for l in range(self.depth - 1)]

    def _config_kwargs(self) -> dict[str, Any]:
        return {"input_dim": self.input_dim, "depth": self.depth, "init_mode": self.init_mode}


@final
class DeepLinear(_AbstractDeep):
    """Deep linear network f(θ; x) = W_L ⋯ W_2 W_1 x, degree L = len(widths) + 1.

    Parameters ``"W1"`` of shape `(h1, d)`, ``"W2"`` of shape `(h2, h1)`, …, ``"WL"`` of shape
    `(1, h_{L−1})`. Initialization (scale s): each W_l entry N(0, 1)·s/√fan_in. Neuron groups: for hidden
    unit j of layer l, incoming row j of W_l and outgoing column j of W_{l+1} (layer by layer, then j).
    Under gradient flow the layers stay balanced: W_{l+1}ᵀW_{l+1} − W_l W_lᵀ is constant.

    Args:
        input_dim: number of features d ≥ 1.
        widths: hidden widths (h1, …, h_{L−1}), at least one, each ≥ 1.

    Raises:
        InvalidParameterError: if ``input_dim`` or a width is not a positive integer, or ``widths`` is
            empty.

    References:
        Du, Hu & Lee, "Algorithmic Regularization in Learning Deep Homogeneous Models: Layers are
        Automatically Balanced", NeurIPS 2018, arXiv:1806.00900.
    """

    name = "deep_linear"
    has_kinks = False

    def __init__(self, input_dim: int, widths: Sequence[int]) -> None:
        self._setup_deep(input_dim, widths)

    def _end_to_end(self, theta: Tensor) -> Tensor:
        Ws = self._views(theta)
        v = Ws[-1]
        for W in reversed(Ws[:-1]):
            v = v @ W
        return v.squeeze(-2)

    def end_to_end(self, theta: Tensor) -> Tensor:
        """End-to-end linear predictor w = (W_L ⋯ W_1)ᵀ, so f(θ; x) = ⟨w, x⟩.

        Args:
            theta: flat parameters, shape `(p,)` or `(K, p)`.

        Returns:
            w, shape `(d,)` or `(K, d)`.

        Raises:
            InvalidDataError: if ``theta`` has the wrong last dimension.
        """
        self._check_theta(theta)
        return self._end_to_end(theta)

    def _forward(self, theta: Tensor, X: Tensor) -> Tensor:
        return self._end_to_end(theta) @ X.T
