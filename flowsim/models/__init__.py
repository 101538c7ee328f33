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

from ._base import AbstractModel as AbstractModel
from ._cnn import VGG16_LAYERS as VGG16_LAYERS
from ._cnn import VGGNet as VGGNet
from ._cnn import vgg16 as vgg16
from ._deep import DeepReLU as DeepReLU
from ._linear import DeepLinear as DeepLinear
from ._linear import DiagonalLinear as DiagonalLinear
from ._linear import Linear as Linear
from ._module import ModuleModel as ModuleModel
from ._module import from_module as from_module
from ._registry import MODELS as MODELS
from ._registry import get_model as get_model
from ._two_layer import AbstractPiecewiseLinearTwoLayer as AbstractPiecewiseLinearTwoLayer
from ._two_layer import AbstractTwoLayer as AbstractTwoLayer
from ._two_layer import TwoLayerLeakyReLU as TwoLayerLeakyReLU
from ._two_layer import TwoLayerReLU as TwoLayerReLU
from ._two_layer import TwoLayerReLUPower as TwoLayerReLUPower

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
    "VGGNet",
    "VGG16_LAYERS",
    "vgg16",
    "ModuleModel",
    "from_module",
    "MODELS",
    "get_model",
]
