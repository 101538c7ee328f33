"""Worker processes for independent runs: start method, signals, thread counts and priorities.

:func:`run_parallel` runs tasks (module-level functions and picklable arguments) in worker processes, at most
``workers`` at a time, each in a one-process :class:`ProcessPoolExecutor` of its own, so that a worker that
dies takes only its own task down (a shared pool terminates all its workers when one dies). It is the process
side of :func:`flowsim.lab.experiment.run_experiment`; what a task does is the caller's.
"""

from __future__ import annotations

import contextlib
import gc
import math
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["ParallelRuns", "Terminated", "cpu_cores", "progress_hook", "run_parallel", "sigterm_as_interrupt"]

_NICE_LEAD = 1.0  # log-t units another run must be behind before a worker yields (see _YieldWhenAhead)
_SHARED_LOG_T = None  # in a worker process: the runs' current log t (NaN: not running, −inf: no save yet)
PROGRESS_EVERY = 5.0  # seconds between the progress lines of run_parallel(on_progress=...)
_SLOT = (0, 1)  # in a worker process: (its run's index in _SHARED_LOG_T, the CPU cores)
_STOP = None  # in a worker process: the parent's stop flag (set on an interrupt, before forwarding it)


def cpu_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the platform has one, else os.cpu_count())."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt (see :func:`sigterm_as_interrupt`): a run stops and keeps
    what it computed, with a message saying it was terminated."""

    signal_name = "SIGTERM"  # (read by flowsim.results.trajectory.interrupted_message)

    def __init__(self, message: str = "terminated by SIGTERM") -> None:
        super().__init__(message)


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def _stop_once(signum, frame) -> None:
    """A worker's SIGINT/SIGTERM handler while its task runs: the first of each signal raises KeyboardInterrupt
    (SIGINT) or :class:`Terminated` (SIGTERM), a repeat is ignored. Ctrl-C in a terminal reaches a worker twice,
    from the terminal and forwarded by the parent (which cannot tell the two apart); a second KeyboardInterrupt
    would cut short the saving of what the first one kept."""
    signal.signal(signum, signal.SIG_IGN)
    if signum == signal.SIGTERM:
        raise Terminated()
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_as_interrupt():
    """While the block runs (in the main thread), SIGTERM raises :class:`Terminated`, a KeyboardInterrupt: a
    run stops as on Ctrl-C and keeps (and saves) what it computed; its message says it was terminated. Worker
    processes started by :func:`run_parallel` meanwhile get the SIGTERM forwarded."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _worker_init(shared, stop) -> None:
    """Worker process start: SIGINT ignored until its task starts (see _worker_run); the shared progress array
    and stop flag."""
    global _SHARED_LOG_T, _STOP
    _ignore_interrupts()
    _SHARED_LOG_T, _STOP = shared, stop


def _ignore_interrupts() -> None:
    """A worker outside its task: SIGINT ignored, SIGTERM ends the process (a forked child inherits
    sigterm_as_interrupt's handler)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


class _YieldWhenAhead:
    """Progress hook of a worker process while runs outnumber the CPU cores.

    Publishes the run's log t at every save; once another running run is more than :data:`_NICE_LEAD` behind in
    log t (or has not saved yet), this process lowers its own priority (``os.nice(10)``, once): the cores then go
    to the runs that are behind, likely the longest ones (longest-processing-time-first, with progress in log t
    as the estimate of the work left). A run that yields wrongly only loses CPU share while runs outnumber cores.
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


def progress_hook() -> _YieldWhenAhead | bool:
    """Inside a worker task, as its run starts: the progress hook for ``simulate(progress=...)``.

    Marks the run as running without a save yet (log t = −inf) and returns a :class:`_YieldWhenAhead` when the
    parent set up a shared progress array (runs outnumber cores), else False (no progress bar).
    """
    if _SHARED_LOG_T is None:
        return False
    index, cores = _SLOT
    _SHARED_LOG_T[index] = -math.inf
    return _YieldWhenAhead(_SHARED_LOG_T, index, cores)


def _worker_run(
    task: Callable[..., Any], args: tuple, threads: int, interruptible: bool, index: int = 0, cores: int = 1
) -> Any:
    """A worker process's task: ``task(*args)`` with ``threads`` torch threads.

    With ``interruptible`` (the parent does not ignore SIGINT), Ctrl-C (SIGINT, ignored by the worker until
    here) interrupts the task, which keeps what it computed; None when it came before the task returned
    without handling it. SIGTERM does the same (:class:`Terminated`); a repeat of either is ignored
    (:func:`_stop_once`). None without running the task when the parent was interrupted while this process
    started (its stop flag is set before the signal is forwarded, so a signal this process ignored is not
    missed). ``index``: the task's slot in the shared progress array (:func:`progress_hook`; marked −inf here,
    as the task starts).
    """
    global _SLOT
    torch.set_num_threads(threads)  # before any torch op: a forked child must not reuse its parent's OpenMP pool
    _SLOT = (index, cores)
    shared = _SHARED_LOG_T
    try:
        if interruptible:
            signal.signal(signal.SIGINT, _stop_once)
        signal.signal(signal.SIGTERM, _stop_once)
        if hasattr(signal, "pthread_sigmask"):  # blocked by the parent while it started this process
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        if _STOP is not None and _STOP.value:
            return None
        if shared is not None:
            shared[index] = -math.inf
        return task(*args)
    except KeyboardInterrupt:  # before the run started (simulate itself keeps an interrupted run's results)
        return None
    finally:
        _ignore_interrupts()  # (the result is on its way to the parent)
        if shared is not None:
            shared[index] = math.nan


@dataclass
class ParallelRuns:
    """Outcome of :func:`run_parallel`, by task index: results (None results excluded), errors, tasks not run
    (interrupted before they started, or never started after a Ctrl-C), sorted."""

    results: dict[int, Any] = field(default_factory=dict)
    errors: dict[int, BaseException] = field(default_factory=dict)
    not_run: list[int] = field(default_factory=list)


class _Pool:
    """The state of :func:`run_parallel`: tasks to start, running futures, what came back."""

    def __init__(self, task, args, labels, *, workers, threads, log, on_start, on_result) -> None:
        fork = sys.platform.startswith("linux") and not torch.cuda.is_initialized() and threads == 1
        self.ctx = multiprocessing.get_context("fork" if fork else "spawn")
        each = f"{threads} torch thread{'s' if threads > 1 else ''} each"
        log(f"[flowsim] {len(labels)} runs in {workers} worker processes ({self.ctx.get_start_method()}, {each})")
        self.task, self.args, self.labels = task, args, labels
        self.workers, self.threads, self.log = workers, threads, log
        self.on_start, self.on_result = on_start, on_result
        self.interruptible = signal.getsignal(signal.SIGINT) is not signal.SIG_IGN
        self.todo = list(range(len(labels)))
        self.running: dict[Future, tuple[int, ProcessPoolExecutor]] = {}
        self.outcome = ParallelRuns()
        self.skipped: list[int] = []
        self.interrupted = False
        self.mask = hasattr(signal, "pthread_sigmask")
        self.cores = cpu_cores()
        # the runs' log t (progress lines; when runs outnumber cores, the ones ahead in log t yield)
        self.shared = self.ctx.Array("d", [math.nan] * len(labels), lock=False)
        self.stop = self.ctx.Value("b", 0, lock=False)  # set on an interrupt: workers still starting skip their task
        self.shut: list[ProcessPoolExecutor] = []  # executors shut down without waiting (joined by join_shut)

    def start_ready(self) -> None:
        """Start tasks until ``workers`` run, each in a new one-process executor."""
        # SIGINT is blocked while a worker starts: a Ctrl-C inside submit() (after the fork, before the pool's
        # manager thread runs) would leave a worker waiting for its task forever; it arrives at the unblock instead
        if self.mask:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            while self.todo and not self.interrupted and len(self.running) < self.workers:
                i = self.todo.pop(0)
                self.on_start(i)
                init = (self.shared, self.stop)
                pool = ProcessPoolExecutor(1, mp_context=self.ctx, initializer=_worker_init, initargs=init)
                args = (self.task, self.args[i], self.threads, self.interruptible, i, self.cores)
                # everything alive at the fork is frozen for the child's garbage collector: a forked child that
                # collects an executor the parent had dropped runs its weakref callback, which takes a lock the
                # parent's manager thread may hold at the fork — a deadlock
                gc.freeze()
                try:
                    self.running[pool.submit(_worker_run, *args)] = (i, pool)
                finally:
                    gc.unfreeze()
        finally:
            if self.mask:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})

    def interrupt(self, error: KeyboardInterrupt) -> None:
        """Stop the running workers as this process was stopped: SIGTERM for :class:`Terminated`, else SIGINT.

        A signal sent to the parent's pid alone (``kill -INT PID``, ``kill PID``) reaches only the parent;
        Ctrl-C in a terminal reaches the workers too, and they ignore the repeat (:func:`_stop_once`).
        """
        self.stop.value = 1
        self.forward(signal.SIGTERM if isinstance(error, Terminated) else signal.SIGINT)

    def forward(self, signum: int) -> None:
        """Send ``signum`` to the running workers' processes."""
        for _, pool in self.running.values():
            for pid in list(getattr(pool, "_processes", None) or {}):
                with contextlib.suppress(OSError):
                    os.kill(pid, signum)

    def progress(self) -> dict[int, float]:
        """log t of each running run (−inf: no save yet, NaN: not started)."""
        return {i: float(self.shared[i]) for i, _ in self.running.values()}

    def join_shut(self) -> None:
        """Wait for the shut-down executors' manager threads (their tasks are all collected). At interpreter exit
        concurrent.futures wakes every manager thread it still lists; one closing its wakeup pipe meanwhile made
        CPython 3.11 print an ``OSError: [Errno 9] Bad file descriptor`` traceback after an interrupted run."""
        for pool in self.shut:
            pool.shutdown(wait=True)
        self.shut.clear()

    def collect(self, done) -> None:
        """Take the results (or errors) of finished futures and shut their executors down."""
        for fut in done:
            i, pool = self.running.pop(fut)
            if self.shared is not None:
                self.shared[i] = math.nan  # not running (also when its process died before saying so)
            pool.shutdown(wait=False)  # wait() is the only blocking call, where Ctrl-C is handled
            self.shut.append(pool)
            try:
                result = fut.result()
            except BaseException as e:  # raised in the worker (any exception), or BrokenProcessPool: it died
                if self.interrupted and isinstance(e, BrokenProcessPool):  # a signal to the whole process group
                    self.skipped.append(i)  # killed it before its task started
                    self.log(f"[flowsim]   {self.labels[i]}: its worker process was stopped before its run started")
                    continue
                self.outcome.errors[i] = e
                self.log(f"[flowsim]   {self.labels[i]}: failed in its worker process: {type(e).__name__}: {e}")
                continue
            if result is None:
                self.skipped.append(i)
                self.log(f"[flowsim]   {self.labels[i]}: interrupted before it started")
                continue
            self.outcome.results[i] = result
            self.on_result(i, result)


def run_parallel(
    task: Callable[..., Any],
    args: Sequence[tuple],
    labels: Sequence[str],
    *,
    workers: int,
    threads: int,
    log: Callable[[str], Any],
    on_start: Callable[[int], Any],
    on_result: Callable[[int, Any], Any],
    when_idle: Callable[[], Any] | None = None,
    on_progress: Callable[[dict[int, float]], Any] | None = None,
) -> ParallelRuns:
    """Run ``task(*args[i])`` for every i in worker processes, at most ``workers`` at a time, in order of i.

    Worker processes are forked on Linux when CUDA is not initialized and every worker runs one thread (a
    forked child using OpenMP threads after its parent did can hang), else spawned (``task`` must then be
    importable, and scripts need an ``if __name__ == "__main__":`` guard). When the workers outnumber the CPU
    cores, a task that calls :func:`progress_hook` gets a hook that lowers its priority once it is ahead.

    Args:
        task: a module-level function (pickled by reference); it returns its result, or None for "not run".
        args: the positional arguments of each task.
        labels: a name per task, for the log lines.
        workers: the most worker processes at a time.
        threads: torch threads of each worker.
        log: a print-like function.
        on_start: called with i in the parent just before task i is submitted.
        on_result: called with (i, result) in the parent when task i returned a result.
        when_idle: run in a daemon thread once every task started and a core is idle (e.g. preloading
            matplotlib); joined before returning.
        on_progress: called in the parent every :data:`PROGRESS_EVERY` seconds while tasks run, with
            ``{i: log t}`` of the running tasks (−inf: started, no save yet; NaN: not started; tasks that call
            :func:`progress_hook` report their log t).

    Returns:
        :class:`ParallelRuns`. On Ctrl-C, or a SIGINT to the parent alone, the SIGINT is forwarded to the
        running workers, whose runs stop and keep what they computed; they are collected and the tasks not
        started are listed in ``not_run``. A SIGTERM turned into :class:`Terminated` (:func:`sigterm_as_interrupt`)
        does the same with SIGTERM.
    """
    pool = _Pool(task, args, labels, workers=workers, threads=threads, log=log, on_start=on_start, on_result=on_result)
    idle: threading.Thread | None = None
    every = PROGRESS_EVERY if on_progress is not None else None
    while pool.running or (pool.todo and not pool.interrupted):
        try:
            pool.start_ready()
            if idle is None and when_idle is not None and not pool.todo and len(pool.running) < pool.cores:
                # a core is idle (every task started): use it meanwhile (started after the last fork)
                idle = threading.Thread(target=when_idle, daemon=True)
                idle.start()
            done, _ = wait(pool.running, timeout=every, return_when=FIRST_COMPLETED)
            if not done and on_progress is not None:
                on_progress(pool.progress())
        except KeyboardInterrupt as e:  # SIGINT or SIGTERM (Terminated): forwarded to the workers
            pool.interrupt(e)
            if not pool.interrupted:
                why = str(e) or "interrupted"
                log(f"[flowsim] {why}: partial results kept; collecting the running runs, skipping the rest")
            pool.interrupted = True
            continue
        pool.collect(done)
    if idle is not None:
        idle.join()
    pool.join_shut()
    pool.outcome.not_run = sorted(pool.skipped + pool.todo)
    return pool.outcome
