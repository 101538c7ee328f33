"""Conversions between time t, log t and log-time s = log(1 + t), and log-spaced save grids.

t is never formed where it is not representable: t = expm1(s) is reported as +inf above s ≈ 709.78,
while log t = s + log(1 − e^{−s}) stays exact for any finite s (e.g. s = 1e6).
"""

from __future__ import annotations

import numbers

import numpy as np

from .errors import HorizonError, integer_argument

__all__ = ["s_from_log_t", "log_t_from_s", "t_from_s", "s_from_t", "save_grid", "save_grid_s"]


def s_from_log_t(log_t):
    """s = log(1 + t) from log t (array or float); log t = −inf gives s = 0."""
    return np.logaddexp(0.0, np.asarray(log_t, dtype=np.float64))


def log_t_from_s(s):
    """log t from s = log(1 + t): s + log(−expm1(−s)); −inf at s = 0."""
    s = np.asarray(s, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return s + np.log(-np.expm1(-s))


def t_from_s(s):
    """t = e^s − 1 where representable in float64, +inf beyond (no overflow warning)."""
    s = np.asarray(s, dtype=np.float64)
    with np.errstate(over="ignore"):
        return np.expm1(s)


def s_from_t(t):
    """s = log(1 + t) for t ≥ 0."""
    return np.log1p(np.asarray(t, dtype=np.float64))


def save_grid(log_t_end: float, n_save: int = 200, log_t_start: float | None = None) -> np.ndarray:
    """Log-time values s of a save grid: t = 0 followed by points uniform in log t.

    Args:
        log_t_end: final log t (natural log of the final time), finite.
        n_save: number of saved times including t = 0 (≥ 2).
        log_t_start: first nonzero save time in log t; default min(−3, log_t_end − 1) (t ≈ 0.05).

    Returns:
        s values, shape `(n_save,)`, strictly increasing, s[0] = 0.

    Raises:
        HorizonError: if the horizon is not finite, n_save < 2 or log_t_start ≥ log_t_end.
    """
    if not np.isfinite(log_t_end):
        raise HorizonError(f"log_t_end must be finite, got {log_t_end}; give the horizon as log t, e.g. 30.0")
    if int(n_save) < 2:
        raise HorizonError(f"n_save must be at least 2 (t = 0 and the horizon), got {n_save}")
    if log_t_start is None:
        log_t_start = min(-3.0, log_t_end - 1.0)
    if not log_t_start < log_t_end:
        raise HorizonError(
            f"the save grid must be increasing: log_t_start={log_t_start} is not below log_t_end={log_t_end}"
        )
    lt = np.linspace(log_t_start, log_t_end, int(n_save) - 1)
    s = np.concatenate([[0.0], s_from_log_t(lt)])
    s[-1] = s_from_log_t(log_t_end)
    return check_grid(s)


def check_grid(s) -> np.ndarray:
    """Validate an explicit grid of log-times s: 1-D, finite, s ≥ 0, strictly increasing.

    Raises:
        HorizonError: naming the first offending entry and how to fix it.
    """
    s = np.asarray(s, dtype=np.float64)
    if s.ndim != 1 or s.size < 2:
        raise HorizonError(f"a save grid needs at least two times in a 1-D array, got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise HorizonError("the save grid contains non-finite times; use log t for huge horizons")
    if s[0] < 0:
        raise HorizonError(f"times must be ≥ 0 (s = log(1+t) ≥ 0), got first value {s[0]}")
    bad = np.nonzero(np.diff(s) <= 0)[0]
    if bad.size:
        i = int(bad[0])
        raise HorizonError(
            f"the horizon / save grid must be strictly increasing: entry {i + 1} ({s[i + 1]}) is not after "
            f"entry {i} ({s[i]}); sort the times or drop duplicates"
        )
    return s


def save_grid_s(time: str, log_t_end, save_log_t, n_save, log_t_start) -> np.ndarray:
    """The save grid in log-time s: ``save_log_t`` (t = 0 prepended unless it starts at −inf) or ``n_save``
    points up to ``log_t_end`` (:func:`flowsim.timegrid.save_grid`).

    Raises:
        HorizonError: no horizon, a horizon that is not a number, a grid not finite or not increasing, or plain time
            beyond t = 1e15.
        InvalidParameterError: ``n_save`` not an integer (5.0 is accepted, 5.5 is not).
    """
    n_save = integer_argument("n_save", n_save, "n_save=200")
    if save_log_t is not None:
        lt = np.asarray(save_log_t, dtype=np.float64)
        s = s_from_log_t(lt)
        if lt.ndim == 1 and lt.size and lt[0] == -np.inf:
            s[0] = 0.0
        elif lt.ndim == 1 and lt.size:
            s = np.concatenate([[0.0], s])  # the run always starts at t = 0
        s = check_grid(s)
    else:
        if log_t_end is None:
            raise HorizonError("give a horizon: log_t_end (natural log of the final time t), e.g. 20.0")
        log_t_end = _log_t_number("log_t_end", log_t_end, "log_t_end=20.0")
        if log_t_start is not None:
            log_t_start = _log_t_number("log_t_start", log_t_start, "log_t_start=-3.0")
        s = save_grid(log_t_end, n_save, log_t_start)
    if time == "linear" and s[-1] > np.log(1e15):
        raise HorizonError(
            f"plain time cannot reach log t = {float(np.log(np.expm1(s[-1]))):.4g}: float64 spacing near t would "
            "exceed the step size. Use time='log' (log-time s = log(1+t)), which reaches any horizon."
        )
    return s


def _log_t_number(name: str, value, example: str) -> float:
    """``value`` as a float log t.

    Raises:
        HorizonError: a bool, a string or another non-number (finiteness is checked by
            :func:`flowsim.timegrid.save_grid`).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise HorizonError(f"{name} must be a number, the natural log of time t (e.g. {example}), got {value!r}")
    return float(value)
