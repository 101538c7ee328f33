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
    DIR/.flowsim.lock     while a run writes to DIR: its pid, host and start time (:func:`locked_folder`)

Every file is readable with numpy and json alone. While a run is going (or after SIGKILL) the ``.npy`` files hold
their full preallocated row count; a run that returns (finished, failed or interrupted) trims them to its
``n_saved`` rows. A second run into a folder that a live run holds is refused (:class:`RunFolderError` naming
the holder); a lock left by a dead process is taken over. A damaged file (truncated, not JSON/npz) raises
:class:`RunFolderError` naming the file and what to do.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._json import jsonable
from ..errors import InvalidParameterError, RunFolderError, TrajectoryFileError

try:
    import fcntl
except ImportError:  # pragma: no cover - (not POSIX: the lock file's pid is checked instead)
    fcntl = None

__all__ = [
    "FORMAT_VERSION",
    "STREAM_DIR",
    "DEFAULT_CHECKPOINT_EVERY",
    "RowStore",
    "RunDirectory",
    "Checkpoint",
    "stream_arrays",
    "read_json",
    "damaged",
    "LOCK_FILE",
    "prepare_out_dir",
    "locked_folder",
]

FORMAT_VERSION = 1
STREAM_DIR = "stream"
DEFAULT_CHECKPOINT_EVERY = 50
LOCK_FILE = ".flowsim.lock"

_RESTART_FIX = (
    "delete {dir}/checkpoint.npz and resume to restart the run from t = 0 (flowsim run --resume DIR, or "
    "flowsim.resume(DIR)), or start it again in another folder"
)
_REBUILD_FIX = (
    "the run cannot be rebuilt without it: start it again (flowsim.simulate(..., out=DIR) or flowsim run --out DIR), "
    "in a new folder or after deleting this one"
)

# what can go wrong reading a damaged file: truncated npz/npy (BadZipFile, EOFError, ValueError), bad JSON
_DAMAGED = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)


def damaged(path: Path, error: BaseException, fix: str) -> RunFolderError:
    """The error for a damaged file ``path``: what was wrong with it and ``fix`` (what to do)."""
    return RunFolderError(f"{path} is damaged or truncated ({type(error).__name__}: {str(error)[:200]}); {fix}")


def read_json(path: Path, fix: str, what: str = "a JSON object") -> dict[str, Any]:
    """The JSON object (a dict) stored in ``path``, the one reader of a run folder's JSON files (``what``: the
    expected contents, for the message).

    Raises:
        RunFolderError: the file cannot be read, is not JSON (garbage, truncated) or not a JSON object; the
            message names the file and says ``fix`` (what to do).
    """
    try:
        value = json.loads(path.read_text())
        if not isinstance(value, dict):
            raise ValueError(f"a JSON {type(value).__name__}, not {what}")
    except _DAMAGED as e:
        raise damaged(path, e, fix) from e
    return value


# files that mark a folder as holding an earlier experiment's or run's results (flowsim run, compare, vision;
# a simulate run's folder)
RESULT_MARKERS = ("config.json", "summary.csv", "summary.json", "compare.csv", "run.json")


def holds_results(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds an earlier experiment's or run's results (one of :data:`RESULT_MARKERS`)."""
    p = Path(folder)
    return p.is_dir() and any((p / name).exists() for name in RESULT_MARKERS)


def new_output_folder(given: str | os.PathLike | None, default: Path, overwrite: bool = False) -> Path:
    """The output folder of a new experiment (``flowsim run``, ``compare``), which never replaces an earlier
    one's results unasked.

    Args:
        given: ``--out DIR``, or None.
        default: the folder when none is given (``flowsim_runs/<experiment name>``); where it holds results, the
            first free ``<default>-2``, ``<default>-3``, … instead.
        overwrite: ``--overwrite``: ``given`` may hold results (they are replaced file by file).

    Raises:
        RunFolderError: ``given`` holds results (:func:`holds_results`) and ``overwrite`` is False (or a live
            run holds it: :func:`locked_folder`'s error, which names that run).
    """
    if given is not None:
        if not overwrite and holds_results(given):
            with locked_folder(given, what="experiment"):  # a run still writing there: its "in use" error first
                pass
            raise RunFolderError(
                f"{given} holds an earlier experiment's results; give another --out DIR, --resume {given} to "
                "continue it, or --overwrite to replace them"
            )
        return Path(given)
    out, k = default, 1
    while holds_results(out):
        k += 1
        out = default.with_name(f"{default.name}-{k}")
    return out


def prepare_out_dir(path: str | os.PathLike) -> Path:
    """Create the output folder ``path`` (and its parents) and check that files can be written in it, before
    any work is done.

    Raises:
        RunFolderError: ``path`` (or a part of it) is a file, or the folder cannot be created or written to.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise RunFolderError(
            f"the output folder {p} is a file, not a folder; give a folder path (--out DIR or out=DIR; it is "
            "created if missing) or move the file away"
        )
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        why = "a part of the path is a file" if isinstance(e, FileExistsError | NotADirectoryError) else e.strerror
        raise RunFolderError(
            f"cannot create the output folder {p}: {why}; give a folder you can write to (--out DIR or out=DIR)"
        ) from e
    probe = p / f".flowsim-write-test-{os.getpid()}"
    try:
        os.close(os.open(probe, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600))
        probe.unlink()
    except OSError as e:
        raise RunFolderError(
            f"the output folder {p} is not writable ({e.strerror}); give a folder you can write to "
            "(--out DIR or out=DIR) or fix its permissions"
        ) from e
    return p


def _holder(fd: int) -> str:
    """The lock file's description of the process holding it."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "a process that wrote no details"
    return f"pid {info.get('pid')} on host {info.get('host')}, started {info.get('started')}"


def _pid_alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _take_lock(path: Path) -> int | None:
    """An open descriptor of ``path`` holding its lock, or None when a live process holds it."""
    for _ in range(20):  # the holder may unlink the file between our open and flock: retry on a fresh file
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return _refuse(fd)
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
        else:  # pragma: no cover - no flock: a live pid on this host holds it
            info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
            mine = info.get("pid") == os.getpid()
            if info.get("host") == socket.gethostname() and _pid_alive(info.get("pid")) and not mine:
                return _refuse(fd)
        return fd
    raise RunFolderError(f"could not lock {path}: it keeps being replaced; is another run starting there?")


def _refuse(fd: int) -> None:
    os.close(fd)
    return None


@contextlib.contextmanager
def locked_folder(path: str | os.PathLike, *, what: str = "run") -> Iterator[Path]:
    """Prepare the output folder (:func:`prepare_out_dir`) and hold its lock (``DIR/.flowsim.lock``: pid, host,
    start time) while the block runs, so that a second run into the same folder fails at once.

    The lock is an OS file lock (``flock``), released by the kernel when its process ends, even by SIGKILL: a
    lock file left by a dead process is taken over. Child processes forked inside the block share the lock.

    Raises:
        RunFolderError: the folder is unusable (see :func:`prepare_out_dir`) or another live run holds it.
    """
    folder = prepare_out_dir(path)
    lock = folder / LOCK_FILE
    fd = _take_lock(lock)
    if fd is None:
        fd2 = os.open(lock, os.O_RDONLY)
        try:
            holder = _holder(fd2)
        finally:
            os.close(fd2)
        raise RunFolderError(
            f"{folder} is in use by another flowsim {what} ({holder}); wait for it to end or stop it, or write to "
            f"another folder (--out DIR or out=DIR). If no such process runs, delete {lock}"
        )
    info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)
    try:
        yield folder
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()
        os.close(fd)


def _set_rows(fd: int, offset: int, rows: int) -> None:
    """Rewrite the row count in a ``.npy`` header in place (padding keeps the header's length)."""
    head = os.pread(fd, offset, 0)
    start = 10 if head[6] == 1 else 12  # magic, version, then a 2- (v1) or 4-byte header length
    text = head[start:].decode("latin1")
    body = re.sub(r"'shape': \(\d+,", f"'shape': ({rows},", text, count=1).rstrip(" \n")
    pad = len(text) - len(body) - 1
    if pad < 0:  # pragma: no cover - the header was written for at least as many digits
        raise TrajectoryFileError(f"cannot rewrite the .npy header of {rows} rows in place")
    os.pwrite(fd, head[:start] + (body + " " * pad + "\n").encode("latin1"), 0)


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

    :meth:`close` trims the files to the rows written (and a reopened store grows trimmed files back to
    ``capacity``), so that files of a returned run hold exactly its save points.

    Raises:
        TrajectoryFileError: when reopening (``fresh=False``) files of more rows than ``capacity``.
        RunFolderError: when reopening a damaged (truncated) file.
    """

    def __init__(self, root: Path, capacity: int, p: int, *, fresh: bool) -> None:
        self.root = root
        self.capacity = capacity
        root.mkdir(parents=True, exist_ok=True)
        self.files: dict[str, tuple[int, int, int, np.dtype]] = {}  # name -> (fd, offset, row bytes, dtype)
        self.rows_end = 0  # rows to keep at close (0: none written and the files as they were)
        if fresh:
            for f in root.glob("*.npy"):
                f.unlink()
            self._create("s", (), np.dtype(np.float64))
            self._create("z", (p,), np.dtype(np.float64))
            self._create("theta", (p,), np.dtype(np.float64))
        else:
            for f in sorted(root.glob("*.npy")):
                try:
                    m = np.load(f, mmap_mode="r")
                except _DAMAGED as e:
                    raise damaged(f, e, _RESTART_FIX.format(dir=root.parent)) from e
                if m.shape[0] > capacity:
                    raise TrajectoryFileError(
                        f"{f}: {m.shape[0]} rows stored, this run needs {capacity}; the save grid changed"
                    )
                self._open(f.stem, m)
                if m.shape[0] < capacity:  # trimmed when its run returned: back to full size
                    self.rows_end = max(self.rows_end, m.shape[0])
                    self._resize(f.stem, capacity)
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
            self.rows_end = max(self.rows_end, row + len(v))

    def _resize(self, name: str, rows: int) -> None:
        fd, offset, size, _ = self.files[name]
        _set_rows(fd, offset, rows)
        os.ftruncate(fd, offset + rows * size)

    def sync(self) -> None:
        for fd, *_ in self.files.values():
            os.fsync(fd)

    def close(self) -> None:
        """Trim the files to the rows written (none written to a reopened store: left as they are), close them."""
        for name, (fd, *_) in self.files.items():
            if self.rows_end:
                self._resize(name, self.rows_end)
            os.close(fd)
        self.files.clear()


def stream_arrays(path: Path, n_saved: int) -> dict[str, np.ndarray]:
    """The first ``n_saved`` rows of every array streamed under ``path`` (memory-mapped copy-on-write: edits
    never reach the files).

    Raises:
        TrajectoryFileError: if ``s``, ``z`` or ``theta`` is missing.
        RunFolderError: a damaged (truncated) file.
    """
    root = path / STREAM_DIR
    arrays = {}
    for f in sorted(root.glob("*.npy")):
        try:
            arrays[f.stem] = np.load(f, mmap_mode="c")[:n_saved]
        except _DAMAGED as e:
            raise damaged(f, e, _RESTART_FIX.format(dir=path)) from e
        if len(arrays[f.stem]) < n_saved:
            raise damaged(
                f, ValueError(f"{len(arrays[f.stem])} rows, {n_saved} expected"), _RESTART_FIX.format(dir=path)
            )
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
            RunFolderError: a damaged checkpoint (truncated, not an npz, missing entries).
        """
        try:
            return self._read_checkpoint(config_json, data_arrays)
        except _DAMAGED as e:
            if isinstance(e, InvalidParameterError | RunFolderError):
                raise
            raise damaged(self.checkpoint_path, e, _RESTART_FIX.format(dir=self.path)) from e

    def _read_checkpoint(self, config_json: dict[str, Any], data_arrays: dict[str, np.ndarray]) -> Checkpoint:
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
        f = self.path / STREAM_DIR / "s.npy"
        try:
            return float(np.load(f, mmap_mode="r")[row])
        except _DAMAGED as e:
            raise damaged(f, e, _RESTART_FIX.format(dir=self.path)) from e

    def read_meta(self) -> dict[str, Any]:
        """``trajectory.json``.

        Raises:
            RunFolderError: a damaged file (not JSON).
        """
        return read_json(self.path / "trajectory.json", _RESTART_FIX.format(dir=self.path))

    def read_run(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """``run.json`` and the arrays of ``data.npz``.

        Raises:
            TrajectoryFileError: if the directory holds no resumable run (no ``run.json``).
            RunFolderError: ``run.json`` or ``data.npz`` damaged (not JSON, truncated).
        """
        rj = self.path / "run.json"
        if not rj.exists():
            raise TrajectoryFileError(
                f"{self.path} holds no resumable run (no run.json); start it with flowsim.simulate(..., out=DIR)"
            )
        what = "a run description (model, potential, kwargs)"
        spec = read_json(rj, _REBUILD_FIX, what)
        if not {"model", "potential", "kwargs"} <= set(spec):
            raise damaged(rj, ValueError(f"not {what}"), _REBUILD_FIX)
        try:
            with np.load(self.path / "data.npz") as d:
                arrays = {k: d[k] for k in d.files}
        except _DAMAGED as e:
            raise damaged(self.path / "data.npz", e, _REBUILD_FIX) from e
        return spec, arrays

    def _same_data(self, arrays: dict[str, np.ndarray]) -> bool:
        try:
            with np.load(self.path / "data.npz") as d:
                return all(k in d.files and np.array_equal(d[k], v) for k, v in arrays.items())
        except _DAMAGED:
            return False


def _comparable(cfg: dict[str, Any]) -> dict[str, Any]:
    """Config without free-form data descriptions (the data arrays themselves are compared)."""
    out = dict(cfg)
    data = out.get("data", {})
    out["data"] = {"n": data.get("n"), "d": data.get("d")}
    return out
