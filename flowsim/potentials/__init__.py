"""Separable mirror-flow potentials Φ(θ) = Σ_k φ(θ_k).

Mirror flow d/dt ∇Φ(θ) = −∇L(θ) is integrated in dual coordinates z = ∇Φ(θ), θ = ∇Φ*(z), so the two
methods on the hot path are :meth:`AbstractPotential.mirror_map` (φ′) and
:meth:`AbstractPotential.inverse_mirror_map` ((φ′)⁻¹). Every method acts elementwise on tensors of any
shape (the sums :meth:`~AbstractPotential.value`, :meth:`~AbstractPotential.bregman_divergence` and
:meth:`~AbstractPotential.horizon_function` reduce over the last dimension), takes dtype and device from
its input and never touches global torch state (default dtype, RNG).

| potential | φ(x) | φ′ | (φ′)⁻¹ | 1/φ″ | Q = xφ′ − φ | horizon Q∞ |
|---|---|---|---|---|---|---|
| :class:`Euclidean` | x²/2 | x | z | 1 | x²/2 | ℓ2, x²/2 |
| :class:`HyperbolicEntropy` | x·asinh(x/β) − √(x²+β²) | asinh(x/β) | β sinh z | √(x²+β²) | √(x²+β²) | ℓ1, \\|x\\| |
| :class:`PPower` | \\|x\\|^p/p | sign(x)\\|x\\|^{p−1} | closed form | \\|x\\|^{2−p}/(p−1) | (1−1/p)\\|x\\|^p | ℓp |
| :class:`SmoothedHomogeneous` | (x²+λ)^{p/2} | p x (x²+λ)^{p/2−1} | Newton | closed | closed | ℓp, (p−1)\\|x\\|^p |
| :class:`PPowerPlusQuadratic` | \\|x\\|^p/p + λx²/2 | sign(x)\\|x\\|^{p−1} + λx | Newton | closed | closed | ℓp/ℓ2 |

:class:`SeparablePotential` wraps a user's φ (value only): φ′ and φ″ come from autograd, (φ′)⁻¹ from a
vectorized safeguarded Newton iteration and the horizon from :func:`estimate_horizon`.
:func:`get_potential` builds a built-in potential from its name. :class:`BlockPotential` applies a different
potential to each block of coordinates (e.g. per parameter tensor: :meth:`BlockPotential.per_tensor`).

References:
    Pesme, Dragomir & Flammarion, "Implicit Bias of Mirror Flow on Separable Data", NeurIPS 2024,
    arXiv:2406.12763 (horizon functions).
    Jacobs & Montúfar, arXiv:2605.19458 (2026), the seed paper of this project. Its body could not be
    read: the two non-homogeneous p-families and the balance quantity Q are reconstructions (see the
    class docstrings).
"""

from ._base import AbstractPotential as AbstractPotential
from ._base import Horizon as Horizon
from ._block import BlockPotential as BlockPotential
from ._builtin import Euclidean as Euclidean
from ._builtin import HyperbolicEntropy as HyperbolicEntropy
from ._builtin import PPower as PPower
from ._builtin import PPowerPlusQuadratic as PPowerPlusQuadratic
from ._builtin import SmoothedHomogeneous as SmoothedHomogeneous
from ._custom import SeparablePotential as SeparablePotential
from ._custom import estimate_horizon as estimate_horizon
from ._registry import POTENTIALS as POTENTIALS
from ._registry import get_potential as get_potential
from ._roots import _invert_odd_log_softplus as _invert_odd_log_softplus  # tested directly

__all__ = [
    "Horizon",
    "AbstractPotential",
    "Euclidean",
    "HyperbolicEntropy",
    "PPower",
    "SmoothedHomogeneous",
    "PPowerPlusQuadratic",
    "SeparablePotential",
    "BlockPotential",
    "estimate_horizon",
    "get_potential",
    "POTENTIALS",
]
