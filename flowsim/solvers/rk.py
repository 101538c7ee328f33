"""Adaptive explicit Runge–Kutta driving: one torchdiffeq solver through the whole save grid.

:class:`SmoothDriver` drives one torchdiffeq adaptive Runge–Kutta solver through the whole grid (its own
step-size control and dense output; the solver is never restarted at save times).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..errors import InvalidParameterError
from ._torchdiffeq import SOLVERS, check_inputs
from .base import AbstractDriver, MaxStepsReached, NonFiniteField

__all__ = [
    "ADAPTIVE_METHODS",
    "STABILITY_STEP",
    "SMOOTH_OPTIONS",
    "CountingField",
    "SmoothDriver",
    "finite_rms_norm",
    "initial_step",
]

ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")

STABILITY_STEP = {"dopri5": 3.5, "dopri8": 6.0, "bosh3": 3.0, "fehlberg2": 2.5, "adaptive_heun": 2.5}
"""Upper bounds on an explicit method's step in log-time s on the asymptotic path (its real stability interval
for eigenvalue −1, rounded up: dopri5 3.3, DOP853 ≈ 5.5, Bogacki–Shampine ≈ 2.5, order-2 methods 2)."""

SMOOTH_OPTIONS = frozenset(
    {"first_step", "min_step", "max_step", "safety", "ifactor", "dfactor", "norm", "dtype", "step_t", "jump_t"}
)
"""The torchdiffeq options :class:`SmoothDriver` accepts (those of its adaptive Runge–Kutta solvers; the step
budget is ``max_steps``, so ``max_num_steps`` is not one of them)."""

# the Filippov driver's own options (flowsim.solvers.filippov.FILIPPOV_OPTIONS), named in the error for smooth runs
_FILIPPOV_ONLY = frozenset(
    {"soft_crossings", "soft_fraction", "soft_cap", "truncated_growth", "event_state", "exact_saves"}
)


def check_smooth_options(method: str, options: dict) -> None:
    """Raises:
    InvalidParameterError: for a key of ``options`` that :class:`SmoothDriver` does not accept (torchdiffeq would
        only warn and ignore it), naming the valid keys; Filippov-only options get their own hint."""
    unknown = sorted(set(options) - SMOOTH_OPTIONS)
    if not unknown:
        return
    filippov = [k for k in unknown if k in _FILIPPOV_ONLY]
    hint = (
        f" {filippov} are options of the Filippov driver (kinks='filippov', ReLU models); this run is integrated "
        "without it (kinks='naive' or a smooth model): drop them."
        if filippov
        else ""
    )
    raise InvalidParameterError(
        f"unknown solver option(s) {unknown} for method {method!r}; valid: {sorted(SMOOTH_OPTIONS)} (check the "
        f"spelling; the step budget is max_steps).{hint}"
    )


def finite_rms_norm(x: Tensor) -> Tensor:
    """RMS norm (torchdiffeq's default) that is +inf, never NaN, when ``x`` has non-finite entries.

    A trial stage that overflows (e.g. β·sinh(z) of a far-out stage of hyperbolic entropy) then gives an
    error ratio of +inf: the step is rejected and shrunk by the solver's ``dfactor`` instead of turning the
    step size into NaN.
    """
    v = x.pow(2).mean().sqrt()
    return torch.where(torch.isfinite(v), v, torch.full_like(v, float("inf")))


def initial_step(func, t0: Tensor, y0: Tensor, order: int, rtol, atol, cap: float) -> Tensor:
    """Hairer–Nørsett–Wanner's initial step (Solving ODEs I, §II.4), with the trial step capped at ``cap``.

    torchdiffeq's version takes a trial step 0.01‖y‖/‖f‖, which is astronomically long when the loss (and
    so the field) is tiny — e.g. a run started near convergence — and in log-time the field grows like
    e^{Δs} over a step Δs, so the trial overflows and the step size comes back as 0. Capping the trial at
    Δs ≤ 1 in log-time (the field's own scale), or at the first save interval in plain time, avoids that.

    Returns:
        the first step, a positive float64 scalar tensor (two field evaluations).
    """
    f0 = func(t0, y0)
    scale = atol + torch.abs(y0) * rtol
    d0 = finite_rms_norm(y0 / scale)
    d1 = finite_rms_norm(f0 / scale)
    h0 = torch.full_like(d0, 1e-6) if (d0 < 1e-5 or d1 < 1e-5) else 0.01 * d0 / d1
    h0 = torch.clamp(h0, max=cap)
    f1 = func(t0 + h0, y0 + h0 * f0)
    d2 = finite_rms_norm((f1 - f0) / scale) / h0
    if not torch.isfinite(d2):
        return (h0 * 1e-3).to(t0.dtype)
    dmax = torch.maximum(d1, d2)
    h1 = torch.clamp(h0 * 1e-3, min=1e-6 * h0) if dmax <= 1e-15 else (0.01 / dmax) ** (1.0 / (order + 1))
    return torch.minimum(100 * h0, torch.clamp(h1, max=cap)).to(t0.dtype)


class CountingField:
    """Wraps a field for torchdiffeq: counts accepted/rejected steps and non-finite evaluations, enforces a
    budget of accepted steps."""

    def __init__(self, field: Callable[[Tensor, Tensor], Tensor], max_steps: int) -> None:
        self.field = field
        self.max_steps = int(max_steps)
        self.n_accepted = 0
        self.n_rejected = 0
        self.n_nonfinite = 0
        self.last_nonfinite_tau: float | None = None
        self.last_dt: float | None = None
        self.monitor: Callable[[float, Tensor], None] | None = None

    def __call__(self, tau: Tensor, z: Tensor) -> Tensor:
        out = self.field(tau, z)
        if not bool(torch.isfinite(out).all()):
            self.n_nonfinite += 1
            self.last_nonfinite_tau = float(tau)
        return out

    def callback_accept_step(self, t0, y0, dt) -> None:
        self.n_accepted += 1
        self.last_dt = float(dt)
        if self.n_accepted >= self.max_steps:
            raise MaxStepsReached(f"{self.n_accepted} accepted steps")
        if self.monitor is not None:
            self.monitor(float(t0), y0)  # the step's start: an accepted state

    def callback_reject_step(self, t0, y0, dt) -> None:
        self.n_rejected += 1


class SmoothDriver(AbstractDriver):
    """One torchdiffeq adaptive solver over the whole save grid (no restarts at save times).

    Args:
        method: one of ``ADAPTIVE_METHODS``.
        rtol, atol: tolerances on the dual state.
        max_steps: total budget of accepted steps.
        options: extra torchdiffeq solver options, keys in :data:`SMOOTH_OPTIONS`.

    Raises:
        InvalidParameterError: an unknown option (torchdiffeq itself would only warn).
    """

    kinks = "naive"  # how ReLU kinks are treated: integrated straight through

    def __init__(self, method: str, rtol: float, atol: float, max_steps: int, options: dict | None = None):
        check_smooth_options(method, dict(options or {}))
        self.method = method
        self.rtol = rtol
        self.atol = atol
        self.max_steps = max_steps
        self.options = dict(options or {})
        self.counting: CountingField | None = None
        self.solver = None

    def integrate(self, field, z0: Tensor, tau_grid: Tensor, save: Callable[[float, Tensor], None]) -> None:
        self.counting = CountingField(field, self.max_steps)
        self.counting.monitor = self.monitor
        opts = dict(self.options)
        opts.setdefault("norm", finite_rms_norm)
        _, func, y0, tt, rtol, atol, method, opts, _, _ = check_inputs(
            self.counting, z0, tau_grid, self.rtol, self.atol, self.method, opts, None, SOLVERS
        )
        opts.setdefault("max_num_steps", 2**31 - 1)
        self.solver = SOLVERS[method](func=func, y0=y0, rtol=rtol, atol=atol, **opts)
        if self.solver.first_step is None:
            cap = 1.0 if field.log_time else float(tt[1] - tt[0])
            self.solver.first_step = initial_step(func, tt[0], y0, self.solver.order, rtol, atol, cap)
        self.solver._before_integrate(tt)
        try:
            for k in range(1, len(tt)):
                save(float(tau_grid[k]), self.solver._advance(tt[k]))
        except AssertionError as e:
            if "underflow in dt" in str(e) and self.counting.n_nonfinite:
                raise NonFiniteField(
                    f"the step size underflowed after {self.counting.n_nonfinite} non-finite field evaluations "
                    f"(last at τ = {self.counting.last_nonfinite_tau:.6g})"
                ) from e
            raise

    def last_state(self) -> tuple[float, Tensor] | None:
        """(τ, z) of the last accepted step, or None before the first."""
        if self.solver is None or not hasattr(self.solver, "rk_state"):
            return None
        return float(self.solver.rk_state.t1), self.solver.rk_state.y1

    def stats(self) -> dict:
        c = self.counting
        return {
            "n_accepted": c.n_accepted if c else 0,
            "n_rejected": c.n_rejected if c else 0,
            "last_dt": c.last_dt if c else None,
            "next_dt": self._next_dt(),
            "n_nonfinite_evals": c.n_nonfinite if c else 0,
        }

    def _next_dt(self) -> float | None:
        """The step the solver would take next (a checkpoint restart's first step), None before the first."""
        state = getattr(self.solver, "rk_state", None)
        return float(state.dt) if state is not None else None
