"""Bias-free VGG-style convolutional networks (3×3 convolutions, ReLU, 2×2 max-pool, a linear head)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, final

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InvalidParameterError
from ._base import AbstractModel, NeuronGroupBlock, _positive_int

__all__ = ["VGGNet", "VGG16_LAYERS", "vgg16"]

#: VGG-16's convolutional part (configuration "D" of Simonyan & Zisserman): 13 convolutions, 5 max-pools.
VGG16_LAYERS: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)  # fmt: skip


def _image_shape(value: Any) -> tuple[int, int, int]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 3:
        raise InvalidParameterError(
            f"VGGNet: `input_shape` must be (channels, height, width), e.g. input_shape=(1, 8, 8); got {value!r}."
        )
    return tuple(_positive_int(v, f"input_shape[{i}]", "VGGNet") for i, v in enumerate(value))  # type: ignore[return-value]


def _layer_list(value: Any) -> tuple[int | str, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) == 0:
        raise InvalidParameterError(
            f"VGGNet: `layers` must be a non-empty list of channel counts and 'M' (2×2 max-pool), "
            f"e.g. layers=[16, 16, 'M', 32, 32, 'M']; got {value!r}."
        )
    out: list[int | str] = []
    for i, item in enumerate(value):
        if isinstance(item, str):
            if item.upper() != "M":
                raise InvalidParameterError(
                    f"VGGNet: layers[{i}] = {item!r} is not a channel count or 'M' (2×2 max-pool)."
                )
            out.append("M")
        else:
            out.append(_positive_int(item, f"layers[{i}]", "VGGNet"))
    if not any(isinstance(v, int) for v in out):
        raise InvalidParameterError("VGGNet: `layers` has no convolution; give at least one channel count.")
    return tuple(out)


@final
class VGGNet(AbstractModel):
    """Bias-free VGG-style CNN f(θ; x): 3×3 convolutions (padding 1) + ReLU, 2×2 max-pools, a ReLU MLP, a
    linear head.

    Every layer is positively homogeneous of degree 1 in its input (convolution and linear maps without
    bias, ReLU, max-pool), so f(cθ; x) = c^L f(θ; x) with L = ``degree`` = number of weight layers
    (convolutions + hidden linear layers + head). Max-pools use ``ceil_mode`` so odd sizes (MNIST's 7×7)
    keep their border. Inputs are flat rows of length C·H·W (channel-major, as ``x.reshape(n, -1)`` of an
    `(n, C, H, W)` image batch), so data sets stay `(n, d)` matrices.

    Parameters ``conv1 … convJ`` of shapes `(C_out, C_in, 3, 3)`, ``fc1 …`` of shapes `(h, h_prev)` and
    ``head`` `(K, h_last)`; initialization N(0, 2/fan_in)·s for layers followed by ReLU (He) and
    N(0, 1/fan_in)·s for the head. Neuron groups are the channels of each convolution (incoming: its
    kernel; outgoing: the next layer's weights that read it) and the hidden units of the MLP; per-channel
    rescaling commutes with ReLU and max-pool, so their balance is conserved by mirror flow. Kinks on every
    ReLU and max-pool switch: flowsim integrates such models with ``kinks="naive"``.

    Args:
        input_shape: image shape (C, H, W).
        layers: VGG-style list of channel counts and ``"M"`` (max-pool), e.g. ``[16, 16, "M", 32, "M"]``.
        num_classes: K ≥ 1 outputs; K = 1 gives a scalar output f(θ; x) for labels ±1, K ≥ 2 logits
            of shape `(n, K)` for labels 0..K−1.
        hidden: widths of hidden linear layers between the convolutions and the head (default none).

    Raises:
        InvalidParameterError: bad shapes, layer lists, class count or widths.

    References:
        Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition", ICLR 2015
        (arXiv:1409.1556). Lyu & Li, ICLR 2020 (arXiv:1906.05890), homogeneous networks.
    """

    name = "vgg_cnn"
    has_kinks = True

    def __init__(
        self,
        input_shape: Sequence[int],
        layers: Sequence[int | str],
        num_classes: int = 10,
        hidden: Sequence[int] = (),
    ) -> None:
        self.input_shape = _image_shape(input_shape)
        self.layers = _layer_list(layers)
        self.num_classes = _positive_int(num_classes, "num_classes", "VGGNet")
        if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
            raise InvalidParameterError(f"VGGNet: `hidden` must be a list of widths, e.g. hidden=[64]; got {hidden!r}.")
        self.hidden = tuple(_positive_int(h, f"hidden[{i}]", "VGGNet") for i, h in enumerate(hidden))
        self.input_dim = math.prod(self.input_shape)
        shapes, channels, (h, w) = {}, self.input_shape[0], self.input_shape[1:]
        for item in self.layers:
            if item == "M":
                h, w = -(-h // 2), -(-w // 2)
            else:
                shapes[f"conv{len(shapes) + 1}"] = (item, channels, 3, 3)
                channels = item
        self._n_conv = len(shapes)
        self._feature_shape = (channels, h, w)
        prev = channels * h * w
        for i, width in enumerate(self.hidden):
            shapes[f"fc{i + 1}"] = (width, prev)
            prev = width
        shapes["head"] = (self.num_classes, prev)
        self.degree = len(shapes)
        self._setup(shapes)

    def _forward(self, theta: Tensor, X: Tensor) -> Tensor:
        if theta.dim() > 1:  # members of a batch of parameter vectors, one after another
            lead = theta.shape[:-1]
            outs = [self._forward(th, X) for th in theta.reshape(-1, theta.shape[-1])]
            return torch.stack(outs).reshape(*lead, *outs[0].shape)
        Ws = iter(self._views(theta))
        H = X.reshape(X.shape[0], *self.input_shape)
        for item in self.layers:
            H = F.max_pool2d(H, 2, ceil_mode=True) if item == "M" else torch.relu(F.conv2d(H, next(Ws), padding=1))
        H = H.reshape(H.shape[0], -1)
        for _ in self.hidden:
            H = torch.relu(H @ next(Ws).mT)
        out = H @ next(Ws).mT
        return out.squeeze(-1) if self.num_classes == 1 else out

    def hidden_activations(self, theta: Tensor, X: Tensor) -> dict[str, Tensor]:
        """Post-ReLU outputs of every layer but the head (before any following max-pool).

        Args:
            theta: flat parameters, shape `(p,)`; X: inputs `(n, d)`.

        Returns:
            Ordered dict from layer name (``"conv1"``, …, ``"fc1"``, …) to its output, shape `(n, C, H, W)`
            for convolutions and `(n, h)` for hidden linear layers.

        Raises:
            InvalidDataError: on wrong shapes (as :meth:`forward`).
        """
        self._check_inputs(theta, X)
        if theta.dim() != 1:
            raise InvalidParameterError("VGGNet.hidden_activations takes one parameter vector of shape (p,).")
        names, Ws = iter(self._shapes), iter(self._views(theta))
        out: dict[str, Tensor] = {}
        H = X.reshape(X.shape[0], *self.input_shape)
        for item in self.layers:
            if item == "M":
                H = F.max_pool2d(H, 2, ceil_mode=True)
            else:
                H = out[next(names)] = torch.relu(F.conv2d(H, next(Ws), padding=1))
        H = H.reshape(H.shape[0], -1)
        for _ in self.hidden:
            H = out[next(names)] = torch.relu(H @ next(Ws).mT)
        return out

    def _init_params(self, generator: torch.Generator) -> dict[str, Tensor]:
        params = {}
        for key, shape in self._shapes.items():
            fan_in = math.prod(shape[1:])
            gain = 1.0 if key == "head" else 2.0
            params[key] = self._randn(shape, generator) * math.sqrt(gain / fan_in)
        return params

    def _build_neuron_group_blocks(self) -> list[NeuronGroupBlock]:
        keys = list(self._shapes)
        starts = {key: start for key, start, _, _ in self._layout}
        blocks = []
        for l, key in enumerate(keys[:-1]):
            shape, nxt = self._shapes[key], self._shapes[keys[l + 1]]
            width, fan_in = shape[0], math.prod(shape[1:])
            j = torch.arange(width, dtype=torch.long).reshape(width, 1)
            incoming = starts[key] + j * fan_in + torch.arange(fan_in, dtype=torch.long)
            per_unit = math.prod(nxt[1:]) // width if len(nxt) == 4 else nxt[1] // width  # inputs read per unit
            rows = torch.arange(nxt[0], dtype=torch.long).reshape(nxt[0], 1) * math.prod(nxt[1:])
            cols = (j * per_unit + torch.arange(per_unit, dtype=torch.long)).reshape(width, 1, per_unit)
            outgoing = (starts[keys[l + 1]] + rows.reshape(1, -1, 1) + cols).reshape(width, -1)
            blocks.append((incoming, outgoing))
        return blocks

    def _config_kwargs(self) -> dict[str, Any]:
        return {
            "input_shape": list(self.input_shape),
            "layers": list(self.layers),
            "num_classes": self.num_classes,
            "hidden": list(self.hidden),
        }


def vgg16(
    input_shape: Sequence[int] = (3, 32, 32), num_classes: int = 10, *, hidden: Sequence[int] = (512, 512)
) -> VGGNet:
    """The VGG-16 topology without biases: 13 convolutions (:data:`VGG16_LAYERS`), two hidden linear layers
    and a linear head, 16 weight layers (degree 16).

    The classifier is the CIFAR-sized 512-512 variant by default (ImageNet's is 4096-4096); batch
    normalisation and biases are left out, so the network stays 16-homogeneous.

    Args:
        input_shape: (C, H, W); 28×28 MNIST works (ceil-mode pools: 28 → 14 → 7 → 4 → 2 → 1).
        num_classes: K.
        hidden: widths of the two hidden linear layers.

    Returns:
        A :class:`VGGNet`.

    References:
        Simonyan & Zisserman, ICLR 2015 (arXiv:1409.1556), configuration D.
    """
    return VGGNet(input_shape, VGG16_LAYERS, num_classes=num_classes, hidden=hidden)
