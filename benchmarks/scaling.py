"""Cost of one mirror-flow run vs data size n, width m and horizon (log t).

Two-layer ReLU net (naive kinks, dopri5 rtol 1e-6, atol 1e-9), hyperbolic entropy β = 0.1, gaussian data
with a planted linear teacher, d = 16, init scale 0.5. Prints RHS evaluations, wall time and time per RHS;
n and m are varied at log t = 2, the horizon at n = 200, m = 32. Time per RHS grows with n·p once the
problem is past the per-op overhead; RHS counts grow with the horizon (dopri5 is stability-limited in
log-time, see horizon.py).

    python benchmarks/scaling.py [--device cpu|cuda] [--quick]
"""

from __future__ import annotations

import argparse

import torch

from flowsim import simulate
from flowsim.data import make_dataset
from flowsim.models import TwoLayerReLU


def run(n: int, m: int, log_t_end: float, device) -> dict:
    d = 16
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.sign(X @ torch.randn(d, generator=g, dtype=torch.float64))
    tr = simulate(
        TwoLayerReLU(d, m),
        make_dataset(X.to(device), y.to(device)),
        {"name": "hyperbolic_entropy", "beta": 0.1},
        init_scale=0.5,
        log_t_end=log_t_end,
        n_save=20,
        rtol=1e-6,
        atol=1e-9,
        kinks="naive",
        diagnostics=False,
        device=device,
        threads="auto",
    )
    return {
        "n": n,
        "m": m,
        "log_t": log_t_end,
        "status": tr.status.value,
        "nfe": tr.stats["nfe"],
        "wall": tr.stats["wall_time"],
        "per_rhs_ms": 1e3 * tr.stats["wall_time"] / max(tr.stats["nfe"], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    ns = (100, 1000) if args.quick else (100, 1000, 4000)
    ms = (16, 128) if args.quick else (16, 64, 256)
    horizons = (1.0, 2.0, 4.0) if args.quick else (1.0, 2.0, 4.0, 8.0)
    print(f"device={device}")
    print(f"{'vary':>7} {'n':>5} {'m':>4} {'log t':>6} {'status':>8} {'nfe':>7} {'wall s':>8} {'ms/RHS':>8}")
    cases = (
        [("n", n, 32, 2.0) for n in ns]
        + [("m", 1000, m, 2.0) for m in ms]
        + [("horizon", 200, 32, h) for h in horizons]
    )
    for vary, n, m, h in cases:
        r = run(n, m, h, device)
        print(
            f"{vary:>7} {r['n']:5} {r['m']:4} {r['log_t']:6.1f} {r['status']:>8} {r['nfe']:7} {r['wall']:8.2f} "
            f"{r['per_rhs_ms']:8.3f}"
        )


if __name__ == "__main__":
    main()
