"""The driver protocol shared by every integration driver, and the failures a driver raises.

A driver integrates dz/dτ = field(τ, z) from the first to the last time of a grid and calls
``save(τ_k, z_k)`` at every grid time it reaches. It raises on failure (the exceptions below, torchdiffeq's
``AssertionError``s, ``KeyboardInterrupt``); :func:`flowsim.simulate` turns those into a
:class:`~flowsim.results.trajectory.Status` and keeps what was saved plus :meth:`AbstractDriver.last_state`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

from torch import Tensor

__all__ = [
    "AbstractDriver",
    "MaxStepsReached",
    "NonFiniteField",
    "NotSeparated",
    "StepFailed",
    "implicit_failure",
    "margin_precision_hint",
]


class MaxStepsReached(Exception):
    """The run used its whole budget of accepted steps."""


class NonFiniteField(Exception):
    """The right-hand side returned NaN or inf."""


class StepFailed(Exception):
    """An implicit solver could not take a step (scipy's ``status == 'failed'``)."""


class NotSeparated(Exception):
    """A run-time monitor found that the data are still not separated past the run's separation horizon."""


def implicit_failure(method: str, tau: float, message: str, n_nonfinite: int, rtol: float, log_time: bool):
    """The exception for a failed scipy implicit step at τ: :class:`NonFiniteField` after non-finite field
    evaluations, else :class:`StepFailed`; both with :func:`margin_precision_hint`."""
    hint = margin_precision_hint(tau, rtol, log_time)
    if n_nonfinite:
        return NonFiniteField(f"{method}: {message} after {n_nonfinite} non-finite field evaluations{hint}")
    return StepFailed(f"{method} failed at τ = {tau:.9g}: {message}{hint}")


def margin_precision_hint(tau: float, rtol: float, log_time: bool) -> str:
    """A note for a failure late in log-time: the margins q_i ≈ log t of a state known to relative accuracy rtol
    are known to ≈ s·rtol, and the loss weights e^{s − q_i} to a factor e^{±s·rtol}; past s·rtol ≈ 0.1 an
    implicit step's Newton iteration meets loss weights wrong by orders of magnitude (measured: a two-layer ReLU
    under hyperbolic entropy failed at log t 3.4e5 with rtol 1e-6 and reached 1e6 with rtol 1e-7). Empty when
    s·rtol < 0.1 or the clock is linear."""
    if not log_time or not tau * rtol >= 0.1:
        return ""
    return (
        f"; at log t ≈ {tau:.3g} with rtol = {rtol:g} the margins (≈ log t) carry errors ≈ log t·rtol = "
        f"{tau * rtol:.2g}, so the loss weights are off by e^{{±{tau * rtol:.2g}}}: use rtol ≤ {0.03 / tau:.1g}"
    )


class AbstractDriver(abc.ABC):
    """Advances the dual state over a save grid, counting its work.

    Attributes:
        kinks: how ReLU kinks (switching surfaces) are treated: "naive" (integrated straight through) or
            "filippov" (event location, switching and sliding).
    """

    kinks: str
    monitor: Callable[[float, Tensor], None] | None = None
    """Optional check called with (τ, z) of accepted steps (drivers that support it: smooth and stiff); it may
    raise, e.g. :class:`NotSeparated`, to stop the run."""

    @abc.abstractmethod
    def integrate(self, field, z0: Tensor, tau_grid: Tensor, save: Callable[[float, Tensor], None]) -> None:
        """Integrate ``field`` from ``z0`` over ``tau_grid`` (τ, shape `(k,)`), calling ``save(τ_k, z_k)`` at every
        grid time after the first.

        Raises:
            MaxStepsReached: the budget of accepted steps is used up.
            NonFiniteField: the field returned non-finite values and the solver could not recover.
            StepFailed: an implicit solver could not take a step.
        """

    @abc.abstractmethod
    def last_state(self) -> tuple[float, Tensor] | None:
        """(τ, z) of the last accepted step, or None before the first."""

    @abc.abstractmethod
    def stats(self) -> dict:
        """Solver statistics (accepted and rejected steps, last step size, …; driver-specific keys)."""
