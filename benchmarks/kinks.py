"""Naive dopri5 vs Filippov handling of ReLU kinks on the reference problem of issue 3.

Student–teacher two-layer ReLU data (n = 30, d = 5, seed 0), TwoLayerReLU(5, 20) (init seed 0), exponential
loss, gradient flow and hyperbolic entropy (β = 0.1), rtol 1e-6, atol 1e-9, horizon log t = 10. Naive
integration chatters on sliding surfaces and is far too slow to reach log t = 10: it is stopped at
``--naive-log-t`` (default 3; about 2.5 minutes for both potentials) and its RHS-evaluation count is
extrapolated linearly in log t from the rate over the last unit of log t of its run (stated in the output).
Prints RHS evaluations, wall time, final normalized margins and the per-neuron balance drift (C7) of both
at log t = L0 − 2, L0 − 1, L0 (L0 the naive horizon) with the ratio naive/Filippov: the drift is relative
to the balance scale, so Filippov's (set by dopri5's error in the first steps, t < 0.05) falls as the
weights grow while naive's grows with every chattering sliding step. Last line
``nfe_ratio_naive_over_filippov=<x>`` (the smaller of the two potentials' ratios).

Run: ``python benchmarks/kinks.py [--naive-log-t 3]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from flowsim import simulate
from flowsim.analysis.diagnostics import balance
from flowsim.data import student_teacher_relu
from flowsim.flow import MirrorFlowField
from flowsim.losses import get_loss
from flowsim.models import TwoLayerReLU
from flowsim.potentials import get_potential
from flowsim.solvers import SmoothDriver
from flowsim.timegrid import s_from_log_t

RTOL, ATOL, LOG_T_END = 1e-6, 1e-9, 10.0


def naive(model, ds, pot, log_t_end):
    """Naive dopri5 to ``log_t_end``; returns nfe at 21 log-t points, wall time, drift, last θ."""
    field = MirrorFlowField(model, pot, get_loss("exponential"), ds.X, ds.y)
    theta0 = model.init(seed=0)
    lts = np.linspace(log_t_end - 2.0, log_t_end, 21)
    grid = torch.tensor(np.concatenate([[0.0], s_from_log_t(lts)]))
    nfe, thetas = [], []
    start = time.perf_counter()

    def save(tau, z):
        nfe.append(field.nfe)
        thetas.append(pot.inverse_mirror_map(z))

    SmoothDriver("dopri5", RTOL, ATOL, 10**9).integrate(field, pot.mirror_map(theta0), grid, save)
    wall = time.perf_counter() - start
    B, S = balance(model, pot, torch.stack([theta0, *thetas]))
    drift = ((B - B[:1]).abs().max(1).values / S.max(1).values).numpy()
    return lts, np.array(nfe), wall, drift, thetas[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--naive-log-t", type=float, default=3.0, help="horizon of the naive run (log t)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    ds = student_teacher_relu(n=30, d=5, seed=0)
    model = TwoLayerReLU(5, 20)
    ratios = []
    for name, pot in [
        ("gradient flow", get_potential("euclidean")),
        ("hyperbolic entropy β=0.1", get_potential("hyperbolic_entropy", beta=0.1)),
    ]:
        L0 = args.naive_log_t
        fil = simulate(
            model,
            ds,
            pot,
            log_t_end=LOG_T_END,
            save_log_t=np.linspace(-3, LOG_T_END, 131),
            rtol=RTOL,
            atol=ATOL,
            kinks="filippov",
        )
        fil0 = simulate(model, ds, pot, save_log_t=np.array([L0]), rtol=RTOL, atol=ATOL, kinks="filippov")
        lts, nfe, wall, drift, theta_last = naive(model, ds, pot, L0)
        last = int(np.argmin(np.abs(lts - (L0 - 1.0))))  # the last unit of log t
        rate = (nfe[-1] - nfe[last]) / (lts[-1] - lts[last])
        nfe_naive_10 = nfe[-1] + rate * (LOG_T_END - L0)
        st = fil.stats
        d = fil.diagnostics
        print(f"== {name} (rtol {RTOL:g}, atol {ATOL:g})")
        print(
            f"  filippov to log t={LOG_T_END:g}: nfe {st['nfe']}, wall {st['wall_time']:.2f} s, "
            f"crossings {st['n_crossings']}, sliding entries {st['n_sliding_entries']}, exits "
            f"{st['n_sliding_exits']}, sliding at end {st['n_sliding_at_end']}, segments {st['n_segments']}; "
            f"final normalized margin {d['normalized_margin'][-1]:.6f}"
        )
        margin0 = float((ds.y * model.forward(theta_last, ds.X)).min() / theta_last.norm() ** 2)
        print(
            f"  naive to log t={L0:g}: nfe {nfe[-1]}, wall {wall:.1f} s; normalized margin there {margin0:.6f} "
            f"(filippov {fil0.diagnostics['normalized_margin'][-1]:.6f}); max |Δθ| to filippov "
            f"{float((theta_last - torch.as_tensor(fil0.theta[-1])).abs().max()):.2e}"
        )
        for lt in (L0 - 2.0, L0 - 1.0, L0):
            df = float(np.interp(lt, fil.log_t, d["balance_drift"]))
            dn = float(drift[1:][int(np.argmin(np.abs(lts - lt)))])
            print(f"  balance drift at log t={lt:g}: naive {dn:.3e}, filippov {df:.3e}, ratio {dn / df:.1f}")
        print(
            f"  filippov balance drift max over the run {d['balance_drift'].max():.3e} (at log t="
            f"{fil.log_t[int(np.argmax(d['balance_drift']))]:.1f}); run saving only at log t={L0:g}: "
            f"{fil0.diagnostics['balance_drift'][-1]:.3e}"
        )
        print(
            f"  naive extrapolated to log t={LOG_T_END:g}: {nfe_naive_10:.3e} RHS evaluations "
            f"(linear in log t at its rate {rate:.3e}/unit log t over log t in [{lts[last]:g}, {L0:g}])"
        )
        ratios.append(nfe_naive_10 / st["nfe"])
        print(f"  ratio naive/filippov (nfe to log t={LOG_T_END:g}) = {ratios[-1]:.1f}")
    print(f"nfe_ratio_naive_over_filippov={min(ratios):.1f}")


if __name__ == "__main__":
    main()
