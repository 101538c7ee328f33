"""L-homogeneous models f(θ; x): linear, diagonal and deep linear networks, two-layer and deep ReLU nets."""

from ._impl import *  # noqa: F401,F403
from ._impl import __all__  # noqa: F401
