"""The recorder of save points: receives each saved state and builds the run's :class:`Trajectory`.

One :class:`Recorder` serves every run kind (:func:`flowsim.simulate`, :func:`flowsim.discrete.mirror_descent`,
:func:`flowsim.ensemble.simulate_ensemble`). It keeps the rows in memory, or streams them to a
:class:`~flowsim.results.store.RowStore` in flushes of at most ``flush_every`` rows, so that the memory of a
streamed run does not grow with the number of save points. θ = ∇Φ*(z) (unless the run gives θ itself) and the
diagnostics are computed from the rows: once at the end in memory, per flush when streaming.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..analysis.diagnostics import compute_diagnostics
from ..potentials import AbstractPotential
from ..timegrid import log_t_from_s
from .store import RowStore, RunDirectory
from .trajectory import Status, Trajectory, environment_metadata, load_streamed

__all__ = ["Recorder", "SaveProgress", "CLOCKS", "diagnostics_function"]

CLOCKS = ("log", "linear", "log_t")  # the saved time variable τ: s = log(1 + t), t, or log t


def diagnostics_function(model, potential, loss, X, y, active_threshold: float) -> Callable[[Tensor, np.ndarray], dict]:
    """``(theta (k, p), s (k,)) -> diagnostics`` of :func:`~flowsim.analysis.diagnostics.compute_diagnostics`."""

    def diagnose(theta: Tensor, s: np.ndarray) -> dict[str, np.ndarray]:
        return compute_diagnostics(model, potential, loss, X, y, theta, s, active_threshold=active_threshold)

    return diagnose


def _s_of(tau: np.ndarray, clock: str) -> np.ndarray:
    """Log-time s = log(1 + t) of saved times in the clock's variable."""
    if clock == "log":
        return tau
    if clock == "linear":
        return np.log1p(tau)
    return np.logaddexp(0.0, tau)


class SaveProgress:
    """Progress reporting at every saved state: a tqdm bar on log t (``progress=True``) or a user callable
    ``progress(log_t, count)`` (log t of the saved state, RHS evaluations so far).

    A callable that raises is reported once (a RuntimeWarning) and not called again: the run goes on.

    Args:
        progress: truthy for a bar, or a callable.
        total, initial: save points in all and already done.
        time: the clock of the saved times (one of :data:`CLOCKS`).
        desc: the bar's label; counter: the name of the count in the bar's postfix.
    """

    def __init__(
        self, progress, total: int, initial: int, time: str, *, desc: str = "mirror flow", counter: str = "nfe"
    ) -> None:
        self.time = time
        self.counter = counter
        self.bar = None
        self.fn = progress if callable(progress) else None
        if self.fn is None and progress:
            from tqdm.auto import tqdm  # only when a bar is asked for: tqdm.auto's import is slow

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="save", dynamic_ncols=True)

    def update(self, tau: float, count: int) -> None:
        if self.bar is None and self.fn is None:
            return
        if self.time == "log_t":
            log_t = tau
        else:
            s_now = tau if self.time == "log" else float(np.log1p(tau))
            log_t = float(log_t_from_s(s_now))
        if self.bar is not None:
            self.bar.set_postfix_str(f"log t={log_t:.4g} {self.counter}={count}")
            self.bar.update(1)
        if self.fn is not None:
            try:
                self.fn(log_t, int(count))
            except Exception as e:  # noqa: BLE001 - a monitoring hook must not take the run down
                warnings.warn(f"progress callable raised {type(e).__name__}: {e}; not called again", RuntimeWarning)
                self.fn = None

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Recorder:
    """Save points (τ, z, optionally θ) of one run, kept in memory or streamed, and the trajectory they make.

    Args:
        potential: Φ, for θ = ∇Φ*(z) of rows saved without θ.
        clock: the variable τ of the saved times: "log" (s), "linear" (t) or "log_t" (log t; then also saved
            exactly as the diagnostic ``log_t``, which s = log(1 + t) loses below t ≈ 1e-16).
        diagnose: ``(theta, s) -> dict`` (:func:`diagnostics_function`), or None for no diagnostics.
        progress: reporting at each saved state, with ``count()`` as its count (attach it any time).
        stream: with ``rows``: the run directory the rows are streamed to (else they stay in memory).
        rows: the row store of ``stream``; ``n_saved`` rows already stored (a resumed run), the last one
            ``last`` = (τ, z).
        theta0: with ``stream``: θ at t = 0, `(1, p)`, prepended to each flush's diagnostics so that drifts
            (balance) are measured against the initial state as in memory.
        flush_every: rows buffered before they are written.

    Attributes:
        wall_every, on_wall: streamed runs: ``on_wall()`` (the run's wall-time checkpoint) is called after a save
            when ``wall_every`` seconds have passed since the rows were last made durable (:meth:`sync`).
    """

    def __init__(
        self,
        potential: AbstractPotential,
        *,
        clock: str = "log",
        diagnose: Callable[[Tensor, np.ndarray], dict] | None = None,
        progress: SaveProgress | None = None,
        count: Callable[[], int] = lambda: 0,
        stream: RunDirectory | None = None,
        rows: RowStore | None = None,
        n_saved: int = 0,
        last: tuple[float, Tensor] | None = None,
        theta0: Tensor | None = None,
        flush_every: int = 128,
    ) -> None:
        if clock not in CLOCKS:
            raise ValueError(f"clock must be one of {CLOCKS}, got {clock!r}")
        self.potential = potential
        self.clock = clock
        self.diagnose = diagnose
        self.progress = progress
        self.count = count
        self.stream, self.rows = stream, rows
        self.n_written = n_saved
        self.theta0 = theta0
        self.flush_every = flush_every
        self._tau: list[float] = []
        self._z: list[Tensor] = []  # blocks `(k, p)`
        self._theta: list[Tensor] = []
        self.last_tau, self.last_z = last if last is not None else (-np.inf, None)
        self.wall_every: float | None = None
        self.on_wall: Callable[[], None] | None = None
        self._durable_at = time.monotonic()

    # ------------------------------------------------------------------ receiving rows
    def save(self, tau: float, z: Tensor, theta: Tensor | None = None, *, report: bool = True) -> None:
        """One saved state: time τ (in the clock's variable), z `(p,)` and, when the run has it, θ `(p,)`."""
        zc = z.detach().clone()
        self._append([float(tau)], zc.unsqueeze(0), None if theta is None else theta.detach().clone().unsqueeze(0))
        self.last_tau, self.last_z = float(tau), zc
        if self.stream is not None and len(self._tau) >= self.flush_every:
            self.flush()
        if report and self.progress is not None:
            self.progress.update(tau, self.count())
        if self.on_wall is not None and self.wall_every and time.monotonic() - self._durable_at >= self.wall_every:
            self.on_wall()  # it calls sync(), which restarts the clock

    def save_rows(self, tau: np.ndarray, z: Tensor, theta: Tensor | None = None) -> None:
        """Several saved states at once (in memory): times `(k,)`, z `(k, p)`, θ `(k, p)` or None."""
        self._append(np.asarray(tau, dtype=np.float64).tolist(), z, theta)
        self.last_tau, self.last_z = float(tau[-1]), z[-1]

    def keep_last_state(self, last: tuple[float, Tensor] | None, *, report: bool) -> None:
        """Save a stopped run's last accepted state (τ, z) when it is beyond the last save and finite."""
        if last is not None and last[0] > self.last_tau and bool(torch.isfinite(last[1]).all()):
            self.save(last[0], last[1], report=report)

    def _append(self, tau: list[float], z: Tensor, theta: Tensor | None) -> None:
        if self._tau and (theta is None) != (not self._theta):
            raise ValueError("save θ with every row or with none")
        self._tau.extend(tau)
        self._z.append(z)
        if theta is not None:
            self._theta.append(theta)

    # ------------------------------------------------------------------ rows to arrays
    def _arrays(self) -> tuple[np.ndarray, np.ndarray, Tensor, Tensor]:
        """τ `(k,)`, s `(k,)`, z and θ `(k, p)` of the rows received since the last flush."""
        tau = np.asarray(self._tau, dtype=np.float64)
        z = torch.cat(self._z)
        theta = torch.cat(self._theta) if self._theta else self.potential.inverse_mirror_map(z)
        return tau, _s_of(tau, self.clock), z, theta

    def _diagnostics(self, tau: np.ndarray, s: np.ndarray, theta: Tensor) -> dict[str, np.ndarray]:
        diags = self.diagnose(theta, s)
        if self.clock == "log_t":
            diags["log_t"] = tau
        return diags

    def flush(self) -> None:
        """Write the buffered rows to the stream (θ and diagnostics computed for them)."""
        if not self._tau:
            return
        tau, s, z, theta = self._arrays()
        rows = {"s": s, "z": z.detach().cpu().numpy(), "theta": theta.detach().cpu().numpy()}
        if self.diagnose is not None:
            d = self.diagnose(torch.cat([self.theta0, theta]), np.concatenate([[0.0], s]))
            rows.update({f"diag__{k}": v[1:] for k, v in d.items()})
        self.rows.write(self.n_written, rows)  # through the page cache: survives SIGKILL; fsync at checkpoints
        self.n_written += len(self._tau)
        self._tau.clear()
        self._z.clear()
        self._theta.clear()

    def sync(self) -> None:
        """Flush and make the stored rows durable (at checkpoints)."""
        self.flush()
        self.rows.sync()
        self._durable_at = time.monotonic()

    @property
    def n_rows(self) -> int:
        """Rows saved so far (stored and buffered)."""
        return self.n_written + len(self._tau)

    @property
    def final_log_t(self) -> float:
        """log t of the last saved state (streamed: of the last stored row; call :meth:`sync` first)."""
        if self.stream is not None:
            return float(log_t_from_s(self.stream.stored_s(self.n_written - 1)))
        if self.clock == "log_t":
            return float(self._tau[-1])
        return float(log_t_from_s(_s_of(np.asarray(self._tau, dtype=np.float64), self.clock)[-1]))

    # ------------------------------------------------------------------ the result
    def trajectory(
        self, status: Status, message: str, stats: dict[str, Any], config: dict[str, Any], metadata=None
    ) -> Trajectory:
        """The trajectory of everything saved. Streamed: the rows are flushed and made durable (if :meth:`sync`
        has not been called since the last save), the store closed, ``trajectory.json`` written and the
        trajectory read back (memory-mapped)."""
        if self.stream is not None:
            if self._tau:
                self.sync()
            self.rows.close()
            self.stream.write_meta(self.n_written, status.value, message, stats, config, metadata)
            return load_streamed(self.stream.path, self.stream.read_meta())
        tau, s, z, theta = self._arrays()
        return Trajectory(
            s=s,
            theta=theta.detach().cpu().numpy(),
            z=z.detach().cpu().numpy(),
            diagnostics=self._diagnostics(tau, s, theta) if self.diagnose is not None else {},
            stats=stats,
            status=status,
            message=message,
            config=config,
            metadata=environment_metadata() if metadata is None else metadata,
        )
