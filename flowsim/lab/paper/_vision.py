"""Figures 4 and 14 through the vision preset (``flowsim run --preset vision``, :mod:`flowsim.lab.vision`):
a bias-free CNN trained by mini-batch mirror descent under gradient descent, hyperbolic entropy and the
smoothed p = 3 potential to a matched training loss; per-layer weight-magnitude histograms (fig 4), magnitude
pruning and dead channels (fig 14)."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..vision import format_vision_table, get_vision_preset, run_vision
from ._base import FigureResult, register

# quick: 400 training images (all ten classes: the split is mixed), 150 epochs at most, matched loss 0.15
QUICK = {"train_limit": 400, "epochs": 150, "target_loss": 0.15}


def _config(quick: bool) -> dict:
    cfg = get_vision_preset("vision")
    if quick:
        cfg["data"]["train_limit"] = QUICK["train_limit"]
        cfg["training"]["epochs"] = QUICK["epochs"]
        cfg["training"]["target_loss"] = QUICK["target_loss"]
    return cfg


@register("fig4-14", "vision preset: CNN weight histograms per layer (fig4), pruning and dead channels (fig14)",
          aliases=("fig4", "fig14"))  # fmt: skip
def fig4_14(quick: bool, out: Path) -> FigureResult:
    """Run the vision preset (quick: :data:`QUICK`) into ``out/fig4-14_run/`` and copy
    its histogram and pruning figures to ``fig4.png`` and ``fig14.png``."""
    cfg = _config(quick)
    run_dir = out / "fig4-14_run"
    summary = run_vision(cfg, run_dir)
    shutil.copyfile(run_dir / "weight_histograms.png", out / "fig4.png")
    shutil.copyfile(run_dir / "pruning.png", out / "fig14.png")
    first = summary["first_layer"]
    runs = {
        label: {
            "status": r["status"],
            "epochs": r["epochs"],
            "mean_loss": r["mean_loss"],
            "train_accuracy": r["train_accuracy"],
            "test_accuracy": r["test_accuracy"],
            "participation": {k: v["participation"] for k, v in r["sparsity"].items()},
            "hoyer": {k: v["hoyer"] for k, v in r["sparsity"].items()},
            "dead_fraction": r["dead_fraction"],
            "pruning": r["pruning"],
        }
        for label, r in summary["runs"].items()
    }
    fmt = ", ".join
    lines = [
        f"CNN {summary['model'].get('layers')} on {summary['data']['name']} ({summary['data']['n_train']} training "
        f"images), mini-batch mirror descent to mean loss ≤ {cfg['training'].get('target_loss')}",
        f"first layer ({first}) participation ratio (lower = sparser): "
        + fmt(f"{k} {v['participation'][first]:.3f}" for k, v in runs.items()),
        "test accuracy: " + fmt(f"{k} {v['test_accuracy']:.3f}" for k, v in runs.items()),
    ]
    note = (
        "the paper's CNN experiments are reproduced in small by the vision preset (8×8 digits, a two-block "
        "VGG-style CNN); fig4 = per-layer histograms, fig14 = pruning curves are readings of the captions"
    )
    numbers = {"first_layer": first, "config": cfg, "runs": runs, "table": format_vision_table(summary)}
    return FigureResult("fig4-14", "vision: CNN weight magnitudes and pruning", numbers, lines, note,
                        ["fig4.png", "fig14.png"])  # fmt: skip
