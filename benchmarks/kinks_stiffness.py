"""Why explicit steps shrink with n on the kinks-scaling data: the fixed-pattern field's stiffness.

Student–teacher data ``student_teacher_relu(n, d=5, seed=0)``, ``TwoLayerReLU(5, 20)`` (the n-series of
``benchmarks/kinks_scaling.py``), gradient flow and hyperbolic entropy β = 0.1, in log-time s. The loss is a sum
over the points, so the Jacobian of the field grows with n. For each n:

* the most negative real part λ of the eigenvalues of the Jacobian ∂(dz/ds)/∂z of the field with the activation
  pattern frozen (autograd, p = 120 coordinates), at the states of an exact-kinks Radau run at log t = 2, and
  the step dopri5 can take there, 3.3/|λ| (its real stability interval);
* the median accepted step of the explicit Filippov driver (dopri5, rtol 1e-6) over s ∈ [1.9, 2.4] and its
  rejected fraction there.

When the measured step sits at 3.3/|λ| (with rejections: the controller probing the stability limit) the
explicit driver's work grows like |λ|, whatever the kink handling; the implicit driver (``method="radau"``, or
``"auto"``, which hands over to it) is not bound by it.

Usage:
    python benchmarks/kinks_stiffness.py [--ns 30 100 300 1000]
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch

import flowsim
from flowsim.data import student_teacher_relu
from flowsim.models import TwoLayerReLU
from flowsim.potentials import Euclidean, HyperbolicEntropy
from flowsim.solvers.filippov import segment

POTENTIALS = {"gf": Euclidean, "he0.1": lambda: HyperbolicEntropy(0.1)}
WIDTH, LOG_T, WINDOW = 20, 2.0, (1.9, 2.4)
DOPRI5_INTERVAL = 3.3


def stiffness(data, pot, theta: np.ndarray, s: float) -> float:
    """Most negative real part of the eigenvalues of the frozen-pattern field's Jacobian in z at θ, time s."""
    X, y = data.X.to(torch.float64), data.y.to(torch.float64)
    m, d = WIDTH, X.shape[1]
    th0 = torch.as_tensor(theta, dtype=torch.float64)
    pattern = ((X @ th0[: m * d].reshape(m, d).T) > 0).to(torch.float64)

    def field(z: torch.Tensor) -> torch.Tensor:  # exponential loss, log-time: dz/ds = e^s Σ_i e^{−q_i} y_i ∇q_i
        th = pot.inverse_mirror_map(z)
        W, a = th[: m * d].reshape(m, d), th[m * d :]
        H = pattern * (X @ W.T)
        c = torch.exp(s - y * (H @ a)) * y
        return torch.cat([(a[:, None] * ((pattern * c[:, None]).T @ X)).reshape(-1), (H * c[:, None]).sum(0)])

    J = torch.autograd.functional.jacobian(field, pot.mirror_map(th0)).numpy()
    return float(np.linalg.eigvals(J).real.min())


def explicit_steps(data, pot) -> tuple[float, float]:
    """Median accepted dopri5 step over s ∈ WINDOW and the rejected fraction there (explicit Filippov driver)."""
    acc, rej = [], []
    hooks = segment._SegmentField.callback_accept_step, segment._SegmentField.callback_reject_step

    def accept(self, t0, y0, dt):
        acc.append((float(t0), float(dt)))
        return hooks[0](self, t0, y0, dt)

    def reject(self, t0, y0, dt):
        rej.append(float(t0))
        return hooks[1](self, t0, y0, dt)

    segment._SegmentField.callback_accept_step, segment._SegmentField.callback_reject_step = accept, reject
    try:
        flowsim.simulate(
            TwoLayerReLU(5, WIDTH), data, pot, log_t_end=WINDOW[1] + 0.2, rtol=1e-6, atol=1e-9, n_save=3, threads=1,
            diagnostics=False,
        )  # fmt: skip
    finally:
        segment._SegmentField.callback_accept_step, segment._SegmentField.callback_reject_step = hooks
    steps = [dt for t0, dt in acc if WINDOW[0] <= t0 < WINDOW[1]]
    n_rej = sum(1 for t0 in rej if WINDOW[0] <= t0 < WINDOW[1])
    return float(np.median(steps)), n_rej / max(1, n_rej + len(steps))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ns", type=int, nargs="+", default=[30, 100, 300, 1000])
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{'pot':6} {'n':>5} | {'s':>5} {'λ_min':>10} {'3.3/|λ|':>9} | {'dopri5 step':>11} {'rejected':>8}")
    for name, make in POTENTIALS.items():
        lams = []
        for n in args.ns:
            data, pot = student_teacher_relu(n, d=5, seed=0), make()
            tr = flowsim.simulate(
                TwoLayerReLU(5, WIDTH), data, pot, log_t_end=LOG_T, method="radau", rtol=1e-6, atol=1e-9,
                n_save=3, threads=1, diagnostics=False,
            )  # fmt: skip
            s = math.log1p(math.exp(float(tr.log_t[-1])))
            lam = stiffness(data, pot, tr.theta[-1], s)
            lams.append(abs(lam))
            step, frac = explicit_steps(data, pot)
            limit = DOPRI5_INTERVAL / abs(lam)
            print(f"{name:6} {n:5d} | {s:5.2f} {lam:10.4g} {limit:9.3g} | {step:11.3g} {frac:8.2f}")
        slope = float(np.polyfit(np.log(args.ns), np.log(lams), 1)[0])
        print(f"{name}: |λ_min| grows like n^{slope:.2f}")


if __name__ == "__main__":
    main()
