"""Deep ReLU nets: exact kinks (the default since kinks="auto" picks them) against naive stepping.

Two problems, each run with ``kinks="filippov"`` and ``kinks="naive"`` in this process (one thread, CPU time of
``simulate``), dopri5:

* **crowded crossings**: digits 0 vs 1 (the main job's data, 360 points, 64 pixels), ``DeepReLU(64, [16, 16])``,
  init scale 0.5, rtol 1e-5, atol 1e-8, gradient flow, to ``--log-t`` (default 8). Every deep-net crossing is an exact
  restart, so exact kinks cost more here;
* **sliding modes**: ``student_teacher_relu(n=60, d=4, seed=3)``, ``DeepReLU(4, [6, 6])``, gradient flow, log t = 2,
  rtol 1e-6: naive stepping chatters on the sliding surfaces (its run is capped at ``--naive-cap`` seconds of wall
  time and reports the log t it reached).

For each: status, log t reached, RHS evaluations, crossings, CPU seconds, and the largest relative θ difference
between the two over their common save points. Last lines:

    deep_crowded_cpu_exact_over_naive=<x>
    deep_sliding_naive_log_t_reached=<log t of the capped naive run>

Usage:
    python benchmarks/deep_kinks.py [--log-t 8] [--naive-cap 60]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from kinks_scaling import _WallCap  # (benchmarks/ is the script's directory: on sys.path)

import flowsim
from flowsim.data import load_dataset, student_teacher_relu
from flowsim.models import DeepReLU


def _run(model, data, kinks: str, cap: float | None = None, **kw):
    cpu0 = time.process_time()
    with _WallCap(cap):  # (simulate returns the partial trajectory, status interrupted)
        tr = flowsim.simulate(model, data, "euclidean", kinks=kinks, threads=1, **kw)
    return tr, time.process_time() - cpu0


def _report(name: str, kinks: str, tr, cpu: float) -> None:
    s = tr.stats
    print(
        f"{name:8} {kinks:8} {tr.status.value:11} log t {float(tr.log_t[-1]):6.2f}  RHS {s['nfe']:7}  "
        f"crossings {s.get('n_crossings', '-'):>6}  CPU {cpu:7.1f} s",
        flush=True,
    )


def _difference(a, b) -> float:
    """Largest relative θ difference over the save points both runs have (an interrupted run's last row is its
    state at the interruption, not a save point)."""
    common = np.intersect1d(np.asarray(a.log_t), np.asarray(b.log_t))
    ta = np.asarray(a.theta)[np.isin(np.asarray(a.log_t), common)]
    tb = np.asarray(b.theta)[np.isin(np.asarray(b.log_t), common)]
    return float((np.abs(ta - tb).max(1) / np.abs(ta).max(1)).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log-t", type=float, default=8.0, help="horizon of the crowded-crossings problem")
    parser.add_argument("--naive-cap", type=float, default=60.0, help="wall-time cap of the naive sliding run (s)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    digits = load_dataset("digits", a=0, b=1)
    crowded = dict(log_t_end=args.log_t, n_save=40, rtol=1e-5, atol=1e-8, seed=0, init_scale=0.5)
    runs = {}
    for kinks in ("naive", "filippov"):
        runs[kinks] = _run(DeepReLU(digits.d, [16, 16]), digits, kinks, **crowded)
        _report("crowded", kinks, *runs[kinks])
    print(f"crowded  max relative θ difference {_difference(runs['filippov'][0], runs['naive'][0]):.2e}")
    ratio = runs["filippov"][1] / runs["naive"][1]

    st = student_teacher_relu(n=60, d=4, seed=3)
    sliding = dict(log_t_end=2.0, n_save=10, rtol=1e-6, atol=1e-9, seed=0, init_scale=0.5)
    exact, cpu = _run(DeepReLU(4, [6, 6]), st, "filippov", **sliding)
    _report("sliding", "filippov", exact, cpu)
    naive, cpu = _run(DeepReLU(4, [6, 6]), st, "naive", cap=args.naive_cap, **sliding)
    _report("sliding", "naive", naive, cpu)
    print(f"sliding  max relative θ difference over the naive run's saves {_difference(exact, naive):.2e}")
    print(f"deep_crowded_cpu_exact_over_naive={ratio:.2f}")
    print(f"deep_sliding_naive_log_t_reached={float(naive.log_t[-1]):.2f}")


if __name__ == "__main__":
    main()
