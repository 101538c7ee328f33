"""flowsim's entry point: :func:`simulate` integrates mirror flow and returns a :class:`Trajectory`.

The ODE dz/dτ = Σ_i c_i ∇q_i(∇Φ*(z)) (see :mod:`flowsim.flow`) is integrated with torchdiffeq's adaptive
Runge–Kutta solvers in float64, by default in log-time s = log(1 + t). The solver is driven one save
interval at a time (torchdiffeq's own stepping and dense output), so that

* RHS evaluations, accepted and rejected steps are counted (torchdiffeq keeps no statistics);
* its bare ``assert`` failures ("underflow in dt", non-finite state) become a :class:`Status` with a
  message, and a failed or interrupted (Ctrl-C) run returns — and saves, if ``out`` is given — the
  trajectory computed so far, including the last accepted solver state.

References:
    Chen, Rubanova, Bettencourt & Duvenaud, "Neural Ordinary Differential Equations", NeurIPS 2018
    (torchdiffeq). Dormand & Prince, "A family of embedded Runge–Kutta formulae", 1980 (dopri5).
"""

from __future__ import annotations

import time as _time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .analysis.diagnostics import compute_diagnostics
from .data import Dataset
from .errors import HorizonError, InvalidParameterError
from .flow import TIME_MODES, MirrorFlowField
from .losses import AbstractLoss
from .models import AbstractModel
from .potentials import AbstractPotential
from .problem import num_threads, prepare_problem
from .results.stream import SaveProgress
from .results.trajectory import Status, Trajectory, environment_metadata
from .solvers import ADAPTIVE_METHODS, STIFF_METHODS, MaxStepsReached, NonFiniteField, StepFailed
from .solvers.select import check_tolerances, make_driver
from .timegrid import check_grid, log_t_from_s, s_from_log_t, save_grid, t_from_s

__all__ = ["simulate", "ADAPTIVE_METHODS", "STIFF_METHODS"]


def _time_grid(time: str, log_t_end, save_log_t, n_save, log_t_start) -> np.ndarray:
    """Save grid in log-time s (validated)."""
    if save_log_t is not None:
        lt = np.asarray(save_log_t, dtype=np.float64)
        s = s_from_log_t(lt)
        if lt.ndim == 1 and lt.size and lt[0] == -np.inf:
            s[0] = 0.0
        elif lt.ndim == 1 and lt.size:
            s = np.concatenate([[0.0], s])  # the run always starts at t = 0
        s = check_grid(s)
    else:
        if log_t_end is None:
            raise HorizonError("give a horizon: log_t_end (natural log of the final time t), e.g. 20.0")
        s = save_grid(float(log_t_end), n_save, log_t_start)
    if time == "linear" and s[-1] > np.log(1e15):
        raise HorizonError(
            f"plain time cannot reach log t = {float(np.log(np.expm1(s[-1]))):.4g}: float64 spacing near t would "
            "exceed the step size. Use time='log' (log-time s = log(1+t)), which reaches any horizon."
        )
    return s


def _run_driver(driver, field, z0: torch.Tensor, tau: torch.Tensor, save) -> tuple[Status, str]:
    """Run ``driver.integrate`` and turn its failures (torchdiffeq asserts, scipy failures) into a status."""
    status, message = Status.SUCCESS, Status.SUCCESS.hint
    try:
        driver.integrate(field, z0, tau, save)
    except KeyboardInterrupt:
        status, message = Status.INTERRUPTED, Status.INTERRUPTED.hint
    except MaxStepsReached as e:
        status, message = Status.MAX_STEPS, f"{Status.MAX_STEPS.hint} ({e})"
    except NonFiniteField as e:
        status, message = Status.NONFINITE, f"{Status.NONFINITE.hint} ({e})"
    except StepFailed as e:  # scipy's implicit solvers: step size below float spacing
        status, message = Status.STEP_UNDERFLOW, f"{Status.STEP_UNDERFLOW.hint} ({e})"
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
        message = f"{status.hint} (torchdiffeq: {text[:300]})"
    except (RuntimeError, FloatingPointError, OverflowError) as e:
        status, message = Status.FAILED, f"{Status.FAILED.hint} ({type(e).__name__}: {str(e)[:300]})"
    return status, message


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
) -> Trajectory:
    """Integrate mirror flow d/dt ∇Φ(θ) = −∇L(θ) from θ₀ to a log-time horizon.

    Args:
        model: an L-homogeneous :class:`~flowsim.models.AbstractModel`.
        data: a :class:`~flowsim.data.Dataset` or an ``(X, y)`` pair (`(n, d)`, `(n,)`, labels ±1).
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
            Jacobian, :class:`~flowsim.integrate.StiffDriver`): in log-time the flow is mildly stiff and
            explicit methods need RHS evaluations linear in log t, implicit ones about logarithmic — use
            "radau" beyond log t ≈ 1e3.
        rtol, atol: solver tolerances on the dual state z (relative to its scale).
        max_steps: budget of accepted steps for the whole run (torchdiffeq's own limit is per interval).
        solver_options: extra torchdiffeq options (e.g. ``{"first_step": 1e-3}``).
        diagnostics: compute margins, norms, balance etc. at save times (:mod:`flowsim.diagnostics`).
        active_threshold: a neuron is active if its mass is ≥ this fraction of the largest mass.
        threads: torch threads during the run; "auto" uses 1 for small problems (op overhead dominates).
        device: torch device for the run, or "auto" (CUDA when present and n·p is large enough to gain,
            else CPU; :func:`flowsim.device.resolve_device`). Default: the data's device (CPU).
        kinks: handling of ReLU kinks (switching surfaces of models with ``has_kinks``): "naive"
            integrates straight through them; "filippov" locates switching events and integrates sliding
            modes (:mod:`flowsim.kinks`; two-layer and deep ReLU nets); "auto" (default) picks "filippov" for
            two-layer (leaky-)ReLU models and one-hidden-layer deep ReLU models, "naive" otherwise (deeper ReLU
            nets: see :func:`flowsim.kinks.auto_filippov`).
        progress: True: a tqdm progress bar on log t; or a callable ``progress(log_t, nfe)`` called after every
            saved state (its log t, RHS evaluations so far; one that raises is warned about once and dropped).
        out: directory to save the trajectory to (also on failure or interruption). Save points are
            **streamed** there as they come (memory-mapped ``.npy`` rows, :mod:`flowsim.stream`), so memory
            does not grow with their number; the returned trajectory's arrays are memory-mapped.
        checkpoint_every: with ``out``: save points between atomic checkpoints (default 50; 0 = none).
            At each checkpoint the solver restarts from the saved state with its next step size, so a
            resumed run repeats the uninterrupted run's arithmetic exactly.
        resume: with ``out``: continue from ``out``'s last checkpoint (after a crash, Ctrl-C or SIGKILL)
            instead of starting over; the configuration must match the stored one (see
            :func:`flowsim.resume`, which rebuilds it from ``out``).

    Returns:
        A :class:`~flowsim.trajectory.Trajectory`; ``status`` says how the run ended. A run that fails or
        is interrupted returns what it computed so far (save times reached, plus the last accepted state).

    Raises:
        InvalidParameterError: unknown method/potential/loss, bad tolerances, wrong ``theta0`` shape.
        HorizonError: horizon or save grid not finite / not increasing, or too long for plain time.
        InvalidDataError: bad data (labels not ±1, NaN/inf, shape mismatch).

    References:
        Jacobs & Montúfar, arXiv 2605.19458 (2026); Pesme, Dragomir & Flammarion, NeurIPS 2024 (mirror flow).
    """
    if time not in TIME_MODES:
        raise InvalidParameterError(f"time must be one of {TIME_MODES}, got {time!r}")
    if method not in ADAPTIVE_METHODS + STIFF_METHODS:
        raise InvalidParameterError(
            f"method {method!r} is not an adaptive solver; choose an explicit torchdiffeq method "
            f"{ADAPTIVE_METHODS} or an implicit (stiff) scipy method {STIFF_METHODS} for long log-time horizons"
        )
    check_tolerances(rtol, atol)
    if int(max_steps) < 1:
        raise InvalidParameterError(f"max_steps must be ≥ 1, got {max_steps}")
    prob = prepare_problem(
        model, data, potential, loss, theta0=theta0, init_scale=init_scale, seed=seed, device=device, threads=threads
    )
    pot, loss_fn, dataset, X, y, theta0_t, threads = (
        prob.potential,
        prob.loss,
        prob.dataset,
        prob.X,
        prob.y,
        prob.theta0,
        prob.threads,
    )
    dev = prob.device
    s_grid = _time_grid(time, log_t_end, save_log_t, n_save, log_t_start)

    driver = make_driver(model, kinks, method, rtol, atol, max_steps, solver_options)
    config = {
        "model": model.config(),
        "potential": {"name": pot.name, **pot.params()},
        "loss": loss_fn.name,
        "data": {"name": dataset.name, "n": dataset.n, "d": dataset.d, **dict(dataset.info)},
        "solver": {
            "kinks": driver.kinks,
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
    field = MirrorFlowField(model, pot, loss_fn, X, y, time=time)
    z0 = pot.mirror_map(theta0_t)
    tau_grid = s_grid if time == "log" else t_from_s(s_grid)

    if out is not None:  # stream rows to disk, checkpoint, resume (flowsim.stream)
        from .results.stream import run_streamed

        spec = {
            "model": model.config(),
            "potential": config["potential"],
            "data_name": dataset.name,
            "data_info": dict(dataset.info),
            "kwargs": {
                "loss": loss_fn.name,
                "log_t_end": log_t_end,
                "n_save": n_save,
                "log_t_start": log_t_start,
                "save_log_t": None if save_log_t is None else np.asarray(save_log_t, dtype=np.float64).tolist(),
                "init_scale": init_scale,
                "seed": seed,
                "time": time,
                "method": method,
                "rtol": rtol,
                "atol": atol,
                "max_steps": int(max_steps),
                "solver_options": dict(solver_options or {}),
                "diagnostics": diagnostics,
                "active_threshold": active_threshold,
                "kinks": kinks,
                "checkpoint_every": checkpoint_every,
            },
        }
        data_arrays = {"X": X.cpu().numpy(), "y": y.cpu().numpy()}
        if theta0 is not None:
            data_arrays["theta0"] = theta0_t.cpu().numpy()
        with num_threads(threads):
            return run_streamed(
                out=out,
                make_driver=lambda opts, budget: make_driver(model, kinks, method, rtol, atol, budget, opts),
                run_driver=_run_driver,
                field=field,
                z0=z0,
                tau_grid=np.asarray(tau_grid, dtype=np.float64),
                time=time,
                config=config,
                spec=spec,
                data_arrays=data_arrays,
                model=model,
                potential=pot,
                loss=loss_fn,
                X=X,
                y=y,
                solver_options=solver_options,
                diagnostics=diagnostics,
                active_threshold=active_threshold,
                progress=progress,
                checkpoint_every=checkpoint_every,
                resume=resume,
            )

    saved_tau: list[float] = [float(tau_grid[0])]
    saved_z: list[torch.Tensor] = [z0.detach().clone()]
    bar: SaveProgress | None = None

    def save(tau: float, z: torch.Tensor) -> None:
        saved_tau.append(tau)
        saved_z.append(z.detach().clone())
        if bar is not None:
            bar.update(tau, field.nfe)

    status, message = Status.SUCCESS, Status.SUCCESS.hint
    start = _time.perf_counter()
    with num_threads(threads):
        try:
            if progress:
                bar = SaveProgress(progress, len(tau_grid) - 1, 0, time)
            status, message = _run_driver(
                driver, field, z0, torch.as_tensor(tau_grid, dtype=torch.float64, device=dev), save
            )
        finally:
            if bar is not None:
                bar.close()
        # keep the last accepted solver state of a run that stopped early
        last = driver.last_state() if status != Status.SUCCESS else None
        if last is not None and last[0] > saved_tau[-1] and bool(torch.isfinite(last[1]).all()):
            saved_tau.append(last[0])
            saved_z.append(last[1].detach().clone())
        wall = _time.perf_counter() - start

        tau_arr = np.asarray(saved_tau, dtype=np.float64)
        s_arr = tau_arr if time == "log" else np.log1p(tau_arr)
        z_all = torch.stack(saved_z)
        theta_all = pot.inverse_mirror_map(z_all)
        diags: dict[str, np.ndarray] = {}
        if diagnostics:
            diags = compute_diagnostics(model, pot, loss_fn, X, y, theta_all, s_arr, active_threshold=active_threshold)
    stats = {
        "nfe": field.nfe,
        **driver.stats(),
        "wall_time": wall,
        "final_log_t": float(log_t_from_s(s_arr[-1])),
    }
    traj = Trajectory(
        s=s_arr,
        theta=theta_all.detach().cpu().numpy(),
        z=z_all.detach().cpu().numpy(),
        diagnostics=diags,
        stats=stats,
        status=status,
        message=message,
        config=config,
        metadata=environment_metadata(),
    )
    return traj
