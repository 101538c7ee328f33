"""Ensembles: K members batched (one simulate_ensemble call) vs sequential (K simulate calls), members/s.

Members: a smooth two-layer net (relu², d = 5, width 10) on 40 gaussian points with a planted linear
teacher, hyperbolic entropy with β log-spaced in [0.05, 1] (8 values) × seeds, init scale 0.5, exponential
loss, log-time to log t = 5, rtol 1e-6, atol 1e-9, 30 save points, diagnostics off (they are per member in
both cases). Sequential runs use flowsim.simulate (torchdiffeq dopri5, kinks="naive"); the batched run uses
per-member step sizes, and also the shared-step mode for comparison. Members/s = K / wall time; the
sequential runs at K = 64 are all 64 members by default (about 10 s); with ``--seq-members k`` < K (``--quick``:
8) the figure is extrapolated from k members taken evenly strided over the K (every β equally represented).

    python benchmarks/ensembles.py [--device cpu|cuda] [--quick]

Last line: ``k64_batched_over_sequential=<x>`` (acceptance: ≥ 10 on CPU).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from flowsim import simulate
from flowsim.data import make_dataset
from flowsim.ensemble import members_grid, simulate_ensemble
from flowsim.models import TwoLayerReLUPower


def problem(device):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(40, 5, generator=g, dtype=torch.float64)
    y = torch.sign(X @ torch.randn(5, generator=g, dtype=torch.float64))
    return make_dataset(X.to(device), y.to(device)), TwoLayerReLUPower(5, 10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="log t = 3 and fewer sequential members")
    parser.add_argument("--seq-members", type=int, default=64, help="sequential members timed (rest extrapolated)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    device = torch.device(args.device)
    ds, model = problem(device)
    log_t_end = 3.0 if args.quick else 5.0
    n_seq = 8 if args.quick else args.seq_members
    kw = dict(log_t_end=log_t_end, n_save=30, rtol=1e-6, atol=1e-9, diagnostics=False)
    betas = [{"name": "hyperbolic_entropy", "beta": float(b)} for b in np.geomspace(0.05, 1.0, 8)]
    print(f"device={device} threads={torch.get_num_threads()} log_t_end={log_t_end}")
    print(f"{'K':>3} {'mode':>22} {'wall s':>8} {'members/s':>10} {'batch steps':>12} {'batch RHS':>10}")
    ratio = {}
    for K in (1, 8, 64):
        members = members_grid(betas[:K] if K < 8 else betas, [0.5], list(range(max(K // 8, 1))))[:K]
        k_seq = min(K, n_seq)
        # an evenly strided subset, so that every β is represented (members are ordered β slowest, and small β
        # runs take more steps: the first k_seq members alone would bias the extrapolation)
        sample = members[:: K // k_seq][:k_seq]
        start = time.perf_counter()
        for m in sample:
            simulate(model, ds, m.potential, init_scale=m.init_scale, seed=m.seed, kinks="naive", device=device, **kw)
        t_seq = (time.perf_counter() - start) * K / k_seq
        note = "" if k_seq == K else f" (extrapolated from {k_seq})"
        print(f"{K:3} {'sequential' + note:>22} {t_seq:8.2f} {K / t_seq:10.2f}")
        for step in ("per_member", "shared"):
            start = time.perf_counter()
            trs = simulate_ensemble(model, ds, members, step=step, device=device, **kw)
            t = time.perf_counter() - start
            assert all(tr.success for tr in trs)
            st = trs[0].stats
            print(f"{K:3} {'batched ' + step:>22} {t:8.2f} {K / t:10.2f} {st['batch_steps']:12} {st['batch_nfe']:10}")
            if step == "per_member":
                ratio[K] = t_seq / t
    print("batched/sequential members-per-second: " + ", ".join(f"K={k}: {v:.3g}x" for k, v in ratio.items()))
    print(f"k64_batched_over_sequential={ratio[64]:.4g}")


if __name__ == "__main__":
    main()
