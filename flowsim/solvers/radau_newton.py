"""scipy's Radau IIA (order 5) with the Newton control of Hairer & Wanner's RADAU5.

The collocation method, its error estimate, dense output and step-size predictor are scipy's
(:class:`scipy.integrate.Radau`; its tableau constants are read from scipy's module). What differs is how the
simplified Newton iteration for the stage values is judged and what a failed one does to the step:

* **no early abort on a slow second iterate.** scipy stops an iteration as soon as the contraction estimate
  θ_k = ‖ΔW_k‖/‖ΔW_{k−1}‖ predicts no convergence within 6 iterations — already at the second iterate. On the
  exponential loss weights of late training the first iterates contract slowly and the later ones fast (measured
  on a two-layer ReLU at log t ≈ 1e5: scaled corrections 0.024, 0.014, 5e-5, 2e-7), so scipy rejected iterations
  that would have converged and halved the step, 2-3 times per step. Here the prediction is trusted from the
  third iterate on, up to 7 iterations (RADAU5's default), and a diverging iterate (θ ≥ 1) still stops at once.
* **convergence after one iterate** where the previous step's contraction says so: RADAU5's test
  FACCON · ‖ΔW‖ ≤ tol with FACCON = max(θ/(1 − θ) of the last iteration, ε)^0.8.
* **steps can land on given times** (``stops``, e.g. save times): a step that would pass the next stop ends on
  it, as at ``t_bound``, and the proposal from before the cut is kept for the step after it. A stop closer to
  the step's start than 1e-9 of the step (or of |t|) is passed instead.
* **Newton's convergence test has a rounding floor.** Its weights are atol + rtol·|y_k| as in scipy, but at least
  100 ε·max_k |y_k|: the LU solves put rounding of about ε times the largest increment into every component, so
  a component whose weight is below that (a dual coordinate crossing 0 while others are 10⁷, with atol = 1e-12)
  never passed the test. Measured (a linear model, ``SmoothedHomogeneous(3, 1)``, rtol 1e-9, atol 1e-12, to log
  t = 1000): the run had 4,390 Newton failures and was at log t 310 after 40 s (steps of 1e-5); with the floor,
  8 failures and 1.9 s. The error estimate keeps the user's weights.
* **Newton-limited steps are remembered.** Without a limit the error controller proposes 5-10 × the step
  Newton can take on late-training fields, and each step pays for the failed tries. The next step is capped
  where Newton's contraction is predicted to reach 0.3, from the last measured θ and θ ∝ h⁴ (measured there:
  doubling h took θ from 0.02-0.04 to 0.5-0.9); after a failure (the step halved) the cap is 1.4 × the accepted
  step, and right after a cut step the proposal does not grow (RADAU5).

Counters: ``n_newton_failures`` (iterations that did not converge), ``n_error_rejections``.

References:
    Hairer & Wanner, "Solving Ordinary Differential Equations II", 2nd ed., Springer 1996, §IV.8 (Radau IIA
    implementation, Newton's convergence test (8.11)-(8.12), step-size control) and the RADAU5 code; Virtanen
    et al., "SciPy 1.0", Nature Methods 17 (2020) (``scipy.integrate.Radau``).
"""

from __future__ import annotations

import numpy as np
from scipy.integrate import Radau
from scipy.integrate._ivp import radau as _sp

__all__ = ["NewtonRadau"]

_NEWTON_MAXITER = 7  # RADAU5's default NIT
_TRUST_FROM = 2  # the convergence prediction decides from the third iterate (index 2) on
_CAP_AFTER_FAILURE = 1.4  # × the accepted step after a Newton failure
_CAP_GROWTH = 1.6  # per step converged at the first iterate (no contraction measured)
_RATE_TARGET = 0.3  # the contraction a capped step is aimed at
_RATE_EXPONENT = 0.25  # 1/k for θ ∝ h^k
_EPS = np.finfo(float).eps
_STOP_MIN = 1e-9  # stops closer to t than this × max(step, |t|) are passed, not landed on
_NEWTON_FLOOR = 100 * _EPS  # × max |y|: the smallest weight of Newton's convergence test (module docstring)


class NewtonRadau(Radau):
    """:class:`scipy.integrate.Radau` with RADAU5's Newton convergence control (module docstring).

    Same constructor and results interface as scipy's solver (``step``, ``dense_output``, ``t``, ``y``, ``f``,
    ``nfev``, ``njev``, ``nlu``). :meth:`rebase` continues it from a new (t, y), e.g. after a switching event of
    a piecewise-smooth field, keeping its step size and stage predictor.

    ``stops`` (keyword, optional): increasing times `(k,)` the steps land on (no step passes one).
    ``primal`` (keyword, optional): an object whose ``update(y, Z, dZ)`` returns the stages `(3, n)` after Newton's
    increment ``dZ``, applied in other coordinates (:class:`~flowsim.solvers.stiff._PrimalUpdate`: θ = ∇Φ*(y) where
    θ(y) is not Lipschitz); None: Z + dZ.
    """

    def __init__(self, *args, stops=None, primal=None, **kwargs) -> None:
        self.primal = primal
        super().__init__(*args, **kwargs)
        self.stops = np.asarray([] if stops is None else stops, dtype=float)
        self.faccon = 1.0  # θ/(1 − θ) of the last Newton iteration (RADAU5's FACCON)
        self.h_cap: float | None = None
        self.n_newton_failures = 0
        self.n_error_rejections = 0

    def rebase(self, t: float, y: np.ndarray) -> None:
        """Continue from (t, y) under a changed right-hand side (the same ``fun`` object, new behaviour).

        The stage predictor extrapolates the last collocation polynomial across the change, shifted to pass
        through y (Newton corrects the jump of the field); the step size and the Jacobian (marked stale) are kept;
        the convergence factor is reset (the next step iterates at least twice) and so is the step-size
        controller's history: Gustafsson's predictive controller reads the ratio of consecutive error norms as the
        trend of one smooth field, which a change of field is not (a two-layer ReLU at n = 1,000: an error norm of
        0.67 after 0.044 across a sliding entry cut the next step five-fold, and the run took 1,096 steps against
        924 with the history dropped)."""
        self.h_abs_old = self.error_norm_old = None
        self.t = float(t)
        self.y = np.asarray(y, dtype=float).copy()
        with np.errstate(over="ignore", invalid="ignore"):
            self.f = self.fun(self.t, self.y)
            if self.sol is not None:  # the predictor must pass through the new state: the old polynomial's
                # increments from t on (its value at t differs from y by the event's state correction, which as
                # an offset in every stage guess overflowed the loss weights even for steps of 1e-9)
                offset = self.y - self.sol(self.t)
                self.sol = _Shifted(self.sol, offset) if np.all(np.isfinite(offset)) else None
        self.t_old = None
        self.current_jac = False
        self.faccon = 1.0
        self.status = "running"

    # ---- one step ----
    def _step_impl(self):
        t, y, f = self.t, self.y, self.f
        min_step = 10 * np.abs(np.nextafter(t, self.direction * np.inf) - t)
        h_abs, h_abs_old, error_norm_old = self._first_try(min_step)
        J, current_jac = self.J, self.current_jac
        LU_real, LU_complex = self.LU_real, self.LU_complex
        self.faccon = max(self.faccon, _EPS) ** 0.8
        cut = newton_cut = False
        while True:
            if h_abs < min_step:
                return False, self.TOO_SMALL_STEP
            t_new = t + h_abs * self.direction
            if self.direction * (t_new - self.t_bound) > 0:
                t_new = self.t_bound
            stop = self._next_stop(t)
            # (a stop within _STOP_MIN of the step from t is passed, not landed on: a step of ~1e-300 made the
            # Newton matrix MU/h I − J infinite, and the steps after it stayed tiny)
            landed = (
                stop is not None
                and self.direction * (t_new - stop) >= 0
                and abs(stop - t) > _STOP_MIN * max(h_abs, abs(t))
            )
            if landed and t_new != stop:
                t_new = stop
                LU_real = LU_complex = None  # (factorised for the longer step)
            h = t_new - t
            h_abs = np.abs(h)
            stages = self._solve_stages(t, y, f, h, J, current_jac, LU_real, LU_complex)
            converged, n_iter, Z, rate, J, current_jac, LU_real, LU_complex = stages
            if not converged:
                self.n_newton_failures += 1
                h_abs *= 0.5
                LU_real = LU_complex = None
                cut = newton_cut = True
                continue
            y_new = y + Z[-1]
            error_norm = self._error_norm(t, y, y_new, f, Z, h, LU_real, cut)
            if error_norm > 1:
                self.n_error_rejections += 1
                factor = _sp.predict_factor(h_abs, h_abs_old, error_norm, error_norm_old)
                h_abs *= max(_sp.MIN_FACTOR, self._safety(n_iter) * factor)
                LU_real = LU_complex = None
                cut = True
                continue
            break
        factor = min(
            _sp.MAX_FACTOR, self._safety(n_iter) * _sp.predict_factor(h_abs, h_abs_old, error_norm, error_norm_old)
        )
        if cut:
            factor = min(factor, 1.0)  # RADAU5: no increase right after a rejected or halved step
        resume = landed and not cut and h_abs * factor < self.h_abs
        if resume:  # cut short to land on a stop: the step before it proposed the larger step, and still does
            factor = self.h_abs / h_abs
        recompute_jac = self.jac is not None and n_iter > 2 and rate is not None and rate > 1e-3
        if not recompute_jac and 1.0 <= factor < 1.2:
            factor = 1.0
        else:
            LU_real = LU_complex = None
        self.h_cap = self._newton_cap(h_abs, rate, newton_cut)
        f_new = self.fun(t_new, y_new)
        if recompute_jac:
            J = self.jac(t_new, y_new, f_new)
            current_jac = True
        elif self.jac is not None:
            current_jac = False
        self.h_abs_old, self.error_norm_old = (None, None) if resume else (self.h_abs, error_norm)
        self.h_abs = h_abs * factor
        self.y_old, self.t, self.y, self.f, self.Z = y, t_new, y_new, f_new, Z
        self.LU_real, self.LU_complex, self.current_jac, self.J = LU_real, LU_complex, current_jac, J
        self.t_old = t
        self.sol = self._compute_dense_output()
        return True, None

    # ---- the step's parts ----
    def _solve_stages(self, t, y, f, h, J, current_jac: bool, LU_real, LU_complex):
        """Newton's iteration for the stages of a step of length h, from the predictor (the last collocation
        polynomial, or zero increments); where it fails with a stale Jacobian, once more with a fresh one.

        Returns (converged, iterations, Z `(3, n)`, last contraction θ or None, J, current_jac, LU_real, LU_complex),
        the factorisations None where they were invalidated."""
        Z0 = np.zeros((3, y.shape[0])) if self.sol is None else self.sol(t + h * _sp.C).T - y
        scale = np.maximum(self.atol + np.abs(y) * self.rtol, _NEWTON_FLOOR * np.abs(y).max())
        while True:
            if LU_real is None or LU_complex is None:
                LU_real = self.lu(_sp.MU_REAL / h * self.I - J)
                LU_complex = self.lu(_sp.MU_COMPLEX / h * self.I - J)
            converged, n_iter, Z, rate = self._newton(t, y, h, Z0, scale, LU_real, LU_complex)
            if converged or current_jac:
                return converged, n_iter, Z, rate, J, current_jac, LU_real, LU_complex
            J = self.jac(t, y, f)
            current_jac = True
            LU_real = LU_complex = None

    def _next_stop(self, t: float) -> float | None:
        """The first stop after t (in the direction of integration), None if there is none."""
        if not self.stops.size:
            return None
        ahead = self.stops[self.direction * (self.stops - t) > 0]
        if not ahead.size:
            return None
        return float(ahead[0] if self.direction > 0 else ahead[-1])

    def _first_try(self, min_step: float) -> tuple[float, float | None, float | None]:
        """The step to try first (proposal, held to ``max_step``, the Newton cap and ``min_step``) and the
        controller history to use with it (dropped where the step was clipped)."""
        h_abs = self.h_abs
        limit = self.max_step if self.h_cap is None else min(self.max_step, self.h_cap)
        if h_abs > limit:
            self.LU_real = self.LU_complex = None  # (factorised for the proposal)
            return limit, None, None
        if h_abs < min_step:
            return min_step, None, None
        return h_abs, self.h_abs_old, self.error_norm_old

    def _newton_cap(self, h_abs: float, rate: float | None, newton_cut: bool) -> float | None:
        """The largest next step Newton's iteration is expected to take: θ grows like h^k (k ≈ 4 measured on
        late training, where the stage values move the loss weights exponentially), so the step whose θ would
        reach _RATE_TARGET is h (target/θ)^(1/k); after a failure, _CAP_AFTER_FAILURE × the accepted step."""
        if newton_cut:
            return _CAP_AFTER_FAILURE * h_abs
        if rate is None:  # converged at the first iterate: no contraction measured
            return None if self.h_cap is None else self.h_cap * _CAP_GROWTH
        return h_abs * (_RATE_TARGET / max(rate, 1e-12)) ** _RATE_EXPONENT

    def _safety(self, n_iter: int) -> float:
        return 0.9 * (2 * _NEWTON_MAXITER + 1) / (2 * _NEWTON_MAXITER + n_iter)

    def _error_norm(self, t, y, y_new, f, Z, h, LU_real, cut: bool) -> float:
        """Hairer & Wanner's embedded error estimate (IV.8.19-20), refined once after a rejection."""
        ZE = Z.T.dot(_sp.E) / h
        error = self.solve_lu(LU_real, f + ZE)
        scale = self.atol + np.maximum(np.abs(y), np.abs(y_new)) * self.rtol
        error_norm = _sp.norm(error / scale)
        if cut and error_norm > 1:
            error = self.solve_lu(LU_real, self.fun(t, y + error) + ZE)
            error_norm = _sp.norm(error / scale)
        return error_norm

    def _newton(self, t, y, h, Z0, scale, LU_real, LU_complex):
        """Simplified Newton iteration for the collocation system (Hairer & Wanner IV.8.9-8.12, RADAU5).

        Returns (converged, iterations, Z `(3, n)`, last contraction estimate θ or None)."""
        n = y.shape[0]
        M_real, M_complex = _sp.MU_REAL / h, _sp.MU_COMPLEX / h
        W = _sp.TI.dot(Z0)
        Z = Z0
        F = np.empty((3, n))
        ch = h * _sp.C
        dW = np.empty_like(W)
        dW_norm_old = rate = None
        for k in range(_NEWTON_MAXITER):
            for i in range(3):
                F[i] = self.fun(t + ch[i], y + Z[i])
            if not np.all(np.isfinite(F)):
                return False, k + 1, Z, rate
            f_real = F.T.dot(_sp.TI_REAL) - M_real * W[0]
            f_complex = F.T.dot(_sp.TI_COMPLEX) - M_complex * (W[1] + 1j * W[2])
            dW_complex = self.solve_lu(LU_complex, f_complex)
            dW[0] = self.solve_lu(LU_real, f_real)
            dW[1], dW[2] = dW_complex.real, dW_complex.imag
            dW_norm = _sp.norm(dW / scale)
            if dW_norm_old is not None:
                rate = dW_norm / dW_norm_old
                if rate >= 1 or (
                    k >= _TRUST_FROM and rate ** (_NEWTON_MAXITER - k) / (1 - rate) * dW_norm > self.newton_tol
                ):
                    return False, k + 1, Z, rate
                self.faccon = rate / (1 - rate)
            W += dW
            if self.primal is None:
                Z = _sp.T.dot(W)
            else:  # the update applied to θ = ∇Φ*(y + Z), where θ(y) is not Lipschitz (module docstring)
                Z = self.primal.update(y, Z, _sp.T.dot(W) - Z)
                W = _sp.TI.dot(Z)
            if dW_norm == 0 or self.faccon * dW_norm <= self.newton_tol:
                return True, k + 1, Z, rate
            dW_norm_old = dW_norm
        return False, _NEWTON_MAXITER, Z, rate


class _Shifted:
    """A dense output moved by a constant: ``sol(t) + offset`` (scalar t: `(n,)`; times `(k,)`: `(n, k)`)."""

    def __init__(self, sol, offset: np.ndarray) -> None:
        self.sol, self.offset = sol, offset

    def __call__(self, t):
        value = self.sol(t)
        return value + (self.offset[:, None] if value.ndim == 2 else self.offset)
