"""Matplotlib figures for trajectories and experiments (the only module that imports matplotlib).

Every figure has labelled axes with units (time t or log t), a legend and a title.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .models import AbstractModel, AbstractTwoLayer  # noqa: E402
from .trajectory import Trajectory  # noqa: E402

__all__ = ["plot_margins", "plot_loss", "plot_neuron_masses", "plot_features", "experiment_plots"]


def _finite(tr: Trajectory, key: str):
    lt = tr.log_t
    v = np.asarray(tr.diagnostics.get(key, np.full(len(tr), np.nan)), dtype=float)
    ok = np.isfinite(lt) & np.isfinite(v)
    return lt[ok], v[ok]


def plot_margins(
    labels, trajectories, path: str | Path | None = None, title: str = "Margins along mirror flow"
):
    """Normalized margin q_min/‖θ‖₂^L and Q-margin q_min/Q∞(θ)^{L/α} against log t, one line per run."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for label, tr in zip(labels, trajectories, strict=True):
        for ax, key in zip(axes, ("normalized_margin", "q_margin"), strict=True):
            x, y = _finite(tr, key)
            ax.plot(x, y, label=label)
    axes[0].set_ylabel("normalized margin  q_min / ‖θ‖₂^L")
    axes[1].set_ylabel("Q-margin  q_min / Q∞(θ)^{L/α}")
    for ax in axes:
        ax.set_xlabel("log t  (t = time)")
        ax.axhline(0.0, color="0.7", lw=0.8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return _finish(fig, path)


def plot_loss(labels, trajectories, path: str | Path | None = None, title: str = "Loss along mirror flow"):
    """log L and log(t·L) against log t."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for label, tr in zip(labels, trajectories, strict=True):
        x, y = _finite(tr, "log_loss")
        axes[0].plot(x, y, label=label)
        x, y = _finite(tr, "log_t_loss")
        axes[1].plot(x, y, label=label)
    axes[0].set_ylabel("log L(θ(t))")
    axes[1].set_ylabel("log (t · L(θ(t)))")
    for ax in axes:
        ax.set_xlabel("log t  (t = time)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return _finish(fig, path)


def plot_neuron_masses(labels, trajectories, path: str | Path | None = None):
    """Final neuron masses ‖w̃_j‖ = |a_j|‖w_j‖ sorted, per run (sparse vs dense features)."""
    fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
    for label, tr in zip(labels, trajectories, strict=True):
        mass = tr.diagnostics.get("neuron_mass")
        if mass is None:
            continue
        m = np.sort(np.asarray(mass[-1]))[::-1]
        share = m / m.sum() if m.sum() > 0 else m
        ax.plot(np.arange(1, len(m) + 1), share, marker="o", label=f"{label} (log t = {tr.log_t[-1]:.3g})")
    ax.set_yscale("log")
    ax.set_xlabel("neuron rank j (sorted by mass)")
    ax.set_ylabel("mass share  ‖w̃_j‖ / Σ_k ‖w̃_k‖")
    ax.set_title("Neuron masses at the final time (w̃_j = |a_j| w_j)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _finish(fig, path)


def plot_features(
    labels,
    trajectories,
    model: AbstractModel,
    path: str | Path | None = None,
    top: int = 6,
    image_shape: tuple[int, int] | None = None,
):
    """Input-weight representations w̃_j = |a_j| w_j of the heaviest neurons per run.

    For image data (``image_shape``, e.g. (8, 8) for digits) each w̃_j is drawn as an image, otherwise as a
    stem plot of its coordinates.
    """
    if not isinstance(model, AbstractTwoLayer):
        return None
    rows = len(trajectories)
    fig, axes = plt.subplots(
        rows, top, figsize=(1.9 * top, 2.0 * rows + 0.6), squeeze=False, constrained_layout=True
    )
    for r, (label, tr) in enumerate(zip(labels, trajectories, strict=True)):
        import torch

        theta = torch.as_tensor(tr.theta[-1])
        rep = model.input_weight_representation(theta).numpy()
        mass = np.linalg.norm(rep, axis=1)
        order = np.argsort(mass)[::-1][:top]
        scale = np.abs(rep[order]).max() or 1.0
        for c in range(top):
            ax = axes[r, c]
            if c >= len(order):
                ax.axis("off")
                continue
            w = rep[order[c]]
            if image_shape is not None and int(np.prod(image_shape)) == w.size:
                ax.imshow(w.reshape(image_shape), cmap="RdBu_r", vmin=-scale, vmax=scale)
                ax.set_xticks([])
                ax.set_yticks([])
            else:
                ax.stem(np.arange(w.size), w, basefmt=" ")
                ax.set_ylim(-scale * 1.05, scale * 1.05)
                ax.set_xlabel("input coordinate k")
            ax.set_title(f"j={order[c]}  mass {mass[order[c]] / (mass.sum() or 1):.2f}", fontsize=8)
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.suptitle("Input-weight representation w̃_j = |a_j| w_j of the heaviest neurons (final time)")
    return _finish(fig, path)


def experiment_plots(labels, trajectories, model, dataset, out_dir: str | Path) -> list[Path]:
    """Write margins.png, loss.png and (two-layer models) neurons.png, features.png to ``out_dir``."""
    out_dir = Path(out_dir)
    paths = [
        plot_margins(
            labels,
            trajectories,
            out_dir / "margins.png",
            title=f"Margins along mirror flow: {model!r} on {dataset.name}",
        ),
        plot_loss(
            labels, trajectories, out_dir / "loss.png", title=f"Loss along mirror flow on {dataset.name}"
        ),
    ]
    if isinstance(model, AbstractTwoLayer):
        paths.append(plot_neuron_masses(labels, trajectories, out_dir / "neurons.png"))
        shape = (8, 8) if dataset.d == 64 and "digits" in dataset.name else None
        paths.append(plot_features(labels, trajectories, model, out_dir / "features.png", image_shape=shape))
    return [p for p in paths if p is not None]


def _finish(fig, path):
    if path is None:
        return fig
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
