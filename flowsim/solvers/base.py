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

__all__ = ["AbstractDriver", "MaxStepsReached", "NonFiniteField", "NotSeparated", "StepFailed"]


class MaxStepsReached(Exception):
    """The run used its whole budget of accepted steps."""


class NonFiniteField(Exception):
    """The right-hand side returned NaN or inf."""


class StepFailed(Exception):
    """An implicit solver could not take a step (scipy's ``status == 'failed'``)."""


class NotSeparated(Exception):
    """A run-time monitor found that the data are still not separated past the run's separation horizon."""


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
