"""Potentials that differ between blocks of coordinates: :class:`BlockPotential` (e.g. one per parameter tensor)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, final

import torch
from torch import Tensor

from ..errors import InvalidParameterError
from ._base import AbstractPotential, Horizon, _as_tensor
from ._custom import SeparablePotential

_EXAMPLE = "BlockPotential([(72, HyperbolicEntropy(0.1)), (1160, Euclidean())])"


def _same(a: AbstractPotential, b: AbstractPotential) -> bool:
    """True when two potentials are the same function (same built-in class and parameters, or one object)."""
    if a is b:
        return True
    return type(a) is type(b) and not isinstance(a, SeparablePotential) and a.params() == b.params()


def blocks_from_dicts(
    blocks: Any, build: Callable[..., AbstractPotential]
) -> list[tuple[int, AbstractPotential, str | None]]:
    """``[{"size": n, "name": ..., **params, "tensor": label}]`` (:meth:`BlockPotential.params`) as
    ``(size, potential, label)`` triples, each potential from ``build(name, **params)`` (get_potential)."""
    if isinstance(blocks, (str, bytes, Mapping)) or not isinstance(blocks, Sequence) or not blocks:
        raise InvalidParameterError(
            f"potential 'blocks' needs blocks = a non-empty list of {{'size': n, 'name': ..., **params}} dicts, "
            f"got {blocks!r}"
        )
    out = []
    for i, entry in enumerate(blocks):
        if not isinstance(entry, Mapping) or "size" not in entry or "name" not in entry:
            raise InvalidParameterError(
                f"BlockPotential: block {i} {entry!r} needs 'size' (its number of coordinates) and 'name' (a "
                "potential), e.g. {'size': 72, 'name': 'hyperbolic_entropy', 'beta': 0.1}"
            )
        spec = dict(entry)
        size, label = spec.pop("size"), spec.pop("tensor", None)
        out.append((size, build(spec.pop("name"), **spec), label))
    return out


def _parse_blocks(blocks: Any) -> list[tuple[int, int, AbstractPotential, str | None]]:
    """(start, stop, potential, label) per block in coordinate order, checked to partition [0, P)."""
    if isinstance(blocks, (str, bytes, Mapping)) or not isinstance(blocks, Sequence) or not blocks:
        raise InvalidParameterError(
            f"BlockPotential needs a non-empty list of (size or slice, potential) pairs, got {blocks!r}; "
            f"e.g. {_EXAMPLE}"
        )
    parsed, start = [], 0
    for i, entry in enumerate(blocks):
        if isinstance(entry, Sequence) and not isinstance(entry, (str, bytes)) and len(entry) in (2, 3):
            where, pot, label = entry[0], entry[1], (entry[2] if len(entry) == 3 else None)
        else:
            raise InvalidParameterError(
                f"BlockPotential: block {i} must be a (size or slice, potential) pair, got {entry!r}; e.g. {_EXAMPLE}"
            )
        if isinstance(pot, BlockPotential) or not isinstance(pot, AbstractPotential):
            raise InvalidParameterError(
                f"BlockPotential: block {i} needs a potential (e.g. Euclidean(), HyperbolicEntropy(0.1)), got "
                f"{type(pot).__name__}; nested block potentials are not supported: list their blocks instead"
            )
        if isinstance(where, slice):
            if where.step not in (None, 1) or where.start is None or where.stop is None:
                raise InvalidParameterError(
                    f"BlockPotential: block {i}'s slice {where} must be contiguous with explicit start and stop, "
                    "e.g. slice(0, 72)"
                )
            lo, hi = int(where.start), int(where.stop)
        elif isinstance(where, int) and not isinstance(where, bool):
            lo, hi = start, start + int(where)
        else:
            raise InvalidParameterError(
                f"BlockPotential: block {i} needs an integer size or a slice, got {where!r}; e.g. {_EXAMPLE}"
            )
        if hi <= lo or lo < 0:
            raise InvalidParameterError(f"BlockPotential: block {i} ({lo}:{hi}) is empty or negative; give size ≥ 1")
        parsed.append((lo, hi, pot, label))
        start = hi
    parsed.sort(key=lambda b: b[0])
    end = 0
    for lo, hi, _, label in parsed:
        if lo != end:
            what = "overlaps the previous block" if lo < end else f"leaves coordinates {end}:{lo} without a potential"
            raise InvalidParameterError(
                f"BlockPotential: the block at {lo}:{hi}{f' ({label})' if label else ''} {what}; the blocks must cover "
                "0..P−1 exactly once (consecutive slices, or sizes in order)"
            )
        end = hi
    return parsed


@final
class BlockPotential(AbstractPotential):
    """A separable potential that applies potential P_b to the coordinates of block b.

    Φ(θ) = Σ_b Σ_{k ∈ b} φ_b(θ_k) is again separable, so mirror flow, (mini-batch) mirror descent, the balance
    quantity Q and the Bregman divergence are those of the blocks' potentials on their coordinates: every
    elementwise method (φ, φ′, (φ′)⁻¹, φ″, 1/φ″, Q, Q − Q(0), Q∞) calls each block's potential once on its slice
    of the last dimension and concatenates (dtype and device of the input); sums are sums over blocks. Adjacent
    blocks with the same potential are merged. Typical use: hyperbolic entropy on a network's first layer and
    the Euclidean potential elsewhere (:meth:`per_tensor`).

    Inputs of the elementwise methods must have last dimension P = total size (full parameter vectors, any
    leading dimensions); a tensor of another length is refused, since which block its coordinates belong to is
    unknown. When every block has the same potential, that potential is used directly on any shape and all
    results are bitwise those of the plain potential.

    Horizon: the horizon function of Φ is the sum of the blocks' horizon functions,
    Σ_b Σ_{k ∈ b} Q∞_b(θ_k) (:meth:`horizon_function`). When all blocks share one :class:`Horizon` it is that
    horizon; when they share only the homogeneity α (e.g. hyperbolic entropies of different β have equal
    horizons, Euclidean and p-power-plus-quadratic with p < 2 share α = 2 with other coefficients), :attr:`horizon`
    has that α but p and coefficient nan (a weighted gauge: Q-margins q_min/(Σ Q∞)^{L/α} stay defined, an ℓp
    max-margin reference does not); with mixed α (hyperbolic entropy ℓ1 and Euclidean ℓ2) Σ Q∞ is not
    homogeneous, and α, p, coefficient are all nan, so Q-margins and horizon norms computed from α come out nan
    (:attr:`horizon_note` says why) rather than silently wrong; the horizon function itself stays finite.

    Args:
        blocks: list of ``(size, potential)`` (consecutive blocks in order), ``(slice(start, stop), potential)``
            (covering 0..P−1 exactly once), optionally with a third item, a label (e.g. a tensor name). The dicts
            ``{"size": n, "name": potential name, **params, "tensor": label}`` that :meth:`params` writes are
            read by ``get_potential("blocks", blocks=[...])``.

    Raises:
        InvalidParameterError: an empty list, a block that is not a (size/slice, potential) pair, a size < 1,
            slices with gaps or overlaps, or a nested BlockPotential.

    Example:
        >>> from flowsim.potentials import Euclidean, HyperbolicEntropy
        >>> pot = BlockPotential([(2, HyperbolicEntropy(0.1)), (3, Euclidean())])
        >>> pot.mirror_map(torch.tensor([0.1, 0.0, 1.0, 2.0, 3.0], dtype=torch.float64))
        tensor([0.8814, 0.0000, 1.0000, 2.0000, 3.0000], dtype=torch.float64)
    """

    name = "blocks"

    def __init__(self, blocks: Sequence[Any]) -> None:
        self.blocks = tuple(_parse_blocks(blocks))
        self.size = self.blocks[-1][1]
        runs: list[list[Any]] = []
        for lo, hi, pot, _ in self.blocks:
            if runs and _same(runs[-1][2], pot):
                runs[-1][1] = hi
            else:
                runs.append([lo, hi, pot])
        self._runs = tuple((slice(lo, hi), pot) for lo, hi, pot in runs)
        self._uniform = runs[0][2] if len(runs) == 1 else None

    @classmethod
    def per_tensor(
        cls,
        model: Any,
        potentials: Mapping[str, AbstractPotential],
        default: AbstractPotential | None = None,
    ) -> BlockPotential:
        """One potential per named parameter tensor of a flowsim model.

        Args:
            model: a flowsim model (its :meth:`~flowsim.models.AbstractModel.layer_slices` give the blocks,
                e.g. ``conv1``, ``conv2``, ``head`` for :class:`~flowsim.models.VGGNet`, ``W``, ``a`` for
                two-layer networks).
            potentials: tensor name -> potential, e.g. ``{"conv1": HyperbolicEntropy(0.1)}``.
            default: the potential of the tensors not named (None: every tensor must be named).

        Returns:
            The block potential, one block per tensor labelled with its name.

        Raises:
            InvalidParameterError: `model` has no named tensors, an unknown tensor name (the message lists the
                model's), or a tensor without a potential and no `default`.
        """
        slices = model.layer_slices() if hasattr(model, "layer_slices") else None
        if not slices:
            raise InvalidParameterError(
                f"BlockPotential.per_tensor needs a flowsim model (with named parameter tensors), got "
                f"{type(model).__name__}; wrap a torch module with flowsim.models.from_module"
            )
        if not isinstance(potentials, Mapping):
            raise InvalidParameterError(
                f"BlockPotential.per_tensor needs a dict tensor name -> potential, got {type(potentials).__name__}"
            )
        unknown = [k for k in potentials if k not in slices]
        if unknown:
            raise InvalidParameterError(
                f"BlockPotential.per_tensor: {type(model).__name__} has no tensor(s) {unknown}; its tensors are "
                f"{list(slices)}"
            )
        missing = [k for k in slices if k not in potentials]
        if missing and default is None:
            raise InvalidParameterError(
                f"BlockPotential.per_tensor: no potential for tensor(s) {missing}; name them or pass default=, "
                "e.g. default=Euclidean()"
            )
        return cls([(sl, potentials.get(k, default), k) for k, sl in slices.items()])

    # ---- dispatch -----------------------------------------------------------------------------------------

    def _check(self, x: Tensor) -> None:
        if x.dim() == 0 or x.shape[-1] != self.size:
            raise InvalidParameterError(
                f"BlockPotential acts on full parameter vectors (last dimension P = {self.size}), got shape "
                f"{tuple(x.shape)}: the block of each coordinate is only known by its position. Parts of θ (e.g. "
                "one neuron's weights, as exact Filippov kinks evaluate) are not supported with different potentials "
                "per block; use kinks='naive' for such flows, or mirror descent"
            )

    def _map(self, method: Callable[[AbstractPotential, Tensor], Tensor], x: Any) -> Tensor:
        x = _as_tensor(x)
        if self._uniform is not None:
            return method(self._uniform, x)
        self._check(x)
        return torch.cat([method(pot, x[..., sl]) for sl, pot in self._runs], dim=-1)

    def phi(self, x: Tensor) -> Tensor:
        return self._map(lambda p, t: p.phi(t), x)

    def mirror_map(self, theta: Tensor) -> Tensor:
        return self._map(lambda p, t: p.mirror_map(t), theta)

    def inverse_mirror_map(self, z: Tensor) -> Tensor:
        return self._map(lambda p, t: p.inverse_mirror_map(t), z)

    def hessian_diag(self, theta: Tensor) -> Tensor:
        return self._map(lambda p, t: p.hessian_diag(t), theta)

    def inverse_hessian_diag(self, theta: Tensor) -> Tensor:
        return self._map(lambda p, t: p.inverse_hessian_diag(t), theta)

    def q_function(self, theta: Tensor) -> Tensor:
        return self._map(lambda p, t: p.q_function(t), theta)

    def q_excess(self, theta: Tensor) -> Tensor:
        return self._map(lambda p, t: p.q_excess(t), theta)

    def q_horizon(self, theta: Tensor) -> Tensor:
        """Q∞ of each coordinate's block potential, elementwise (shape `(..., P)`)."""
        return self._map(lambda p, t: p.q_horizon(t), theta)

    def bregman_divergence(self, a: Tensor, b: Tensor) -> Tensor:
        """Σ_b D_{Φ_b}(a_b, b_b): the sum of the blocks' Bregman divergences (each with its own accuracy)."""
        if self._uniform is not None:
            return self._uniform.bregman_divergence(a, b)
        a, b = _as_tensor(a), _as_tensor(b)
        dtype = torch.promote_types(a.dtype, b.dtype)
        a, b = torch.broadcast_tensors(a.to(dtype), b.to(dtype))
        self._check(a)
        return sum(pot.bregman_divergence(a[..., sl], b[..., sl]) for sl, pot in self._runs)

    def horizon_function(self, theta: Tensor) -> Tensor:
        """Σ_b Σ_{k ∈ b} Q∞_b(θ_k) over the last dimension (finite also for mixed horizons)."""
        if self._uniform is not None:
            return self._uniform.horizon_function(theta)
        return self.q_horizon(theta).sum(-1)

    # ---- horizon and description -------------------------------------------------------------------------

    @property
    def horizon(self) -> Horizon:
        """The common horizon of the blocks, or a ``"mixed"`` one with nan fields (see the class docstring)."""
        horizons = [pot.horizon for _, pot in self._runs]
        if all(h == horizons[0] for h in horizons):
            return horizons[0]
        alphas = {h.alpha for h in horizons}
        alpha = alphas.pop() if len(alphas) == 1 else math.nan
        return Horizon("mixed", math.nan, alpha, math.nan)

    @property
    def horizon_note(self) -> str | None:
        """Why :attr:`horizon` has nan fields (None when the blocks share one horizon)."""
        h = self.horizon
        if h.name != "mixed":
            return None
        parts = ", ".join(f"{pot.name} (α = {pot.horizon.alpha:g})" for _, pot in self._runs)
        if math.isnan(h.alpha):
            return (
                f"blocks with horizons of different homogeneity ({parts}): Σ Q∞ is not homogeneous, so no single "
                "ℓp gauge or Q-margin q_min/(Σ Q∞)^{L/α} is defined (reported as nan); horizon_function is the sum "
                "of the blocks' horizon functions"
            )
        return (
            f"blocks with the same α = {h.alpha:g} but different horizon coefficients ({parts}): Σ Q∞ is a weighted "
            "α-homogeneous gauge (Q-margins defined), not one ℓp norm (p and coefficient nan)"
        )

    def params(self) -> dict[str, Any]:
        """``{"blocks": [{"size": n, "name": ..., **params, "tensor": label}, ...]}`` (get_potential round-trips)."""
        out = []
        for lo, hi, pot, label in self.blocks:
            entry = {"size": hi - lo, "name": pot.name, **pot.params()}
            if label is not None:
                entry["tensor"] = label
            out.append(entry)
        return {"blocks": out}

    def __repr__(self) -> str:
        inner = ", ".join(
            f"({f'{label!r}: ' if label else ''}{lo}:{hi}, {pot!r})" for lo, hi, pot, label in self.blocks
        )
        return f"BlockPotential([{inner}])"
