"""Exact ReLU kinks at scale: Filippov vs naive stepping over data size n and width m.

Student–teacher data ``student_teacher_relu(n, d=5, seed=0)``, ``TwoLayerReLU(5, m)``, gradient flow and
hyperbolic entropy β = 0.1, to log t = 5 at rtol 1e-6, atol 1e-9, one thread. For every grid point the Filippov
driver runs to the horizon (status, log t reached, RHS evaluations, crossings, segments, wall and CPU time, µs
per RHS), then naive dopri5 in the same process under a wall-time cap (log t reached, RHS, µs per RHS).

Printed at the end: the fitted growth exponents of the Filippov RHS evaluations in n (at m = 20) and in m (at
n = 100), then

    filippov_scale_failures=<runs that did not reach log t = 5>
    filippov_per_rhs_over_naive=<median over the grid of Filippov µs/RHS ÷ naive µs/RHS>

``--method`` picks the Filippov runs' method (default dopri5, the explicit driver; ``auto`` hands over to the
implicit driver once explicit steps stop growing, ``radau`` is implicit throughout); naive stepping stays dopri5.
On this data the fixed-pattern field's stiffness grows with n (``benchmarks/kinks_stiffness.py``), so the
explicit driver's steps are stability-limited at large n.

Usage:
    python benchmarks/kinks_scaling.py            # the full grid (n up to 3000, m up to 1000; long)
    python benchmarks/kinks_scaling.py --quick    # n ∈ {30, 100, 300}, m ∈ {20, 80}, naive capped at 20 s
    python benchmarks/kinks_scaling.py --method auto --ns 30 100 300 1000 3000 --ms 20 --no-naive
"""

from __future__ import annotations

import argparse
import math
import signal
import statistics
import time

import numpy as np
import torch

import flowsim
from flowsim.data import student_teacher_relu
from flowsim.models import TwoLayerReLU
from flowsim.potentials import Euclidean, HyperbolicEntropy

LOG_T = 5.0
RTOL, ATOL = 1e-6, 1e-9
POTENTIALS = {"gf": Euclidean, "he0.1": lambda: HyperbolicEntropy(0.1)}


class _WallCap:
    """Interrupts the run in the main thread after ``seconds`` (simulate keeps the partial trajectory)."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds

    def __enter__(self):
        if self.seconds:
            signal.signal(signal.SIGALRM, self._raise)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
        return self

    def __exit__(self, *exc) -> None:
        if self.seconds:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, signal.SIG_DFL)

    @staticmethod
    def _raise(signum, frame):
        raise KeyboardInterrupt


def run(n: int, m: int, pot: str, kinks: str, cap: float | None, method: str = "dopri5") -> dict:
    data = student_teacher_relu(n, d=5, seed=0)
    model = TwoLayerReLU(5, m)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    with _WallCap(cap):
        tr = flowsim.simulate(
            model,
            data,
            POTENTIALS[pot](),
            log_t_end=LOG_T,
            rtol=RTOL,
            atol=ATOL,
            kinks=kinks,
            method=method,
            n_save=11,
            threads=1,
            diagnostics=False,
        )
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    st = tr.stats
    nfe = int(st.get("nfe", 0))
    return {
        "status": tr.status.value,
        "log_t": float(tr.log_t[-1]),
        "nfe": nfe,
        "crossings": int(st.get("n_crossings", 0)),
        "segments": int(st.get("n_segments", 0)),
        "wall": wall,
        "cpu": cpu,
        "us_per_rhs": 1e6 * cpu / max(nfe, 1),
        "message": tr.message,
    }


_NO_RUN = {"log_t": math.nan, "nfe": 0, "us_per_rhs": math.nan}  # (--no-naive)


def fit_exponent(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log y against log x."""
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small grid (a few minutes)")
    parser.add_argument("--naive-cap", type=float, default=None, help="wall seconds per naive run (default 60)")
    parser.add_argument(
        "--potentials", nargs="+", choices=sorted(POTENTIALS), default=list(POTENTIALS), help="a subset (default both)"
    )
    parser.add_argument("--method", choices=["dopri5", "auto", "radau"], default="dopri5", help="Filippov runs' method")
    parser.add_argument("--ns", type=int, nargs="+", default=None, help="data sizes n at m = 20 (default: the grid's)")
    parser.add_argument("--ms", type=int, nargs="+", default=None, help="widths m at n = 100 (default: the grid's)")
    parser.add_argument("--no-naive", action="store_true", help="Filippov runs only (no per-RHS ratio)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    ns = args.ns or ([30, 100, 300] if args.quick else [30, 100, 300, 1000, 3000])
    ms = args.ms or ([20, 80] if args.quick else [20, 80, 320, 1000])
    cap = args.naive_cap or (20.0 if args.quick else 60.0)
    grid = sorted({(n, 20) for n in ns} | {(100, m) for m in ms})
    rows = []
    header = (
        f"{'pot':6} {'n':>5} {'m':>5} | {'status':10} {'log t':>6} {'RHS':>8} {'cross':>7} {'segs':>6} "
        f"{'wall s':>7} {'cpu s':>7} {'µs/RHS':>7} | naive {'log t':>6} {'RHS':>8} {'µs/RHS':>7} | ratio"
    )
    print(header)
    print("-" * len(header))
    for pot in args.potentials:
        for n, m in grid:
            fil = run(n, m, pot, "filippov", None, args.method)
            nai = _NO_RUN if args.no_naive else run(n, m, pot, "naive", cap)
            ratio = fil["us_per_rhs"] / nai["us_per_rhs"]
            rows.append((pot, n, m, fil, nai, ratio))
            print(
                f"{pot:6} {n:5d} {m:5d} | {fil['status']:10} {fil['log_t']:6.2f} {fil['nfe']:8d} "
                f"{fil['crossings']:7d} {fil['segments']:6d} {fil['wall']:7.1f} {fil['cpu']:7.1f} "
                f"{fil['us_per_rhs']:7.0f} | naive {nai['log_t']:6.2f} {nai['nfe']:8d} {nai['us_per_rhs']:7.0f} "
                f"| {ratio:5.2f}",
                flush=True,
            )
            if fil["status"] != "success":
                print(f"    filippov: {fil['message'][:200]}")
    print()
    for pot in args.potentials:
        by_n = [(n, f["nfe"]) for p, n, m, f, _, _ in rows if p == pot and m == 20 and f["status"] == "success"]
        by_m = [(m, f["nfe"]) for p, n, m, f, _, _ in rows if p == pot and n == 100 and f["status"] == "success"]
        en = fit_exponent(*zip(*by_n, strict=True)) if len(by_n) >= 2 else math.nan
        em = fit_exponent(*zip(*by_m, strict=True)) if len(by_m) >= 2 else math.nan
        print(f"{pot}: RHS evaluations grow like n^{en:.3f} (m = 20) and m^{em:.3f} (n = 100)")
    failures = sum(1 for *_, f, _, _ in rows if f["status"] != "success" or f["log_t"] < LOG_T - 1e-9)
    print(f"filippov_scale_failures={failures}")
    if not args.no_naive:
        print(f"filippov_per_rhs_over_naive={statistics.median(r[-1] for r in rows):.3f}")


if __name__ == "__main__":
    main()
