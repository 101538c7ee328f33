"""Drawing functions of the paper figures. Each takes pyplot as ``plt`` (passed by
:func:`flowsim.lab.plotting.save_drawing`), so matplotlib is imported by :mod:`flowsim.lab.plotting` only."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

POS, NEG = "tab:red", "tab:blue"


def representation_panels(plt, panels: list[dict[str, Any]], teacher_W, teacher_a, *, cols: int = 3) -> None:
    """One panel per run: the points w̃_j = |a_j| w_j (red a_j > 0, blue a_j < 0) and the teacher's directions
    a*_k w*_k (black arrows, scaled to the largest ‖w̃_j‖). ``panels``: dicts with ``wt`` `(m, 2)`, ``sign``
    `(m,)`, ``title``."""
    cols = min(cols, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 3.0 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        wt, sign = np.asarray(panel["wt"]), np.asarray(panel["sign"])
        r = float(np.max(np.linalg.norm(wt, axis=1))) or 1.0
        ax.scatter(*wt[sign > 0].T, s=14, c=POS, label="a > 0")
        ax.scatter(*wt[sign <= 0].T, s=14, c=NEG, label="a < 0")
        for w, a in zip(np.asarray(teacher_W), np.asarray(teacher_a), strict=True):
            d = w / np.linalg.norm(w) * r
            ax.annotate("", xy=d, xytext=(0, 0), arrowprops={"arrowstyle": "->", "color": POS if a > 0 else NEG,
                                                              "lw": 1.2, "alpha": 0.6})  # fmt: skip
        ax.set_xlim(-1.15 * r, 1.15 * r)
        ax.set_ylim(-1.15 * r, 1.15 * r)
        ax.set_aspect("equal")
        ax.axhline(0, color="0.85", lw=0.5)
        ax.axvline(0, color="0.85", lw=0.5)
        ax.set_title(panel["title"], fontsize=8)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6, loc="lower left")
    fig.tight_layout()


def curves(plt, series: dict[str, tuple[Any, Any]], *, xlabel: str, ylabel: str, title: str = "",
           logy: bool = False, logx: bool = False, size=(4.6, 3.2)) -> None:  # fmt: skip
    """One axis, one line per label: ``series[label] = (x, y)``."""
    fig, ax = plt.subplots(figsize=size)
    for label, (x, y) in series.items():
        ax.plot(x, y, label=label, marker="o" if len(np.atleast_1d(x)) < 8 else None, ms=3)
    if logy:
        ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()


def layer_histograms(plt, hists: dict[str, dict[str, np.ndarray]], layers: list[str], title: str = "") -> None:
    """One panel per layer: the density of |w| / max |w| for every run (``hists[label][layer]``, ``edges``)."""
    fig, axes = plt.subplots(1, len(layers), figsize=(3.3 * len(layers), 2.9), squeeze=False)
    for ax, layer in zip(axes.flat, layers, strict=True):
        for label, h in hists.items():
            centers = 0.5 * (h["edges"][1:] + h["edges"][:-1])
            ax.step(centers, np.maximum(h[layer], 1e-3), where="mid", label=label)
        ax.set_yscale("log")
        ax.set_title(layer, fontsize=9)
        ax.set_xlabel("|w| / max |w|")
    axes.flat[0].set_ylabel("density")
    axes.flat[0].legend(fontsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()


def boundaries(plt, panels: list[dict[str, Any]], X, y) -> None:
    """Decision regions sign f(x) on a grid, the training points, and each active neuron's activation line
    ⟨w_j, x⟩ = 0 (dashed). ``panels``: dicts with ``grid`` (xx, yy, f values), ``lines`` (unit normals
    `(k, 2)`), ``title``."""
    fig, axes = plt.subplots(1, len(panels), figsize=(3.0 * len(panels), 3.0), squeeze=False)
    X, y = np.asarray(X), np.asarray(y)
    for ax, panel in zip(axes.flat, panels, strict=True):
        xx, yy, f = panel["grid"]
        ax.contourf(xx, yy, np.sign(f), levels=[-2, 0, 2], colors=["#c6dbef", "#fcbba1"], alpha=0.8)
        ax.contour(xx, yy, f, levels=[0], colors="k", linewidths=1.0)
        for nrm in np.asarray(panel["lines"]):
            d = np.array([-nrm[1], nrm[0]]) * 1.5
            ax.plot([-d[0], d[0]], [-d[1], d[1]], ls="--", lw=0.6, color="0.4")
        ax.scatter(*X[y > 0].T, s=10, c=POS, edgecolors="k", linewidths=0.3)
        ax.scatter(*X[y <= 0].T, s=10, c=NEG, edgecolors="k", linewidths=0.3)
        ax.set_xlim(-1.3, 1.3)
        ax.set_ylim(-1.3, 1.3)
        ax.set_aspect("equal")
        ax.set_title(panel["title"], fontsize=8)
        ax.tick_params(labelsize=6)
    fig.tight_layout()
