"""The explicit Filippov driver's per-segment shortcuts give what the long way gives.

* One RK solver per run, restarted at every segment start (``FilippovDriver._segment_solver``), is in the state a
  new torchdiffeq solver's ``_before_integrate`` puts it in: same state, field, time, first step and next save time.
* ``inverse_hessian_finite`` (the switching systems then skip the finiteness check of 1/φ″) is true only where
  1/φ″ is finite at every finite θ.
"""

from __future__ import annotations

import math

import pytest
import torch

from flowsim import simulate
from flowsim.data import student_teacher_relu
from flowsim.models import TwoLayerReLU
from flowsim.potentials import Euclidean, HyperbolicEntropy, PPower, PPowerPlusQuadratic, SmoothedHomogeneous
from flowsim.solvers._torchdiffeq import SOLVERS
from flowsim.solvers.filippov import FilippovDriver


def test_restarted_solver_is_a_new_solver(monkeypatch):
    """At every restart (a two-layer net with tens of segments) the restarted solver agrees with a solver built
    and started the old way at the same (τ, z): y, t bitwise, the first step bitwise, the field to rounding
    (a soft step's end comes from the segment field's cache), and the same next save time."""
    restarts = []
    original = FilippovDriver._segment_solver

    def checked(self, run):
        first = run.solver is None
        solver = original(self, run)
        if first:
            return solver
        new = SOLVERS[run.method](
            func=run.func, y0=run.z, rtol=run.rtol, atol=run.atol, first_step=run.first_step, **run.opts
        )
        new._before_integrate(torch.stack([run.tau, run.grid[-1]]))
        a, b = solver.rk_state, new.rk_state
        assert torch.equal(a.y1, b.y1) and torch.equal(a.t0, b.t0) and torch.equal(a.t1, b.t1)
        assert torch.equal(a.dt, b.dt)
        assert torch.allclose(a.f1, b.f1, rtol=1e-12, atol=1e-300)
        assert all(torch.equal(c, d) for c, d in zip(a.interp_coeff, b.interp_coeff, strict=True))
        assert len(new.step_t)
        assert torch.equal(solver.step_t[solver.next_step_index], new.step_t[new.next_step_index])
        restarts.append(float(run.tau))
        return solver

    monkeypatch.setattr(FilippovDriver, "_segment_solver", checked)
    ds = student_teacher_relu(n=30, d=3, seed=1)
    kw = dict(log_t_end=3.0, n_save=20, seed=0, init_scale=0.5, rtol=1e-6, atol=1e-9)
    tr = simulate(TwoLayerReLU(3, 4), ds, "euclidean", kinks="filippov", **kw)
    assert tr.status.value == "success", tr.message
    assert len(restarts) == tr.stats["n_segments"] - 1 >= 5


@pytest.mark.parametrize(
    "pot, finite",
    [
        (Euclidean(), True),
        (HyperbolicEntropy(0.05), True),
        (SmoothedHomogeneous(3.0, 0.01), True),
        (SmoothedHomogeneous(1.5, 0.1), True),
        (SmoothedHomogeneous(4.0, 1.0), True),
        (PPowerPlusQuadratic(1.5, 0.5), True),
        (PPowerPlusQuadratic(3.0, 0.5), True),
        (PPower(1.5), True),
        (PPower(2.0), True),
        (PPower(3.0), False),
    ],
)
def test_inverse_hessian_finite_flag(pot, finite):
    """The flag holds where 1/φ″ is finite at every finite θ (from the smallest subnormal to the largest float,
    0 and both signs), and p-power with p > 2 (1/φ″ = inf at 0) does not claim it."""
    e = torch.linspace(-320.0, 308.0, 20001, dtype=torch.float64)
    mags = torch.cat([10.0**e, torch.tensor([0.0, 5e-324, torch.finfo(torch.float64).max], dtype=torch.float64)])
    theta = torch.cat([mags, -mags])
    theta = theta[torch.isfinite(theta)]
    assert pot.inverse_hessian_finite is finite
    assert bool(torch.isfinite(pot.inverse_hessian_diag(theta)).all()) is finite
    if not finite:
        assert pot.inverse_hessian_diag(torch.zeros(1, dtype=torch.float64)).item() == math.inf
