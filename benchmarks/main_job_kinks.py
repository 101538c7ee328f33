"""The main job with exact kinks vs naive stepping at the same tolerance: CPU time and accuracy.

The main preset's three runs (two-layer ReLU, width 16, digits 0 vs 1, gradient flow, hyperbolic entropy β = 0.05,
smoothed p = 3 with λ = 0.01, rtol 1e-5, log t = 8) are run with ``kinks="filippov"`` (the preset's setting) and
``kinks="naive"``, alternating, one thread, ``--repeats`` times each; CPU time per run is the process time of
``simulate``. Accuracy: the largest relative θ error over the save points, max_k ‖θ_k − θ_ref,k‖∞ / ‖θ_ref,k‖∞,
against the same run with Filippov handling at rtol 1e-9, atol 1e-12 (computed once, about 2-3 minutes).

Last lines:

    main_job_errors_filippov=<GF>/<HE>/<SM>
    main_job_errors_naive=<GF>/<HE>/<SM>
    main_job_cpu_filippov_over_naive=<median over the repeats of the summed CPU time, Filippov ÷ naive>

Usage:
    python benchmarks/main_job_kinks.py [--repeats 3] [--no-reference]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

import flowsim
from flowsim.data import load_dataset
from flowsim.lab.config import get_preset
from flowsim.models import get_model
from flowsim.potentials import get_potential


def _runs():
    cfg = get_preset("main")
    data = load_dataset(cfg["data"]["name"], a=cfg["data"]["a"], b=cfg["data"]["b"])
    model = get_model(cfg["model"]["name"], input_dim=data.d, width=cfg["model"]["width"])
    pots = [
        (p["label"], get_potential(p["name"], **{k: v for k, v in p.items() if k not in ("name", "label")}))
        for p in cfg["potentials"]
    ]
    solver, horizon = cfg["solver"], cfg["horizon"]
    common = dict(
        loss=cfg["flow"]["loss"],
        log_t_end=horizon["log_t_end"],
        n_save=horizon["n_save"],
        init_scale=cfg["init"]["scale"],
        seed=cfg["init"]["seed"],
        method=solver["method"],
        max_steps=solver["max_steps"],
        threads=1,
        diagnostics=False,
    )
    return data, model, pots, solver, common


def _simulate(data, model, pot, common, **kw) -> tuple[flowsim.Trajectory, float]:
    cpu0 = time.process_time()
    tr = flowsim.simulate(model, data, pot, **common, **kw)
    return tr, time.process_time() - cpu0


def _error(tr, ref) -> float:
    return float((np.abs(tr.theta - ref.theta).max(1) / np.abs(ref.theta).max(1)).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-reference", action="store_true", help="skip the rtol 1e-9 reference (no errors)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data, model, pots, solver, common = _runs()
    tol = dict(rtol=solver["rtol"], atol=solver["atol"])
    modes = {"filippov": dict(kinks="filippov", solver_options=solver.get("options")), "naive": dict(kinks="naive")}
    totals: dict[str, list[float]] = {m: [] for m in modes}
    last: dict[str, list] = {}
    for rep in range(args.repeats):
        for mode, kw in modes.items() if rep % 2 == 0 else reversed(modes.items()):
            runs = [_simulate(data, model, pot, common, **tol, **kw) for _, pot in pots]
            totals[mode].append(sum(cpu for _, cpu in runs))
            last[mode] = runs
            nfe = " / ".join(str(tr.stats["nfe"]) for tr, _ in runs)
            cpus = " / ".join(f"{cpu:.2f}" for _, cpu in runs)
            print(f"repeat {rep}  {mode:8}  CPU {totals[mode][-1]:6.2f} s ({cpus})  RHS {nfe}", flush=True)
    ratio = statistics.median(f / n for f, n in zip(totals["filippov"], totals["naive"], strict=True))
    if not args.no_reference:
        refs = [_simulate(data, model, pot, common, rtol=1e-9, atol=1e-12, kinks="filippov")[0] for _, pot in pots]
        for mode in modes:
            errs = [_error(tr, ref) for (tr, _), ref in zip(last[mode], refs, strict=True)]
            print(f"main_job_errors_{mode}=" + "/".join(f"{e:.3g}" for e in errs))
    print(f"main_job_cpu_filippov_over_naive={ratio:.3f}")


if __name__ == "__main__":
    main()
