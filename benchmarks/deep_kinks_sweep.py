"""Deep ReLU nets under p-power potentials with p < 2: does every exact-kink run reach its horizon, and without bridges?

Under p < 2 the metric dθ/dz vanishes where a weight is 0, and a weight passing through 0 takes with it the
pre-activations h_i = w·r_i of every point whose only live input to that unit is w: coinciding surfaces, far below
the others' scale (docs/kinks.md, the deep section). The sweep: ``student_teacher_relu(n=80, d, seed)``,
``DeepReLU(3, [8, 6, 4])`` (d = 3) and ``DeepReLU(4, [6, 6])`` (d = 4), p ∈ {1.5, 1.25}, seeds 0-3, init scale 0.5,
exponential loss, dopri5, log t = 2, at each rtol of ``--rtols`` (default 1e-7 1e-8; atol = rtol / 1000), one
thread, each run capped at ``--cap`` seconds of wall time (a capped run counts as a failure). Per run: status,
log t reached, RHS evaluations, regularised bridges and CPU seconds. Last lines:

    deep_sweep_runs=<runs>
    deep_sweep_failures=<runs short of log t = 2>
    deep_sweep_bridged=<runs that needed a regularised bridge>

Usage:
    python benchmarks/deep_kinks_sweep.py [--rtols 1e-7 1e-8] [--cap 150]   (about 8 minutes)
"""

from __future__ import annotations

import argparse
import time

import torch
from kinks_scaling import _WallCap  # (benchmarks/ is the script's directory: on sys.path)

import flowsim
from flowsim.data import student_teacher_relu
from flowsim.models import DeepReLU

_NETS = (((8, 6, 4), 3), ((6, 6), 4))  # (hidden widths, input dimension)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rtols", type=float, nargs="+", default=[1e-7, 1e-8])
    parser.add_argument("--cap", type=float, default=150.0, help="wall-time cap per run, seconds")
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs = failures = bridged = 0
    head = ("rtol", "p", "seed", "net", "status", "log t", "RHS", "bridges", "cpu s")
    print("{:>6} {:>5} {:>4} {:>10} | {:>11} {:>6} {:>7} {:>7} {:>6}".format(*head))
    for rtol in args.rtols:
        for p in (1.5, 1.25):
            for seed in range(4):
                for widths, d in _NETS:
                    data = student_teacher_relu(n=80, d=d, seed=seed)
                    cpu0 = time.process_time()
                    with _WallCap(args.cap):
                        tr = flowsim.simulate(
                            DeepReLU(d, list(widths)),
                            data,
                            {"name": "p_power", "p": p},
                            kinks="filippov",
                            log_t_end=2.0,
                            n_save=10,
                            rtol=rtol,
                            atol=rtol * 1e-3,
                            seed=seed,
                            init_scale=0.5,
                            threads=1,
                        )
                    cpu = time.process_time() - cpu0
                    st = tr.stats
                    reached = float(tr.log_t[-1]) if len(tr.log_t) else float("nan")
                    ok = tr.status.value == "success"
                    runs += 1
                    failures += not ok
                    bridged += st.get("n_regularised_bridges", 0) > 0
                    net = "x".join(map(str, widths))
                    print(
                        f"{rtol:6.0e} {p:5.2f} {seed:4d} {net:>10} | {tr.status.value:>11} {reached:6.2f} "
                        f"{st.get('nfe', 0):7d} {st.get('n_regularised_bridges', 0):7d} {cpu:6.1f}"
                        + ("" if ok else f"  {tr.message[-120:]}"),
                        flush=True,
                    )
    print(f"deep_sweep_runs={runs}")
    print(f"deep_sweep_failures={failures}")
    print(f"deep_sweep_bridged={bridged}")


if __name__ == "__main__":
    main()
