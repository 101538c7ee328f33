"""Tests of discrete mirror descent (flowsim.discrete): order 1 in η, C8 balance drift, normalized schedules,
the hyperbolic-entropy failure mode of loss-normalized steps, statuses and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import flowsim.discrete as discrete_module
from flowsim import simulate
from flowsim.discrete import compare_trajectories, mirror_descent
from flowsim.errors import InvalidDataError, InvalidParameterError
from flowsim.models import DeepLinear, Linear, TwoLayerReLUPower
from flowsim.potentials import Euclidean, HyperbolicEntropy
from flowsim.results.trajectory import Status, Trajectory

from .problems import random_separable


def _unit(theta: np.ndarray) -> np.ndarray:
    return theta / np.linalg.norm(theta, axis=-1, keepdims=True)


# ---------------------------------------------------------------- acceptance 1: order 1 in η
@pytest.mark.parametrize("potential", [Euclidean(), HyperbolicEntropy(0.5)], ids=["euclidean", "hyperbolic"])
def test_order_one_in_step_size(potential):
    data = random_separable(n=12, d=3, seed=0)
    model = TwoLayerReLUPower(3, 4, power=2)  # relu² activation: a Lipschitz field, Euler is order 1
    log_T = 1.0  # horizon t = e
    ref = simulate(model, data, potential, save_log_t=[log_T], init_scale=0.5, rtol=1e-12, atol=1e-14)
    assert ref.success, ref.message
    etas = np.array([0.04, 0.02, 0.01, 0.005])
    errors = []
    for eta in etas:
        tr = mirror_descent(model, data, potential, step_size=eta, log_t_end=log_T, init_scale=0.5, n_save=5)
        assert tr.success, tr.message
        assert tr.log_t[-1] == pytest.approx(log_T, rel=1e-14)  # the last step lands on the horizon
        errors.append(np.linalg.norm(tr.theta[-1] - ref.theta[-1]) / np.linalg.norm(ref.theta[-1]))
    slope, _ = np.polyfit(np.log(etas), np.log(errors), 1)
    assert abs(slope - 1.0) <= 0.2, (slope, errors)
    assert errors[-1] < 2e-3


# ---------------------------------------------------------------- acceptance 2: CASES C8
def _layer_balance(model, theta):
    W = list(model.unflatten(theta).values())
    return [W[l + 1].T @ W[l + 1] - W[l] @ W[l].T for l in range(len(W) - 1)]


def _layer_grads(model, data, theta):
    th = theta.clone().requires_grad_(True)
    L = torch.exp(-(data.y * model.forward(th, data.X))).sum()
    (g,) = torch.autograd.grad(L, th)
    return list(model.unflatten(g).values())


def test_c8_discrete_balance_drift_is_exactly_eta_squared_term():
    """W'_l = W_l − ηG_l and W_{l+1}ᵀG_{l+1} = G_l W_lᵀ give ΔD_l = η²(G_{l+1}ᵀG_{l+1} − G_l G_lᵀ) exactly."""
    data = random_separable(n=10, d=3, seed=2)
    model = DeepLinear(3, [4, 2])
    eta, K = 0.02, 30
    tr = mirror_descent(model, data, "euclidean", step_size=eta, n_steps=K, n_save=K + 1, init_scale=0.7, seed=1)
    assert tr.success and len(tr) == K + 1
    theta = torch.as_tensor(tr.theta)
    cumulative = [torch.zeros_like(D) for D in _layer_balance(model, theta[0])]
    per_step, per_step_scale = [], []
    for k in range(K):
        G = _layer_grads(model, data, theta[k])
        pred = [eta**2 * (G[l + 1].T @ G[l + 1] - G[l] @ G[l].T) for l in range(len(G) - 1)]
        D0, D1 = _layer_balance(model, theta[k]), _layer_balance(model, theta[k + 1])
        W = list(model.unflatten(theta[k]).values())
        for l, p in enumerate(pred):
            cumulative[l] += p
            residual = float(torch.linalg.norm(D1[l] - D0[l] - p))
            # relative to the rounding scale of D_l: ‖W_{l+1}‖² + ‖W_l‖²
            per_step_scale.append(residual / float(W[l + 1].norm() ** 2 + W[l].norm() ** 2))
            if k < 5:  # early steps: the η² term is far above the rounding of D (≈1e-16‖W‖²)
                per_step.append(residual / float(torch.linalg.norm(p)))
    assert max(per_step) <= 1e-12, max(per_step)
    assert max(per_step_scale) <= 1e-14, max(per_step_scale)
    D0, DK = _layer_balance(model, theta[0]), _layer_balance(model, theta[-1])
    total = [
        float(torch.linalg.norm(b - a - c) / torch.linalg.norm(c)) for a, b, c in zip(D0, DK, cumulative, strict=True)
    ]
    assert max(total) <= 1e-12, total
    assert min(float(torch.linalg.norm(b - a)) for a, b in zip(D0, DK, strict=True)) > 1e-3  # the drift is real
    # the flow does not drift (to solver tolerance)
    fl = simulate(
        model, data, "euclidean", log_t_end=np.log(K * eta), n_save=20, init_scale=0.7, seed=1, rtol=1e-10, atol=1e-12
    )
    assert fl.success
    ref = _layer_balance(model, torch.as_tensor(fl.theta[0]))
    drift = max(
        float(torch.linalg.norm(a - b) / torch.linalg.norm(b))
        for th in fl.theta
        for a, b in zip(_layer_balance(model, torch.as_tensor(th)), ref, strict=True)
    )
    assert drift < 1e-8, drift


# ---------------------------------------------------------------- acceptance 3: normalized schedules
def _direction_at_matched_loss(flow: Trajectory, md: Trajectory) -> np.ndarray:
    """Direction error of md's iterates against the flow's state with the same loss (log L is strictly
    decreasing along the flow, so it parametrises the path; matching there removes clock drift)."""
    lf, uf = flow.diagnostics["log_loss"][1:][::-1], _unit(flow.theta[1:])[::-1]
    lm = md.diagnostics["log_loss"][1:]
    inside = (lm > lf[0]) & (lm < lf[-1])
    errs = []
    for i in np.nonzero(inside)[0] + 1:
        j = int(np.searchsorted(lf, md.diagnostics["log_loss"][i]))
        w = (md.diagnostics["log_loss"][i] - lf[j - 1]) / (lf[j] - lf[j - 1])
        u = (1 - w) * uf[j - 1] + w * uf[j]
        errs.append(np.linalg.norm(_unit(md.theta[i]) - u / np.linalg.norm(u)))
    return np.asarray(errs)


@pytest.mark.parametrize("schedule", ["loss_normalized", "sup_normalized"])
@pytest.mark.parametrize("potential", [Euclidean(), HyperbolicEntropy(0.5)], ids=["euclidean", "hyperbolic"])
def test_normalized_schedules_follow_the_flow_path(schedule, potential):
    data = random_separable(n=12, d=3, seed=0)
    model, log_T = Linear(3), 12.0
    dense = simulate(
        model, data, potential, log_t_end=log_T, n_save=1500, log_t_start=-4, init_scale=0.0, rtol=1e-11, atol=1e-13
    )
    at_time, at_loss = [], []
    for eta in (0.2, 0.1, 0.05):
        md = mirror_descent(
            model, data, potential, step_size=eta, schedule=schedule, log_t_end=log_T, n_save=60, init_scale=0.0
        )
        assert md.success, md.message
        fl = simulate(model, data, potential, save_log_t=md.log_t[1:], init_scale=0.0, rtol=1e-11, atol=1e-13)
        cmp = compare_trajectories(fl, md)
        at_time.append(np.nanmax(cmp["direction_error"]))
        at_loss.append(_direction_at_matched_loss(dense, md).max())
    at_time, at_loss = np.array(at_time), np.array(at_loss)
    # within the step size, and order 1: halving η halves the error
    assert np.all(at_time <= 0.15 * np.array([0.2, 0.1, 0.05])), at_time
    assert np.all(at_loss <= 0.15 * np.array([0.2, 0.1, 0.05])), at_loss
    assert np.all((at_time[:-1] / at_time[1:] > 1.6) & (at_time[:-1] / at_time[1:] < 2.5)), at_time


# ---------------------------------------------------------------- acceptance 3b: hyperbolic entropy failure mode
def _late_range(values: np.ndarray) -> float:
    v = values[np.isfinite(values)]
    tail = v[-len(v) // 5 :]
    return float(tail.max() - tail.min())


def test_loss_normalized_hyperbolic_entropy_oscillates_and_runs_away():
    """η/L steps with hyperbolic entropy: the dual step stays O(η), θ = β sinh(z) is multiplied by e^{±O(η)}
    per step forever, so (i) the ℓ1-normalized margin keeps oscillating with amplitude ∝ η instead of
    converging (Euclidean: the amplitude dies out), (ii) the loss still decreases monotonically, so rollback
    never fires, (iii) ‖θ‖ and log t_k grow exponentially in k, and (iv) θ overflows float64 after
    ~710/(cη) steps (status nonfinite, partial trajectory kept)."""
    data = random_separable(n=12, d=3, seed=0)
    model = Linear(3)
    he = HyperbolicEntropy(0.1)
    ranges = {}
    for eta in (0.2, 0.1):
        n = int(60 / eta)
        tr = mirror_descent(
            model,
            data,
            he,
            step_size=eta,
            schedule="loss_normalized",
            n_steps=n,
            n_save=n + 1,
            init_scale=0.0,
            rollback=True,
        )
        assert tr.success and tr.stats["rollbacks"] == 0  # (ii)
        assert np.all(np.diff(tr.diagnostics["log_loss"]) < 0)
        assert tr.log_t[-1] > 1e6  # (iii): Euclidean reaches log t ≈ 60 in the same number of steps
        ranges[eta] = _late_range(tr.diagnostics["q_margin"])
        eu = mirror_descent(
            model, data, "euclidean", step_size=eta, schedule="loss_normalized", n_steps=n, n_save=n + 1, init_scale=0.0
        )
        assert eu.log_t[-1] < 200
        assert _late_range(eu.diagnostics["normalized_margin"]) < ranges[eta] / 10
    # (i): amplitude ∝ η (measured 0.011 at η = 0.2, 0.0059 at η = 0.1)
    assert 0.02 * 0.2 < ranges[0.2] < 0.15 * 0.2 and 0.02 * 0.1 < ranges[0.1] < 0.15 * 0.1, ranges
    assert 1.4 < ranges[0.2] / ranges[0.1] < 2.8, ranges
    # the flow's ℓ1 margin increases monotonically to the ℓ1 max margin instead
    fl = simulate(model, data, he, log_t_end=200.0, n_save=30, init_scale=0.0, rtol=1e-10, atol=1e-12)
    qm = fl.diagnostics["q_margin"][10:]
    assert np.all(np.diff(qm) > 0) and qm[-1] > 0.3345
    # (iv): overflow of θ = β sinh(z) although the loss only decreased
    tr = mirror_descent(
        model, data, he, step_size=0.5, schedule="loss_normalized", n_steps=3000, n_save=50, init_scale=0.0
    )
    assert tr.status == Status.NONFINITE and "non-finite" in tr.message
    assert 1000 < tr.stats["n_steps"] < 3000 and np.all(np.isfinite(tr.theta))
    assert np.all(np.diff(tr.diagnostics["log_loss"]) < 0)


def test_eg_variant_is_sign_preserving_and_freezes_zeros():
    data = random_separable(n=12, d=3, seed=0)
    he = HyperbolicEntropy(0.1)
    kw = dict(step_size=0.05, log_t_end=4.0, n_save=20)
    frozen = mirror_descent(Linear(3), data, he, variant="eg", theta0=np.zeros(3), **kw)
    assert frozen.success and frozen.stats["n_steps"] > 100
    np.testing.assert_array_equal(frozen.theta, 0.0)  # θ = 0 is a fixed point of θ ← θ·exp(·)
    moving = mirror_descent(Linear(3), data, he, theta0=np.zeros(3), **kw)
    assert np.abs(moving.theta[-1]).max() > 1.0  # hyperbolic entropy moves θ at rate β near 0
    th0 = np.array([0.05, 0.05, -0.05])  # the ℓ1 max-margin direction has θ_3 > 0
    eg = mirror_descent(Linear(3), data, he, variant="eg", theta0=th0, **kw)
    md = mirror_descent(Linear(3), data, he, theta0=th0, **kw)
    assert np.all(np.sign(eg.theta) == np.sign(th0))  # signs never change
    assert md.theta[-1, 2] > 1.0  # mirror descent flips θ_3
    assert eg.diagnostics["q_min"][-1] < md.diagnostics["q_min"][-1]


# ---------------------------------------------------------------- statuses, partial results, saving
def test_interrupt_returns_partial_trajectory(monkeypatch, tmp_path):
    calls = {"n": 0}
    original = discrete_module.DualGradient.__call__

    def interrupting(self, theta):
        calls["n"] += 1
        if calls["n"] == 300:
            raise KeyboardInterrupt
        return original(self, theta)

    monkeypatch.setattr(discrete_module.DualGradient, "__call__", interrupting)
    data = random_separable(n=12, d=3, seed=0)
    tr = mirror_descent(Linear(3), data, "euclidean", step_size=0.1, log_t_end=10.0, n_save=50, out=tmp_path / "r")
    assert tr.status == Status.INTERRUPTED and "interrupted" in tr.message
    assert tr.stats["n_steps"] == 298 and 2 < len(tr) < 50
    assert np.all(np.diff(tr.log_t) > 0)
    assert tr.log_t[-1] == pytest.approx(np.log(298 * 0.1), rel=1e-12)  # last iterate kept
    back = Trajectory.load(tmp_path / "r")
    assert back.status == Status.INTERRUPTED and back.config["solver"]["method"] == "md"
    np.testing.assert_array_equal(back.theta, tr.theta)


def test_statuses_max_steps_diverged_nonfinite_step_underflow():
    data = random_separable(n=12, d=3, seed=0)
    tr = mirror_descent(Linear(3), data, "euclidean", step_size=0.1, log_t_end=10.0, max_steps=50)
    assert tr.status == Status.MAX_STEPS and "max_steps" in tr.message and tr.stats["n_steps"] == 50
    bad0 = -5.0 * np.ones(3)  # misclassifies: a huge first step overshoots
    tr = mirror_descent(Linear(3), data, "euclidean", step_size=10.0, n_steps=20, theta0=bad0)
    assert tr.status == Status.DIVERGED and "step_size" in tr.message and len(tr) == 2
    tr = mirror_descent(Linear(3), data, "euclidean", step_size=10.0, n_steps=20, theta0=bad0, rollback=True)
    assert tr.success and tr.stats["rollbacks"] > 0 and np.all(np.diff(tr.diagnostics["log_loss"]) < 0)
    tr = mirror_descent(
        Linear(3), data, "euclidean", step_size=1e300, n_steps=5, theta0=bad0, divergence_log_factor=1e308
    )
    assert tr.status == Status.NONFINITE and len(tr) == 1
    tr = mirror_descent(
        TwoLayerReLUPower(3, 4), data, "euclidean", step_size=1.0, schedule="sup_normalized", n_steps=3, init_scale=0.0
    )
    assert tr.status == Status.FAILED and "gradient is zero" in tr.message


@pytest.mark.slow  # (15-27 s; the default suite stays under 8 minutes)
def test_flow_clock_is_log_space_and_config_records_method():
    data = random_separable(n=12, d=3, seed=0)
    tr = mirror_descent(
        Linear(3),
        data,
        "euclidean",
        step_size=0.5,
        schedule="loss_normalized",
        log_t_end=2000.0,
        n_save=30,
        init_scale=0.0,
    )
    assert tr.success and tr.log_t[-1] == pytest.approx(2000.0, rel=1e-14)
    assert np.isfinite(tr.diagnostics["log_loss"][-1]) and tr.diagnostics["log_loss"][-1] < -1900  # L ≈ e^-2000
    assert len(tr) <= 31 and tr.stats["n_steps"] > 1000  # saves do not grow with steps
    assert tr.stats["nfe"] == tr.stats["n_steps"] + 1
    assert tr.config["solver"]["method"] == "md" and tr.config["solver"]["schedule"] == "loss_normalized"


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(step_size=0.0, n_steps=5), r"step_size must be a positive finite number \(e\.g\. step_size=0\.1\)"),
        (dict(step_size=float("nan"), n_steps=5), "step_size must be a positive finite"),
        (dict(step_size=-1, n_steps=5), "step_size must be a positive"),
        (dict(step_size=0.1, n_steps=5, schedule="adaptive"), "schedule must be one of"),
        (dict(step_size=0.1, n_steps=5, variant="eg"), "hyperbolic entropy potential only"),
        (dict(step_size=0.1, n_steps=5, variant="egg"), "variant must be one of"),
        (dict(step_size=0.1), "give a stopping rule: n_steps"),
        (dict(step_size=0.1, n_steps=0), r"n_steps must be an integer ≥ 1 \(e\.g\. n_steps=1000\)"),
        (dict(step_size=0.1, n_steps=2.5), "n_steps must be an integer ≥ 1"),
        (dict(step_size=0.1, n_steps="5"), "n_steps must be an integer ≥ 1"),
        (dict(step_size=0.1, log_t_end=1.0, log_t_start="-3"), "log_t_start must be a finite number"),
        (dict(step_size=0.1, log_t_end=float("inf")), "log_t_end must be finite"),
        (dict(step_size=0.1, n_steps=5, n_save=1), "n_save must be an integer ≥ 2"),
        (dict(step_size=0.1, n_steps=5, theta0=np.zeros(4)), r"theta0 must have shape \(3,\)"),
        (dict(step_size=0.1, n_steps=5, rollback=True, step_growth=0.5), "step_growth must be ≥ 1"),
        (dict(step_size=0.1, log_t_end=1.0, log_t_start=2.0), "must be below log_t_end"),
        (dict(step_size=0.1, n_steps=5, log_t_start=-2.0), "needs log_t_end"),  # (was silently ignored)
    ],
)
def test_bad_inputs_raise_with_fix_in_message(kwargs, match):
    data = random_separable(n=6, d=3, seed=0)
    with pytest.raises(InvalidParameterError, match=match):
        mirror_descent(Linear(3), data, "euclidean", **kwargs)


def test_data_dimension_mismatch():
    with pytest.raises(InvalidDataError, match="input_dim = 4"):
        mirror_descent(Linear(4), random_separable(n=6, d=3), step_size=0.1, n_steps=2)


# ---------------------------------------------------------------- CLI: run --method md, compare
_SMALL_TOML = """
[experiment]
name = "md-small"
[data]
name = "iris"
a = 0
b = 1
[model]
name = "linear"
[[potentials]]
name = "euclidean"
label = "gradient flow"
[[potentials]]
name = "hyperbolic_entropy"
beta = 0.5
[init]
scale = 0.0
[horizon]
log_t_end = 6.0
n_save = 30
"""


def test_cli_run_method_md_and_compare(tmp_path, capsys):
    from flowsim.errors import ConfigError
    from flowsim.lab.cli import main
    from flowsim.lab.config import validate_config

    cfg = tmp_path / "small.toml"
    cfg.write_text(_SMALL_TOML)
    rc = main(
        [
            "run",
            "--config",
            str(cfg),
            "--method",
            "md",
            "--step-size",
            "0.2",
            "--schedule",
            "loss_normalized",
            "--out",
            str(tmp_path / "run"),
            "--no-progress",
        ]
    )
    assert rc == 0
    tr = Trajectory.load(tmp_path / "run" / "gradient_flow")
    assert tr.config["solver"]["method"] == "md" and tr.config["solver"]["schedule"] == "loss_normalized"
    assert tr.log_t[-1] == pytest.approx(6.0)
    rc = main(
        [
            "compare",
            "--config",
            str(cfg),
            "--step-size",
            "0.2",
            "--schedule",
            "sup_normalized",
            "--out",
            str(tmp_path / "cmp"),
            "--no-progress",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "direction_cosine" in text and "normalized_margin_diff" in text
    assert (tmp_path / "cmp" / "compare.csv").exists() and (tmp_path / "cmp" / "compare_gradient_flow.png").exists()
    rows = (tmp_path / "cmp" / "compare.csv").read_text().splitlines()
    cosines = [float(r.split(",")[2]) for r in rows[1:]]
    assert min(cosines) > 0.99
    # errors: md without step size, md options without --method md
    assert main(["run", "--config", str(cfg), "--method", "md", "--no-progress"]) == 2
    assert "needs step_size" in capsys.readouterr().err
    assert main(["run", "--config", str(cfg), "--step-size", "0.1", "--no-progress"]) == 2
    assert "need --method md" in capsys.readouterr().err
    assert main(["compare", "--config", str(cfg)]) == 2
    assert "--step-size" in capsys.readouterr().err
    base = {"data": {"name": "iris"}, "model": {"name": "linear"}, "potentials": [{"name": "euclidean"}]}
    with pytest.raises(ConfigError, match="schedule must be one of"):
        validate_config({**base, "solver": {"method": "md", "step_size": 0.1, "schedule": "fast"}})
    with pytest.raises(ConfigError, match='apply to method = "md"'):
        validate_config({**base, "solver": {"step_size": 0.1}})
