"""Rate fits (flowsim.analysis.rates) recover known exponents: C10 (linear, gradient flow) and C14 (Lyu & Li)."""

from __future__ import annotations

import numpy as np
import pytest

from flowsim import simulate
from flowsim.analysis.rates import fit_loss_rate, fit_margin_gap, fit_norm_growth
from flowsim.analysis.references import svm_l2
from flowsim.data import load_dataset
from flowsim.errors import InvalidParameterError
from flowsim.models import Linear, TwoLayerReLU
from flowsim.potentials import Euclidean

from .problems import random_separable


def test_fits_recover_synthetic_exponents_with_confidence():
    lt = np.logspace(1, 5, 80)
    log_loss = 0.3 - 1.0 * lt - 1.5 * np.log(lt)
    f = fit_loss_rate(lt, log_loss)
    assert f.within("a", -1.0, 1e-10) and f.within("b", -1.5, 1e-8) and f.r2 > 1 - 1e-12
    assert f.ci95["b"][0] <= f["b"] <= f.ci95["b"][1] and f.n == 80
    g = fit_norm_growth(lt, 2.0 * lt**0.25, (1e2, 1e4))
    assert g.within("gamma", 0.25, 1e-10) and g.window == (1e2, 1e4)
    m = fit_margin_gap(lt, 0.7 - 0.2 * lt**-0.8)
    assert m.within("limit", 0.7, 1e-8) and m.within("kappa", 0.8, 1e-6)
    m2 = fit_margin_gap(lt, 0.7 - 0.2 * lt**-0.8, limit=0.7)
    assert m2.within("kappa", 0.8, 1e-10)
    assert "R²" in str(m2)


def test_fit_errors():
    with pytest.raises(InvalidParameterError, match="more than"):
        fit_loss_rate(np.array([10.0, 20.0]), np.array([-10.0, -20.0]))
    with pytest.raises(InvalidParameterError, match="lo < hi"):
        fit_norm_growth(np.array([10.0, 20.0]), np.ones(2), (5.0, 1.0))
    with pytest.raises(InvalidParameterError, match="shape"):
        fit_norm_growth(np.array([10.0, 20.0]), np.ones(3))


def test_c10_gradient_flow_linear_rates():
    """C10: t·L → Σα_n (loss exponent −1, no log correction), ‖w‖ ~ log t (γ = 1). Window log t ∈ [1e3, 1e4]."""
    data = random_separable(n=8, d=3, seed=4)
    tr = simulate(
        Linear(3),
        data,
        Euclidean(),
        theta0=np.zeros(3),
        save_log_t=np.logspace(0, 4, 120),
        method="radau",
        rtol=1e-10,
        atol=1e-12,
    )
    assert tr.success
    d = tr.diagnostics
    win = (1e3, 1e4)
    f = fit_loss_rate(tr.log_t, d["log_loss"], win)
    assert f.within("a", -1.0, 1e-9) and f.within("b", 0.0, 1e-6), f
    svm = svm_l2(data.Z.numpy())
    np.testing.assert_allclose(np.exp(f["c"]), svm.dual.sum(), rtol=1e-6)  # t·L → Σ α_n
    g = fit_norm_growth(tr.log_t, d["l2_norm"], win)
    assert g.within("gamma", 1.0, 1e-3), g


def test_c14_lyu_li_rates_two_layer_relu():
    """C14, L = 2: L ~ 1/(t (log t)^{2−2/L}) = 1/(t log t), ‖θ‖ ~ (log t)^{1/2}, smoothed margin non-decreasing.

    Window log t ∈ [1e3, 1e6] (radau, rtol 1e-10): measured b = −0.9989, γ = 0.4996; tolerances 0.005.
    """
    data = load_dataset("gaussian", n=20, d=2, separation=3.0, seed=0)
    save = np.concatenate([np.linspace(-2.0, 2.0, 15), np.logspace(np.log10(2.5), 6, 100)])
    tr = simulate(
        TwoLayerReLU(2, 3),
        data,
        Euclidean(),
        save_log_t=save,
        method="radau",
        rtol=1e-10,
        atol=1e-12,
        init_scale=0.3,
        seed=0,
        kinks="naive",
    )
    assert tr.success, tr.message
    d = tr.diagnostics
    win = (1e3, 1e6)
    f = fit_loss_rate(tr.log_t, d["log_loss"], win)
    assert f.within("a", -1.0, 1e-6) and f.within("b", -(2 - 2 / 2), 5e-3), f
    g = fit_norm_growth(tr.log_t, d["l2_norm"], win)
    assert g.within("gamma", 0.5, 5e-3), g
    small = d["log_loss"] < 0  # L < ℓ(0) = 1
    assert np.min(np.diff(d["smoothed_margin"][small])) > -1e-9
    assert abs(d["normalized_margin"][-1] - d["smoothed_margin"][-1]) < 1e-4
    m = fit_margin_gap(tr.log_t, d["normalized_margin"], win)
    assert m["kappa"] > 0.5 and m.r2 > 0.999


def test_fitted_margin_limit_is_not_below_the_margins_seen():
    """Hyperbolic-entropy flow on a linear model: its ℓ1 q-margin rises monotonically over log t ∈ [1e2, 1e6] towards
    the ℓ1 max margin (LP reference), slowly (coordinates off the support decay like (log t)^−(1−|g_k|)). The
    unconstrained fit put the limit at 0.114367, below the last margin 0.114429, although the model's margin stays
    below its limit; the limit is now bounded below by the largest margin, and stays below the LP's max margin."""
    from flowsim.analysis.references import max_margin_l1
    from flowsim.data import make_dataset
    from flowsim.potentials import HyperbolicEntropy

    rng = np.random.default_rng(0)
    n, d = 8, 12
    w0 = np.zeros(d)
    w0[:2] = [1.0, -0.6]
    X = rng.standard_normal((n * 3, d))
    X = X[np.abs(X @ w0) > 0.1][:n]
    y = np.sign(X @ w0)
    X = X / np.linalg.norm(X, axis=1).max()
    tr = simulate(
        Linear(d), make_dataset(X, y), HyperbolicEntropy(0.1), theta0=np.zeros(d), save_log_t=np.logspace(0, 6, 25),
        method="radau", rtol=1e-9, atol=1e-12, threads=1,
    )  # fmt: skip
    lt, qm = tr.log_t, tr.diagnostics["q_margin"]
    inside = (lt >= 1e2) & (lt <= 1e6)
    assert np.all(np.diff(qm[inside]) > 0)
    fit = fit_margin_gap(lt, qm, window=(1e2, 1e6))
    assert qm[inside].max() <= fit.params["limit"] <= max_margin_l1(y[:, None] * X).margin
