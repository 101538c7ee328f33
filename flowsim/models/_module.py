"""A user's own bias-free ``torch.nn.Module`` as a flowsim model: :func:`from_module`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, final

import torch
from torch import Tensor, nn

from ..errors import InvalidParameterError
from ._base import AbstractModel, NeuronGroupBlock, _positive_int

__all__ = ["ModuleModel", "from_module"]

# Layers that keep a network positively homogeneous (without bias): degree 1 in their input, or no parameters.
_HOMOGENEOUS = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ReLU,
    nn.LeakyReLU,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.Flatten,
    nn.Unflatten,
    nn.Identity,
    nn.Sequential,
    nn.ModuleList,
)
_NORMALISATION = (
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
)
_NONHOMOGENEOUS = (
    nn.Tanh,
    nn.Sigmoid,
    nn.GELU,
    nn.SiLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.Softplus,
    nn.Softmax,
    nn.LogSoftmax,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Mish,
    nn.Dropout,
)
_HOMOGENEITY_RTOL = 1e-9


def _check_layers(module: nn.Module) -> None:
    """Refuse biases, normalisation layers and non-homogeneous activations, naming the layer."""
    for name, sub in module.named_modules():
        where = f"layer {name!r} ({type(sub).__name__})" if name else f"the module ({type(sub).__name__})"
        if isinstance(sub, _NORMALISATION):
            raise InvalidParameterError(
                f"from_module: {where} is a normalisation layer; it is not positively homogeneous in the "
                "parameters. Remove it (flowsim's models are bias-free and normalisation-free)."
            )
        if isinstance(sub, _NONHOMOGENEOUS):
            raise InvalidParameterError(
                f"from_module: {where} is not positively homogeneous (f(cx) ≠ c f(x)); use ReLU or LeakyReLU."
            )
        bias = getattr(sub, "bias", None)
        if isinstance(bias, Tensor):
            raise InvalidParameterError(
                f"from_module: {where} has a bias; build it with bias=False (a bias breaks f(cθ) = c^L f(θ))."
            )
        if not isinstance(sub, _HOMOGENEOUS) and any(True for _ in sub.parameters(recurse=False)):
            raise InvalidParameterError(
                f"from_module: {where} is a layer type flowsim does not know and it holds parameters; use "
                "bias-free Linear/Conv layers with ReLU/LeakyReLU/pooling."
            )


@final
class ModuleModel(AbstractModel):
    """A bias-free, positively homogeneous ``torch.nn.Module`` on a flat parameter vector.

    The module is evaluated with :func:`torch.func.functional_call` on the named parameters unflattened
    from θ (in ``module.named_parameters()`` order), so it runs on whatever device and dtype θ has; the
    module's own parameter values are only used by :meth:`init` (θ₀ = its current weights × scale).
    Built by :func:`from_module`. Unknown architectures have kinks flowsim does not locate: the flow
    integrates them with ``kinks="naive"`` (``kinks="auto"`` picks it). No neuron groups are reported.
    """

    name = "module"
    has_kinks = True

    def __init__(self, module: nn.Module, input_shape: Sequence[int], degree: int) -> None:
        self.module = module
        self.input_shape = tuple(
            _positive_int(v, f"input_shape[{i}]", "from_module") for i, v in enumerate(input_shape)
        )
        self.input_dim = math.prod(self.input_shape)
        self.degree = int(degree)
        named = dict(module.named_parameters())
        self._setup({key: tuple(p.shape) for key, p in named.items()})
        probe = self._forward(
            self.flatten({k: p.detach().double() for k, p in named.items()}),
            torch.zeros(1, self.input_dim, dtype=torch.float64),
        )
        self.num_classes = 1 if probe.dim() == 1 else int(probe.shape[-1])

    def _forward(self, theta: Tensor, X: Tensor) -> Tensor:
        if theta.dim() > 1:
            lead = theta.shape[:-1]
            outs = [self._forward(th, X) for th in theta.reshape(-1, theta.shape[-1])]
            return torch.stack(outs).reshape(*lead, *outs[0].shape)
        params = dict(zip(self._shapes, self._views(theta), strict=True))
        out = torch.func.functional_call(self.module, params, (X.reshape(X.shape[0], *self.input_shape),))
        out = out.reshape(X.shape[0], -1)
        return out.squeeze(-1) if out.shape[-1] == 1 else out

    def _init_params(self, generator: torch.Generator) -> dict[str, Tensor]:
        return {
            k: p.detach().to(dtype=torch.float64, device=generator.device).clone()
            for k, p in self.module.named_parameters()
        }

    def _build_neuron_group_blocks(self) -> list[NeuronGroupBlock]:
        return []

    def _config_kwargs(self) -> dict[str, Any]:
        return {"module": type(self.module).__name__, "input_shape": list(self.input_shape), "degree": self.degree}


def _homogeneity_degree(model: ModuleModel, seed: int) -> int:
    """L from f(cθ; x) = c^L f(θ; x) at a random θ, x and c = 2, checked at c = 0.5 and 3."""
    gen = torch.Generator().manual_seed(seed)
    theta = torch.randn(model.num_params, generator=gen, dtype=torch.float64)
    X = torch.randn(8, model.input_dim, generator=gen, dtype=torch.float64).abs()
    f = model._forward(theta, X)
    scale = float(f.abs().max())
    if not scale > 0:
        raise InvalidParameterError("from_module: the module's output is 0 at random parameters; it cannot be checked.")
    L = round(math.log(float(model._forward(2.0 * theta, X).abs().max()) / scale) / math.log(2.0))
    for c in (0.5, 2.0, 3.0):
        err = float((model._forward(c * theta, X) - c**L * f).abs().max()) / (c**L * scale)
        if L < 1 or err > _HOMOGENEITY_RTOL:
            raise InvalidParameterError(
                f"from_module: the module is not positively homogeneous in its parameters: f(cθ) ≠ c^L f(θ) "
                f"(c = {c}, L = {L}, relative error {err:.2e}). Remove biases and non-homogeneous layers."
            )
    return L


def from_module(module: nn.Module, input_shape: Sequence[int], *, seed: int = 0) -> ModuleModel:
    """Wrap a user's bias-free ``torch.nn.Module`` (e.g. an ``nn.Sequential`` of bias-free Conv2d / ReLU /
    MaxPool2d / Flatten / Linear) as a flowsim model.

    The layers are checked by type (no biases, no normalisation, no non-homogeneous activation; the
    message names the offending layer), then homogeneity is checked numerically in float64: the degree L
    is read off f(2θ)/f(θ) at a random θ and f(cθ; x) = c^L f(θ; x) is verified to 1e-9 relative at
    c = 0.5, 2, 3.

    Args:
        module: the network; its output per input is a scalar (labels ±1) or K logits (labels 0..K−1).
        input_shape: shape of one input, e.g. (1, 8, 8); data rows are flat of length prod(input_shape).
        seed: seed of the random point of the homogeneity check.

    Returns:
        A :class:`ModuleModel` with ``degree`` = L and ``num_classes`` = K (1 for a scalar output).

    Raises:
        InvalidParameterError: if ``module`` is not a ``torch.nn.Module``, a layer has a bias, normalises,
            or is not homogeneous, or the numerical check fails.
    """
    if not isinstance(module, nn.Module):
        raise InvalidParameterError(f"from_module needs a torch.nn.Module, got {type(module).__name__}.")
    _check_layers(module)
    if not any(True for _ in module.parameters()):
        raise InvalidParameterError("from_module: the module has no parameters to train.")
    model = ModuleModel(module, input_shape, degree=1)
    model.degree = _homogeneity_degree(model, seed)
    return model
