"""Built-in potentials by name: :data:`POTENTIALS` and :func:`get_potential`."""

from __future__ import annotations

import inspect
from typing import Any

from ..errors import InvalidParameterError
from ._base import AbstractPotential
from ._block import BlockPotential, blocks_from_dicts
from ._builtin import Euclidean, HyperbolicEntropy, PPower, PPowerPlusQuadratic, SmoothedHomogeneous

POTENTIALS: dict[str, type[AbstractPotential]] = {
    "euclidean": Euclidean,
    "hyperbolic_entropy": HyperbolicEntropy,
    "p_power": PPower,
    "smoothed_homogeneous": SmoothedHomogeneous,
    "p_power_quadratic": PPowerPlusQuadratic,
}
_ALIASES = {"he": "hyperbolic_entropy"}
_EXAMPLES = {
    "euclidean": "",
    "hyperbolic_entropy": "beta=0.1",
    "p_power": "p=3.0",
    "smoothed_homogeneous": "p=3.0, lam=1.0",
    "p_power_quadratic": "p=3.0, lam=1.0",
}


def get_potential(name: str, **params: Any) -> AbstractPotential:
    """Build a built-in potential from its name and parameters.

    Args:
        name: ``"euclidean"``, ``"hyperbolic_entropy"`` (alias ``"he"``), ``"p_power"``,
            ``"smoothed_homogeneous"`` or ``"p_power_quadratic"`` (case and ``-``/``_`` ignored); or
            ``"blocks"``: a :class:`BlockPotential` from ``blocks=[{"size": n, "name": ..., **params}, ...]``
            (the form its ``params()`` writes; not listed in :data:`POTENTIALS`, which holds elementwise ones).
        **params: constructor parameters (``beta``; ``p``; ``p`` and ``lam``; ``blocks``).

    Returns:
        The potential.

    Raises:
        InvalidParameterError: for an unknown name (the message lists the valid ones), an unknown or
            missing parameter, or an invalid parameter value.

    Example:
        >>> get_potential("he", beta=0.1)
        HyperbolicEntropy(beta=0.1)
    """
    valid = ", ".join(f"'{key}'" for key in POTENTIALS) + " (alias 'he' for 'hyperbolic_entropy')"
    if not isinstance(name, str):
        raise InvalidParameterError(f"potential name must be a string, got {name!r}; valid names: {valid}")
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    key = _ALIASES.get(key, key)
    if key == BlockPotential.name:
        if set(params) != {"blocks"}:
            raise InvalidParameterError(
                f"potential 'blocks' takes exactly one parameter, blocks (a list of {{'size': n, 'name': ..., "
                f"**params}} tables), got {sorted(params)}"
            )
        return BlockPotential(blocks_from_dicts(params["blocks"], get_potential))
    if key not in POTENTIALS:
        raise InvalidParameterError(
            f"unknown potential {name!r}; valid names: {valid}. For your own phi use SeparablePotential(phi)"
        )
    cls = POTENTIALS[key]
    signature = inspect.signature(cls.__init__)
    accepted = [n for n in signature.parameters if n != "self"]
    unknown = sorted(set(params) - set(accepted))
    example = f"get_potential({key!r}{', ' if _EXAMPLES[key] else ''}{_EXAMPLES[key]})"
    if unknown:
        takes = ", ".join(accepted) if accepted else "no parameters"
        raise InvalidParameterError(
            f"potential {key!r} does not take {', '.join(unknown)}; it takes {takes}, e.g. {example}"
        )
    missing = [n for n in accepted if n not in params]
    if missing:
        raise InvalidParameterError(f"potential {key!r} needs {', '.join(missing)}, e.g. {example}")
    return cls(**params)
