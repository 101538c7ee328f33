"""Implicit, stiff-stable driving: scipy's Radau / BDF / LSODA steppers with an autograd Jacobian."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy.integrate import BDF, LSODA
from torch import Tensor

from ..errors import InvalidParameterError
from .base import AbstractDriver, MaxStepsReached, NonFiniteField, StepFailed, implicit_failure
from .radau_newton import NewtonRadau

#: a stiff run that advances τ by less than STALL_PROGRESS·(1 + |τ|) over STALL_WINDOW accepted steps fails
STALL_WINDOW = 200
STALL_PROGRESS = 1e-6

__all__ = ["STIFF_METHODS", "StiffDriver", "dual_jacobian", "inverse_map_slope"]

STIFF_METHODS = ("radau", "bdf", "lsoda")


def dual_jacobian(field, tau: float | Tensor, z: Tensor) -> Tensor:
    """Jacobian ∂(dz/dτ)/∂z of the mirror-flow field at (τ, z), shape `(p, p)`, float64.

    With v(θ) = Σ_i c_i(τ, q(θ)) ∇_θ q_i(θ) the field in primal variables and θ = ∇Φ*(z),
    ∂v/∂z = (∂v/∂θ) · diag(dθ/dz) with dθ/dz = 1/φ″(θ) for a separable Φ. ∂v/∂θ is computed by
    autograd (double backward through the model and the loss weights, e^τ folded in for log-time);
    where 1/φ″(θ) is not finite (p-power with p > 2 at θ_k = 0) the slope of ∇Φ* is taken as a central
    secant of width √ε·max(1, |z_k|).

    Args:
        field: a :class:`~flowsim.flow.MirrorFlowField` (its ``nfe`` is not incremented).
        tau: integration time (log-time s for ``time="log"``).
        z: dual state, shape `(p,)`, float64.

    Returns:
        The Jacobian, shape `(p, p)`, same dtype and device as ``z``.
    """
    pot = field.potential
    tau_t = torch.as_tensor(tau, dtype=z.dtype, device=z.device)
    theta = pot.inverse_mirror_map(z).detach()

    def velocity(th: Tensor) -> Tensor:
        q = field.margins(th)
        c = field.loss_weights(tau_t, q)
        (g,) = torch.autograd.grad(q, th, grad_outputs=c, create_graph=True)
        return g

    with torch.enable_grad():
        J_theta = torch.autograd.functional.jacobian(velocity, theta, vectorize=False)
    return J_theta * inverse_map_slope(pot, theta, z)[None, :]


def inverse_map_slope(pot, theta: Tensor, z: Tensor | None = None) -> Tensor:
    """dθ/dz = 1/φ″(θ) of a separable potential, finite everywhere, shape of ``theta``.

    Where 1/φ″ is not finite (p-power potentials with p > 2 at θ_k = 0, where the inverse mirror map has a
    vertical tangent) it is replaced by the central secant of ∇Φ* of width √ε·max(1, |z_k|) (z = ∇Φ(θ) unless
    given): the slope the integrator resolves at its rounding level. The switching surfaces' rates, error scales
    and the sliding metric use this, so a coordinate sitting at 0 never puts inf or NaN into them. A potential
    whose ``inverse_hessian_finite`` is true (1/φ″ finite at every finite θ: the built-ins but p-power with p > 2)
    is not checked.
    """
    slope = pot.inverse_hessian_diag(theta)
    if getattr(pot, "inverse_hessian_finite", False):  # (a per-call check costs a pass and a host sync)
        return slope
    bad = ~torch.isfinite(slope)
    if bool(bad.any()):
        z = pot.mirror_map(theta) if z is None else z
        h = torch.finfo(theta.dtype).eps ** 0.5 * z.abs().clamp_min(1.0)
        secant = (pot.inverse_mirror_map(z + h) - pot.inverse_mirror_map(z - h)) / (2 * h)
        slope = torch.where(bad, secant, slope)
    return slope


class _PrimalUpdate:
    """Radau's Newton updates applied to θ = ∇Φ*(z) instead of z, for potentials with φ″(0) = 0 (``PPower``,
    p > 2; :class:`~flowsim.solvers.radau_newton.NewtonRadau`'s ``primal``).

    There θ(z) has an infinite slope at z = 0 and the simplified Newton iteration in z, its Jacobian frozen at one
    point, contracts ever slower as a coordinate nears 0 (0.5-1.0 per iterate): a run stalls before the crossing.
    Written for θ, the same linear system is (M/h·S⁻¹ − ∂v/∂θ)·Δθ = −R with S = diag(dθ/dz) at the Jacobian's
    point: its solution is Δθ = S·Δz, Δz the usual increment, and the mismatch Newton sees is
    φ″(θ) − φ″(θ_J), small near 0, instead of 1/φ″ against 1/φ″(θ_J), unbounded there. The stage values are
    then z = ∇Φ(θ + Δθ).
    """

    def __init__(self, pot, dtype, device) -> None:
        self.pot, self.dtype, self.device = pot, dtype, device
        self.slope: np.ndarray | None = None  # dθ/dz at the last Jacobian's point

    def update(self, y: np.ndarray, Z: np.ndarray, dZ: np.ndarray) -> np.ndarray:
        """The stages Z `(3, p)` (offsets from y) after the Newton increment dZ, applied to θ."""
        if self.slope is None:
            return Z + dZ
        pot = self.pot
        w = torch.as_tensor(y + Z, dtype=self.dtype, device=self.device)
        theta = pot.inverse_mirror_map(w) + torch.as_tensor(self.slope * dZ, dtype=self.dtype, device=self.device)
        return pot.mirror_map(theta).cpu().numpy() - y


def _stall_cause(field, y: np.ndarray, method: str = "radau") -> str:
    """Why the stiff solver ``method`` stalls at the dual state ``y``, and what to do, for its failure message."""
    pot = field.potential
    if not getattr(pot, "inverse_hessian_finite", True):
        z = torch.as_tensor(y, dtype=torch.float64)
        theta = pot.inverse_mirror_map(z).abs()
        k = int(torch.argmin(theta))
        if float(theta[k]) <= 1e-4 * float(theta.max()):
            return (
                f"dual coordinate {k} is crossing 0 (z = {float(z[k]):.3g}), where the potential's inverse mirror map "
                "has an infinite slope (φ″(0) = 0, e.g. PPower with p > 2) and the implicit solver's Newton iteration "
                "cannot step across it. Use "
                + ("" if method == "radau" else "method='radau' (its Newton updates go to θ there), ")
                + "PPowerPlusQuadratic(p, λ) or SmoothedHomogeneous(p, λ) (the same ℓp horizon function, φ″(0) > 0), "
                "or method='dopri5' (slow near the crossing)"
            )
    return (
        "the field is likely non-smooth here (ReLU kinks integrated through: use kinks='filippov' with method='radau')"
    )


class StiffDriver(AbstractDriver):
    """An implicit, stiff-stable stepper (scipy Radau IIA order 5, BDF or LSODA) over the whole save grid.

    In log-time s = log(1 + t) the mirror flow is mildly stiff: the mode that relaxes onto the asymptotic
    path w ≈ ŵ log t has eigenvalue ≈ −1 in s for ever, so an explicit Runge–Kutta method is
    stability-limited to steps of O(1) in s (dopri5: dt ≈ 3.3) and needs RHS evaluations linear in log t.
    An A-/L-stable implicit method is limited only by accuracy; the solution becomes ever smoother in s
    (polynomial in s plus decaying exponentials), so its steps grow with s and the work to reach log t = S
    grows like log S. The Jacobian is exact (:func:`dual_jacobian`, autograd), dense `(p, p)`: meant for
    small and medium p (a few hundred parameters).

    The driver steps scipy's solver classes one step at a time, saves grid points from the solver's dense
    output (grid points are never forced to be step ends, except the last), counts accepted steps, RHS and
    Jacobian evaluations, LU decompositions and non-finite evaluations, and enforces ``max_steps``.

    Args:
        method: "radau" (default choice; order 5, L-stable), "bdf" (variable order 1–5) or "lsoda"
            (automatic stiff/non-stiff switching, Fortran ODEPACK).
        rtol, atol: tolerances on the dual state z.
        max_steps: total budget of accepted steps.
        options: ``first_step`` (initial step size in τ, e.g. a checkpoint's ``next_dt``) and ``max_step``
            (largest step in τ, default unbounded); other keys raise.

    Raises:
        InvalidParameterError: unknown ``method`` or option.

    References:
        Hairer & Wanner, "Solving Ordinary Differential Equations II: Stiff and Differential-Algebraic
        Problems", Springer 1996 (Radau IIA, stiffness). Virtanen et al., "SciPy 1.0", Nature Methods 2020
        (``scipy.integrate.Radau``/``BDF``/``LSODA``).
    """

    kinks = "naive"  # ReLU kinks are integrated straight through (no events)

    def __init__(self, method: str, rtol: float, atol: float, max_steps: int, options: dict | None = None):
        if method not in STIFF_METHODS:
            raise InvalidParameterError(f"StiffDriver method must be one of {STIFF_METHODS}, got {method!r}")
        opts = dict(options or {})
        unknown = sorted(set(opts) - {"first_step", "max_step"})
        if unknown:
            raise InvalidParameterError(
                f"unknown solver option(s) {unknown} for method {method!r}; valid: ['first_step', 'max_step']"
            )
        self.method = method
        self.rtol = rtol
        self.atol = atol
        self.max_steps = int(max_steps)
        self.options = opts
        self.solver = None
        self.n_accepted = 0
        self.n_jac = 0
        self.n_nonfinite = 0
        self.last_dt: float | None = None
        self._last: tuple[float, Tensor] | None = None
        self._progress_mark: tuple[int, float] | None = None  # (accepted steps, τ) at the window's start

    def integrate(self, field, z0: Tensor, tau_grid: Tensor, save: Callable[[float, Tensor], None]) -> None:
        cls = {"radau": NewtonRadau, "bdf": BDF, "lsoda": LSODA}[self.method]
        dtype, device = z0.dtype, z0.device
        grid = tau_grid.detach().cpu().numpy().astype(np.float64)

        def fun(t: float, y: np.ndarray) -> np.ndarray:
            out = field(torch.as_tensor(t, dtype=dtype, device=device), torch.as_tensor(y, dtype=dtype, device=device))
            out = out.detach().cpu().numpy()
            if not np.all(np.isfinite(out)):
                self.n_nonfinite += 1
            return out

        primal = _PrimalUpdate(field.potential, dtype, device) if self._primal_newton(field) else None

        def jac(t: float, y: np.ndarray) -> np.ndarray:
            self.n_jac += 1
            z = torch.as_tensor(y, dtype=dtype, device=device)
            J = dual_jacobian(field, float(t), z)
            if primal is not None:
                theta = field.potential.inverse_mirror_map(z)
                primal.slope = inverse_map_slope(field.potential, theta, z).cpu().numpy()
            return J.detach().cpu().numpy()

        kwargs = {"rtol": self.rtol, "atol": self.atol, "jac": jac}
        if self.options.get("first_step") is not None:
            kwargs["first_step"] = min(float(self.options["first_step"]), float(grid[-1] - grid[0]))
        if self.options.get("max_step") is not None:
            kwargs["max_step"] = float(self.options["max_step"])
        y0 = z0.detach().cpu().numpy().astype(np.float64)
        self._last = (float(grid[0]), z0.detach().clone())
        if primal is not None:
            kwargs["primal"] = primal
        self.solver = solver = cls(fun, float(grid[0]), y0, float(grid[-1]), **kwargs)
        k = 1
        while k < len(grid):
            t_old = solver.t
            with np.errstate(over="ignore", invalid="ignore"):  # diverging Newton trials are rejected
                message = solver.step()
            if solver.status == "failed":
                raise implicit_failure(self.method, t_old, message, self.n_nonfinite, self.rtol, field.log_time)
            self.n_accepted += 1
            self.last_dt = float(solver.t - t_old)
            self._check_progress(solver.t, field, solver.y)
            y_now = torch.as_tensor(solver.y.copy(), dtype=dtype, device=device)
            if not bool(torch.isfinite(y_now).all()):
                raise NonFiniteField(f"{self.method}: non-finite state at τ = {solver.t:.9g}")
            self._last = (float(solver.t), y_now)
            dense = None
            while k < len(grid) and (grid[k] <= solver.t or solver.status == "finished"):
                if grid[k] == solver.t or (solver.status == "finished" and k == len(grid) - 1):
                    save(float(grid[k]), y_now)
                else:
                    if dense is None:
                        dense = solver.dense_output()
                    save(float(grid[k]), torch.as_tensor(dense(grid[k]), dtype=dtype, device=device))
                k += 1
            if self.monitor is not None:  # after the saves this step passed
                self.monitor(float(solver.t), y_now)
            if self.n_accepted >= self.max_steps and k < len(grid):
                raise MaxStepsReached(f"{self.n_accepted} accepted steps")

    def _primal_newton(self, field) -> bool:
        """Whether radau's Newton updates go to θ (:class:`_PrimalUpdate`): a separable potential with φ″(0) = 0."""
        return self.method == "radau" and not getattr(field.potential, "inverse_hessian_finite", True)

    def _check_progress(self, tau: float, field, y: np.ndarray) -> None:
        """Fail fast where the solver creeps: over the last :data:`STALL_WINDOW` accepted steps τ moved by less than
        :data:`STALL_PROGRESS` (1 + |τ|). On a non-smooth field (ReLU kinks integrated through, a neuron sliding)
        Radau's Newton converges only on ever smaller steps (measured: steps of 1e-9 to 1e-12 in s, ~8 ms each, a
        run of hours) instead of underflowing. So did radau where a dual coordinate crosses 0 under a potential
        with φ″(0) = 0 (:class:`~flowsim.potentials.PPower`, p > 2; its updates now go to θ there,
        :class:`_PrimalUpdate`); the message names such a coordinate if a stall happens there.

        Raises:
            StepFailed: stalled (status ``step_underflow``); the message names the cause found at the state."""
        mark = self._progress_mark
        if mark is None or self.n_accepted - mark[0] >= STALL_WINDOW:
            if mark is not None and abs(tau - mark[1]) < STALL_PROGRESS * (1.0 + abs(tau)):
                raise StepFailed(
                    f"{self.method} stalled at τ = {tau:.9g}: {STALL_WINDOW} accepted steps advanced τ by "
                    f"{abs(tau - mark[1]):.3g} (last step {self.last_dt:.3g}); {_stall_cause(field, y, self.method)}"
                )
            self._progress_mark = (self.n_accepted, tau)

    def last_state(self) -> tuple[float, Tensor] | None:
        """(τ, z) of the last accepted step, or None before the first."""
        return self._last

    def stats(self) -> dict:
        s = self.solver
        h = getattr(s, "h_abs", None) if s is not None else None  # LSODA keeps its step inside ODEPACK
        if s is not None and h is None and getattr(s, "step_size", None) is not None:
            h = s.step_size
        return {
            "n_accepted": self.n_accepted,
            "n_rejected": None,  # scipy does not expose rejected steps
            "last_dt": self.last_dt,
            "next_dt": float(h) if h is not None else self.last_dt,
            "n_jac": self.n_jac,
            "n_lu": int(getattr(s, "nlu", 0) or 0) if s is not None else 0,
            "solver_nfev": int(getattr(s, "nfev", 0) or 0) if s is not None else 0,
            "n_newton_failures": getattr(s, "n_newton_failures", None),  # radau (NewtonRadau) only
            "n_nonfinite_evals": self.n_nonfinite,
        }
