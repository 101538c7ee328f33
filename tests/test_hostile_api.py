"""Hostile inputs through the Python API and TOML configs (issue 19, items 1, 3, 5, 7).

Each case asserts a :class:`~flowsim.errors.FlowSimError` subclass whose message names the problem and the fix, or
the correct status with the partial trajectory kept. Facts the refusals rest on are checked independently: XOR
and ±x are not separable (Σ_i z_i = 0, so no w has every ⟨z_i, w⟩ > 0), the explicit step bound is a lower bound
of a real run's steps, and wall-time checkpoints leave the numerics bit for bit unchanged.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from flowsim import resume, simulate
from flowsim.data import Dataset, is_linearly_separable, load_csv, load_dataset, make_dataset
from flowsim.discrete import mirror_descent
from flowsim.ensemble import simulate_ensemble
from flowsim.errors import ConfigError, FlowSimError, HorizonError, InvalidDataError, InvalidParameterError
from flowsim.guards import STABILITY_STEP, WARN_STEPS, check_explicit_work, explicit_steps_lower_bound
from flowsim.lab.config import load_config
from flowsim.lab.experiment import run_experiment
from flowsim.models import DeepLinear, DiagonalLinear, Linear, TwoLayerReLU
from flowsim.results import Status, Trajectory
from flowsim.timegrid import s_from_log_t

XOR = make_dataset([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]], [1, 1, -1, -1], name="xor")
PM_ONE_CLASS = make_dataset([[1.0, 0.5], [-1.0, -0.5]], [1, 1], name="pm_x")
RAY = make_dataset([[1.0, 0.5], [2.0, 1.0]], [1, -1], name="same_ray")  # x and 2x with opposite labels
ONE = make_dataset([[1.0, 0.5]], [1], name="one_point")
FAST = {"n_save": 20, "rtol": 1e-6, "atol": 1e-9}


def _message(err: pytest.ExceptionInfo) -> str:
    assert isinstance(err.value, FlowSimError)
    return str(err.value)


# ---------------------------------------------------------------- item 1: non-separable data
def test_xor_and_pm_x_are_not_separable_by_an_independent_argument():
    for ds in (XOR, PM_ONE_CLASS):
        Z = ds.Z.numpy()
        assert np.allclose(Z.sum(axis=0), 0.0)  # Σ⟨z_i, w⟩ = 0 for every w: not all > 0
        assert not is_linearly_separable(ds)


@pytest.mark.parametrize(
    "model, data",
    [
        (Linear(2), XOR),
        (Linear(2), PM_ONE_CLASS),
        (DiagonalLinear(2), XOR),
        (DeepLinear(2, [3]), PM_ONE_CLASS),
        (Linear(2), (XOR.X.numpy(), XOR.y.numpy())),
    ],
    ids=["xor-linear", "pm_x-linear", "xor-diagonal", "pm_x-deep-linear", "xor-tuple"],
)
def test_linear_model_refuses_nonseparable_data(model, data):
    with pytest.raises(InvalidDataError) as err:
        simulate(model, data, log_t_end=2.0, **FAST)
    msg = _message(err)
    assert "not linearly separable" in msg and "allow_nonseparable=True" in msg


def test_allow_nonseparable_runs_xor_to_the_unique_minimizer():
    """XOR: L(w) = 2cosh(w1 + w2) + 2cosh(w1 − w2) has its unique minimum at w = 0, reached like e^{−4t}."""
    tr = simulate(Linear(2), XOR, log_t_end=3.0, allow_nonseparable=True, **FAST)
    assert tr.status == Status.SUCCESS
    assert np.linalg.norm(tr.theta[-1]) < 1e-6
    assert tr.diagnostics["q_min"][-1] <= 0


@pytest.mark.parametrize(
    "build",
    [
        lambda: make_dataset([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], [1, 1, -1]),
        lambda: Dataset(
            torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], dtype=torch.float64),
            torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64),
        ),
        lambda: simulate(TwoLayerReLU(2, 3), ([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], [1, 1, -1]), log_t_end=1.0),
        lambda: make_dataset([[0.0, 2.0], [-0.0, 2.0]], ["a", "b"]),  # −0.0 and 0.0 are the same point
    ],
    ids=["make_dataset", "Dataset", "simulate-tuple", "signed-zero"],
)
def test_conflicting_duplicates_are_rejected_at_construction(build):
    with pytest.raises(InvalidDataError) as err:
        build()
    msg = _message(err)
    assert "same x" in msg and "Remove the conflicting duplicates" in msg


def test_duplicates_with_one_label_are_fine():
    ds = make_dataset([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], [1, 1, -1])
    assert ds.n == 3 and is_linearly_separable(ds)


def test_conflicting_duplicates_in_a_csv_file(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("a,b,label\n1,0,1\n0,1,1\n1,0,0\n")
    with pytest.raises(InvalidDataError, match="rows 0 and 2"):
        load_csv(path)


def test_conflicting_duplicates_in_a_large_array_match_numpy_unique():
    """20000 × 64 (a conflicting copy, a same-label copy, −0.0 vs 0.0, a near-copy one ulp away): the rows reported
    are those numpy.unique(axis=0) finds (first occurrence of each x, labels compared), in the same words."""
    rng = np.random.default_rng(7)
    X = rng.standard_normal((20_000, 64))
    y = np.where(rng.random(20_000) < 0.5, -1.0, 1.0)
    X[[100, 200]] = 0.0
    X[200, 5] = -0.0  # the same point as row 100
    y[200] = -y[100]
    X[15_000], y[15_000] = X[123], -y[123]  # a conflicting copy
    X[16_000], y[16_000] = X[321], y[321]  # a copy with the same label: fine
    X[17_000], y[17_000] = X[456], -y[456]
    X[17_000, 3] = np.nextafter(X[456, 3], np.inf)  # one ulp away: a different point
    _, first, inverse = np.unique(X + 0.0, axis=0, return_index=True, return_inverse=True)
    heads = first[inverse.reshape(-1)]
    expected = np.flatnonzero(y[heads] != y)
    assert expected.tolist() == [200, 15_000]
    start = time.perf_counter()
    with pytest.raises(InvalidDataError) as err:
        make_dataset(X, y)
    elapsed = time.perf_counter() - start
    msg = _message(err)
    assert "has 2 row(s)" in msg and "rows 100 and 200 have the same x" in msg, msg
    clean = np.delete(np.arange(20_000), expected)
    start = time.perf_counter()
    assert make_dataset(X[clean], y[clean]).n == 20_000 - 2  # the one-ulp-apart pair and the same-label copy pass
    print(f"20000x64 duplicate check: refused in {elapsed:.3f} s, accepted in {time.perf_counter() - start:.3f} s")


def _not_separable_checks(tr: Trajectory, horizon: float) -> None:
    assert tr.status == Status.NOT_SEPARABLE
    assert "separation_log_t" in tr.message and "allow_nonseparable" in tr.message
    assert len(tr) >= 2 and tr.log_t[-1] >= horizon - 0.2  # the partial trajectory is kept
    # an independent check of the claim: the kept state does not separate x and 2x (f(2x) = 2 f(x))
    q = tr.diagnostics["q_min"]
    assert q[-1] <= 0 and np.all(np.isfinite(tr.theta))


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"kinks": "naive", "n_save": 4},
        {"method": "radau", "n_save": 4},
        {"n_save": 4},
        {"method": "radau", "kinks": "filippov", "n_save": 4},
    ],
    ids=["filippov", "naive-per-step", "radau-per-step", "filippov-per-step", "radau-filippov-per-step"],
)
def test_relu_on_same_ray_points_ends_not_separable_quickly(kw):
    start = time.perf_counter()
    tr = simulate(TwoLayerReLU(2, 4), RAY, log_t_end=40.0, separation_log_t=3.0, **{**FAST, **kw})
    _not_separable_checks(tr, 3.0)
    assert time.perf_counter() - start < 20.0  # (issue: ran past 120 s)


def test_batched_ensemble_members_stop_not_separable():
    """The batched path (kinks="naive": one vectorised dopri5 for all members) applies the same rule per member:
    on x / 2x with opposite labels each member stops past separation_log_t with its partial trajectory; with
    allow_nonseparable they run on to the end."""
    from flowsim.ensemble import Member, simulate_ensemble

    members = [Member("euclidean", seed=0), Member({"name": "hyperbolic_entropy", "beta": 0.5}, seed=1)]
    common = dict(log_t_end=40.0, n_save=6, kinks="naive", rtol=1e-6, atol=1e-9)
    start = time.perf_counter()
    trs = simulate_ensemble(TwoLayerReLU(2, 4), RAY, members, separation_log_t=3.0, **common)
    assert time.perf_counter() - start < 20.0
    for tr in trs:
        assert tr.stats["ensemble_path"] == "batched"
        _not_separable_checks(tr, 3.0)
    on = simulate_ensemble(
        TwoLayerReLU(2, 4), RAY, members, separation_log_t=1.0, allow_nonseparable=True, **{**common, "log_t_end": 2.5}
    )
    assert [tr.status for tr in on] == [Status.SUCCESS, Status.SUCCESS]


def test_not_separable_run_is_saved_with_its_status(tmp_path):
    tr = simulate(TwoLayerReLU(2, 4), RAY, log_t_end=40.0, separation_log_t=2.0, out=tmp_path / "run", **FAST)
    _not_separable_checks(tr, 2.0)
    meta = json.loads((tmp_path / "run" / "trajectory.json").read_text())
    assert meta["status"] == "not_separable" and meta["n_saved"] == len(tr)
    assert np.array_equal(Trajectory.load(tmp_path / "run").theta, tr.theta)


def test_relu_allow_nonseparable_runs_on():
    tr = simulate(TwoLayerReLU(2, 4), RAY, log_t_end=2.5, separation_log_t=1.0, allow_nonseparable=True, **FAST)
    assert tr.status == Status.SUCCESS and tr.log_t[-1] == pytest.approx(2.5)


def test_separated_network_run_is_not_stopped():
    """soudry_2d is separable: the run passes its separation horizon (L < ℓ(0) there) and reaches log t 5."""
    tr = simulate(TwoLayerReLU(2, 4), load_dataset("soudry_2d"), log_t_end=5.0, separation_log_t=3.0, **FAST)
    assert tr.status == Status.SUCCESS
    k = np.searchsorted(tr.log_t, 3.0)
    assert np.all(tr.diagnostics["q_min"][k:] > 0) and np.all(tr.diagnostics["loss"][k:] < 1.0)


@pytest.mark.parametrize("bad", [float("nan"), "8", True])
def test_bad_separation_horizon(bad):
    with pytest.raises(InvalidParameterError, match="separation_log_t"):
        simulate(TwoLayerReLU(2, 4), RAY, log_t_end=1.0, separation_log_t=bad, **FAST)


# ---------------------------------------------------------------- item 3: astronomical horizons
@pytest.mark.parametrize("method", sorted(STABILITY_STEP))
def test_astronomical_horizon_refused_for_explicit_methods(method):
    with pytest.raises(HorizonError) as err:
        simulate(Linear(2), ONE, log_t_end=1e300, method=method)
    msg = _message(err)
    assert "method='radau'" in msg and "max_steps" in msg and "1e+300" in msg


def test_astronomical_horizon_refused_with_filippov_and_explicit_save_grid():
    with pytest.raises(HorizonError, match="radau"):
        simulate(TwoLayerReLU(2, 4), RAY, log_t_end=1e300)  # kinks="auto": Filippov
    with pytest.raises(HorizonError, match="radau"):
        simulate(Linear(2), ONE, save_log_t=[0.0, 1.0, 1e300])


def test_horizon_beyond_the_step_budget_is_refused_and_radau_reaches_it():
    with pytest.raises(HorizonError, match=r"log_t_end ≤ 36"):
        simulate(Linear(2), ONE, log_t_end=1e3, max_steps=10)
    tr = simulate(Linear(2), ONE, log_t_end=1e8, method="radau", n_save=4)  # implicit: not refused
    assert tr.status == Status.SUCCESS and tr.stats["n_accepted"] < 1000


def test_explicit_step_bound_is_a_lower_bound_of_a_real_run():
    log_t_end = 300.0
    tr = simulate(Linear(2), load_dataset("soudry_2d"), log_t_end=log_t_end, n_save=3, diagnostics=False)
    bound = explicit_steps_lower_bound("dopri5", 0.0, float(s_from_log_t(np.float64(log_t_end))))
    assert bound > 50 and tr.stats["n_accepted"] >= bound


def test_long_explicit_horizon_warns():
    s_grid = np.array([0.0, float(s_from_log_t(np.float64(STABILITY_STEP["dopri5"] * 2 * WARN_STEPS)))])
    with pytest.warns(RuntimeWarning, match="method='radau'"):
        check_explicit_work("dopri5", "log", s_grid, 5_000_000)


def _toml(tmp_path, body: str):
    path = tmp_path / "exp.toml"
    path.write_text(body)
    return load_config(path)


_TOML_HEAD = '[data]\nname = "soudry_2d"\n[model]\nname = "linear"\n[[potentials]]\nname = "euclidean"\n'


def test_toml_astronomical_horizon(tmp_path):
    cfg = _toml(tmp_path, _TOML_HEAD + "[horizon]\nlog_t_end = 1e300\n[output]\nplots = false\n")
    with pytest.raises(HorizonError, match="radau"):
        run_experiment(cfg, None, log=lambda *a: None, workers=1)


def test_toml_nonseparable_csv_on_a_linear_model(tmp_path):
    (tmp_path / "xor.csv").write_text("a,b,label\n1,1,1\n-1,-1,1\n1,-1,0\n-1,1,0\n")
    body = f'[data]\nname = "csv"\npath = "{tmp_path / "xor.csv"}"\n' + _TOML_HEAD.split("\n", 2)[2]
    cfg = _toml(tmp_path, body + "[horizon]\nlog_t_end = 2.0\nn_save = 5\n[output]\nplots = false\n")
    with pytest.raises(InvalidDataError, match="not linearly separable"):
        run_experiment(cfg, None, log=lambda *a: None, workers=1)


def _csv_head(tmp_path, rows: str, model: str) -> str:
    (tmp_path / "d.csv").write_text("a,b,label\n" + rows)
    data = f'[data]\nname = "csv"\npath = "{tmp_path / "d.csv"}"\n'
    return data + f'[model]\n{model}\n[[potentials]]\nname = "euclidean"\n'


_XOR_ROWS = "1,1,1\n-1,-1,1\n1,-1,0\n-1,1,0\n"


def test_toml_run_options_reach_simulate(tmp_path):
    """[flow] allow_nonseparable, [output] checkpoint_seconds: XOR on a linear model runs, and run.json records
    the options the run was given."""
    head = _csv_head(tmp_path, _XOR_ROWS, 'name = "linear"')
    body = "[flow]\nallow_nonseparable = true\n[horizon]\nlog_t_end = 1.0\nn_save = 5\n"
    cfg = _toml(tmp_path, head + body + "[output]\nplots = false\ncheckpoint_seconds = 0.5\n")
    res = run_experiment(cfg, tmp_path / "e", log=lambda *a: None, workers=1)
    assert res.trajectories[0].status == Status.SUCCESS
    kwargs = json.loads((tmp_path / "e" / "euclidean" / "run.json").read_text())["kwargs"]
    assert kwargs["allow_nonseparable"] is True and kwargs["checkpoint_seconds"] == 0.5
    assert kwargs["separation_log_t"] == 8.0  # not given: simulate's default
    sweep = _toml(tmp_path, head + body.replace("[horizon]", "[init]\nseed = [0, 1]\n[horizon]"))
    trs = run_experiment(sweep, None, log=lambda *a: None, workers=1).trajectories  # a batched ensemble
    assert [tr.status for tr in trs] == [Status.SUCCESS, Status.SUCCESS]


def test_toml_run_options_reach_planned_sweeps(tmp_path):
    from flowsim.lab.sweep import plan

    body = "[flow]\nallow_nonseparable = true\n[horizon]\nseparation_log_t = 5.0\n[output]\ncheckpoint_seconds = 60\n"
    specs = plan(_toml(tmp_path, _TOML_HEAD + "[init]\nseed = [0, 1]\n" + body))
    assert len(specs) == 2
    for spec in specs:
        assert {k: spec.simulate[k] for k in ("allow_nonseparable", "separation_log_t", "checkpoint_seconds")} == {
            "allow_nonseparable": True,
            "separation_log_t": 5.0,
            "checkpoint_seconds": 60,
        }


def test_toml_separation_log_t_stops_a_network(tmp_path):
    head = _csv_head(tmp_path, "1,0.5,1\n2,1,0\n", 'name = "two_layer_relu"\nwidth = 4')  # x and 2x
    body = "[horizon]\nlog_t_end = 40.0\nn_save = 20\nseparation_log_t = 2.0\n[output]\nplots = false\n"
    tr = run_experiment(_toml(tmp_path, head + body), None, log=lambda *a: None, workers=1).trajectories[0]
    _not_separable_checks(tr, 2.0)
    assert "separation_log_t = 2" in tr.message


@pytest.mark.parametrize(
    "table, line, match",
    [
        ("flow", 'allow_nonseparable = "yes"', r"\[flow\] allow_nonseparable must be true or false"),
        ("flow", "allow_nonseparable = 1", r"\[flow\] allow_nonseparable must be true or false"),
        ("horizon", 'separation_log_t = "8"', r"\[horizon\] separation_log_t must be a finite number"),
        ("horizon", "separation_log_t = inf", r"\[horizon\] separation_log_t must be a finite number"),
        ("horizon", "separation_log_t = nan", r"\[horizon\] separation_log_t must be a finite number"),
        ("horizon", "separation_log_t = true", r"\[horizon\] separation_log_t must be a finite number"),
        ("output", "checkpoint_seconds = -1", r"\[output\] checkpoint_seconds must be a number of seconds ≥ 0"),
        ("output", 'checkpoint_seconds = "300"', r"\[output\] checkpoint_seconds must be a number of seconds"),
        ("output", "checkpoint_seconds = nan", r"\[output\] checkpoint_seconds must be a number of seconds"),
        ("flow", "allow_nonseperable = true", r"unknown key.*allow_nonseparable"),
        ("horizon", "separation_logt = 3.0", r"unknown key.*separation_log_t"),
        # refused when the file is read (before an experiment folder is written), not at the first run
        ("solver", "rtol = -1", r"\[solver\] rtol must be a positive finite number \(e\.g\. 1e-6\), got -1"),
        ("solver", "atol = 0.0", r"\[solver\] atol must be a positive finite number"),
        ("solver", "rtol = nan", r"\[solver\] rtol must be a positive finite number"),
        ("solver", "max_steps = 0", r"\[solver\] max_steps must be an integer ≥ 1"),
        ("horizon", "n_save = 1", r"\[horizon\] n_save must be an integer ≥ 2"),
    ],
)
def test_toml_bad_run_options(tmp_path, table, line, match):
    with pytest.raises(ConfigError, match=match):
        _toml(tmp_path, _TOML_HEAD + f"[{table}]\n{line}\n")


def test_potential_dict_without_name_is_refused():
    data = load_dataset("soudry_2d")
    with pytest.raises(InvalidParameterError, match=r"needs its 'name', got keys \['beta', 'nme'\]"):
        simulate(Linear(2), data, {"nme": "hyperbolic_entropy", "beta": 0.1}, log_t_end=1.0, **FAST)
    with pytest.raises(InvalidParameterError, match="needs its 'name'"):
        mirror_descent(Linear(2), data, {"beta": 0.1}, step_size=0.1, n_steps=10)


def test_toml_run_options_with_mirror_descent_are_refused(tmp_path):
    cfg = _toml(tmp_path, _TOML_HEAD + '[flow]\nallow_nonseparable = true\n[solver]\nmethod = "md"\nstep_size = 0.1\n')
    with pytest.raises(ConfigError, match='allow_nonseparable: options of mirror-flow runs.*method = "md"'):
        run_experiment(cfg, None, log=lambda *a: None, workers=1)


def test_wall_time_checkpoints_keep_numerics_and_allow_resume(tmp_path):
    kw = {"log_t_end": 3.0, "n_save": 16, "rtol": 1e-8, "atol": 1e-10}
    data = load_dataset("soudry_2d")
    plain = simulate(Linear(2), data, out=tmp_path / "plain", checkpoint_seconds=None, **kw)
    walled = simulate(Linear(2), data, out=tmp_path / "walled", checkpoint_seconds=1e-9, **kw)
    assert np.array_equal(plain.theta, walled.theta)  # no restart: bit-identical
    assert (
        not (tmp_path / "plain" / "checkpoint.npz").exists()
        or int(np.load(tmp_path / "plain" / "checkpoint.npz")["k"]) == len(plain) - 1
    )

    stopped = []

    def stop_at(log_t: float, count: int) -> None:  # Ctrl-C once, past log t = 1
        if log_t > 1.0 and not stopped:
            stopped.append(log_t)
            raise KeyboardInterrupt

    cut = simulate(Linear(2), data, out=tmp_path / "cut", checkpoint_seconds=1e-9, progress=stop_at, **kw)
    assert cut.status == Status.INTERRUPTED
    k = int(np.load(tmp_path / "cut" / "checkpoint.npz")["k"])
    assert 1 <= k < 15  # a checkpoint long before checkpoint_every = 50 save points
    done = resume(tmp_path / "cut")
    assert done.status == Status.SUCCESS and len(done) == len(plain)
    np.testing.assert_allclose(done.theta, plain.theta, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("bad", [-1.0, "60", True])
def test_bad_checkpoint_seconds(tmp_path, bad):
    with pytest.raises(InvalidParameterError, match="checkpoint_seconds"):
        simulate(Linear(2), ONE, log_t_end=1.0, out=tmp_path / "r", checkpoint_seconds=bad, **FAST)


# ---------------------------------------------------------------- item 5: NaN / inf inputs
@pytest.mark.parametrize(
    "model, theta0, kw",
    [
        (Linear(2), [np.nan, 0.0], {}),
        (Linear(2), [np.inf, 0.0], {"method": "radau"}),
        (Linear(2), [0.0, -np.inf], {"method": "bdf"}),
        (TwoLayerReLU(2, 2), [0.1, -np.inf, 0.2, 0.3, 0.1, 0.2], {"kinks": "filippov"}),
    ],
    ids=["nan-dopri5", "inf-radau", "-inf-bdf", "-inf-filippov"],
)
def test_nonfinite_theta0_rejected_up_front(model, theta0, kw):
    with pytest.raises(InvalidParameterError) as err:
        simulate(model, load_dataset("soudry_2d"), theta0=theta0, log_t_end=1.0, **kw)
    msg = _message(err)
    assert "theta0" in msg and "non-finite" in msg and "entry" in msg


def test_nonfinite_theta0_rejected_by_mirror_descent():
    with pytest.raises(InvalidParameterError, match="theta0 has 1 non-finite"):
        mirror_descent(Linear(2), ONE, theta0=[np.nan, 1.0], step_size=0.1, n_steps=3)


def test_dual_start_overflow_rejected():
    """p-power with p = 3: ∇Φ(θ) = sign(θ)|θ|², so θ₀ = 1e200 gives z₀ = inf in float64."""
    with pytest.raises(InvalidParameterError) as err:
        simulate(Linear(2), ONE, {"name": "p_power", "p": 3.0}, theta0=[1e200, 0.0], log_t_end=1.0)
    assert "dual start" in _message(err) and "scale θ₀ down" in str(err.value)


@pytest.mark.parametrize("kw", [{"init_scale": 1e300}, {"theta0": [1e200, 1e200, 1e200, 1e200, 1e200, 1e200]}])
def test_overflowing_outputs_at_the_start_rejected(kw):
    """A two-layer ReLU net of scale 1e300 outputs ~1e600: inf in float64 (the run would end 'nonfinite')."""
    with pytest.raises(InvalidParameterError) as err:
        simulate(TwoLayerReLU(2, 2), load_dataset("soudry_2d"), log_t_end=1.0, **kw)
    assert "overflow float64" in _message(err) and "init_scale" in str(err.value)


@pytest.mark.parametrize(
    "build",
    [
        lambda: Dataset(torch.tensor([[1.0, np.inf]], dtype=torch.float64), torch.ones(1, dtype=torch.float64)),
        lambda: Dataset(torch.tensor([[np.nan, 1.0]], dtype=torch.float64), torch.ones(1, dtype=torch.float64)),
        lambda: make_dataset([[1.0, 2.0], [-np.inf, 1.0]], [1, -1]),
        lambda: simulate(Linear(2), ([[1.0, 2.0], [np.inf, 1.0]], [1, -1]), log_t_end=1.0),
    ],
    ids=["Dataset-inf", "Dataset-nan", "make_dataset-inf", "simulate-tuple-inf"],
)
def test_nonfinite_features_rejected(build):
    with pytest.raises(InvalidDataError) as err:
        build()
    msg = _message(err)
    assert "non-finite" in msg and "row" in msg and "np.isfinite" in msg


def test_toml_csv_with_inf(tmp_path):
    (tmp_path / "d.csv").write_text("a,b,label\n1,inf,1\n0,1,-1\n")
    body = f'[data]\nname = "csv"\npath = "{tmp_path / "d.csv"}"\n' + _TOML_HEAD.split("\n", 2)[2]
    cfg = _toml(tmp_path, body + "[output]\nplots = false\n")
    with pytest.raises(InvalidDataError, match="non-finite"):
        run_experiment(cfg, None, log=lambda *a: None, workers=1)


# ---------------------------------------------------------------- item 7: solver options, max_steps
@pytest.mark.parametrize(
    "model, kw, match",
    [
        (Linear(2), {"solver_options": {"fist_step": 1e-3}}, "fist_step"),
        (Linear(2), {"solver_options": {"soft_cap": 2.0}}, "options of the Filippov driver"),
        (Linear(2), {"solver_options": {"max_num_steps": 10}}, "max_steps"),
        (Linear(2), {"method": "radau", "solver_options": {"frist_step": 1e-3}}, "frist_step"),
        (TwoLayerReLU(2, 3), {"kinks": "naive", "solver_options": {"saftey": 0.8}}, "saftey"),
        (TwoLayerReLU(2, 3), {"kinks": "filippov", "solver_options": {"soft_capp": 2.0}}, "soft_capp"),
    ],
    ids=["smooth-typo", "smooth-filippov-option", "smooth-max_num_steps", "radau", "relu-naive", "filippov"],
)
def test_misspelled_solver_option_is_an_error_on_every_driver(model, kw, match):
    with pytest.raises(InvalidParameterError, match=match) as err:
        simulate(model, load_dataset("soudry_2d"), log_t_end=0.5, n_save=3, **kw)
    assert "valid" in _message(err)


def test_misspelled_option_in_an_ensemble():
    with pytest.raises(InvalidParameterError, match="fist_step"):
        simulate_ensemble(
            Linear(2), ONE, [{"potential": "euclidean"}], log_t_end=0.5, solver_options={"fist_step": 1e-3}
        )


# ---------------------------------------------------------------- ensembles: the same up-front guards
@pytest.mark.parametrize("model", [Linear(2), DiagonalLinear(2)], ids=["linear", "diagonal"])
def test_ensemble_refuses_nonseparable_data_for_models_linear_in_x(model):
    members = [{"potential": "euclidean"}, {"potential": {"name": "hyperbolic_entropy", "beta": 0.1}}]
    with pytest.raises(InvalidDataError) as err:
        simulate_ensemble(model, XOR, members, log_t_end=1.0, **FAST)
    assert "not linearly separable" in _message(err) and "allow_nonseparable=True" in _message(err)
    trs = simulate_ensemble(model, XOR, members, log_t_end=1.0, allow_nonseparable=True, **FAST)
    assert [tr.status for tr in trs] == [Status.SUCCESS, Status.SUCCESS]
    for tr in trs:  # the loss falls towards its minimum L(0) = 4 (XOR: the only minimizer of L is θ = 0)
        assert tr.diagnostics["loss"][-1] < tr.diagnostics["loss"][0] and tr.diagnostics["loss"][-1] >= 4.0 - 1e-12
    if isinstance(model, Linear):  # L = 2cosh(w1 + w2) + 2cosh(w1 − w2) has ∇²L ⪰ 4I: ‖θ(t)‖ ≤ e^{-4t}‖θ₀‖
        gf = trs[0].theta
        assert np.linalg.norm(gf[-1]) <= np.exp(-4 * np.e) * np.linalg.norm(gf[0]) * (1 + 1e-3)


@pytest.mark.parametrize(
    "theta0, match",
    [([0.1, float("nan")], "member 1 .*theta0 has 1 non-finite"), ([float("inf"), 0.0], "member 1 .*entry 0")],
    ids=["nan", "inf"],
)
def test_ensemble_refuses_a_nonfinite_theta0_before_any_work(theta0, match):
    members = [{"potential": "euclidean"}, {"potential": "euclidean", "theta0": theta0}]
    with pytest.raises(InvalidParameterError, match=match):
        simulate_ensemble(Linear(2), ONE, members, log_t_end=1.0, **FAST)


def test_ensemble_refuses_overflowing_outputs_at_theta0():
    big = make_dataset([[1e200, 1.0]], [1], name="big")
    members = [{"potential": "euclidean", "theta0": [1e200, 0.0]}]
    with pytest.raises(InvalidParameterError, match="member 0 .*overflow float64"):
        simulate_ensemble(Linear(2), big, members, log_t_end=1.0, **FAST)


def test_ensemble_refuses_a_horizon_out_of_dopri5_reach():
    with pytest.raises(HorizonError, match="method='radau'"):
        simulate_ensemble(Linear(2), ONE, [{"potential": "euclidean"}], log_t_end=1e300, **FAST)


def test_ensemble_filippov_members_end_not_separable():
    members = [{"potential": "euclidean", "seed": 0}, {"potential": "euclidean", "seed": 1}]
    trs = simulate_ensemble(TwoLayerReLU(2, 4), RAY, members, log_t_end=40.0, separation_log_t=2.0, **FAST)
    assert [tr.stats["ensemble_path"] for tr in trs] == ["sequential_filippov"] * 2
    for tr in trs:
        _not_separable_checks(tr, 2.0)


def test_toml_misspelled_option(tmp_path):
    with pytest.raises(ConfigError, match="fist_step"):
        _toml(tmp_path, _TOML_HEAD + "[solver]\noptions = {fist_step = 0.001}\n")


@pytest.mark.parametrize("streamed", [False, True], ids=["in-memory", "streamed-segments"])
@pytest.mark.parametrize("model", [Linear(2), TwoLayerReLU(2, 3)], ids=["smooth", "filippov"])
def test_max_steps_message_counts_every_step_of_the_run(tmp_path, streamed, model):
    out = {"out": tmp_path / "run", "checkpoint_every": 3} if streamed else {}
    tr = simulate(model, load_dataset("soudry_2d"), log_t_end=8.0, n_save=40, max_steps=25, **out)
    assert tr.status == Status.MAX_STEPS
    assert tr.stats["n_accepted"] == 25  # all segments together
    assert "25 accepted steps in the run, max_steps = 25" in tr.message


@pytest.mark.parametrize(
    "rtol, atol, match", [(1.0, 1e-9, "rtol < 1"), (0.0, 1e-9, "positive"), (1e-6, -1.0, "positive")]
)
def test_tolerances_that_ask_for_no_accuracy_are_refused(rtol, atol, match):
    """rtol ≥ 1 accepts errors as large as the state (a run 'succeeded' with balance drift 1.8e-3): refused up front,
    for single runs and ensembles, before any work."""
    with pytest.raises(InvalidParameterError, match=match):
        simulate(TwoLayerReLU(2, 4), RAY, log_t_end=1.0, n_save=3, rtol=rtol, atol=atol)
    with pytest.raises(InvalidParameterError, match=match):
        simulate_ensemble(TwoLayerReLU(2, 4), RAY, ["euclidean"], log_t_end=1.0, n_save=3, rtol=rtol, atol=atol)


def test_loading_a_folder_without_a_trajectory_names_both_layouts(tmp_path):
    from flowsim.errors import TrajectoryFileError

    with pytest.raises(TrajectoryFileError, match=r"trajectory\.json with stream/.*trajectory\.npz"):
        Trajectory.load(tmp_path)


# ---------------------------------------------------------------- arguments of the wrong type
SMALL = make_dataset([[1.0, 0.5], [-0.5, -1.0], [0.8, -0.2]], [1, -1, 1], name="small")


@pytest.mark.parametrize(
    "kw, error, match",
    [
        ({"rtol": "1e-6"}, InvalidParameterError, r"rtol must be a positive finite number \(e\.g\. rtol=1e-8\)"),
        ({"rtol": None}, InvalidParameterError, "rtol must be a positive finite number"),
        ({"atol": "1e-9"}, InvalidParameterError, "atol must be a positive finite number"),
        ({"atol": True}, InvalidParameterError, "atol must be a positive finite number"),
        ({"max_steps": "100"}, InvalidParameterError, r"max_steps must be an integer ≥ 1 \(e\.g\."),
        ({"max_steps": 1.5}, InvalidParameterError, "max_steps must be an integer ≥ 1"),
        ({"max_steps": None}, InvalidParameterError, "max_steps must be an integer ≥ 1"),
        ({"n_save": 5.5}, InvalidParameterError, r"n_save must be an integer \(e\.g\. n_save=200\), got 5\.5"),
        ({"n_save": "5"}, InvalidParameterError, "n_save must be an integer"),
        ({"n_save": True}, InvalidParameterError, "n_save must be an integer"),
        ({"log_t_end": "2"}, HorizonError, "log_t_end must be a number, the natural log of time t"),
        ({"log_t_start": "-3"}, HorizonError, "log_t_start must be a number"),
        ({"threads": 0}, InvalidParameterError, r"threads must be an integer ≥ 1 \(e\.g\. threads=1, \"auto\""),
        ({"threads": -1}, InvalidParameterError, "threads must be an integer ≥ 1"),
        ({"threads": True}, InvalidParameterError, "threads must be an integer ≥ 1"),
        ({"threads": "2"}, InvalidParameterError, "threads must be 'auto', None or a positive int"),
        ({"active_threshold": "0.1"}, InvalidParameterError, r"active_threshold must be a number in \[0, 1\]"),
        ({"seed": "0"}, InvalidParameterError, "seed"),
        ({"init_scale": "1"}, InvalidParameterError, "scale"),
    ],
)
def test_arguments_of_the_wrong_type_are_refused(kw, error, match):
    """Strings, bools, None and fractional counts are refused with a FlowSimError naming the argument and a valid
    value (not numpy's TypeError from isfinite, torch's RuntimeError from set_num_threads, nor a silent int())."""
    args = {"log_t_end": 1.0, "n_save": 3, "diagnostics": False, **kw}
    with pytest.raises(error, match=match) as info:
        simulate(Linear(2), SMALL, **args)
    _message(info)


def test_bad_checkpoint_every_is_refused_before_the_folder_is_made(tmp_path):
    for bad in (2.5, "5", -1):
        with pytest.raises(InvalidParameterError, match="checkpoint_every must be an integer ≥ 0"):
            simulate(Linear(2), SMALL, log_t_end=1.0, n_save=3, out=tmp_path / "r", checkpoint_every=bad)
    assert not (tmp_path / "r").exists()


def test_integral_floats_and_numpy_scalars_are_accepted_as_counts_and_tolerances():
    tr = simulate(
        Linear(2),
        SMALL,
        log_t_end=np.float64(1.0),
        n_save=4.0,
        max_steps=1e5,
        rtol=np.float64(1e-8),
        atol=np.float32(1e-10),
        threads=np.int64(1),
        seed=np.int64(3),
        diagnostics=False,
    )
    assert tr.success and len(tr.log_t) == 4
    assert tr.config["solver"]["max_steps"] == 100_000 and type(tr.config["solver"]["rtol"]) is float


_ENTRY_POINTS = {  # the three runners on the same small problem; each test passes the argument under test
    "simulate": lambda **kw: simulate(Linear(2), SMALL, **{"log_t_end": 1.0, "n_save": 3, **kw}),
    "mirror_descent": lambda **kw: mirror_descent(Linear(2), SMALL, step_size=0.1, **{"n_steps": 3, "n_save": 3, **kw}),
    "simulate_ensemble": lambda **kw: simulate_ensemble(
        Linear(2), SMALL, [{"potential": "euclidean"}], **{"log_t_end": 1.0, "n_save": 3, **kw}
    ),
}


@pytest.mark.parametrize("entry", list(_ENTRY_POINTS))
@pytest.mark.parametrize(
    "kw, match",
    [
        pytest.param(*case, id=" ".join(f"{k}={v!r}" for k, v in case[0].items()))
        for case in [
            ({"n_save": 5.5}, "n_save must be an integer"),
            ({"n_save": "5"}, "n_save must be an integer"),
            ({"max_steps": "10"}, r"max_steps must be an integer ≥ 1 \(e\.g\. max_steps=1_000_000\), got '10'"),
            ({"max_steps": 10.5}, "max_steps must be an integer ≥ 1"),
            ({"max_steps": 0}, "max_steps must be an integer ≥ 1"),
            ({"threads": 0}, r"threads must be an integer ≥ 1 \(e\.g\. threads=1"),
            ({"threads": 1.5}, "threads must be an integer ≥ 1"),
            ({"threads": "2"}, "threads must be 'auto', None or a positive int"),
            ({"active_threshold": "0.1"}, r"active_threshold must be a number in \[0, 1\]"),
            ({"active_threshold": 2.0}, r"active_threshold must be a number in \[0, 1\]"),
        ]
    ],
)
def test_every_runner_refuses_bad_counts_and_thresholds_as_simulate_does(entry, kw, match):
    """mirror_descent ignored active_threshold; simulate_ensemble ignored it too, took max_steps="10" or 10.5 through
    int() and refused threads=1.0 that simulate takes: all three refuse the same values with the same message now."""
    with pytest.raises(InvalidParameterError, match=match) as info:
        _ENTRY_POINTS[entry](diagnostics=False, **kw)
    _message(info)


def test_integral_floats_are_counts_for_every_runner():
    """As simulate: integral floats are counts (mirror_descent refused n_save=3.0 and max_steps=1e3, the ensemble
    threads=1.0), with the same results as the ints."""
    runs = {"n_save": (3, 3.0), "max_steps": (1000, 1e3), "threads": (1, 1.0)}
    ints, floats = ({k: v[i] for k, v in runs.items()} for i in (0, 1))
    for entry, run in _ENTRY_POINTS.items():
        a, b = run(**ints), run(**floats)
        a, b = (a[0], b[0]) if entry == "simulate_ensemble" else (a, b)
        assert b.success and np.array_equal(a.z, b.z) and b.config["solver"]["max_steps"] == 1000, entry
    md = mirror_descent(Linear(2), SMALL, step_size=0.1, n_steps=4.0, n_save=3, diagnostics=False)
    assert md.stats["n_steps"] == 4 and md.config["solver"]["n_steps"] == 4


def test_mirror_descent_refuses_zero_threads():
    with pytest.raises(InvalidParameterError, match="threads must be an integer ≥ 1"):
        mirror_descent(Linear(2), SMALL, "euclidean", step_size=0.1, n_steps=3, threads=0)


def test_bare_potential_name_that_needs_parameters_shows_the_dict_form():
    for run in (
        lambda: simulate(Linear(2), SMALL, "hyperbolic_entropy", log_t_end=1.0, n_save=3),
        lambda: mirror_descent(Linear(2), SMALL, "hyperbolic_entropy", step_size=0.1, n_steps=3),
    ):
        with pytest.raises(InvalidParameterError) as info:
            run()
        msg = _message(info)
        assert "needs beta" in msg and "{'name': 'hyperbolic_entropy', 'beta': 0.05}" in msg, msg
        assert "HyperbolicEntropy(beta=0.05)" in msg


def test_status_messages_keep_flowsim_errors_whole_and_cut_foreign_ones():
    """A run's failure message carries the exception's text: flowsim's own (with its advice) whole, a foreign
    library's cut to 300 characters."""
    from flowsim.errors import PotentialOverflowError, exception_text

    advice = "x" * 400 + " use a built-in potential"
    assert exception_text(PotentialOverflowError(advice)) == f"PotentialOverflowError: {advice}"
    cut = exception_text(RuntimeError("y" * 1000))
    assert cut == "RuntimeError: " + "y" * 300 + " …"
    assert exception_text(ValueError("short")) == "ValueError: short"
