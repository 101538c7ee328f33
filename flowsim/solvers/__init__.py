"""Integration drivers: adaptive Runge–Kutta (torchdiffeq), implicit (scipy), batched dopri5, Filippov."""

from .auto import AutoDriver
from .base import AbstractDriver, MaxStepsReached, NonFiniteField, StepFailed
from .filippov import (
    ACTIVE,
    FILIPPOV_OPTIONS,
    INACTIVE,
    RK_OPTIONS,
    SLIDING,
    FilippovDriver,
    FilippovInvariantError,
    ImplicitFilippovDriver,
    PiecewiseAffineSystem,
    activation_summary,
    auto_filippov,
    solve_filippov,
    supports,
)
from .rk import ADAPTIVE_METHODS, CountingField, SmoothDriver, finite_rms_norm
from .stiff import STIFF_METHODS, StiffDriver, dual_jacobian

AUTO_METHOD = "auto"
"""``method="auto"``: dopri5, then radau once its steps stop growing in log-time (:class:`AutoDriver`)."""

__all__ = [
    "ACTIVE",
    "AUTO_METHOD",
    "AutoDriver",
    "AbstractDriver",
    "ADAPTIVE_METHODS",
    "FILIPPOV_OPTIONS",
    "INACTIVE",
    "RK_OPTIONS",
    "SLIDING",
    "STIFF_METHODS",
    "CountingField",
    "FilippovDriver",
    "FilippovInvariantError",
    "ImplicitFilippovDriver",
    "MaxStepsReached",
    "NonFiniteField",
    "PiecewiseAffineSystem",
    "SmoothDriver",
    "StepFailed",
    "StiffDriver",
    "activation_summary",
    "auto_filippov",
    "dual_jacobian",
    "finite_rms_norm",
    "solve_filippov",
    "supports",
]
