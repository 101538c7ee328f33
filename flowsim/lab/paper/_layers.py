"""Figures 8-10: per-layer weight-magnitude distributions of a three-layer ReLU network under every built-in
mirror map, compared at matched training loss (the "time rescaling": each map reaches the loss at its own t).

The networks are trained by discrete mirror descent (:func:`flowsim.discrete.mirror_descent`, loss-normalised
steps with rollback), which reaches small losses of a degree-3 network in seconds; exact Filippov integration
does not cover kinks in two hidden layers at once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...analysis.weights import layer_sparsity, magnitude_histograms
from ...data import student_teacher_relu
from ...discrete import mirror_descent
from ...models import DeepReLU
from . import _draw
from ._base import FigureResult, pot_label, register, save

MIRROR_MAPS = (
    {"name": "euclidean"},
    {"name": "hyperbolic_entropy", "beta": 0.05},
    {"name": "p_power", "p": 3.0},
    {"name": "smoothed_homogeneous", "p": 3.0, "lam": 0.01},
    {"name": "p_power_quadratic", "p": 3.0, "lam": 1.0},
)


def _setting(quick: bool) -> dict:
    if quick:
        return {"n": 30, "d": 5, "widths": [12, 12], "steps": 1200, "target_log_loss": -8.0}
    return {"n": 60, "d": 5, "widths": [32, 32], "steps": 4000, "target_log_loss": -20.0}


def _matched(tr, target: float) -> int:
    """Index of the first save point with log L ≤ target (−1 when never reached)."""
    hit = np.nonzero(np.asarray(tr.diagnostics["log_loss"]) <= target)[0]
    return int(hit[0]) if len(hit) else -1


@register(
    "fig8-10",
    "three-layer ReLU net: per-layer weight-magnitude distributions of every mirror map at matched loss",
    aliases=("fig8", "fig9", "fig10"),
)
def fig8_10(quick: bool, out: Path) -> FigureResult:
    """fig8.png: per-layer |w|/max|w| histograms at matched loss; fig9.png: log L vs log t (each map reaches the
    matched loss at its own time); fig10.png: per-layer participation ratio of each map."""
    cfg = _setting(quick)
    data = student_teacher_relu(n=cfg["n"], d=cfg["d"], teacher_width=2, seed=0)
    model = DeepReLU(cfg["d"], cfg["widths"])
    layers = list(model.param_shapes())
    runs, hists, losses, pngs = {}, {}, {}, []
    for pot in MIRROR_MAPS:
        tr = mirror_descent(model, data, pot, step_size=0.05, schedule="loss_normalized", rollback=True,
                            n_steps=cfg["steps"], n_save=cfg["steps"] + 1, seed=0, threads=1)  # fmt: skip
        k = _matched(tr, cfg["target_log_loss"])
        theta = torch.as_tensor(np.asarray(tr.theta[k]))
        label = pot_label(pot)
        sp = layer_sparsity(model, theta)
        runs[label] = {
            "potential": pot,
            "status": tr.status.value,
            "reached_target": k >= 0,
            "log_loss": float(tr.diagnostics["log_loss"][k]),
            "log_t": float(tr.log_t[k]),
            "participation": {layer: sp[layer]["participation"] for layer in layers},
            "hoyer": {layer: sp[layer]["hoyer"] for layer in layers},
            "small_fraction": {layer: sp[layer]["small_fraction"] for layer in layers},
        }
        hists[label] = magnitude_histograms(model, theta, bins=20)
        losses[label] = (tr.log_t[1:], tr.diagnostics["log_loss"][1:])
    title = f"matched loss log L = {cfg['target_log_loss']:g}"
    save(lambda plt: _draw.layer_histograms(plt, hists, layers, title=title), out, "fig8.png", pngs)
    save(lambda plt: _draw.curves(plt, losses, xlabel="log t", ylabel="log L", title="time rescaling: log L vs log t"),
         out, "fig9.png", pngs)  # fmt: skip
    part = {k: (list(range(1, len(layers) + 1)), [v["participation"][la] for la in layers]) for k, v in runs.items()}
    save(lambda plt: _draw.curves(plt, part, xlabel="layer", ylabel="participation ratio (1: dense)", title=title),
         out, "fig10.png", pngs)  # fmt: skip
    numbers = {**cfg, "layers": layers, "runs": runs}
    fmt = ", ".join
    lines = [
        f"three-layer ReLU net {cfg['d']}→{cfg['widths'][0]}→{cfg['widths'][1]}→1 on {cfg['n']} student–teacher "
        f"points (d = {cfg['d']}), mirror descent until log L = {cfg['target_log_loss']:g} under each mirror map",
        "log t at the matched loss: " + fmt(f"{k} {v['log_t']:.2f}" for k, v in runs.items()),
        "participation ratio (W1, W2, W3; lower = sparser): "
        + fmt(f"{k} " + "/".join(f"{v['participation'][la]:.2f}" for la in layers) for k, v in runs.items()),
    ]
    note = (
        "the net, the data, the maps' parameters, the matched level and training by loss-normalised mirror descent "
        "are chosen here; 'time rescaling' is read as comparing the maps at equal loss instead of equal t"
    )
    return FigureResult("fig8-10", "per-layer weight magnitudes at matched loss", numbers, lines, note, pngs)
