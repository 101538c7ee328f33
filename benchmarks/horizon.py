"""Work to reach astronomical log-time horizons: RHS evaluations and wall time vs log t.

Problems: C1 (one point, Euclidean, linear; closed form u(t) = log(e^{u0} + ‖x‖² t) evaluated in log-space as
logaddexp(u0, log‖x‖² + log t)) and a two-layer ReLU net (gaussian data, d = 2, width 3, gradient flow).
Each horizon is a separate run from t = 0. Methods: dopri5 (explicit, torchdiffeq; stability-limited in
log-time, so linear in log t — run only to 1e4) and radau (implicit, scipy + autograd Jacobian).
The last line is ``closed_form_rel_error_at_log_t_1e6=<x>`` (radau, rtol 1e-11).

Run: ``python benchmarks/horizon.py [--quick]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from flowsim import simulate
from flowsim.data import load_dataset, make_dataset
from flowsim.models import Linear, TwoLayerReLU
from flowsim.potentials import Euclidean


def c1(log_t: float, method: str):
    x = np.array([0.6, -0.3, 0.9])
    theta0 = np.array([0.2, 0.1, -0.4])
    data = make_dataset(x[None, :], np.array([-1.0]))
    u0 = -x @ theta0
    t0 = time.perf_counter()
    tr = simulate(
        Linear(3),
        data,
        Euclidean(),
        theta0=theta0,
        save_log_t=[log_t],
        method=method,
        rtol=1e-11,
        atol=1e-13,
        max_steps=10**8,
    )
    wall = time.perf_counter() - t0
    u = -tr.theta[-1] @ x
    exact = np.logaddexp(u0, np.log(x @ x) + log_t)
    return tr, wall, abs(u - exact) / abs(exact)


def two_layer(log_t: float, method: str):
    data = load_dataset("gaussian", n=20, d=2, separation=3.0, seed=0)
    t0 = time.perf_counter()
    tr = simulate(
        TwoLayerReLU(2, 3),
        data,
        Euclidean(),
        save_log_t=[log_t],
        method=method,
        rtol=1e-8,
        atol=1e-10,
        init_scale=0.3,
        seed=0,
        kinks="naive",
        max_steps=10**8,
    )
    return tr, time.perf_counter() - t0


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="nfe and wall time vs log-time horizon")
    ap.add_argument("--quick", action="store_true", help="skip dopri5 at log t = 1e4")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    horizons = [1e2, 1e3, 1e4, 1e6]
    print(
        f"{'problem':<10} {'method':<7} {'log t':>8} {'nfe':>9} {'n_jac':>6} {'steps':>8} {'wall s':>8} "
        f"{'C1 rel err':>11}  status"
    )
    err_1e6 = float("nan")
    for method in ("dopri5", "radau"):
        for lt in horizons:
            if method == "dopri5" and (lt > 1e4 or (args.quick and lt > 1e3)):
                print(f"{'C1':<10} {method:<7} {lt:>8.0e} {'(skipped: ≈2.3 nfe per unit log t)':>40}")
                continue
            tr, wall, err = c1(lt, method)
            if method == "radau" and lt == 1e6:
                err_1e6 = err
            print(
                f"{'C1':<10} {method:<7} {lt:>8.0e} {tr.stats['nfe']:>9} {tr.stats.get('n_jac', 0):>6} "
                f"{tr.stats['n_accepted']:>8} {wall:>8.2f} {err:>11.2e}  {tr.status.value}"
            )
    for lt in horizons:
        tr, wall = two_layer(lt, "radau")
        d = tr.diagnostics
        print(
            f"{'two-layer':<10} {'radau':<7} {lt:>8.0e} {tr.stats['nfe']:>9} {tr.stats.get('n_jac', 0):>6} "
            f"{tr.stats['n_accepted']:>8} {wall:>8.2f} {'—':>11}  {tr.status.value}  "
            f"log L = {d['log_loss'][-1]:.6g}, margin = {d['normalized_margin'][-1]:.6f}"
        )
    for lt in [1e2, 1e3]:
        tr, wall = two_layer(lt, "dopri5")
        print(
            f"{'two-layer':<10} {'dopri5':<7} {lt:>8.0e} {tr.stats['nfe']:>9} {0:>6} {tr.stats['n_accepted']:>8} "
            f"{wall:>8.2f} {'—':>11}  {tr.status.value}"
        )
    print(f"closed_form_rel_error_at_log_t_1e6={err_1e6:.3e}")


if __name__ == "__main__":
    main()
