"""Run an experiment configuration (preset or TOML): one simulate() per potential, a summary, plots.

This is the layer behind ``flowsim run`` and ``flowsim compare``; the worker processes that run potentials
concurrently are :mod:`flowsim.lab.workers`.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..data import Dataset
from ..device import SMALL_PROBLEM_WORK
from ..discrete import compare_trajectories, mirror_descent
from ..ensemble import Member, resolve_kinks, simulate_ensemble
from ..errors import ConfigError, InvalidParameterError
from ..potentials import AbstractPotential, get_potential
from ..results import Trajectory
from ..results.store import locked_folder, prepare_out_dir
from ..simulation import simulate
from .checks import build, check_comparison, check_runs, removed_if_left_empty
from .config import flow_arguments, is_sweep, run_options, sweep_groups, sweep_members
from .workers import cpu_cores, progress_hook, run_parallel

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
    the labels of runs not run (or stopped before they started) after a Ctrl-C; ``missing``: the labels of a
    planned sweep's runs with nothing on disk yet (:func:`flowsim.lab.sweep.gather`)."""

    config: dict[str, Any]
    dataset: Dataset
    labels: list[str]
    trajectories: list[Trajectory]
    rows: list[dict[str, Any]]
    out: Path | None
    skipped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def to_pandas(self, trajectories: bool = False):
        """The summary rows as a ``pandas.DataFrame`` (one row per run, :data:`SUMMARY_COLUMNS`), or with
        ``trajectories=True`` every run's :meth:`Trajectory.to_pandas` stacked, with a ``label`` column.

        Raises:
            FlowSimError: pandas is not installed (``pip install "flowsim[frames]"``).
        """
        from ..results.frames import runs_frame, summary_frame

        return runs_frame(self.labels, self.trajectories) if trajectories else summary_frame(self.rows)

    def to_xarray(self):
        """The runs as an ``xarray.Dataset`` with dimensions ``run`` × ``save`` (shorter runs padded with NaN):
        ``log_t`` and the scalar diagnostics per run and save point, the summary columns per run.

        Raises:
            FlowSimError: xarray is not installed (``pip install "flowsim[frames]"``).
        """
        from ..results.frames import runs_dataset

        return runs_dataset(self.labels, self.trajectories, self.rows)


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
    """Run every potential of a validated configuration (see :mod:`flowsim.lab.config`).

    The potentials' runs are independent; with ``workers`` > 1 they run concurrently, one worker process per
    run (at most ``workers`` at a time), each rebuilding data, model and potential from the configuration.
    Results are the same as one after another (bitwise: same thread counts, same arithmetic) and keep the
    configuration's order.

    Args:
        config: a validated configuration (from :func:`flowsim.lab.config.get_preset` or ``load_config``).
        out: output directory: ``<label>/`` trajectories, ``summary.csv``, ``summary.txt``,
            ``config.json`` and PNG plots. None writes nothing. It is checked (a writable folder) and locked
            (:func:`flowsim.results.store.locked_folder`) before any work: a second experiment into it fails.
            Then every run is checked (:func:`check_runs`); a configuration that cannot run leaves the folder as
            it was (a folder created for it is removed again).
        progress: progress on log t: bars when one run runs at a time; with worker processes a line every
            :data:`flowsim.lab.workers.PROGRESS_EVERY` seconds with each running run's log t.
        log: a print-like function for progress lines.
        resume: continue each run from its last checkpoint in ``out/<label>/`` (``flowsim run --resume``);
            finished runs are reloaded as they are.
        workers: worker processes, ``"auto"`` (default) or an int ≥ 1. ``"auto"`` is one process per run (up to
            2 per CPU core: run times are not known in advance) when the problem is small (n·p ≤
            :data:`flowsim.device.SMALL_PROBLEM_WORK`, where a run uses one thread) and the data are on the CPU,
            else 1. An int N > 1 runs min(N, runs) processes, each
            with one thread for small problems, else CPU cores // N threads. 1 runs the potentials one after
            another in this process. Sweeps (list values, :func:`flowsim.lab.config.is_sweep`) ignore it. Worker
            processes are forked on Linux when CUDA is not initialized and every worker runs one thread (a
            forked child using OpenMP threads after its parent did can hang), else spawned (scripts that call
            this need an ``if __name__ == "__main__":`` guard then). When the worker processes outnumber the
            CPU cores, a run more than one unit of log t ahead of another running one lowers its own priority
            (``os.nice(10)``, once; :mod:`flowsim.lab.workers`), so that the runs behind get the cores.

    Returns:
        an :class:`ExperimentResult`. Runs that fail keep their partial trajectories and statuses. On Ctrl-C,
        one after another: the interrupted run is kept and the remaining potentials are skipped; in worker
        processes: every running run is interrupted and kept (the SIGINT is forwarded to the workers, so a
        SIGINT to the parent alone does the same), the runs not yet started are skipped (``skipped``).

    Raises:
        ConfigError, InvalidParameterError, InvalidDataError, HorizonError: a run of the configuration would be
            refused (:func:`check_runs`); raised before anything is written to ``out``, which is left as it was.
        InvalidParameterError: when ``workers`` is neither "auto" nor an int ≥ 1.
        RunFolderError: ``out`` is a file, not writable, or another run holds it (before any run starts).
        Exception: the first error (in configuration order) raised inside a worker process, or
            ``BrokenProcessPool`` when a worker process died, re-raised after the other runs were collected
            and the summary and plots written for them.
    """
    if workers != "auto" and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise InvalidParameterError(
            f'workers must be "auto" or an integer ≥ 1 (flowsim run --workers N), got {workers!r}'
        )
    if config["solver"]["method"] == "md" and run_options(config):  # (flowsim compare gives them to its flow runs)
        keys = ", ".join(run_options(config))
        raise ConfigError(f'{keys}: options of mirror-flow runs, which [solver] method = "md" (mirror descent) lacks')
    if out is None:
        check_runs(config)
        return _run_experiment(config, None, progress=progress, log=log, resume=resume, workers=workers)
    # the folder first (an unusable --out fails before any work), then the runs: one that cannot run leaves it as
    # it was, so that the corrected configuration can use it
    with removed_if_left_empty(out), locked_folder(out, what="experiment") as out_dir:
        check_runs(config)
        if not resume:
            log(f"[flowsim] writing to {out_dir}")
        return _run_experiment(config, out_dir, progress=progress, log=log, resume=resume, workers=workers)


def _run_experiment(config, out_dir: Path | None, *, progress: bool, log, resume: bool, workers) -> ExperimentResult:
    """:func:`run_experiment` in its output folder (prepared and locked)."""
    dataset, model = build(sweep_groups(config)[0][0])  # (the first group's, with a [sweep] table)
    if out_dir is not None:
        (out_dir / "config.json").write_text(json.dumps(config, indent=2, default=str))
    if is_sweep(config):  # lists of values: one batched ensemble (flowsim.ensemble)
        labels, trajs = _run_sweep(config, model, dataset, out_dir, progress=progress, log=log)
        return _finish(config, model, dataset, labels, trajs, out_dir)
    potentials = [_potential(pot_cfg) for pot_cfg in config["potentials"]]  # validates them all first
    labels = [_label(pot_cfg) for pot_cfg in config["potentials"]]
    subs = [out_dir / _slug(label) if out_dir is not None else None for label in labels]
    cores = cpu_cores()
    small = dataset.n * model.num_params <= SMALL_PROBLEM_WORK
    if workers == "auto":
        # one process per run (up to 2 per core): run times are not known in advance, and the OS sharing the
        # cores keeps a long run listed last from waiting for the others
        workers = min(len(labels), 2 * cores) if small and dataset.X.device.type == "cpu" else 1
    workers = min(workers, len(labels))
    if workers > 1:
        return _run_potentials_in_workers(
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
            progress=progress,
        )
    return _run_one_after_another(
        config, model, dataset, labels, potentials, subs, out_dir, progress=progress, resume=resume, log=log
    )


def _run_one_after_another(
    config, model, dataset, labels, potentials, subs, out_dir, *, progress: bool, resume: bool, log
) -> ExperimentResult:
    """Run the potentials in this process in configuration order; a Ctrl-C keeps the interrupted run and skips
    the rest."""
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
        **flow_arguments(config),
        init_scale=config["init"]["scale"],
        seed=config["init"]["seed"],
        kinks=config["solver"].get("kinks", "auto"),
        solver_options=config["solver"].get("options"),
        threads=threads,
        progress=progress,
        out=out,
        checkpoint_every=config.get("output", {}).get("checkpoint_every"),
        resume=resume,
        **run_options(config),
    )


def _run_in_worker(config: dict[str, Any], pot_cfg: dict[str, Any], out, resume: bool, threads: int) -> Trajectory:
    """A worker process's run: rebuild data, model and potential from the configuration, run, return it."""
    dataset, model = build(config)
    potential = _potential(pot_cfg)
    hook = progress_hook() if config["solver"]["method"] != "md" else False
    return _run_one(config, model, dataset, potential, progress=hook, out=out, resume=resume, threads=threads)


def _progress_line(labels: list[str], log):
    """``on_progress`` of :func:`run_parallel`: one line with the log t each running run has reached."""

    def show(log_t: dict[int, float]) -> None:
        parts = [
            f"{labels[i]} {'starting' if v == -np.inf else f'log t = {v:.4g}'}"
            for i, v in sorted(log_t.items())
            if not np.isnan(v)
        ]
        if parts:
            log(f"[flowsim]   progress: {' | '.join(parts)}")

    return show


def _run_potentials_in_workers(
    config, model, dataset, labels, subs, out_dir, *, workers: int, threads: int, resume, log, progress=False
) -> ExperimentResult:
    """Run the potentials in worker processes, at most ``workers`` at a time (see :func:`run_experiment`)."""
    plots = out_dir is not None and config.get("output", {}).get("plots", True)
    runs = run_parallel(
        _run_in_worker,
        [(config, pot_cfg, sub, resume, threads) for pot_cfg, sub in zip(config["potentials"], subs, strict=True)],
        labels,
        workers=workers,
        threads=threads,
        log=log,
        on_start=lambda i: log(f"[flowsim] {labels[i]}: {model!r} on {dataset.name} (n={dataset.n}, d={dataset.d})"),
        on_result=lambda i, tr: log(f"[flowsim]   {labels[i]}: {_outcome(tr)}"),
        when_idle=_preload_plotting if plots else None,
        on_progress=_progress_line(labels, log) if progress else None,
    )
    trajs, errors = runs.results, runs.errors
    order = sorted(trajs)
    if order:  # (none when every run failed)
        result = _finish(config, model, dataset, [labels[i] for i in order], [trajs[i] for i in order], out_dir)
        result.skipped = [labels[i] for i in runs.not_run]
    if errors:
        log(f"[flowsim] {len(errors)} run(s) failed; the other runs' results are kept (summary and plots)")
        raise errors[min(errors)]
    if not order:  # every run was interrupted before it started: nothing to summarise
        return ExperimentResult(config, dataset, [], [], [], out_dir, skipped=list(labels))
    return result


def _preload_plotting() -> None:
    """Import matplotlib and draw one throwaway figure (font cache, Agg renderer) while the last runs finish."""
    try:
        from . import plotting  # (matplotlib: the point of the preload)

        plotting.warm_up()
    except Exception:  # noqa: BLE001 - only a head start: the plots themselves report any real error
        pass


def _run_sweep(config: dict[str, Any], model, dataset, out_dir, *, progress: bool, log):
    """Run a sweep: each group of its ``[sweep]`` table (:func:`flowsim.lab.config.sweep_groups`, with its own
    data set and model; labels prefixed by the group's values) by :func:`_run_sweep_group`, one after another.
    Each member is saved to ``out/<label>/``."""
    labels, trajs = [], []
    for group, prefix in sweep_groups(config):
        if prefix:
            dataset, model = build(group)
            log(f"[flowsim] sweep group {prefix}: {model!r} on {dataset.name} (n={dataset.n}, d={dataset.d})")
        group_labels, group_trajs = _run_sweep_group(group, model, dataset, progress=progress, log=log)
        labels += [f"{prefix} {label}" if prefix else label for label in group_labels]
        trajs += group_trajs
    for label, tr in zip(labels, trajs, strict=True):
        log(f"[flowsim]   {label}: {tr.status.value}, log t = {tr.log_t[-1]:.4g}, nfe = {tr.stats['nfe']}")
        if out_dir is not None:
            tr.save(out_dir / _slug(label))
    return labels, trajs


def _run_sweep_group(config: dict[str, Any], model, dataset, *, progress: bool, log):
    """Run the members of a sweep (:func:`flowsim.lab.config.sweep_members`) through :func:`simulate_ensemble`.

    dopri5 sweeps are one :func:`flowsim.ensemble.simulate_ensemble` call with the configuration's
    ``[solver] kinks``: without Filippov handling (smooth models, ``kinks = "naive"``) the members are one
    batched computation; under Filippov handling (``"filippov"``, or ``"auto"`` on two-layer ReLU models) they
    are run one by one (the event-driven driver cannot share steps across members). Other flow methods run
    the members one by one with :func:`simulate`, and ``method = "md"`` by :func:`flowsim.discrete.mirror_descent`.
    The log line says which path is used.
    """
    members = sweep_members(config)
    solver = config["solver"]
    if solver["method"] == "md":  # discrete mirror descent: the members one by one (flowsim.discrete)
        log(f"[flowsim] sweep: {len(members)} members one by one by mirror descent (η = {solver['step_size']:g})")
        trajs = [
            _run_discrete({**config, "init": {"scale": m["init_scale"], "seed": m["seed"]}}, model, dataset,
                          _potential(m["potential"]), progress=progress, out=None)
            for m in members
        ]  # fmt: skip
        return [m["label"] for m in members], trajs
    kinks = solver.get("kinks", "auto")
    labels = [m["label"] for m in members]
    common = {
        **flow_arguments(config),
        **{k: v for k, v in run_options(config).items() if k != "checkpoint_seconds"},  # (no out: no checkpoints)
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
    return labels, trajs


def _finish(config, model, dataset, labels, trajs, out_dir, rows=None, footer: str = "") -> ExperimentResult:
    """Summary table (``summary.csv``/``summary.txt``; ``rows`` default: :func:`summary_rows`, ``footer``: lines
    after the text table) and plots of an experiment's runs."""
    rows = summary_rows(labels, trajs) if rows is None else rows
    if out_dir is not None:
        with open(out_dir / "summary.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(SUMMARY_COLUMNS))
            writer.writeheader()
            writer.writerows(rows)
        (out_dir / "summary.txt").write_text(format_table(rows) + "\n" + footer)
        if config.get("output", {}).get("plots", True) and trajs:
            from . import plotting  # matplotlib is loaded only when plots are written

            if config.get("sweep"):  # groups with their own data and model: the plots that need neither
                plotting.plot_margins(labels, trajs, out_dir / "margins.png")
                plotting.plot_loss(labels, trajs, out_dir / "loss.png")
            else:
                plotting.experiment_plots(labels, trajs, model, dataset, out_dir)
    return ExperimentResult(config, dataset, labels, trajs, rows, out_dir)


def _run_discrete(
    config: dict[str, Any], model, dataset, potential, *, progress: bool, out, threads="auto", **overrides
):
    """One mirror-descent run of an experiment (``[solver] method = "md"``) on the experiment's horizon."""
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
        ConfigError: invalid data, model or potential arguments; InvalidParameterError: bad step size etc.;
        RunFolderError: ``out`` is a file or not writable.
    """
    check_comparison(config)  # (md and the flow at its times: the flow's horizon is the discrete run's)
    out_dir = prepare_out_dir(out) if out is not None else None  # a file or unwritable: an error before any work
    dataset, model = build(config)
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
        fl = _flow_at_times_of(md, config, model, dataset, potential, method, progress=progress, sub=sub)
        log(f"[flowsim]   flow {fl.status.value}: {fl.stats['nfe']} RHS evaluations")
        k = min(len(fl), len(md))
        if k < len(md):  # the flow stopped early: compare the common prefix
            md = _prefix(md, k)
        diff = compare_trajectories(_prefix(fl, k), md)
        rows += _compare_rows(label, diff, k, n_rows)
        labels.append(label)
        runs.append((fl, md, diff))
    if out_dir is not None:
        _write_comparison(out_dir, rows, labels, runs)
    return rows, labels, runs


def _flow_at_times_of(md: Trajectory, config, model, dataset, potential, method: str, *, progress, sub) -> Trajectory:
    """The flow of one potential saved at exactly the discrete run's flow-clock times (for :func:`run_comparison`)."""
    return simulate(
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
        **run_options(config),
    )


def _compare_rows(label: str, diff: dict, k: int, n_rows: int) -> list[dict[str, Any]]:
    """Table rows of one potential: ``n_rows`` log-spaced matched times out of ``k``, plus the last."""
    rows = []
    idx = np.unique(np.round(np.geomspace(1, k - 1, max(n_rows - 1, 1))).astype(int).tolist() + [k - 1])
    for i in idx:
        row = {"label": label}
        for c in COMPARE_COLUMNS[1:]:
            v = diff.get(c)
            row[c] = float(v[i]) if v is not None else ""
        rows.append(row)
    return rows


def _write_comparison(out_dir: Path, rows, labels, runs) -> None:
    """``compare.csv``, ``compare.txt`` and one ``compare_<label>.png`` per potential."""
    with open(out_dir / "compare.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(COMPARE_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    (out_dir / "compare.txt").write_text(format_compare_table(rows) + "\n")
    from . import plotting  # matplotlib is loaded only when plots are written

    for label, (fl, md, diff) in zip(labels, runs, strict=True):
        plotting.plot_flow_vs_discrete(label, fl, md, diff, out_dir / f"compare_{_slug(label)}.png")


def _prefix(tr: Trajectory, k: int) -> Trajectory:
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
