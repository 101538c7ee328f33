"""``method="auto"``: explicit Runge–Kutta while its steps are accuracy-limited, then Radau.

In log-time s = log(1 + t) the mirror flow relaxes onto its asymptotic path with an eigenvalue ≈ −1 for ever,
so an explicit method's steps stop growing at its stability limit (dopri5: Δs ≈ 3.3) and its work grows linearly
in log t, while Radau's steps keep growing with s. Early in training (fast transients, crowded kink events) the
explicit method is the cheaper one. The auto driver runs dopri5 — with the run's kink handling, Filippov or
naive — and hands the state over to Radau (:class:`~flowsim.solvers.stiff.StiffDriver`, or
:class:`~flowsim.solvers.filippov.ImplicitFilippovDriver` for exact kinks) once the steps have stopped growing:
:data:`PLATEAU_STEPS` consecutive accepted steps, none of them ended early by a kink event (steps kept whole with
soft crossings count), whose sizes lie within
a factor :data:`PLATEAU_SPREAD` of each other and are small against s itself (s ≥ 20 steps, s ≥ 1). The
stability limit itself is not known in advance: dopri5's interval is 3.3 for the eigenvalue −1 of the asymptotic
relaxation, but a network's fastest mode can be faster (measured: steps plateau at 1.3 for a two-layer ReLU net of
width 20 on 30 points, at 0.25 for width 6 on 12 points). A heuristic: a switch too early or too late changes the
cost, not the solution's accuracy.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import torch
from torch import Tensor

from .base import AbstractDriver

__all__ = ["AutoDriver", "EXPLICIT_METHOD", "PLATEAU_SPREAD", "PLATEAU_STEPS"]

EXPLICIT_METHOD = "dopri5"
PLATEAU_STEPS = 8
"""Consecutive accepted explicit steps (event-free or kept whole with soft crossings) at the stability limit before
the switch."""
PLATEAU_SPREAD = 1.5
"""The plateau's largest step over its smallest."""

# counters summed over the two phases (else the implicit phase's value, or the larger one for the "max_" keys)
_SUMMED = (
    "n_accepted",
    "n_rejected",
    "n_nonfinite_evals",
    "n_segments",
    "n_crossings",
    "n_sliding_entries",
    "n_sliding_exits",
    "n_crossing_events",
    "n_dip_events",
    "n_singular_retakes",
    "n_multilayer_segments",
    "n_multilayer_unconverged",
    "n_soft_crossings",
    "n_soft_steps",
    "n_coupling_differences",
    "n_exit_events",
    "n_redo_steps",
    "n_interpolated_states",
    "n_null_segments",
    "n_sliding_projections",
    "sliding_time",
    "sliding_surface_time",
    "n_jac",
    "n_lu",
)


class _Switch(Exception):
    """Raised from the explicit phase's step monitor: hand (τ, z) over to the implicit phase."""

    def __init__(self, tau: float, z: Tensor, dt: float) -> None:
        super().__init__(tau)
        self.tau, self.z, self.dt = tau, z, dt


class AutoDriver(AbstractDriver):
    """dopri5 until its steps stop growing (a stability limit in log-time), then Radau (``method="auto"``).

    Args:
        explicit: the explicit phase's driver (dopri5, with the run's kink handling and options).
        make_implicit: ``(options, max_steps) -> driver`` of the implicit phase (Radau, same kink handling).
        max_steps: budget of accepted steps of both phases together.

    Stats: the two phases' counters summed, the implicit phase's other entries, and ``auto_switch_tau`` (the
    τ of the hand-over, None if the run stayed explicit) and ``auto_explicit_steps``.
    """

    def __init__(
        self,
        explicit: AbstractDriver,
        make_implicit: Callable[[dict, int], AbstractDriver],
        max_steps: int,
    ) -> None:
        self.explicit = explicit
        self.kinks = explicit.kinks
        self._make_implicit = make_implicit
        self.switching = True
        self.max_steps = int(max_steps)
        self.implicit: AbstractDriver | None = None
        self.switch_tau: float | None = None
        self._steps: deque[float] = deque(maxlen=PLATEAU_STEPS)  # the current run of step sizes
        self._segments = None

    def integrate(self, field, z0: Tensor, tau_grid: Tensor, save: Callable[[float, Tensor], None]) -> None:
        self.switching = bool(field.log_time)  # in plain time t the explicit steps are not capped this way
        self.explicit.monitor = self._watch
        try:
            self.explicit.integrate(field, z0, tau_grid, save)
            return
        except _Switch as sw:
            switch = sw
        self.switch_tau = switch.tau
        explicit_steps = int(self.explicit.stats()["n_accepted"] or 0)
        self.implicit = self._make_implicit({"first_step": switch.dt}, max(1, self.max_steps - explicit_steps))
        self.implicit.monitor = self.monitor
        grid = tau_grid.to(torch.float64)
        rest = grid[grid > switch.tau]
        self.implicit.integrate(field, switch.z, torch.cat([grid.new_tensor([switch.tau]), rest]), save)

    def _watch(self, tau: float, z: Tensor) -> None:
        """The explicit phase's per-step monitor: the run's own monitor, then the plateau test."""
        if self.monitor is not None:
            self.monitor(tau, z)
        if not self.switching:
            return
        st = self.explicit.stats()
        # a kink event that ends a step early (an exact restart, a truncated soft step) starts the count afresh;
        # whole steps kept with soft crossings do not (crowded events would otherwise never let it reach the plateau)
        whole_soft = (st.get("n_soft_steps") or 0) - sum((st.get("soft_truncations") or {}).values())
        segments = (st.get("n_segments") or 0) - whole_soft
        if segments != self._segments:
            self._segments = segments
            self._steps.clear()
        dt = st.get("last_dt")
        if dt is None:
            return
        steps = self._steps
        steps.append(float(dt))
        if len(steps) == PLATEAU_STEPS and max(steps) <= PLATEAU_SPREAD * min(steps) and tau >= max(1.0, 20 * dt):
            raise _Switch(tau, z, float(dt))

    def last_state(self) -> tuple[float, Tensor] | None:
        if self.implicit is not None and self.implicit.last_state() is not None:
            return self.implicit.last_state()
        return self.explicit.last_state()

    def stats(self) -> dict:
        first = self.explicit.stats()
        out = dict(first)
        if self.implicit is not None:
            second = self.implicit.stats()
            out.update(second)
            for key in _SUMMED:
                if key in first or key in second:
                    out[key] = (first.get(key) or 0) + (second.get(key) or 0)
            for key in set(first) & set(second):
                if key.startswith("max_") and first[key] is not None and second[key] is not None:
                    out[key] = max(first[key], second[key])
        out["auto_switch_tau"] = self.switch_tau
        out["auto_explicit_steps"] = int(first.get("n_accepted") or 0)
        return out
