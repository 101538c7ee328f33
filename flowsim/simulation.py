"""flowsim's entry point: :func:`simulate` integrates mirror flow and returns a :class:`Trajectory`;
:func:`resume` continues a run streamed to disk.

The ODE dz/dτ = Σ_i c_i ∇q_i(∇Φ*(z)) (see :mod:`flowsim.flow`) is integrated with torchdiffeq's adaptive
Runge–Kutta solvers in float64, by default in log-time s = log(1 + t). The solver is driven one save
interval at a time (torchdiffeq's own stepping and dense output), so that

* RHS evaluations, accepted and rejected steps are counted (torchdiffeq keeps no statistics);
* its bare ``assert`` failures ("underflow in dt", non-finite state) become a :class:`Status` with a
  message, and a failed or interrupted (Ctrl-C) run returns — and saves, if ``out`` is given — the
  trajectory computed so far, including the last accepted solver state.

A run with ``out=DIR`` streams its save points to ``DIR`` (:mod:`flowsim.results.store`). Every
``checkpoint_every`` save points the solver is **restarted** from the state just saved, with the step size it
would have taken next, and an atomic checkpoint is written. Restarting in the uninterrupted run too makes the
computation after a checkpoint independent of what came before it: a run killed at any moment and resumed
with :func:`resume`, ``simulate(..., out=DIR, resume=True)`` or ``flowsim run --resume DIR`` repeats exactly
the same arithmetic and ends with the same trajectory (bit for bit on a deterministic single-threaded CPU run).

References:
    Chen, Rubanova, Bettencourt & Duvenaud, "Neural Ordinary Differential Equations", NeurIPS 2018
    (torchdiffeq). Dormand & Prince, "A family of embedded Runge–Kutta formulae", 1980 (dopri5).
"""

from __future__ import annotations

import json
import os
import time as _time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ._json import jsonable
from .data import Dataset, make_dataset
from .errors import FlowSimError, InvalidParameterError, exception_text, integer_argument
from .flow import MirrorFlowField
from .guards import (
    DEFAULT_SEPARATION_LOG_T,
    LINEAR_IN_X,
    STABILITY_STEP,
    ExplicitWorkMonitor,
    SeparationMonitor,
    check_explicit_work,
    check_finite_start,
    check_separable,
)
from .losses import AbstractLoss
from .models import AbstractModel, get_model
from .potentials import AbstractPotential, get_potential
from .problem import Problem, check_active_threshold, check_solver_arguments, num_threads, prepare_problem
from .results import Status, Trajectory, environment_metadata
from .results.recorder import Recorder, SaveProgress, diagnostics_function
from .results.store import DEFAULT_CHECKPOINT_EVERY, STREAM_DIR, RowStore, RunDirectory, locked_folder
from .results.trajectory import interrupted_message
from .solvers import ADAPTIVE_METHODS, STIFF_METHODS, MaxStepsReached, NonFiniteField, StepFailed
from .solvers.base import NotSeparated
from .solvers.select import make_driver
from .timegrid import log_t_from_s, save_grid_s, t_from_s

__all__ = ["simulate", "resume", "save_grid_s", "ADAPTIVE_METHODS", "STIFF_METHODS"]

DEFAULT_CHECKPOINT_SECONDS = 300.0
"""Wall time (s) after which a streamed run also checkpoints at its next save point (see ``checkpoint_seconds``)."""


def _run_driver(driver, field, z0: torch.Tensor, tau: torch.Tensor, save) -> tuple[Status, str]:
    """Run ``driver.integrate`` and turn its failures (torchdiffeq asserts, scipy failures) into a status."""
    status, message = Status.SUCCESS, Status.SUCCESS.hint
    try:
        driver.integrate(field, z0, tau, save)
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM in flowsim run (flowsim.lab.workers.Terminated: says so)
        status, message = Status.INTERRUPTED, interrupted_message(e)
    except MaxStepsReached as e:
        status, message = Status.MAX_STEPS, f"{Status.MAX_STEPS.hint} ({e})"
    except NotSeparated as e:
        status, message = Status.NOT_SEPARABLE, f"{Status.NOT_SEPARABLE.hint} ({e})"
    except NonFiniteField as e:
        status, message = Status.NONFINITE, f"{Status.NONFINITE.hint} ({e})"
    except StepFailed as e:  # scipy's implicit solvers: step size below float spacing
        status, message = Status.STEP_UNDERFLOW, f"{_underflow_hint(driver, field)} ({e})"
    except AssertionError as e:  # torchdiffeq's failures are bare asserts
        text = str(e)
        if "underflow in dt" in text:
            status = Status.STEP_UNDERFLOW
        elif "non-finite" in text:
            status = Status.NONFINITE
        elif "max_num_steps" in text:
            status = Status.MAX_STEPS
        else:
            status = Status.FAILED
        hint = _underflow_hint(driver, field) if status == Status.STEP_UNDERFLOW else status.hint
        message = f"{hint} (torchdiffeq: {text[:300]})"
    except (RuntimeError, FloatingPointError, OverflowError) as e:
        status, message = Status.FAILED, f"{Status.FAILED.hint} ({exception_text(e)})"
    except ValueError as e:
        if isinstance(e, FlowSimError):  # bad input, said as such by flowsim
            raise
        # scipy's numerical failures (brentq on a NaN, ...): the run keeps what it computed and says why it stopped
        status, message = Status.FAILED, f"{Status.FAILED.hint} ({exception_text(e)})"
    return status, message


def _underflow_hint(driver, field) -> str:
    """:attr:`Status.STEP_UNDERFLOW`'s hint without the advice the run already follows (log-time, exact kinks)."""
    fixes = ["loosen rtol/atol"]
    if not getattr(field, "log_time", True):
        fixes.append("use log-time (time='log')")
    if getattr(driver, "kinks", None) == "naive" and getattr(getattr(field, "model", None), "has_kinks", False):
        fixes.append("use kinks='filippov' (ReLU kinks are integrated through here)")
    return (
        "The solver's step size underflowed (dt too small for the time variable). "
        + (", ".join(fixes[:-1]) + " or " + fixes[-1] if len(fixes) > 1 else fixes[0]).capitalize()
        + "."
    )


@dataclass(frozen=True)
class _DriverFactory:
    """A fresh driver of the run's choice (:func:`flowsim.solvers.select.make_driver`) for given options and
    budget of accepted steps: one per run, or one per segment between checkpoints."""

    model: AbstractModel
    kinks: str
    method: str
    rtol: float
    atol: float
    monitor: SeparationMonitor | None = None
    work: ExplicitWorkMonitor | None = None  # per accepted step only (not at saves)

    def __call__(self, options: dict | None, max_steps: int):
        driver = make_driver(self.model, self.kinks, self.method, self.rtol, self.atol, max_steps, options)
        driver.monitor = self.monitor  # per accepted step (smooth, stiff and Filippov drivers)
        if self.work is not None:
            driver.monitor = self.work if self.monitor is None else _both(self.monitor, self.work)
        return driver


def _both(first, second):
    """A per-step monitor calling ``first`` then ``second``."""

    def monitor(tau: float, z: torch.Tensor) -> None:
        first(tau, z)
        second(tau, z)

    return monitor


def _max_steps_message(n_accepted, max_steps: int, method: str | None = None) -> str:
    """The ``max_steps`` status message, counting the accepted steps of the whole run (all segments); for an
    explicit method it points to radau."""
    hint = "" if method in STIFF_METHODS else "; for long log-time horizons method='radau' needs far fewer"
    return (
        f"{Status.MAX_STEPS.hint} ({int(n_accepted or 0)} accepted steps in the run, max_steps = {int(max_steps)}"
        f"{hint})"
    )


def _monitored(save, monitor: SeparationMonitor | None):
    """``save`` followed by the separation monitor on the saved state (the row is kept when it raises)."""
    if monitor is None:
        return save

    def save_and_check(tau: float, z: torch.Tensor) -> None:
        save(tau, z)
        monitor(tau, z)

    return save_and_check


def simulate(
    model: AbstractModel,
    data: Dataset | tuple,
    potential: str | AbstractPotential | dict = "euclidean",
    *,
    loss: str | AbstractLoss = "exponential",
    log_t_end: float | None = 10.0,
    n_save: int = 200,
    log_t_start: float | None = None,
    save_log_t: Any = None,
    theta0: Any = None,
    init_scale: float = 1.0,
    seed: int = 0,
    time: str = "log",
    method: str = "dopri5",
    rtol: float = 1e-8,
    atol: float = 1e-10,
    max_steps: int = 5_000_000,
    solver_options: dict | None = None,
    diagnostics: bool = True,
    active_threshold: float = 1e-2,
    threads: int | str | None = "auto",
    device: str | torch.device | None = None,
    kinks: str = "auto",
    progress: bool | Callable[[float, int], None] = False,
    out: str | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    allow_nonseparable: bool = False,
    separation_log_t: float | None = DEFAULT_SEPARATION_LOG_T,
    checkpoint_seconds: float | None = DEFAULT_CHECKPOINT_SECONDS,
) -> Trajectory:
    """Integrate mirror flow d/dt ∇Φ(θ) = −∇L(θ) from θ₀ to a log-time horizon.

    Args:
        model: an L-homogeneous :class:`~flowsim.models.AbstractModel`.
        data: a :class:`~flowsim.data.Dataset` or an ``(X, y)`` pair (`(n, d)`, `(n,)`; labels ±1, or any two
            distinct values, the larger mapped to +1: :func:`flowsim.data.make_dataset`).
        potential: a potential object, a name ("euclidean", "hyperbolic_entropy", ...) or a dict
            ``{"name": ..., **params}``.
        loss: "exponential" (default) or "logistic", or a loss object. L = Σ_i ℓ(q_i) (sum convention).
        log_t_end: horizon as **log t** (natural log of time t); e.g. 1000 means t = e^1000.
        n_save: number of save times (t = 0 plus points uniform in log t from ``log_t_start``).
        log_t_start: first nonzero save time in log t (default min(−3, log_t_end − 1)).
        save_log_t: explicit save times in log t, shape `(k,)`, strictly increasing (overrides the grid;
            t = 0 is prepended unless the first entry is −inf).
        theta0: initial parameters, shape `(p,)`; default ``model.init(scale=init_scale, seed=seed)``.
        init_scale: initialization scale passed to ``model.init``.
        seed: initialization seed (explicit generator; global RNG untouched).
        time: "log" (integrate in s = log(1+t), default; any horizon) or "linear" (plain t, t ≤ 1e15).
        method: torchdiffeq adaptive solver, one of ``ADAPTIVE_METHODS`` (default dopri5), or an implicit
            stiff solver, one of ``STIFF_METHODS`` ("radau", "bdf", "lsoda"; scipy with an autograd
            Jacobian, :class:`~flowsim.solvers.StiffDriver`): in log-time the flow is mildly stiff and
            explicit methods need RHS evaluations linear in log t, implicit ones about logarithmic — use
            "radau" beyond log t ≈ 1e3. "radau" keeps exact kinks where ``kinks`` resolves to "filippov"
            (:class:`~flowsim.solvers.filippov.ImplicitFilippovDriver`); "bdf" and "lsoda" integrate through
            them. "auto": dopri5 until its steps stop growing (their stability limit in log-time), then radau,
            both with the run's kink handling (:class:`~flowsim.solvers.AutoDriver`).
        rtol, atol: solver tolerances on the dual state z (relative to its scale).
        max_steps: budget of accepted steps for the whole run (torchdiffeq's own limit is per interval).
        solver_options: extra torchdiffeq options (e.g. ``{"first_step": 1e-3}``).
        diagnostics: compute margins, norms, balance etc. at save times (:mod:`flowsim.analysis.diagnostics`).
        active_threshold: a neuron is active if its mass is ≥ this fraction of the largest mass.
        threads: torch threads during the run; "auto" uses 1 for small problems (op overhead dominates).
        device: torch device for the run, or "auto" (CUDA when present and n·p is large enough to gain,
            else CPU; :func:`flowsim.device.resolve_device`). Default: the data's device (CPU).
        kinks: handling of ReLU kinks (switching surfaces of models with ``has_kinks``): "naive"
            integrates straight through them; "filippov" locates switching events and integrates sliding
            modes (:mod:`flowsim.solvers.filippov`; two-layer and deep ReLU nets); "auto" (default) picks "filippov" for
            two-layer (leaky-)ReLU models and deep ReLU models, "naive" otherwise
            (:func:`flowsim.solvers.filippov.auto_filippov`).
        progress: True: a tqdm progress bar on log t; or a callable ``progress(log_t, nfe)`` called after every
            saved state (its log t, RHS evaluations so far; one that raises is warned about once and dropped).
        out: directory to save the trajectory to (also on failure or interruption). Save points are
            **streamed** there as they come (memory-mapped ``.npy`` rows, :mod:`flowsim.results.store`), so memory
            does not grow with their number; the returned trajectory's arrays are memory-mapped.
        checkpoint_every: with ``out``: save points between atomic checkpoints (default 50; 0 = none).
            At each checkpoint the solver restarts from the saved state with its next step size, so a
            resumed run repeats the uninterrupted run's arithmetic exactly.
        resume: with ``out``: continue from ``out``'s last checkpoint (after a crash, Ctrl-C or SIGKILL)
            instead of starting over; the configuration must match the stored one (see
            :func:`resume`, which rebuilds it from ``out``).
        allow_nonseparable: run on data the model cannot separate. By default a model linear in x
            (Linear, DiagonalLinear, DeepLinear) refuses data that an LP finds not linearly separable through the
            origin, and a network run is stopped (status ``not_separable``) when its data are still not separated
            at ``separation_log_t`` (:mod:`flowsim.guards`).
        separation_log_t: log t by which a network run must have separated the data (min margin > 0), else it
            ends with status ``not_separable``, its trajectory so far kept; None: no check.
        checkpoint_seconds: with ``out``: also write a checkpoint at the first save point after this many seconds
            of wall time without one (None or 0: only every ``checkpoint_every`` save points; none when that is
            0). Such a checkpoint does not restart the solver, so the run's numerics are unchanged; a run resumed
            from it restarts there (same tolerances, not bit-identical to the uninterrupted run).

    Returns:
        A :class:`~flowsim.results.Trajectory`; ``status`` says how the run ended. A run that fails or
        is interrupted returns what it computed so far (save times reached, plus the last accepted state).

    Raises:
        InvalidParameterError: unknown method/potential/loss/solver option, bad tolerances, wrong ``theta0``
            shape, NaN/inf in ``theta0`` or in ∇Φ(θ₀); a count (``n_save``, ``max_steps``, ``threads``,
            ``checkpoint_every``) that is not an integer (5.0 is accepted, 5.5 and "5" are not), or a tolerance or
            ``active_threshold`` that is not a number.
        HorizonError: horizon or save grid not a number, not finite / not increasing, too long for plain time, or
            out of reach of an explicit method in log-time (it would need more than ``max_steps`` steps: use "radau").
        InvalidDataError: bad data (labels with more than two values, NaN/inf, shape mismatch, the same point with
            both labels), or data not linearly separable for a model linear in x (unless ``allow_nonseparable``).

    Warns:
        RuntimeWarning: a log-time horizon that takes an explicit method more than 1e5 steps.

    References:
        Jacobs & Montúfar, arXiv 2605.19458 (2026); Pesme, Dragomir & Flammarion, NeurIPS 2024 (mirror flow).
    """
    rtol, atol, max_steps = check_solver_arguments(time, method, rtol, atol, max_steps)
    check_active_threshold(active_threshold)
    if checkpoint_every is not None:
        checkpoint_every = integer_argument(
            "checkpoint_every", checkpoint_every, "checkpoint_every=50, 0: none", minimum=0
        )
    prob = prepare_problem(
        model, data, potential, loss, theta0=theta0, init_scale=init_scale, seed=seed, device=device, threads=threads
    )
    s_grid = save_grid_s(time, log_t_end, save_log_t, n_save, log_t_start)
    check_explicit_work(method, time, s_grid, max_steps)
    field = MirrorFlowField(model, prob.potential, prob.loss, prob.X, prob.y, time=time)
    monitor = _separation_monitor(model, field, prob, time, allow_nonseparable, separation_log_t)
    work = ExplicitWorkMonitor(method, float(s_grid[-1])) if time == "log" and method in STABILITY_STEP else None
    new_driver = _DriverFactory(model, kinks, method, rtol, atol, monitor, work)
    driver = new_driver(solver_options, max_steps)
    check_separable(model, prob.dataset, allow_nonseparable, prob.theta0, prob.potential)
    config = _run_config(
        model, prob, driver.kinks, method, rtol, atol, max_steps, time, solver_options, s_grid, init_scale, seed, theta0
    )
    z0 = prob.potential.mirror_map(prob.theta0)
    check_finite_start(z0, prob.potential, field, prob.theta0)
    tau_grid = s_grid if time == "log" else t_from_s(s_grid)
    diagnose = (
        diagnostics_function(model, prob.potential, prob.loss, prob.X, prob.y, active_threshold)
        if diagnostics
        else None
    )
    if out is None:
        with num_threads(prob.threads):
            return _record_in_memory(
                driver, field, z0, tau_grid, time, diagnose, progress, prob.potential, config, monitor, max_steps
            )

    spec = {
        "model": model.config(),
        "potential": config["potential"],
        "data_name": prob.dataset.name,
        "data_info": dict(prob.dataset.info),
        "kwargs": {
            "loss": prob.loss.name,
            "log_t_end": log_t_end,
            "n_save": int(n_save),
            "log_t_start": log_t_start,
            "save_log_t": None if save_log_t is None else np.asarray(save_log_t, dtype=np.float64).tolist(),
            "init_scale": init_scale,
            "seed": seed,
            "time": time,
            "method": method,
            "rtol": rtol,
            "atol": atol,
            "max_steps": max_steps,
            "solver_options": dict(solver_options or {}),
            "diagnostics": diagnostics,
            "active_threshold": active_threshold,
            "kinks": kinks,
            "checkpoint_every": checkpoint_every,
            "allow_nonseparable": bool(allow_nonseparable),
            "separation_log_t": separation_log_t,
            "checkpoint_seconds": checkpoint_seconds,
        },
    }
    data_arrays = {"X": prob.X.cpu().numpy(), "y": prob.y.cpu().numpy()}
    if theta0 is not None:
        data_arrays["theta0"] = prob.theta0.cpu().numpy()
    with num_threads(prob.threads), locked_folder(out):  # a file, unwritable or held by another run: an error
        run = _StreamedRun(out, checkpoint_every, resume, config, spec, data_arrays, field, z0, tau_grid, time)
        run.wall_every = _checkpoint_seconds(checkpoint_seconds)
        return run.record(new_driver, solver_options, max_steps, prob.potential, diagnose, progress)


def _separation_monitor(model, field, prob: Problem, time: str, allow_nonseparable: bool, separation_log_t):
    """The run-time separation check of a network run (None for models linear in x: they get the LP up front)."""
    if allow_nonseparable or separation_log_t is None or isinstance(model, LINEAR_IN_X):
        return None
    if not isinstance(prob.loss, AbstractLoss):  # (a margin loss gives ℓ(0) and L; others are not monitored)
        return None
    return SeparationMonitor(field, prob.potential, prob.loss, time, separation_log_t)


def _checkpoint_seconds(value) -> float | None:
    """Raises:
    InvalidParameterError: ``checkpoint_seconds`` not None and not a number ≥ 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise InvalidParameterError(
            f"checkpoint_seconds must be a number of seconds ≥ 0 (0 or None: no wall-time checkpoints), got {value!r}"
        )
    return float(value) or None


def _run_config(
    model, prob: Problem, kinks, method, rtol, atol, max_steps, time, solver_options, s_grid, init_scale, seed, theta0
) -> dict[str, Any]:
    """Everything needed to rerun, stored with the trajectory."""
    pot, dataset = prob.potential, prob.dataset
    return {
        "model": model.config(),
        "potential": {"name": pot.name, **pot.params()},
        "loss": prob.loss.name,
        "data": {"name": dataset.name, "n": dataset.n, "d": dataset.d, **dict(dataset.info)},
        "solver": {
            "kinks": kinks,
            "method": method,
            "rtol": rtol,
            "atol": atol,
            "max_steps": int(max_steps),
            "time": time,
            "options": dict(solver_options or {}),
        },
        "horizon": {"log_t_end": float(log_t_from_s(s_grid[-1])), "n_save": int(s_grid.size)},
        "init": {"scale": init_scale, "seed": seed, "theta0_given": theta0 is not None},
    }


def _record_in_memory(
    driver, field, z0, tau_grid, time: str, diagnose, progress, potential, config, monitor, max_steps: int
) -> Trajectory:
    """One driver over the whole grid, save points kept in memory."""
    recorder = Recorder(potential, clock=time, diagnose=diagnose, count=lambda: field.nfe)
    recorder.save(float(tau_grid[0]), z0, report=False)
    start = _time.perf_counter()
    try:
        if progress:
            recorder.progress = SaveProgress(progress, len(tau_grid) - 1, 0, time)
        tau = torch.as_tensor(tau_grid, dtype=torch.float64, device=z0.device)
        status, message = _run_driver(driver, field, z0, tau, _monitored(recorder.save, monitor))
    finally:
        if recorder.progress is not None:
            recorder.progress.close()
    if status != Status.SUCCESS:
        recorder.keep_last_state(driver.last_state(), report=False)
    if status == Status.MAX_STEPS:
        message = _max_steps_message(driver.stats().get("n_accepted"), max_steps, getattr(driver, "method", None))
    wall = _time.perf_counter() - start
    stats = {"nfe": field.nfe, **driver.stats(), "wall_time": wall, "final_log_t": recorder.final_log_t}
    return recorder.trajectory(status, message, stats, config)


def merge_stats(total: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """Accumulate one driver segment's stats: counts add up, ``last_*``/``next_*`` and non-numbers are replaced."""
    out = dict(total)
    for k, v in part.items():
        if k.startswith(("last_", "next_")) or isinstance(v, bool):
            out[k] = v
        elif isinstance(v, int | float) and isinstance(out.get(k), int | float) and not isinstance(out[k], bool):
            out[k] = out[k] + v
        else:
            out[k] = v
    return out


class _StreamedRun:
    """A run streamed to a directory: segments between checkpoints, each with a fresh driver restarted from the
    state just saved with the step size it would have taken next, and resumption from the last checkpoint.

    Raises:
        InvalidParameterError: resuming a run whose stored configuration
            differs from this call's.
    """

    def __init__(self, out, checkpoint_every, resume, config, spec, data_arrays, field, z0, tau_grid, time) -> None:
        self.every = DEFAULT_CHECKPOINT_EVERY if checkpoint_every is None else checkpoint_every
        self.dir = RunDirectory(out)
        self.dir.path.mkdir(parents=True, exist_ok=True)
        self.config, self.field, self.z0, self.time = config, field, z0, time
        self.tau_grid = np.asarray(tau_grid, dtype=np.float64)
        self.s_grid = self.tau_grid if time == "log" else np.log1p(self.tau_grid)
        self.config_json = json.loads(json.dumps(jsonable(config)))
        self.metadata = environment_metadata()
        self.k, self.z_start, self.stats, self.nfe_prev, self.wall_prev, self.next_dt = (
            0,
            z0.detach().clone(),
            {},
            0,
            0.0,
            None,
        )
        self.fresh = True
        self.wall_every: float | None = None  # seconds between wall-time checkpoints (set by simulate)
        self.driver = None  # the segment's driver (for wall-time checkpoints inside a segment)
        if resume and self.dir.checkpoint_path.exists():
            ck = self.dir.read_checkpoint(self.config_json, data_arrays)
            self.k, self.stats, self.nfe_prev, self.wall_prev, self.next_dt = (
                ck.k,
                ck.stats,
                ck.nfe,
                ck.wall,
                ck.next_dt,
            )
            self.z_start = torch.as_tensor(ck.z, dtype=z0.dtype, device=z0.device)
            self.fresh = False
        else:
            self.dir.start(spec, data_arrays)

    def _recorder(self, potential, diagnose) -> Recorder:
        """The recorder streaming to this directory (a resumed run: after its checkpoint's rows)."""
        N = len(self.tau_grid)
        rows = RowStore(self.dir.path / STREAM_DIR, N + 1, int(self.z0.shape[0]), fresh=self.fresh)
        theta0 = potential.inverse_mirror_map(self.z0.detach()).reshape(1, -1)
        return Recorder(
            potential,
            clock=self.time,
            diagnose=diagnose,
            count=lambda: self.nfe_prev + self.field.nfe,
            stream=self.dir,
            rows=rows,
            n_saved=0 if self.fresh else self.k + 1,
            last=(float(self.tau_grid[self.k]), self.z_start),
            theta0=theta0,
        )

    def record(self, new_driver, solver_options, max_steps: int, potential, diagnose, progress) -> Trajectory:
        """Integrate the remaining segments, checkpointing after each, and return the trajectory."""
        recorder = self._recorder(potential, diagnose)
        if self.fresh:
            recorder.save(float(self.tau_grid[0]), self.z0, report=False)
        status, message = Status.SUCCESS, Status.SUCCESS.hint
        self.t_start = _time.perf_counter()
        self.field.nfe = 0
        N = len(self.tau_grid)
        if progress:
            recorder.progress = SaveProgress(progress, N - 1, self.k, self.time)
        if self.wall_every and self.every > 0:  # (checkpoint_every = 0: no checkpoints at all)
            recorder.wall_every, recorder.on_wall = self.wall_every, lambda: self._wall_checkpoint(recorder)
        save = _monitored(recorder.save, new_driver.monitor)
        driver = None
        try:
            while self.k < N - 1:
                k_end = min(self.k + self.every, N - 1) if self.every > 0 else N - 1
                driver = self.driver = new_driver(
                    self._segment_options(solver_options), max(self._budget(max_steps), 1)
                )
                seg = torch.as_tensor(self.tau_grid[self.k : k_end + 1], dtype=torch.float64, device=self.z0.device)
                status, message = _run_driver(driver, self.field, recorder.last_z.to(self.z0.dtype), seg, save)
                seg_stats = driver.stats()
                self.stats = merge_stats(self.stats, seg_stats)
                if status != Status.SUCCESS:
                    break
                self.k = k_end
                nd = seg_stats.get("next_dt")
                self.next_dt = float(nd) if nd is not None and np.isfinite(nd) and nd > 0 else None
                if self.every > 0:
                    self._checkpoint(recorder)
        except KeyboardInterrupt as e:  # between segments (a driver built, a checkpoint written): as inside one
            status, message = Status.INTERRUPTED, interrupted_message(e)
        finally:
            if recorder.progress is not None:
                recorder.progress.close()
        recorder.on_wall = None  # (a kept last state is no grid point: no checkpoint there)
        if status != Status.SUCCESS and driver is not None:
            recorder.keep_last_state(driver.last_state(), report=True)
        if status == Status.MAX_STEPS:
            message = _max_steps_message(self.stats.get("n_accepted"), max_steps, getattr(driver, "method", None))
        recorder.sync()
        stats = self._total_stats()
        stats["final_log_t"] = recorder.final_log_t
        stats["checkpoint_every"] = self.every
        return recorder.trajectory(status, message, stats, self.config, self.metadata)

    def _segment_options(self, solver_options: dict | None) -> dict:
        """The user's solver options, starting with the step size the previous segment would have taken."""
        opts = dict(solver_options or {})
        if self.next_dt is not None and "first_step" not in opts:
            opts["first_step"] = self.next_dt
        return opts

    def _budget(self, max_steps: int) -> int:
        """Accepted steps left to the run."""
        return max_steps - int(self.stats.get("n_accepted") or 0)

    def _total_stats(self) -> dict[str, Any]:
        wall = self.wall_prev + _time.perf_counter() - self.t_start
        return {"nfe": self.nfe_prev + self.field.nfe, **self.stats, "wall_time": wall}

    def _checkpoint(self, recorder: Recorder) -> None:
        """Make the rows durable, write the checkpoint at grid index k and the metadata as it stands."""
        recorder.sync()
        total = self._total_stats()
        total["final_log_t"] = float(log_t_from_s(self.s_grid[self.k]))
        nfe, wall = total["nfe"], total["wall_time"]
        z = recorder.last_z.detach().cpu().numpy()
        self.dir.write_checkpoint(
            self.k, z, self.tau_grid[self.k], self.next_dt, self.stats, nfe, wall, self.config_json
        )
        done = self.k >= len(self.tau_grid) - 1
        msg = Status.SUCCESS.hint if done else "running or killed: resume with flowsim.resume(DIR)"
        status = Status.SUCCESS if done else Status.INTERRUPTED
        self.dir.write_meta(recorder.n_written, status.value, msg, total, self.config, self.metadata)

    def _wall_checkpoint(self, recorder: Recorder) -> None:
        """A checkpoint at the save point just recorded, inside a segment, after ``wall_every`` seconds without one.

        The running solver is not restarted (the run's numerics are unchanged); a run resumed from here restarts
        the solver at this save point with the step size the driver would take next.
        """
        j = recorder.n_rows - 1  # row j holds grid point j
        if j <= self.k or self.driver is None:
            return
        recorder.sync()
        seg = self.driver.stats()
        stats = merge_stats(self.stats, seg)
        nd = seg.get("next_dt") if seg.get("next_dt") is not None else seg.get("last_dt")
        next_dt = float(nd) if nd is not None and np.isfinite(nd) and nd > 0 else None
        wall = self.wall_prev + _time.perf_counter() - self.t_start
        nfe = self.nfe_prev + self.field.nfe
        z = recorder.last_z.detach().cpu().numpy()
        self.dir.write_checkpoint(j, z, self.tau_grid[j], next_dt, stats, nfe, wall, self.config_json)
        total = {"nfe": nfe, **stats, "wall_time": wall, "final_log_t": float(log_t_from_s(self.s_grid[j]))}
        msg = "running or killed: resume with flowsim.resume(DIR) (wall-time checkpoint)"
        self.dir.write_meta(recorder.n_written, Status.INTERRUPTED.value, msg, total, self.config, self.metadata)


def resume(out: str | os.PathLike, *, progress: bool = False, **overrides: Any) -> Trajectory:
    """Continue a run streamed to ``out`` from its last checkpoint (e.g. after it was killed).

    Rebuilds the model, potential, loss, data and every :func:`simulate` argument from ``out/run.json`` and
    ``out/data.npz`` and calls ``simulate(..., out=out, resume=True)``. A run that had finished is returned as
    it is; one without a checkpoint restarts from t = 0.

    Args:
        out: the run directory given to ``simulate(..., out=...)``.
        progress: tqdm bar on log t.
        **overrides: objects that cannot be rebuilt from JSON (``model=``, ``potential=``, ``loss=``) or
            runtime settings (``threads=``, ``device=``); solver and horizon arguments are fixed by the run.

    Returns:
        The completed (or again failed) :class:`~flowsim.results.Trajectory`.

    Raises:
        TrajectoryFileError: if ``out`` holds no resumable run (no ``run.json``).
        InvalidParameterError: if a built-in object cannot be rebuilt (pass it in ``overrides``).
    """
    run = RunDirectory(out)
    spec, arrays = run.read_run()
    model = overrides.pop("model", None) or get_model(**spec["model"])
    pot_cfg = dict(spec["potential"])
    potential = overrides.pop("potential", None) or get_potential(pot_cfg.pop("name"), **pot_cfg)
    kwargs = dict(spec["kwargs"])
    if "loss" in overrides:
        kwargs["loss"] = overrides.pop("loss")
    if "theta0" in arrays:
        kwargs["theta0"] = arrays["theta0"]
    kwargs.update(overrides)
    data = make_dataset(arrays["X"], arrays["y"], name=spec.get("data_name", "data"), info=spec.get("data_info"))
    return simulate(model, data, potential, out=run.path, resume=True, progress=progress, **kwargs)
