"""Exact ReLU kinks: Filippov solutions by event location, switching and sliding modes."""

from ._kinks import (
    ACTIVE,
    FILIPPOV_OPTIONS,
    INACTIVE,
    RK_OPTIONS,
    SLIDING,
    FilippovDriver,
    FilippovInvariantError,
    PiecewiseAffineSystem,
    activation_summary,
    auto_filippov,
    solve_filippov,
    supports,
)

__all__ = [
    "ACTIVE",
    "FILIPPOV_OPTIONS",
    "INACTIVE",
    "RK_OPTIONS",
    "SLIDING",
    "FilippovDriver",
    "FilippovInvariantError",
    "PiecewiseAffineSystem",
    "activation_summary",
    "auto_filippov",
    "solve_filippov",
    "supports",
]
