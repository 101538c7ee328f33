"""Run-time guards of simulate: an explicit method's projected work to the horizon, and the step-underflow hint."""

import warnings

import numpy as np
import torch

import flowsim
from flowsim.guards import WARN_STEPS, ExplicitWorkMonitor
from flowsim.models import Linear
from flowsim.simulation import _underflow_hint


def test_explicit_run_warns_when_its_own_steps_project_hours_of_work():
    """20 gaussian points, a linear model: dopri5's log-time steps are Δs ≈ 0.027 (up-front bound: 3.3), so log t =
    5000 is ≈ 1.9e5 steps away; the up-front check counts 1,430 and stays silent, the run warns after 200 steps."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 5))
    y = np.sign(X @ rng.normal(size=5))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tr = flowsim.simulate(Linear(5), (X, y), log_t_end=5000.0, n_save=5, max_steps=1500, threads=1)
    assert tr.status.value == "max_steps"
    msgs = [str(w.message) for w in caught if "more steps" in str(w.message)]
    assert len(msgs) == 1 and "method='radau'" in msgs[0]
    steps = float(msgs[0].split("takes about ")[1].split(" more")[0])
    assert steps > WARN_STEPS


def test_work_monitor_projects_from_the_median_step_after_s_1():
    mon = ExplicitWorkMonitor("dopri5", s_end=1000.0)
    z = torch.zeros(1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for k in range(ExplicitWorkMonitor.WINDOW + 1):  # Δs = 0.5: 2,000 steps to go, under WARN_STEPS
            mon(1.0 + 0.5 * k, z)
        assert not caught and not mon.warned
        mon2 = ExplicitWorkMonitor("dopri5", s_end=1000.0)
        for k in range(ExplicitWorkMonitor.WINDOW + 1):  # Δs = 1e-3: ≈ 1e6 steps to go
            mon2(1.0 + 1e-3 * k, z)
        assert mon2.warned and len(caught) == 1


def test_step_underflow_hint_leaves_out_advice_the_run_follows():
    class _Field:
        def __init__(self, log_time, has_kinks):
            self.log_time = log_time
            self.model = type("M", (), {"has_kinks": has_kinks})()

    class _Driver:
        def __init__(self, kinks):
            self.kinks = kinks

    hint = _underflow_hint(_Driver("filippov"), _Field(True, True))
    assert "loosen rtol/atol" in hint.lower() and "log-time" not in hint and "filippov" not in hint
    hint = _underflow_hint(_Driver("naive"), _Field(False, True))
    assert "time='log'" in hint and "kinks='filippov'" in hint
    assert "filippov" not in _underflow_hint(_Driver("naive"), _Field(True, False))
