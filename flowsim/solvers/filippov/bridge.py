"""Regularised bridges: where the exact Filippov treatment does not settle, a stretch of the run integrated with
the switching smoothed over the at-zero band (the Sotomayor–Teixeira regularisation), by Radau with error control.

An exact segment start can fail to make progress on configurations the event/classification machinery cannot
resolve: many surfaces that coincide (under a p-power potential with p < 2 a deep net's weight w that sits at
its zero makes every surface h_i = w · r_i(x_i) of the points with that one live input vanish together, with
∇_z h = 0 there), or a surface that switches back and forth at every segment start. The driver then hands the
state to a **bridge**: the gate of every surface is φ(h/ε), with ε the at-zero band (10 error scales of h,
:meth:`~flowsim.solvers.filippov.state.AbstractSwitchingSystem.regularisation_width`) at the bridge's start, held
for the bridge, and φ the C¹ transition ½ + ¾s − ¼s³ on [−1, 1] (0 below, 1 above). Outside the band the field is the
exact one; inside it the gates are a smooth convex combination, whose ε → 0 limit is the Filippov sliding motion
on a surface (Sotomayor & Teixeira 1996; Llibre, da Silva & Teixeira 2007). The regularised field is stiff
(∝ 1/ε) and smooth, so Radau IIA (:class:`~flowsim.solvers.radau_newton.NewtonRadau`, Jacobian by autograd)
integrates it with the run's rtol/atol; its steps land on the save times. A bridge lasts 0.01 × (1 + |τ|) of τ,
twice the last one's length when the exact segments fail again right after it; then the activation state is set
from the signs of h and exact segments resume. Every fixed-gate field conserves each unit's balance, the
bridge's too.

Triggers: :data:`NULL_BEFORE_BRIDGE` consecutive zero-length segments, or a surface switching
:data:`CHATTER_FLIPS` times within :data:`CHATTER_WINDOW` segment starts and :data:`CHATTER_SPAN` × (1 + |τ|) of
τ. Counted in the run's statistics (``n_regularised_bridges``, ``regularised_time``, ``regularised_reasons``);
documented in docs/kinks.md (How it works, item 9).

References:
    Sotomayor & Teixeira, "Regularization of discontinuous vector fields", Equadiff 95 (1996); Llibre, da Silva
    & Teixeira, "Regularization of discontinuous vector fields on R³ via singular perturbation", J. Dyn. Diff.
    Equat. 19 (2007).
"""

from __future__ import annotations

import collections
import math

import numpy as np
import torch
from torch import Tensor

from ..base import MaxStepsReached
from ..radau_newton import NewtonRadau
from ..stiff import STALL_PROGRESS, STALL_WINDOW, _PrimalUpdate
from .state import FilippovInvariantError, inverse_map_slope

NULL_BEFORE_BRIDGE = 20  # consecutive zero-length segments that start a bridge
CHATTER_FLIPS = 8  # a surface switching this often …
CHATTER_WINDOW = 64  # … within this many segment starts …
CHATTER_SPAN = 1e-5  # … and this × (1 + |τ|) of τ starts a bridge
_FIRST_SPAN = 1e-2  # a bridge's first length, × (1 + |τ|); doubled when the exact segments fail again right after


def transition(s: Tensor) -> Tensor:
    """The regularisation's gate φ(s): 0 for s ≤ −1, 1 for s ≥ 1, ½ + ¾s − ¼s³ in between (C¹, increasing)."""
    s = s.clamp(-1.0, 1.0)
    return 0.5 + 0.75 * s - 0.25 * s * s * s


class _Bridges:
    """Regularised bridges of :class:`~flowsim.solvers.filippov.FilippovDriver` (a part of the driver: it uses
    ``sw``, ``field``, the tolerances, the run's ``_stats`` and its save/monitor protocol)."""

    _bridge_reason: str | None = None  # why the next loop turn is a bridge (None: an exact segment)
    _flip_window: collections.deque | None = None  # flat indices of the surfaces switched at recent starts
    _flip_counts: Tensor | None = None  # their counts over the window, (n·M,)
    _bridge_end: tuple[float, float] = (-math.inf, 0.0)  # (τ at the last bridge's end, its span)

    def _watch_chatter(self, old_mode: Tensor, tau: float) -> None:
        """Count the surfaces a segment start at ``tau`` switched (``old_mode`` before it, ``sw.mode`` after); a
        surface that switched :data:`CHATTER_FLIPS` times within the last :data:`CHATTER_WINDOW` starts, all within
        :data:`CHATTER_SPAN` × (1 + |τ|) of τ, asks for a bridge (sliding entry/exit cycles that the exact
        classification resolves span far more τ)."""
        changed = torch.nonzero((self.sw.mode != old_mode).flatten()).flatten()
        if self._flip_window is None:
            self._flip_window = collections.deque()
            self._flip_counts = torch.zeros(old_mode.numel(), dtype=torch.int32, device=old_mode.device)
        window, counts = self._flip_window, self._flip_counts
        window.append((tau, changed))
        counts.index_add_(0, changed, torch.ones_like(changed, dtype=torch.int32))
        if len(window) > CHATTER_WINDOW:
            _, out = window.popleft()
            counts.index_add_(0, out, torch.full_like(out, -1, dtype=torch.int32))
        if not changed.numel() or int(counts[changed].max()) < CHATTER_FLIPS:
            return
        k = int(changed[counts[changed].argmax()])
        first = next(t for t, c in window if bool((c == k).any()))
        if tau - first <= CHATTER_SPAN * (1.0 + abs(tau)):
            self._bridge_reason = "chatter"

    def _bridge(self, run, save) -> None:
        """Integrate the regularised field from (τ, z) of ``run`` over the bridge's span (saving the grid times
        inside), then set the activation state from the signs of h for the next exact segment.

        Raises:
            FilippovInvariantError: Radau failed on the regularised field.
            MaxStepsReached: the budget of accepted steps is used up.
        """
        st, reason = self._stats, self._bridge_reason
        self._bridge_reason = None
        tau0 = float(run.tau)
        last_end, last_span = self._bridge_end
        span = _FIRST_SPAN * (1.0 + abs(tau0))
        if tau0 - last_end <= 2.0 * last_span:  # the exact segments failed again right after the last bridge
            span = max(span, 2.0 * last_span)
        t_end = min(tau0 + span, float(run.grid[-1]))
        solver = self._bridge_solver(run, t_end)
        z, mark = run.z, (0, tau0)
        while solver.status == "running":
            t_old = solver.t
            with np.errstate(over="ignore", invalid="ignore"):
                message = solver.step()
            if solver.status == "failed":
                raise FilippovInvariantError(
                    f"the regularised bridge ({reason}) from τ = {tau0:.6g} failed at τ = {t_old:.6g}: {message}"
                )
            st.n_accepted += 1
            st.last_dt = float(solver.t - t_old)
            mark = self._bridge_stall(solver, mark, reason, tau0)
            z = torch.as_tensor(solver.y.copy(), dtype=run.z.dtype, device=run.z.device)
            self._save_bridge(run, solver, z, save)
            self._last = (float(solver.t), z)
            if self.monitor is not None:
                self.monitor(float(solver.t), z)
            if st.n_accepted >= self.max_steps and run.k < len(run.grid):
                raise MaxStepsReached(f"{st.n_accepted} accepted steps")
        st.count_bridge(reason, t_end - tau0)
        self._bridge_end = (t_end, t_end - tau0)
        self._resume_after_bridge(run, t_end, z, solver.step_size)

    @staticmethod
    def _bridge_stall(solver: NewtonRadau, mark: tuple[int, float], reason: str, tau0: float) -> tuple[int, float]:
        """Fail where the bridge creeps (as :class:`~flowsim.solvers.stiff.StiffDriver`: :data:`STALL_WINDOW`
        accepted steps advancing τ by less than :data:`STALL_PROGRESS` (1 + |τ|)); returns the window's new mark.

        Raises:
            FilippovInvariantError: the bridge stalled (measured: Newton failing at steps of 4e-12 where a unit's
            gate switched far more sharply than the state's scale, p-power p = 1.5, three hidden layers)."""
        steps, tau_mark = mark
        steps += 1
        if steps < STALL_WINDOW:
            return steps, tau_mark
        if abs(solver.t - tau_mark) < STALL_PROGRESS * (1.0 + abs(solver.t)):
            raise FilippovInvariantError(
                f"the regularised bridge ({reason}) from τ = {tau0:.6g} stalled at τ = {solver.t:.9g}: "
                f"{STALL_WINDOW} Radau steps advanced τ by {abs(solver.t - tau_mark):.3g} (the switching does not "
                "settle here, exactly or regularised); try another rtol or kinks='naive'"
            )
        return 0, solver.t

    def _bridge_solver(self, run, t_end: float) -> NewtonRadau:
        """Radau on the regularised field from (τ, z) of ``run`` to ``t_end``, its steps landing on the save times."""
        sw, pot, field = self.sw, self.field.potential, self.field
        dtype, device = run.z.dtype, run.z.device
        rtol, atol = self.rtol, self.atol

        # the transition's half-width ε: the at-zero band at the bridge's start, held for the bridge (an ε that
        # follows the state makes the field's Jacobian miss dε/dz; at a p-power weight's zero that derivative is of
        # the size of the gates' own and Newton crawled: 6,000 steps for 0.03 of τ)
        theta0 = pot.inverse_mirror_map(run.z)
        eps = sw.regularisation_width(theta0, run.z, rtol, atol).clamp_min(torch.finfo(dtype).tiny)

        def fun(t: float, y: np.ndarray) -> np.ndarray:
            theta = pot.inverse_mirror_map(torch.as_tensor(y, dtype=dtype, device=device))
            field.nfe += 1
            return (
                sw.regularised_velocity(torch.as_tensor(t, dtype=torch.float64, device=device), theta, eps)
                .cpu()
                .numpy()
            )

        # θ(z) not Lipschitz at 0 (p-power, p > 2): Newton's updates applied to θ, as in the implicit driver
        primal = None if getattr(pot, "inverse_hessian_finite", True) else _PrimalUpdate(pot, dtype, device)

        def jac(t: float, y: np.ndarray) -> np.ndarray:
            # autograd through the gates, not in inference mode, on fresh copies of the driver's tensors
            z = torch.as_tensor(y, dtype=dtype, device=device)
            theta = pot.inverse_mirror_map(z)
            with torch.inference_mode(False), torch.enable_grad():
                tau, e = torch.tensor(t, dtype=torch.float64, device=device), eps.clone()
                J = torch.autograd.functional.jacobian(
                    lambda th: sw.regularised_velocity(tau, th, e), theta.clone(), vectorize=True
                )
            slope = inverse_map_slope(pot, theta, z)
            if primal is not None:
                primal.slope = slope.cpu().numpy()
            J = J.detach() * slope[None, :]
            return torch.where(torch.isfinite(J), J, 0.0).cpu().numpy()

        grid = run.grid[run.k :].cpu().numpy()
        y0 = run.z.cpu().numpy().astype(np.float64)
        stops = grid[grid <= t_end]
        with np.errstate(over="ignore", invalid="ignore"):
            return NewtonRadau(
                fun, float(run.tau), y0, t_end, rtol=rtol, atol=atol, jac=jac, stops=stops, primal=primal
            )

    def _save_bridge(self, run, solver: NewtonRadau, z: Tensor, save) -> None:
        """Save the grid times up to the bridge step's end (its steps land on them; the dense output otherwise)."""
        grid, dense = run.grid, None
        while run.k < len(grid) and float(grid[run.k]) <= solver.t:
            if float(grid[run.k]) == solver.t:
                save(float(grid[run.k]), z)
            else:
                dense = solver.dense_output() if dense is None else dense
                save(float(grid[run.k]), torch.as_tensor(dense(float(grid[run.k])), dtype=z.dtype, device=z.device))
            run.k += 1

    def _resume_after_bridge(self, run, t_end: float, z: Tensor, step: float | None) -> None:
        """The next exact segment's start at the bridge's end: the activation state from the signs of h (surfaces
        at zero are classified at that start), nothing forced, the bridge's last step as its first."""
        run.tau = torch.tensor(t_end, dtype=torch.float64, device=z.device)
        run.z = z
        run.forced, run.sticky, run.null_run = {}, (math.nan, {}), 0
        if step is not None and step > 0:
            run.first_step = step
        self.sw.init_mode(self.field.potential.inverse_mirror_map(z))
        self._last_band = None
        self._soft_end = None
        self._seg.cache = self._seg.start_field = None
        self._flip_window = self._flip_counts = None
