"""Accuracy of soft crossings against exact restarts: radau (stiff coupling) and dopri5, per tolerance.

Student–teacher data `student_teacher_relu(n, d=5, seed=0)`, `TwoLayerReLU(5, 20)`, gradient flow and hyperbolic
entropy β = 0.1, log t = 4, 9 save points. Reference: the explicit driver with exact restarts at every crossing
(``soft_crossings=False``) at rtol 1e-10, atol 1e-13. For each rtol (atol = rtol·1e-3) and each of radau with soft
crossings, radau with exact restarts and dopri5 with soft crossings: the largest relative error over the save
points, max_k ‖θ_k − θ_ref,k‖∞ / ‖θ_ref,k‖∞, in units of rtol, with RHS evaluations, accepted steps, segments,
soft crossings of all crossings and CPU seconds (one thread).

Last line: ``radau_soft_error_over_rtol_max=<largest radau-soft error over the grid, in units of rtol>``.

Usage:
    python benchmarks/kinks_soft_accuracy.py [--n 100] [--rtols 1e-6 1e-8]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import flowsim
from flowsim.data import student_teacher_relu
from flowsim.models import TwoLayerReLU

POTENTIALS = {"gf": "euclidean", "he0.1": {"name": "hyperbolic_entropy", "beta": 0.1}}
RUNS = [("radau", True), ("radau", False), ("dopri5", True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--rtols", type=float, nargs="+", default=[1e-6, 1e-8])
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = student_teacher_relu(args.n, d=5, seed=0)
    common = dict(log_t_end=4.0, n_save=9, kinks="filippov", seed=0, threads=1)
    worst = 0.0
    print(
        f"{'pot':6} {'rtol':>7} {'method':7} {'crossings':9} | {'err/rtol':>8} {'RHS':>6} {'steps':>6} {'segs':>5} "
        f"{'soft/all':>10} {'cpu s':>6}"
    )
    for label, pot in POTENTIALS.items():
        ref = flowsim.simulate(
            TwoLayerReLU(5, 20), data, pot, rtol=1e-10, atol=1e-13, solver_options={"soft_crossings": False}, **common
        )
        for rtol in args.rtols:
            for method, soft in RUNS:
                cpu = time.process_time()
                tr = flowsim.simulate(
                    TwoLayerReLU(5, 20),
                    data,
                    pot,
                    method=method,
                    rtol=rtol,
                    atol=rtol * 1e-3,
                    solver_options={"soft_crossings": soft},
                    **common,
                )
                cpu = time.process_time() - cpu
                err = float((np.abs(tr.theta - ref.theta).max(1) / np.abs(ref.theta).max(1)).max()) / rtol
                if method == "radau" and soft:
                    worst = max(worst, err)
                st = tr.stats
                kind = "soft" if soft else "exact"
                print(
                    f"{label:6} {rtol:7.0e} {method:7} {kind:9} | {err:8.2f} {st['nfe']:6d} {st['n_accepted']:6d} "
                    f"{st['n_segments']:5d} {st['n_soft_crossings']:4d}/{st['n_crossings']:<5d} {cpu:6.1f}",
                    flush=True,
                )
    print(f"radau_soft_error_over_rtol_max={worst:.2f}")


if __name__ == "__main__":
    main()
