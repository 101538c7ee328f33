"""Matplotlib figures for trajectories and experiments (the only module that imports matplotlib).

Every figure has labelled axes with units (time t or log t), a legend and a title. Figures with one line per
run name the runs by their number: up to :data:`INLINE_LEGEND_RUNS` runs in a legend inside each panel, up to
:data:`LEGEND_RUNS` in one legend in columns under the panels (the figure grows by its height, so the panels
keep theirs), beyond that by a colour bar of run numbers.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from ..models import AbstractModel, AbstractTwoLayer, Linear  # noqa: E402
from ..results import Trajectory  # noqa: E402

__all__ = [
    "plot_rate_fits",
    "plot_curves",
    "plot_margins",
    "margin_references",
    "plot_loss",
    "plot_neuron_masses",
    "plot_features",
    "experiment_plots",
    "plot_flow_vs_discrete",
    "save_drawing",
]


INLINE_LEGEND_RUNS = 8
"""Runs up to which each panel of a figure has its own legend."""

LEGEND_RUNS = 48
"""Runs up to which a figure names every run in a legend; beyond, a colour bar gives the run numbers."""

_LEGEND_FONTSIZE = 7


def _run_colors(n: int) -> list:
    """One colour per run: matplotlib's ten-colour cycle up to ten runs; beyond (the cycle would repeat), evenly
    spaced along the "turbo" colour map, run k of n at (k − 1)/(n − 1) as on :func:`_name_runs`' colour bar."""
    if n <= 10:
        return [f"C{k}" for k in range(n)]
    return list(plt.get_cmap("turbo")(np.linspace(0.0, 1.0, n)))


def _legend_under(labels) -> bool:
    """Whether :func:`_name_runs` names these runs in one legend under the panels."""
    return INLINE_LEGEND_RUNS < len(labels) <= LEGEND_RUNS


def _legend_column_width(labels) -> float:
    """Inches of one column of a legend of ``labels`` (the handle and the longest label, glyphs ≈ 0.6 em)."""
    return 0.7 + max(len(str(label)) for label in labels) * 0.6 * _LEGEND_FONTSIZE / 72


def _legend_columns(labels, width: float) -> tuple[int, float]:
    """Columns and height (inches) of a legend of ``labels`` under the panels of a figure ``width`` inches wide;
    (0, 0.0) where the runs are named otherwise (:func:`_name_runs`)."""
    if not _legend_under(labels):
        return 0, 0.0
    ncol = max(1, min(len(labels), int(width // _legend_column_width(labels))))
    return ncol, 0.3 + math.ceil(len(labels) / ncol) * 1.6 * _LEGEND_FONTSIZE / 72


def _runs_figure(labels, panels: int, panel_size: tuple[float, float]):
    """A figure of ``panels`` panels side by side, each ``panel_size`` inches, made taller by the height of the
    legend under them when :func:`_name_runs` puts one there (and wider, up to 12 inches, when the legend
    would otherwise run to more than 12 rows)."""
    width = panel_size[0] * panels
    if _legend_under(labels):
        wanted = math.ceil(len(labels) / 12) * _legend_column_width(labels)
        width = max(width, min(12.0, wanted))
    _, legend_height = _legend_columns(labels, width)
    fig, axes = plt.subplots(
        1, panels, figsize=(width, panel_size[1] + legend_height), squeeze=False, constrained_layout=True
    )
    return fig, list(axes[0])


def _name_runs(fig, axes, labels, colors) -> None:
    """Name the runs drawn in ``colors``: a legend in each panel (few runs, with any other labelled lines), one
    legend in columns under the panels (many), or a colour bar of run numbers (very many)."""
    n = len(labels)
    if n <= INLINE_LEGEND_RUNS:
        for ax in axes:
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
    elif _legend_under(labels):
        ncol, _ = _legend_columns(labels, fig.get_figwidth())
        handles = [Line2D([], [], color=c) for c in colors]
        fig.legend(handles, labels, loc="outside lower center", ncol=ncol, fontsize=_LEGEND_FONTSIZE, frameon=False)
    else:
        scale = ScalarMappable(norm=Normalize(1, n), cmap="turbo")
        fig.colorbar(scale, ax=axes, label=f"run 1–{n} (in the order given: summary.csv's rows)", shrink=0.9)


def _finite(tr: Trajectory, key: str):
    lt = tr.log_t
    v = np.asarray(tr.diagnostics.get(key, np.full(len(tr), np.nan)), dtype=float)
    ok = np.isfinite(lt) & np.isfinite(v)
    return lt[ok], v[ok]


def plot_margins(
    labels,
    trajectories,
    path: str | Path | None = None,
    title: str = "Margins along mirror flow",
    references: dict[str, float] | None = None,
):
    """Normalized margin q_min/‖θ‖₂^L and Q-margin q_min/Q∞(θ)^{L/α} against log t, one line per run.

    The Q-margin panel has a symmetric-log axis (linear within a decade below the smallest final positive
    Q-margin), so that runs whose Q-margins differ by orders of magnitude (hyperbolic entropy's ≈ 1e-3 next to
    0.1) are all readable. ``references``: label → the max-margin level the run's Q-margin tends to (linear
    models: :func:`margin_references`), drawn dashed in the run's colour.
    """
    fig, axes = _runs_figure(labels, 2, (5.5, 4.0))
    colors = _run_colors(len(labels))
    finals = []
    for label, tr, color in zip(labels, trajectories, colors, strict=True):
        for ax, key in zip(axes, ("normalized_margin", "q_margin"), strict=True):
            x, y = _finite(tr, key)
            ax.plot(x, y, label=label, color=color)
            if key == "q_margin" and len(y) and y[-1] > 0:
                finals.append(y[-1])
        ref = (references or {}).get(label)
        if ref is not None and np.isfinite(ref):
            axes[1].axhline(ref, ls="--", lw=1.0, color=color, label=f"max-margin level {ref:.3g}")
            finals.append(ref)
    axes[0].set_ylabel(r"normalized margin  $q_{\min} / \|\theta\|_2^{L}$")
    axes[1].set_ylabel(r"Q-margin  $q_{\min} / Q_\infty(\theta)^{L/\alpha}$  (symlog)")
    axes[1].set_yscale("symlog", linthresh=0.1 * min(finals) if finals else 1e-3)
    for ax in axes:
        ax.set_xlabel("log t  (t = time)")
        ax.axhline(0.0, color="0.7", lw=0.8)
        ax.grid(alpha=0.3)
    _name_runs(fig, axes, labels, colors)
    fig.suptitle(title)
    return _finish(fig, path)


def margin_references(labels, trajectories, model: AbstractModel, dataset) -> dict[str, float]:
    """The max-margin level each run's Q-margin tends to, where one is computable: for the linear model,
    mirror flow converges in direction to w* = argmin ‖w‖_p s.t. y_i⟨x_i, w⟩ ≥ 1 in its potential's horizon
    gauge (Pesme, Dragomir & Flammarion 2024), whose Q-margin min_i y_i⟨x_i, w*⟩ / Q∞(w*)^{1/α} is the level
    (:func:`flowsim.analysis.references.max_margin`). Other models, or a reference solver that fails: none."""
    if not isinstance(model, Linear):
        return {}
    from ..analysis.references import max_margin
    from ..errors import FlowSimError
    from ..potentials import get_potential

    Z = (dataset.y[:, None] * dataset.X).cpu().numpy()
    refs = {}
    for label, tr in zip(labels, trajectories, strict=True):
        try:
            cfg = dict(tr.config["potential"])
            pot = get_potential(cfg.pop("name"), **cfg)
            p = pot.horizon.p
            w = max_margin(Z, p, **({"check_unique": False} if p == 1 else {})).w  # (the level is unique)
            gauge = float(pot.horizon_function(torch.as_tensor(w))) ** (1.0 / pot.horizon.alpha)
            refs[label] = float(np.min(Z @ w)) / gauge
        except (FlowSimError, KeyError, TypeError):  # custom potentials, solver failures: no level
            continue
    return refs


def plot_loss(labels, trajectories, path: str | Path | None = None, title: str = "Loss along mirror flow"):
    """log L and log(t·L) against log t."""
    fig, axes = _runs_figure(labels, 2, (5.5, 4.0))
    colors = _run_colors(len(labels))
    for label, tr, color in zip(labels, trajectories, colors, strict=True):
        for ax, key in zip(axes, ("log_loss", "log_t_loss"), strict=True):
            ax.plot(*_finite(tr, key), label=label, color=color)
    axes[0].set_ylabel("log L(θ(t))")
    axes[1].set_ylabel("log (t · L(θ(t)))")
    for ax in axes:
        ax.set_xlabel("log t  (t = time)")
        ax.grid(alpha=0.3)
    _name_runs(fig, axes, labels, colors)
    fig.suptitle(title)
    return _finish(fig, path)


def plot_neuron_masses(labels, trajectories, path: str | Path | None = None):
    """Final neuron masses ‖w̃_j‖ = |a_j|‖w_j‖ sorted, per run (sparse vs dense features)."""
    runs = [(label, tr) for label, tr in zip(labels, trajectories, strict=True) if "neuron_mass" in tr.diagnostics]
    names = [f"{label} (log t = {tr.log_t[-1]:.3g})" for label, tr in runs]
    fig, (ax,) = _runs_figure(names, 1, (7.0, 4.0))
    colors = _run_colors(len(runs))
    for (_, tr), name, color in zip(runs, names, colors, strict=True):
        m = np.sort(np.asarray(tr.diagnostics["neuron_mass"][-1]))[::-1]
        share = m / m.sum() if m.sum() > 0 else m
        ax.plot(np.arange(1, len(m) + 1), share, marker="o", label=name, color=color)
    ax.set_yscale("log")
    ax.set_xlabel("neuron rank j (sorted by mass)")
    ax.set_ylabel("mass share  ‖w̃_j‖ / Σ_k ‖w̃_k‖")
    ax.set_title("Neuron masses at the final time (w̃_j = |a_j| w_j)")
    ax.grid(alpha=0.3, which="both")
    _name_runs(fig, [ax], names, colors)
    return _finish(fig, path)


def plot_features(
    labels,
    trajectories,
    model: AbstractModel,
    path: str | Path | None = None,
    top: int = 6,
    image_shape: tuple[int, int] | None = None,
    max_runs: int = INLINE_LEGEND_RUNS,
):
    """Input-weight representations w̃_j = |a_j| w_j of the heaviest neurons per run, one row per run.

    For image data (``image_shape``, e.g. (8, 8) for digits) each w̃_j is drawn as an image, otherwise as a
    stem plot of its coordinates. Only the first ``max_runs`` runs are drawn (the title says so when there are
    more), so that a sweep's figure keeps a readable size.
    """
    if not isinstance(model, AbstractTwoLayer):
        return None
    shown = list(zip(labels, trajectories, strict=True))[:max_runs]
    rows = len(shown)
    fig, axes = plt.subplots(rows, top, figsize=(1.9 * top, 2.0 * rows + 0.6), squeeze=False, constrained_layout=True)
    for r, (label, tr) in enumerate(shown):
        theta = torch.as_tensor(tr.theta[-1])
        rep = model.input_weight_representation(theta).numpy()
        mass = np.linalg.norm(rep, axis=1)
        order = np.argsort(mass)[::-1][:top]
        scale = np.abs(rep[order]).max() or 1.0
        image = None
        for c in range(top):
            ax = axes[r, c]
            if c >= len(order):
                ax.axis("off")
                continue
            w = rep[order[c]]
            if image_shape is not None and int(np.prod(image_shape)) == w.size:
                image = ax.imshow(w.reshape(image_shape), cmap="RdBu_r", vmin=-scale, vmax=scale)
                ax.set_xticks([])
                ax.set_yticks([])
            else:
                ax.stem(np.arange(w.size), w, basefmt=" ")
                ax.set_ylim(-scale * 1.05, scale * 1.05)
                ax.set_xlabel("input coordinate k")
            ax.set_title(f"j={order[c]}  mass {mass[order[c]] / (mass.sum() or 1):.2f}", fontsize=8)
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
        if image is not None:  # one colour scale per row (its heaviest neuron's largest |w̃_jk|)
            fig.colorbar(image, ax=list(axes[r]), shrink=0.9, label=r"$\tilde w_{jk}$")
    more = f" (the first {rows} of {len(trajectories)} runs)" if rows < len(trajectories) else ""
    fig.suptitle(f"Input-weight representation w̃_j = |a_j| w_j of the heaviest neurons (final time){more}")
    return _finish(fig, path)


def warm_up() -> None:
    """Draw one small throwaway figure in memory (matplotlib's font cache and the Agg renderer get loaded), so
    that the first real figure does not pay for it; used while an experiment's last runs finish."""
    fig, ax = plt.subplots(figsize=(2, 2), constrained_layout=True)
    ax.plot([0, 1], [0, 1], label="x")
    ax.set_xlabel("log t")
    ax.legend()
    fig.savefig(io.BytesIO(), format="png", dpi=50)
    plt.close(fig)


def experiment_plots(labels, trajectories, model, dataset, out_dir: str | Path) -> list[Path]:
    """Write margins.png, loss.png and (two-layer models) neurons.png, features.png to ``out_dir``."""
    out_dir = Path(out_dir)
    paths = [
        plot_margins(
            labels,
            trajectories,
            out_dir / "margins.png",
            title=f"Margins along mirror flow: {model!r} on {dataset.name}",
            references=margin_references(labels, trajectories, model, dataset),
        ),
        plot_loss(labels, trajectories, out_dir / "loss.png", title=f"Loss along mirror flow on {dataset.name}"),
    ]
    if isinstance(model, AbstractTwoLayer):
        paths.append(plot_neuron_masses(labels, trajectories, out_dir / "neurons.png"))
        shape = (8, 8) if dataset.d == 64 and "digits" in dataset.name else None
        paths.append(plot_features(labels, trajectories, model, out_dir / "features.png", image_shape=shape))
    return [p for p in paths if p is not None]


def plot_flow_vs_discrete(
    label: str, flow: Trajectory, discrete: Trajectory, diff: dict, path: str | Path | None = None
):
    """Flow vs discrete mirror descent at matched flow-clock times, against log t.

    Three panels: normalized margins of both runs; balance drift of both (models with hidden neurons;
    discrete steps break the balance law at O(η²) per step, the flow keeps it to solver tolerance); and the
    direction error ‖θ_f/‖θ_f‖ − θ_d/‖θ_d‖‖ (log scale).

    Args:
        label: the potential's label (title); flow, discrete: trajectories saved at the same times;
        diff: :func:`flowsim.discrete.compare_trajectories` of the two.
    """
    fig, axes = plt.subplots(1, 3, figsize=(15, 4), constrained_layout=True)
    cfg = discrete.config.get("solver", {})
    md_label = f"mirror descent ({cfg.get('schedule', '?')}, η = {cfg.get('step_size', float('nan')):g})"
    for tr, name, style in ((flow, "mirror flow", "-"), (discrete, md_label, "--")):
        x, y = _finite(tr, "normalized_margin")
        axes[0].plot(x, y, style, label=name)
        x, y = _finite(tr, "balance_drift")
        if len(x):
            axes[1].semilogy(x, np.maximum(y, 1e-17), style, label=name)
    lt, err = np.asarray(diff["log_t"]), np.asarray(diff["direction_error"])
    ok = np.isfinite(lt) & np.isfinite(err) & (err > 0)
    axes[2].semilogy(lt[ok], err[ok], color="C3")
    axes[0].set_ylabel("normalized margin  q_min / ‖θ‖₂^L")
    axes[1].set_ylabel("balance drift  max_j |B_j(t) − B_j(0)| / scale")
    axes[2].set_ylabel("direction error  ‖θ_f/‖θ_f‖ − θ_d/‖θ_d‖‖₂")
    if not axes[1].lines:
        axes[1].text(0.5, 0.5, "no hidden neurons (no balance law)", ha="center", transform=axes[1].transAxes)
    for ax in axes:
        ax.set_xlabel("log t  (t = flow time; discrete: t_k = Σ η_j)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(f"Mirror flow vs discrete mirror descent at matched times: {label}")
    return _finish(fig, path)


def _finish(fig, path):
    if path is None:
        return fig
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- rate fits and long horizons (flowsim.rates)
def plot_rate_fits(log_t, series: dict, fits: dict, path: str | Path | None = None, title: str = "Rate fits"):
    """One panel per fitted quantity: the data against log t (log-log axes) and the fitted law on its window.

    Args:
        log_t: log t at the save times, shape `(k,)`.
        series: name → values along the trajectory, shape `(k,)`: ``"loss"`` takes log L (plotted as
            log(t·L) against log log t), ``"norm"`` a norm, ``"margin_gap"`` limit − margin (positive).
        fits: name → :class:`~flowsim.rates.RateFit` for the same names.
        path: PNG path; None returns the figure.
    """
    names = list(series)
    fig, axes = plt.subplots(1, len(names), figsize=(4.6 * len(names), 3.8), squeeze=False, constrained_layout=True)
    lt = np.asarray(log_t, dtype=np.float64)
    for ax, name in zip(axes[0], names, strict=True):
        v = np.asarray(series[name], dtype=np.float64)
        ok = np.isfinite(lt) & (lt > 1.0) & np.isfinite(v)
        f = fits.get(name)
        lo, hi = f.window if f is not None else (lt[ok].min(), lt[ok].max())
        w = ok & (lt >= lo) & (lt <= hi)
        with np.errstate(invalid="ignore", divide="ignore"):
            llt = np.log(lt)
        if name == "loss":
            ax.plot(lt[ok], (lt + v)[ok], ".", ms=3, label="log(t·L)")
            if f is not None:
                ax.plot(lt[w], f["c"] + (f["a"] + 1) * lt[w] + f["b"] * llt[w], "-", label=f"fit b={f['b']:.4f}")
            ax.set_ylabel("log(t·L)")
        elif name == "norm":
            ax.loglog(lt[ok], v[ok], ".", ms=3, label="‖θ‖")
            if f is not None:
                ax.loglog(lt[w], np.exp(f["c"]) * lt[w] ** f["gamma"], "-", label=f"fit γ={f['gamma']:.4f}")
            ax.set_ylabel("‖θ‖₂")
        else:
            ax.loglog(lt[ok], np.abs(v[ok]), ".", ms=3, label=name)
            if f is not None and "kappa" in f.params:
                ax.loglog(lt[w], np.exp(f["c"]) * lt[w] ** (-f["kappa"]), "-", label=f"fit κ={f['kappa']:.3f}")
            ax.set_ylabel(name)
        ax.set_xscale("log")
        ax.set_xlabel("log t")
        ax.axvspan(lo, hi, color="0.9", zorder=0)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return _finish(fig, path)


def plot_curves(
    curves: dict,
    path: str | Path | None = None,
    *,
    xlabel="log t",
    ylabel="",
    title="",
    logx=True,
    marks: dict | None = None,
):
    """Generic line plot of name → (x, y) curves (validation scripts), with optional vertical marks."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2), constrained_layout=True)
    for name, (x, y) in curves.items():
        ax.plot(x, y, label=str(name))
    for name, x in (marks or {}).items():
        if x is not None and np.isfinite(x):
            ax.axvline(x, ls=":", color="0.4")
            ax.annotate(str(name), (x, ax.get_ylim()[0]), fontsize=7, rotation=90, va="bottom")
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _finish(fig, path)


def save_drawing(draw: Callable[[Any], None], path: str | Path, *, dpi: int = 100) -> None:
    """Run ``draw(plt)`` (it draws on pyplot's current figure), save that figure to ``path``, close all figures.

    The figure functions of :mod:`flowsim.lab.validate` draw through this, so that matplotlib is imported here
    only.
    """
    try:
        draw(plt)
        plt.gcf().savefig(path, dpi=dpi)
    finally:
        plt.close("all")
