"""C12: hyperbolic entropy on linear data — the time t*(β) at which the direction turns from the ℓ2 towards
the ℓ1 max-margin solution grows exponentially in β.

Definition. ŵ₂ = ℓ2 hard-margin SVM, ŵ₁ = ℓ1 max-margin solution with margin γ₁ (flowsim.analysis.references:
QP and HiGHS LP, computed independently of the flow). r(θ) = min_i ⟨z_i, θ⟩ / (‖θ‖₁ γ₁) ∈ (0, 1] is the
ℓ1-margin ratio (1 only in the ℓ1 direction); r₂ = r(ŵ₂) is its value in the ℓ2 geometry (gradient flow
plateaus there). t*(β) is the first time at which r(θ(t)) ≥ r₂ + (1 − r₂)/2, halfway from the ℓ2 geometry
to the ℓ1 optimum, reported as log t* (linear interpolation in log t between bracketing saves). Near θ = 0
hyperbolic entropy is gradient flow with learning rate β, so the flow keeps the ℓ2 geometry until |θ| ~ β,
i.e. log t ~ β/‖ŵ₂‖: log t* should be about linear in β (t* ~ exp(cβ)). The script fits log t* = a + c·β
and reports R².

Data: sparse linear teacher (k = 1) in d = 20 with n = 12 points (flowsim.data "sparse_teacher", seed 0),
where the ℓ1 solution is sparse and r₂ ≈ 0.73.

Run: ``python validation/c12_hyperbolic_entropy_tstar.py --out DIR [--quick]``; writes c12_ratio.png,
c12_tstar.png and c12_tstar.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from flowsim import simulate
from flowsim.analysis.rates import fit_linear
from flowsim.analysis.references import max_margin_l1, svm_l2
from flowsim.data import load_dataset
from flowsim.lab.plotting import plot_curves
from flowsim.models import Linear
from flowsim.potentials import HyperbolicEntropy


def crossing_log_t(log_t: np.ndarray, diff: np.ndarray) -> float:
    """First log t where ``diff`` (r(θ) − level) turns positive (linear interpolation in log t); nan if never."""
    idx = np.nonzero((diff[1:] > 0) & (diff[:-1] <= 0))[0]
    if diff[0] > 0:
        return float(log_t[0])
    if not idx.size:
        return float("nan")
    i = int(idx[0])
    x0, x1, y0, y1 = log_t[i], log_t[i + 1], diff[i], diff[i + 1]
    return float(x0 + (x1 - x0) * (-y0) / (y1 - y0))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="validation_out", help="output directory for PNG/JSON")
    ap.add_argument("--quick", action="store_true", help="fewer β values, shorter horizon")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_dataset("sparse_teacher", n=12, d=20, k=1, seed=0)
    Z = data.Z.numpy()
    ref1 = max_margin_l1(Z)
    w1, w2 = ref1.w, svm_l2(Z).w
    cos12 = float(w1 @ w2 / np.linalg.norm(w1) / np.linalg.norm(w2))
    r2 = float(np.min(Z @ w2) / np.abs(w2).sum() / ref1.margin)
    level = r2 + 0.5 * (1 - r2)
    betas = [0.25, 1.0, 2.0, 4.0] if args.quick else [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 12.0, 16.0]
    horizon = 1e4 if args.quick else 1e6
    save = np.logspace(-1, np.log10(horizon), 300 if args.quick else 600)
    curves, rows = {}, []
    for beta in betas:
        t0 = time.perf_counter()
        tr = simulate(
            Linear(data.d),
            data,
            HyperbolicEntropy(beta),
            theta0=np.zeros(data.d),
            save_log_t=save,
            method="radau",
            rtol=1e-9,
            atol=1e-11,
            diagnostics=False,
        )
        th = tr.theta[1:]
        nrm = np.linalg.norm(th, axis=1)
        c1 = th @ w1 / nrm / np.linalg.norm(w1)
        ratio = np.min(th @ Z.T, axis=1) / np.abs(th).sum(1) / ref1.margin
        lt = tr.log_t[1:]
        ts = crossing_log_t(lt, ratio - level)
        rows.append(
            {
                "beta": beta,
                "log_t_star": ts,
                "status": tr.status.value,
                "nfe": tr.stats["nfe"],
                "final_cos_l1": float(c1[-1]),
                "wall_s": time.perf_counter() - t0,
            }
        )
        curves[f"β={beta:g}"] = (lt, ratio)
        print(f"β = {beta:5g}: log t* = {ts:10.4g}   (nfe {tr.stats['nfe']}, final cos to ℓ1 = {c1[-1]:.6f})")
    b = np.array([r["beta"] for r in rows])
    lts = np.array([r["log_t_star"] for r in rows])
    ok = np.isfinite(lts)
    fit = None
    if ok.sum() >= 3:
        p, se, _, r2, _ = fit_linear(np.column_stack([b[ok], np.ones(ok.sum())]), lts[ok], ["c", "a"])
        pl, sel, _, r2l, _ = fit_linear(np.column_stack([b[ok], np.ones(ok.sum())]), np.log(lts[ok]), ["c", "a"])
        fit = {
            "log_t_star_vs_beta": {"slope_c": p["c"], "se": se["c"], "r2": r2},
            "log_log_t_star_vs_beta": {"slope": pl["c"], "se": sel["c"], "r2": r2l},
        }
        print(f"fit log t* = a + c·β: c = {p['c']:.4g} ± {se['c']:.2g}, R² = {r2:.4f}  (t* ~ exp(cβ))")
    curves[f"level r₂+(1−r₂)/2 = {level:.3f}"] = (save, np.full_like(save, level))
    curves[f"r₂ = {r2:.3f} (ℓ2 SVM)"] = (save, np.full_like(save, r2))
    plot_curves(
        curves,
        out / "c12_ratio.png",
        ylabel="ℓ1-margin ratio r(θ)",
        title=f"C12 hyperbolic entropy: ℓ2 → ℓ1 turn (cos(ŵ₁, ŵ₂) = {cos12:.3f})",
    )
    plot_curves(
        {"log t*(β)": (b[ok], lts[ok])},
        out / "c12_tstar.png",
        xlabel="β",
        ylabel="log t*",
        logx=False,
        title="C12: log t* grows linearly in β (t* ~ exp(cβ))",
    )
    result = {
        "rows": rows,
        "fit": fit,
        "cos_l1_l2_solutions": cos12,
        "r2": r2,
        "level": level,
        "horizon_log_t": horizon,
    }
    (out / "c12_tstar.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
