"""Exact ReLU kinks with an implicit solver: Filippov segments stepped by scipy's Radau IIA (order 5).

The event core is the explicit driver's (:class:`~flowsim.solvers.filippov.FilippovDriver`): a segment is a
fixed activation state, classified at its start; after every accepted step the switching events inside it are
located on the step's dense output (Radau's collocation polynomial, cubic in the step fraction). What changes:

* the segment field is integrated by Radau IIA (:class:`~flowsim.solvers.radau_newton.NewtonRadau`: scipy's
  method with RADAU5's Newton control) with the exact Jacobian of the fixed-state field — the sliding equivalent
  control and its Baumgarte term included — by autograd through the switching system's velocity;
* one solver runs through all segments: at an event it is rebased on the new state, keeping its step size and
  predicting Newton's stage values from its last collocation polynomial (a fresh solver starts Newton from zero
  increments, which on late-training fields failed and halved the first step about ten times per event);
* the state at an event τ_e inside an accepted step [τ₀, τ₁] is the dense output, balance restored, where it
  agrees with the cubic Hermite interpolant of the step's ends to within the error tolerance (as in the explicit
  driver); otherwise the step is redone by Radau from τ₀ with τ_e as its end point (scipy lands its last step
  on it; Newton's predictor is the redone step's collocation polynomial);
* soft crossings (``soft_crossings``, default True) as in the explicit driver (:mod:`.soft`: transversal
  crossings switched inside the kept step, the state corrected in closed form), with a stiff coupling: the
  correction solves the linearised perturbation δz′ = J δz + ΔF(τ) by φ-functions of the new-pattern Jacobian
  (:mod:`.exponential`), so a fast mode relaxes to its quasi-static value instead of being extrapolated; its error
  estimate adds the field's nonlinearity, the crossing-time shifts (modelled and not) and J's drift over the
  step (below ``soft_cap`` of the tolerance, else the kept part is shortened, then an exact restart);
* steps land on the save times (:class:`~flowsim.solvers.radau_newton.NewtonRadau`'s ``stops``): a saved
  state is a step end, never inside a soft step's corrected part.

In log-time s = log(1 + t) an explicit method is stability-limited to steps of O(1) in s; Radau is limited
only by accuracy, so once the activation state has settled (events are rare late in training) its steps
grow with s and a run to log t = 10⁶ costs a few times a run to 10² (``benchmarks/horizon.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import Tensor

from ...errors import InvalidParameterError, positive_real
from ...models import AbstractModel
from ..base import MaxStepsReached, NonFiniteField, StepFailed, implicit_failure
from ..radau_newton import NewtonRadau
from ..stiff import _PrimalUpdate
from .dense import _horner
from .driver import _DRIFT_FACTOR, FilippovDriver, _Run
from .events import ExactEvent, SoftEvent
from .exponential import phi_actions, stiff_correction_pair
from .segment import _SegmentField
from .state import inverse_map_slope

__all__ = ["ImplicitFilippovDriver", "IMPLICIT_FILIPPOV_OPTIONS"]

IMPLICIT_FILIPPOV_OPTIONS = frozenset({"first_step", "max_step", "soft_crossings", "soft_cap"})
_SOFT_MAX_PARAMS = 512
"""Largest p for soft crossings in a Radau step: their correction costs one (p+3)² matrix exponential (6 ms at
p = 120, 0.11 s at 480, 0.8 s at 1,040 on one core, 25× a Radau step's two LU factorisations); above it every
crossing is an exact restart (``soft_fallbacks["size"]``)."""


class _Step(NamedTuple):
    """An accepted Radau step as the event core reads it (the fields of torchdiffeq's RK state it uses)."""

    t1: Tensor  # the step end τ₁, a float64 scalar tensor
    y1: Tensor  # z(τ₁), (p,)
    f1: Tensor  # the segment field at τ₁, (p,)
    dt: Tensor  # the step length τ₁ − τ₀
    interp_coeff: list[Tensor]  # dense output Σ_k c_k x^k in x = (τ − τ₀)/(τ₁ − τ₀), ascending powers, (p,) each


class ImplicitFilippovDriver(FilippovDriver):
    """Filippov driver (exact crossings, sliding modes) whose segments are integrated by Radau IIA.

    ``simulate(..., kinks="filippov", method="radau")``. For long horizons in log-time: where the explicit
    :class:`~flowsim.solvers.filippov.FilippovDriver` needs RHS evaluations linear in log t (its steps are
    stability-limited to O(1) in s), this one needs few once the activation state settles. One
    :class:`~flowsim.solvers.radau_newton.NewtonRadau` is kept for the run and rebased at every event (its step
    size and stage predictor carried across). Crossings are soft where they qualify (as in the explicit driver,
    with the stiff coupling of :mod:`.exponential`), so crowded events do not cost a segment each.

    Stats add ``n_jac`` (Newton Jacobians), ``n_soft_jacobians`` (the soft steps' Jacobians), ``n_lu`` (LU
    decompositions), ``n_event_redos`` (Radau runs from a step start to an event in it), ``n_newton_failures``
    (Newton iterations that failed and halved a step) and ``next_dt``; ``n_redo_steps`` counts the redo runs'
    steps, ``n_interpolated_states`` the event states taken from the dense output.

    Args:
        model: a two-layer ReLU / leaky-ReLU or deep ReLU model (as :class:`FilippovDriver`).
        rtol, atol: tolerances on the dual state z.
        max_steps: budget of accepted steps for the whole run (all segments, redo steps not counted).
        options: ``first_step`` (first step in τ, e.g. a checkpoint's ``next_dt``), ``max_step`` (largest
            step in τ, default unbounded), ``soft_crossings`` (default True; False: an exact restart at every
            crossing) and ``soft_cap`` (default 1: the largest estimated error of a soft step's correction, in units
            of the error tolerance, RMS norm).

    Raises:
        InvalidParameterError: an unsupported model, or an unknown option.

    References:
        Hairer & Wanner, "Solving Ordinary Differential Equations II", Springer 1996 (Radau IIA); Filippov 1988;
        Dieci & Lopez, SIAM J. Numer. Anal. 47 (2009) (sliding modes, the equivalent control).
    """

    def __init__(
        self, model: AbstractModel, method: str, rtol: float, atol: float, max_steps: int, options: dict | None = None
    ) -> None:
        if method != "radau":
            raise InvalidParameterError(
                f"kinks='filippov' with an implicit method supports method='radau', got {method!r}; "
                "use method='radau' or an explicit method such as 'dopri5'"
            )
        opts = dict(options or {})
        unknown = sorted(set(opts) - IMPLICIT_FILIPPOV_OPTIONS)
        if unknown:
            raise InvalidParameterError(
                f"unknown solver option(s) {unknown} for kinks='filippov', method='radau'; valid: "
                f"{sorted(IMPLICIT_FILIPPOV_OPTIONS)}"
            )
        self.first_step = None
        self.max_step = math.inf
        if opts.get("first_step") is not None:
            self.first_step = positive_real("solver option 'first_step'", opts["first_step"], "1e-3")
        if opts.get("max_step") is not None:
            self.max_step = positive_real("solver option 'max_step'", opts["max_step"], "10.0")
        soft = {k: opts[k] for k in ("soft_crossings", "soft_cap") if k in opts}
        super().__init__(model, "dopri5", rtol, atol, max_steps, {**soft, "exact_saves": False})
        self.method = "radau"
        self.n_jac = 0
        self.n_soft_jacobians = 0
        self.n_lu = 0
        self.n_event_redos = 0
        self._next_dt: float | None = None
        self._J: np.ndarray | None = None  # the last Jacobian computed (a new solver's first Newton matrix)
        self._primal: _PrimalUpdate | None = None  # Newton's updates in θ (PPower, p > 2), its slope at self._J's point
        self._seg: _SegmentField | None = None
        self._solver: NewtonRadau | None = None  # kept across segments (rebased at each event)
        self._dense = None  # the last accepted step's dense output (a redo's stage predictor)

    def stats(self) -> dict:
        out = super().stats()
        failures = self._solver.n_newton_failures if self._solver is not None else 0
        out.update(
            n_jac=self.n_jac,
            n_lu=self.n_lu,
            n_event_redos=self.n_event_redos,
            n_soft_jacobians=self.n_soft_jacobians,
            n_newton_failures=failures,
            next_dt=self._next_dt,
        )
        return out

    def integrate(self, field, z0: Tensor, tau_grid: Tensor, save: Callable[[float, Tensor], None]) -> None:
        """Integrate over ``tau_grid`` (τ, shape `(k,)`), calling ``save(τ_k, z_k)`` at every grid time (from the
        dense output of the step that contains it).

        Raises:
            MaxStepsReached: the budget of accepted steps is used up.
            NonFiniteField: non-finite field values or state.
            StepFailed: Radau failed (step size too small).
            FilippovInvariantError: a surface ended a segment on the wrong side, or a regularised bridge failed.
        """
        # (not inference mode: the Jacobian needs autograd on the switching system's tensors). One BLAS thread:
        # Radau's LU factorisations are small, and threaded OpenBLAS takes 87 ms for a complex 120 × 120 LU on a
        # busy 2-core machine against 0.36 ms on one thread.
        with torch.no_grad(), threadpool_limits(limits=1, user_api="blas"):
            self.field = field
            self.sw = self._make_switching(field, z0)
            self._last_band = None
            self._bridge_reason = self._flip_window = None
            seg = self._seg = _SegmentField(field, self.sw, self._stats, self.max_steps)
            self._solver = None
            run = self._start_implicit_run(seg, z0, tau_grid)
            while run.k < len(run.grid):
                if self._bridge_reason is not None:  # the exact segments do not settle here (bridge.py)
                    self._bridge(run, save)
                    continue
                seg_start = float(run.tau)
                solver, band = self._start_implicit_segment(run, seg)
                self._advance_implicit(run, solver, band, seg, save)
                if run.k == len(run.grid):
                    break
                self._count_null_segment(run, seg_start)

    # ---- the steps of the loop ----
    def _start_implicit_run(self, seg: _SegmentField, z0: Tensor, tau_grid: Tensor) -> _Run:
        grid = tau_grid.to(torch.float64)
        tau = grid[0].clone()
        self.sw.init_mode(self.field.potential.inverse_mirror_map(z0))
        self._last = (float(tau), z0)
        rate = float(seg(tau, z0).norm() / z0.norm().clamp_min(torch.finfo(z0.dtype).tiny))
        return _Run(seg, "radau", self.rtol, self.atol, {}, grid, tau, z0, rate, self.first_step)

    def _start_implicit_segment(self, run: _Run, seg: _SegmentField) -> tuple[NewtonRadau, Tensor]:
        """Project, check and classify as the explicit driver does, then start a Radau solver at the segment start.

        Returns the solver and the hysteresis band of the surfaces at zero at the start (shape of h)."""
        theta, zero = self._decide_start(run)
        solver = self._solver
        if solver is None or solver.status != "running":
            stops = run.grid[1:].cpu().numpy()  # steps land on the save times (saved states are step ends)
            solver = self._solver = self._radau(seg, run.tau, run.z, run.grid[-1], run.first_step, stops)
        else:
            solver.rebase(float(run.tau), run.z.detach().cpu().numpy().astype(np.float64))
        f0 = torch.as_tensor(solver.f, dtype=run.z.dtype, device=run.z.device)
        run.rate = float(f0.norm() / run.z.norm().clamp_min(torch.finfo(run.z.dtype).tiny))
        band = self._last_band = self._start_band(theta, zero)
        return solver, band

    def _advance_implicit(self, run: _Run, solver: NewtonRadau, band: Tensor, seg: _SegmentField, save) -> None:
        """Radau steps of the segment, saving grid times, until an event, a sliding drift or the grid's end."""
        dtype, device = run.z.dtype, run.z.device
        f0 = torch.as_tensor(solver.f, dtype=dtype, device=device)
        prev = _Step(run.tau, run.z, f0, torch.zeros_like(run.tau), [run.z])
        while True:
            seg.reset_margins()  # smallest sliding-α margins over this step's evaluations
            new = self._radau_step(solver, seg, dtype, device)
            saves = run.grid[run.k :][run.grid[run.k :] <= new.t1]  # (a soft step must not save inside its correction)
            ev = self._find_event(new, prev, band, seg, saves)
            self._save_inside(run, prev, new, ev, save)
            if ev is not None:
                self._restart_implicit(run, prev, new, ev)
                return
            self._last = (float(new.t1), new.y1)
            if self.monitor is not None:  # (the separation monitor: reads the state only)
                self.monitor(float(new.t1), new.y1)
            drift = self._track_sliding(float(prev.t1), float(new.t1), new.y1)
            if run.k == len(run.grid):
                return
            if drift > _DRIFT_FACTOR:  # projected at the next segment start
                run.tau, run.z, run.forced, run.first_step = new.t1, new.y1, {}, float(new.dt)
                return
            prev = new

    def _restart_implicit(self, run: _Run, prev: _Step, new: _Step, ev: ExactEvent | SoftEvent) -> None:
        """The next segment starts at the event τ_e, with the state there from :meth:`_event_state` (the dense
        output, balance restored, or a Radau redo to τ_e), or a soft step's corrected state."""
        tau_e = ev.tau
        t0, t1 = prev.t1, new.t1
        if isinstance(ev, SoftEvent):
            z = ev.z
            if bool(tau_e < t1):  # a truncated soft step: crossings crowd, the next step near the kept length
                self._solver.h_abs = min(self._solver.h_abs, self.truncated_growth * float(tau_e - t0))
        elif not bool(tau_e > t0):
            z = prev.y1
        elif bool(tau_e >= t1):
            z = new.y1
        else:
            z = self._event_state(prev, new, tau_e)
        self._track_sliding(float(t0), float(tau_e), z)
        run.tau, run.z, run.forced = tau_e, z, ev.forced
        run.first_step = float(new.dt)
        self._last = (float(tau_e), z)

    # ---- Radau ----
    def _radau(
        self, seg: _SegmentField, tau: Tensor, z: Tensor, t_bound: Tensor, first_step, stops=None
    ) -> NewtonRadau:
        """A scipy Radau solver of the current segment field from (τ, z) towards ``t_bound``, its steps landing on
        ``stops`` (τ, increasing)."""
        dtype, device = z.dtype, z.device

        def fun(t: float, y: np.ndarray) -> np.ndarray:
            v = seg(torch.as_tensor(t, dtype=torch.float64, device=device), torch.as_tensor(y.copy(), device=device))
            return v.cpu().numpy()

        reuse = [self._J is not None]

        def jac(t: float, y: np.ndarray) -> np.ndarray:
            if reuse[0]:  # the solver's first Jacobian: the last one computed (marked stale below)
                reuse[0] = False
                return self._J
            self.n_jac += 1
            self._J = self._jacobian(t, torch.as_tensor(y.copy(), dtype=dtype, device=device)).cpu().numpy()
            return self._J

        span = float(t_bound - tau)
        kwargs = {"rtol": self.rtol, "atol": self.atol, "jac": jac, "max_step": self.max_step}
        pot = self.field.potential
        if not getattr(pot, "inverse_hessian_finite", True):  # θ(z) not Lipschitz at 0: Newton's updates in θ
            if self._primal is None:
                self._primal = _PrimalUpdate(pot, dtype, device)
            kwargs["primal"] = self._primal
        if first_step is not None and span > 0:
            kwargs["first_step"] = min(float(first_step), span)
        stale = self._J is not None
        with np.errstate(over="ignore", invalid="ignore"):
            y0 = z.detach().cpu().numpy().astype(np.float64)
            solver = NewtonRadau(fun, float(tau), y0, float(t_bound), stops=stops, **kwargs)
        # A Jacobian from an earlier state or activation state is a fine Newton matrix (a segment start changes the
        # field by a few surfaces' terms); marked stale, scipy recomputes it where Newton's iteration stalls.
        solver.current_jac = not stale
        return solver

    def _radau_step(self, solver: NewtonRadau, seg: _SegmentField, dtype, device) -> _Step:
        """One accepted Radau step (counted, budget checked) as a :class:`_Step`.

        Raises:
            NonFiniteField, StepFailed, MaxStepsReached."""
        st = self._stats
        t_old = solver.t
        nlu = solver.nlu
        try:
            with np.errstate(over="ignore", invalid="ignore"):  # diverging Newton trials are rejected
                message = solver.step()
        except ValueError as e:  # scipy's LU of a non-finite Newton matrix
            raise NonFiniteField(f"radau at τ = {t_old:.9g}: {e}") from e
        self.n_lu += solver.nlu - nlu
        if solver.status == "failed":
            raise implicit_failure("radau", t_old, message, st.n_nonfinite_evals, self.rtol, self.field.log_time)
        st.n_accepted += 1
        st.last_dt = float(solver.t - t_old)
        self._next_dt = float(solver.h_abs)
        y1 = torch.as_tensor(solver.y.copy(), dtype=dtype, device=device)
        if not bool(torch.isfinite(y1).all()):
            raise NonFiniteField(f"radau: non-finite state at τ = {solver.t:.9g}")
        if st.n_accepted >= self.max_steps and solver.status != "finished":
            raise MaxStepsReached(f"{st.n_accepted} accepted steps")
        dense = self._dense = solver.dense_output()  # y(x) = y_old + Σ_k Q[:, k] x^(k+1), x = (τ − τ₀)/(τ₁ − τ₀)
        coeff = [torch.as_tensor(dense.y_old, dtype=dtype, device=device)]
        coeff += list(torch.as_tensor(dense.Q.T.copy(), dtype=dtype, device=device))
        f1 = torch.as_tensor(solver.f.copy(), dtype=dtype, device=device)
        t1 = torch.tensor(float(solver.t), dtype=torch.float64, device=device)
        return _Step(t1, y1, f1, torch.tensor(st.last_dt, dtype=torch.float64, device=device), coeff)

    def _redo_state(self, prev: _Step, tau_e: Tensor) -> tuple[Tensor, None]:
        """(z(τ_e), None) by a Radau run of the segment field from the step start, landing on τ_e: the state at an
        event where the step's dense output disagrees with the cubic Hermite interpolant of its ends."""
        self.n_event_redos += 1
        solver = self._radau(self._seg, prev.t1, prev.y1, tau_e, float(tau_e - prev.t1))
        # Newton's stage predictor: the redone step's collocation polynomial (an interpolation on [τ₀, τ_e], where
        # a new solver would start from zero increments and halve its step many times on late-training fields)
        solver.sol = self._dense
        while solver.status == "running":
            t_old = solver.t
            with np.errstate(over="ignore", invalid="ignore"):
                message = solver.step()
            if solver.status == "failed":
                raise StepFailed(f"radau failed at τ = {t_old:.9g} on the way to an event: {message}")
            self._stats.n_redo_steps += 1
        return torch.as_tensor(solver.y.copy(), dtype=prev.y1.dtype, device=prev.y1.device), None

    # ---- soft crossings in a stiff step ----

    def _soft_step(self, new, prev, *args):
        """:meth:`_SoftCrossings._soft_step`, for p ≤ :data:`_SOFT_MAX_PARAMS` (else the fallback "size")."""
        if new.y1.numel() > _SOFT_MAX_PARAMS:
            return self._soft_fallback("size")
        return super()._soft_step(new, prev, *args)

    def _correction(self, C, t0, dt, xc, ii, jj, x_end, rates):
        """The soft correction with the unmodelled crossing-time shifts (:meth:`_switch_with_coupling`'s estimate)."""
        return self.sw.crossing_correction(C, t0, dt, xc, ii, jj, x_end, rates, stiff_terms=True)

    def _switch_with_coupling(self, prev, t_e, z_e, f_e, z1, end, bref, cc, ii, jj, first):
        """Switch the crossings (ii, jj) and correct the state for a stiff step (:mod:`.exponential`).

        The explicit driver's coupling J·∫Δz dτ is first order in L·J (L = τ_e − τ_c, τ_c the first crossing);
        in a Radau step the fast modes have |λ|·L ≫ 1 and relax to −ΔF/λ. Here z₁ = z_e + δz, δz the
        exponential-integrator correction of :func:`~flowsim.solvers.filippov.exponential.stiff_correction_pair` with
        the new-pattern Jacobian at z_e (``n_soft_jacobians``), every B_j restored, and f_new(z₁)
        evaluated (the next segment's first evaluation). The neglected nonlinearity shows in the residual
        ρ = f_new(z₁) − f_e − ΔF(τ_e) − J (z₁ − z_e) (second order in δz, zero at τ_c); its effect on the state,
        at most |ρ|·L/3 (ρ growing like (τ − τ_c)², non-stiff bound), plus the quartic fit's difference from the
        cubic, the crossing-time shifts' second order, the shifts δτ_k leaves out and J's drift over the step, must
        stay below ``soft_cap`` of the error tolerance (RMS norm). Other surfaces must keep their sides at z₁, and
        sliding surfaces their sliding mode (:meth:`_sliding_left`, reason "sliding_alpha").

        Returns (z₁, f_new(z₁), None) with the new pattern set, or (None, None, ratio) with the old pattern
        restored: ratio = the estimate over ``soft_cap``, 2 where a side is lost, inf where δz is not finite.
        """
        sw = self.sw
        snap = sw.flip(ii, jj)

        def undo(ratio: float, why: str = "error"):
            return self._coupling_undo(snap, why, ratio)

        jac = self._jacobian(t_e, z_e)
        self.n_soft_jacobians += 1
        tau_c, coeff, x_c = first
        length = float(t_e - tau_c)
        pair = stiff_correction_pair(jac, cc.dz, cc.dF_end, cc.dz_moment, cc.dz_moment2, length)
        if pair is None:
            return undo(math.inf)
        dz, dz_cubic = pair
        z1 = sw.restore_balance(z_e + dz, bref)
        end = self._sides_ok(z1, ii[:0], jj[:0])  # (the pattern is already switched)
        if end is None:
            return undo(2.0)
        theta1 = end.theta
        self.field.nfe += 1
        f1_new, alpha = sw.velocity(t_e, theta1)  # the next segment's first evaluation
        if self._sliding_left(theta1, alpha):
            return undo(2.0, "sliding_alpha")
        rho = f1_new - f_e - cc.dF_end - jac @ (z1 - z_e)
        tol = self.atol + self.rtol * torch.maximum(prev.y1.abs(), z_e.abs())
        est = float(((length / 3.0) * rho / tol).square().mean().sqrt())
        # the fit of Δz(τ): the quartic's difference from the cubic (an embedded pair)
        est += float(((dz - dz_cubic) / tol).square().mean().sqrt())
        est += self._shift_error(cc, tol, length)  # the crossing-time shifts' second order and those left out
        est += self._jacobian_drift(jac, dz, tau_c, _horner(coeff, x_c), length, tol)
        if not est <= self.soft_cap:
            return undo(est / self.soft_cap if math.isfinite(est) else math.inf)
        self._soft_end = (z1, theta1, alpha, end.zero)
        return z1, f1_new, None

    def _jacobian_drift(self, jac: Tensor, dz: Tensor, tau_c: Tensor, z_c: Tensor, length: float, tol: Tensor) -> float:
        """The error of taking J constant (its value J_e at τ_e) in :meth:`_switch_with_coupling`, in RMS units of
        the error tolerance.

        With J(τ) moving linearly from J_c at τ_c to J_e and δz(τ) growing like (τ − τ_c)/L·δz, first-order
        perturbation gives δz₁ = −L (φ₂(A) − 2 φ₃(A)) (J_e − J_c) δz, A = J_e L (a non-stiff step: −L ΔJ δz/6; a
        stiff mode damps it). J_c δz by a central difference of the new-pattern field at the dense output's
        z(τ_c) (two evaluations). An estimate only (the shape of δz(τ) is a guess), not applied.
        """
        sw = self.sw
        pot = self.field.potential
        size = float(dz.abs().max())
        if size == 0.0:
            return 0.0
        eps = 1e-6 * max(float(z_c.abs().max()), 1e-12) / size
        self.field.nfe += 2
        v_p, _ = sw.velocity(tau_c, pot.inverse_mirror_map(z_c + eps * dz))
        v_m, _ = sw.velocity(tau_c, pot.inverse_mirror_map(z_c - eps * dz))
        u = jac @ dz - (v_p - v_m) / (2.0 * eps)
        drift = phi_actions(length * jac, length * torch.stack([2.0 * u, -u, torch.zeros_like(u)], 1))
        return float((drift / tol).square().mean().sqrt())

    def _jacobian(self, tau: float, z: Tensor) -> Tensor:
        """∂(dz/dτ)/∂z of the current segment field (fixed activation state, sliding control included), `(p, p)`:
        (∂v/∂θ by autograd through the switching system's velocity) · diag(dθ/dz)."""
        pot = self.field.potential
        theta = pot.inverse_mirror_map(z)
        tau_t = torch.as_tensor(tau, dtype=torch.float64, device=z.device)

        def velocity(th: Tensor) -> Tensor:
            return self.sw.velocity(tau_t, th)[0]

        if hasattr(self.sw, "velocity_jacobian"):  # two-layer nets: closed form
            J = self.sw.velocity_jacobian(tau_t, theta)
        else:
            with torch.enable_grad():
                J = torch.autograd.functional.jacobian(velocity, theta, vectorize=True)
        slope = inverse_map_slope(pot, theta, z)
        if self._primal is not None:
            self._primal.slope = slope.cpu().numpy()
        J = J * slope[None, :]
        # where a coordinate sits at a vertical tangent of ∇Φ* (p-power, p > 2, θ_k = 0) the metric's derivative is
        # not finite: those entries are left out of the Newton matrix (an approximate Jacobian only slows Newton)
        return torch.where(torch.isfinite(J), J, 0.0)
