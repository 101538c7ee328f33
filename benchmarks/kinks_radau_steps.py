"""Where the implicit Filippov driver's steps go on the kinks-scaling n-series, and why they grow with n.

Student–teacher data ``student_teacher_relu(n, d=5, seed=0)``, ``TwoLayerReLU(5, 20)``, log t = 5, rtol 1e-6,
atol 1e-9, ``method="radau"``, one thread (the radau n-series of ``benchmarks/kinks_scaling.py``). For each n and
potential:

* the exact run: accepted Radau steps, RHS evaluations and RHS per step; the accepted step length thrown away at
  events (a soft step kept only up to its first hard crossing, an exact event inside a step), in steps; and which
  coordinates the step-size controller answers to: the share of the squared error estimate (Hairer & Wanner
  IV.8.19-20, RMS in units of the tolerance) that falls on the weights of neurons that slide during that step,
  median over the steps whose estimate is above 0.1, with the median number of sliding neurons;
* a control run with the activation pattern frozen at its start (no events: a smooth ODE with the same data,
  sizes, potential and tolerances, but another trajectory): accepted steps and RHS.

Then the fitted growth in n of the exact run's steps and RHS and of the control's steps. Issue 17 asks for RHS
growth no faster than n^0.5; when the exact run's *steps* alone grow that fast while the frozen control's do not,
and the error estimate sits on sliding neurons, the growth is the sliding dynamics the Filippov solution has to
resolve, not the overhead of the event handling.

``--transients S`` (one n, gradient flow, to log t = 2.5): what sets the steps after s = S. The exact run's
steps over [S, end] against the same run continued from its state at S with the activation pattern frozen (no
events, no sliding projection); the first tries after a switch that Radau rejects, each with its sequence of
(step, error norm) until accepted; and the share of all the run's steps spent from a rejected first try that cut
the step below half of its proposal until a step is back at half of it (the transient's decay).

Usage:
    python benchmarks/kinks_radau_steps.py [--ns 30 100 300 1000] [--potentials gf he0.1]
    python benchmarks/kinks_radau_steps.py --transients 2.0 --ns 1000      # about 1 minute

The script reaches into the driver (hooks on its step, event search and error estimate): it measures, it does
not change a run (the hooks return what they wrap).
"""

from __future__ import annotations

import argparse
import time
from contextlib import contextmanager

import numpy as np
import torch

import flowsim
from flowsim.data import student_teacher_relu
from flowsim.models import TwoLayerReLU
from flowsim.potentials import Euclidean, HyperbolicEntropy
from flowsim.solvers import radau_newton
from flowsim.solvers.filippov.implicit import ImplicitFilippovDriver

POTENTIALS = {"gf": Euclidean, "he0.1": lambda: HyperbolicEntropy(0.1)}
WIDTH, D, LOG_T = 20, 5, 5.0


@contextmanager
def _patched(owner, name: str, make):
    """Replace ``owner.name`` by ``make(original)`` for the block."""
    original = getattr(owner, name)
    setattr(owner, name, make(original))
    try:
        yield
    finally:
        setattr(owner, name, original)


def _simulate(n: int, pot: str):
    return flowsim.simulate(
        TwoLayerReLU(D, WIDTH), student_teacher_relu(n, d=D, seed=0), POTENTIALS[pot](), log_t_end=LOG_T,
        rtol=1e-6, atol=1e-9, kinks="filippov", method="radau", n_save=11, threads=1, diagnostics=False,
    )  # fmt: skip


def exact_run(n: int, pot: str) -> dict:
    """The exact run with its steps' fate and error attribution recorded (see the module docstring)."""
    drivers, lost, shares = [], [0.0], []

    def integrate(orig):
        def wrapped(self, *args, **kwargs):
            drivers.append(self)
            return orig(self, *args, **kwargs)

        return wrapped

    def find_event(orig):
        def wrapped(self, new, prev, *args, **kwargs):
            ev = orig(self, new, prev, *args, **kwargs)
            if ev is not None:  # the part of the accepted step after the event is thrown away
                t0, t1 = float(prev.t1), float(new.t1)
                kept = (float(ev.tau) - t0) / (t1 - t0) if t1 > t0 else 1.0
                lost[0] += 1.0 - min(max(kept, 0.0), 1.0)
            return ev

        return wrapped

    def error_norm(orig):
        def wrapped(self, t, y, y_new, f, Z, h, LU_real, cut):
            norm = orig(self, t, y, y_new, f, Z, h, LU_real, cut)
            sw = drivers[-1].sw if drivers else None
            sliding = getattr(sw, "sliding", None)
            if norm > 0.1 and sliding is not None and sliding.dim() == 2:
                # the first estimate (IV.8.19-20) per coordinate, as the controller reads it
                error = self.solve_lu(LU_real, f + Z.T.dot(radau_newton._sp.E) / h)
                scale = self.atol + np.maximum(np.abs(y), np.abs(y_new)) * self.rtol
                e2 = np.square(error / scale)
                neurons = sliding.any(0).cpu().numpy()
                on = e2[: WIDTH * D].reshape(WIDTH, D)[neurons].sum()
                shares.append((float(on / e2.sum()) if e2.sum() > 0 else 0.0, int(neurons.sum())))
            return norm

        return wrapped

    cpu0 = time.process_time()
    with (
        _patched(ImplicitFilippovDriver, "integrate", integrate),
        _patched(ImplicitFilippovDriver, "_find_event", find_event),
        _patched(radau_newton.NewtonRadau, "_error_norm", error_norm),
    ):
        tr = _simulate(n, pot)
    st = tr.stats
    sh = np.array(shares) if shares else np.zeros((1, 2))
    return {
        "status": tr.status.value,
        "steps": st["n_accepted"],
        "nfe": st["nfe"],
        "soft": st.get("n_soft_steps", 0),
        "lost": lost[0],
        "share": float(np.median(sh[:, 0])),
        "sliding": float(np.median(sh[:, 1])),
        "cpu": time.process_time() - cpu0,
    }


def frozen_run(n: int, pot: str) -> dict:
    """The control: the same driver with no event ever found (the start's activation pattern throughout)."""
    with _patched(ImplicitFilippovDriver, "_find_event", lambda orig: lambda self, *a, **k: None):
        tr = _simulate(n, pot)
    return {"steps": tr.stats["n_accepted"], "nfe": tr.stats["nfe"]}


def _recorded_run(n: int, s_freeze: float, freeze: bool):
    """The gradient-flow run with every accepted Radau step recorded as (s₀, step, proposal, [(h, error norm) of its
    tries]); with ``freeze``, no event and no sliding drift is acted on after s = ``s_freeze`` (the pattern stays)."""
    steps, tries = [], []

    def step_impl(orig):
        def wrapped(self):
            t0, proposal, start = self.t, self.h_abs, len(tries)
            out = orig(self)
            steps.append((t0, self.t - t0, proposal, tries[start:]))
            return out

        return wrapped

    def error_norm(orig):
        def wrapped(self, t, y, y_new, f, Z, h, LU_real, cut):
            norm = orig(self, t, y, y_new, f, Z, h, LU_real, cut)
            tries.append((h, norm))
            return norm

        return wrapped

    def frozen(orig):
        event = orig.__name__ == "_find_event"  # (else _track_sliding(t0, t1, z))

        def wrapped(self, *args, **kwargs):
            t_end = float(args[0].t1) if event else float(args[1])
            if freeze and t_end > s_freeze:
                return None if event else 0.0
            return orig(self, *args, **kwargs)

        return wrapped

    with (
        _patched(radau_newton.NewtonRadau, "_step_impl", step_impl),
        _patched(radau_newton.NewtonRadau, "_error_norm", error_norm),
        _patched(ImplicitFilippovDriver, "_find_event", frozen),
        _patched(ImplicitFilippovDriver, "_track_sliding", frozen),
    ):
        tr = _simulate(n, "gf")
    return tr, steps


def _recovery_steps(steps) -> int:
    """Steps from a rejected first try that cut the step below half its proposal until a step is back at half."""
    window, k = 0, 0
    while k < len(steps):
        _, taken, proposal, seq = steps[k]
        k += 1
        if len(seq) > 1 and taken < 0.5 * proposal:
            window += 1
            while k < len(steps) and steps[k][1] < 0.5 * proposal:
                window, k = window + 1, k + 1
    return window


def transients(n: int, s_freeze: float) -> None:
    """Print the ``--transients`` report (module docstring) for data size ``n``, to log t = 2.5."""
    global LOG_T
    LOG_T, saved = 2.5, LOG_T
    try:
        for freeze in (False, True):
            tr, steps = _recorded_run(n, s_freeze, freeze)
            after = [st for st in steps if st[0] >= s_freeze]
            label = f"frozen pattern from s = {s_freeze:g}" if freeze else "exact"
            print(
                f"n = {n}, {label}: {tr.status.value}, {len(after)} steps over s in [{s_freeze}, end] "
                f"(median {np.median([st[1] for st in after]):.4g}), {len(steps)} in all, RHS {tr.stats['nfe']}"
            )
            if freeze:
                continue
            for t0, _, _, seq in after:
                if len(seq) > 1:
                    print(f"  rejected first try at s = {t0:.4f}: (h, error norm) " + ", ".join(
                        f"({h:.3g}, {e:.3g})" for h, e in seq))  # fmt: skip
            print(
                f"  steps from a cut first try until back at half its proposal: {_recovery_steps(steps)} "
                f"of {len(steps)}"
            )
    finally:
        LOG_T = saved


def _slope(ns, values) -> float:
    return float(np.polyfit(np.log(ns), np.log(values), 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ns", type=int, nargs="+", default=[30, 100, 300, 1000])
    parser.add_argument("--potentials", nargs="+", default=["gf"], choices=sorted(POTENTIALS))
    parser.add_argument("--transients", type=float, default=None, metavar="S", help="what sets the steps after s = S")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.transients is not None:
        for n in args.ns:
            transients(n, args.transients)
        return
    print(
        f"{'pot':6} {'n':>5} | {'status':8} {'steps':>6} {'RHS':>7} {'RHS/step':>8} {'soft':>5} {'lost':>6} "
        f"{'err on sliding':>14} {'sliding':>7} {'CPU s':>6} | {'frozen steps':>12} {'RHS':>6}"
    )
    for pot in args.potentials:
        rows = []
        for n in args.ns:
            ex, fr = exact_run(n, pot), frozen_run(n, pot)
            rows.append((ex, fr))
            print(
                f"{pot:6} {n:5d} | {ex['status']:8} {ex['steps']:6d} {ex['nfe']:7d} {ex['nfe'] / ex['steps']:8.1f} "
                f"{ex['soft']:5d} {ex['lost']:6.0f} {ex['share']:14.2f} {ex['sliding']:7.0f} {ex['cpu']:6.1f} | "
                f"{fr['steps']:12d} {fr['nfe']:6d}",
                flush=True,
            )
        print(
            f"{pot}: exact steps n^{_slope(args.ns, [r[0]['steps'] for r in rows]):.2f}, "
            f"RHS n^{_slope(args.ns, [r[0]['nfe'] for r in rows]):.2f}; "
            f"frozen-pattern steps n^{_slope(args.ns, [r[1]['steps'] for r in rows]):.2f}"
        )


if __name__ == "__main__":
    main()
