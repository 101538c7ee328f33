"""Work to reach astronomical log-time horizons: RHS evaluations and wall time vs log t.

Problems: C1 (one point, Euclidean, linear; closed form u(t) = log(e^{u0} + ‖x‖² t) evaluated in log-space as
logaddexp(u0, log‖x‖² + log t)) and a two-layer ReLU net (gaussian data, d = 2, width 3, gradient flow).
Each horizon is a separate run from t = 0. Methods: dopri5 (explicit, torchdiffeq; stability-limited in
log-time, so linear in log t — run only to 1e4) and radau (implicit, scipy + autograd Jacobian).
Exact ReLU kinks at long horizons (``--relu``): student–teacher data (n = 30, d = 5), ``TwoLayerReLU(5, 20)``,
gradient flow and hyperbolic entropy β = 0.1, ``kinks="filippov", method="radau"`` (rtol 1e-6, atol 1e-9) to
log t = 1e2, 1e4, 1e6; at log t = 1e2 and rtol 1e-8 the final state against the explicit Filippov run (dopri5)
and the balance drift. It prints ``relu_filippov_nfe_ratio_1e6_over_1e2=<x>`` (the larger of the two
potentials' ratios).
The last line is ``closed_form_rel_error_at_log_t_1e6=<x>`` (radau, rtol 1e-11).

Run: ``python benchmarks/horizon.py [--quick] [--relu | --relu-only]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from flowsim import simulate
from flowsim.data import load_dataset, make_dataset, student_teacher_relu
from flowsim.models import Linear, TwoLayerReLU
from flowsim.potentials import Euclidean, HyperbolicEntropy


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


def relu_filippov(potential, log_t: float, method: str, rtol: float):
    data = student_teacher_relu(30, d=5, seed=0)
    t0 = time.process_time()
    tr = simulate(
        TwoLayerReLU(5, 20),
        data,
        potential,
        log_t_end=log_t,
        n_save=20,
        method=method,
        kinks="filippov",
        rtol=rtol,
        atol=rtol * 1e-3,
        max_steps=10**8,
    )
    return tr, time.process_time() - t0


def relu_section() -> None:
    """Exact kinks with Radau to log t = 1e6; agreement with the explicit Filippov run at 1e2."""
    print(f"\n{'potential':<10} {'method':<7} {'log t':>8} {'nfe':>9} {'n_jac':>6} {'steps':>7} {'events':>7}", end="")
    print(f" {'CPU s':>7}")
    ratios = []
    for name, pot in (("GF", Euclidean()), ("HE 0.1", HyperbolicEntropy(0.1))):
        nfe = {}
        for lt in (1e2, 1e4, 1e6):
            tr, cpu = relu_filippov(pot, lt, "radau", 1e-6)
            st = tr.stats
            nfe[lt] = st["nfe"]
            print(
                f"{name:<10} {'radau':<7} {lt:>8.0e} {st['nfe']:>9} {st['n_jac']:>6} {st['n_accepted']:>7} "
                f"{st['n_segments']:>7} {cpu:>7.1f}  {tr.status.value}"
            )
        ratios.append(nfe[1e6] / nfe[1e2])
        imp, _ = relu_filippov(pot, 1e2, "radau", 1e-8)
        exp, _ = relu_filippov(pot, 1e2, "dopri5", 1e-8)
        diff = np.linalg.norm(imp.theta[-1] - exp.theta[-1]) / np.linalg.norm(exp.theta[-1])
        drift = float(np.max(imp.diagnostics["balance_drift"]))
        print(
            f"{name:<10} log t 1e2, rtol 1e-8: radau vs dopri5 state rel diff {diff:.2e} (100 × rtol = 1e-6), "
            f"radau balance drift {drift:.2e}; nfe ratio 1e6/1e2 {ratios[-1]:.2f}"
        )
    print(f"relu_filippov_nfe_ratio_1e6_over_1e2={max(ratios):.2f}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="nfe and wall time vs log-time horizon")
    ap.add_argument("--quick", action="store_true", help="skip dopri5 at log t = 1e4")
    ap.add_argument("--relu", action="store_true", help="add exact ReLU kinks with radau to log t = 1e6 (minutes)")
    ap.add_argument("--relu-only", action="store_true", help="only the exact-kinks section")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.relu_only:
        relu_section()
        return
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
    if args.relu:
        relu_section()
    print(f"closed_form_rel_error_at_log_t_1e6={err_1e6:.3e}")


if __name__ == "__main__":
    main()
