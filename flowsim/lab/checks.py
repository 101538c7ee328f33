"""Checks of an experiment's configuration before anything is written: every run's data, model, potential, loss,
initial parameters, solver and horizon, as :func:`flowsim.simulate` would check them as the run starts."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..data import Dataset, load_dataset
from ..errors import ConfigError
from ..guards import check_explicit_work, check_separable_starts
from ..models import AbstractModel, get_model
from ..problem import Problem, prepare_problem
from ..solvers.select import make_driver
from ..timegrid import save_grid_s
from .config import sweep_groups, sweep_members

__all__ = ["build", "check_comparison", "check_runs", "removed_if_left_empty"]


@contextlib.contextmanager
def removed_if_left_empty(out: str | Path) -> Iterator[None]:
    """The folder ``out`` and those of its parents that do not exist yet are removed again where the block raises
    and leaves them empty (a configuration refused by :func:`check_runs`, a Ctrl-C before the first file)."""
    new = [p for p in (Path(out), *Path(out).parents) if not p.exists()]  # (deepest first)
    try:
        yield
    except BaseException:
        for folder in new:
            with contextlib.suppress(OSError):  # (not empty: it keeps what was written)
                folder.rmdir()
        raise


def check_runs(config: dict[str, Any]) -> None:
    """Refuse a validated configuration any of whose runs would be refused as it starts, without running any.

    Builds every ``[sweep]`` group's data set and model and every run's potential, loss and initial parameters
    (:func:`flowsim.problem.prepare_problem`: names, parameters, the data's feature count against the model's
    ``input_dim``, ``[init]``); for the flow, also its solver (kink handling for this model, solver options), its
    save grid and the reach of an explicit method, and, for models linear in x, the data's linear separability by
    the weights each run's flow can reach from its θ₀ (:mod:`flowsim.guards`; a ``DiagonalLinear`` whose factors
    start equal keeps its weights' signs). :func:`run_experiment`, :func:`run_comparison` and
    :func:`flowsim.lab.sweep.plan` call it before they write to an output folder.

    Raises:
        ConfigError: bad ``[data]``/``[model]`` arguments (:func:`flowsim.lab.config.validate_config` checks
            the rest of the file).
        InvalidParameterError, InvalidDataError, HorizonError: as :func:`flowsim.simulate` would raise them.
    """
    flow = config["solver"]["method"] != "md"
    if flow:
        _check_horizon(config)
    for group, _ in sweep_groups(config):
        dataset, model, problems = _problems(group)
        if flow:
            _check_flow_solver(group, model, dataset, problems)


def check_comparison(config: dict[str, Any]) -> tuple[Dataset, AbstractModel]:
    """The data set and model of a configuration without a ``[sweep]`` table, for ``flowsim compare``: each run's
    potential, loss and initial parameters built as a run builds them (:func:`flowsim.problem.prepare_problem`),
    and, for a model linear in x, the data's linear separability by the weights each run's flow can reach (as
    :func:`check_runs`; the flow runs at the discrete run's times, so its horizon is not checked). Called before
    mirror descent runs and before anything is written.

    Raises:
        ConfigError, InvalidParameterError: as :func:`check_runs`; InvalidDataError: the flow would refuse the
            data (unless ``[flow] allow_nonseparable``).
    """
    dataset, model, problems = _problems(config)
    _check_reach(config, model, dataset, problems)
    return dataset, model


def _problems(config: dict[str, Any]) -> tuple[Dataset, AbstractModel, list[Problem]]:
    """The data set and model of a configuration without a ``[sweep]`` table, and each of its runs'
    :class:`~flowsim.problem.Problem` (potential, loss, θ₀) as a run builds it."""
    dataset, model = build(config)
    problems = [
        prepare_problem(
            model,
            dataset,
            member["potential"],
            config["flow"]["loss"],
            init_scale=member["init_scale"],
            seed=member["seed"],
            device="cpu",
        )
        for member in sweep_members(config)
    ]
    return dataset, model, problems


def _check_flow_solver(config: dict[str, Any], model: AbstractModel, dataset: Dataset, problems: list[Problem]) -> None:
    """The flow's driver for this model (kink handling, solver options) and, for a model linear in x, whether
    the data are linearly separable by the weights each run can reach (unless ``[flow] allow_nonseparable``)."""
    solver = config["solver"]
    method, kinks, options = solver["method"], solver["kinks"], solver.get("options")
    make_driver(model, kinks, method, solver["rtol"], solver["atol"], solver["max_steps"], options)
    _check_reach(config, model, dataset, problems)


def _check_reach(config: dict[str, Any], model: AbstractModel, dataset: Dataset, problems: list[Problem]) -> None:
    """For a model linear in x: the data's linear separability by the weights each run's flow can reach from its θ₀
    (unless ``[flow] allow_nonseparable``; :func:`flowsim.guards.check_separable_starts`)."""
    allow = bool(config["flow"].get("allow_nonseparable", False))
    check_separable_starts(model, dataset, allow, [(p.theta0, p.potential) for p in problems])


def _check_horizon(config: dict[str, Any]) -> None:
    """The flow's save grid from ``[horizon]`` and whether an explicit method can reach it within ``max_steps``."""
    horizon, solver, time = config["horizon"], config["solver"], config["flow"]["time"]
    s_grid = save_grid_s(time, horizon["log_t_end"], None, horizon["n_save"], horizon["log_t_start"])
    check_explicit_work(solver["method"], time, s_grid, solver["max_steps"])


def build(config: dict[str, Any]) -> tuple[Dataset, AbstractModel]:
    """The data set and model of a configuration (``[data]``, ``[model]``; input_dim from the data)."""
    data_cfg = dict(config["data"])
    try:
        dataset = load_dataset(data_cfg.pop("name"), **data_cfg)
    except TypeError as e:
        raise ConfigError(f"[data]: {e}") from e
    model_cfg = dict(config["model"])
    if model_cfg.setdefault("input_dim", dataset.d) != dataset.d:
        raise ConfigError(
            f"[model] input_dim = {model_cfg['input_dim']!r}, but the data set {dataset.name} has d = {dataset.d} "
            f"features; drop input_dim from [model] (it is taken from the data) or set it to {dataset.d}"
        )
    try:
        model = get_model(model_cfg.pop("name"), **model_cfg)
    except TypeError as e:
        raise ConfigError(f"[model]: {e}") from e
    return dataset, model
