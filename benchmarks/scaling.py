"""Cost of one mirror-flow run vs data size n, width m and horizon (log t).

Default model: the smooth two-layer relu² net (``TwoLayerReLUPower(d, m)``, no kinks), hyperbolic entropy
β = 0.1, exponential loss, log-time, dopri5 rtol 1e-6, atol 1e-9, gaussian data with a planted linear
teacher, d = 16, init scale 0.5, one thread. Prints RHS evaluations, wall time, time per RHS and time per
RHS per n·p (p = parameters); n is varied at m = 32 and m at n = 1000 (both to log t = 2), the horizon at
n = 200, m = 32. Time per RHS grows with n·p once the problem is past the per-op overhead; RHS counts grow
with the horizon (dopri5 is stability-limited in log-time, see horizon.py).

``--model relu`` runs the same cases on the two-layer ReLU net with naive kinks instead. That run measures
chattering, not size: naive dopri5 creeps along the sliding surfaces (n = 100, m = 32 already needs
≈ 335,000 RHS evaluations to log t = 0 and ≈ 630,000 to log t = 2, about 2.5 minutes), so it takes tens of
minutes; the time per RHS is the same as relu²'s to within ~10 %.

    python benchmarks/scaling.py [--device cpu|cuda] [--quick] [--model relu2|relu] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch

from flowsim import simulate
from flowsim.data import make_dataset
from flowsim.models import TwoLayerReLU, TwoLayerReLUPower

D = 16


def run(n: int, m: int, log_t_end: float, device, threads: int, model_name: str = "relu2") -> dict:
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n, D, generator=g, dtype=torch.float64)
    y = torch.sign(X @ torch.randn(D, generator=g, dtype=torch.float64))
    model = TwoLayerReLUPower(D, m) if model_name == "relu2" else TwoLayerReLU(D, m)
    tr = simulate(
        model,
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
        threads=threads,
    )
    nfe = max(tr.stats["nfe"], 1)
    return {
        "n": n,
        "m": m,
        "p": model.num_params,
        "log_t": log_t_end,
        "status": tr.status.value,
        "nfe": tr.stats["nfe"],
        "wall": tr.stats["wall_time"],
        "per_rhs_ms": 1e3 * tr.stats["wall_time"] / nfe,
        "per_rhs_np_ns": 1e9 * tr.stats["wall_time"] / nfe / (n * model.num_params),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--model", choices=("relu2", "relu"), default="relu2")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    ns = (100, 1000) if args.quick else (100, 1000, 4000)
    ms = (16, 128) if args.quick else (16, 64, 256)
    horizons = (1.0, 2.0, 4.0) if args.quick else (1.0, 2.0, 4.0, 8.0, 16.0)
    print(f"device={device} threads={torch.get_num_threads()} torch={torch.__version__} model={args.model} d={D}")
    print(
        f"{'vary':>7} {'n':>5} {'m':>4} {'p':>5} {'log t':>6} {'status':>8} {'nfe':>7} {'wall s':>8} {'ms/RHS':>8} "
        f"{'ns/(RHS·n·p)':>13}",
        flush=True,
    )
    cases = (
        [("n", n, 32, 2.0) for n in ns]
        + [("m", 1000, m, 2.0) for m in ms]
        + [("horizon", 200, 32, h) for h in horizons]
    )
    start = time.perf_counter()
    for vary, n, m, h in cases:
        r = run(n, m, h, device, args.threads, args.model)
        print(
            f"{vary:>7} {r['n']:5} {r['m']:4} {r['p']:5} {r['log_t']:6.1f} {r['status']:>8} {r['nfe']:7} "
            f"{r['wall']:8.2f} {r['per_rhs_ms']:8.3f} {r['per_rhs_np_ns']:13.3f}",
            flush=True,
        )
    print(f"total_wall_s={time.perf_counter() - start:.1f}")


if __name__ == "__main__":
    main()
