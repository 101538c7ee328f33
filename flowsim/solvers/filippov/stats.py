"""Work and event statistics of a Filippov run, in one record."""

from __future__ import annotations

from dataclasses import dataclass, field

from .state import ACTIVE, AbstractSwitchingSystem


@dataclass
class FilippovStats:
    """Counters of :class:`~flowsim.solvers.filippov.FilippovDriver`; times in the integration variable τ.

    The names are the keys of :meth:`FilippovDriver.stats <flowsim.solvers.filippov.FilippovDriver.stats>`
    (see there for their meaning).
    """

    n_accepted: int = 0
    n_rejected: int = 0
    last_dt: float | None = None
    n_nonfinite_evals: int = 0
    n_segments: int = 0
    n_crossings: int = 0
    n_sliding_entries: int = 0
    n_sliding_exits: int = 0
    n_crossing_events: int = 0
    n_dip_events: int = 0
    n_singular_retakes: int = 0
    n_soft_crossings: int = 0
    n_soft_steps: int = 0
    max_soft_crossings_per_step: int = 0
    n_coupling_differences: int = 0
    soft_fallbacks: dict = field(default_factory=dict)
    soft_truncations: dict = field(default_factory=dict)
    n_exit_events: int = 0
    n_redo_steps: int = 0
    n_interpolated_states: int = 0
    n_null_segments: int = 0
    sliding_time: float = 0.0
    sliding_surface_time: float = 0.0
    max_side_violation: float = 0.0
    max_sliding_offset: float = 0.0
    n_sliding_projections: int = 0
    max_projected_offset: float = 0.0
    n_regularised_bridges: int = 0
    regularised_time: float = 0.0
    regularised_reasons: dict = field(default_factory=dict)
    last_nonfinite_tau: float | None = None  # (for the error message, not reported)

    def count_transitions(self, counts: dict) -> None:
        """Add a classification's transition counts (:meth:`AbstractSwitchingSystem.classify`) and a segment."""
        self.n_crossings += counts["crossings"]
        self.n_sliding_entries += counts["entries"]
        self.n_sliding_exits += counts["exits"]
        self.n_segments += 1

    def count_fallback(self, reason: str) -> None:
        """A step with crossings restarted exactly instead of switched softly, for ``reason``."""
        self.soft_fallbacks[reason] = self.soft_fallbacks.get(reason, 0) + 1

    def count_truncation(self, reason: str) -> None:
        """A soft step kept only up to a crossing that could not be switched softly, for ``reason``."""
        self.soft_truncations[reason] = self.soft_truncations.get(reason, 0) + 1

    def count_bridge(self, reason: str, span: float) -> None:
        """A regularised bridge (:mod:`.bridge`) over ``span`` of τ, started for ``reason`` ("null", "chatter")."""
        self.n_regularised_bridges += 1
        self.regularised_time += span
        self.regularised_reasons[reason] = self.regularised_reasons.get(reason, 0) + 1

    def as_dict(self, sw: AbstractSwitchingSystem | None, log_time: bool) -> dict:
        """The statistics as :meth:`FilippovDriver.stats` reports them, with the final activation state of ``sw``."""
        return {
            "n_accepted": self.n_accepted,
            "n_rejected": self.n_rejected,
            "last_dt": self.last_dt,
            "n_nonfinite_evals": self.n_nonfinite_evals,
            "n_segments": self.n_segments,
            "n_crossings": self.n_crossings,
            "n_sliding_entries": self.n_sliding_entries,
            "n_sliding_exits": self.n_sliding_exits,
            "n_crossing_events": self.n_crossing_events,
            "n_dip_events": self.n_dip_events,
            "n_singular_retakes": self.n_singular_retakes,
            "n_soft_crossings": self.n_soft_crossings,
            "n_soft_steps": self.n_soft_steps,
            "max_soft_crossings_per_step": self.max_soft_crossings_per_step,
            "n_coupling_differences": self.n_coupling_differences,
            "soft_fallbacks": dict(self.soft_fallbacks),
            "soft_truncations": dict(self.soft_truncations),
            "n_exit_events": self.n_exit_events,
            "n_redo_steps": self.n_redo_steps,
            "n_interpolated_states": self.n_interpolated_states,
            "n_null_segments": self.n_null_segments,
            "sliding_time": self.sliding_time,
            "sliding_surface_time": self.sliding_surface_time,
            "n_sliding_at_end": sw.n_sliding if sw is not None else 0,
            "n_active_at_end": int((sw.mode == ACTIVE).sum()) if sw is not None else 0,
            "max_side_violation": self.max_side_violation,
            "max_sliding_offset": self.max_sliding_offset,
            "n_sliding_projections": self.n_sliding_projections,
            "max_projected_offset": self.max_projected_offset,
            "n_regularised_bridges": self.n_regularised_bridges,
            "regularised_time": self.regularised_time,
            "regularised_reasons": dict(self.regularised_reasons),
            "n_multilayer_segments": getattr(sw, "multilayer_segments", 0),
            "n_multilayer_unconverged": getattr(sw, "multilayer_unconverged", 0),
            "time_variable": "s = log(1+t)" if log_time else "t",
        }
