"""Sweeps as independent runs: :func:`plan` them, :func:`run_spec` each anywhere, :func:`gather` the result.

An experiment configuration (:mod:`flowsim.lab.config`) expands into run specifications (:class:`RunSpec`,
plain JSON): one per potential, or per member of a sweep (list values, ``[sweep]`` groups). Each spec is run
by :func:`flowsim.simulate` into a folder of its own under one root folder, always checkpointed, so a run is a
unit of work that any process can pick up: :func:`run_spec` starts it, resumes it from its last checkpoint
(:func:`flowsim.resume`) after a kill, or skips it when it has finished. :func:`gather` reads whatever has
finished into the experiment's result (summary table and plots, as ``flowsim run`` writes them) and lists the
runs still missing. Executors:

* ``flowsim run --executor ray [--ray-address ADDR]``: one Ray task per spec (:func:`run_plan`; ``pip install
  "flowsim[distributed]"``). A task whose worker dies is retried by Ray and resumes from its checkpoint; a task
  that fails becomes the status ``task_failed`` in the summary and the other runs are kept.
* SLURM arrays (no Ray): ``flowsim plan CONFIG --out ROOT``, then ``flowsim run-spec ROOT --index I`` per array
  task (I defaults to ``$SLURM_ARRAY_TASK_ID``) and ``flowsim gather ROOT`` (docs/sweeps.md).
* ``flowsim run --executor local`` (the default) is :func:`flowsim.lab.experiment.run_experiment` as before.

Root folder layout::

    ROOT/plan.json        {"format": 1, "config": ..., "specs": [RunSpec.to_dict(), ...]}
    ROOT/config.json      the configuration (as ``flowsim run`` writes it)
    ROOT/<spec.dir>/      one streamed run (run.json, data.npz, stream/, checkpoint.npz, trajectory.json; see
                          flowsim.results.store) plus spec.json, attempts.jsonl (one line per run_spec that
                          computed: where it started) and task_error.json (the last failure, if any)
    ROOT/summary.csv, summary.txt, *.png      written by gather

The root must be on a file system every worker sees (a cluster's shared file system).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, FlowSimError, InvalidParameterError
from ..results import Trajectory
from ..results.store import DEFAULT_CHECKPOINT_EVERY, atomic_write_text
from ..simulation import resume, simulate
from .checks import build, check_runs
from .config import flow_arguments, run_options, sweep_groups, sweep_members, validate_config
from .experiment import SUMMARY_COLUMNS, ExperimentResult, _finish, _slug, summary_rows

__all__ = [
    "RunSpec",
    "plan",
    "write_plan",
    "read_plan",
    "run_spec",
    "run_plan",
    "gather",
    "run_state",
    "EXECUTORS",
    "TASK_FAILED",
]

PLAN_FILE = "plan.json"
PLAN_FORMAT = 1
SPEC_FILE = "spec.json"
ATTEMPTS_FILE = "attempts.jsonl"
ERROR_FILE = "task_error.json"
TASK_FAILED = "task_failed"  # the summary status of a run whose task raised or whose worker kept dying
EXECUTORS = ("local", "ray")
# statuses after which a run is not resumed (rerunning would repeat them); any other (interrupted, a run
# stopped by a signal, a status this module does not know) is resumed from its last checkpoint
FINISHED = frozenset({"success", "step_underflow", "max_steps", "nonfinite", "failed", "diverged", "not_separable"})
# testing hook (tests/test_sweeps.py): "INDEX:MARKER" in the environment of the process calling run_plan makes the
# Ray task of spec INDEX kill its own worker (SIGKILL) once, after its first checkpoint, unless MARKER exists
KILL_ENV = "FLOWSIM_SWEEP_TEST_KILL"


@dataclass(frozen=True)
class RunSpec:
    """One run of a planned experiment, as plain JSON (:meth:`to_dict` / :meth:`from_dict`).

    Attributes:
        index: position in the plan (0-based; a SLURM array index).
        label: the run's label in the summary (as ``flowsim run`` names it).
        dir: the run's folder, relative to the root folder.
        data: ``[data]`` table (``name`` + :func:`flowsim.data.load_dataset` keyword arguments).
        model: ``[model]`` table (``name`` + :func:`flowsim.models.get_model` keyword arguments; ``input_dim``
            defaults to the data's).
        potential: ``{"name": ..., **params}``.
        simulate: keyword arguments of :func:`flowsim.simulate` (loss, time, horizon, init_scale, seed, solver).
        checkpoint_every: save points between checkpoints (≥ 1: every run is checkpointed).
    """

    index: int
    label: str
    dir: str
    data: dict[str, Any]
    model: dict[str, Any]
    potential: dict[str, Any]
    simulate: dict[str, Any] = field(default_factory=dict)
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY

    def to_dict(self) -> dict[str, Any]:
        """The spec as a JSON-serialisable dict."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunSpec:
        """A spec from :meth:`to_dict`'s dict (e.g. one entry of ``plan.json``).

        Raises:
            ConfigError: missing or unknown keys.
        """
        if isinstance(d, RunSpec):
            return d
        names = set(cls.__dataclass_fields__)
        if not isinstance(d, dict) or not {"index", "label", "dir", "data", "model", "potential"} <= set(d):
            raise ConfigError(f"not a run specification (keys {sorted(names)} expected): {d!r}"[:300])
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"run specification {d.get('label')!r}: unknown keys {unknown}; valid: {sorted(names)}")
        return cls(**d)


def plan(config: dict[str, Any], *, checkpoint_every: int | None = None) -> list[RunSpec]:
    """The run specifications of an experiment configuration, in ``flowsim run``'s order and with its labels.

    One spec per ``[[potentials]]`` table, or per sweep member (:func:`flowsim.lab.config.sweep_members`,
    within each ``[sweep]`` group of :func:`flowsim.lab.config.sweep_groups`). The data sets, models and
    potentials are built once here (:func:`flowsim.lab.checks.check_runs`), so a bad configuration fails
    before any run starts or anything is written.

    Args:
        config: an experiment configuration (validated again here).
        checkpoint_every: save points between checkpoints of each run (≥ 1; default: ``[output]
            checkpoint_every``, else 50).

    Returns:
        The specs; each folder name (``dir``) is the label made path-safe, unique within the plan.

    Raises:
        ConfigError: an invalid configuration, ``[solver] method = "md"`` (discrete mirror descent is run by
            the local executor only), or ``checkpoint_every`` < 1.
        InvalidParameterError, InvalidDataError, HorizonError: a run would be refused (:func:`check_runs`).
    """
    config = validate_config(config, source="plan")
    every = checkpoint_every if checkpoint_every is not None else config["output"].get("checkpoint_every")
    every = DEFAULT_CHECKPOINT_EVERY if every is None else every
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ConfigError(
            f"checkpoint_every ([output] or --checkpoint-every) must be an integer ≥ 1 for a planned sweep (every run "
            f"is checkpointed), got {every!r}"
        )
    solver = config["solver"]
    if solver["method"] == "md":
        raise ConfigError('[solver] method = "md" (discrete mirror descent) runs with --executor local only')
    common = {
        **flow_arguments(config),
        "kinks": solver.get("kinks", "auto"),
        "solver_options": solver.get("options"),
        **run_options(config),  # [flow] allow_nonseparable, [horizon] separation_log_t, [output] checkpoint_seconds
    }
    check_runs(config)  # (data, models, potentials, solver and horizon: a run that would be refused fails here)
    specs: list[RunSpec] = []
    dirs: set[str] = set()
    for group, prefix in sweep_groups(config):
        for m in sweep_members(group):
            label = f"{prefix} {m['label']}" if prefix else m["label"]
            folder = _slug(label)
            folder = folder if folder not in dirs else f"{folder}_{len(specs)}"
            dirs.add(folder)
            kwargs = {**common, "init_scale": m["init_scale"], "seed": m["seed"]}
            spec = RunSpec(len(specs), label, folder, group["data"], group["model"], m["potential"], kwargs, every)
            specs.append(RunSpec.from_dict(spec.to_dict()))  # (plain JSON values from here on)
    return specs


def write_plan(
    config: dict[str, Any], root: str | os.PathLike, *, checkpoint_every: int | None = None
) -> list[RunSpec]:
    """:func:`plan` a configuration into ``root/plan.json`` (and ``root/config.json``); returns the specs.

    Writing the same plan again keeps the folder as it is (runs done are kept: a sweep is resumed by running
    its plan again).

    Raises:
        ConfigError: as :func:`plan`, or ``root`` already holds a different plan (use another folder).
    """
    root = Path(root)
    specs = plan(config, checkpoint_every=checkpoint_every)
    config = validate_config(config, source="plan")
    doc = {"format": PLAN_FORMAT, "config": config, "specs": [s.to_dict() for s in specs]}
    doc = json.loads(json.dumps(doc, default=str))
    path = root / PLAN_FILE
    if path.exists():
        old = json.loads(path.read_text())
        if old.get("specs") != doc["specs"]:
            raise ConfigError(
                f"{root} holds another plan ({len(old.get('specs', []))} runs, different specifications); "
                "write this one to another folder (--out) or delete the old one"
            )
        return specs
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / "config.json", json.dumps(config, indent=2, default=str))
    atomic_write_text(path, json.dumps(doc, indent=2))
    return specs


def read_plan(root: str | os.PathLike) -> tuple[dict[str, Any], list[RunSpec]]:
    """The configuration and specs of ``root/plan.json``.

    Raises:
        ConfigError: no plan there (write one with ``flowsim plan CONFIG --out ROOT``) or not a plan.
    """
    path = Path(root) / PLAN_FILE
    if not path.is_file():
        raise ConfigError(f"{root} holds no plan ({PLAN_FILE}); write one with `flowsim plan CONFIG --out {root}`")
    doc = json.loads(path.read_text())
    if doc.get("format") != PLAN_FORMAT or "specs" not in doc:
        raise ConfigError(f"{path} is not a flowsim plan of format {PLAN_FORMAT}")
    return doc["config"], [RunSpec.from_dict(s) for s in doc["specs"]]


# ---------------------------------------------------------------------------------------------- one run


def run_state(run_dir: str | os.PathLike) -> str:
    """``"missing"`` (nothing there yet), ``"partial"`` (started: resumable) or ``"finished"`` (its status is
    final: success or a solver failure that a rerun would repeat)."""
    meta = Path(run_dir) / "trajectory.json"
    if not meta.exists():
        return "partial" if (Path(run_dir) / "run.json").exists() else "missing"
    try:
        status = json.loads(meta.read_text()).get("status")
    except (OSError, ValueError):
        return "partial"
    return "finished" if status in FINISHED else "partial"


def run_spec(spec: RunSpec | dict[str, Any], root: str | os.PathLike, *, progress=False) -> Trajectory:
    """Run one spec into ``root/<spec.dir>``: start it, resume it, or skip it when it has finished.

    A finished run (:func:`run_state`) is loaded and returned without computing or writing anything; a partial
    one continues from its last checkpoint through :func:`flowsim.resume` (bit for bit the run an uninterrupted
    process computes); otherwise :func:`flowsim.simulate` starts it with ``out=`` the folder and the spec's
    ``checkpoint_every``. Each call that computes appends a line to ``attempts.jsonl`` (host, pid, the
    checkpoint it started from).

    Args:
        spec: a :class:`RunSpec` or its dict.
        root: the plan's root folder.
        progress: as for :func:`flowsim.simulate` (True: a progress bar; or a callable ``(log_t, nfe)``).

    Returns:
        The run's :class:`~flowsim.results.Trajectory` (its status says how it ended).

    Raises:
        ConfigError: the folder holds a run of another spec.
        Exception: whatever the run raised (bad arguments, a lock held by another live process); it is also
            recorded in ``task_error.json`` so that :func:`gather` shows the run as ``task_failed``.
    """
    spec = RunSpec.from_dict(spec)
    run_dir = Path(root) / spec.dir
    if run_state(run_dir) == "finished":
        return Trajectory.load(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _claim_folder(run_dir, spec)
    try:
        _log_attempt(run_dir)
        if (run_dir / "run.json").exists():
            return resume(run_dir, progress=progress)
        dataset, model = build({"data": spec.data, "model": spec.model})
        kwargs = {**spec.simulate, "checkpoint_every": spec.checkpoint_every}
        return simulate(model, dataset, spec.potential, out=run_dir, progress=progress, **kwargs)
    except Exception as e:
        record_failure(root, spec, f"{type(e).__name__}: {e}", traceback.format_exc())
        raise


def _claim_folder(run_dir: Path, spec: RunSpec) -> None:
    """Write ``spec.json`` (or check that the folder's is this spec) and drop a previous attempt's error.

    Raises:
        ConfigError: the folder holds a run of another spec.
    """
    path = run_dir / SPEC_FILE
    mine = spec.to_dict()
    if path.exists():
        theirs = json.loads(path.read_text())
        if {k: v for k, v in theirs.items() if k != "index"} != {k: v for k, v in mine.items() if k != "index"}:
            raise ConfigError(f"{run_dir} holds a run of another specification ({theirs.get('label')!r}); not touched")
    else:
        atomic_write_text(path, json.dumps(mine, indent=2))
    (run_dir / ERROR_FILE).unlink(missing_ok=True)


def _log_attempt(run_dir: Path) -> None:
    """Append {time, host, pid, start: the checkpoint's save index or 0} to ``attempts.jsonl``."""
    start = 0
    ck = run_dir / "checkpoint.npz"
    if ck.exists() and (run_dir / "run.json").exists():
        try:
            with np.load(ck) as data:
                start = int(data["k"])
        except (OSError, ValueError, KeyError):
            start = 0
    line = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": socket.gethostname(), "pid": os.getpid()}
    line["start"] = start
    with open(run_dir / ATTEMPTS_FILE, "a") as fh:
        fh.write(json.dumps(line) + "\n")


def attempts(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The lines of a run folder's ``attempts.jsonl`` (``start``: the save index it resumed from, 0 = fresh)."""
    path = Path(run_dir) / ATTEMPTS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def record_failure(root: str | os.PathLike, spec: RunSpec, error: str, details: str = "") -> None:
    """Write ``root/<spec.dir>/task_error.json`` (the run shows as ``task_failed`` in :func:`gather`)."""
    run_dir = Path(root) / spec.dir
    run_dir.mkdir(parents=True, exist_ok=True)
    doc = {"label": spec.label, "error": error, "details": details, "host": socket.gethostname()}
    atomic_write_text(run_dir / ERROR_FILE, json.dumps(doc, indent=2))


# ---------------------------------------------------------------------------------------------- gather


def gather(root: str | os.PathLike, *, log=None) -> ExperimentResult:
    """The experiment result of a plan's root folder, from whatever runs are there.

    Every run with a trajectory on disk is loaded (finished or partial: its status says which; a failed task's
    status is ``task_failed``, with its partial values if it saved any); the summary table (``summary.csv``,
    ``summary.txt``, same columns and labels as ``flowsim run``) and plots are written to ``root``.
    ``summary.txt`` ends with the runs missing and the failed tasks' errors.

    Returns:
        An :class:`~flowsim.lab.experiment.ExperimentResult`; ``missing`` lists the labels of runs with nothing
        on disk. ``rows`` has one row per run present (``task_failed`` runs without a trajectory included),
        ``labels``/``trajectories`` the runs with a trajectory.

    Raises:
        ConfigError: ``root`` holds no plan.
    """
    root = Path(root)
    config, specs = read_plan(root)
    labels, trajs, rows, missing, errors = [], [], [], [], []
    for spec in specs:
        run_dir = root / spec.dir
        tr = Trajectory.load(run_dir) if (run_dir / "trajectory.json").exists() else None
        state = run_state(run_dir)  # (an error left by a second process refused while the run went on: ignored)
        error = _read_error(run_dir) if state != "finished" else None
        if tr is None and error is None:
            missing.append(spec.label)
            continue
        if tr is not None:
            labels.append(spec.label)
            trajs.append(tr)
            row = summary_rows([spec.label], [tr])[0]
        else:
            row = {c: "" for c in SUMMARY_COLUMNS} | {"label": spec.label}
        if error is not None:
            row["status"] = TASK_FAILED
            errors.append(f"{spec.label}: {error}")
        rows.append(row)
    footer = "".join(f"\nmissing (not run yet): {label}" for label in missing)
    footer += "".join(f"\ntask failed: {e}" for e in errors)
    dataset, model = build(sweep_groups(config)[0][0])
    result = _finish(config, model, dataset, labels, trajs, root, rows=rows, footer=footer.lstrip("\n") + "\n")
    result.missing = missing
    if log is not None and (missing or errors):
        log(f"[flowsim] gather: {len(missing)} run(s) missing, {len(errors)} failed task(s)")
    return result


def _read_error(run_dir: Path) -> str | None:
    path = run_dir / ERROR_FILE
    if not path.exists():
        return None
    try:
        return str(json.loads(path.read_text()).get("error", "unknown error"))
    except (OSError, ValueError):
        return "unknown error (task_error.json unreadable)"


# ---------------------------------------------------------------------------------------------- executors


def run_plan(
    root: str | os.PathLike,
    *,
    executor: str = "ray",
    address: str | None = None,
    max_retries: int = 3,
    log=print,
) -> ExperimentResult:
    """Run every spec of ``root/plan.json`` that has not finished, then :func:`gather`.

    Args:
        root: a plan's root folder (:func:`write_plan`).
        executor: ``"ray"``: one Ray task per spec (1 CPU each), on the cluster at ``address`` or, with None, on
            the one ``ray.init()`` finds (``RAY_ADDRESS``) or a local instance it starts (and stops at the end);
            a Ray already initialised in this process is used as it is. ``"local"``: one after another in this
            process (``flowsim run --executor local`` runs :func:`flowsim.lab.experiment.run_experiment`, with
            its worker processes, instead).
        address: the Ray cluster's address (``--ray-address``), e.g. ``"auto"`` or ``"ray://host:10001"``.
        max_retries: Ray retries of a task whose worker died (each resumes from the run's last checkpoint);
            tasks that raise are not retried (a rerun would raise again).
        log: a print-like function.

    Returns:
        :func:`gather`'s result. A task that raised, or whose worker died ``max_retries`` + 1 times, is
        ``task_failed`` in the summary; the other runs are kept.

    Raises:
        ConfigError: no plan in ``root``; InvalidParameterError: an unknown executor;
        FlowSimError: ``executor="ray"`` without Ray installed.
    """
    if executor not in EXECUTORS:
        raise InvalidParameterError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    root = Path(root).resolve()
    _, specs = read_plan(root)
    todo = [s for s in specs if run_state(root / s.dir) != "finished"]
    log(f"[flowsim] {len(specs)} runs planned in {root}: {len(specs) - len(todo)} finished, {len(todo)} to run")
    if todo and executor == "ray":
        _run_on_ray(todo, root, address=address, max_retries=max_retries, log=log)
    elif todo:
        for spec in todo:
            try:
                tr = run_spec(spec, root)
                log(f"[flowsim]   {spec.label}: {tr.status.value}, nfe = {tr.stats.get('nfe')}")
            except Exception as e:  # noqa: BLE001 - recorded by run_spec; the other runs go on
                log(f"[flowsim]   {spec.label}: {TASK_FAILED} ({type(e).__name__}: {e})")
    return gather(root, log=log)


def _import_ray():
    try:
        import ray
    except ImportError as e:
        raise FlowSimError(
            'the Ray executor needs Ray: pip install "flowsim[distributed]" (or use --executor local, or the '
            "SLURM path: flowsim plan / run-spec / gather)"
        ) from e
    return ray


def _run_on_ray(specs: list[RunSpec], root: Path, *, address, max_retries: int, log) -> None:
    """One Ray task per spec; failures are recorded (``task_error.json``), the other tasks go on."""
    ray = _import_ray()
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    try:
        task = ray.remote(num_cpus=1, max_retries=max_retries, retry_exceptions=False)(_ray_task)
        kill = os.environ.get(KILL_ENV)
        refs = {task.remote(s.to_dict(), str(root), kill): s for s in specs}
        pending = list(refs)
        log(f"[flowsim] {len(pending)} Ray tasks submitted ({ray.cluster_resources().get('CPU', 0):g} CPUs)")
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                _collect(ray, done[0], refs[done[0]], root, log)
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref, force=True)
            log(f"[flowsim] interrupted: {len(pending)} Ray task(s) cancelled; their checkpoints are kept")
    finally:
        if started:
            ray.shutdown()


def _collect(ray, ref, spec: RunSpec, root: Path, log) -> None:
    """Log one finished task; a failed one (it raised, or its worker died too often) is recorded."""
    try:
        status, nfe = ray.get(ref)
        log(f"[flowsim]   {spec.label}: {status}, nfe = {nfe}")
    except ray.exceptions.RayError as e:
        cause = getattr(e, "cause", None)
        error = f"{type(cause).__name__}: {cause}" if cause is not None else f"{type(e).__name__}: {str(e)[:500]}"
        log(f"[flowsim]   {spec.label}: {TASK_FAILED} ({error})")
        if run_state(root / spec.dir) != "finished":
            record_failure(root, spec, error, str(e))


def _ray_task(spec: dict[str, Any], root: str, kill: str | None = None) -> tuple[str, int]:
    """A Ray task: :func:`run_spec` in the worker; returns (status, RHS evaluations)."""
    spec_ = RunSpec.from_dict(spec)
    tr = run_spec(spec_, root, progress=_KillOnce.hook(spec_, root, kill))
    return tr.status.value, int(tr.stats.get("nfe", 0))


class _KillOnce:
    """Testing hook (:data:`KILL_ENV`): a progress callback that SIGKILLs this process once, after the run's first
    checkpoint, and leaves a marker file so that the retried task runs to its end."""

    def __init__(self, run_dir: Path, marker: Path) -> None:
        self.run_dir, self.marker = run_dir, marker

    @classmethod
    def hook(cls, spec: RunSpec, root: str, kill: str | None):
        if not kill:
            return False
        index, _, marker = kill.partition(":")
        if int(index) != spec.index or Path(marker).exists():
            return False
        return cls(Path(root) / spec.dir, Path(marker))

    def __call__(self, log_t: float, nfe: int) -> None:
        if (self.run_dir / "checkpoint.npz").exists():  # (a fresh run removes a stale one first)
            self.marker.write_text(f"killed pid {os.getpid()} at log t = {log_t}\n")
            os.kill(os.getpid(), signal.SIGKILL)
