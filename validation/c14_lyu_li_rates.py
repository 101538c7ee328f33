"""C14: Lyu & Li rates for a bias-free two-layer ReLU network (L = 2) under gradient flow.

Predictions (Lyu & Li, ICLR 2020): once L < ℓ(0) the smoothed margin log(1/L)/‖θ‖² is non-decreasing;
normalized and smoothed margins converge to the same value; L ~ 1/(t (log t)^{2−2/L}) = 1/(t log t);
‖θ‖ ~ (log t)^{1/L} = (log t)^{1/2}. Fitted with flowsim.analysis.rates on a window of log t (default [1e3, 1e6];
quick: [1e2, 1e4]); the stiff driver (radau) makes log t = 1e6 cheap. Data: two Gaussian clouds in d = 2
(flowsim.data "gaussian", n = 20, seed 0), width 3, init scale 0.3 (no sliding modes on this problem, so
the implicit driver integrates straight through the early kinks).

Run: ``python validation/c14_lyu_li_rates.py --out DIR [--quick]``; writes c14_rates.png, c14_margins.png
and c14.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from flowsim import simulate
from flowsim.analysis.rates import fit_loss_rate, fit_margin_gap, fit_norm_growth
from flowsim.data import load_dataset
from flowsim.lab.plotting import plot_curves, plot_rate_fits
from flowsim.models import TwoLayerReLU
from flowsim.potentials import Euclidean


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="validation_out", help="output directory for PNG/JSON")
    ap.add_argument("--quick", action="store_true", help="horizon log t = 1e4, window [1e2, 1e4]")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_dataset("gaussian", n=20, d=2, separation=3.0, seed=0)
    horizon, window = (1e4, (1e2, 1e4)) if args.quick else (1e6, (1e3, 1e6))
    save = np.concatenate([np.linspace(-2.0, 2.0, 20), np.logspace(np.log10(2.5), np.log10(horizon), 200)])
    model = TwoLayerReLU(2, 3)
    tr = simulate(
        model,
        data,
        Euclidean(),
        save_log_t=save,
        method="radau",
        rtol=1e-10,
        atol=1e-12,
        init_scale=0.3,
        seed=0,
        kinks="naive",
    )
    d = tr.diagnostics
    L = model.degree
    f_loss = fit_loss_rate(tr.log_t, d["log_loss"], window)
    f_norm = fit_norm_growth(tr.log_t, d["l2_norm"], window)
    f_gap = fit_margin_gap(tr.log_t, d["normalized_margin"], window)
    small = d["log_loss"] < 0
    worst = float(np.min(np.diff(d["smoothed_margin"][small])))
    result = {
        "status": tr.status.value,
        "nfe": tr.stats["nfe"],
        "n_jac": tr.stats["n_jac"],
        "wall_s": tr.stats["wall_time"],
        "window_log_t": window,
        "loss_power_of_t": {"fit": f_loss["a"], "se": f_loss.stderr["a"], "theory": -1.0},
        "loss_power_of_log_t": {"fit": f_loss["b"], "se": f_loss.stderr["b"], "theory": -(2 - 2 / L)},
        "norm_gamma": {"fit": f_norm["gamma"], "se": f_norm.stderr["gamma"], "theory": 1 / L},
        "margin_gap_kappa": {"fit": f_gap["kappa"], "se": f_gap.stderr["kappa"], "limit": f_gap["limit"]},
        "smoothed_margin_min_increment_after_L_below_1": worst,
        "final_normalized_margin": float(d["normalized_margin"][-1]),
        "final_smoothed_margin": float(d["smoothed_margin"][-1]),
    }
    print(f"status {tr.status.value}, nfe {tr.stats['nfe']}, {tr.stats['wall_time']:.1f} s, window log t ∈ {window}")
    print(f"loss:   {f_loss}   (theory a = −1, b = {-(2 - 2 / L):g})")
    print(f"norm:   {f_norm}   (theory γ = {1 / L:g})")
    print(f"margin: {f_gap}")
    print(f"smoothed margin: smallest increment once L < 1: {worst:.3g} (non-decreasing up to solver tolerance)")
    print(f"normalized {d['normalized_margin'][-1]:.8f} vs smoothed {d['smoothed_margin'][-1]:.8f} at the horizon")
    plot_rate_fits(
        tr.log_t,
        {"loss": d["log_loss"], "norm": d["l2_norm"], "margin_gap": f_gap["limit"] - d["normalized_margin"]},
        {"loss": f_loss, "norm": f_norm, "margin_gap": f_gap},
        out / "c14_rates.png",
        title="C14 Lyu & Li rates, two-layer ReLU, gradient flow",
    )
    ok = np.isfinite(tr.log_t) & (tr.log_t > 0)
    plot_curves(
        {
            "normalized margin": (tr.log_t[ok], d["normalized_margin"][ok]),
            "smoothed margin": (tr.log_t[ok], d["smoothed_margin"][ok]),
        },
        out / "c14_margins.png",
        ylabel="margin",
        title="C14: smoothed margin non-decreasing, both converge",
    )
    (out / "c14.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
