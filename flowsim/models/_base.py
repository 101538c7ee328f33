"""The model interface :class:`AbstractModel` (flat-θ layout, batching, init, neuron groups) and argument checks."""

from __future__ import annotations

import abc
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from ..errors import InvalidDataError, InvalidParameterError

NeuronGroupBlock = tuple[Tensor, Tensor]


def _positive_int(value: Any, name: str, model: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidParameterError(
            f"{model}: `{name}` must be an integer >= {minimum}; got {value!r} of type "
            f"{type(value).__name__}. Pass a plain int, e.g. {name}={max(minimum, 2)}."
        )
    if value < minimum:
        raise InvalidParameterError(
            f"{model}: `{name}` must be an integer >= {minimum}; got {value}. Pass {name}={minimum} or larger."
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
                    f"{model}.flatten: parameter {key!r} must have trailing shape {shape}; got shape {tuple(t.shape)}."
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
                f"{model}.init: pass either `seed` or `generator`, not both (got seed={seed!r} and a generator)."
            )
        if generator is None:
            if seed is None:
                seed = 0
            if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
                raise InvalidParameterError(f"{model}.init: `seed` must be a non-negative integer; got {seed!r}.")
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
        (d/dt Q(θ_i) = −θ_i ∂_i L). For k = 1 this is the balance law checked by validation case C7.

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
            reconstruction from convex duality, not read from the seed paper.
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
