"""Strictly convex potentials Φ(θ) = Σ_k φ(θ_k): mirror maps, inverse maps, Bregman divergences, horizons."""

from ._impl import *  # noqa: F401,F403
from ._impl import __all__  # noqa: F401
