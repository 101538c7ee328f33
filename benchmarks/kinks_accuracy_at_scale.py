"""Exact kinks at scale keep their accuracy: balance drift at a tight tolerance and loose runs against it.

Student–teacher data ``student_teacher_relu(1000, d=5, seed=0)``, ``TwoLayerReLU(5, 20)``, gradient flow and
hyperbolic entropy β = 0.1, log t = 5, 11 save points, one thread. Reference: the explicit Filippov driver
(dopri5) at rtol 1e-10, atol 1e-13; its largest per-neuron balance drift relative to the balance's scale
(``diagnostics["balance_drift"]``, CASES C7). Then dopri5 and radau at rtol 1e-6 (atol 1e-9): the largest relative
θ error over the save points, max_k ‖θ_k − θ_ref,k‖∞ / ‖θ_ref,k‖∞, in units of rtol (issue 17, criterion 4: drift
≤ 1e-9, error ≤ 100 × rtol).

Last lines:

    scale_accuracy_balance_drift_max=<largest reference drift over both potentials>
    scale_accuracy_error_over_rtol_max=<largest error over the loose runs, in units of rtol>

Usage:
    python benchmarks/kinks_accuracy_at_scale.py [--n 1000] [--potentials gf he0.1]   # several minutes
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


def _run(data, pot, method, rtol, atol, diagnostics):
    cpu0 = time.process_time()
    tr = flowsim.simulate(
        TwoLayerReLU(5, 20),
        data,
        pot,
        log_t_end=5.0,
        n_save=11,
        kinks="filippov",
        method=method,
        rtol=rtol,
        atol=atol,
        threads=1,
        diagnostics=diagnostics,
    )
    return tr, time.process_time() - cpu0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="data size (default 1000)")
    parser.add_argument("--potentials", nargs="+", choices=sorted(POTENTIALS), default=list(POTENTIALS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = student_teacher_relu(args.n, d=5, seed=0)
    drifts, errors = [], []
    for name in args.potentials:
        pot = POTENTIALS[name]
        ref, cpu = _run(data, pot, "dopri5", 1e-10, 1e-13, True)
        drift = float(np.max(ref.diagnostics["balance_drift"]))
        drifts.append(drift)
        print(
            f"{name:6} reference dopri5 rtol 1e-10: {ref.status.value}, RHS {ref.stats['nfe']:,}, CPU {cpu:.0f} s, "
            f"balance drift {drift:.2e}",
            flush=True,
        )
        for method in ("dopri5", "radau"):
            tr, cpu = _run(data, pot, method, 1e-6, 1e-9, False)
            err = float((np.abs(tr.theta - ref.theta).max(1) / np.abs(ref.theta).max(1)).max()) / 1e-6
            errors.append(err)
            print(
                f"{name:6} {method:7} rtol 1e-6: {tr.status.value}, RHS {tr.stats['nfe']:,}, CPU {cpu:.0f} s, "
                f"error {err:.2f} × rtol",
                flush=True,
            )
    print(f"scale_accuracy_balance_drift_max={max(drifts):.3g}")
    print(f"scale_accuracy_error_over_rtol_max={max(errors):.3g}")


if __name__ == "__main__":
    main()
