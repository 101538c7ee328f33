"""The on-disk store of a streamed run: memory-mapped rows, atomic checkpoints and metadata.

A run with ``simulate(..., out=DIR)`` writes its save points as they come into preallocated ``.npy`` files
(one per array: ``s``, ``z``, ``theta`` and every diagnostic), so the process memory does not grow with the
number of save points or solver steps. At each checkpoint an atomic ``checkpoint.npz`` is written (grid index,
dual state z, τ, next step size, statistics so far; written to a temporary file and moved into place with
``os.replace``) and ``trajectory.json`` is rewritten, so a run killed at any moment (even by SIGKILL: the rows
live in the kernel's page cache and survive the process) can be loaded as it stood and resumed.

Directory layout::

    DIR/run.json          how to rebuild the run (model, potential, loss, simulate arguments)
    DIR/data.npz          X, y (and theta0 when one was given)
    DIR/stream/*.npy      s, z, theta, diag__<name>: rows 0..n_saved-1 are valid
    DIR/checkpoint.npz    last checkpoint (atomic)
    DIR/trajectory.json   status, stats, config, ``"storage": "stream"``, ``"n_saved"`` (rewritten at every
                          checkpoint)

Every file is readable with numpy and json alone.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._json import jsonable
from ..errors import InvalidParameterError, TrajectoryFileError

__all__ = [
    "FORMAT_VERSION",
    "STREAM_DIR",
    "DEFAULT_CHECKPOINT_EVERY",
    "RowStore",
    "RunDirectory",
    "Checkpoint",
    "stream_arrays",
]

FORMAT_VERSION = 1
STREAM_DIR = "stream"
DEFAULT_CHECKPOINT_EVERY = 50


def atomic_write_bytes(path: Path, writer: Callable[[Any], None]) -> None:
    """Write ``path`` through ``writer(fh)`` into a temporary file, fsync it and move it into place."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        writer(fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write_bytes` of a text (UTF-8)."""
    atomic_write_bytes(path, lambda fh: fh.write(text.encode()))


class RowStore:
    """Preallocated ``.npy`` row store, one file per array; rows are written with ``os.pwrite``.

    Files are created at full size (``capacity`` rows, sparse on disk) with a standard ``.npy`` header, so numpy
    reads them (memory-mapped) without flowsim. Rows are written through the page cache, which survives
    SIGKILL of the process; :meth:`sync` (at checkpoints) also makes them survive a crash of the machine.
    Nothing is mapped into the writing process, so its resident memory does not grow with the rows.

    Raises:
        TrajectoryFileError: when reopening (``fresh=False``) files whose row count is not ``capacity``.
    """

    def __init__(self, root: Path, capacity: int, p: int, *, fresh: bool) -> None:
        self.root = root
        self.capacity = capacity
        root.mkdir(parents=True, exist_ok=True)
        self.files: dict[str, tuple[int, int, int, np.dtype]] = {}  # name -> (fd, offset, row bytes, dtype)
        if fresh:
            for f in root.glob("*.npy"):
                f.unlink()
            self._create("s", (), np.dtype(np.float64))
            self._create("z", (p,), np.dtype(np.float64))
            self._create("theta", (p,), np.dtype(np.float64))
        else:
            for f in sorted(root.glob("*.npy")):
                m = np.load(f, mmap_mode="r")
                if m.shape[0] != capacity:
                    raise TrajectoryFileError(
                        f"{f}: {m.shape[0]} rows stored, this run needs {capacity}; the save grid changed"
                    )
                self._open(f.stem, m)
                del m

    def _open(self, name: str, m: np.memmap) -> None:
        row = int(np.prod(m.shape[1:], dtype=np.int64)) * m.dtype.itemsize
        fd = os.open(self.root / f"{name}.npy", os.O_RDWR)
        self.files[name] = (fd, int(m.offset), row, m.dtype)

    def _create(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
        m = np.lib.format.open_memmap(self.root / f"{name}.npy", mode="w+", dtype=dtype, shape=(self.capacity, *shape))
        self._open(name, m)
        del m

    def write(self, row: int, values: dict[str, np.ndarray]) -> None:
        """Write rows ``row, row + 1, ...`` of every named array (a new name creates its file)."""
        for name, v in values.items():
            v = np.asarray(v)
            if name not in self.files:
                self._create(name, v.shape[1:], np.dtype(np.float64) if v.dtype.kind == "f" else v.dtype)
            fd, offset, size, dtype = self.files[name]
            data = np.ascontiguousarray(v, dtype=dtype).tobytes()
            os.pwrite(fd, data, offset + row * size)

    def sync(self) -> None:
        for fd, *_ in self.files.values():
            os.fsync(fd)

    def close(self) -> None:
        for fd, *_ in self.files.values():
            os.close(fd)
        self.files.clear()


def stream_arrays(path: Path, n_saved: int) -> dict[str, np.ndarray]:
    """The first ``n_saved`` rows of every array streamed under ``path`` (memory-mapped copy-on-write: edits
    never reach the files).

    Raises:
        TrajectoryFileError: if ``s``, ``z`` or ``theta`` is missing.
    """
    root = path / STREAM_DIR
    arrays = {f.stem: np.load(f, mmap_mode="c")[:n_saved] for f in sorted(root.glob("*.npy"))}
    for key in ("s", "z", "theta"):
        if key not in arrays:
            raise TrajectoryFileError(f"{root} has no {key}.npy: not a complete streamed trajectory")
    return arrays


@dataclass
class Checkpoint:
    """The state a streamed run restarts from: grid index ``k``, dual state ``z`` `(p,)` at τ = grid[k], the
    next step size (None: the driver's own first step), driver statistics, RHS evaluations and wall time so far."""

    k: int
    z: np.ndarray
    next_dt: float | None
    stats: dict[str, Any]
    nfe: int
    wall: float


class RunDirectory:
    """The files of one streamed run directory (see the module docstring for the layout)."""

    def __init__(self, out: str | os.PathLike) -> None:
        self.path = Path(out)

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoint.npz"

    def start(self, spec: dict[str, Any], data_arrays: dict[str, np.ndarray]) -> None:
        """A fresh run: drop a previous run's trajectory and checkpoint, write ``run.json`` and ``data.npz``."""
        for stale in ("trajectory.npz", "checkpoint.npz"):
            (self.path / stale).unlink(missing_ok=True)
        atomic_write_text(self.path / "run.json", json.dumps(jsonable(spec), indent=2))
        atomic_write_bytes(self.path / "data.npz", lambda fh: np.savez(fh, **data_arrays))

    def read_checkpoint(self, config_json: dict[str, Any], data_arrays: dict[str, np.ndarray]) -> Checkpoint:
        """The last checkpoint, after checking that it belongs to the same configuration and data.

        Raises:
            InvalidParameterError: when the stored configuration or data differ from this call's.
        """
        with np.load(self.checkpoint_path) as ck:
            stored_cfg = json.loads(str(ck["config"]))
            if _comparable(stored_cfg) != _comparable(config_json) or not self._same_data(data_arrays):
                diff = sorted(k for k in set(stored_cfg) | set(config_json) if stored_cfg.get(k) != config_json.get(k))
                raise InvalidParameterError(
                    f"cannot resume {self.path}: it was started with a different configuration (differs in "
                    f"{diff}); call flowsim.resume(DIR) to continue it as it was, or use another out directory"
                )
            nd = float(ck["next_dt"])
            return Checkpoint(
                k=int(ck["k"]),
                z=ck["z"],
                next_dt=nd if np.isfinite(nd) else None,
                stats=json.loads(str(ck["stats"])),
                nfe=int(ck["nfe"]),
                wall=float(ck["wall"]),
            )

    def write_checkpoint(
        self, k: int, z: np.ndarray, tau: float, next_dt, stats, nfe: int, wall: float, config_json
    ) -> None:
        payload = {
            "k": np.int64(k),
            "z": z,
            "tau": np.float64(tau),
            "next_dt": np.float64(next_dt if next_dt is not None else np.nan),
            "stats": np.array(json.dumps(jsonable(stats))),
            "nfe": np.int64(nfe),
            "wall": np.float64(wall),
            "config": np.array(json.dumps(config_json)),
        }
        atomic_write_bytes(self.checkpoint_path, lambda fh: np.savez(fh, **payload))

    def write_meta(self, n_saved: int, status: str, message: str, stats, config, metadata) -> None:
        """``trajectory.json`` of the rows stored so far (``status``: a :class:`~flowsim.results.Status` value)."""
        meta = {
            "format_version": FORMAT_VERSION,
            "storage": "stream",
            "n_saved": int(n_saved),
            "status": status,
            "message": message,
            "stats": jsonable(stats),
            "config": jsonable(config),
            "metadata": jsonable(metadata),
        }
        atomic_write_text(self.path / "trajectory.json", json.dumps(meta, indent=2))

    def stored_s(self, row: int) -> float:
        """Log-time s of a stored row."""
        return float(np.load(self.path / STREAM_DIR / "s.npy", mmap_mode="r")[row])

    def read_meta(self) -> dict[str, Any]:
        return json.loads((self.path / "trajectory.json").read_text())

    def read_run(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """``run.json`` and the arrays of ``data.npz``.

        Raises:
            TrajectoryFileError: if the directory holds no resumable run (no ``run.json``).
        """
        rj = self.path / "run.json"
        if not rj.exists():
            raise TrajectoryFileError(
                f"{self.path} holds no resumable run (no run.json); start it with flowsim.simulate(..., out=DIR)"
            )
        spec = json.loads(rj.read_text())
        with np.load(self.path / "data.npz") as d:
            arrays = {k: d[k] for k in d.files}
        return spec, arrays

    def _same_data(self, arrays: dict[str, np.ndarray]) -> bool:
        try:
            with np.load(self.path / "data.npz") as d:
                return all(k in d.files and np.array_equal(d[k], v) for k, v in arrays.items())
        except OSError:
            return False


def _comparable(cfg: dict[str, Any]) -> dict[str, Any]:
    """Config without free-form data descriptions (the data arrays themselves are compared)."""
    out = dict(cfg)
    data = out.get("data", {})
    out["data"] = {"n": data.get("n"), "d": data.get("d")}
    return out
