"""Run an experiment configuration (preset or TOML): one simulate() per potential, a summary, plots.

This is the layer behind ``flowsim run``; the core (potentials, models, losses, flow, solve) never
imports it.
"""

from __future__ import annotations

import csv
import gc
import json
import math
import multiprocessing
import os
import re
import signal
import sys
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import Dataset, load_dataset
from ..device import SMALL_PROBLEM_WORK
from ..errors import ConfigError, InvalidParameterError
from ..models import AbstractModel, get_model
from ..potentials import AbstractPotential, get_potential
from ..results.trajectory import Trajectory
from ..simulation import simulate

__all__ = ["ExperimentResult", "run_experiment", "summary_rows", "format_table", "SUMMARY_COLUMNS"]

SUMMARY_COLUMNS = (
    "label",
    "status",
    "final_log_t",
    "log_loss",
    "normalized_margin",
    "q_margin",
    "active_neurons",
    "balance_drift",
    "nfe",
    "wall_time_s",
)


@dataclass
class ExperimentResult:
    """Trajectories of one experiment (one per potential), its summary rows and output directory; ``skipped``:
    the labels of runs not run (or stopped before they started) after a Ctrl-C."""

    config: dict[str, Any]
    dataset: Dataset
    labels: list[str]
    trajectories: list[Trajectory]
    rows: list[dict[str, Any]]
    out: Path | None
    skipped: list[str] = field(default_factory=list)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "run"


def _label(pot_cfg: dict[str, Any]) -> str:
    if "label" in pot_cfg:
        return str(pot_cfg["label"])
    params = ", ".join(f"{k}={v}" for k, v in pot_cfg.items() if k != "name")
    return f"{pot_cfg['name']}({params})" if params else str(pot_cfg["name"])


def summary_rows(labels: list[str], trajectories: list[Trajectory]) -> list[dict[str, Any]]:
    """One summary row per trajectory (final values of the diagnostics, stats)."""
    rows = []
    for label, tr in zip(labels, trajectories, strict=True):
        d = tr.diagnostics

        def last(key: str, d=d) -> float:
            v = d.get(key)
            return float(np.asarray(v)[-1]) if v is not None and len(v) else float("nan")

        drift = d.get("balance_drift")
        rows.append(
            {
                "label": label,
                "status": tr.status.value,
                "final_log_t": float(tr.log_t[-1]),
                "log_loss": last("log_loss"),
                "normalized_margin": last("normalized_margin"),
                "q_margin": last("q_margin"),
                "active_neurons": int(last("active_neurons")) if "active_neurons" in d else "",
                "balance_drift": float(np.max(drift)) if drift is not None and len(drift) else "",
                "nfe": int(tr.stats.get("nfe", 0)),
                "wall_time_s": float(tr.stats.get("wall_time", float("nan"))),
            }
        )
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """Fixed-width text table of summary rows."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}" if np.isfinite(v) else str(v)
        return str(v)

    cells = [[fmt(r[c]) for c in SUMMARY_COLUMNS] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(SUMMARY_COLUMNS)]
    line = "  ".join(c.ljust(w) for c, w in zip(SUMMARY_COLUMNS, widths, strict=True))
    out = [line, "-" * len(line)]
    out += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(out)


def run_experiment(
    config: dict[str, Any],
    out: str | Path | None = None,
    *,
    progress: bool = False,
    log=print,
    resume: bool = False,
    workers: int | str = "auto",
) -> ExperimentResult:
    """Run every potential of a validated configuration (see :mod:`flowsim.config`).

    The potentials' runs are independent; with ``workers`` > 1 they run concurrently, one worker process per
    run (at most ``workers`` at a time), each rebuilding data, model and potential from the configuration.
    Results are the same as one after another (bitwise: same thread counts, same arithmetic) and keep the
    configuration's order.

    Args:
        config: a validated configuration (from :func:`flowsim.config.get_preset` or ``load_config``).
        out: output directory: ``<label>/`` trajectories, ``summary.csv``, ``summary.txt``,
            ``config.json`` and PNG plots. None writes nothing.
        progress: progress bars on log t (one run at a time only; worker processes show none).
        log: a print-like function for progress lines.
        resume: continue each run from its last checkpoint in ``out/<label>/`` (``flowsim run --resume``);
            finished runs are reloaded as they are.
        workers: worker processes, ``"auto"`` (default) or an int ≥ 1. ``"auto"`` is one process per run (up to
            2 per CPU core: run times are not known in advance) when the problem is small (n·p ≤
            :data:`flowsim.device.SMALL_PROBLEM_WORK`, where a run uses one thread) and the data are on the CPU,
            else 1. An int N > 1 runs min(N, runs) processes, each
            with one thread for small problems, else CPU cores // N threads. 1 runs the potentials one after
            another in this process. Sweeps (list values, :func:`flowsim.config.is_sweep`) ignore it. Worker
            processes are forked on Linux when CUDA is not initialized and every worker runs one thread (a
            forked child using OpenMP threads after its parent did can hang), else spawned (scripts that call
            this need an ``if __name__ == "__main__":`` guard then). When the worker processes outnumber the
            CPU cores, a run more than one unit of log t ahead of another running one lowers its own priority
            (``os.nice(10)``, once; :class:`_YieldWhenAhead`), so that the runs behind get the cores.

    Returns:
        an :class:`ExperimentResult`. Runs that fail keep their partial trajectories and statuses. On Ctrl-C,
        one after another: the interrupted run is kept and the remaining potentials are skipped; in worker
        processes: every running run is interrupted and kept (workers get the SIGINT too), the runs not yet
        started are skipped (``skipped``; a worker still starting up when Ctrl-C comes runs to its end or is
        listed there). A SIGINT to the parent alone skips the runs not started and waits for the running ones.

    Raises:
        ConfigError: when the data, model or potential arguments in the configuration are invalid (before any
            run starts).
        InvalidParameterError: when ``workers`` is neither "auto" nor an int ≥ 1.
        Exception: the first error (in configuration order) raised inside a worker process, or
            ``BrokenProcessPool`` when a worker process died, re-raised after the other runs were collected
            and the summary and plots written for them.
    """
    if workers != "auto" and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise InvalidParameterError(
            f'workers must be "auto" or an integer ≥ 1 (flowsim run --workers N), got {workers!r}'
        )
    dataset, model = _build(config)
    out_dir = Path(out) if out is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(json.dumps(config, indent=2, default=str))
    from .config import is_sweep

    if is_sweep(config):  # lists of values: one batched ensemble (flowsim.ensemble)
        labels, trajs = _run_sweep(config, model, dataset, out_dir, progress=progress, log=log)
        return _finish(config, model, dataset, labels, trajs, out_dir)
    potentials = [_potential(pot_cfg) for pot_cfg in config["potentials"]]  # validates them all first
    labels = [_label(pot_cfg) for pot_cfg in config["potentials"]]
    subs = [out_dir / _slug(label) if out_dir is not None else None for label in labels]
    cores = _cpu_cores()
    small = dataset.n * model.num_params <= SMALL_PROBLEM_WORK
    if workers == "auto":
        # one process per run (up to 2 per core): run times are not known in advance, and the OS sharing the
        # cores keeps a long run listed last from waiting for the others
        workers = min(len(labels), 2 * cores) if small and dataset.X.device.type == "cpu" else 1
    workers = min(workers, len(labels))
    if workers > 1:
        return _run_parallel(
            config,
            model,
            dataset,
            labels,
            subs,
            out_dir,
            workers=workers,
            threads=1 if small else max(1, cores // workers),
            resume=resume,
            log=log,
        )
    done_labels, trajs = [], []
    for label, potential, sub in zip(labels, potentials, subs, strict=True):
        log(f"[flowsim] {label}: {model!r} on {dataset.name} (n={dataset.n}, d={dataset.d})")
        tr = _run_one(config, model, dataset, potential, progress=progress, out=sub, resume=resume)
        log(f"[flowsim]   {_outcome(tr)}")
        done_labels.append(label)
        trajs.append(tr)
        if tr.status.value == "interrupted":
            log("[flowsim] interrupted: partial results kept; skipping the remaining potentials")
            break
    result = _finish(config, model, dataset, done_labels, trajs, out_dir)
    result.skipped = labels[len(done_labels) :]
    return result


def _build(config: dict[str, Any]) -> tuple[Dataset, AbstractModel]:
    """The data set and model of a configuration (``[data]``, ``[model]``; input_dim from the data)."""
    data_cfg = dict(config["data"])
    try:
        dataset = load_dataset(data_cfg.pop("name"), **data_cfg)
    except TypeError as e:
        raise ConfigError(f"[data]: {e}") from e
    model_cfg = dict(config["model"])
    model_cfg.setdefault("input_dim", dataset.d)
    try:
        model = get_model(model_cfg.pop("name"), **model_cfg)
    except TypeError as e:
        raise ConfigError(f"[model]: {e}") from e
    return dataset, model


def _potential(pot_cfg: dict[str, Any]) -> AbstractPotential:
    """The potential of one ``[[potentials]]`` table."""
    params = {k: v for k, v in pot_cfg.items() if k not in ("name", "label")}
    try:
        return get_potential(pot_cfg["name"], **params)
    except TypeError as e:
        raise ConfigError(f"[[potentials]] {pot_cfg['name']}: {e}") from e


def _outcome(tr: Trajectory) -> str:
    return f"{tr.status.value}: log t = {tr.log_t[-1]:.4g}, nfe = {tr.stats['nfe']}, {tr.stats['wall_time']:.1f} s"


def _run_one(
    config: dict[str, Any], model, dataset, potential, *, progress: bool, out, resume: bool, threads="auto"
) -> Trajectory:
    """One potential's run: :func:`simulate`, or mirror descent for ``[solver] method = "md"``."""
    if config["solver"]["method"] == "md":  # discrete mirror descent (flowsim.discrete)
        return _run_discrete(config, model, dataset, potential, progress=progress, out=out, threads=threads)
    return simulate(
        model,
        dataset,
        potential,
        loss=config["flow"]["loss"],
        time=config["flow"]["time"],
        log_t_end=config["horizon"]["log_t_end"],
        n_save=config["horizon"]["n_save"],
        log_t_start=config["horizon"]["log_t_start"],
        init_scale=config["init"]["scale"],
        seed=config["init"]["seed"],
        method=config["solver"]["method"],
        rtol=config["solver"]["rtol"],
        atol=config["solver"]["atol"],
        max_steps=config["solver"]["max_steps"],
        kinks=config["solver"].get("kinks", "auto"),
        solver_options=config["solver"].get("options"),
        threads=threads,
        progress=progress,
        out=out,
        resume=resume,
    )


def _cpu_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the platform has one, else os.cpu_count())."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


_NICE_LEAD = 1.0  # log-t units another run must be behind before a worker yields (see _YieldWhenAhead)
_SHARED_LOG_T = None  # in a worker process: the runs' current log t (NaN: not running), when runs outnumber cores


def _worker_init(shared) -> None:
    """Worker process start: SIGINT ignored until its run starts (see _worker_run); the shared progress array."""
    global _SHARED_LOG_T
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _SHARED_LOG_T = shared


class _YieldWhenAhead:
    """Progress hook of a worker process while runs outnumber the CPU cores.

    Publishes the run's log t at every save; once another running run is more than :data:`_NICE_LEAD` behind in
    log t (or has not saved yet), this process lowers its own priority (``os.nice(10)``, once): the cores then go
    to the runs that are behind, likely the longest ones (longest-processing-time-first, with progress in log t
    as the estimate of the work left). Measured on the main job (3 runs, 2 cores): gradient flow and hyperbolic
    entropy yield at their first save (log t = −3), and the smoothed p = 3 run, the longest, then gets 80-90% of a
    core. A run that yields wrongly only loses CPU share while runs outnumber cores.
    """

    def __init__(self, shared, index: int, cores: int) -> None:
        self.shared, self.index, self.cores = shared, index, cores
        self.yielded = False

    def __call__(self, log_t: float, nfe: int) -> None:
        self.shared[self.index] = log_t
        if self.yielded:
            return
        others = [self.shared[k] for k in range(len(self.shared)) if k != self.index]
        running = [v for v in others if not math.isnan(v)]
        if len(running) + 1 > self.cores and any(v < log_t - _NICE_LEAD for v in running):
            self.yielded = True
            try:
                os.nice(10)
            except OSError:  # (a platform that refuses: the run goes on at its priority)
                pass


def _worker_run(
    config: dict[str, Any],
    pot_cfg: dict[str, Any],
    out,
    resume: bool,
    threads: int,
    interruptible: bool,
    index: int = 0,
    cores: int = 1,
) -> Trajectory:
    """A worker process's run: rebuild data, model and potential from the configuration, run, return it.

    With ``interruptible`` (the parent does not ignore SIGINT), Ctrl-C (SIGINT, ignored by the worker until
    here) interrupts the run, which keeps what it computed; None when it came before the run started.
    ``index``: the run's slot in the shared progress array (:class:`_YieldWhenAhead`, when the parent set one up).
    """
    torch.set_num_threads(threads)  # before any torch op: a forked child must not reuse its parent's OpenMP pool
    if hasattr(signal, "pthread_sigmask"):  # blocked by the parent while it started this process
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    shared = _SHARED_LOG_T
    try:
        if interruptible:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        dataset, model = _build(config)
        potential = _potential(pot_cfg)
        hook = False
        if shared is not None and config["solver"]["method"] != "md":
            shared[index] = -math.inf  # running, no save yet
            hook = _YieldWhenAhead(shared, index, cores)
        return _run_one(config, model, dataset, potential, progress=hook, out=out, resume=resume, threads=threads)
    except KeyboardInterrupt:  # before the run started (simulate itself keeps an interrupted run's results)
        return None
    finally:
        if shared is not None:
            shared[index] = math.nan


def _run_parallel(config, model, dataset, labels, subs, out_dir, *, workers: int, threads: int, resume, log):
    """Run the potentials in worker processes, at most ``workers`` at a time (see :func:`run_experiment`).

    Each run has a one-process :class:`ProcessPoolExecutor` of its own, so that a worker process that dies
    takes only its own run down (a shared pool terminates all its workers when one dies).
    """
    fork = sys.platform.startswith("linux") and not torch.cuda.is_initialized() and threads == 1
    ctx = multiprocessing.get_context("fork" if fork else "spawn")
    each = f"{threads} torch thread{'s' if threads > 1 else ''} each"
    log(f"[flowsim] {len(labels)} runs in {workers} worker processes ({ctx.get_start_method()}, {each})")
    interruptible = signal.getsignal(signal.SIGINT) is not signal.SIG_IGN
    todo = list(range(len(labels)))
    running: dict[Future, tuple[int, ProcessPoolExecutor]] = {}
    trajs: dict[int, Trajectory] = {}
    errors: dict[int, BaseException] = {}
    interrupted = False
    skipped: list[int] = []
    mask = hasattr(signal, "pthread_sigmask")
    plots = out_dir is not None and config.get("output", {}).get("plots", True)
    preload: threading.Thread | None = None
    cores = _cpu_cores()
    shared = None
    if workers > cores and hasattr(os, "nice"):  # runs outnumber cores: the ones ahead in log t yield
        shared = ctx.Array("d", [math.nan] * len(labels), lock=False)
    while running or (todo and not interrupted):
        try:
            # SIGINT is blocked while a worker starts: a Ctrl-C inside submit() (after the fork, before the pool's
            # manager thread runs) left a worker waiting for its task forever; it arrives at the unblock instead
            if mask:
                signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
            try:
                while todo and not interrupted and len(running) < workers:
                    i = todo.pop(0)
                    log(f"[flowsim] {labels[i]}: {model!r} on {dataset.name} (n={dataset.n}, d={dataset.d})")
                    pool = ProcessPoolExecutor(1, mp_context=ctx, initializer=_worker_init, initargs=(shared,))
                    args = (config, config["potentials"][i], subs[i], resume, threads, interruptible, i, cores)
                    # everything alive at the fork is frozen for the child's garbage collector: a forked child that
                    # collected an executor the parent had dropped ran its weakref callback, which takes a lock the
                    # parent's manager thread held at the fork — a deadlock (seen once in the test suite, in a
                    # worker formatting an exception's traceback)
                    gc.freeze()
                    try:
                        running[pool.submit(_worker_run, *args)] = (i, pool)
                    finally:
                        gc.unfreeze()
            finally:
                if mask:
                    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
            if preload is None and plots and not todo and len(running) < cores:
                # a core is idle (every run started): load matplotlib meanwhile (started after the last fork)
                preload = threading.Thread(target=_preload_plotting, daemon=True)
                preload.start()
            done, _ = wait(running, return_when=FIRST_COMPLETED)
        except KeyboardInterrupt:  # the workers got the SIGINT too: their runs stop and return what they have
            if not interrupted:
                log("[flowsim] interrupted: partial results kept; collecting the running runs, skipping the rest")
            interrupted = True
            continue
        for fut in done:
            i, pool = running.pop(fut)
            if shared is not None:
                shared[i] = math.nan  # not running (also when its process died before saying so)
            pool.shutdown(wait=False)  # wait() is the only blocking call, where Ctrl-C is handled
            try:
                tr = fut.result()
            except BaseException as e:  # raised in the worker (any exception), or BrokenProcessPool: it died
                errors[i] = e
                log(f"[flowsim]   {labels[i]}: failed in its worker process: {type(e).__name__}: {e}")
                continue
            if tr is None:
                skipped.append(i)
                log(f"[flowsim]   {labels[i]}: interrupted before it started")
                continue
            trajs[i] = tr
            log(f"[flowsim]   {labels[i]}: {_outcome(tr)}")
    if preload is not None:
        preload.join()
    order = sorted(trajs)
    if order:  # (none when every run failed)
        result = _finish(config, model, dataset, [labels[i] for i in order], [trajs[i] for i in order], out_dir)
        result.skipped = [labels[i] for i in sorted(skipped + todo)]
    if errors:
        log(f"[flowsim] {len(errors)} run(s) failed; the other runs' results are kept (summary and plots)")
        raise errors[min(errors)]
    if not order:  # every run was interrupted before it started: nothing to summarise
        return ExperimentResult(config, dataset, [], [], [], out_dir, skipped=list(labels))
    return result


def _preload_plotting() -> None:
    """Import matplotlib and draw one throwaway figure (font cache, Agg renderer) while the last runs finish."""
    try:
        from . import plotting

        plotting.warm_up()
    except Exception:  # noqa: BLE001 - only a head start: the plots themselves report any real error
        pass


def _run_sweep(config: dict[str, Any], model, dataset, out_dir, *, progress: bool, log):
    """Run the members of a sweep (:func:`flowsim.config.sweep_members`) through :func:`simulate_ensemble`.

    dopri5 sweeps are one :func:`flowsim.ensemble.simulate_ensemble` call with the configuration's
    ``[solver] kinks``: without Filippov handling (smooth models, ``kinks = "naive"``) the members are one
    batched computation; under Filippov handling (``"filippov"``, or ``"auto"`` on two-layer ReLU models) they
    are run one by one (the event-driven driver cannot share steps across members). Other flow methods run
    the members one by one with :func:`simulate`. The log line says which path is used. Each member is saved
    to ``out/<label>/``.
    """
    from ..ensemble import Member, resolve_kinks, simulate_ensemble
    from .config import sweep_members

    members = sweep_members(config)
    solver = config["solver"]
    if solver["method"] == "md":
        raise ConfigError('sweeps run mirror flow; [solver] method = "md" cannot be swept (list values given)')
    kinks = solver.get("kinks", "auto")
    labels = [m["label"] for m in members]
    common = {
        "loss": config["flow"]["loss"],
        "time": config["flow"]["time"],
        "log_t_end": config["horizon"]["log_t_end"],
        "n_save": config["horizon"]["n_save"],
        "log_t_start": config["horizon"]["log_t_start"],
        "method": solver["method"],
        "rtol": solver["rtol"],
        "atol": solver["atol"],
        "max_steps": solver["max_steps"],
    }
    if solver["method"] == "dopri5":
        try:
            path = resolve_kinks(model, kinks)
        except InvalidParameterError as e:
            raise ConfigError(f"[solver] kinks: {e}") from e
        if path == "filippov":
            log(
                f"[flowsim] sweep: {len(members)} members one by one with Filippov kink handling (kinks = "
                f'"{kinks}"; not batched: each member has its own switching events)'
            )
        else:
            note = " (ReLU kinks integrated naively)" if model.has_kinks else ""
            log(f"[flowsim] sweep: {len(members)} members as one batched ensemble{note}")
        trajs = simulate_ensemble(model, dataset, [Member(**m) for m in members], kinks=path, device="auto", **common)
    else:
        log(f"[flowsim] sweep: {len(members)} members one by one ({solver['method']} is not batched)")
        trajs = [
            simulate(
                model,
                dataset,
                m["potential"],
                init_scale=m["init_scale"],
                seed=m["seed"],
                kinks=kinks,
                progress=progress,
                **common,
            )
            for m in members
        ]
    for label, tr in zip(labels, trajs, strict=True):
        log(f"[flowsim]   {label}: {tr.status.value}, log t = {tr.log_t[-1]:.4g}, nfe = {tr.stats['nfe']}")
        if out_dir is not None:
            tr.save(out_dir / _slug(label))
    return labels, trajs


def _finish(config, model, dataset, labels, trajs, out_dir) -> ExperimentResult:
    """Summary table (``summary.csv``/``summary.txt``) and plots of an experiment's runs."""
    rows = summary_rows(labels, trajs)
    if out_dir is not None:
        with open(out_dir / "summary.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(SUMMARY_COLUMNS))
            writer.writeheader()
            writer.writerows(rows)
        (out_dir / "summary.txt").write_text(format_table(rows) + "\n")
        if config.get("output", {}).get("plots", True):
            from . import plotting

            plotting.experiment_plots(labels, trajs, model, dataset, out_dir)
    return ExperimentResult(config, dataset, labels, trajs, rows, out_dir)


def _run_discrete(
    config: dict[str, Any], model, dataset, potential, *, progress: bool, out, threads="auto", **overrides
):
    """One mirror-descent run of an experiment (``[solver] method = "md"``) on the experiment's horizon."""
    from ..discrete import mirror_descent

    solver = {**config["solver"], **overrides}
    return mirror_descent(
        model,
        dataset,
        potential,
        loss=config["flow"]["loss"],
        step_size=solver["step_size"],
        schedule=solver.get("schedule", "constant"),
        variant=solver.get("variant", "mirror"),
        rollback=bool(solver.get("rollback", False)),
        log_t_end=config["horizon"]["log_t_end"],
        n_save=config["horizon"]["n_save"],
        log_t_start=config["horizon"]["log_t_start"],
        init_scale=config["init"]["scale"],
        seed=config["init"]["seed"],
        max_steps=solver["max_steps"],
        threads=threads,
        progress=progress,
        out=out,
    )


COMPARE_COLUMNS = (
    "label",
    "log_t",
    "direction_cosine",
    "normalized_margin_flow",
    "normalized_margin_discrete",
    "normalized_margin_diff",
    "q_margin_diff",
    "balance_drift_flow",
    "balance_drift_discrete",
    "active_neurons_flow",
    "active_neurons_discrete",
)


def run_comparison(
    config: dict[str, Any],
    out: str | Path | None = None,
    *,
    step_size: float,
    schedule: str = "constant",
    variant: str = "mirror",
    rollback: bool = False,
    n_rows: int = 6,
    progress: bool = False,
    log=print,
) -> tuple[list[dict[str, Any]], list[str], list[tuple[Trajectory, Trajectory, dict]]]:
    """Flow vs discrete mirror descent for every potential of an experiment (``flowsim compare``).

    Each potential is run by :func:`flowsim.discrete.mirror_descent` on the experiment's horizon, then by
    :func:`simulate` at exactly the discrete run's flow-clock times, so the two are compared at matched t.

    Args:
        config: a validated configuration; its ``[solver]`` tolerances are used for the flow.
        out: output directory: ``<label>/flow``, ``<label>/md`` trajectories, ``compare.csv``,
            ``compare.txt`` and ``compare_<label>.png``; None writes nothing.
        step_size, schedule, variant, rollback: the discrete method (see ``mirror_descent``).
        n_rows: matched times per potential in the table (log-spaced over the saved times, plus the last).
        progress: progress bars; log: a print-like function.

    Returns:
        (table rows with :data:`COMPARE_COLUMNS`, labels, [(flow, discrete, differences)] per potential).

    Raises:
        ConfigError: invalid data, model or potential arguments; InvalidParameterError: bad step size etc.
    """
    from ..discrete import compare_trajectories

    dataset, model = _build(config)
    out_dir = Path(out) if out is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    rows, labels, runs = [], [], []
    method = config["solver"]["method"] if config["solver"]["method"] != "md" else "dopri5"
    for pot_cfg in config["potentials"]:
        potential = _potential(pot_cfg)
        label = _label(pot_cfg)
        sub = out_dir / _slug(label) if out_dir is not None else None
        log(f"[flowsim] {label}: mirror descent ({schedule}, η = {step_size:g}) then the flow at its times")
        md = _run_discrete(
            config,
            model,
            dataset,
            potential,
            progress=progress,
            out=sub / "md" if sub is not None else None,
            step_size=step_size,
            schedule=schedule,
            variant=variant,
            rollback=rollback,
        )
        log(f"[flowsim]   md {md.status.value}: log t = {md.log_t[-1]:.4g}, {md.stats['nfe']} gradient evaluations")
        if len(md) < 2:
            log("[flowsim]   the discrete run stopped at its first step; nothing to compare")
            continue
        fl = simulate(
            model,
            dataset,
            potential,
            loss=config["flow"]["loss"],
            save_log_t=md.log_t[1:],
            init_scale=config["init"]["scale"],
            seed=config["init"]["seed"],
            method=method,
            rtol=config["solver"]["rtol"],
            atol=config["solver"]["atol"],
            progress=progress,
            out=sub / "flow" if sub is not None else None,
        )
        log(f"[flowsim]   flow {fl.status.value}: {fl.stats['nfe']} RHS evaluations")
        k = min(len(fl), len(md))
        if k < len(md):  # the flow stopped early: compare the common prefix
            md = _prefix(md, k)
        diff = compare_trajectories(_prefix(fl, k), md)
        idx = np.unique(np.round(np.geomspace(1, k - 1, max(n_rows - 1, 1))).astype(int).tolist() + [k - 1])
        for i in idx:
            row = {"label": label}
            for c in COMPARE_COLUMNS[1:]:
                v = diff.get(c)
                row[c] = float(v[i]) if v is not None else ""
            rows.append(row)
        labels.append(label)
        runs.append((fl, md, diff))
    if out_dir is not None:
        with open(out_dir / "compare.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(COMPARE_COLUMNS))
            writer.writeheader()
            writer.writerows(rows)
        (out_dir / "compare.txt").write_text(format_compare_table(rows) + "\n")
        from . import plotting

        for label, (fl, md, diff) in zip(labels, runs, strict=True):
            plotting.plot_flow_vs_discrete(label, fl, md, diff, out_dir / f"compare_{_slug(label)}.png")
    return rows, labels, runs


def _prefix(tr: Trajectory, k: int) -> Trajectory:
    from dataclasses import replace

    return replace(
        tr, s=tr.s[:k], theta=tr.theta[:k], z=tr.z[:k], diagnostics={key: v[:k] for key, v in tr.diagnostics.items()}
    )


def format_compare_table(rows: list[dict[str, Any]]) -> str:
    """Fixed-width text table of :func:`run_comparison` rows."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.6g}" if np.isfinite(v) else str(v)
        return str(v)

    cells = [[fmt(r[c]) for c in COMPARE_COLUMNS] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(COMPARE_COLUMNS)]
    line = "  ".join(c.ljust(w) for c, w in zip(COMPARE_COLUMNS, widths, strict=True))
    out = [line, "-" * len(line)]
    out += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(out)
