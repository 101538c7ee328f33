"""Where the main job's exact-kink runs spend their work: torch operations per step, by phase, against naive stepping.

At the main job's size (360 points, width 16) almost every torch call costs its dispatch overhead (a few µs), not
its arithmetic, so the number of operations is the CPU cost, and unlike CPU time it does not depend on what else
the machine runs: it is exact and repeatable. Each of the main preset's three runs (``benchmarks/main_job_kinks.py``)
is run once with ``kinks="filippov"`` and once with ``kinks="naive"`` under a
:class:`torch.utils._python_dispatch.TorchDispatchMode` that counts every ATen operation and charges it to the
innermost phase on the Python stack:

* ``field``: evaluations of the vector field (the inverse mirror map and the switching system's ``velocity``, in
  the RK stages with the segment's sliding margins; or the naive field);
* ``rk``: the Runge–Kutta steps' own work (torchdiffeq's stages, error estimate, dense output fit);
* ``scan``: the event scan after each accepted step (surfaces at the dense output's samples);
* ``soft step``: a soft step's own bookkeeping (which crossings are kept, truncation, transversality);
* ``roots``: crossing and dip times located on the dense output;
* ``rates+correction``: the soft crossings' per-crossing rates and closed-form state correction;
* ``side checks``: the corrected end's sides and the cut where the corrected trajectory crosses another surface;
* ``coupling``: the coupling term of a soft step (without its field evaluations);
* ``balance``: every neuron's balance restored;
* ``exit search``: sliding α's leaving [0, 1] (without its field evaluations);
* ``event state``: the state inside a step at an event or truncation point (without its field evaluations);
* ``segment start``: classification, light start, band narrowing, projection of drifted sliding surfaces;
* ``other``: the rest (the driver loop, saves, bookkeeping).

Prints, per run and mode: steps (accepted + rejected), RHS evaluations, operations, operations per step and per
RHS, and the breakdown by phase (operations per step). Last line:

    main_job_ops_filippov_over_naive=<summed operations of the three Filippov runs ÷ those of the naive runs>

Usage:
    python benchmarks/kinks_op_counts.py [--runs gf he sm]
"""

from __future__ import annotations

import argparse
import collections
import sys

import torch
from main_job_kinks import _runs  # (benchmarks/ is the script's directory: on sys.path)
from torch.utils._python_dispatch import TorchDispatchMode

import flowsim

# function qualnames → phase (the innermost one on the stack wins: a field evaluation inside the coupling is "field")
PHASES = {
    "field": (
        "_TwoLayerSwitching.velocity",
        "_DeepSwitching.velocity",
        "MirrorFlowField.__call__",
        "_SegmentField.__call__",
    ),
    "rk": ("RKAdaptiveStepsizeODESolver._adaptive_step", "_runge_kutta_step"),
    "scan": ("_EventLocation._find_event", "_EventLocation._scan_candidates", "_EventLocation._confirmed_dips"),
    "soft step": ("_SoftCrossings._soft_step",),
    "roots": ("_SoftCrossings._sorted_crossings", "_EventLocation._earliest_crossing", "_EventLocation._roots"),
    "rates+correction": ("_CrossingCorrections.crossing_rates", "_CrossingCorrections.crossing_correction"),
    "side checks": ("_SoftCrossings._sides_at", "_SoftCrossings._side_cut"),
    "coupling": ("_SoftCrossings._switch_with_coupling", "_SoftCrossings._sliding_left"),
    "balance": ("_TwoLayerSwitching.restore_balance", "_TwoLayerSwitching.balance_ref"),
    "exit search": ("_EventLocation._find_exit",),
    "event state": ("_EventLocation._state_inside", "_SoftCrossings._truncated_state", "_EventLocation._event_state"),
    "segment start": ("FilippovDriver._start_segment",),
}
_PHASE_OF = {name: phase for phase, names in PHASES.items() for name in names}
_RUNS = {"gf": 0, "he": 1, "sm": 2}


class _OpCounter(TorchDispatchMode):
    """Counts ATen operations by the innermost phase on the Python stack (:data:`PHASES`)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        frame, phase = sys._getframe(1), "other"
        while frame is not None:
            hit = _PHASE_OF.get(frame.f_code.co_qualname)
            if hit is not None:
                phase = hit
                break
            frame = frame.f_back
        self.counts[phase] += 1
        return func(*args, **(kwargs or {}))


def _count(data, model, pot, common, tol, kw) -> tuple[flowsim.Trajectory, collections.Counter]:
    with _OpCounter() as counter:
        tr = flowsim.simulate(model, data, pot, **common, **tol, **kw)
    return tr, counter.counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", choices=sorted(_RUNS), default=["gf", "he", "sm"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    data, model, pots, solver, common = _runs()
    tol = dict(rtol=solver["rtol"], atol=solver["atol"])
    modes = {"filippov": dict(kinks="filippov", solver_options=solver.get("options")), "naive": dict(kinks="naive")}
    totals = {mode: 0 for mode in modes}
    for key in args.runs:
        label, pot = pots[_RUNS[key]]
        for mode, kw in modes.items():
            tr, counts = _count(data, model, pot, common, tol, kw)
            st = tr.stats
            steps = st["n_accepted"] + st["n_rejected"]
            ops = sum(counts.values())
            totals[mode] += ops
            print(
                f"{label:28} {mode:8} {tr.status.value}: steps {steps:,}  RHS {st['nfe']:,}  operations {ops:,}  "
                f"per step {ops / steps:,.0f}  per RHS {ops / st['nfe']:,.1f}"
            )
            parts = "  ".join(f"{phase} {n / steps:,.0f}" for phase, n in counts.most_common())
            print(f"    per step: {parts}", flush=True)
    print(f"main_job_ops_filippov_over_naive={totals['filippov'] / totals['naive']:.3f}")


if __name__ == "__main__":
    main()
