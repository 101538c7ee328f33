"""Guards of a flow run against hopeless or silently wrong runs: checks made up front, and a run-time monitor.

Up front (:func:`flowsim.simulate` calls these before any integration):

* :func:`check_finite_start` – the dual start z₀ = ∇Φ(θ₀) must be finite (θ₀ itself is checked by
  :func:`flowsim.problem.prepare_problem`; NaN/inf would otherwise end as ``nonfinite`` after the first step,
  or as a bare scipy ``ValueError`` with ``radau``).
* :func:`check_separable` – for models linear in x (:class:`~flowsim.models.Linear`,
  :class:`~flowsim.models.DiagonalLinear`, :class:`~flowsim.models.DeepLinear`) the data must be linearly
  separable through the origin, decided by an LP (:func:`flowsim.data.is_linearly_separable`, HiGHS). On
  non-separable data the margin flow has no limit direction: the margin stays negative, and in log-time the
  field stiffens like e^s, so an explicit solver's cost grows like t. ``allow_nonseparable=True`` opts out.
* :func:`check_explicit_work` – explicit Runge–Kutta methods are stability-limited in log-time s: the mode
  that relaxes onto the asymptotic path has eigenvalue ≈ −1 (or larger) in s for ever, so every step is at most
  the method's real stability interval (dopri5 ≈ 3.3; measured: 3.2–3.4 on a linear model at log t 200–400).
  A horizon whose lower bound of steps exceeds ``max_steps`` is refused; one above :data:`WARN_STEPS` warned.

At run time, :class:`SeparationMonitor` stops a network run whose data are still not separated (min margin ≤ 0)
past a log-time horizon, with status ``not_separable`` and the partial trajectory kept. Once L < ℓ(0) every
margin is positive for good (the loss decreases along the flow; Lyu & Li 2020), and the monitor disarms.

References:
    Lyu & Li, "Gradient Descent Maximizes the Margin of Homogeneous Neural Networks", ICLR 2020.
    Hairer & Wanner, "Solving Ordinary Differential Equations II", Springer 1996, Sec. IV.2 (stability
    domains of explicit Runge–Kutta methods).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .data import Dataset, is_linearly_separable
from .errors import HorizonError, InvalidDataError, InvalidParameterError
from .losses import AbstractLoss
from .models import AbstractModel, DeepLinear, DiagonalLinear, Linear
from .potentials import AbstractPotential
from .solvers.base import NotSeparated
from .solvers.rk import STABILITY_STEP
from .timegrid import log_t_from_s, s_from_log_t

__all__ = [
    "ExplicitWorkMonitor",
    "LINEAR_IN_X",
    "STABILITY_STEP",
    "WARN_STEPS",
    "DEFAULT_SEPARATION_LOG_T",
    "check_finite_start",
    "check_separable",
    "check_separable_starts",
    "explicit_steps_lower_bound",
    "check_explicit_work",
    "SeparationMonitor",
    "BatchedSeparationMonitor",
]

LINEAR_IN_X = (Linear, DiagonalLinear, DeepLinear)
"""Models whose output is linear in x (f = ⟨β(θ), x⟩): separable by them iff linearly separable."""


WARN_STEPS = 100_000
"""Lower bound of explicit steps above which a run is warned about (dopri5: log t ≳ 3.5e5)."""

DEFAULT_SEPARATION_LOG_T = 8.0
"""Default log t by which a network run must have separated the data (t ≈ 3000)."""


def check_all_finite(t: Tensor, what: str, fix: str) -> None:
    """Raises InvalidParameterError naming the count and the first non-finite (NaN/inf) entry of ``t`` `(p,)`,
    as "{what} has k non-finite entries … {fix}"; does nothing when every entry is finite."""
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0, 0])
        raise InvalidParameterError(
            f"{what} has {int(bad.sum())} non-finite entries (NaN/inf) of {t.numel()}; the first is entry {i} "
            f"(value {float(t[i])}). {fix}"
        )


def check_finite_start(z0: Tensor, potential: AbstractPotential, field=None, theta0: Tensor | None = None) -> None:
    """The dual start z₀ = ∇Φ(θ₀) and, given ``field`` and θ₀, the margins at θ₀ must be finite (θ₀ itself is
    checked by :func:`flowsim.problem.prepare_problem`). One forward pass; the field's ``nfe`` is not counted.

    Raises:
        InvalidParameterError: if z₀ has NaN/inf entries (the first one named), e.g. θ₀ outside the potential's
            domain or too large for float64; or if the model's outputs at θ₀ overflow.
    """
    check_all_finite(
        z0,
        f"the dual start z0 = ∇Φ(θ0) of the potential {potential.name!r}",
        "θ₀ is outside the potential's domain or too large for float64: scale θ₀ down (init_scale) or change the "
        "potential.",
    )
    if field is None or theta0 is None:
        return
    with torch.no_grad():
        q = field.margins(theta0)
    if not bool(torch.isfinite(q).all()):
        i = int(torch.nonzero(~torch.isfinite(q))[0, 0])
        raise InvalidParameterError(
            f"the model's outputs at θ₀ are not finite (margin of sample {i}: {float(q[i])}; max |θ₀| = "
            f"{float(theta0.abs().max()):.3g}, max |x| = {float(field.X.abs().max()):.3g}): they overflow float64. "
            "Scale θ₀ down (init_scale) or normalize the data (e.g. max_i ‖x_i‖ = 1)."
        )


def check_separable(
    model: AbstractModel, dataset: Dataset, allow_nonseparable: bool, theta0: Tensor | None = None, potential=None
) -> None:
    """For a model linear in x, refuse data that are not linearly separable through the origin (LP, HiGHS), or
    not by the predictors the flow from ``theta0`` under ``potential`` can reach (:func:`_sign_locked_bounds`).

    Raises:
        InvalidDataError: the data are not separable (that way) and ``allow_nonseparable`` is False; the message
            says why it matters and what to do.
    """
    check_separable_starts(model, dataset, allow_nonseparable, [(theta0, potential)])


def check_separable_starts(
    model: AbstractModel,
    dataset: Dataset,
    allow_nonseparable: bool,
    starts: Sequence[tuple[Tensor | None, Any]],
    names: Sequence[str] | None = None,
) -> None:
    """:func:`check_separable` for several runs on the same model and data (ensemble members, the runs of a
    configuration), each given as ``(theta0, potential)``: one LP for the data, then one per distinct set of sign
    restrictions the starts lock.

    Raises:
        InvalidDataError: as :func:`check_separable`, for the first start refused; its message begins with its name
            from ``names`` (e.g. "member 2 (euclidean scale=1, seed=0): ").
    """
    if allow_nonseparable or not isinstance(model, LINEAR_IN_X):
        return
    if not is_linearly_separable(dataset):
        n_pos = int((dataset.y > 0).sum())
        raise InvalidDataError(
            f"the data {dataset.name!r} (n = {dataset.n}, {n_pos} positive, {dataset.n - n_pos} negative) are not "
            f"linearly separable through the origin (LP by HiGHS: no w with y_i⟨x_i, w⟩ > 0 for all i), so the "
            f"{type(model).__name__} model's margin flow has no limit direction: its minimum margin stays ≤ 0 and "
            "an explicit solver's cost grows like t. Fix: use separable data (flowsim.data.is_linearly_separable(data) "
            "checks; no bias is fitted, so classes must be split by a hyperplane through 0), a nonlinear model "
            "(e.g. flowsim.models.TwoLayerReLU), or pass allow_nonseparable=True to run anyway (then prefer "
            "method='radau')."
        )
    reachable: dict[tuple, bool] = {}
    for i, (theta0, potential) in enumerate(starts):
        bounds = _sign_locked_bounds(model, theta0, potential)
        if bounds is None:
            continue
        if tuple(bounds) not in reachable:
            reachable[tuple(bounds)] = is_linearly_separable(dataset, bounds=bounds)
        if not reachable[tuple(bounds)]:
            locked = sum(b != (None, None) for b in bounds)
            where = "" if names is None else f"{names[i]}: "
            raise InvalidDataError(
                f"{where}{type(model).__name__}'s initial factors are equal in {locked} of {model.input_dim} "
                f"coordinates (e.g. init_mode='constant'); mirror flow keeps them equal (its field is symmetric in "
                "the factors), so those effective weights w_k = u_k^D keep their initial signs, and no such w "
                f"separates the data {dataset.name!r} (LP by HiGHS): the flow's margin stays ≤ 0 and its loss "
                "stalls. Fix: DiagonalLinear(d, init_mode='zero_last') (u = s·1, v = 0: every sign reachable; "
                "CASES C6) or init_mode='gaussian', a theta0 with unequal factors, or allow_nonseparable=True to "
                "run anyway."
            )


def _sign_locked_bounds(model: AbstractModel, theta0: Tensor | None, potential) -> list[tuple] | None:
    """Sign restrictions on a diagonal linear network's effective weights that mirror flow from ``theta0`` keeps.

    Where all D factors of coordinate k are equal at the start and every parameter has the same potential, the
    field gives them equal velocities, so they stay equal: w_k = u_k^D keeps its sign, and stays 0 if it starts
    there (all factors 0 is a fixed point). Returns one ``(lower, upper)`` per coordinate for
    :func:`flowsim.data.is_linearly_separable`, or None where no coordinate is locked (or the model, θ₀ or the
    potential does not allow the argument: a :class:`~flowsim.potentials.BlockPotential` may treat factors
    differently).
    """
    from .potentials import BlockPotential

    if not isinstance(model, DiagonalLinear) or theta0 is None or isinstance(potential, BlockPotential):
        return None
    factors = torch.as_tensor(theta0).detach().reshape(model.depth, model.input_dim).cpu()
    equal = (factors == factors[0]).all(0)
    if not bool(equal.any()):
        return None
    sign = torch.sign(factors.prod(0))
    free, positive, negative, zero = (None, None), (0, None), (None, 0), (0, 0)
    return [
        free if not bool(eq) else (positive if s > 0 else negative if s < 0 else zero)
        for eq, s in zip(equal.tolist(), sign.tolist(), strict=True)
    ]


def explicit_steps_lower_bound(method: str, s_start: float, s_end: float) -> float:
    """A lower bound on the accepted steps of explicit ``method`` from log-time ``s_start`` to ``s_end``.

    Past s ≈ 1 the step is stability-limited to at most :data:`STABILITY_STEP` ``[method]`` (smaller with the
    larger eigenvalues of deeper models: a degree-3 diagonal net measured 1.2).
    """
    h = STABILITY_STEP[method]
    return max(0.0, float(s_end) - max(float(s_start), 1.0)) / h


class ExplicitWorkMonitor:
    """Per accepted step of an explicit method in log-time: warns once when the run's own steps project more than
    :data:`WARN_STEPS` steps to the horizon (``check_explicit_work`` counts Δs ≤ 3.3 up front, a lower bound; the
    data's directions other than the asymptotic relaxation can limit steps far below it: Δs ≈ 0.016 on 20 gaussian
    points, 68,730 steps to log t = 1000 where the bound counts 286).

    Called as ``monitor(τ, z)`` with each accepted step's start (the drivers' per-step monitor); the projection
    uses the median of the last :attr:`WINDOW` step lengths, from s = 1 on.

    Warns:
        RuntimeWarning: naming the step length, the projected steps and ``method="radau"``.
    """

    WINDOW = 200

    def __init__(self, method: str, s_end: float) -> None:
        self.method, self.s_end = method, float(s_end)
        self._last: float | None = None
        self._dts: list[float] = []
        self.warned = False

    def __call__(self, tau: float, z: Tensor) -> None:
        tau = float(tau)
        last, self._last = self._last, tau
        if self.warned or last is None or tau <= last or tau < 1.0:
            return
        self._dts.append(tau - last)
        if len(self._dts) < self.WINDOW:
            return
        dt = float(np.median(self._dts))
        self._dts.clear()
        steps = (self.s_end - tau) / dt
        if steps > WARN_STEPS:
            self.warned = True
            log_t_end = float(log_t_from_s(self.s_end))
            warnings.warn(
                f"the explicit method {self.method!r} steps Δs ≈ {dt:.3g} in log-time here; at that step, reaching "
                f"log_t_end = {log_t_end:.4g} takes about {steps:.3g} more steps (≈ {6 * steps:.2g} field "
                "evaluations). Explicit steps in log-time stop growing at their stability limit, which the data's "
                "fast directions can set far below Δs = 3.3; method='radau' (implicit) is not limited this way.",
                RuntimeWarning,
                stacklevel=2,
            )


def check_explicit_work(method: str, time: str, s_grid: np.ndarray, max_steps: int) -> None:
    """Refuse (or warn about) a log-time horizon that an explicit method cannot reach within ``max_steps``.

    Raises:
        HorizonError: the lower bound of steps exceeds ``max_steps``: the run could never finish; the message
            gives the fix (``method="radau"``), the largest reachable log t and the budget.

    Warns:
        RuntimeWarning: the lower bound exceeds :data:`WARN_STEPS` (hours of work); suggests ``method="radau"``.
    """
    if time != "log" or method not in STABILITY_STEP:
        return
    s_end = float(s_grid[-1])
    steps = explicit_steps_lower_bound(method, float(s_grid[0]), s_end)
    log_t_end = float(log_t_from_s(s_end))
    radau = "method='radau' (implicit; its work grows like the log of log t)"
    if steps > max_steps:
        reach = float(log_t_from_s(1.0 + STABILITY_STEP[method] * max_steps))
        raise HorizonError(
            f"log_t_end = {log_t_end:.4g} is out of reach of the explicit method {method!r}: in log-time its steps "
            f"are stability-limited to Δs ≤ {STABILITY_STEP[method]}, so it needs at least {steps:.3g} steps, more "
            f"than max_steps = {max_steps} (it would stop at max_steps far short of the horizon). Use {radau}, "
            f"or a horizon log_t_end ≤ {reach:.3g}, or raise max_steps."
        )
    if steps > WARN_STEPS:
        warnings.warn(
            f"log_t_end = {log_t_end:.4g} with the explicit method {method!r} takes at least {steps:.3g} steps "
            f"(≈ {steps * 6:.2g} field evaluations: log-time steps are stability-limited to Δs ≤ "
            f"{STABILITY_STEP[method]}); {radau} reaches it in far fewer.",
            RuntimeWarning,
            stacklevel=3,
        )


class SeparationMonitor:
    """Stops a run whose data are still not separated (min margin ≤ 0) at or after log t = ``log_t``.

    Called with (τ, z) of saved states and, for smooth and stiff drivers, of every accepted step. Does nothing
    before the horizon (no cost), and nothing after it has once seen L < ℓ(0) (then every margin is positive for
    good); in between, one forward pass per call. It only reads the state: the run's numerics are unchanged.

    Args:
        field: the run's :class:`~flowsim.flow.MirrorFlowField` (``margins``), potential Φ (θ = ∇Φ*(z)),
        loss: its ℓ (``value_at_zero``, ``log_value``); clock: "log" (τ = s) or "linear" (τ = t);
        log_t: the separation horizon in log t.

    Raises (when called):
        NotSeparated: past the horizon with min margin ≤ 0; the message gives log t, q_min and log L.
    """

    def __init__(self, field, potential: AbstractPotential, loss: AbstractLoss, clock: str, log_t: float) -> None:
        if not (isinstance(log_t, int | float) and not isinstance(log_t, bool) and math.isfinite(log_t)):
            raise InvalidParameterError(f"separation_log_t must be a finite number (log t) or None, got {log_t!r}")
        self.field, self.potential, self.loss = field, potential, loss
        s_h = float(s_from_log_t(np.float64(log_t)))
        self.tau_h = s_h if clock == "log" else float(np.expm1(s_h))
        self.log_t = float(log_t)
        self.log_l0 = math.log(loss.value_at_zero)
        self.armed = True

    def __call__(self, tau: float, z: Tensor) -> None:
        if not self.armed or tau < self.tau_h:
            return
        with torch.no_grad():
            theta = self.potential.inverse_mirror_map(z.detach())
            q = self.field.margins(theta)
            log_L = float(self.loss.log_value(q))
        if log_L < self.log_l0:  # L < ℓ(0): separated, and L only decreases along the flow
            self.armed = False
            return
        q_min = float(q.min())
        if q_min > 0:
            return
        raise NotSeparated(self._message(tau, q_min, log_L))

    def _message(self, tau: float, q_min: float, log_L: float) -> str:
        s = tau if self.field.log_time else float(np.log1p(tau))
        return (
            f"at log t = {float(log_t_from_s(s)):.4g} ≥ separation_log_t = {self.log_t:g} the minimum margin is "
            f"q_min = {q_min:.4g} ≤ 0 and the loss L = {math.exp(log_L):.4g} ≥ ℓ(0) = {self.loss.value_at_zero:.4g}"
        )


class BatchedSeparationMonitor(SeparationMonitor):
    """:class:`SeparationMonitor`'s rule for each member of a batched ensemble (one ``armed`` flag per member).

    Args:
        field: the :class:`~flowsim.ensemble.BatchedMirrorFlowField` (``inverse_mirror_map(z, rows)``, ``model``,
            ``X``, ``y``); loss, clock, log_t: as :class:`SeparationMonitor`; n_members: the batch size K.

    Called with the members' τ `(B,)`, z `(B, p)` and member indices `(B,)` after accepted steps; returns
    ``[(member, message)]`` for members past the horizon with min margin ≤ 0 and L ≥ ℓ(0) (their runs stop with
    status ``not_separable``).
    """

    def __init__(self, field, loss: AbstractLoss, clock: str, log_t: float, n_members: int) -> None:
        super().__init__(field, None, loss, clock, log_t)
        self.armed = torch.ones(n_members, dtype=torch.bool)

    def __call__(self, tau: Tensor, z: Tensor, members: Tensor) -> list[tuple[int, str]]:
        due = self.armed[members.cpu()] & (tau >= self.tau_h).cpu()
        if not bool(due.any()):
            return []
        rows = members[due.to(members.device)]
        with torch.no_grad():
            theta = self.field.inverse_mirror_map(z[due.to(z.device)], rows)
            f, _ = self.field.model.forward_and_vjp(theta, self.field.X)
            q = self.field.y * f  # (B', n)
            log_L = self.loss.log_value(q)
        separated = (log_L < self.log_l0).cpu()  # L < ℓ(0): separated for good
        self.armed[rows.cpu()[separated]] = False
        q_min = q.min(-1).values.cpu()
        bad = ~separated & (q_min <= 0)
        taus = tau[due.to(tau.device)].cpu()
        return [
            (int(rows[r]), self._message(float(taus[r]), float(q_min[r]), float(log_L[r])))
            for r in bad.nonzero().flatten().tolist()
        ]
