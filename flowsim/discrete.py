"""Discrete mirror descent baselines on flowsim's models, losses and potentials.

Mirror descent (Nemirovski & Yudin 1983; Beck & Teboulle 2003) is the forward-Euler discretisation of
mirror flow in dual coordinates:

    z_{k+1} = z_k − η_k ∇L(θ_k),   θ_k = ∇Φ*(z_k),   L(θ) = Σ_i ℓ(y_i f(θ; x_i)),

with step-size rules ("schedules")

* ``"constant"``: η_k = η;
* ``"loss_normalized"``: η_k = η / L(θ_k) (Lyu & Li 2020's loss-based schedule; optionally with their
  rollback: a step that increases the loss is undone and η halved);
* ``"sup_normalized"``: η_k = η / ‖∇L(θ_k)‖∞, so that every dual step has ‖z_{k+1} − z_k‖∞ = η.

**Flow clock.** The k-th iterate is compared with the flow at time t_k = Σ_{j<k} η_j (the Euler clock);
for normalized schedules t_k grows like e^{k} or faster, so it is kept as log t_k (``logaddexp``) and t is
never formed, as in :func:`flowsim.simulate`. The iterates are saved on a log-spaced grid of the flow
clock (or of the step index when no clock horizon is given), so memory does not grow with the number of
steps, and returned as the same :class:`~flowsim.results.Trajectory` as the flow, with
``s = log(1 + t_k)``.

**Log-space gradients.** −∇L = Σ_i c_i ∇q_i with c_i = −ℓ′(q_i) is computed as e^m · g with
m = max_i log c_i and g = Σ_i exp(log c_i − m) ∇q_i = O(1), so the dual step is
exp(log η_k + m) · g: for the loss-normalized schedule log η_k + m = log η − log L + m = O(1) even when
L = 1e-300 (or e^{-1e5}), exactly as :class:`~flowsim.flow.MirrorFlowField` folds e^s into the exponents.

**Sign-preserving exponentiated gradient** (``variant="eg"``, hyperbolic entropy only): the multiplicative
update θ_{k+1} = θ_k ⊙ exp(−η_k sign(θ_k) ⊙ ∇L(θ_k)) (Kivinen & Warmuth's EG on |θ| with frozen signs).
It is mirror descent for the entropy Σ|θ_k| log|θ_k|, the β → 0 limit of hyperbolic entropy
(asinh(θ/β) ≈ sign(θ) log(2|θ|/β) for |θ| ≫ β): it agrees with hyperbolic-entropy mirror descent while
every |θ_k| ≫ β, but a coordinate can never change sign and a coordinate at 0 stays at 0 forever, where
hyperbolic entropy moves it at rate β. Its η → 0 limit is the flow dθ/dt = −|θ| ∇L, not the
hyperbolic-entropy flow dθ/dt = −√(θ² + β²) ∇L.

**Failure mode: loss-normalized steps with hyperbolic entropy.** With η_k = η/L the dual step is
−η ∇log L, whose size stays O(η) forever, so the iteration is Euler with step η on dz/dτ = −∇log L(∇Φ*(z))
(τ = ∫ L dt). For the Euclidean potential this field has a bounded Lipschitz constant in z (the Hessian of
log-sum-exp ≤ max‖x_i‖² for a linear model). For hyperbolic entropy dθ/dz = √(θ² + β²) ≈ |θ|, so its
Lipschitz constant grows like ‖θ‖∞, which grows exponentially in τ: the fixed dual step is multiplicative
on θ (each coordinate is multiplied by e^{±η·O(1)}), the margins jump by O(η‖θ‖) per step, the softmax
weights p_i ∝ e^{−q_i} jump from one support point to another, and the method becomes an oscillating
multiplicative-weights iteration whose loss goes up and down instead of decreasing. With rollback, every
loss increase halves η, so η shrinks like 1/‖θ‖ and the flow clock stalls. See the README section
"Mirror descent baselines" and ``tests/test_discrete.py`` for the measured behaviour.

References:
    Nemirovski & Yudin, "Problem Complexity and Method Efficiency in Optimization", Wiley, 1983.
    Beck & Teboulle, "Mirror descent and nonlinear projected subgradient methods for convex optimization",
    Operations Research Letters 31(3), 2003.
    Lyu & Li, "Gradient Descent Maximizes the Margin of Homogeneous Neural Networks", ICLR 2020
    (arXiv:1906.05890) — loss-based step sizes η/L with rollback.
    Gunasekar, Lee, Soudry & Srebro, "Characterizing Implicit Bias in Terms of Optimization Geometry",
    ICML 2018 (arXiv:1802.08246) — implicit bias of mirror descent / steepest descent.
    Kivinen & Warmuth, "Exponentiated Gradient versus Gradient Descent for Linear Predictors",
    Information and Computation 132, 1997 (EG±).
"""

from __future__ import annotations

import math
import numbers
import time as _time
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .data import Dataset
from .errors import InvalidParameterError, exception_text, integer_argument, positive_real
from .losses import AbstractLoss
from .models import AbstractModel
from .potentials import AbstractPotential, HyperbolicEntropy
from .problem import check_active_threshold, num_threads, prepare_problem
from .results import Status, Trajectory
from .results.recorder import Recorder, SaveProgress, diagnostics_function

__all__ = ["mirror_descent", "compare_trajectories", "SCHEDULES", "VARIANTS", "DualGradient"]

SCHEDULES = ("constant", "loss_normalized", "sup_normalized")
VARIANTS = ("mirror", "eg")
_LOG2 = math.log(2.0)
_MAX_CONSECUTIVE_ROLLBACKS = 200  # η halved 200 times in a row (×1e-60): report a step underflow


class DualGradient:
    """−∇L(θ) in log-space scaling, −∇L = e^m g, for one model, loss and data set.

    Call it on θ (shape `(p,)`, float64) to get ``(log_L, m, g)``: log L = log Σ_i ℓ(q_i) (a float),
    m = max_i log(−ℓ′(q_i)) (a float) and g = Σ_i exp(log(−ℓ′(q_i)) − m) ∇_θ q_i, shape `(p,)`, which is O(1)
    however small L is. ``nfe`` counts the calls (one forward and one backward pass each).

    Args:
        model: the homogeneous model.
        loss: the margin loss.
        X: inputs `(n, d)`; y: labels `(n,)` ±1, float64, same device.
    """

    def __init__(self, model: AbstractModel, loss: AbstractLoss, X: Tensor, y: Tensor) -> None:
        self.model, self.loss, self.X, self.y = model, loss, X, y
        self.nfe = 0

    def __call__(self, theta: Tensor) -> tuple[float, float, Tensor]:
        self.nfe += 1
        with torch.enable_grad():
            th = theta.detach().requires_grad_(True)
            q = self.y * self.model.forward(th, self.X)
            qd = q.detach()
            log_c = self.loss.log_neg_derivative(qd)
            m = log_c.max()
            (g,) = torch.autograd.grad(q, th, grad_outputs=torch.exp(log_c - m))
        log_L = self.loss.log_value(qd)
        return float(log_L), float(m), g


def _check_args(step_size, schedule, variant, pot, step_growth, diverge) -> tuple[float, float, float]:
    """η, the step growth factor and the divergence factor as floats, after checking the step rule.

    Raises:
        InvalidParameterError: see :func:`mirror_descent`.
    """
    eta = positive_real("step_size", step_size, "step_size=0.1")
    if schedule not in SCHEDULES:
        raise InvalidParameterError(
            f'schedule must be one of {SCHEDULES}, got {schedule!r} ("constant": η_k = η; '
            '"loss_normalized": η/L (Lyu & Li); "sup_normalized": η/‖∇L‖∞)'
        )
    if variant not in VARIANTS:
        raise InvalidParameterError(
            f'variant must be one of {VARIANTS}, got {variant!r} ("mirror": mirror descent in z = ∇Φ(θ); '
            '"eg": sign-preserving exponentiated gradient, hyperbolic entropy only)'
        )
    if variant == "eg" and not isinstance(pot, HyperbolicEntropy):
        raise InvalidParameterError(
            f"variant='eg' (sign-preserving exponentiated gradient) is defined for the hyperbolic entropy "
            f"potential only, got {pot!r}; use variant='mirror' or potential=HyperbolicEntropy(beta)"
        )
    growth = positive_real("step_growth", step_growth, "step_growth=1.1")
    if growth < 1.0:
        raise InvalidParameterError(
            f"step_growth must be ≥ 1 (η is multiplied by it after accepted steps), got {growth}"
        )
    div = positive_real("divergence_log_factor", diverge, "divergence_log_factor=50.0")
    return eta, growth, div


def _check_stopping(n_steps, log_t_end, log_t_start, n_save, max_steps) -> tuple[int | None, int, int]:
    """``n_steps``, ``n_save`` and ``max_steps`` as ints (counts as :func:`flowsim.simulate` takes them: ``5.0`` is
    accepted, ``5.5`` and ``"5"`` are not), after checking the stopping rule and the clock horizon.

    Raises:
        InvalidParameterError: see :func:`mirror_descent`.
    """
    if n_steps is None and log_t_end is None:
        raise InvalidParameterError(
            "give a stopping rule: n_steps (number of steps) and/or log_t_end (log of the flow clock "
            "t = Σ η_k at which to stop), e.g. log_t_end=10.0"
        )
    if n_steps is not None:
        n_steps = integer_argument("n_steps", n_steps, "n_steps=1000", minimum=1)
    if log_t_end is None and log_t_start is not None:
        raise InvalidParameterError(
            f"log_t_start={log_t_start!r} starts the save grid in log t of the clock, which needs log_t_end; with "
            "n_steps only the iterates are saved at log-spaced step indices. Give log_t_end (e.g. log_t_end=10.0) "
            "or drop log_t_start"
        )
    for name, value, example in (("log_t_end", log_t_end, "30.0"), ("log_t_start", log_t_start, "-3.0")):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise InvalidParameterError(f"{name} must be a finite number (log of the flow clock), got {value!r}")
        if not math.isfinite(float(value)):
            raise InvalidParameterError(
                f"{name} must be finite, got {value}; give the time as log t, e.g. {name}={example}"
            )
    n_save = integer_argument("n_save", n_save, "n_save=200: t = 0 and the end at least", minimum=2)
    return n_steps, n_save, integer_argument("max_steps", max_steps, "max_steps=1_000_000", minimum=1)


def mirror_descent(
    model: AbstractModel,
    data: Dataset | tuple,
    potential: str | AbstractPotential | dict = "euclidean",
    *,
    loss: str | AbstractLoss = "exponential",
    step_size: float,
    schedule: str = "constant",
    variant: str = "mirror",
    n_steps: int | None = None,
    log_t_end: float | None = None,
    n_save: int = 200,
    log_t_start: float | None = None,
    theta0: Any = None,
    init_scale: float = 1.0,
    seed: int = 0,
    rollback: bool = False,
    step_growth: float = 1.0,
    max_steps: int = 10_000_000,
    divergence_log_factor: float = 50.0,
    diagnostics: bool = True,
    active_threshold: float = 1e-2,
    threads: int | str | None = "auto",
    device: str | torch.device | None = None,
    progress: bool = False,
    out: str | None = None,
) -> Trajectory:
    """Discrete mirror descent z_{k+1} = z_k − η_k ∇L(θ_k), θ = ∇Φ*(z), with a flow clock t_k = Σ η_j.

    Args:
        model: an L-homogeneous :class:`~flowsim.models.AbstractModel`.
        data: a :class:`~flowsim.data.Dataset` or an ``(X, y)`` pair (`(n, d)`, `(n,)`, labels ±1).
        potential: a potential object, a name or a dict ``{"name": ..., **params}`` (as :func:`simulate`).
        loss: "exponential" (default) or "logistic", or a loss object. L = Σ_i ℓ(q_i) (sum convention).
        step_size: η > 0. Units: flow time t for ``"constant"`` (each step advances the clock by η);
            dual-space length for ``"sup_normalized"`` (‖Δz‖∞ = η); normalized time τ = ∫ L dt for
            ``"loss_normalized"``.
        schedule: "constant", "loss_normalized" (η/L) or "sup_normalized" (η/‖∇L‖∞).
        variant: "mirror" (default) or "eg" (sign-preserving exponentiated gradient; hyperbolic entropy
            only; see the module docstring).
        n_steps: stop after this many accepted steps.
        log_t_end: stop when the flow clock reaches t = e^{log_t_end} (natural log of time t); the last
            step is shortened to land on it exactly. With both ``n_steps`` and ``log_t_end``, whichever
            comes first.
        n_save: number of saved states including t = 0 (and always the final one): on a grid uniform in
            log t from ``log_t_start`` to ``log_t_end``, or, with ``n_steps`` only, log-spaced step indices.
        log_t_start: first nonzero save time in log t (default min(−3, log_t_end − 1)); needs ``log_t_end``.
        theta0: initial parameters, shape `(p,)`; default ``model.init(scale=init_scale, seed=seed)``.
        init_scale, seed: initialization (explicit generator; global RNG untouched).
        rollback: undo a step that increases the loss (or makes it non-finite) and halve η (Lyu & Li);
            rejected steps cost a gradient evaluation and do not advance the clock.
        step_growth: with ``rollback``, multiply η by this factor (≥ 1) after each accepted step
            (Lyu & Li grow their α by r_u > 1; default 1: η only decreases).
        max_steps: budget of accepted + rejected steps; reaching it before ``log_t_end`` ends the run
            with status ``max_steps``.
        divergence_log_factor: stop with status ``diverged`` when log L exceeds log L(θ₀) by this much.
        diagnostics: compute margins, norms, balance etc. at the saved states (:mod:`flowsim.analysis.diagnostics`).
        active_threshold: neuron activity threshold of :func:`~flowsim.analysis.diagnostics.compute_diagnostics`,
            a fraction in [0, 1] of the largest neuron mass.
        threads: torch threads during the run: "auto" (1 for small problems), None or an int ≥ 1.
        device: torch device (default: the data's device).
        progress: tqdm progress bar (one tick per saved state).
        out: directory to save the trajectory to (also on failure or interruption).

    Returns:
        A :class:`~flowsim.results.Trajectory` with ``s = log(1 + t_k)`` of the flow clock at the saved
        iterates, ``theta``/``z`` of shape `(k, p)`, diagnostics, ``stats`` (``nfe`` = gradient
        evaluations, ``n_steps`` accepted steps, ``rollbacks``, ``final_log_step_size`` log η at the end,
        ``wall_time``, ``final_log_t``), ``status`` + ``message``, ``config`` (``config["solver"]["method"]
        == "md"`` with step size, schedule, variant, rollback) and ``metadata``. Failures (non-finite state,
        divergence, step underflow, Ctrl-C) keep everything computed so far, including the last finite
        iterate.

    Raises:
        InvalidParameterError: bad step size, schedule, variant, stopping rule or clock horizon (``log_t_end``,
            ``log_t_start`` not finite numbers), ``theta0`` shape, ``variant="eg"`` with a potential other than
            hyperbolic entropy; a count (``n_steps``, ``n_save``, ``max_steps``, ``threads``) that is not an integer
            (as :func:`flowsim.simulate`: 5.0 is accepted, 5.5 and "5" are not) or is below its minimum, or an
            ``active_threshold`` that is not a number in [0, 1].
        InvalidDataError: the data's dimension does not match the model.

    References:
        Nemirovski & Yudin 1983; Beck & Teboulle, Oper. Res. Lett. 2003; Lyu & Li, ICLR 2020
        (arXiv:1906.05890); Gunasekar et al., ICML 2018 (arXiv:1802.08246).
    """
    if not isinstance(model, AbstractModel):
        raise InvalidParameterError(
            f"model must be a flowsim model (e.g. flowsim.models.Linear(d)), got {type(model).__name__}"
        )
    prob = prepare_problem(
        model, data, potential, loss, theta0=theta0, init_scale=init_scale, seed=seed, device=device, threads=threads
    )
    pot = prob.potential
    eta, growth, diverge = _check_args(step_size, schedule, variant, pot, step_growth, divergence_log_factor)
    n_steps, n_save, max_steps = _check_stopping(n_steps, log_t_end, log_t_start, n_save, max_steps)
    check_active_threshold(active_threshold)
    lt_end = float(log_t_end) if log_t_end is not None else None
    saves = _SaveSchedule(log_t_end, log_t_start, n_save, n_steps)
    config = {
        "model": model.config(),
        "potential": {"name": pot.name, **pot.params()},
        "loss": prob.loss.name,
        "data": {"name": prob.dataset.name, "n": prob.dataset.n, "d": prob.dataset.d, **dict(prob.dataset.info)},
        "solver": {
            "method": "md",
            "step_size": eta,
            "schedule": schedule,
            "variant": variant,
            "rollback": bool(rollback),
            "step_growth": growth,
            "max_steps": int(max_steps),
            "n_steps": None if n_steps is None else int(n_steps),
            "divergence_log_factor": diverge,
        },
        "horizon": {"log_t_end": lt_end, "n_save": int(n_save), "log_t_start": log_t_start},
        "init": {"scale": init_scale, "seed": seed, "theta0_given": theta0 is not None},
    }

    grad = DualGradient(model, prob.loss, prob.X, prob.y)
    it = _Descent(grad, pot, prob.theta0, eta, schedule, variant == "eg", rollback, growth, diverge, lt_end, max_steps)
    diagnose = diagnostics_function(model, pot, prob.loss, prob.X, prob.y, active_threshold) if diagnostics else None
    recorder = Recorder(pot, clock="log_t", diagnose=diagnose, count=lambda: it.k)
    recorder.save(it.log_t, it.z, it.theta, report=False)
    start = _time.perf_counter()
    with num_threads(prob.threads):
        try:
            if progress:
                recorder.progress = SaveProgress(
                    True, int(n_save) - 1, 0, "log_t", desc=f"mirror descent ({schedule})", counter="steps"
                )
            status, message = _iterate(it, recorder, saves, n_steps)
        finally:
            if recorder.progress is not None:
                recorder.progress.close()
        if it.log_t > recorder.last_tau:  # the last (finite) iterate
            recorder.save(it.log_t, it.z, it.theta)
        wall = _time.perf_counter() - start
        stats = {
            "nfe": grad.nfe,
            "gradient_evals": grad.nfe,
            "n_steps": it.k,
            "n_accepted": it.k,
            "n_rejected": it.rollbacks,
            "rollbacks": it.rollbacks,
            "final_log_step_size": it.log_eta,
            "wall_time": wall,
            "final_log_t": recorder.final_log_t,
        }
        traj = recorder.trajectory(status, message, stats, config)
    if out is not None:
        traj.save(out)
    return traj


class _SaveSchedule:
    """When to save an accepted iterate: on a grid uniform in log t of the clock (a clock horizon), or on
    log-spaced step indices (``n_steps`` only); the final iterate is always saved by the caller."""

    def __init__(self, log_t_end, log_t_start, n_save: int, n_steps: int | None) -> None:
        if log_t_end is not None:
            lt_end = float(log_t_end)
            lt0 = min(-3.0, lt_end - 1.0) if log_t_start is None else float(log_t_start)
            if not lt0 < lt_end:
                raise InvalidParameterError(
                    f"log_t_start={log_t_start} must be below log_t_end={log_t_end} (both natural logs of the clock)"
                )
            self.by_clock, self.grid = True, np.linspace(lt0, lt_end, int(n_save) - 1)
        elif int(n_save) - 1 >= int(n_steps):
            self.by_clock, self.grid = False, np.arange(1, int(n_steps) + 1, dtype=np.int64)  # every step
        else:
            self.by_clock = False
            self.grid = np.unique(np.round(np.geomspace(1, int(n_steps), int(n_save) - 1)).astype(np.int64))
        self.next = 0

    def due(self, log_t: float, k: int) -> bool:
        """Whether the iterate at clock log t after k steps reaches the next save point (then passed)."""
        value = log_t if self.by_clock else k
        if not (self.next < self.grid.size and value >= self.grid[self.next]):
            return False
        while self.next < self.grid.size and value >= self.grid[self.next]:
            self.next += 1
        return True


class _Descent:
    """The iterate of mirror descent (z, θ, log L, and −∇L = e^m g at θ), its flow clock log t and step size
    log η, and the step, rollback and divergence rules of :func:`mirror_descent`."""

    def __init__(self, grad, pot, theta, eta, schedule, eg, rollback, growth, diverge, lt_end, max_steps) -> None:
        self.grad, self.pot, self.schedule, self.eg = grad, pot, schedule, eg
        self.rollback, self.growth, self.diverge, self.lt_end, self.max_steps = (
            rollback,
            growth,
            diverge,
            lt_end,
            max_steps,
        )
        self.theta = theta
        self.z = pot.mirror_map(theta)
        self.log_t = -math.inf
        self.log_eta = math.log(eta)
        self.k = 0  # accepted steps
        self.attempts = 0
        self.rollbacks = 0
        self.consecutive = 0

    def start(self) -> None:
        """The loss and gradient at θ₀.

        Raises:
            _Stop: non-finite loss or gradient.
        """
        self.log_L, self.m, self.g = self.grad(self.theta)
        self.log_L0 = self.log_L
        if not (math.isfinite(self.log_L) and bool(torch.isfinite(self.g).all())):
            raise _Stop(Status.NONFINITE, f"the loss or gradient is not finite at θ₀ (log L = {self.log_L})")

    def _log_step_size(self) -> tuple[float, bool]:
        """log η_k of the schedule, shortened to land on the clock horizon (then ``True``)."""
        if self.schedule == "constant":
            log_eta_k = self.log_eta
        elif self.schedule == "loss_normalized":
            log_eta_k = self.log_eta - self.log_L
        else:
            gsup = float(self.g.abs().max())
            if not gsup > 0:
                raise _Stop(
                    Status.FAILED,
                    "the gradient is zero, so the sup-normalized step η/‖∇L‖∞ is undefined "
                    "(a stationary point, e.g. θ₀ = 0 for a two-layer net: use init_scale > 0)",
                )
            log_eta_k = self.log_eta - (self.m + math.log(gsup))
        lt_end, log_t = self.lt_end, self.log_t
        if lt_end is not None and np.logaddexp(log_t, log_eta_k) > lt_end:
            # land exactly on the horizon: η_k = t_end − t_k
            return (lt_end + math.log(-math.expm1(log_t - lt_end)) if log_t > -math.inf else lt_end), True
        return log_eta_k, False

    def _propose(self, log_eta_k: float) -> tuple[Tensor, Tensor]:
        """(z, θ) after the step −η_k ∇L = exp(log η_k + m) g (or the EG update)."""
        x = log_eta_k + self.m
        scale = math.exp(x) if x < 709.0 else math.inf  # −η_k ∇L = scale · g (inf: non-finite step)
        if self.eg:
            theta_new = self.theta * torch.exp(scale * torch.sign(self.theta) * self.g)
            return self.pot.mirror_map(theta_new), theta_new
        z_new = self.z + scale * self.g
        return z_new, self.pot.inverse_mirror_map(z_new)

    def attempt(self) -> bool:
        """One step attempt; returns whether it was accepted (False: rolled back, η halved).

        Raises:
            _Stop: step budget spent, zero gradient (sup-normalized), no loss-decreasing step size, a
                non-finite iterate, or divergence.
        """
        if self.attempts >= self.max_steps:
            raise _Stop(Status.MAX_STEPS, f"{self.attempts} steps (accepted + rejected), log t = {self.log_t:.6g}")
        log_eta_k, last = self._log_step_size()
        z_new, theta_new = self._propose(log_eta_k)
        self.attempts += 1
        finite = bool(torch.isfinite(theta_new).all()) and bool(torch.isfinite(z_new).all())
        if finite:
            log_L_new, m_new, g_new = self.grad(theta_new)
            finite = math.isfinite(log_L_new) and bool(torch.isfinite(g_new).all())
        if self.rollback and (not finite or log_L_new > self.log_L):
            self._roll_back()
            return False
        if not finite:
            raise _Stop(
                Status.NONFINITE,
                f"the iterate became non-finite at step {self.k + 1} (log t = {self.log_t:.6g}); reduce step_size",
            )
        self.consecutive = 0
        self.z, self.theta, self.log_L, self.m, self.g = z_new, theta_new, log_L_new, m_new, g_new
        self.log_t = self.lt_end if last else float(np.logaddexp(self.log_t, log_eta_k))
        self.k += 1
        if self.rollback and self.growth != 1.0:
            self.log_eta += math.log(self.growth)
        if self.log_L > self.log_L0 + self.diverge:
            raise _Stop(
                Status.DIVERGED,
                f"log L grew from {self.log_L0:.4g} to {self.log_L:.4g} by step {self.k} (log t = {self.log_t:.6g})",
            )
        return True

    def _roll_back(self) -> None:
        self.rollbacks += 1
        self.consecutive += 1
        self.log_eta -= _LOG2
        if self.consecutive >= _MAX_CONSECUTIVE_ROLLBACKS:
            raise _Stop(
                Status.STEP_UNDERFLOW,
                f"{self.consecutive} consecutive rollbacks (η halved to e^{self.log_eta:.4g}) at log t = "
                f"{self.log_t:.6g}: no step size decreases the loss",
            )


def _iterate(it: _Descent, recorder: Recorder, saves: _SaveSchedule, n_steps: int | None) -> tuple[Status, str]:
    """Step until ``n_steps`` accepted steps or the clock horizon, saving on the schedule; failures and Ctrl-C
    become a status."""
    try:
        it.start()
        while not ((n_steps is not None and it.k >= n_steps) or (it.lt_end is not None and it.log_t >= it.lt_end)):
            if it.attempt() and saves.due(it.log_t, it.k):
                recorder.save(it.log_t, it.z, it.theta)
    except KeyboardInterrupt:
        return Status.INTERRUPTED, Status.INTERRUPTED.hint
    except _Stop as e:
        return e.status, f"{e.status.hint} ({e.detail})"
    except (RuntimeError, FloatingPointError, OverflowError) as e:
        return Status.FAILED, f"{Status.FAILED.hint} ({exception_text(e)})"
    return Status.SUCCESS, Status.SUCCESS.hint


class _Stop(Exception):
    """Internal: end the iteration with a status (never escapes :func:`mirror_descent`)."""

    def __init__(self, status: Status, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def compare_trajectories(flow: Trajectory, discrete: Trajectory) -> dict[str, np.ndarray]:
    """Differences between a flow and a discrete trajectory saved at the same flow-clock times.

    Run the flow at the discrete run's times, e.g. ``simulate(..., save_log_t=md.log_t[1:])``, so that
    every row compares the two at matched time t (the flow clock t_k = Σ η_j of the discrete run).

    Args:
        flow: a :func:`~flowsim.simulate` trajectory.
        discrete: a :func:`mirror_descent` trajectory with the same save times (log t), shape `(k,)`.

    Returns:
        dict of arrays of shape `(k,)`: ``log_t``; ``direction_cosine`` ⟨θ_f, θ_d⟩/(‖θ_f‖‖θ_d‖) (nan at θ = 0);
        ``direction_error`` ‖θ_f/‖θ_f‖ − θ_d/‖θ_d‖‖₂; ``normalized_margin_flow``/``_discrete``/``_diff``
        (discrete − flow); ``q_margin_flow``/``_discrete``/``_diff``; ``balance_drift_flow``/``_discrete``
        (when the model has hidden neurons); ``active_neurons_flow``/``_discrete`` (two-layer models).

    Raises:
        InvalidParameterError: if the save times differ (relative 1e-9 in log t) or the lengths differ.
    """
    lf, ld = np.asarray(flow.log_t), np.asarray(discrete.log_t)
    if lf.shape != ld.shape or not np.allclose(lf, ld, rtol=1e-9, atol=1e-12, equal_nan=True):
        raise InvalidParameterError(
            f"the trajectories are not saved at the same times ({lf.size} vs {ld.size} saves); run the flow "
            "with simulate(..., save_log_t=discrete.log_t[1:])"
        )
    tf, td = np.asarray(flow.theta), np.asarray(discrete.theta)
    nf, nd = np.linalg.norm(tf, axis=1), np.linalg.norm(td, axis=1)
    ok = (nf > 0) & (nd > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        uf = tf / np.where(ok, nf, 1.0)[:, None]
        ud = td / np.where(ok, nd, 1.0)[:, None]
        cos = np.where(ok, np.sum(uf * ud, axis=1), np.nan)
        err = np.where(ok, np.linalg.norm(uf - ud, axis=1), np.nan)
    out: dict[str, np.ndarray] = {"log_t": ld, "direction_cosine": cos, "direction_error": err}
    for key in ("normalized_margin", "q_margin", "log_loss"):
        a = np.asarray(flow.diagnostics.get(key, np.full(lf.size, np.nan)), dtype=float)
        b = np.asarray(discrete.diagnostics.get(key, np.full(ld.size, np.nan)), dtype=float)
        out[f"{key}_flow"], out[f"{key}_discrete"], out[f"{key}_diff"] = a, b, b - a
    for key in ("balance_drift", "active_neurons"):
        if key in flow.diagnostics and key in discrete.diagnostics:
            out[f"{key}_flow"] = np.asarray(flow.diagnostics[key], dtype=float)
            out[f"{key}_discrete"] = np.asarray(discrete.diagnostics[key], dtype=float)
    return out
