"""Trajectories and experiment summaries as pandas DataFrames and xarray Datasets (optional dependencies).

pandas and xarray are not required by flowsim; install them with ``pip install "flowsim[frames]"``. Each
function imports the one it needs when called and raises :class:`~flowsim.errors.FlowSimError` saying how to
install it when it is missing. These are the bodies of :meth:`Trajectory.to_pandas`,
:meth:`Trajectory.to_xarray` and of ``ExperimentResult.to_pandas`` / ``to_xarray`` (:mod:`flowsim.lab`).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import FlowSimError

Trajectory = Any  # a flowsim.results.Trajectory (not imported: trajectory.py imports this module's functions)

__all__ = ["trajectory_frame", "trajectory_dataset", "summary_frame", "runs_frame", "runs_dataset"]


def _require(name: str):
    """Import the optional module ``name`` (pandas, xarray).

    Raises:
        FlowSimError: it is not installed (the message says how to install it).
    """
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise FlowSimError(
            f'{name} is needed for this conversion but is not installed: pip install "flowsim[frames]" '
            f"(or pip install {name})"
        ) from e


def _columns(name: str, values: np.ndarray) -> dict[str, np.ndarray]:
    """One column for a per-save-point scalar array `(k,)`, ``name[j]`` columns for an array `(k, m)`, and
    ``name[j,l]`` (C order) for more dimensions."""
    v = np.asarray(values)
    if v.ndim == 1:
        return {name: v}
    flat = v.reshape(v.shape[0], -1)
    idx = list(np.ndindex(*v.shape[1:]))
    return {f"{name}[{','.join(map(str, i))}]": flat[:, j] for j, i in enumerate(idx)}


def trajectory_frame(tr: Trajectory, *, state: bool = False):
    """A trajectory as a ``pandas.DataFrame``: one row per save point.

    Columns ``s`` (log-time s = log(1 + t)), ``log_t`` (−inf at t = 0), every diagnostic (an array per save
    point is spread over columns ``name[j]``, e.g. ``neuron_mass[3]``), and with ``state=True`` the parameters
    ``theta[j]`` and dual variables ``z[j]``. Values are copied (float64, the diagnostics' own dtypes).

    Raises:
        FlowSimError: pandas is not installed.
    """
    pd = _require("pandas")
    cols: dict[str, np.ndarray] = {"s": np.array(tr.s, dtype=np.float64), "log_t": np.asarray(tr.log_t)}
    for name, values in tr.diagnostics.items():
        if name != "log_t":
            cols.update(_columns(name, np.array(values)))
    if state:
        cols.update(_columns("theta", np.array(tr.theta)))
        cols.update(_columns("z", np.array(tr.z)))
    frame = pd.DataFrame(cols)
    frame.index.name = "save"
    return frame


def trajectory_dataset(tr: Trajectory):
    """A trajectory as an ``xarray.Dataset`` with dimension ``save`` (coordinates ``s`` and ``log_t``).

    Variables: ``theta`` and ``z`` (``save`` × ``param``) and every diagnostic (``save`` and, for arrays per
    save point, dimensions ``<name>_dim1``, ...). The status, message and stats are attributes (``status``,
    ``message``, ``nfe``, ``wall_time``, ...: numbers and strings only).

    Raises:
        FlowSimError: xarray is not installed.
    """
    xr = _require("xarray")
    data: dict[str, Any] = {
        "theta": (("save", "param"), np.array(tr.theta)),
        "z": (("save", "param"), np.array(tr.z)),
    }
    for name, values in tr.diagnostics.items():
        v = np.array(values)
        if name != "log_t":
            data[name] = (("save", *(f"{name}_dim{i}" for i in range(1, v.ndim))), v)
    attrs = {"status": tr.status.value, "message": tr.message}
    attrs.update({k: v for k, v in tr.stats.items() if isinstance(v, int | float | str) and not isinstance(v, bool)})
    coords = {"s": ("save", np.array(tr.s, dtype=np.float64)), "log_t": ("save", np.asarray(tr.log_t))}
    return xr.Dataset(data, coords=coords, attrs=attrs)


def summary_frame(rows: Sequence[dict[str, Any]]):
    """Summary rows (``flowsim.lab.experiment.summary_rows``) as a ``pandas.DataFrame``, one row per run.

    Raises:
        FlowSimError: pandas is not installed.
    """
    pd = _require("pandas")
    return pd.DataFrame(list(rows))


def runs_frame(labels: Sequence[str], trajectories: Sequence[Trajectory]):
    """Several runs' :func:`trajectory_frame` stacked (``label`` first, then ``save``; columns a run lacks are
    NaN).

    Raises:
        FlowSimError: pandas is not installed.
    """
    pd = _require("pandas")
    frames = []
    for label, tr in zip(labels, trajectories, strict=True):
        f = trajectory_frame(tr).reset_index()
        f.insert(0, "label", label)
        frames.append(f)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def runs_dataset(labels: Sequence[str], trajectories: Sequence[Trajectory], rows: Sequence[dict[str, Any]] = ()):
    """Several runs as one ``xarray.Dataset`` with dimensions ``run`` × ``save``.

    Variables: ``log_t`` and every diagnostic that is one number per save point (``run`` × ``save``; runs with
    fewer save points are padded with NaN), and the summary columns of ``rows`` that belong to these runs
    (``run``; matched by label; ``summary_<column>`` where a diagnostic has the column's name, e.g.
    ``summary_q_margin``). Coordinate ``run``: the labels.

    Raises:
        FlowSimError: xarray is not installed.
    """
    xr = _require("xarray")
    k = max((len(tr) for tr in trajectories), default=0)
    names: list[str] = []
    for tr in trajectories:
        names += [n for n, v in tr.diagnostics.items() if np.ndim(v) == 1 and n not in names and n != "log_t"]
    data: dict[str, Any] = {}
    for name in ["log_t", *names]:
        table = np.full((len(trajectories), k), np.nan)
        for i, tr in enumerate(trajectories):
            v = tr.log_t if name == "log_t" else tr.diagnostics.get(name)
            if v is not None:
                table[i, : len(v)] = np.asarray(v, dtype=np.float64)
        data[name] = (("run", "save"), table)
    by_label = {r["label"]: r for r in rows}
    if by_label and all(label in by_label for label in labels):
        for column in next(iter(by_label.values())):
            if column != "label":
                values = [by_label[label][column] for label in labels]
                numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
                name = f"summary_{column}" if column in data else column  # (q_margin: per save point too)
                data[name] = ("run", np.asarray(values, dtype=np.float64 if numeric else object))
    return xr.Dataset(data, coords={"run": list(labels)})
