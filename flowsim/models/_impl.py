"""Bias-free, positively homogeneous models on a flat parameter vector.

Every model here is a function f(θ; x) of a flat parameter vector θ ∈ R^p that is *positively
homogeneous* of some integer degree L in θ:

    f(cθ; x) = c^L f(θ; x)   for all c > 0,

so that, away from kinks, Euler's identity ⟨θ, ∇_θ f(θ; x)⟩ = L f(θ; x) holds. The flat vector is the
concatenation, in :meth:`AbstractModel.param_shapes` order, of the row-major flattened named tensors
(``"W"``, ``"a"``, ``"u1"``...). Models are stateless: they hold shapes and cached index tensors, never
parameters, so the ODE state *is* θ.

Batching: every method that takes ``theta`` accepts a flat vector of shape `(p,)` or a batch of shape
`(K, p)` (any number of leading dimensions works); outputs then gain the same leading dimensions, e.g.
:meth:`AbstractModel.forward` maps `(K, p)` and `(n, d)` to `(K, n)`.

Hidden neurons of positively homogeneous activations carry a rescaling symmetry (incoming weights × c,
outgoing weights × c^(−k) leaves f unchanged, k = ``activation_degree``: 1 for ReLU, leaky ReLU and linear
units, ``power`` for relu^power). :meth:`AbstractModel.neuron_groups` exposes, for each hidden neuron, the
flat indices of its incoming and outgoing weights; under mirror flow with a separable potential the balance
B_j = Σ_in Q(θ_k) − k Σ_out Q(θ_r) is conserved (see :meth:`AbstractModel.neuron_balance`).

References:
    Lyu & Li, "Gradient Descent Maximizes the Margin of Homogeneous Neural Networks", ICLR 2020,
    arXiv:1906.05890.
    Du, Hu & Lee, "Algorithmic Regularization in Learning Deep Homogeneous Models: Layers are
    Automatically Balanced", NeurIPS 2018, arXiv:1806.00900.
    Woodworth et al., "Kernel and Rich Regimes in Overparametrized Models", COLT 2020, arXiv:2002.09277.
"""

from __future__ import annotations

import abc
import inspect
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any, final

import torch
from torch import Tensor

from ..errors import InvalidDataError, InvalidParameterError

__all__ = [
    "AbstractModel",
    "AbstractTwoLayer",
    "AbstractPiecewiseLinearTwoLayer",
    "Linear",
    "DiagonalLinear",
    "DeepLinear",
    "TwoLayerReLU",
    "TwoLayerLeakyReLU",
    "TwoLayerReLUPower",
    "DeepReLU",
    "MODELS",
    "get_model",
]

NeuronGroupBlock = tuple[Tensor, Tensor]


# ----------------------------------------------------------------------------------------------------------
# argument validation helpers
# ----------------------------------------------------------------------------------------------------------


def _positive_int(value: Any, name: str, model: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidParameterError(
            f"{model}: `{name}` must be an integer >= {minimum}; got {value!r} of type "
            f"{type(value).__name__}. Pass a plain int, e.g. {name}={max(minimum, 2)}."
        )
    if value < minimum:
        raise InvalidParameterError(
            f"{model}: `{name}` must be an integer >= {minimum}; got {value}. "
            f"Pass {name}={minimum} or larger."
        )
    return int(value)


def _widths(value: Any, model: str) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise InvalidParameterError(
            f"{model}: `widths` must be a sequence of positive integers (the hidden-layer widths), "
            f"e.g. widths=[16, 16]; got {value!r}."
        )
    if len(value) == 0:
        raise InvalidParameterError(
            f"{model}: `widths` is empty; give at least one hidden layer, e.g. widths=[16], "
            f"or use Linear for a model without hidden layers."
        )
    return tuple(_positive_int(w, f"widths[{i}]", model) for i, w in enumerate(value))


# ----------------------------------------------------------------------------------------------------------
# base classes
# ----------------------------------------------------------------------------------------------------------


class AbstractModel(abc.ABC):
    """A bias-free, positively L-homogeneous model f(θ; x) on a flat parameter vector θ.

    f(cθ; x) = c^L f(θ; x) for c > 0, and, where f is differentiable, ⟨θ, ∇_θ f(θ; x)⟩ = L f(θ; x).

    Subclasses call :meth:`_setup` at the end of ``__init__`` with their ordered parameter shapes and
    implement :meth:`_forward`, :meth:`_init_params`, :meth:`_build_neuron_group_blocks` and
    :meth:`_config_kwargs`. Concrete models are final.

    Attributes:
        name: registry name used by :func:`get_model` (e.g. ``"two_layer_relu"``).
        degree: homogeneity degree L (an integer ≥ 1).
        input_dim: number of input features d.
        has_kinks: True when f is not differentiable on switching surfaces (ReLU, leaky ReLU); such
            models need Filippov handling in the flow solver.
        activation_degree: homogeneity degree k of the hidden activation (1 except for
            :class:`TwoLayerReLUPower`, where k = ``power``); the rescaling symmetry of a hidden neuron is
            incoming × c, outgoing × c^(−k), and its balance weights the outgoing side by k.

    References:
        Lyu & Li, "Gradient Descent Maximizes the Margin of Homogeneous Neural Networks", ICLR 2020,
        arXiv:1906.05890.
    """

    name: str
    degree: int
    input_dim: int
    has_kinks: bool
    activation_degree: int = 1

    _shapes: dict[str, tuple[int, ...]]
    _layout: tuple[tuple[str, int, int, tuple[int, ...]], ...]
    _num_params: int
    _group_cache: dict[torch.device, tuple[NeuronGroupBlock, ...]]

    # ---- layout -------------------------------------------------------------------------------------------

    def _setup(self, shapes: dict[str, tuple[int, ...]]) -> None:
        """Record the ordered parameter shapes and precompute the flat layout."""
        self._shapes = {k: tuple(int(s) for s in v) for k, v in shapes.items()}
        layout = []
        start = 0
        for key, shape in self._shapes.items():
            size = math.prod(shape)
            layout.append((key, start, start + size, shape))
            start += size
        self._layout = tuple(layout)
        self._num_params = start
        self._group_cache = {}

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Ordered shapes of the named parameter tensors, e.g. ``{"W": (m, d), "a": (m,)}``.

        Returns:
            A new dict (safe to modify) from tensor name to shape, in flat-vector order.
        """
        return dict(self._shapes)

    @property
    def num_params(self) -> int:
        """Length p of the flat parameter vector."""
        return self._num_params

    def layer_slices(self) -> dict[str, slice]:
        """Slice of the flat parameter vector holding each named tensor (row-major).

        Returns:
            Ordered dict from tensor name to ``slice(start, stop)`` into `(p,)`.
        """
        return {key: slice(start, stop) for key, start, stop, _ in self._layout}

    def _check_theta(self, theta: Any) -> None:
        if not isinstance(theta, Tensor):
            raise InvalidDataError(
                f"{type(self).__name__}: theta must be a torch.Tensor of shape (p,) or (K, p) with "
                f"p = num_params = {self._num_params}; got {type(theta).__name__}. "
                f"Convert with torch.as_tensor(theta, dtype=torch.float64)."
            )
        if theta.dim() == 0 or theta.shape[-1] != self._num_params:
            raise InvalidDataError(
                f"{type(self).__name__}: theta must have shape (p,) or (K, p) with p = num_params = "
                f"{self._num_params}; got shape {tuple(theta.shape)}. Build theta with model.init(...) or "
                f"model.flatten(params) for this model (check input_dim and widths)."
            )

    def _views(self, theta: Tensor) -> list[Tensor]:
        if theta.dim() == 1:  # a 1-D slice can always be viewed as a matrix
            return [theta[start:stop].view(shape) for _, start, stop, shape in self._layout]
        batch = theta.shape[:-1]
        return [theta[..., start:stop].reshape(*batch, *shape) for _, start, stop, shape in self._layout]

    def unflatten(self, theta: Tensor) -> dict[str, Tensor]:
        """Split a flat parameter vector into named tensors.

        Args:
            theta: flat parameters, shape `(p,)` or `(K, p)` (any leading dimensions), any float dtype.

        Returns:
            Ordered dict from name to tensor of shape `(*lead, *param_shapes()[name])`. These are views of
            ``theta`` whenever its memory layout allows (always for a contiguous ``theta``), so autograd
            flows through them.

        Raises:
            InvalidDataError: if ``theta`` is not a tensor or its last dimension is not ``num_params``.
        """
        self._check_theta(theta)
        return dict(zip(self._shapes, self._views(theta), strict=True))

    def flatten(self, params: dict[str, Tensor]) -> Tensor:
        """Concatenate named tensors into the flat parameter vector (inverse of :meth:`unflatten`).

        Args:
            params: dict from every name in :meth:`param_shapes` to a tensor of shape
                `(*lead, *shape)`; the leading dimensions must agree across tensors.

        Returns:
            Flat parameters, shape `(*lead, p)`.

        Raises:
            InvalidDataError: if a name is missing or unknown, or a tensor has the wrong trailing shape or
                inconsistent leading dimensions.
        """
        model = type(self).__name__
        missing = [k for k in self._shapes if k not in params]
        extra = [k for k in params if k not in self._shapes]
        if missing or extra:
            raise InvalidDataError(
                f"{model}.flatten: parameter names must be exactly {list(self._shapes)}; "
                f"missing {missing}, unknown {extra}. Use model.unflatten(theta) to see the expected dict."
            )
        lead: tuple[int, ...] | None = None
        pieces = []
        for key, shape in self._shapes.items():
            t = torch.as_tensor(params[key])
            k = t.dim() - len(shape)
            if k < 0 or tuple(t.shape[k:]) != shape:
                raise InvalidDataError(
                    f"{model}.flatten: parameter {key!r} must have trailing shape {shape}; "
                    f"got shape {tuple(t.shape)}."
                )
            this_lead = tuple(t.shape[:k])
            if lead is None:
                lead = this_lead
            elif this_lead != lead:
                raise InvalidDataError(
                    f"{model}.flatten: parameter {key!r} has leading (batch) shape {this_lead} but earlier "
                    f"parameters have {lead}; give every tensor the same leading dimensions."
                )
            pieces.append(t.reshape(*this_lead, -1))
        return torch.cat(pieces, dim=-1)

    # ---- evaluation ---------------------------------------------------------------------------------------

    def _check_inputs(self, theta: Any, X: Any) -> None:
        self._check_theta(theta)
        if not isinstance(X, Tensor):
            raise InvalidDataError(
                f"{type(self).__name__}: X must be a torch.Tensor of shape (n, {self.input_dim}); got "
                f"{type(X).__name__}. Convert with torch.as_tensor(X, dtype=theta.dtype)."
            )
        if X.dim() != 2:
            raise InvalidDataError(
                f"{type(self).__name__}: X must be 2-D of shape (n, input_dim) = (n, {self.input_dim}); got "
                f"shape {tuple(X.shape)}. For a single point use X.reshape(1, -1)."
            )
        if X.shape[1] != self.input_dim:
            raise InvalidDataError(
                f"{type(self).__name__}: X has {X.shape[1]} features (shape {tuple(X.shape)}) but the model "
                f"was built with input_dim={self.input_dim}. Build the model with input_dim={X.shape[1]} "
                f"or pass data with {self.input_dim} features."
            )
        if X.dtype != theta.dtype:
            raise InvalidDataError(
                f"{type(self).__name__}: X has dtype {X.dtype} but theta has dtype {theta.dtype}; convert "
                f"one of them, e.g. X.to(theta.dtype)."
            )

    def forward(self, theta: Tensor, X: Tensor) -> Tensor:
        """Model outputs f(θ; x_i) for every row x_i of X.

        Pure torch and autograd-friendly (``torch.autograd.grad`` and double backward work); relu′(0) = 0
        is torch's convention and is kept.

        Args:
            theta: flat parameters, shape `(p,)` or `(K, p)`, float dtype (float64 recommended).
            X: inputs, shape `(n, d)` with d = ``input_dim``, same dtype (and device) as ``theta``.

        Returns:
            Outputs, shape `(n,)`, or `(K, n)` for batched ``theta``.

        Raises:
            InvalidDataError: if ``theta``'s last dimension is not ``num_params``, ``X`` is not 2-D with
                ``input_dim`` columns, or the dtypes differ.
        """
        self._check_inputs(theta, X)
        return self._forward(theta, X)

    __call__ = forward

    @abc.abstractmethod
    def _forward(self, theta: Tensor, X: Tensor) -> Tensor:
        """Forward pass on validated inputs; see :meth:`forward`."""

    def forward_and_vjp(self, theta: Tensor, X: Tensor) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
        """Outputs f(θ; x_i) and their vector–Jacobian product w ↦ Σ_i w_i ∇_θ f(θ; x_i) (as torch.func.vjp).

        The mirror-flow field is Σ_i c_i y_i ∇_θ f(θ; x_i), one vector–Jacobian product. The default uses
        autograd; two-layer models override it with the closed form (no graph, fewer passes over `(n, m)`).

        Args:
            theta: flat parameters, shape `(p,)` or `(K, p)` (members of a batch are independent).
            X: inputs, shape `(n, d)`, dtype of ``theta``.

        Returns:
            ``(f, vjp)``: outputs of shape `(n,)` or `(K, n)` (detached), and a function mapping weights of
            that shape to the weighted gradient, shape of ``theta``. ``vjp`` may be called once.

        Raises:
            InvalidDataError: on wrong shapes or dtypes (as :meth:`forward`).
        """
        self._check_inputs(theta, X)
        with torch.enable_grad():
            th = theta.detach().requires_grad_(True)
            out = self._forward(th, X)

        def vjp(weights: Tensor) -> Tensor:
            with torch.enable_grad():
                (g,) = torch.autograd.grad(out, th, grad_outputs=weights)
            return g

        return out.detach(), vjp

    # ---- initialization -----------------------------------------------------------------------------------

    def init(
        self,
        *,
        scale: float = 1.0,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Random (or, for some models, deterministic) initial parameters.

        The draws are made in float64 on the generator's device with an explicit generator (global RNG
        state is never touched) and cast to ``dtype``/``device`` afterwards, so the same seed gives the
        same point in every dtype. The returned vector is linear in ``scale`` for a fixed seed. The
        per-model distributions are documented in each model's ``_init_params``/class docstring.

        Args:
            scale: overall scale s ≥ 0 (finite); θ₀ = s · θ₀(s=1).
            seed: seed of a fresh ``torch.Generator``; default 0 when neither ``seed`` nor ``generator``
                is given.
            generator: an existing generator to draw from (advances its state). Mutually exclusive with
                ``seed``.
            dtype: floating dtype of the result (default float64).
            device: device of the result (default CPU).

        Returns:
            Flat parameters, shape `(p,)`.

        Raises:
            InvalidParameterError: if ``scale`` is negative or not finite, ``seed`` is not an integer,
                both ``seed`` and ``generator`` are given, or ``dtype`` is not floating.
        """
        model = type(self).__name__
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not math.isfinite(scale):
            raise InvalidParameterError(f"{model}.init: `scale` must be a finite real >= 0; got {scale!r}.")
        if scale < 0:
            raise InvalidParameterError(
                f"{model}.init: `scale` must be >= 0; got {scale}. Use a positive scale (sign flips are "
                f"not rescalings of a homogeneous model)."
            )
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise InvalidParameterError(
                f"{model}.init: `dtype` must be a floating torch dtype such as torch.float64; got {dtype!r}."
            )
        if generator is not None and seed is not None:
            raise InvalidParameterError(
                f"{model}.init: pass either `seed` or `generator`, not both "
                f"(got seed={seed!r} and a generator)."
            )
        if generator is None:
            if seed is None:
                seed = 0
            if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
                raise InvalidParameterError(
                    f"{model}.init: `seed` must be a non-negative integer; got {seed!r}."
                )
            generator = torch.Generator(device="cpu")
            generator.manual_seed(int(seed))
        elif not isinstance(generator, torch.Generator):
            raise InvalidParameterError(
                f"{model}.init: `generator` must be a torch.Generator; got {type(generator).__name__}."
            )
        params = self._init_params(generator)
        theta = self.flatten(params) * float(scale)
        return theta.to(dtype=dtype, device=device)

    @staticmethod
    def _randn(shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
        return torch.randn(shape, generator=generator, dtype=torch.float64, device=generator.device)

    @abc.abstractmethod
    def _init_params(self, generator: torch.Generator) -> dict[str, Tensor]:
        """Float64 parameters at scale 1 drawn from ``generator``."""

    # ---- symmetry / balance -------------------------------------------------------------------------------

    @abc.abstractmethod
    def _build_neuron_group_blocks(self) -> list[NeuronGroupBlock]:
        """Stacked (incoming, outgoing) index blocks, on CPU; see :meth:`neuron_group_blocks`."""

    def neuron_group_blocks(self, device: torch.device | str | None = None) -> tuple[NeuronGroupBlock, ...]:
        """Neuron groups stacked into blocks of equal fan-in/fan-out, for vectorized balance computations.

        Each block is a pair ``(incoming, outgoing)`` of int64 tensors of shapes `(G_b, k_in)` and
        `(G_b, k_out)`: row j holds the flat indices of neuron j's incoming and outgoing weights. Blocks are
        cached per device; do not modify them in place.

        Args:
            device: device of the index tensors (default CPU).

        Returns:
            Tuple of blocks; concatenating their rows gives :meth:`neuron_groups` in order.
        """
        dev = torch.device(device) if device is not None else torch.device("cpu")
        blocks = self._group_cache.get(dev)
        if blocks is None:
            cpu = self._group_cache.get(torch.device("cpu"))
            if cpu is None:
                cpu = tuple(self._build_neuron_group_blocks())
                self._group_cache[torch.device("cpu")] = cpu
            blocks = tuple((i.to(dev), o.to(dev)) for i, o in cpu)
            self._group_cache[dev] = blocks
        return blocks

    def neuron_groups(self) -> list[tuple[Tensor, Tensor]]:
        """Incoming and outgoing flat weight indices of every hidden neuron (positive-rescaling symmetry).

        Scaling a neuron's incoming weights by c > 0 and its outgoing weights by c^(−k) leaves f unchanged
        (k = ``activation_degree``, 1 except for relu^power). Hence Σ_in θ_i ∂_i L − k Σ_out θ_r ∂_r L = 0
        for any loss of f, so along gradient flow Σ_in θ_i² − k Σ_out θ_r² is constant, and along mirror
        flow with a separable potential B_j = Σ_in Q(θ_i) − k Σ_out Q(θ_r) is constant, Q(x) = φ*(φ′(x))
        (d/dt Q(θ_i) = −θ_i ∂_i L). For k = 1 this is the balance law of DESIGN §1 / CASES C7.

        Returns:
            List of ``(incoming, outgoing)`` int64 CPU tensors of flat indices (one pair per neuron); empty
            for models without hidden neurons (:class:`Linear`).

        References:
            Du, Hu & Lee, "Algorithmic Regularization in Learning Deep Homogeneous Models: Layers are
            Automatically Balanced", NeurIPS 2018, arXiv:1806.00900.
        """
        return [(i, o) for inc, out in self.neuron_group_blocks() for i, o in zip(inc, out, strict=True)]

    @property
    def num_neuron_groups(self) -> int:
        """Number of hidden-neuron groups (length of :meth:`neuron_groups`)."""
        return sum(int(i.shape[0]) for i, _ in self.neuron_group_blocks())

    def neuron_balance(self, theta: Tensor, q: Callable[[Tensor], Tensor]) -> Tensor:
        """Per-neuron balance B_j = Σ_{i∈in(j)} q(θ_i) − k Σ_{r∈out(j)} q(θ_r), vectorized.

        k = ``activation_degree`` (1 except for :class:`TwoLayerReLUPower`). With q(x) = x² and k = 1 this
        is ‖w_j‖² − ‖a_j‖² (conserved by gradient flow); with q = Q_Φ = φ*∘φ′ of a separable potential it
        is the mirror-flow balance (e.g. q(x) = √(x² + β²) for hyperbolic entropy).

        Args:
            theta: flat parameters, shape `(p,)` or `(K, p)`.
            q: elementwise function applied to ``theta``.

        Returns:
            Balances, shape `(G,)` or `(K, G)` with G = ``num_neuron_groups``, in :meth:`neuron_groups` order.

        Raises:
            InvalidDataError: if ``theta`` has the wrong last dimension.

        References:
            Du, Hu & Lee, NeurIPS 2018, arXiv:1806.00900 (gradient flow); the mirror-flow form is a
            reconstruction (DESIGN §1), not read from the seed paper.
        """
        self._check_theta(theta)
        blocks = self.neuron_group_blocks(theta.device)
        if not blocks:
            return theta.new_zeros((*theta.shape[:-1], 0))
        qt = q(theta)
        k = self.activation_degree
        parts = [qt[..., inc].sum(-1) - k * qt[..., out].sum(-1) for inc, out in blocks]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)

    # ---- config -------------------------------------------------------------------------------------------

    @abc.abstractmethod
    def _config_kwargs(self) -> dict[str, Any]:
        """Constructor keyword arguments (JSON-able)."""

    def config(self) -> dict[str, Any]:
        """JSON-able ``{"name": ..., **constructor kwargs}``; ``get_model(**config)`` rebuilds the model."""
        return {"name": self.name, **self._config_kwargs()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._config_kwargs().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AbstractModel):
            return NotImplemented
        return type(self) is type(other) and self.config() == other.config()

    def __hash__(self) -> int:
        return hash((type(self).__name__, repr(self)))


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


# ----------------------------------------------------------------------------------------------------------
# linear models
# ----------------------------------------------------------------------------------------------------------


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
                f"DiagonalLinear: unknown init_mode {init_mode!r}; valid modes are "
                f"{', '.join(_DIAGONAL_INIT_MODES)}."
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
        return {
            key: self._randn(shape, generator) / math.sqrt(shape[1]) for key, shape in self._shapes.items()
        }

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


# ----------------------------------------------------------------------------------------------------------
# two-layer networks
# ----------------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------------
# registry
# ----------------------------------------------------------------------------------------------------------

MODELS: dict[str, type[AbstractModel]] = {
    cls.name: cls
    for cls in (
        Linear,
        DiagonalLinear,
        DeepLinear,
        TwoLayerReLU,
        TwoLayerLeakyReLU,
        TwoLayerReLUPower,
        DeepReLU,
    )
}


def get_model(name: str, **kwargs: Any) -> AbstractModel:
    """Build a model from its registry name and constructor arguments (inverse of ``model.config()``).

    Example:
        >>> get_model("two_layer_relu", input_dim=3, width=4)
        TwoLayerReLU(input_dim=3, width=4)
        >>> m = get_model("deep_linear", input_dim=2, widths=[3]); get_model(**m.config()) == m
        True

    Args:
        name: one of ``MODELS`` (``"linear"``, ``"diagonal_linear"``, ``"deep_linear"``,
            ``"two_layer_relu"``, ``"two_layer_leaky_relu"``, ``"two_layer_relu_power"``, ``"deep_relu"``).
        **kwargs: constructor arguments of that model.

    Returns:
        The model.

    Raises:
        InvalidParameterError: if ``name`` is unknown (the message lists valid names), an argument is
            unknown or missing, or a value is invalid.
    """
    if name not in MODELS:
        raise InvalidParameterError(f"Unknown model {name!r}. Valid names: {', '.join(sorted(MODELS))}.")
    cls = MODELS[name]
    signature = inspect.signature(cls)
    try:
        signature.bind(**kwargs)
    except TypeError as exc:
        args = ", ".join(
            k if v.default is inspect.Parameter.empty else f"{k}={v.default!r}"
            for k, v in signature.parameters.items()
        )
        raise InvalidParameterError(
            f"Model {name!r}: {exc}. Its arguments are {cls.__name__}({args})."
        ) from None
    return cls(**kwargs)
