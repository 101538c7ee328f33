"""Streaming long runs to disk, atomic checkpoints, and resuming a killed run.

A run with ``simulate(..., out=DIR)`` writes its save points as they come into preallocated,
memory-mapped ``.npy`` files (one per array: ``s``, ``z``, ``theta`` and every diagnostic), in flushes of at
most ``flush_every`` rows, so the process memory does not grow with the number of save points or solver
steps. Every ``checkpoint_every`` save points the solver is **restarted** from the state just saved, with
the step size it would have taken next, and an atomic checkpoint is written (``checkpoint.npz``:
grid index, dual state z, τ, next step size, statistics so far; written to a temporary file and moved into
place with ``os.replace``). Restarting in the uninterrupted run too makes the computation after a
checkpoint independent of what came before it: a run killed at any moment (even by SIGKILL — the rows
written through the memory map live in the kernel's page cache and survive the process) and resumed
with :func:`resume` or ``simulate(..., out=DIR, resume=True)`` or ``flowsim run --resume DIR`` repeats
exactly the same arithmetic and ends with the same trajectory (bit for bit on a deterministic
single-threaded CPU run).

Directory layout::

    DIR/run.json          how to rebuild the run (model, potential, loss, simulate arguments)
    DIR/data.npz          X, y (and theta0 when one was given)
    DIR/stream/*.npy      s, z, theta, diag__<name>: rows 0..n_saved-1 are valid
    DIR/checkpoint.npz    last checkpoint (atomic)
    DIR/trajectory.json   status, stats, config, ``"storage": "stream"``, ``"n_saved"`` (rewritten at every
                          checkpoint, so a killed run can be loaded as it stood)

:meth:`flowsim.trajectory.Trajectory.load` reads streamed runs (memory-mapped, copy-on-write).
"""

from __future__ import annotations

import json
import os
import time as _time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._json import jsonable
from ..errors import InvalidParameterError, TrajectoryFileError
from ..timegrid import log_t_from_s
from .trajectory import FORMAT_VERSION, Status, Trajectory, environment_metadata

__all__ = ["resume", "run_streamed", "load_streamed", "STREAM_DIR", "DEFAULT_CHECKPOINT_EVERY"]

STREAM_DIR = "stream"
DEFAULT_CHECKPOINT_EVERY = 50
_LAST_KEYS = ("last_dt", "next_dt")


def _atomic_write_bytes(path: Path, writer: Callable[[Any], None]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        writer(fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _atomic_write_text(path: Path, text: str) -> None:
    _atomic_write_bytes(path, lambda fh: fh.write(text.encode()))


def merge_stats(total: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """Accumulate one driver segment's stats: counts add up, ``last_*``/``next_*`` and non-numbers are replaced."""
    out = dict(total)
    for k, v in part.items():
        if k.startswith(("last_", "next_")) or k in _LAST_KEYS or isinstance(v, bool):
            out[k] = v
        elif isinstance(v, int | float) and isinstance(out.get(k), int | float) and not isinstance(out[k], bool):
            out[k] = out[k] + v
        else:
            out[k] = v
    return out


class _Store:
    """Preallocated ``.npy`` row store, one file per array; rows are written with ``os.pwrite``.

    Files are created at full size (N + 1 rows, sparse on disk) with a standard ``.npy`` header, so numpy
    reads them (memory-mapped) without flowsim. Rows are written through the page cache, which survives
    SIGKILL of the process; :meth:`sync` (at checkpoints) also makes them survive a crash of the machine.
    Nothing is mapped into the writing process, so its resident memory does not grow with the rows.
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


def load_streamed(path: Path, meta: dict[str, Any]) -> Trajectory:
    """Trajectory of a streamed run directory (arrays memory-mapped copy-on-write: edits never reach the files)."""
    root = path / STREAM_DIR
    n = int(meta["n_saved"])
    arrays = {f.stem: np.load(f, mmap_mode="c")[:n] for f in sorted(root.glob("*.npy"))}  # copy-on-write
    for key in ("s", "z", "theta"):
        if key not in arrays:
            raise TrajectoryFileError(f"{root} has no {key}.npy: not a complete streamed trajectory")
    return Trajectory.from_arrays(arrays, meta)


def _write_meta(path: Path, n_saved: int, status: Status, message: str, stats, config, metadata) -> None:
    meta = {
        "format_version": FORMAT_VERSION,
        "storage": "stream",
        "n_saved": int(n_saved),
        "status": status.value,
        "message": message,
        "stats": jsonable(stats),
        "config": jsonable(config),
        "metadata": jsonable(metadata),
    }
    _atomic_write_text(path / "trajectory.json", json.dumps(meta, indent=2))


class SaveProgress:
    """Progress reporting at every saved state: a tqdm bar on log t (``progress=True``) or a user callable
    ``progress(log_t, nfe)`` (log t of the saved state, RHS evaluations so far).

    A callable that raises is reported once (a RuntimeWarning) and not called again: the run goes on.
    """

    def __init__(self, progress, total: int, initial: int, time: str) -> None:
        self.time = time
        self.bar = None
        self.fn = progress if callable(progress) else None
        if self.fn is None and progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc="mirror flow", unit="save", dynamic_ncols=True)

    def update(self, tau: float, nfe: int) -> None:
        if self.bar is None and self.fn is None:
            return
        s_now = tau if self.time == "log" else float(np.log1p(tau))
        log_t = float(log_t_from_s(s_now))
        if self.bar is not None:
            self.bar.set_postfix_str(f"log t={log_t:.4g} nfe={nfe}")
            self.bar.update(1)
        if self.fn is not None:
            try:
                self.fn(log_t, int(nfe))
            except Exception as e:  # noqa: BLE001 - a monitoring hook must not take the run down
                import warnings

                warnings.warn(f"progress callable raised {type(e).__name__}: {e}; not called again", RuntimeWarning)
                self.fn = None

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_streamed(
    *,
    out: str | os.PathLike,
    make_driver: Callable[[dict, int], Any],
    run_driver: Callable[[Any, Any, torch.Tensor, torch.Tensor, Callable], tuple[Status, str]],
    field,
    z0: torch.Tensor,
    tau_grid: np.ndarray,
    time: str,
    config: dict[str, Any],
    spec: dict[str, Any],
    data_arrays: dict[str, np.ndarray],
    model,
    potential,
    loss,
    X: torch.Tensor,
    y: torch.Tensor,
    solver_options: dict | None,
    diagnostics: bool,
    active_threshold: float,
    progress: bool | Callable[[float, int], None],
    checkpoint_every: int | None,
    resume: bool,
    flush_every: int = 128,
) -> Trajectory:
    """Integrate over ``tau_grid`` streaming rows to ``out`` with checkpoints; used by :func:`flowsim.simulate`.

    Args:
        out: run directory.
        make_driver: ``(options, max_steps) -> driver``: a fresh driver per segment between checkpoints, given
            the remaining budget of accepted steps (``spec["kwargs"]["max_steps"]`` in all).
        run_driver: ``(driver, field, z, tau_segment, save) -> (status, message)``, integrating one segment
            and turning failures into statuses.
        field: the mirror-flow field (its ``nfe`` counts RHS evaluations).
        z0: initial dual state, shape `(p,)`.
        tau_grid: the save grid in the integration variable τ (s for log-time, t for plain time), `(N,)`.
        time: "log" or "linear".
        config: the run's config (stored and compared on resume).
        spec: JSON-able description that :func:`resume` needs to rebuild the call.
        data_arrays: ``X``, ``y`` (and ``theta0``) as numpy arrays, written to ``data.npz``.
        model, potential, loss, X, y: for the diagnostics.
        solver_options: user solver options (``first_step`` is added at restarts).
        diagnostics, active_threshold: as in :func:`flowsim.simulate`.
        progress: tqdm bar on log t, or a callable (:class:`SaveProgress`).
        checkpoint_every: save points between checkpoints (None: ``DEFAULT_CHECKPOINT_EVERY``; 0: none).
        resume: continue from ``out/checkpoint.npz`` when it exists.
        flush_every: rows buffered in memory before they are written.

    Returns:
        The :class:`~flowsim.trajectory.Trajectory` (memory-mapped arrays).

    Raises:
        InvalidParameterError: when resuming a run whose stored configuration differs from this call's.
    """
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    every = DEFAULT_CHECKPOINT_EVERY if checkpoint_every is None else int(checkpoint_every)
    if every < 0:
        raise InvalidParameterError(f"checkpoint_every must be ≥ 0 save points (0: no checkpoints), got {every}")
    N = len(tau_grid)
    s_grid = tau_grid if time == "log" else np.log1p(tau_grid)
    p = int(z0.shape[0])
    dev, dtype = z0.device, z0.dtype
    ck_path = path / "checkpoint.npz"
    cfg_json = json.loads(json.dumps(jsonable(config)))
    metadata = environment_metadata()

    start_k, z_start, stats_prev, nfe_prev, wall_prev, next_dt = 0, z0.detach().clone(), {}, 0, 0.0, None
    fresh = True
    if resume and ck_path.exists():
        with np.load(ck_path) as ck:
            stored_cfg = json.loads(str(ck["config"]))
            if _comparable(stored_cfg) != _comparable(cfg_json) or not _same_data(path, data_arrays):
                diff = sorted(k for k in set(stored_cfg) | set(cfg_json) if stored_cfg.get(k) != cfg_json.get(k))
                raise InvalidParameterError(
                    f"cannot resume {path}: it was started with a different configuration (differs in {diff}); "
                    "call flowsim.resume(DIR) to continue it as it was, or use another out directory"
                )
            start_k = int(ck["k"])
            z_start = torch.as_tensor(ck["z"], dtype=dtype, device=dev)
            stats_prev = json.loads(str(ck["stats"]))
            nfe_prev = int(ck["nfe"])
            wall_prev = float(ck["wall"])
            nd = float(ck["next_dt"])
            next_dt = nd if np.isfinite(nd) else None
        fresh = False
    else:
        for stale in ("trajectory.npz", "checkpoint.npz"):
            (path / stale).unlink(missing_ok=True)
        _atomic_write_text(path / "run.json", json.dumps(jsonable(spec), indent=2))
        _atomic_write_bytes(path / "data.npz", lambda fh: np.savez(fh, **data_arrays))

    store = _Store(path / STREAM_DIR, N + 1, p, fresh=fresh)
    theta0_ref = potential.inverse_mirror_map(z0.detach()).reshape(1, -1)
    buf_tau: list[float] = []
    buf_z: list[torch.Tensor] = []
    n_written = start_k + 1 if not fresh else 0
    last_z = {"z": z_start}
    last_saved = {"tau": float(tau_grid[start_k])}

    def flush() -> None:
        nonlocal n_written
        if not buf_tau:
            return
        tau = np.asarray(buf_tau, dtype=np.float64)
        zz = torch.stack(buf_z)
        th = potential.inverse_mirror_map(zz)
        s_rows = tau if time == "log" else np.log1p(tau)
        rows = {"s": s_rows, "z": zz.detach().cpu().numpy(), "theta": th.detach().cpu().numpy()}
        if diagnostics:
            # prepend θ₀ so that drifts (balance) are measured against the initial state, as in memory
            d = _diagnostics(
                model,
                potential,
                loss,
                X,
                y,
                torch.cat([theta0_ref, th]),
                np.concatenate([[0.0], s_rows]),
                active_threshold,
            )
            rows.update({f"diag__{k}": v[1:] for k, v in d.items()})
        store.write(n_written, rows)  # through the page cache: survives SIGKILL; msync at checkpoints
        n_written += len(buf_tau)
        buf_tau.clear()
        buf_z.clear()

    bar: SaveProgress | None = None

    def save(tau: float, z: torch.Tensor) -> None:
        buf_tau.append(float(tau))
        zc = z.detach().clone()
        buf_z.append(zc)
        last_z["z"] = zc
        last_saved["tau"] = float(tau)
        if len(buf_tau) >= flush_every:
            flush()
        if bar is not None:
            bar.update(tau, nfe_prev + field.nfe)

    if fresh:
        save(float(tau_grid[0]), z0)
    stats = dict(stats_prev)
    status, message = Status.SUCCESS, Status.SUCCESS.hint
    t_start = _time.perf_counter()
    field.nfe = 0
    if progress:
        bar = SaveProgress(progress, N - 1, start_k, time)
    k = start_k
    driver = None
    try:
        while k < N - 1:
            k_end = min(k + every, N - 1) if every > 0 else N - 1
            opts = dict(solver_options or {})
            if next_dt is not None and "first_step" not in opts:
                opts["first_step"] = next_dt
            budget = int(spec["kwargs"]["max_steps"]) - int(stats.get("n_accepted") or 0)
            driver = make_driver(opts, max(budget, 1))
            seg = torch.as_tensor(tau_grid[k : k_end + 1], dtype=torch.float64, device=dev)
            status, message = run_driver(driver, field, last_z["z"].to(dtype), seg, save)
            seg_stats = driver.stats()
            stats = merge_stats(stats, seg_stats)
            if status != Status.SUCCESS:
                break
            k = k_end
            nd = seg_stats.get("next_dt")
            next_dt = float(nd) if nd is not None and np.isfinite(nd) and nd > 0 else None
            if every > 0:
                flush()
                store.sync()
                wall = wall_prev + _time.perf_counter() - t_start
                total = {"nfe": nfe_prev + field.nfe, **stats, "wall_time": wall}
                total["final_log_t"] = float(log_t_from_s(s_grid[k]))
                _checkpoint(ck_path, k, last_z["z"], tau_grid[k], next_dt, stats, nfe_prev + field.nfe, wall, cfg_json)
                msg = "running or killed: resume with flowsim.resume(DIR)" if k < N - 1 else Status.SUCCESS.hint
                st = Status.INTERRUPTED if k < N - 1 else Status.SUCCESS
                _write_meta(path, n_written, st, msg, total, config, metadata)
    finally:
        if bar is not None:
            bar.close()
    if status != Status.SUCCESS and driver is not None:  # keep the last accepted solver state
        last = driver.last_state()
        if last is not None and last[0] > last_saved["tau"] and bool(torch.isfinite(last[1]).all()):
            save(last[0], last[1])
    flush()
    store.sync()
    store.close()
    wall = wall_prev + _time.perf_counter() - t_start
    total = {"nfe": nfe_prev + field.nfe, **stats, "wall_time": wall}
    s_last = float(np.load(path / STREAM_DIR / "s.npy", mmap_mode="r")[n_written - 1])
    total["final_log_t"] = float(log_t_from_s(s_last))
    total["checkpoint_every"] = every
    _write_meta(path, n_written, status, message, total, config, metadata)
    return load_streamed(path, json.loads((path / "trajectory.json").read_text()))


def _comparable(cfg: dict[str, Any]) -> dict[str, Any]:
    """Config without free-form data descriptions (the data arrays themselves are compared)."""
    out = dict(cfg)
    data = out.get("data", {})
    out["data"] = {"n": data.get("n"), "d": data.get("d")}
    return out


def _same_data(path: Path, arrays: dict[str, np.ndarray]) -> bool:
    try:
        with np.load(path / "data.npz") as d:
            return all(k in d.files and np.array_equal(d[k], v) for k, v in arrays.items())
    except OSError:
        return False


def _diagnostics(model, potential, loss, X, y, theta, s, active_threshold):
    from ..analysis.diagnostics import compute_diagnostics

    return compute_diagnostics(model, potential, loss, X, y, theta, s, active_threshold=active_threshold)


def _checkpoint(path: Path, k: int, z: torch.Tensor, tau: float, next_dt, stats, nfe: int, wall: float, cfg) -> None:
    payload = {
        "k": np.int64(k),
        "z": z.detach().cpu().numpy(),
        "tau": np.float64(tau),
        "next_dt": np.float64(next_dt if next_dt is not None else np.nan),
        "stats": np.array(json.dumps(jsonable(stats))),
        "nfe": np.int64(nfe),
        "wall": np.float64(wall),
        "config": np.array(json.dumps(cfg)),
    }
    _atomic_write_bytes(path, lambda fh: np.savez(fh, **payload))


def resume(out: str | os.PathLike, *, progress: bool = False, **overrides: Any) -> Trajectory:
    """Continue a run streamed to ``out`` from its last checkpoint (e.g. after it was killed).

    Rebuilds the model, potential, loss, data and every :func:`flowsim.simulate` argument from
    ``out/run.json`` and ``out/data.npz`` and calls ``simulate(..., out=out, resume=True)``. A run that had
    finished is returned as it is; one without a checkpoint restarts from t = 0.

    Args:
        out: the run directory given to ``simulate(..., out=...)``.
        progress: tqdm bar on log t.
        **overrides: objects that cannot be rebuilt from JSON (``model=``, ``potential=``, ``loss=``) or
            runtime settings (``threads=``, ``device=``); solver and horizon arguments are fixed by the run.

    Returns:
        The completed (or again failed) :class:`~flowsim.trajectory.Trajectory`.

    Raises:
        TrajectoryFileError: if ``out`` holds no resumable run (no ``run.json``).
        InvalidParameterError: if a built-in object cannot be rebuilt (pass it in ``overrides``).
    """
    from ..data import make_dataset
    from ..models import get_model
    from ..potentials import get_potential
    from ..simulation import simulate

    path = Path(out)
    rj = path / "run.json"
    if not rj.exists():
        raise TrajectoryFileError(
            f"{path} holds no resumable run (no run.json); start it with flowsim.simulate(..., out=DIR)"
        )
    spec = json.loads(rj.read_text())
    with np.load(path / "data.npz") as d:
        arrays = {k: d[k] for k in d.files}
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
    return simulate(model, data, potential, out=path, resume=True, progress=progress, **kwargs)
