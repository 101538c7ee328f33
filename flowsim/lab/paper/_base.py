"""The figure registry of ``flowsim paper`` and what every figure shares: results, JSON, the 2-D student–teacher.

Only the captions of the seed paper (Jacobs & Montúfar, arXiv:2605.19458) were available; every figure here is
a reconstruction of what its caption describes, and says so in its output (:attr:`FigureResult.reconstruction`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...data import student_teacher_relu
from ...errors import InvalidParameterError
from ...models import get_model
from ...results.store import prepare_out_dir
from ...simulation import simulate

__all__ = ["Figure", "FigureResult", "FIGURES", "register", "run_figure", "figure_names"]

DPI = 90  # small PNGs (docs/paper/ commits them)


@dataclass
class FigureResult:
    """What one figure run produced: the numbers it shows (``numbers``, written to ``<name>.json``), the lines
    that say what it shows, what is a reconstruction, and the PNG files written."""

    name: str
    title: str
    numbers: dict[str, Any]
    lines: list[str]
    reconstruction: str
    pngs: list[str] = field(default_factory=list)
    wall_s: float = float("nan")

    def report(self) -> str:
        """The printed summary: title, the lines, the reconstruction note and the files."""
        out = [f"[{self.name}] {self.title}", *(f"  {line}" for line in self.lines)]
        out.append(f"  reconstruction: {self.reconstruction}")
        out.append(f"  files: {', '.join(self.pngs)}, {self.name}.json ({self.wall_s:.1f} s)")
        return "\n".join(out)


@dataclass(frozen=True)
class Figure:
    """A registered figure: ``run(quick, out) -> FigureResult``; ``aliases`` are the paper's figure numbers it
    covers (``flowsim paper fig6`` runs the group ``fig5-7``)."""

    name: str
    summary: str
    run: Callable[[bool, Path], FigureResult]
    aliases: tuple[str, ...] = ()


FIGURES: dict[str, Figure] = {}


def register(name: str, summary: str, aliases: tuple[str, ...] = ()):
    """Decorator: register ``run(quick, out)`` as figure ``name``."""

    def wrap(fn: Callable[[bool, Path], FigureResult]) -> Callable[[bool, Path], FigureResult]:
        FIGURES[name] = Figure(name, summary, fn, aliases)
        return fn

    return wrap


def figure_names() -> list[str]:
    """The registered figure names in the paper's order (by their first figure number: fig2, fig3, fig4-14, ...)."""
    return sorted(FIGURES, key=lambda name: int(name[3:].split("-")[0]))


def _resolve(name: str) -> Figure:
    key = name.strip().lower()
    for fig in FIGURES.values():
        if key == fig.name or key in fig.aliases:
            return fig
    valid = ", ".join(f"{f.name} ({'/'.join(f.aliases)})" if f.aliases else f.name for f in FIGURES.values())
    raise InvalidParameterError(f"unknown figure {name!r}; valid figures: {valid}, or 'all' (flowsim paper --list)")


def run_figure(name: str, *, quick: bool = False, out: str | Path = "paper_figures") -> FigureResult:
    """Run one figure (a registered name or one of its aliases): PNGs and ``<name>.json`` into ``out``.

    Args:
        name: e.g. ``"fig2"``, ``"fig6"`` (runs the group ``fig5-7``).
        quick: the small setting (1-2 minutes on 2 cores at most; most figures take seconds).
        out: output folder (created).

    Returns:
        the :class:`FigureResult`; its ``numbers`` are also written to ``out/<name>.json``.

    Raises:
        InvalidParameterError: unknown figure name (the message lists them).
        RunFolderError: ``out`` is a file or cannot be written to (before any work).
    """
    fig = _resolve(name)
    out = prepare_out_dir(out)
    threads = torch.get_num_threads()
    start = time.perf_counter()
    try:
        torch.set_num_threads(1)
        result = fig.run(quick, out)
    finally:
        torch.set_num_threads(threads)
    result.wall_s = time.perf_counter() - start
    payload = {
        "figure": result.name,
        "title": result.title,
        "quick": quick,
        "reconstruction": result.reconstruction,
        "lines": result.lines,
        "pngs": result.pngs,
        "wall_s": result.wall_s,
        "numbers": result.numbers,
    }
    (out / f"{result.name}.json").write_text(json.dumps(_plain(payload), indent=2) + "\n")
    return result


def _plain(obj: Any) -> Any:
    """JSON-ready: numpy scalars/arrays to Python numbers/lists, NaN kept as null."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, np.generic):
        return _plain(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def save(draw: Callable[[Any], None], out: Path, filename: str, pngs: list[str]) -> None:
    """Draw through :func:`flowsim.lab.plotting.save_drawing` (the one module that imports matplotlib)."""
    from ..plotting import save_drawing

    save_drawing(draw, out / filename, dpi=DPI)
    pngs.append(filename)


# --- the 2-D student–teacher problem of figs 2, 3, 5-7, 11-13 --------------------------------------------------

HE_BETA = 0.01  # hyperbolic entropy β of fig 2
SMOOTHED = {"name": "smoothed_homogeneous", "p": 3.0, "lam": 1.0}  # the smoothed p = 3 potential of fig 2


_RUNS: dict[tuple, Any] = {}  # (problem, potential, horizon) -> Trajectory, see StudentTeacher2D.run


@dataclass
class StudentTeacher2D:
    """A two-layer ReLU student of ``width`` neurons on ``n`` points of the unit circle labelled by a
    ``teacher_width`` ReLU teacher (:func:`flowsim.data.student_teacher_relu`, d = 2); init scale 0.5, seed 0."""

    n: int = 20
    width: int = 30
    teacher_width: int = 2
    data_seed: int = 0
    init_scale: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        self.data = student_teacher_relu(n=self.n, d=2, teacher_width=self.teacher_width, seed=self.data_seed)
        self.model = get_model("two_layer_relu", input_dim=2, width=self.width)
        teacher = self.data.info["teacher"]
        self.teacher_W = np.asarray(teacher["W"], dtype=float)
        self.teacher_a = np.asarray(teacher["a"], dtype=float)

    def run(self, potential: dict, log_t_end: float | None, n_save: int = 40, save_log_t=None):
        """:func:`flowsim.simulate` with exact kinks (Filippov, dopri5), rtol 1e-6; runs are remembered for the
        process (figures sharing a run, e.g. fig2 and fig11, compute it once)."""
        kw = {"save_log_t": save_log_t} if save_log_t is not None else {"log_t_end": log_t_end, "n_save": n_save}
        key = (repr(self), repr(sorted(potential.items())), log_t_end, n_save)
        key += tuple(np.asarray(save_log_t, dtype=float).tolist()) if save_log_t is not None else ()
        if key not in _RUNS:
            _RUNS[key] = self._simulate(potential, kw)
        return _RUNS[key]

    def _simulate(self, potential: dict, kw: dict):
        return simulate(
            self.model,
            self.data,
            potential,
            init_scale=self.init_scale,
            seed=self.seed,
            rtol=1e-6,
            atol=1e-9,
            kinks="filippov",
            threads=1,
            **kw,
        )

    def effective(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """w̃_j = |a_j| w_j `(m, 2)` and sign(a_j) `(m,)` of a parameter vector `(p,)`."""
        theta = np.asarray(theta, dtype=float)
        m = self.width
        W, a = theta[: 2 * m].reshape(m, 2), theta[2 * m :]
        return np.abs(a)[:, None] * W, np.sign(a)


def active_count(tr) -> int:
    """The final ``active_neurons`` diagnostic of a trajectory (neurons with a non-negligible share of mass)."""
    return int(np.asarray(tr.diagnostics["active_neurons"])[-1])


def cosine(u: np.ndarray, v: np.ndarray) -> float:
    """cos∠(u, v) of two flat vectors."""
    u, v = np.ravel(u), np.ravel(v)
    return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))


def pot_label(pot: dict) -> str:
    """A short label: "gradient flow", "HE β=0.01", "smoothed p=3 λ=1"."""
    name = pot["name"]
    if name == "euclidean":
        return "gradient flow"
    if name == "hyperbolic_entropy":
        return f"HE β={pot['beta']:g}"
    if name == "smoothed_homogeneous":
        return f"smoothed p={pot['p']:g} λ={pot['lam']:g}"
    params = " ".join(f"{k}={v:g}" for k, v in pot.items() if k != "name")
    return f"{name} {params}".strip()
