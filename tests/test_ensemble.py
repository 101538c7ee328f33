"""Ensembles (flowsim.ensemble), device choice, config sweeps and the closed-form two-layer gradient."""

import numpy as np
import pytest
import torch

from flowsim import simulate
from flowsim.data import make_dataset, student_teacher_relu
from flowsim.device import resolve_device, resolve_threads
from flowsim.ensemble import Member, members_grid, resolve_kinks, simulate_ensemble
from flowsim.errors import ConfigError, InvalidParameterError
from flowsim.lab.config import is_sweep, sweep_members, validate_config
from flowsim.lab.experiment import run_experiment
from flowsim.models import AbstractModel, DeepReLU, Linear, TwoLayerLeakyReLU, TwoLayerReLU, TwoLayerReLUPower
from flowsim.results.trajectory import Status

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
KW = dict(log_t_end=3.0, n_save=12, rtol=1e-8, atol=1e-10, diagnostics=False)


def _data(n=24, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    w = torch.randn(d, generator=g, dtype=torch.float64)
    return make_dataset(X, torch.sign(X @ w))


MEMBERS = [
    Member({"name": "hyperbolic_entropy", "beta": 0.1}, 0.5, 0),
    Member({"name": "hyperbolic_entropy", "beta": 1.0}, 0.5, 1),
    Member("euclidean", 0.3, 2),
    Member({"name": "p_power", "p": 3.0}, 0.5, 3),
    Member({"name": "smoothed_homogeneous", "p": 3.0, "lam": 0.5}, 0.5, 4),  # Newton inverse: grouped
]


@pytest.fixture(scope="module")
def sequential_runs():
    """Each member run alone by simulate, at the ensemble's tolerances and at tight ones (the reference)."""
    ds, model = _data(), TwoLayerReLUPower(4, 5)
    tight = {**KW, "rtol": 1e-12, "atol": 1e-14}
    runs = []
    for m in MEMBERS:
        init = {"init_scale": m.init_scale, "seed": m.seed, "kinks": "naive"}
        runs.append((simulate(model, ds, m.potential, **init, **KW), simulate(model, ds, m.potential, **init, **tight)))
    return ds, model, runs


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("step", ["per_member", "shared"])
def test_batched_matches_sequential(device, step, sequential_runs):
    ds, model, runs = sequential_runs
    ens = simulate_ensemble(model, ds, MEMBERS, step=step, device=device, **KW)
    for tr, (ref, exact) in zip(ens, runs, strict=True):
        assert tr.status == Status.SUCCESS and ref.status == Status.SUCCESS
        assert tr.z.shape == ref.z.shape
        np.testing.assert_allclose(tr.s, ref.s, rtol=0, atol=0)
        # agreement to solver tolerance: the batched run is as close to a tight reference as the sequential one
        err_batched = np.abs(tr.z - exact.z).max()
        err_sequential = np.abs(ref.z - exact.z).max()
        assert err_batched <= 10 * err_sequential + 1e-9 * np.abs(exact.z).max()
        assert np.abs(tr.z - ref.z).max() <= 1e-4 * np.abs(ref.z).max()
        assert tr.stats["ensemble_size"] == len(MEMBERS)
        if step == "per_member":  # the same step sequence as torchdiffeq's dopri5, up to rounding
            assert abs(tr.stats["n_accepted"] - ref.stats["n_accepted"]) <= 0.05 * ref.stats["n_accepted"] + 2


def test_diverging_member_is_reported_and_others_finish():
    ds = _data(n=12, d=3)
    model = Linear(3)
    w_true = torch.linalg.lstsq(ds.X, ds.y.unsqueeze(-1)).solution.squeeze(-1)
    bad = -1e306 * w_true / w_true.abs().max()  # every margin ≈ −1e306: the loss weights overflow
    members = [
        Member("euclidean", 0.1, 0),
        Member("euclidean", theta0=bad),
        Member({"name": "he", "beta": 0.5}, 0.1, 1),
    ]
    ens = simulate_ensemble(model, ds, members, **KW)
    assert ens[1].status in (Status.NONFINITE, Status.STEP_UNDERFLOW)
    assert "non-finite" in ens[1].message and ens[1].stats["n_nonfinite_evals"] > 0
    assert np.isfinite(ens[1].z).all() and len(ens[1]) >= 1  # the partial trajectory is kept
    for i in (0, 2):
        m = members[i]
        ref = simulate(model, ds, m.potential, init_scale=m.init_scale, seed=m.seed, **KW)
        assert ens[i].status == Status.SUCCESS
        assert np.abs(ens[i].z - ref.z).max() <= 1e-6 * np.abs(ref.z).max()


def test_ensemble_errors_and_kinks():
    ds = _data()
    with pytest.raises(InvalidParameterError, match="filippov.*smooth"):
        simulate_ensemble(Linear(4), ds, MEMBERS[:1], kinks="filippov")
    with pytest.raises(InvalidParameterError, match="kinks must be one of"):
        simulate_ensemble(Linear(4), ds, MEMBERS[:1], kinks="exact")
    with pytest.raises(InvalidParameterError, match="unknown method 'rk99'"):
        simulate_ensemble(TwoLayerReLU(4, 3), ds, MEMBERS[:1], method="rk99")
    with pytest.raises(InvalidParameterError, match="at least one member"):
        simulate_ensemble(TwoLayerReLU(4, 3), ds, [])
    with pytest.raises(InvalidParameterError, match="unknown member field"):
        simulate_ensemble(TwoLayerReLU(4, 3), ds, [{"potential": "euclidean", "beta": 1.0}])
    tr = simulate_ensemble(TwoLayerReLU(4, 3), ds, MEMBERS[:2], kinks="naive", **{**KW, "log_t_end": -2.0})
    assert all(t.success and t.config["solver"]["kinks"] == "naive" for t in tr)
    assert all(t.stats["ensemble_path"] == "batched" for t in tr)
    # "auto" means what it means for simulate: Filippov for two-layer ReLU, naive (batched) for smooth models
    assert resolve_kinks(TwoLayerReLU(4, 3), "auto") == "filippov"
    assert resolve_kinks(TwoLayerReLUPower(4, 3), "auto") == "naive"
    assert resolve_kinks(DeepReLU(4, [3, 3]), "auto") == "filippov"  # naive stepping chatters on sliding modes
    assert resolve_kinks(DeepReLU(4, [3]), "auto") == "filippov"
    assert resolve_kinks(DeepReLU(4, [3, 3]), "filippov") == "filippov"
    tr = simulate_ensemble(TwoLayerReLU(4, 3), ds, MEMBERS[:2], **{**KW, "log_t_end": -2.0})  # default "auto"
    assert all(t.success and t.config["solver"]["kinks"] == "filippov" for t in tr)
    assert [t.stats["ensemble_path"] for t in tr] == ["sequential_filippov"] * 2


FILIPPOV_MEMBERS = [
    Member("euclidean", 0.5, 0),
    Member({"name": "hyperbolic_entropy", "beta": 0.1}, 0.5, 1),
]


def test_filippov_ensemble_equals_per_member_simulate():
    ds, model = student_teacher_relu(n=10, d=3, seed=0), TwoLayerReLU(3, 4)
    kw = dict(log_t_end=2.0, n_save=10, rtol=1e-8, atol=1e-10)
    ens = simulate_ensemble(model, ds, FILIPPOV_MEMBERS, kinks="filippov", **kw)
    assert len(ens) == len(FILIPPOV_MEMBERS)
    for i, (tr, m) in enumerate(zip(ens, FILIPPOV_MEMBERS, strict=True)):
        ref = simulate(model, ds, m.potential, init_scale=m.init_scale, seed=m.seed, kinks="filippov", **kw)
        assert tr.status == ref.status == Status.SUCCESS
        assert tr.z.shape == ref.z.shape
        np.testing.assert_allclose(tr.s, ref.s, rtol=0, atol=0)
        np.testing.assert_allclose(tr.z, ref.z, rtol=0, atol=1e-10)
        np.testing.assert_allclose(tr.theta, ref.theta, rtol=0, atol=1e-10)
        assert tr.stats["n_crossings"] == ref.stats["n_crossings"] and "sliding_time" in tr.stats
        assert tr.stats["nfe"] == ref.stats["nfe"]
        assert tr.config["solver"]["kinks"] == "filippov" and tr.config["ensemble"]["index"] == i
        assert tr.stats["ensemble_size"] == 2 and tr.stats["ensemble_path"] == "sequential_filippov"
        assert np.max(tr.diagnostics["balance_drift"]) <= 1e-7  # exact on the Filippov solution
    assert sum(tr.stats["n_crossings"] for tr in ens) > 0  # the problem does cross switching surfaces


def test_members_grid_and_diagnostics():
    members = members_grid(["euclidean", {"name": "he", "beta": 0.1}], [0.5, 1.0], [0, 1, 2])
    assert len(members) == 12 and members[-1].seed == 2 and members[0].potential == "euclidean"
    ens = simulate_ensemble(Linear(4), _data(), members[:3], log_t_end=2.0, n_save=5)
    assert "normalized_margin" in ens[0].diagnostics and len(ens[0].diagnostics["loss"]) == len(ens[0])


@pytest.mark.parametrize(
    "model", [TwoLayerReLU(5, 7), TwoLayerLeakyReLU(5, 7, 0.2), TwoLayerReLUPower(5, 7, 2), TwoLayerReLUPower(5, 7, 3)]
)
def test_closed_form_vjp_matches_autograd(model):
    g = torch.Generator().manual_seed(1)
    X = torch.randn(30, 5, generator=g, dtype=torch.float64)
    X[0] = 0.0  # a point on every switching surface: autograd's convention σ′(0) must be kept
    for theta in (model.init(seed=2), torch.stack([model.init(seed=k, scale=2.0**k) for k in range(3)])):
        w = torch.randn(theta.shape[:-1] + (30,), generator=g, dtype=torch.float64)
        f, vjp = model.forward_and_vjp(theta, X)
        f_ref, vjp_ref = AbstractModel.forward_and_vjp(model, theta, X)  # the autograd default
        g_ref = vjp_ref(w)
        assert torch.equal(f, f_ref)
        assert float((vjp(w) - g_ref).abs().max() / g_ref.abs().max()) <= 1e-12


def test_device_and_threads():
    assert resolve_device("auto", work=100) == torch.device("cpu")
    assert resolve_device(None, work=100) == torch.device("cpu")
    assert resolve_threads("auto", work=100, device=torch.device("cpu")) == 1
    assert resolve_threads("auto", work=10**9, device=torch.device("cpu")) is None
    if not torch.cuda.is_available():
        with pytest.raises(InvalidParameterError, match="no CUDA device"):
            resolve_device("cuda", work=1)
    tr = simulate(Linear(4), _data(), "euclidean", device="auto", log_t_end=1.0, n_save=3)
    assert tr.success


SWEEP = {
    "data": {"name": "iris", "a": 0, "b": 1},
    "model": {"name": "linear"},
    "potentials": [{"name": "hyperbolic_entropy", "beta": [0.01, 0.1, 1.0]}, {"name": "euclidean", "label": "GF"}],
    "init": {"scale": 0.1, "seed": [0, 1]},
    "horizon": {"log_t_end": 3.0, "n_save": 8},
    "output": {"plots": False},
}


def test_sweep_config_expands():
    cfg = validate_config(SWEEP)
    assert is_sweep(cfg) and not is_sweep(validate_config({**SWEEP, "potentials": [{"name": "euclidean"}], "init": {}}))
    members = sweep_members(cfg)
    assert len(members) == 8
    assert [m["potential"].get("beta") for m in members[:6]] == [0.01, 0.01, 0.1, 0.1, 1.0, 1.0]
    assert [m["seed"] for m in members] == [0, 1] * 4
    assert members[0]["label"] == "hyperbolic_entropy(beta=0.01) seed=0" and members[-1]["label"] == "GF seed=1"
    with pytest.raises(ConfigError, match="empty list"):
        validate_config({**SWEEP, "init": {"seed": []}})
    with pytest.raises(ConfigError, match="must be an integer"):
        validate_config({**SWEEP, "init": {"seed": [0, 1.5]}})


def test_filippov_ensemble_interrupted_member_stops_the_rest(monkeypatch):
    import dataclasses

    import flowsim.ensemble

    real, calls = flowsim.ensemble.simulate, []

    def interrupted_simulate(*args, **kwargs):  # as if Ctrl-C hit the first member's run
        calls.append(kwargs["seed"])
        return dataclasses.replace(real(*args, **kwargs), status=Status.INTERRUPTED)

    monkeypatch.setattr(flowsim.ensemble, "simulate", interrupted_simulate)
    ds, model = student_teacher_relu(n=10, d=3, seed=0), TwoLayerReLU(3, 4)
    ens = simulate_ensemble(model, ds, FILIPPOV_MEMBERS, kinks="filippov", log_t_end=-1.0, n_save=4)
    assert calls == [0] and [t.status for t in ens] == [Status.INTERRUPTED] * 2
    assert len(ens[1]) == 1 and "not started" in ens[1].message and ens[1].stats["nfe"] == 0
    assert ens[1].config["ensemble"]["index"] == 1 and "normalized_margin" in ens[1].diagnostics


def test_filippov_sweep_runs(tmp_path):
    cfg = {
        "data": {"name": "student_teacher", "n": 10, "d": 3, "seed": 0},
        "model": {"name": "two_layer_relu", "width": 4},
        "potentials": [{"name": "hyperbolic_entropy", "beta": [0.1, 1.0]}],
        "init": {"scale": 0.5, "seed": 0},
        "solver": {"kinks": "filippov", "rtol": 1e-8, "atol": 1e-10},
        "horizon": {"log_t_end": 2.0, "n_save": 8},
        "output": {"plots": False},
    }
    lines = []
    res = run_experiment(validate_config(cfg), tmp_path, log=lines.append)
    assert len(res.trajectories) == 2 and all(t.success for t in res.trajectories)
    assert any("one by one with Filippov" in line for line in lines)
    for tr, beta in zip(res.trajectories, [0.1, 1.0], strict=True):
        assert tr.config["solver"]["kinks"] == "filippov" and "n_crossings" in tr.stats
        assert tr.config["potential"]["beta"] == beta
    ref = simulate(
        TwoLayerReLU(3, 4),
        res.dataset,
        {"name": "hyperbolic_entropy", "beta": 1.0},
        init_scale=0.5,
        kinks="filippov",
        log_t_end=2.0,
        n_save=8,
        rtol=1e-8,
        atol=1e-10,
        diagnostics=False,
    )
    np.testing.assert_allclose(res.trajectories[1].z, ref.z, rtol=0, atol=1e-10)
    assert (tmp_path / "hyperbolic_entropy_beta_1.0" / "trajectory.json").exists()


def test_sweep_runs_as_ensemble(tmp_path):
    res = run_experiment(validate_config(SWEEP), tmp_path, log=lambda *a: None)
    assert len(res.trajectories) == 8 and all(t.success for t in res.trajectories)
    assert {t.stats["ensemble_size"] for t in res.trajectories} == {8}
    lines = (tmp_path / "summary.csv").read_text().strip().splitlines()
    assert len(lines) == 9 and lines[1].startswith("hyperbolic_entropy(beta=0.01) seed=0")
    assert (tmp_path / "GF_seed_1" / "trajectory.json").exists()


@pytest.mark.parametrize("model", [Linear(4), TwoLayerReLU(4, 3)], ids=["linear", "relu"])
def test_ensemble_with_radau_runs_members_one_by_one_as_simulate(model):
    """method="radau" (and any non-dopri5 method) runs each member through simulate: results identical to
    per-member simulate calls; a ReLU net keeps exact kinks (path "sequential_filippov"), a smooth model runs
    on path "sequential"; a horizon of log t = 1e3 is in reach."""
    ds = _data()
    kw = dict(log_t_end=1e3, n_save=5, method="radau", rtol=1e-6, atol=1e-9)
    ens = simulate_ensemble(model, ds, MEMBERS[:2], **kw)
    path = "sequential_filippov" if isinstance(model, TwoLayerReLU) else "sequential"
    for m, tr in zip(MEMBERS[:2], ens, strict=True):
        assert tr.status == Status.SUCCESS and tr.stats["ensemble_path"] == path
        ref = simulate(model, ds, m.potential, seed=m.seed, init_scale=m.init_scale, **kw)
        assert np.array_equal(tr.theta, ref.theta) and tr.stats["nfe"] == ref.stats["nfe"]
