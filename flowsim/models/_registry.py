"""Models by name: :data:`MODELS` and :func:`get_model`."""

from __future__ import annotations

import inspect
from typing import Any

from ..errors import InvalidParameterError
from ._base import AbstractModel
from ._cnn import VGGNet
from ._deep import DeepReLU
from ._linear import DeepLinear, DiagonalLinear, Linear
from ._two_layer import TwoLayerLeakyReLU, TwoLayerReLU, TwoLayerReLUPower

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
        VGGNet,
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
            ``"two_layer_relu"``, ``"two_layer_leaky_relu"``, ``"two_layer_relu_power"``, ``"deep_relu"``,
            ``"vgg_cnn"``).
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
            k if v.default is inspect.Parameter.empty else f"{k}={v.default!r}" for k, v in signature.parameters.items()
        )
        raise InvalidParameterError(f"Model {name!r}: {exc}. Its arguments are {cls.__name__}({args}).") from None
    return cls(**kwargs)
