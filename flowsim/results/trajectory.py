"""The result object of a flowsim run: times, states, diagnostics, stats, status, config, metadata.

Saved as a directory holding ``trajectory.npz`` (arrays) and ``trajectory.json`` (status, stats, config,
metadata), readable without flowsim (numpy + json).
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from .._json import jsonable
from .._version import __version__
from ..errors import RunFolderError, TrajectoryFileError
from ..timegrid import log_t_from_s, t_from_s
from .store import _DAMAGED, FORMAT_VERSION, STREAM_DIR, damaged, read_json, stream_arrays

__all__ = ["Status", "Trajectory", "environment_metadata", "load_streamed", "run_folders", "FORMAT_VERSION"]


class Status(str, Enum):
    """How a run ended. The value is a short code; :attr:`hint` explains what to do."""

    SUCCESS = "success"
    INTERRUPTED = "interrupted"
    STEP_UNDERFLOW = "step_underflow"
    MAX_STEPS = "max_steps"
    NONFINITE = "nonfinite"
    FAILED = "failed"
    DIVERGED = "diverged"
    NOT_SEPARABLE = "not_separable"

    @property
    def hint(self) -> str:
        """A human explanation of the status with what to do about it."""
        return {
            "success": "The run reached its horizon.",
            "interrupted": (
                "The run was interrupted (Ctrl-C, or SIGTERM under flowsim run); the trajectory holds everything "
                "computed so far."
            ),
            "step_underflow": (
                "The solver's step size underflowed (dt too small for the time variable). Loosen rtol/atol, "
                "use log-time (time='log'), or use kinks='filippov' for ReLU models."
            ),
            "max_steps": "The maximum number of solver steps was reached. Increase `max_steps` or loosen rtol.",
            "nonfinite": (
                "The state or its derivative became non-finite (overflow). Check the potential's parameters "
                "and the data scale; log-time keeps the field O(1)."
            ),
            "failed": "The solver failed; see the message for the underlying error.",
            "not_separable": (
                "The data were still not separated (some margin ≤ 0, loss ≥ ℓ(0)) at the separation horizon: "
                "the margin flow has no limit direction and an explicit solver's cost grows like t. Check the "
                "data (same-ray points with opposite labels cannot be separated by any homogeneous model), or "
                "pass a later separation_log_t, or allow_nonseparable=True to run on regardless."
            ),
            "diverged": (
                "The loss grew far above its initial value (discrete mirror descent). Reduce `step_size`, "
                "use schedule='loss_normalized' with rollback=True, or start from a smaller init_scale."
            ),
        }[self.value]


def interrupted_message(error: BaseException | None = None) -> str:
    """The message of a run stopped by ``error``, a KeyboardInterrupt: Ctrl-C's, or a signal's that carries its
    name as ``error.signal_name`` (SIGTERM under ``flowsim run``: :class:`flowsim.lab.workers.Terminated`).

    Example:
        >>> interrupted_message(KeyboardInterrupt())
        'The run was interrupted (Ctrl-C); the trajectory holds everything computed so far.'
    """
    name = getattr(error, "signal_name", None)
    how = f"terminated by {name}" if name else "interrupted (Ctrl-C)"
    return f"The run was {how}; the trajectory holds everything computed so far."


@dataclass
class Trajectory:
    """A mirror-flow (or mirror-descent) trajectory sampled at save times.

    Attributes:
        s: log-time s = log(1 + t) at the save times, shape `(k,)`, float64.
        theta: primal parameters θ at the save times, shape `(k, p)`, float64.
        z: dual parameters z = ∇Φ(θ), shape `(k, p)`, float64.
        diagnostics: name → array with leading dimension `k` (see :mod:`flowsim.analysis.diagnostics`).
        stats: solver statistics (``nfe`` RHS evaluations, ``n_accepted``, ``n_rejected`` steps,
            ``wall_time`` seconds, ...).
        status: a :class:`Status` code; ``message`` a human explanation.
        config: everything needed to rerun (model, potential, loss, data, solver, horizon).
        metadata: versions, host, date.
    """

    s: np.ndarray
    theta: np.ndarray
    z: np.ndarray
    diagnostics: dict[str, np.ndarray] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    status: Status = Status.SUCCESS
    message: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ times
    @property
    def log_t(self) -> np.ndarray:
        """log t at the save times, shape `(k,)` (−inf at t = 0); exact for any horizon."""
        return log_t_from_s(self.s)

    @property
    def t(self) -> np.ndarray:
        """t at the save times where representable in float64, +inf beyond t ≈ 1.8e308."""
        return t_from_s(self.s)

    @property
    def success(self) -> bool:
        """True when the run reached its horizon (status ``success``)."""
        return self.status == Status.SUCCESS

    def __len__(self) -> int:
        return int(self.s.shape[0])

    @property
    def final_theta(self) -> np.ndarray:
        """θ at the last saved time, shape `(p,)`."""
        return self.theta[-1]

    def __repr__(self) -> str:
        lt = self.log_t[-1] if len(self) else float("nan")
        return (
            f"Trajectory(status={self.status.value!r}, saves={len(self)}, final_log_t={lt:.6g}, "
            f"nfe={self.stats.get('nfe')}, message={self.message!r})"
        )

    # ------------------------------------------------------------------ frames
    def to_pandas(self, *, state: bool = False):
        """This trajectory as a ``pandas.DataFrame``, one row per save point: ``s``, ``log_t``, the diagnostics
        (arrays spread over ``name[j]`` columns) and with ``state=True`` ``theta[j]``, ``z[j]``
        (:func:`flowsim.results.frames.trajectory_frame`).

        Raises:
            FlowSimError: pandas is not installed (``pip install "flowsim[frames]"``).
        """
        from .frames import trajectory_frame

        return trajectory_frame(self, state=state)

    def to_xarray(self):
        """This trajectory as an ``xarray.Dataset`` over the save points (dimension ``save``, coordinates ``s`` and
        ``log_t``; ``theta``/``z`` over ``save`` × ``param``; :func:`flowsim.results.frames.trajectory_dataset`).

        Raises:
            FlowSimError: xarray is not installed (``pip install "flowsim[frames]"``).
        """
        from .frames import trajectory_dataset

        return trajectory_dataset(self)

    # ------------------------------------------------------------------ I/O
    def save(self, path: str | os.PathLike) -> Path:
        """Write the trajectory to directory ``path`` (created if needed). Returns the directory."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        arrays = {"s": self.s, "theta": self.theta, "z": self.z}
        for k, v in self.diagnostics.items():
            arrays[f"diag__{k}"] = np.asarray(v)
        tmp = path / "trajectory.tmp.npz"
        np.savez(tmp, **arrays)
        os.replace(tmp, path / "trajectory.npz")
        meta = {
            "format_version": FORMAT_VERSION,
            "status": self.status.value,
            "message": self.message,
            "stats": jsonable(self.stats),
            "config": jsonable(self.config),
            "metadata": jsonable(self.metadata),
        }
        tmpj = path / "trajectory.tmp.json"
        tmpj.write_text(json.dumps(meta, indent=2))
        os.replace(tmpj, path / "trajectory.json")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Trajectory:
        """Read a trajectory written by :meth:`save`, or streamed by ``simulate(..., out=path)``.

        A streamed run (``"storage": "stream"`` in ``trajectory.json``, rows under ``path/stream/``) is read
        memory-mapped (copy-on-write), first ``n_saved`` rows; a run killed mid-way loads as it stood at its
        last checkpoint (status "interrupted").

        Raises:
            TrajectoryFileError: if the files are missing or of an unknown format version.
            RunFolderError: ``trajectory.json`` or ``trajectory.npz`` is damaged (garbage, truncated, entries
                missing); the message names the file and what to do.
        """
        path = Path(path)
        npz, js = path / "trajectory.npz", path / "trajectory.json"
        if js.exists() and (path / STREAM_DIR).is_dir():
            meta = read_json(js, _fix(path))
            if meta.get("storage") == "stream":  # streamed by simulate(out=...): memory-mapped rows
                return _checked(js, path, lambda: load_streamed(path, meta))
        if not npz.exists() or not js.exists():
            runs = [p.name for p in run_folders(path) if p != path]
            hint = f"; its subfolders {runs} hold runs (an experiment folder): load one of them" if runs else ""
            raise TrajectoryFileError(
                f"no saved trajectory in {path}: expected trajectory.json with stream/ (written by "
                "`simulate(out=...)` and `flowsim run`) or trajectory.npz with trajectory.json (Trajectory.save)" + hint
            )
        meta = read_json(js, _fix(path))
        if meta.get("format_version") != FORMAT_VERSION:
            raise TrajectoryFileError(
                f"{js} has format version {meta.get('format_version')}, this flowsim reads {FORMAT_VERSION}"
            )
        try:
            with np.load(npz) as data:
                arrays = {k: data[k] for k in data.files}
        except _DAMAGED as e:
            raise damaged(npz, e, _fix(path)) from e
        return _checked(js, path, lambda: cls.from_arrays(arrays, meta))

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], meta: dict) -> Trajectory:
        """Build a trajectory from saved arrays (``s``, ``theta``, ``z``, ``diag__<name>``) and its JSON metadata
        (``stats``, ``status``, ``message``, ``config``, ``metadata``); shared by :meth:`load` and
        :func:`load_streamed`."""
        diags = {k[len("diag__") :]: v for k, v in arrays.items() if k.startswith("diag__")}
        return cls(
            s=arrays["s"],
            theta=arrays["theta"],
            z=arrays["z"],
            diagnostics=diags,
            stats=meta["stats"],
            status=Status(meta["status"]),
            message=meta["message"],
            config=meta["config"],
            metadata=meta["metadata"],
        )


def run_folders(path: str | Path) -> list[Path]:
    """The saved runs at ``path``: ``[path]`` where it holds a trajectory (``trajectory.json``), else its subfolders
    that do, sorted (an experiment folder of ``flowsim run``: one per potential); ``[]`` where neither."""
    path = Path(path)
    if (path / "trajectory.json").exists():
        return [path]
    return sorted(p for p in path.iterdir() if (p / "trajectory.json").exists()) if path.is_dir() else []


def _fix(path: Path) -> str:
    """What to do about a damaged trajectory file in folder ``path``: a streamed run folder is resumed (which
    rewrites ``trajectory.json`` from the last checkpoint), a folder of :meth:`Trajectory.save` saved again."""
    if (path / STREAM_DIR).is_dir():
        return (
            f"resume the run (flowsim run --resume {path}, or flowsim.resume(DIR)), which rewrites it from the last "
            "checkpoint, or run it again"
        )
    return "save the trajectory again (Trajectory.save(DIR)) or rerun the simulation that made it"


def _checked(js: Path, path: Path, build):
    """``build()``, with metadata that lacks entries or holds wrong values (KeyError, ValueError, TypeError) as a
    :class:`RunFolderError` naming ``js``."""
    try:
        return build()
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, RunFolderError | TrajectoryFileError):
            raise
        raise damaged(js, e, _fix(path)) from e


def load_streamed(path: Path, meta: dict[str, Any]) -> Trajectory:
    """Trajectory of a streamed run directory, given its ``trajectory.json`` contents ``meta`` (first
    ``meta["n_saved"]`` rows, memory-mapped copy-on-write: edits never reach the files).

    Raises:
        TrajectoryFileError: if ``s``, ``z`` or ``theta`` was never streamed.
    """
    return Trajectory.from_arrays(stream_arrays(path, int(meta["n_saved"])), meta)


def environment_metadata() -> dict[str, Any]:
    """Versions and host information recorded with every run."""
    import scipy
    import torch
    import torchdiffeq

    return {
        "flowsim": __version__,
        "torch": torch.__version__,
        "torchdiffeq": getattr(torchdiffeq, "__version__", "unknown"),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "torch_threads": torch.get_num_threads(),
    }
