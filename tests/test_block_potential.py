"""BlockPotential: one potential per block of coordinates (per parameter tensor), checked against the plain
potentials, closed forms and hand-written numpy mirror-descent loops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flowsim import simulate
from flowsim.discrete import mirror_descent
from flowsim.errors import ConfigError, InvalidParameterError
from flowsim.lab.config import potential_from_table, validate_config
from flowsim.lab.vision import validate_vision_config
from flowsim.minibatch import minibatch_mirror_descent
from flowsim.models import TwoLayerReLU, VGGNet
from flowsim.potentials import (
    BlockPotential,
    Euclidean,
    HyperbolicEntropy,
    PPower,
    SmoothedHomogeneous,
    get_potential,
)
from tests.problems import random_separable


def _theta(p: int, seed: int = 0, scale: float = 2.0) -> torch.Tensor:
    return scale * torch.randn(p, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("plain", [HyperbolicEntropy(0.1), SmoothedHomogeneous(3.0, 0.5), PPower(3.0)])
def test_uniform_blocks_equal_the_plain_potential(plain):
    pot = BlockPotential([(3, plain), (slice(3, 7), type(plain)(**plain.params())), (5, plain)])
    a, b = _theta(12, 1), _theta(12, 2)
    for method in ("phi", "mirror_map", "inverse_mirror_map", "hessian_diag", "q_function", "q_excess"):
        assert torch.equal(getattr(pot, method)(a), getattr(plain, method)(a)), method
    assert torch.equal(pot.bregman_divergence(a, b), plain.bregman_divergence(a, b))
    assert torch.equal(pot.bregman_divergence(a, a + 1e-9), plain.bregman_divergence(a, a + 1e-9))
    assert pot.horizon == plain.horizon and pot.horizon_note is None


def test_uniform_blocks_simulate_identically():
    ds = random_separable(n=8, d=3, seed=3)
    model = TwoLayerReLU(3, 2)
    he = HyperbolicEntropy(0.5)
    pot = BlockPotential.per_tensor(model, {"W": he}, default=HyperbolicEntropy(0.5))
    kw = dict(log_t_end=1.5, n_save=6, init_scale=0.5, seed=1, threads=1)
    ref, tr = simulate(model, ds, he, **kw), simulate(model, ds, pot, **kw)
    assert ref.status.value == tr.status.value == "success"
    np.testing.assert_array_equal(tr.theta, ref.theta)


def test_mixed_blocks_flow_conserves_balance_and_reports_nan_q_margin():
    """HE on W, Euclidean on a: B_j = Σ_k Q_HE(w_jk) − Q_E(a_j) is conserved (rescaling symmetry); Q-margin nan."""
    ds = random_separable(n=8, d=3, seed=3)
    model = TwoLayerReLU(3, 2)
    pot = BlockPotential.per_tensor(model, {"W": HyperbolicEntropy(0.5)}, default=Euclidean())
    kw = dict(log_t_end=1.5, n_save=6, init_scale=0.5, seed=1, threads=1)
    tr = simulate(model, ds, pot, kinks="naive", rtol=1e-10, atol=1e-12, **kw)
    assert tr.status.value == "success"
    W, a = tr.theta[:, :6].reshape(-1, 2, 3), tr.theta[:, 6:]
    B = np.hypot(W, 0.5).sum(-1) - 0.5 * a**2  # Q_HE(x) = √(x² + β²), Q_E(x) = x²/2
    assert np.abs(B - B[0]).max() <= 1e-8 * np.abs(B).max()
    assert np.isnan(tr.diagnostics["q_margin"]).all() and np.isfinite(tr.diagnostics["normalized_margin"]).all()
    with pytest.raises(InvalidParameterError, match="kinks='naive'"):
        simulate(model, ds, pot, kinks="filippov", **kw)


def test_two_blocks_match_closed_forms():
    beta, p = 0.3, 3.0
    pot = BlockPotential([(4, HyperbolicEntropy(beta)), (3, PPower(p))])
    x = _theta(7, 4).reshape(1, 7).repeat(2, 1)  # leading dimensions are kept
    xn, he, pp = x.numpy(), slice(0, 4), slice(4, 7)
    z = pot.mirror_map(x).numpy()
    np.testing.assert_allclose(z[:, he], np.arcsinh(xn[:, he] / beta), rtol=1e-15)
    np.testing.assert_allclose(z[:, pp], np.sign(xn[:, pp]) * np.abs(xn[:, pp]) ** (p - 1), rtol=1e-15)
    np.testing.assert_allclose(pot.inverse_mirror_map(torch.as_tensor(z)).numpy(), xn, rtol=1e-14)
    hess = pot.hessian_diag(x).numpy()
    np.testing.assert_allclose(hess[:, he], 1 / np.hypot(xn[:, he], beta), rtol=1e-15)
    np.testing.assert_allclose(hess[:, pp], (p - 1) * np.abs(xn[:, pp]) ** (p - 2), rtol=1e-15)
    np.testing.assert_allclose(pot.inverse_hessian_diag(x).numpy(), 1 / hess, rtol=1e-15)
    np.testing.assert_allclose(pot.q_function(x).numpy()[:, he], np.hypot(xn[:, he], beta), rtol=1e-15)
    # Bregman divergence: the sum of the two potentials' closed forms
    y = _theta(7, 5)
    yn = y.numpy()

    def phi_he(t):
        return t * np.arcsinh(t / beta) - np.hypot(t, beta)

    d_he = phi_he(xn[0, he]) - phi_he(yn[he]) - np.arcsinh(yn[he] / beta) * (xn[0, he] - yn[he])
    ap, bp = np.abs(xn[0, pp]), yn[pp]
    d_pp = ap**p / p - np.abs(bp) ** p / p - np.sign(bp) * np.abs(bp) ** (p - 1) * (xn[0, pp] - bp)
    assert float(pot.bregman_divergence(x[0], y)) == pytest.approx(d_he.sum() + d_pp.sum(), rel=1e-13)
    # horizon: Σ |θ_k| over the HE block + (1 − 1/p) Σ |θ_k|^p over the p-power block; no single ℓp gauge
    hz = np.abs(xn[0, he]).sum() + (1 - 1 / p) * (np.abs(xn[0, pp]) ** p).sum()
    assert float(pot.horizon_function(x[0])) == pytest.approx(hz, rel=1e-14)
    h = pot.horizon
    assert h.name == "mixed" and math.isnan(h.alpha) and math.isnan(h.p) and math.isnan(float(h.function(x[0])))
    assert "different homogeneity" in pot.horizon_note
    same_alpha = BlockPotential([(2, Euclidean()), (2, get_potential("p_power_quadratic", p=1.5, lam=3.0))])
    assert same_alpha.horizon.alpha == 2.0 and math.isnan(same_alpha.horizon.coefficient)
    # float32 and params round trip
    assert pot.mirror_map(x.float()).dtype == torch.float32
    again = get_potential(pot.name, **pot.params())
    assert torch.equal(again.mirror_map(x), pot.mirror_map(x))


def test_mirror_descent_he_first_layer_matches_numpy():
    """HE(β) on W, Euclidean on a of a two-layer ReLU net: K steps equal a numpy mirror-descent loop."""
    ds = random_separable(n=10, d=3, seed=2)
    X, y = ds.X.numpy(), ds.y.numpy()
    m, d, beta, eta, K = 4, 3, 0.2, 0.05, 6
    model = TwoLayerReLU(d, m)
    pot = BlockPotential.per_tensor(model, {"W": HyperbolicEntropy(beta), "a": Euclidean()})
    tr = mirror_descent(model, ds, pot, step_size=eta, n_steps=K, n_save=K + 1, init_scale=0.8, seed=3, threads=1)
    assert tr.success and len(tr) == K + 1
    W, a = tr.theta[0][: m * d].reshape(m, d).copy(), tr.theta[0][m * d :].copy()
    for k in range(1, K + 1):
        H = X @ W.T
        f = np.maximum(H, 0) @ a
        c = -y * np.exp(-y * f)  # dL/df for L = Σ exp(−y f)
        gW = (c[:, None] * (H > 0) * a[None, :]).T @ X
        ga = np.maximum(H, 0).T @ c
        W = beta * np.sinh(np.arcsinh(W / beta) - eta * gW)
        a = a - eta * ga
        np.testing.assert_allclose(tr.theta[k], np.concatenate([W.ravel(), a]), rtol=1e-12, atol=1e-15)


def test_minibatch_vgg_per_tensor_first_layer_he_step():
    model = VGGNet((1, 4, 4), [2, "M"], num_classes=3)
    gen = torch.Generator().manual_seed(0)
    X = torch.rand(9, 16, generator=gen, dtype=torch.float64)
    y = torch.arange(9) % 3
    beta, eta = 0.05, 0.01
    pot = BlockPotential.per_tensor(model, {"conv1": HyperbolicEntropy(beta)}, default=Euclidean())
    theta0 = model.init(scale=1.0, seed=2)
    res = minibatch_mirror_descent(model, X, y, pot, loss="cross_entropy", step_size=eta, epochs=1, theta0=theta0)
    th = theta0.clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(model.forward(th, X), y, reduction="sum")
    (g,) = torch.autograd.grad(loss, th)
    conv = model.layer_slices()["conv1"]
    expect = theta0 - eta * g
    expect[conv] = beta * torch.sinh(torch.asinh(theta0[conv] / beta) - eta * g[conv])
    torch.testing.assert_close(res.theta, expect, rtol=1e-12, atol=1e-15)
    assert not torch.allclose(res.theta[conv], (theta0 - eta * g)[conv], rtol=1e-3)  # HE differs from GD there
    assert res.config["potential"]["blocks"][0] == {"size": 18, "name": "hyperbolic_entropy", "beta": beta,
                                                    "tensor": "conv1"}  # fmt: skip


def test_bad_blocks_are_refused():
    with pytest.raises(InvalidParameterError, match="non-empty list"):
        BlockPotential([])
    with pytest.raises(InvalidParameterError, match="needs a potential"):
        BlockPotential([(3, "euclidean")])
    with pytest.raises(InvalidParameterError, match="size ≥ 1"):
        BlockPotential([(0, Euclidean())])
    with pytest.raises(InvalidParameterError, match="without a potential"):
        BlockPotential([(slice(0, 2), Euclidean()), (slice(3, 5), Euclidean())])
    with pytest.raises(InvalidParameterError, match="overlaps"):
        BlockPotential([(slice(0, 3), Euclidean()), (slice(2, 5), PPower(3.0))])
    with pytest.raises(InvalidParameterError, match="nested"):
        BlockPotential([(2, BlockPotential([(2, Euclidean())]))])
    with pytest.raises(InvalidParameterError, match="needs 'size'"):
        get_potential("blocks", blocks=[{"name": "euclidean"}])
    with pytest.raises(InvalidParameterError, match="exactly one parameter"):
        get_potential("blocks", blocks=[{"size": 2, "name": "euclidean"}], beta=1.0)
    pot = BlockPotential([(2, Euclidean()), (2, PPower(3.0))])
    with pytest.raises(InvalidParameterError, match="last dimension P = 4"):
        pot.mirror_map(torch.zeros(3, dtype=torch.float64))
    model = TwoLayerReLU(3, 2)
    with pytest.raises(InvalidParameterError, match=r"no tensor\(s\) \['conv1'\].*\['W', 'a'\]"):
        BlockPotential.per_tensor(model, {"conv1": Euclidean()})
    with pytest.raises(InvalidParameterError, match=r"no potential for tensor\(s\) \['a'\].*default="):
        BlockPotential.per_tensor(model, {"W": Euclidean()})


def test_config_tables():
    model = VGGNet((1, 8, 8), [4, "M"], num_classes=3)
    table = {"name": "per_tensor", "label": "HE conv1", "step_size": 1e-3,
             "blocks": {"conv1": {"name": "he", "beta": 0.1}}, "default": {"name": "euclidean"}}  # fmt: skip
    pot = potential_from_table(table, model=model)
    assert [b[3] for b in pot.blocks] == ["conv1", "head"] and pot.size == model.num_params
    with pytest.raises(ConfigError, match=r"no tensor\(s\) \['conv9'\].*\['conv1', 'head'\]"):
        potential_from_table({**table, "blocks": {"conv9": {"name": "euclidean"}}}, model=model)
    with pytest.raises(ConfigError, match="block 'conv1'.*does not take lam"):
        potential_from_table({**table, "blocks": {"conv1": {"name": "he", "beta": 0.1, "lam": 1}}}, model=model)
    sizes = {"name": "blocks", "blocks": [{"size": 36, "name": "he", "beta": 0.1}, {"size": 100, "name": "euclidean"}]}
    with pytest.raises(ConfigError, match=f"add up to 136, but the model has {model.num_params}"):
        potential_from_table(sizes, model=model)
    vision = {"experiment": {"kind": "vision"}, "potentials": [{**table, "blocks": [1, 2]}]}
    with pytest.raises(ConfigError, match="table of tensor name"):
        validate_vision_config(vision)
    base = {"data": {"name": "xor"}, "model": {"name": "two_layer_relu", "width": 2}}
    cfg = validate_config({**base, "potentials": [sizes]})
    from flowsim.lab.config import is_sweep, sweep_members

    assert not is_sweep(cfg) and sweep_members(cfg)[0]["potential"]["blocks"] == sizes["blocks"]
    with pytest.raises(ConfigError, match="for vision configurations.*name = 'blocks'"):
        validate_config({**base, "potentials": [table]})


def test_run_vision_with_a_per_tensor_potential(tmp_path):
    from flowsim.lab.vision import run_vision

    table = {"name": "per_tensor", "label": "HE conv1", "blocks": {"conv1": {"name": "he", "beta": 0.1}},
             "default": {"name": "euclidean"}}  # fmt: skip
    cfg = validate_vision_config({
        "experiment": {"kind": "vision", "name": "tiny", "description": "tiny"},
        "data": {"name": "digits10", "train_limit": 60},
        "model": {"name": "vgg_cnn", "layers": [2, "M"]},
        "potentials": [table],
        "training": {"step_size": 1e-4, "batch_size": 30, "epochs": 1, "loss": "cross_entropy"},
    })  # fmt: skip
    run = run_vision(cfg, tmp_path / "out")["runs"]["HE conv1"]
    assert math.isnan(run["margins"]["q_margin"]) and "different homogeneity" in run["q_margin_note"]
    assert math.isfinite(run["margins"]["normalized_margin"]) and run["epochs"] == 1
