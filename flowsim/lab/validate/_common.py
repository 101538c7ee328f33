"""Helpers shared by the checks: test data, a simulate() that fails the check, margins and crossings."""

from __future__ import annotations

import importlib
import math
from typing import Any

import numpy as np

from ...data import Dataset, make_dataset
from ...simulation import simulate
from ._framework import CheckError, CheckFailure, CheckSkipped


def _random_separable(n: int = 12, d: int = 3, seed: int = 0) -> Dataset:
    """Separable-through-the-origin data with a random teacher and per-point scales (as tests/problems.py)."""
    rng = np.random.default_rng(seed)
    w_star = rng.normal(size=d)
    X = rng.normal(size=(n, d)) * rng.uniform(0.5, 1.5, size=(n, 1))
    y = np.sign(X @ w_star)
    X += 0.3 * y[:, None] * w_star / np.linalg.norm(w_star)
    y = np.sign(X @ w_star)
    return make_dataset(X, y, name=f"random_separable_{seed}")


def _sim(*args: Any, **kwargs: Any):
    """:func:`flowsim.simulate` on one thread; a run that does not reach its horizon fails the check."""
    kwargs.setdefault("threads", 1)
    tr = simulate(*args, **kwargs)
    if not tr.success:
        raise CheckFailure(f"simulate({args[0]!r}, {args[2]!r}) ended with status {tr.status.value}: {tr.message}")
    return tr


def _require(module: str):
    """Import ``module`` or raise :class:`CheckError` ("<module> not available")."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise CheckError(f"{module} not available ({err})") from err


def _require_extra(module: str, extra: str):
    """Import ``module``, an optional dependency from flowsim's ``extra``, or raise :class:`CheckSkipped` saying
    how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise CheckSkipped(f'{module} is not installed ({err}): pip install "flowsim[{extra}]"') from err


def _lp_margin(w: np.ndarray, Z: np.ndarray, p: float) -> float:
    return float(np.min(Z @ w) / np.linalg.norm(w, ord=p))


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _first_crossing(x: np.ndarray, y: np.ndarray, level: float) -> float:
    """First x where y reaches ``level`` (linear interpolation); inf if never."""
    idx = np.flatnonzero(y >= level)
    if idx.size == 0:
        return math.inf
    k = int(idx[0])
    if k == 0:
        return float(x[0])
    return float(x[k - 1] + (level - y[k - 1]) * (x[k] - x[k - 1]) / (y[k] - y[k - 1]))
