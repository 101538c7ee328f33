"""The field of one segment (a fixed activation state), as torchdiffeq calls it."""

from __future__ import annotations

import torch
from torch import Tensor

from ..base import MaxStepsReached
from .state import AbstractSwitchingSystem
from .stats import FilippovStats


class _SegmentField:
    """The fixed-activation-state field handed to torchdiffeq; counts evaluations and steps, tracks α.

    Args:
        field: the mirror-flow field (its ``nfe`` counts the evaluations) with its ``potential``.
        sw: the switching system whose current activation state gives the field.
        stats: the run's statistics (accepted and rejected steps, non-finite evaluations).
        max_steps: budget of accepted steps for the whole run.

    Raises:
        MaxStepsReached: from the accept callback, when the budget is used up.
    """

    def __init__(self, field, sw: AbstractSwitchingSystem, stats: FilippovStats, max_steps: int) -> None:
        self.field = field
        self.sw = sw
        self.stats = stats
        self.max_steps = max_steps
        # smallest sliding margin in the current step (``sw.sliding_margins``: α from [0, 1]'s bounds, …)
        self.stage_margin = float("inf")
        # the same per neuron (two-layer nets: sliding surfaces (i, j) of neuron j), `(m,)`; None: no evaluation yet
        self.neuron_stage_margins: Tensor | None = None
        self._per_neuron = bool(getattr(sw, "supports_soft", False))
        self.last: tuple | None = None  # (τ, z, margin) of the last evaluation with sliding surfaces
        self.cache: tuple | None = None  # (τ, z, mode, f): the field at a soft step's end, already evaluated
        self.start_field: tuple | None = None  # the same, also with sliding surfaces (for ḣ's sign at the next start)

    def __call__(self, tau: Tensor, z: Tensor) -> Tensor:
        sw = self.sw
        if self.cache is not None:
            c_tau, c_z, c_mode, c_f = self.cache
            self.cache = None
            if float(tau) == c_tau and torch.equal(z, c_z) and torch.equal(sw.mode, c_mode):
                return c_f
        self.field.nfe += 1
        theta = self.field.potential.inverse_mirror_map(z)
        v, alpha = sw.velocity(tau, theta)
        if alpha is not None:
            room = sw.sliding_room(theta, alpha)  # (the sliding surfaces only)
            m = float(room.min())
            self.stage_margin = min(self.stage_margin, m)
            self.last = (tau, z, m)
            if self._per_neuron:
                per = sw.sliding_neuron_margins(room)
                old = self.neuron_stage_margins
                self.neuron_stage_margins = per if old is None else torch.minimum(old, per)
        if not bool(torch.isfinite(v).all()):
            self.stats.n_nonfinite_evals += 1
            self.stats.last_nonfinite_tau = float(tau)
        return v

    def reset_margins(self) -> None:
        """Forget the sliding α's margins: a new step starts."""
        self.stage_margin = float("inf")
        self.neuron_stage_margins = None

    def margins_of(self, neurons: Tensor) -> Tensor | float:
        """The current step's smallest sliding-α margin of each of ``neurons`` `(K,)` (inf: none sliding), or
        the scalar margin over all sliding surfaces where per-neuron margins are not kept."""
        if self.neuron_stage_margins is None:
            return self.stage_margin
        return self.neuron_stage_margins[neurons]

    def callback_step(self, t0, y0, dt) -> None:
        self.reset_margins()

    def callback_accept_step(self, t0, y0, dt) -> None:
        st = self.stats
        st.n_accepted += 1
        st.last_dt = float(dt)
        if st.n_accepted >= self.max_steps:
            raise MaxStepsReached(f"{st.n_accepted} accepted steps")

    def callback_reject_step(self, t0, y0, dt) -> None:
        self.stats.n_rejected += 1
