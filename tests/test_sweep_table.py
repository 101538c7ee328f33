"""[sweep] over mirror-descent settings, the data set's name, size and seed, and init seeds (issue 21).

Each swept member is compared with a direct call of the entry point (flowsim.discrete.mirror_descent or
flowsim.simulate) with the same settings: a different code path that must give bitwise the same states."""

from __future__ import annotations

import numpy as np
import pytest

from flowsim import simulate
from flowsim.data import load_dataset
from flowsim.discrete import mirror_descent
from flowsim.errors import ConfigError
from flowsim.lab.config import sweep_groups, validate_config
from flowsim.lab.experiment import run_experiment
from flowsim.models import get_model


def _raw(**extra):
    raw = {
        "data": {"name": "gaussian", "n": 10, "d": 3, "seed": 0},
        "model": {"name": "two_layer_relu", "width": 3},
        "potentials": [{"name": "hyperbolic_entropy", "beta": 0.5}],
        "horizon": {"log_t_end": 2.0, "n_save": 6},
        "output": {"plots": False},
    }
    raw.update(extra)
    return raw


def test_md_settings_data_and_init_seeds_sweep_like_direct_calls():
    cfg = validate_config(
        _raw(
            solver={"method": "md"},  # step_size given by the sweep only
            sweep={"solver.step_size": [0.2, 0.05], "solver.schedule": ["constant", "loss_normalized"],
                   "data.seed": [0, 1], "init.seed": [0, 3]},
        )
    )  # fmt: skip
    result = run_experiment(cfg, None, workers=1, log=lambda *a: None)
    assert len(result.trajectories) == 16
    assert result.labels[5] == "step_size=0.2 schedule=loss_normalized data.seed=0 init.seed=3 " + (
        "hyperbolic_entropy(beta=0.5)"
    )
    for label, tr in zip(result.labels, result.trajectories, strict=True):
        v = dict(part.split("=") for part in label.split()[:4])
        data = load_dataset("gaussian", n=10, d=3, seed=int(v["data.seed"]))
        ref = mirror_descent(
            get_model("two_layer_relu", input_dim=3, width=3), data, {"name": "hyperbolic_entropy", "beta": 0.5},
            step_size=float(v["step_size"]), schedule=v["schedule"], log_t_end=2.0, n_save=6,
            seed=int(v["init.seed"]), max_steps=cfg["solver"]["max_steps"],
        )  # fmt: skip
        assert np.array_equal(tr.theta, ref.theta) and np.array_equal(tr.s, ref.s)
    assert not np.array_equal(result.trajectories[0].theta, result.trajectories[1].theta)  # init seeds differ


def test_data_name_and_size_sweep():
    cfg = validate_config(
        _raw(
            data={"name": "iris"},
            model={"name": "linear"},
            potentials=[{"name": "euclidean"}],
            solver={"rtol": 1e-10, "atol": 1e-12},
            sweep={"data.name": ["iris", "wine"], "init.scale": [0.5, 1.0]},
        )
    )
    groups = sweep_groups(cfg)
    assert [p for _, p in groups] == ["name=iris scale=0.5", "name=iris scale=1.0", "name=wine scale=0.5",
                                      "name=wine scale=1.0"]  # fmt: skip
    result = run_experiment(cfg, None, workers=1, log=lambda *a: None)
    for label, tr in zip(result.labels, result.trajectories, strict=True):
        name, scale = label.split()[0][5:], float(label.split()[1][6:])
        data = load_dataset(name)
        ref = simulate(get_model("linear", input_dim=data.d), data, "euclidean", log_t_end=2.0, n_save=6,
                       init_scale=scale, rtol=1e-10, atol=1e-12, max_steps=cfg["solver"]["max_steps"])  # fmt: skip
        np.testing.assert_allclose(tr.theta, ref.theta, rtol=1e-7, atol=1e-9)  # (batched ensemble vs simulate)
    assert result.trajectories[0].theta.shape[1] == 4 and result.trajectories[2].theta.shape[1] == 13  # iris, wine


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"sweep": {"solver.method": ["dopri5", "md"]}}, "solver.step_size"),
        ({"sweep": {"model.name": ["linear"]}}, "must name"),
        ({"sweep": {"init.seed": [0.5]}}, "integers"),
        ({"init": {"seed": [0, 1]}, "sweep": {"init.seed": [2]}}, "give one of them"),
        ({"solver": {"method": "md"}, "sweep": {"solver.step_size": [0.1, -1.0]}}, "positive number"),
        ({"solver": {"method": "md", "step_size": 0.1}, "sweep": {"solver.schedule": ["nope"]}}, "schedule"),
        ({"sweep": {"solver.step_size": [0.1]}}, 'method = "md"'),
    ],
)
def test_sweep_table_errors(extra, match):
    with pytest.raises(ConfigError, match=match):
        validate_config(_raw(**extra))
