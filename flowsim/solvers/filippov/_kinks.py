"""Re-export for importers of ``flowsim.solvers.filippov._kinks``; import from :mod:`flowsim.solvers.filippov`."""

from . import (
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
