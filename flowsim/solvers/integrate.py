"""Re-export of the drivers for importers of ``flowsim.solvers.integrate``; import from :mod:`flowsim.solvers`."""

from .base import MaxStepsReached, NonFiniteField, StepFailed
from .rk import ADAPTIVE_METHODS, CountingField, SmoothDriver, finite_rms_norm, initial_step
from .stiff import STIFF_METHODS, StiffDriver, dual_jacobian

__all__ = [
    "ADAPTIVE_METHODS",
    "MaxStepsReached",
    "NonFiniteField",
    "SmoothDriver",
    "CountingField",
    "finite_rms_norm",
    "initial_step",
    "STIFF_METHODS",
    "StiffDriver",
    "StepFailed",
    "dual_jacobian",
]
