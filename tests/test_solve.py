"""End-to-end tests of simulate(): closed forms, invariants, asymptotics against independent references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import flowsim.flow as flow_module
from flowsim import simulate
from flowsim.analysis.references import max_margin_l1, max_margin_lp, svm_l2
from flowsim.data import make_dataset
from flowsim.errors import FlowSimError, HorizonError, InvalidParameterError
from flowsim.losses import get_loss
from flowsim.models import DiagonalLinear, Linear, TwoLayerReLU, TwoLayerReLUPower
from flowsim.potentials import Euclidean, HyperbolicEntropy, PPower, SmoothedHomogeneous
from flowsim.results.trajectory import Status, Trajectory

from .problems import random_separable, single_point


# ---------------------------------------------------------------- C1: closed form, incl. log t = 1000
@pytest.mark.parametrize("time", ["log", "linear"])
def test_c1_single_point_closed_form(time):
    x = np.array([0.6, -0.3, 0.9])
    data = single_point(x, y=-1.0)
    theta0 = np.array([0.2, 0.1, -0.4])
    u0 = -1.0 * x @ theta0
    if time == "log":
        log_ts = np.array([np.log(1e3), np.log(1e10), np.log(1e30), 1000.0])
    else:
        log_ts = np.array([np.log(1.0), np.log(1e3), np.log(1e10)])
    tr = simulate(Linear(3), data, Euclidean(), theta0=theta0, save_log_t=log_ts, time=time, rtol=1e-11, atol=1e-13)
    assert tr.status == Status.SUCCESS, tr.message
    u = -1.0 * tr.theta[1:] @ x
    u_exact = np.logaddexp(u0, np.log(x @ x) + log_ts)  # u(t) = log(e^{u0} + ‖x‖² t)
    np.testing.assert_allclose(u, u_exact, rtol=1e-9)
    np.testing.assert_allclose(tr.log_t[1:], log_ts, rtol=1e-14)
    # the loss is finite in log-space at t = e^1000 where L ≈ e^{-1000} underflows
    if time == "log":
        assert np.isfinite(tr.diagnostics["log_loss"][-1])
        np.testing.assert_allclose(tr.diagnostics["log_loss"][-1], -u_exact[-1], rtol=1e-9)
        assert tr.stats["nfe"] < 4000  # dopri5 is stability-limited to dt ≈ 3.3 in log-time


# ---------------------------------------------------------------- C4: the loss decreases
@pytest.mark.parametrize("potential", [Euclidean(), HyperbolicEntropy(0.1), PPower(3.0), SmoothedHomogeneous(3.0, 0.1)])
def test_c4_loss_decreases_and_field_is_descent(potential):
    data = random_separable(n=15, d=4, seed=1)
    model = TwoLayerReLUPower(4, 5, power=2)
    tr = simulate(model, data, potential, log_t_end=6.0, n_save=40, init_scale=0.5, rtol=1e-9, atol=1e-11)
    assert tr.success, tr.message
    assert np.all(np.diff(tr.diagnostics["log_loss"]) <= 1e-9)
    # dL/dt = −∇Lᵀ (∇²Φ)⁻¹ ∇L ≤ 0 at random states, computed directly with autograd
    loss = get_loss("exponential")
    gen = torch.Generator().manual_seed(3)
    for _ in range(5):
        th = torch.randn(model.num_params, generator=gen, dtype=torch.float64).requires_grad_(True)
        L = torch.exp(loss.log_value(data.y * model.forward(th, data.X)))
        (g,) = torch.autograd.grad(L, th)
        dLdt = -(g * potential.inverse_hessian_action(th.detach(), g)).sum()
        assert dLdt <= 0


# ---------------------------------------------------------------- C6: diagonal network = hyperbolic entropy
def test_c6_diagonal_network_equals_hyperbolic_entropy():
    data = random_separable(n=10, d=4, seed=2)
    alpha = 0.3
    d = 4
    log_ts = np.linspace(-2.0, 8.0, 21)
    theta0 = np.concatenate([alpha * np.ones(d), np.zeros(d)])
    diag = simulate(
        DiagonalLinear(d, depth=2),
        data,
        Euclidean(),
        theta0=theta0,
        save_log_t=log_ts,
        rtol=1e-12,
        atol=1e-14,
    )
    # ∇Φ(θ) = ½ asinh(2θ/α²): hyperbolic entropy with β = α²/2 run at twice the time
    he = simulate(
        Linear(d),
        data,
        HyperbolicEntropy(alpha**2 / 2),
        theta0=np.zeros(d),
        save_log_t=log_ts + np.log(2.0),
        rtol=1e-12,
        atol=1e-14,
    )
    w_diag = diag.theta[:, :d] * diag.theta[:, d:]
    np.testing.assert_allclose(w_diag, he.theta, rtol=1e-9, atol=1e-10)


# ---------------------------------------------------------------- C10: gradient flow → ℓ2 SVM with offsets
def test_c10_gradient_flow_svm_rates_and_offsets():
    data = random_separable(n=8, d=3, seed=4)
    svm = svm_l2(data.Z.numpy())
    tr = simulate(
        Linear(3),
        data,
        Euclidean(),
        theta0=np.zeros(3),
        save_log_t=[10.0, 40.0, 80.0],
        rtol=1e-12,
        atol=1e-14,
    )
    assert tr.success
    w = tr.theta[-1]
    log_t = tr.log_t[-1]
    cos = tr.theta[1:] @ svm.w / np.linalg.norm(tr.theta[1:], axis=1) / np.linalg.norm(svm.w)
    # the direction converges only like 1/log t (Soudry et al. 2018): w(t) = ŵ log t + w̃ + o(1)
    assert np.all(np.diff(cos) > 0) and 1 - cos[-1] < 1e-3
    # t·L(w(t)) → ‖ŵ‖² = Σ α_n
    t_loss = np.exp(tr.diagnostics["log_t_loss"])
    np.testing.assert_allclose(t_loss[-1], np.sum(svm.dual), rtol=1e-4)
    assert abs(t_loss[-1] - svm.dual.sum()) < abs(t_loss[1] - svm.dual.sum())
    # offsets on the support vectors: ⟨z_n, w(t) − ŵ log t⟩ → −log α_n
    Z = data.Z.numpy()
    sv = svm.support
    offs = Z[sv] @ (w - svm.w * log_t)
    np.testing.assert_allclose(offs, -np.log(svm.dual[sv]), atol=1e-5)


# ---------------------------------------------------------------- C11 / C12: direction trends
def _lp_margin(w, Z, p):
    return np.min(Z @ w) / np.linalg.norm(w, ord=p)


@pytest.mark.parametrize("p", [1.5, 3.0])
def test_c11_p_power_direction_trend(p):
    data = random_separable(n=10, d=4, seed=5)
    Z = data.Z.numpy()
    ref = max_margin_lp(Z, p)
    tr = simulate(
        Linear(4),
        data,
        PPower(p),
        theta0=np.zeros(4),
        save_log_t=[2.0, 10.0, 40.0, 160.0],
        rtol=1e-10,
        atol=1e-12,
    )
    assert tr.success, tr.message
    ratios = np.array([_lp_margin(w, Z, p) / ref.margin for w in tr.theta[1:]])
    assert np.all(np.diff(ratios) > 0)
    assert ratios[-1] > 0.97 and ratios[-1] <= 1 + 1e-9
    cos = [w @ ref.w / np.linalg.norm(w) / np.linalg.norm(ref.w) for w in tr.theta[1:]]
    assert cos[-1] > cos[0]


def test_c12_hyperbolic_entropy_l1_trend_and_beta_dependence():
    data = random_separable(n=10, d=5, seed=6)
    Z = data.Z.numpy()
    ref = max_margin_l1(Z)
    ref2 = svm_l2(Z)
    log_ts = [2.0, 10.0, 30.0, 100.0]
    ratios = {}
    for beta in (1e-2, 1.0):
        tr = simulate(
            Linear(5),
            data,
            HyperbolicEntropy(beta),
            theta0=np.zeros(5),
            save_log_t=log_ts,
            rtol=1e-10,
            atol=1e-12,
        )
        assert tr.success
        ratios[beta] = np.array([_lp_margin(w, Z, 1) / ref.margin for w in tr.theta[1:]])
        assert ratios[beta][-1] > ratios[beta][0]
        assert np.all(ratios[beta] <= 1 + 1e-9)
    # small β reaches the ℓ1 geometry much earlier than large β (which starts near the ℓ2 direction)
    assert ratios[1e-2][1] > ratios[1.0][1]
    # with large β the early direction is close to gradient flow's (ℓ2 SVM)
    tr_gf = simulate(Linear(5), data, Euclidean(), theta0=np.zeros(5), save_log_t=log_ts[:2])
    tr_he = simulate(Linear(5), data, HyperbolicEntropy(100.0), theta0=np.zeros(5), save_log_t=log_ts[:2])
    c = tr_he.theta[-1] @ tr_gf.theta[-1] / np.linalg.norm(tr_he.theta[-1]) / np.linalg.norm(tr_gf.theta[-1])
    assert c > 0.999
    assert ref2.margin > 0


# ---------------------------------------------------------------- statuses, interrupt, errors
def test_interrupt_returns_and_saves_partial(tmp_path, monkeypatch):
    original = flow_module.MirrorFlowField.__call__
    calls = {"n": 0}

    def interrupting(self, tau, z):
        calls["n"] += 1
        if calls["n"] == 300:
            raise KeyboardInterrupt
        return original(self, tau, z)

    monkeypatch.setattr(flow_module.MirrorFlowField, "__call__", interrupting)
    data = random_separable(n=10, d=3, seed=7)
    out = tmp_path / "run"
    tr = simulate(TwoLayerReLU(3, 4), data, Euclidean(), log_t_end=30.0, n_save=200, rtol=1e-10, out=out, kinks="naive")
    assert tr.status == Status.INTERRUPTED
    assert "interrupted" in tr.message.lower()
    assert 1 < len(tr) < 201
    assert tr.stats["nfe"] == 299
    loaded = Trajectory.load(out)
    assert loaded.status == Status.INTERRUPTED
    np.testing.assert_array_equal(loaded.theta, tr.theta)
    np.testing.assert_array_equal(loaded.diagnostics["normalized_margin"], tr.diagnostics["normalized_margin"])


def test_max_steps_status_keeps_partial():
    data = random_separable(n=10, d=3, seed=8)
    tr = simulate(Linear(3), data, Euclidean(), log_t_end=50.0, max_steps=20)
    assert tr.status == Status.MAX_STEPS
    assert "max_steps" in tr.message
    assert len(tr) >= 2 and tr.s[-1] > 0


def test_save_load_roundtrip(tmp_path):
    data = random_separable(n=10, d=3, seed=9)
    tr = simulate(TwoLayerReLU(3, 4), data, HyperbolicEntropy(0.5), log_t_end=3.0, n_save=10)
    tr.save(tmp_path / "t")
    back = Trajectory.load(tmp_path / "t")
    np.testing.assert_array_equal(back.s, tr.s)
    np.testing.assert_array_equal(back.z, tr.z)
    assert back.config["potential"] == {"name": "hyperbolic_entropy", "beta": 0.5}
    assert set(back.diagnostics) == set(tr.diagnostics)
    assert back.stats["nfe"] == tr.stats["nfe"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"save_log_t": [1.0, 3.0, 2.0]}, "strictly increasing"),
        ({"save_log_t": [1.0, 1.0]}, "strictly increasing"),
        ({"log_t_end": float("nan")}, "finite"),
        ({"log_t_end": 100.0, "time": "linear"}, "time='log'"),
        ({"log_t_end": 5.0, "log_t_start": 6.0}, "increasing"),
    ],
)
def test_bad_horizon_raises(kwargs, match):
    data = random_separable(n=6, d=2, seed=0)
    with pytest.raises(HorizonError, match=match) as info:
        simulate(Linear(2), data, Euclidean(), **kwargs)
    assert isinstance(info.value, FlowSimError)


def test_bad_solver_arguments_raise():
    data = random_separable(n=6, d=2, seed=0)
    with pytest.raises(InvalidParameterError, match="adaptive"):
        simulate(Linear(2), data, Euclidean(), method="rk4")
    with pytest.raises(InvalidParameterError, match="rtol"):
        simulate(Linear(2), data, Euclidean(), rtol=-1.0)
    with pytest.raises(InvalidParameterError, match="theta0"):
        simulate(Linear(2), data, Euclidean(), theta0=np.zeros(3))


def test_dataset_dimension_mismatch_raises():
    data = make_dataset(np.ones((3, 2)) * [[1, 0.5]], np.array([1.0, 1.0, 1.0]))
    with pytest.raises(FlowSimError, match="input_dim"):
        simulate(Linear(3), data, Euclidean())


def test_start_near_convergence_does_not_overflow_first_step():
    # torchdiffeq's initial-step heuristic takes a trial step ~0.01‖z‖/‖f‖, huge when L ≈ e^-9; in log-time
    # the field then overflows at the trial point and the step size came back as 0 (status nonfinite).
    data = random_separable(n=12, d=3, seed=0)
    w = 9.0 * svm_l2(data.Z.numpy()).w
    tr = simulate(Linear(3), data, Euclidean(), theta0=w, log_t_end=30.0, n_save=20)
    assert tr.success, tr.message
    assert tr.stats["n_nonfinite_evals"] == 0
    assert np.all(np.diff(tr.diagnostics["log_loss"]) < 0)


def test_interrupt_under_filippov_driver_returns_and_saves_partial(tmp_path, monkeypatch):
    # The Filippov driver evaluates fixed-pattern fields, not MirrorFlowField.__call__; both use loss_weights.
    original = flow_module.MirrorFlowField.loss_weights
    calls = {"n": 0}

    def interrupting(self, tau, q):
        calls["n"] += 1
        if calls["n"] == 400:
            raise KeyboardInterrupt
        return original(self, tau, q)

    monkeypatch.setattr(flow_module.MirrorFlowField, "loss_weights", interrupting)
    data = random_separable(n=10, d=3, seed=7)
    out = tmp_path / "run"
    tr = simulate(
        TwoLayerReLU(3, 4), data, Euclidean(), log_t_end=30.0, n_save=200, rtol=1e-10, out=out, kinks="filippov"
    )
    assert tr.config["solver"]["kinks"] == "filippov"
    assert tr.status == Status.INTERRUPTED
    assert 1 < len(tr) < 201
    loaded = Trajectory.load(out)
    assert loaded.status == Status.INTERRUPTED
    np.testing.assert_array_equal(loaded.theta, tr.theta)
