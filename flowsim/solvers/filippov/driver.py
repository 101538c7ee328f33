"""The Filippov driver loop: smooth RK segments of a fixed activation state, restarted at switching events.

Each segment starts by classifying the surfaces at zero (crossing, sliding or keeping their side), then steps
torchdiffeq's adaptive RK on the fixed-state field; after every accepted step the switching events inside it
are located (:mod:`.events`); the segment ends at the first event (or, with soft crossings, the step is kept
and corrected, :mod:`.soft`), and a new one starts there.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from ...errors import InvalidParameterError, positive_real
from ...models import AbstractModel, DeepReLU
from .._torchdiffeq import SOLVERS, check_inputs, interp_evaluate
from ..base import AbstractDriver, NonFiniteField
from ..rk import finite_rms_norm, initial_step
from .bridge import NULL_BEFORE_BRIDGE, _Bridges
from .deep import _DeepSwitching
from .events import SoftEvent, _EventLocation
from .segment import _SegmentField
from .soft import _SoftCrossings
from .state import _ZERO_FACTOR, AbstractSwitchingSystem, FilippovInvariantError, inverse_map_slope
from .stats import FilippovStats
from .support import supports
from .two_layer import _TwoLayerSwitching

_ASSERT_FACTOR = 1e4  # a surface further than this × (error scale) on the wrong side is a bug
_NULL_ULPS = 16  # a segment shorter than this many ulps of τ counts as of zero length
# a step retaken before a dual coordinate's zero (a point where the field is not smooth) ends this fraction of the
# way short of it: the next step then has the zero within its first 1 % (left inside, events._SINGULAR_XMIN)
_SINGULAR_GAP = 1e-3
# a segment start after a soft step is classified in full unless every sliding margin (α from [0, 1]'s bounds, the
# attraction) at the kept end is at least this (_light_start)
_LIGHT_MARGIN = 1e-3
# a non-sliding surface approaching h = 0 within one error scale counts as at zero at a segment start only if it
# reaches h = 0 within this fraction of the next step: a slower one is left to the event location
_APPROACH_STEP_FRACTION = 1e-2
_DRIFT_FACTOR = 100.0  # a sliding surface further than this × (error scale) off h = 0 ends the segment (projected)

# torchdiffeq's adaptive RK options (RKAdaptiveStepsizeODESolver) that pass through to the segments
# (not max_num_steps, step_t, jump_t: the driver steps the solver; max_steps bounds the run, exact_saves the steps)
RK_OPTIONS = frozenset({"first_step", "min_step", "max_step", "safety", "ifactor", "dfactor", "norm", "dtype"})
FILIPPOV_OPTIONS = frozenset(
    {"soft_crossings", "soft_fraction", "soft_cap", "truncated_growth", "event_state", "exact_saves"}
)  # the driver's own (FilippovDriver)


def _option_bool(options: dict, name: str, default: bool) -> bool:
    value = options.pop(name, default)
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidParameterError(f"solver option {name!r} must be True or False, got {value!r}")
    return bool(value)


def _option_positive(options: dict, name: str, default: float, zero_ok: bool = False) -> float:
    value = options.pop(name, default)
    if zero_ok and not isinstance(value, bool) and value == 0:
        return 0.0
    return positive_real(f"solver option {name!r}" + (" (or 0)" if zero_ok else ""), value, f"{name}={default}")


@dataclass
class _Run:
    """Loop state of one :meth:`FilippovDriver.integrate` call."""

    func: Callable  # the segment field as torchdiffeq wrapped it
    method: str
    rtol: Tensor
    atol: Tensor
    opts: dict  # torchdiffeq options of every segment's solver
    grid: Tensor  # save times τ, float64, (k,)
    tau: Tensor  # the current segment start
    z: Tensor  # the state there
    rate: float  # the Baumgarte rate of the next segment: the state's relative rate at the previous start
    first_step: Tensor | float | None = None  # the next segment's first step (None: torchdiffeq's choice)
    k: int = 1  # the next save index
    forced: dict = field(default_factory=dict)  # sides imposed at the next classification
    sticky: tuple = (math.nan, {})  # (τ, forced sides) of the last classification
    null_run: int = 0  # consecutive zero-length segments
    solver: object = None  # the RK solver of every segment (built at the first, restarted at the others)
    step_times: list = field(default_factory=list)  # the solver's step_t as floats (its index at a restart)


class FilippovDriver(_EventLocation, _SoftCrossings, _Bridges, AbstractDriver):
    """Integration driver that treats ReLU kinks in the sense of Filippov (event location + sliding modes).

    Same protocol as :class:`~flowsim.solvers.SmoothDriver` (``integrate``, ``last_state``, ``stats``);
    :func:`flowsim.simulate` picks it for models with ``has_kinks`` (``kinks="auto"`` or ``"filippov"``).
    The method is described in :mod:`flowsim.solvers.filippov`: smooth RK segments of a fixed activation state,
    crossings located inside accepted steps on the dense output and stepped to exactly, sliding modes by the
    per-neuron box-LCP (two-layer nets) or one box-LCP for all sliding surfaces (deep nets).

    Limits:
        * Two-layer ReLU / leaky-ReLU nets (:class:`~flowsim.models.AbstractPiecewiseLinearTwoLayer`): exact
          crossings and sliding. A repelling surface (both one-sided fields point away; the Filippov solution
          is not unique there) keeps the side the trajectory came from. A neuron with w_j = 0 (all its
          surfaces at zero) is handled by the degenerate box-LCP, whose velocity is unique.
        * Deep ReLU nets (:class:`~flowsim.models.DeepReLU`): exact crossings and sliding, a point sliding in two
          layers at once by the multilinear field (:mod:`flowsim.solvers.filippov`, item 5). No soft crossings
          (every crossing is an exact restart).
        * Separable potentials only (all flowsim potentials are).
        * Where the exact segments do not settle (20 zero-length segments in a row, or a surface switching 8 times
          within 64 segment starts and 1e-5 (1 + |τ|) of τ: coinciding, degenerate surfaces such as those of a
          p-power (p < 2) deep net's weight at 0), a stretch is integrated with the switching smoothed over the
          at-zero band, by Radau (:mod:`.bridge`; counted in ``n_regularised_bridges``).

    Args:
        model: the model (must have ``has_kinks``).
        method: torchdiffeq adaptive RK method for the smooth segments (default dopri5).
        rtol, atol: tolerances on the dual state z.
        max_steps: budget of accepted steps for the whole run (all segments).
        options: extra torchdiffeq options (``first_step`` is used for the first segment only), plus the
            driver's own: ``soft_crossings`` (bool, default True: transversal crossings corrected inside a
            kept step), ``soft_fraction`` (default 0.1: above this fraction of the step's error tolerance the
            coupling part not along Δz is corrected by one more field difference), ``soft_cap`` (default 1:
            the largest coupling correction, same units), ``truncated_growth`` (default 2: after a truncated
            soft step the next segment's first step is at most this × the kept length), ``event_state``
            ("redo" (default): the dense output at the event time where it agrees with the Hermite interpolant,
            balance restored, else an RK step to it; "interpolate": the dense output there, cheaper and less
            accurate), ``exact_saves`` (default True).

    Raises:
        InvalidParameterError: for a model this driver cannot handle, an unknown option or ``event_state``, or an
            option value of the wrong type.

    References:
        Filippov 1988; Stewart, Numer. Math. 58 (1990); Dieci & Lopez, SIAM J. Numer. Anal. 47 (2009).
    """

    kinks = "filippov"

    def __init__(
        self, model: AbstractModel, method: str, rtol: float, atol: float, max_steps: int, options: dict | None = None
    ) -> None:
        self._check_model(model)
        self.model = model
        self.method = method
        self.rtol = float(rtol)
        self.atol = float(atol)
        self.max_steps = int(max_steps)
        self.options = dict(options or {})
        self.field = None
        self.sw: AbstractSwitchingSystem | None = None
        self._last: tuple[float, Tensor] | None = None
        self._run: _Run | None = None  # the integration in progress (its RK solver's next step: stats' next_dt)
        self._stats = FilippovStats()
        # transversal crossings corrected in closed form inside a kept step (see FilippovDriver._soft_step)
        self.soft_crossings = _option_bool(self.options, "soft_crossings", True)
        self.soft_fraction = _option_positive(self.options, "soft_fraction", 0.1, zero_ok=True)
        self.truncated_growth = _option_positive(self.options, "truncated_growth", 2.0)
        self.soft_cap = _option_positive(self.options, "soft_cap", 1.0)
        self._exit_cache: tuple | None = None  # (step, x_max, result) of the last sliding-exit search
        self._rk: tuple | None = None  # (segment field, RK tableau) for redo steps
        self._seg: _SegmentField | None = None  # the run's segment field
        # state at an event: "interpolate" (the accepted step's dense output) or "redo" (an RK step to it)
        self.event_state = str(self.options.pop("event_state", "redo"))
        if self.event_state not in ("interpolate", "redo"):
            raise InvalidParameterError(f"event_state must be 'interpolate' or 'redo', got {self.event_state!r}")
        self.exact_saves = _option_bool(self.options, "exact_saves", True)
        unknown = sorted(set(self.options) - RK_OPTIONS)
        if unknown:  # (torchdiffeq would only warn, once per segment)
            raise InvalidParameterError(
                f"unknown solver option(s) {unknown} for kinks='filippov'; valid: the driver's "
                f"{sorted(FILIPPOV_OPTIONS)} and torchdiffeq's {sorted(RK_OPTIONS)} (max_steps bounds the run's "
                "accepted steps)"
            )
        if "first_step" in self.options:
            self.options["first_step"] = positive_real("solver option 'first_step'", self.options["first_step"], "1e-3")

    @staticmethod
    def _check_model(model) -> None:
        if not supports(model):
            raise InvalidParameterError(
                f"kinks='filippov' supports two-layer ReLU/leaky-ReLU models and deep ReLU models; "
                f"{type(model).__name__} is not supported: use kinks='naive'"
            )

    def _make_switching(self, field, z0: Tensor) -> AbstractSwitchingSystem:
        if isinstance(self.model, DeepReLU):
            return _DeepSwitching(self.model, field)
        return _TwoLayerSwitching(self.model, field)

    # ---- protocol ----
    def last_state(self) -> tuple[float, Tensor] | None:
        """(τ, z) of the last accepted step (or event point), or None before the first."""
        return self._last

    def stats(self) -> dict:
        """Solver statistics; times in the integration variable τ (log-time s by default).

        ``n_crossings`` counts every transversal crossing; ``n_soft_crossings`` the subset corrected inside a
        kept step (``n_soft_steps`` steps, at most ``max_soft_crossings_per_step`` in one); ``soft_fallbacks``
        why a step with crossings was restarted exactly instead (reasons: "error": coupling correction above
        ``soft_cap``, "sliding_alpha": a sliding surface off its sliding mode at the corrected end (new pattern;
        α outside [0, 1], or a_j past 0), "sliding", "not_transversal", "side", "sliding_exit", "recross", "many"
        (over 1,024), "at_start", "size" (radau, p > 512)); ``soft_truncations`` counts the soft steps kept only
        up to a crossing that could not be switched softly, a sliding exit, or a save time after the first crossing
        (reason "save": ``exact_saves=False``), by reason ("side": the corrected end crossed other surfaces, the
        kept crossings halved; "side_cut": ended where the corrected trajectory reaches such a surface; "error",
        "sliding_alpha": shortened as above).
        ``n_sliding_projections`` counts segment starts where sliding surfaces were projected back onto h = 0
        (``max_projected_offset``: the largest offset projected, in error scales).
        ``n_redo_steps`` counts RK steps redone to an event or a truncation point,
        ``n_interpolated_states`` the event and truncation states taken from the dense output instead.
        ``n_singular_retakes`` counts accepted steps retaken to end just before a weight crossing 0 where 1/φ″ is
        infinite (p-power, p > 2: the field is not smooth there; included in ``n_accepted``).
        ``n_multilayer_segments`` (deep nets) counts segments that start with a data point sliding in two hidden
        layers at once, ``n_multilayer_unconverged`` the Newton solves of their α's that reached their iteration
        limit (:class:`~flowsim.solvers.filippov.deep._DeepSwitching`).
        ``max_side_violation``: the largest distance of a surface on the wrong side of its state at a segment start,
        in error scales (the run stops above 1e4: a missed event); ``max_sliding_offset``: the largest |h| of a
        sliding surface after a step, in error scales (above 100 the segment ends and it is projected back);
        ``n_null_segments``: segments that ended where they started; ``n_crossing_events``, ``n_exit_events``,
        ``n_dip_events``: steps ended exactly at a crossing, a sliding exit, a surface crossed twice in one step;
        ``sliding_time`` (τ with any sliding surface) and ``sliding_surface_time`` (τ × sliding surfaces);
        ``n_active_at_end``: active surfaces (point × unit pairs) at the end. ``n_regularised_bridges``,
        ``regularised_time`` (τ) and ``regularised_reasons`` ("null": zero-length segments in a row, "chatter": a
        surface switching back and forth): the stretches integrated with the regularised field (:mod:`.bridge`).
        The list: docs/kinks.md, Statistics.
        """
        out = self._stats.as_dict(self.sw, self.field is None or self.field.log_time)
        solver = None if self._run is None else self._run.solver
        state = getattr(solver, "rk_state", None)
        out["next_dt"] = float(state.dt) if state is not None else None  # (a checkpoint restart's first step)
        return out

    @torch.inference_mode()
    def integrate(self, field, z0: Tensor, tau_grid: Tensor, save: Callable[[float, Tensor], None]) -> None:
        """Integrate over ``tau_grid`` (τ, shape `(k,)`), calling ``save(τ_k, z_k)`` at every grid time.

        Raises:
            MaxStepsReached: the budget of accepted steps is used up.
            NonFiniteField: the step size underflowed after non-finite field values.
            FilippovInvariantError: a surface ended a segment on the wrong side (a missed event), or a regularised
                bridge failed (:mod:`.bridge`).
            AssertionError: torchdiffeq's own failures (step-size underflow).
        """
        self.field = field
        self.sw = self._make_switching(field, z0)
        self._last_band = None
        self._bridge_reason = self._flip_window = None
        seg = self._seg = _SegmentField(field, self.sw, self._stats, self.max_steps)
        run = self._run = self._start_run(seg, z0, tau_grid)
        try:
            while run.k < len(run.grid):
                if self._bridge_reason is not None:  # the exact segments do not settle here (bridge.py)
                    self._bridge(run, save)
                    continue
                solver, band, seg_start = self._start_segment(run)
                self._advance_segment(run, solver, band, seg, save)
                if run.k == len(run.grid):
                    break
                self._count_null_segment(run, seg_start)
        except AssertionError as e:
            st = self._stats
            if "underflow in dt" in str(e) and st.n_nonfinite_evals:
                raise NonFiniteField(
                    f"the step size underflowed after {st.n_nonfinite_evals} non-finite field evaluations "
                    f"(last at τ = {st.last_nonfinite_tau:.6g})"
                ) from e
            raise

    # ---- the steps of the loop ----
    def _start_run(self, seg: _SegmentField, z0: Tensor, tau_grid: Tensor) -> _Run:
        """torchdiffeq's checked inputs and options, the initial activation state and Baumgarte rate."""
        opts = dict(self.options)
        first_step = opts.pop("first_step", None)
        opts.setdefault("norm", finite_rms_norm)
        _, func, _, tt, rtol, atol, method, opts, _, _ = check_inputs(
            seg, z0, tau_grid, self.rtol, self.atol, self.method, opts, None, SOLVERS
        )
        opts.setdefault("max_num_steps", 2**31 - 1)
        grid = tt.to(torch.float64)
        if self.exact_saves:
            opts["step_t"] = grid[1:]  # steps land on the save times: saved states are step ends, not interpolants
        tau = grid[0].clone()
        z = z0
        self.sw.init_mode(self.field.potential.inverse_mirror_map(z))
        self._last = (float(tau), z)
        # Baumgarte rate: the state's relative rate of change (from the previous segment's first evaluation; set
        # before a segment's solver evaluates its first stage, so that all of a segment's evaluations agree)
        rate = float(seg(tau, z).norm() / z.norm().clamp_min(torch.finfo(z.dtype).tiny))
        return _Run(func, method, rtol, atol, opts, grid, tau, z, rate, first_step)

    def _start_segment(self, run: _Run):
        """Project drifted sliding surfaces, check the sides, classify, and start the segment's RK solver.

        Returns the solver, the hysteresis band of the surfaces at zero at the start (shape of h) and the start τ.
        """
        theta, zero = self._decide_start(run)
        seg_start = float(run.tau)
        solver = self._segment_solver(run)
        f0 = solver.rk_state.f1
        run.rate = float(f0.norm() / run.z.norm().clamp_min(torch.finfo(run.z.dtype).tiny))
        band = self._last_band = self._start_band(theta, zero)
        return solver, band, seg_start

    def _start_band(self, theta: Tensor, zero: Tensor) -> Tensor:
        """The hysteresis band of the event scan's g = σh + band for a segment starting at θ, shape of h.

        Surfaces at zero (|h| ≤ ``zero``) get ``zero``: they may sit a hair off. A surface that starts on the wrong
        side of its state beyond that (classified with a coinciding candidate, inside that one's band: deep nets)
        gets its offset plus ``zero``, so that g ≥ 0 at the start and a further move to the wrong side is an event
        (with no band, g < 0 from the start and no crossing is ever seen: a layer-3 surface classified active at
        h = −3.4e-19 went to −1.4e-9 unnoticed, and the run stopped 2.4e5 error scales off)."""
        sw = self.sw
        h = sw.surfaces(theta)
        at_zero = h.abs() <= zero
        wrong = ~at_zero & ~sw.sliding & (sw.sigma * h < 0)
        return torch.where(at_zero, zero, torch.where(wrong, zero - sw.sigma * h, torch.zeros_like(zero)))

    def _decide_start(self, run: _Run) -> tuple[Tensor, Tensor]:
        """Project drifted sliding surfaces, check the sides, classify and set the segment's Baumgarte rate — or
        the light start after a soft step (:meth:`_light_start`); returns θ and the at-zero band at the start."""
        light = self._light_start(run)
        if light is not None:
            return light
        theta, zero = self._project_drifted(run)
        self._check_sides(theta, zero)
        zero = self._approach_band(run, theta, zero)
        self._classify(run, theta, zero)
        self.sw.lam = run.rate
        return theta, zero

    def _light_start(self, run: _Run) -> tuple[Tensor, Tensor] | None:
        """(θ, at-zero band) of a segment start right after a kept soft step whose classification is known, without
        classifying; None otherwise (the full start).

        The soft step flipped its crossings and checked the sliding modes at its corrected end z₁ (θ₁, α₁ from the
        field f(z₁) it evaluated there). Where every non-sliding surface is on its side, those at zero (the band
        narrowed for surfaces still approaching it, as :meth:`_approach_band` does) are each their neuron's one
        candidate and move away from h = 0, the sliding ones are within the band (no drift to project) and their
        margins (α from [0, 1]'s bounds, the attraction) are at least :data:`_LIGHT_MARGIN`, the classification
        would keep every mode (the box-LCP of one surface moving away keeps its side; of a sliding set with interior
        α, its sliding); then the segment keeps its Baumgarte rate and factors, so that f(z₁), already evaluated
        with them, is its first stage (radau: the rebase's evaluation). The sides are still checked. This saves the
        classification's field evaluation and, on sliding segments, the first stage's (main job: 3.5-5.5 % of all
        evaluations). The kept Baumgarte rate moves sliding segments at the error-tolerance level, which can flip a
        later discrete decision (a breaker's 108 random runs, light start on against off: event counts equal in 91,
        else segments or accepted steps ±1-34 and once a sliding entry; θ apart by 4e-11 at the median, at most
        3 × rtol, on p-power runs at rtol 1e-5; the main job 1.5e-9, its events equal)."""
        end, self._soft_end = self._soft_end, None
        sw = self.sw
        if end is None or end[0] is not run.z or run.forced or sw.inert is not None:
            return None
        z1, theta, alpha, zero = end
        if zero is None:
            zero = _ZERO_FACTOR * sw.error_scale(theta, z1, self.rtol, self.atol)
        h = sw.surfaces(theta)
        h_abs, free = h.abs(), ~sw.sliding
        at_zero = h_abs <= zero
        if not bool(at_zero[sw.sliding].all()):
            return None  # a sliding surface drifted off h = 0 (projected by the full start)
        near = at_zero & free
        if bool(near.any()):
            sh, scale = self._soft_end_rates(theta)
            zero = self._narrowed_band(zero, h, near, sh, run.first_step)  # (as _approach_band)
        cand = (h_abs <= zero) & free
        if not bool(((sw.sigma * h > 0) | cand | sw.sliding).all()):
            return None  # a surface past zero outside the band: the classification gives it the side of its sign
        if bool(cand.any()):
            # a surface at zero that is not sliding is kept only as its neuron's one candidate, moving away from
            # h = 0 on its side (the box-LCP of one such surface keeps its side)
            if bool(((cand | sw.sliding).sum(0)[cand.any(0)] > 1).any()) or not bool((sh > 1e-6 * scale)[cand].all()):
                return None
        if sw.n_sliding and not bool((sw.sliding_room(theta, alpha) >= _LIGHT_MARGIN).all()):
            return None
        self._check_sides(theta, zero)
        run.sticky, run.forced = (float(run.tau), {}), {}
        self._stats.count_transitions({"crossings": 0, "entries": 0, "exits": 0})
        self._seg.cache = self._seg.start_field
        return theta, zero

    def _soft_end_rates(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        """σḣ of every surface at the last soft step's end, from the field evaluated there (``seg.start_field``),
        and its scale Σ|x_ik θ̇_jk|, both `(n, m)`."""
        sw = self.sw
        W, _ = sw.split(theta)
        zW, _ = sw.split(self._seg.start_field[3])
        row = inverse_map_slope(self.field.potential, W) * zW  # θ̇ of each neuron's weights, (m, d)
        return sw.sigma * (sw.X @ row.T), sw.xabs @ row.abs().T

    def _segment_solver(self, run: _Run):
        """The RK solver of a new segment, started at (τ, z): built at the run's first segment (with torchdiffeq's
        first step when none is given), restarted at the later ones with the state a new solver's
        ``_before_integrate`` sets (the segment field at (τ, z), the first step, the next save time): the steps of a
        new solver, without building one per segment."""
        if run.solver is None or run.first_step is None:
            solver = SOLVERS[run.method](
                func=run.func, y0=run.z, rtol=run.rtol, atol=run.atol, first_step=run.first_step, **run.opts
            )
            if solver.first_step is None:  # (torchdiffeq's choice overflows its trial step where the field is tiny)
                cap = 1.0 if self.field.log_time else float(run.grid[1] - run.grid[0])
                solver.first_step = initial_step(run.func, run.tau, run.z, solver.order, run.rtol, run.atol, cap)
            solver._before_integrate(torch.stack([run.tau, run.grid[-1]]))
            self._rk = (run.func, solver.tableau)  # for redo steps to an event
            run.solver, run.step_times = solver, solver.step_t.tolist()
            return solver
        solver, z = run.solver, run.z
        f0 = run.func(run.tau, z)  # (the segment field's cache: a soft step's end is not evaluated twice)
        dt = torch.as_tensor(run.first_step, dtype=solver.dtype, device=z.device)
        solver.y0 = z
        solver.rk_state = solver.rk_state._replace(y1=z, f1=f0, t0=run.tau, t1=run.tau, dt=dt, interp_coeff=[z] * 5)
        # the first save time after τ (or the last one); torchdiffeq drops the earlier ones instead, the same step
        solver.next_step_index = min(bisect.bisect(run.step_times, float(run.tau)), len(run.step_times) - 1)
        return solver

    def _project_drifted(self, run: _Run) -> tuple[Tensor, Tensor]:
        """θ and the at-zero band (10 error scales) at the segment start, after putting sliding surfaces that
        drifted off h = 0 back onto it (:meth:`AbstractSwitchingSystem.project_sliding`)."""
        sw, st = self.sw, self._stats
        pot = self.field.potential
        theta = pot.inverse_mirror_map(run.z)
        zero = _ZERO_FACTOR * sw.error_scale(theta, run.z, self.rtol, self.atol)
        if sw.n_sliding:
            zp = sw.project_sliding(run.z, theta, zero)
            if zp is not None:
                off = float((sw.surfaces(theta).abs() / zero)[sw.sliding].max()) * _ZERO_FACTOR
                st.max_projected_offset = max(st.max_projected_offset, off)
                st.n_sliding_projections += 1
                run.z = zp
                theta = pot.inverse_mirror_map(run.z)
                # (the band at the projected state, but not narrower than before: projecting does not make the
                # state more accurate than the integration left it)
                zero = torch.maximum(zero, _ZERO_FACTOR * sw.error_scale(theta, run.z, self.rtol, self.atol))
                self._last = (float(run.tau), run.z)
        return theta, zero

    def _approach_band(self, run: _Run, theta: Tensor, zero: Tensor) -> Tensor:
        """The at-zero band with the non-sliding surfaces that have not reached h = 0 narrowed.

        A non-sliding surface within the band (10 error scales) on its side of h = 0 is classified now only if it is
        at zero to the accuracy of the run; else the event location steps to its zero:
        - more than one error scale off zero on its side, it is not at zero, whichever way its current side's field
          moves it (band: one error scale). Approaching, it would be switched early by |h/ḣ| (HE β = 0.01, rtol
          1e-5: a tenth of a unit of log-time, 2,800 × rtol off); moving away, the box-LCP could still flip it
          together with its neuron's other surfaces (a breaker's p-power p = 1.72 run: 5 error scales off and
          flipped with two surfaces crossing at the same start, 282 × rtol off);
        - within one error scale and approaching, it is at zero only if it reaches h = 0 within
          :data:`_APPROACH_STEP_FRACTION` of the next step (:meth:`_approach_narrow`; 0.022 in s from its zero, a
          surface classified with a sliding neuron's set moved two of the set to active early: p-power p = 2.34,
          rtol 4e-6, 1,600 × rtol off);
        - past zero within the band (integration error carried it across), it keeps the band unless its field moves
          it further (then one error scale). The rates
        come from the field a soft step evaluated at its end, else from one more evaluation (only at segment starts
        with such surfaces). Not after a zero-length segment: the event location could not step to such a zero (its
        root within the rounding of τ), so the surface is classified now, else the same start repeats until "does
        not settle" (p-power p = 1.5, a weight passing through 0: h ∝ z|z|, 1e-11 in τ from its zero).
        """
        sw = self.sw
        if run.null_run:
            return zero
        h = sw.surfaces(theta)
        near = (h.abs() <= zero) & ~sw.sliding
        if sw.inert is not None:
            near &= ~sw.inert
        if not bool((near & ~(sw.sigma * h > zero / _ZERO_FACTOR)).any()):  # (only surfaces off zero on their side:
            return self._narrowed_band(zero, h, near, torch.zeros_like(h), run.first_step)  # no rates needed)
        known = getattr(self._seg, "start_field", None)  # (τ, z, mode, field) of a soft step's end
        if known is not None and known[0] == float(run.tau) and known[1] is run.z and torch.equal(known[2], sw.mode):
            v = known[3]
        else:
            self.field.nfe += 1
            v, _ = sw.velocity(run.tau, theta)
        hdot = sw.surface_rates(theta, inverse_map_slope(self.field.potential, theta, run.z) * v)
        return self._narrowed_band(zero, h, near, sw.sigma * hdot, run.first_step)

    def _narrowed_band(self, zero: Tensor, h: Tensor, near: Tensor, sh: Tensor, step) -> Tensor:
        """The at-zero band ``zero`` with the non-sliding surfaces ``near`` zero that have not reached it narrowed
        (:meth:`_approach_band`'s rule; h ``h``, σḣ ``sh``, the next step ``step``, all but ``step`` of h's shape):
        more than one error scale off zero on its side → one error scale; approaching slower than
        :data:`_APPROACH_STEP_FRACTION` of the next step → the distance covered in it (:meth:`_approach_narrow`)."""
        narrow = self._approach_narrow(zero, sh, step)
        band = torch.where(near & (h.abs() > narrow) & (sh < 0), narrow, zero)
        one = zero / _ZERO_FACTOR
        return torch.where(near & (self.sw.sigma * h > one), one, band)

    @staticmethod
    def _approach_narrow(zero: Tensor, hdot: Tensor, step) -> Tensor:
        """The at-zero band of surfaces approaching h = 0 at rate ``hdot``: one error scale, and at most the distance
        they cover in :data:`_APPROACH_STEP_FRACTION` of the next step ``step`` (None: the first segment)."""
        narrow = zero / _ZERO_FACTOR
        if step is None:
            return narrow
        return torch.minimum(narrow, hdot.abs() * (_APPROACH_STEP_FRACTION * float(step)))

    def _classify(self, run: _Run, theta: Tensor, zero: Tensor) -> None:
        """Classify the surfaces at zero (:meth:`AbstractSwitchingSystem.classify`) with the forced sides."""
        if run.forced and float(run.tau) == run.sticky[0]:
            # a sliding exit at the time of the previous one (no progress): the surfaces forced off
            # there stay off, else two surfaces at their exit point can take turns re-entering
            run.forced = {**run.sticky[1], **run.forced}
        run.sticky = (float(run.tau), run.forced)
        old = self.sw.mode
        counts = self.sw.classify(run.tau, theta, zero, run.forced)
        run.forced = {}
        self._stats.count_transitions(counts)
        self._watch_chatter(old, float(run.tau))

    def _advance_segment(self, run: _Run, solver, band: Tensor, seg: _SegmentField, save) -> None:
        """Take RK steps of the segment, saving grid times, until an event, a sliding drift or the grid's end."""
        singular = self._singular_coordinates(run.z)
        while True:
            prev = solver.rk_state
            save_index = solver.next_step_index
            new = solver._adaptive_step(prev)
            solver.rk_state = new
            if not bool(new.t1 > prev.t1):
                continue  # rejected step
            x_sing = None if singular is None else self._dual_zero(new, prev, singular)
            retake = None if x_sing is None else (1.0 - _SINGULAR_GAP) * x_sing * (new.t1 - prev.t1)
            if retake is not None and bool(retake > solver.min_step):
                # the step straddles a point where the field is not smooth (_dual_zero): retaken to end just before it
                # (not below the min_step option: torchdiffeq would take the same step again, and accept it)
                solver.rk_state = prev._replace(dt=retake)
                solver.next_step_index = save_index
                self._stats.n_singular_retakes += 1
                continue
            t0, t1 = prev.t1, new.t1
            saves = run.grid[run.k :][run.grid[run.k :] <= t1]  # save times inside the step
            ev = self._find_event(new, prev, band, seg, saves)
            self._save_inside(run, prev, new, ev, save)
            if ev is not None:
                self._restart_at(run, prev, new, ev)
                if self.monitor is not None and isinstance(ev, SoftEvent) and bool(ev.tau >= t1):
                    self.monitor(float(t1), ev.z)  # a whole step kept with soft crossings: an accepted step too
                return
            self._last = (float(t1), new.y1)
            if self.monitor is not None:  # (the separation monitor: reads the state only)
                self.monitor(float(t1), new.y1)
            drift = self._track_sliding(float(t0), float(t1), new.y1)
            if run.k == len(run.grid):
                return
            if drift > _DRIFT_FACTOR:
                # a sliding surface drifted off h = 0: end the segment here, projected at the next start
                run.tau, run.z, run.forced, run.first_step = t1, new.y1, {}, new.dt
                return

    def _save_inside(self, run: _Run, prev, new, ev, save) -> None:
        """Save the grid times up to the step's end or its event (a soft step's end: its corrected state)."""
        t0, t1 = prev.t1, new.t1
        soft = isinstance(ev, SoftEvent)
        if ev is None:
            t_stop = t1
        elif soft:
            t_stop = ev.tau
        else:
            t_stop, _ = ev
        grid = run.grid
        while run.k < len(grid) and grid[run.k] <= t_stop:
            if soft and bool(grid[run.k] >= t_stop):
                zk = ev.z  # the corrected end (save times never lie inside a soft step's corrected part)
            else:
                zk = new.y1 if bool(grid[run.k] == t1) else interp_evaluate(new.interp_coeff, t0, t1, grid[run.k])
            save(float(grid[run.k]), zk)
            run.k += 1

    def _restart_at(self, run: _Run, prev, new, ev) -> None:
        """Set the next segment's start at the event: its state, forced sides and first step."""
        t0, t1 = prev.t1, new.t1
        soft = isinstance(ev, SoftEvent)
        if soft:
            # transversal crossings kept inside the step (or its first part): new pattern set, corrected
            tau_e, z, run.forced = ev.tau, ev.z, ev.forced
        else:
            tau_e, run.forced = ev
            z = self._exact_event_state(prev, new, tau_e)
        self._track_sliding(float(t0), float(tau_e), z)
        run.first_step = new.dt
        if soft and bool(tau_e < t1):
            # a truncated soft step: the crossings are crowded, start the next segment near the kept length
            run.first_step = torch.minimum(new.dt, self.truncated_growth * (tau_e - t0))
        run.tau = tau_e
        run.z = z
        self._last = (float(run.tau), z)

    def _exact_event_state(self, prev, new, tau_e: Tensor) -> Tensor:
        """The state at an exact event τ_e of the accepted step [t0, t1]."""
        t0, t1 = prev.t1, new.t1
        if not bool(tau_e > t0):
            return prev.y1
        if bool(tau_e >= t1):
            return new.y1
        if self.event_state == "redo" or self.sw.n_sliding:
            # the dense output where it agrees with the Hermite interpolant (balance restored), else a redo step
            # (sliding segments: plain interpolation drifts the balance)
            return self._event_state(prev, new, tau_e)
        # the fixed-pattern field is smooth across the surface, so the accepted step's dense output (4th order,
        # error-controlled with the step) is the state at the event
        return interp_evaluate(new.interp_coeff, t0, t1, tau_e)

    def _count_null_segment(self, run: _Run, seg_start: float) -> None:
        """Count a segment that ended where it started, or within :data:`_NULL_ULPS` units in the last place of τ
        (a crawl by one ulp per segment is no progress either: a breaker run took 3,000 such segments in 40 s and
        never stopped); :data:`~.bridge.NULL_BEFORE_BRIDGE` of them in a row hand the run to a regularised bridge
        (:mod:`.bridge`)."""
        if float(run.tau) <= seg_start + _NULL_ULPS * math.ulp(seg_start):
            self._stats.n_null_segments += 1
            run.null_run += 1
            if run.null_run >= NULL_BEFORE_BRIDGE:
                self._bridge_reason = "null"
        else:
            run.null_run = 0

    # ---- bookkeeping and checks ----
    def _track_sliding(self, t0: float, t1: float, z: Tensor) -> float:
        """Sliding time bookkeeping; returns the sliding surfaces' largest |h| at z in error scales (0: none)."""
        sw = self.sw
        if not sw.n_sliding:
            return 0.0
        st = self._stats
        st.sliding_time += t1 - t0
        st.sliding_surface_time += (t1 - t0) * sw.n_sliding
        theta = self.field.potential.inverse_mirror_map(z)
        scale = sw.error_scale(theta, z, self.rtol, self.atol)
        off = float((sw.surfaces(theta).abs() / scale)[sw.sliding].max())
        st.max_sliding_offset = max(st.max_sliding_offset, off)
        return off

    def _check_sides(self, theta: Tensor, zero: Tensor) -> None:
        """Every non-sliding surface must be on the side its state claims (up to a tolerance band: the larger of
        ``zero`` and the band it was decided in at the last segment start, which can be orders of magnitude wider
        when the pattern below a deep net's surface has changed since: a surface set active 8.9e-7 below h = 0
        inside a band of 2.3e-5 read 6e4 error scales off at the next start, p-power p = 1.5, three hidden
        layers; the classification then gives it the side of its sign)."""
        sw = self.sw
        h = sw.surfaces(theta)
        scale = zero / _ZERO_FACTOR
        if self._last_band is not None:
            scale = torch.maximum(scale, self._last_band / _ZERO_FACTOR)
        v = torch.where(sw.sliding, -h.abs(), sw.sigma * h) / scale
        inert = sw.inert  # deep nets: surfaces slaved to a unit below (not switching surfaces)
        if inert is not None:
            v = torch.where(inert & ~sw.sliding, 0.0, v)
        worst = float((-v).max())
        self._stats.max_side_violation = max(self._stats.max_side_violation, worst)
        if worst > _ASSERT_FACTOR:
            i, j = np.unravel_index(int((-v).argmax()), tuple(h.shape))
            raise FilippovInvariantError(
                f"surface (i={i}, j={j}) is {worst:.3g} error scales on the wrong side of its activation state "
                f"(mode {int(sw.mode[i, j])}, h = {float(h[i, j]):.3g}): a switching event was missed"
            )
