"""Tests of flowsim.models: homogeneity, Euler identity, layouts, init, symmetries, errors (CASES C3, C7)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from flowsim.errors import InvalidDataError, InvalidParameterError
from flowsim.models import (
    MODELS,
    AbstractModel,
    AbstractPiecewiseLinearTwoLayer,
    AbstractTwoLayer,
    DeepLinear,
    DeepReLU,
    DiagonalLinear,
    Linear,
    TwoLayerLeakyReLU,
    TwoLayerReLU,
    TwoLayerReLUPower,
    get_model,
)

D = 4
N = 7

CASES = [
    ("linear", {"input_dim": D}, 1),
    ("diagonal_linear", {"input_dim": D}, 2),
    ("diagonal_linear", {"input_dim": D, "depth": 3, "init_mode": "gaussian"}, 3),
    ("deep_linear", {"input_dim": D, "widths": [3, 5]}, 3),
    ("two_layer_relu", {"input_dim": D, "width": 6}, 2),
    ("two_layer_leaky_relu", {"input_dim": D, "width": 6, "negative_slope": 0.2}, 2),
    ("two_layer_relu_power", {"input_dim": D, "width": 6}, 3),
    ("two_layer_relu_power", {"input_dim": D, "width": 6, "power": 3}, 4),
    ("deep_relu", {"input_dim": D, "widths": [5, 3]}, 3),
]
IDS = [f"{name}-{i}" for i, (name, _, _) in enumerate(CASES)]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _theta(model: AbstractModel, seed: int = 1, batch: tuple[int, ...] = ()) -> torch.Tensor:
    return torch.randn(*batch, model.num_params, generator=_gen(seed), dtype=torch.float64)


def _data(seed: int = 2, n: int = N, d: int = D) -> torch.Tensor:
    return torch.randn(n, d, generator=_gen(seed), dtype=torch.float64)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


@pytest.fixture(params=CASES, ids=IDS)
def case(request):
    name, kwargs, degree = request.param
    return get_model(name, **kwargs), degree


# ---------------------------------------------------------------------------------------------------------
# C3: homogeneity and Euler's identity
# ---------------------------------------------------------------------------------------------------------


def test_degree_and_registry(case):
    model, degree = case
    assert model.degree == degree
    assert MODELS[model.name] is type(model)
    assert model.has_kinks == isinstance(model, (TwoLayerReLU, TwoLayerLeakyReLU, DeepReLU))


@pytest.mark.parametrize("c", [0.3, 2.7])
def test_homogeneity(case, c):
    model, degree = case
    theta, X = _theta(model), _data()
    f = model.forward(theta, X)
    assert f.shape == (N,) and f.dtype == torch.float64
    assert _rel(model.forward(c * theta, X), c**degree * f) < 1e-12


def test_euler_identity(case):
    model, degree = case
    theta, X = _theta(model), _data()
    J = torch.autograd.functional.jacobian(lambda th: model.forward(th, X), theta)  # (n, p)
    assert J.shape == (N, model.num_params)
    lhs = J @ theta
    rhs = degree * model.forward(theta, X)
    scale = (J.abs() @ theta.abs()).clamp_min(1e-300)
    assert torch.all((lhs - rhs).abs() <= 1e-10 * scale)


# ---------------------------------------------------------------------------------------------------------
# layout
# ---------------------------------------------------------------------------------------------------------


def test_flatten_unflatten_roundtrip(case):
    model, _ = case
    theta = _theta(model)
    params = model.unflatten(theta)
    assert list(params) == list(model.param_shapes())
    for key, shape in model.param_shapes().items():
        assert params[key].shape == shape
        assert torch.equal(params[key].reshape(-1), theta[model.layer_slices()[key]])
        assert params[key].data_ptr() == theta[model.layer_slices()[key]].data_ptr()  # a view
    assert sum(math.prod(s) for s in model.param_shapes().values()) == model.num_params
    assert torch.equal(model.flatten(params), theta)

    batch = _theta(model, batch=(3,))
    bparams = model.unflatten(batch)
    for key, shape in model.param_shapes().items():
        assert bparams[key].shape == (3, *shape)
        assert torch.equal(bparams[key][1], model.unflatten(batch[1])[key])
    assert torch.equal(model.flatten(bparams), batch)


def test_layer_slices_are_contiguous_and_ordered(case):
    model, _ = case
    slices = list(model.layer_slices().values())
    assert slices[0].start == 0 and slices[-1].stop == model.num_params
    for s, t in zip(slices[:-1], slices[1:], strict=True):
        assert s.stop == t.start


def test_batched_forward_matches_rows(case):
    model, _ = case
    X = _data()
    batch = _theta(model, batch=(3,))
    out = model.forward(batch, X)
    assert out.shape == (3, N)
    for k in range(3):
        torch.testing.assert_close(out[k], model.forward(batch[k], X), rtol=1e-13, atol=1e-14)
    out2 = model.forward(_theta(model, batch=(2, 3)), X)
    assert out2.shape == (2, 3, N)


def test_autograd_through_batched_forward(case):
    model, _ = case
    X = _data()
    batch = _theta(model, batch=(2,)).requires_grad_()
    (g,) = torch.autograd.grad(model.forward(batch, X).sum(), batch)
    for k in range(2):
        th = batch[k].detach().clone().requires_grad_()
        (gk,) = torch.autograd.grad(model.forward(th, X).sum(), th)
        torch.testing.assert_close(g[k], gk, rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------------------------------------------------
# init
# ---------------------------------------------------------------------------------------------------------


def _random_init_model(model: AbstractModel) -> AbstractModel:
    """Models whose init is random (DiagonalLinear's default init is deterministic)."""
    if isinstance(model, DiagonalLinear):
        return DiagonalLinear(model.input_dim, depth=model.depth, init_mode="gaussian")
    return model


def test_init_reproducible_and_seeded(case):
    model = _random_init_model(case[0])
    rng_state = torch.get_rng_state()
    a = model.init(seed=3)
    assert torch.equal(torch.get_rng_state(), rng_state)  # global RNG untouched
    assert a.shape == (model.num_params,) and a.dtype == torch.float64
    assert torch.equal(a, model.init(seed=3))
    assert not torch.equal(a, model.init(seed=4))
    assert torch.equal(model.init(), model.init(seed=0))
    assert torch.equal(model.init(generator=_gen(3)), a)
    torch.testing.assert_close(model.init(scale=2.5, seed=3), 2.5 * a, rtol=1e-15, atol=0)
    assert torch.equal(model.init(scale=0.0, seed=3), torch.zeros_like(a))
    f32 = model.init(seed=3, dtype=torch.float32)
    assert f32.dtype == torch.float32 and torch.equal(f32, a.float())


def test_init_generator_advances():
    model = TwoLayerReLU(3, 5)
    g = _gen(7)
    first, second = model.init(generator=g), model.init(generator=g)
    assert not torch.equal(first, second)


def test_two_layer_init_variances():
    d, m = 50, 400
    params = TwoLayerReLU(d, m).unflatten(TwoLayerReLU(d, m).init(scale=2.0, seed=11))
    assert abs(params["W"].std().item() - 2.0 / math.sqrt(d)) < 0.05 * 2.0 / math.sqrt(d)
    assert abs(params["a"].std().item() - 2.0 / math.sqrt(m)) < 0.15 * 2.0 / math.sqrt(m)


def test_deep_init_fan_in():
    model = DeepReLU(40, [300, 200])
    params = model.unflatten(model.init(seed=5))
    for key, shape in model.param_shapes().items():
        if shape[0] > 1:
            assert abs(params[key].std().item() - 1 / math.sqrt(shape[1])) < 0.05 / math.sqrt(shape[1])


def test_diagonal_init_modes():
    alpha = 0.3
    u = DiagonalLinear(5).unflatten(DiagonalLinear(5).init(scale=alpha))
    assert torch.all(u["u1"] == alpha) and torch.all(u["u2"] == alpha)
    m = DiagonalLinear(5, init_mode="zero_last")
    u = m.unflatten(m.init(scale=alpha))
    assert torch.all(u["u1"] == alpha) and torch.all(u["u2"] == 0)  # CASES C6: u0 = α·1, v0 = 0
    torch.testing.assert_close(
        m.neuron_balance(m.init(scale=alpha), torch.square), torch.full((5,), alpha**2, dtype=torch.float64)
    )
    m3 = DiagonalLinear(5, depth=3, init_mode="zero_last")
    u = m3.unflatten(m3.init(scale=alpha))
    assert torch.all(u["u2"] == alpha) and torch.all(u["u3"] == 0)


# ---------------------------------------------------------------------------------------------------------
# C7: neuron groups, rescaling symmetry, balance
# ---------------------------------------------------------------------------------------------------------


def test_neuron_group_counts(case):
    model, _ = case
    groups = model.neuron_groups()
    expected = {
        Linear: lambda m: 0,
        DiagonalLinear: lambda m: m.input_dim * (m.depth - 1),
        DeepLinear: lambda m: sum(m.widths),
        DeepReLU: lambda m: sum(m.widths),
    }.get(type(model), lambda m: m.width)(model)
    assert len(groups) == expected == model.num_neuron_groups
    for inc, out in groups:
        assert inc.dtype == torch.long and out.dtype == torch.long
        assert inc.numel() > 0 and out.numel() > 0
        assert set(inc.tolist()).isdisjoint(out.tolist())
        assert 0 <= int(torch.cat([inc, out]).min()) and int(torch.cat([inc, out]).max()) < model.num_params


def test_neuron_groups_gradient_flow_invariance(case):
    """Σ_in θ_k g_k − Σ_out θ_r g_r = 0 for g = ∇_θ Σ_i c_i f(θ; x_i) (rescaling symmetry)."""
    model, _ = case
    theta, X = _theta(model).requires_grad_(), _data()
    c = torch.randn(N, generator=_gen(9), dtype=torch.float64)
    (g,) = torch.autograd.grad(model.forward(theta, X) @ c, theta)
    th = theta.detach()
    for inc, out in model.neuron_groups():
        k = model.activation_degree
        drift = (th[inc] * g[inc]).sum() - k * (th[out] * g[out]).sum()
        scale = (th[inc] * g[inc]).abs().sum() + k * (th[out] * g[out]).abs().sum()
        assert abs(float(drift)) <= 1e-10 * float(scale) + 1e-300


@pytest.mark.parametrize("c", [0.4, 3.0])
def test_neuron_groups_rescaling_leaves_output_unchanged(case, c):
    model, _ = case
    theta, X = _theta(model), _data()
    f = model.forward(theta, X)
    for inc, out in model.neuron_groups():
        moved = theta.clone()
        moved[inc] *= c
        moved[out] /= c**model.activation_degree
        assert _rel(model.forward(moved, X), f) < 1e-13


def test_neuron_balance_matches_groups(case):
    model, _ = case
    theta = _theta(model, batch=(2,))
    B = model.neuron_balance(theta, torch.square)
    assert B.shape == (2, model.num_neuron_groups)
    for k in range(2):
        deg = model.activation_degree
        groups = model.neuron_groups()
        direct = [theta[k, i].square().sum() - deg * theta[k, o].square().sum() for i, o in groups]
        expected = torch.stack(direct) if direct else theta.new_zeros(0)
        torch.testing.assert_close(B[k], expected, rtol=1e-14, atol=1e-14)
        torch.testing.assert_close(model.neuron_balance(theta[k], torch.square), B[k])


def test_two_layer_groups_are_rows_and_outputs():
    model = TwoLayerReLU(3, 4)
    theta = _theta(model)
    params = model.unflatten(theta)
    B = model.neuron_balance(theta, torch.square)
    torch.testing.assert_close(B, params["W"].square().sum(1) - params["a"].square())
    for j, (inc, out) in enumerate(model.neuron_groups()):
        assert torch.equal(theta[inc], params["W"][j]) and torch.equal(theta[out], params["a"][j : j + 1])


def test_deep_groups_are_rows_and_columns():
    model = DeepLinear(3, [4, 2])
    theta = _theta(model)
    p = model.unflatten(theta)
    groups = model.neuron_groups()
    for j in range(4):
        assert torch.equal(theta[groups[j][0]], p["W1"][j]) and torch.equal(theta[groups[j][1]], p["W2"][:, j])
    for j in range(2):
        inc, out = groups[4 + j]
        assert torch.equal(theta[inc], p["W2"][j]) and torch.equal(theta[out], p["W3"][:, j])


def test_neuron_group_blocks_cached():
    model = DeepReLU(3, [4, 2])
    assert model.neuron_group_blocks() is model.neuron_group_blocks()
    assert Linear(3).neuron_groups() == []
    assert Linear(3).neuron_balance(torch.ones(3), torch.square).shape == (0,)


# ---------------------------------------------------------------------------------------------------------
# model-specific formulas
# ---------------------------------------------------------------------------------------------------------


def test_two_layer_relu_matches_numpy():
    model = TwoLayerReLU(D, 9)
    theta, X = model.init(seed=4), _data(n=20)
    W = theta[: 9 * D].numpy().reshape(9, D)
    a = theta[9 * D :].numpy()
    expected = np.maximum(X.numpy() @ W.T, 0.0) @ a
    np.testing.assert_allclose(model.forward(theta, X).numpy(), expected, rtol=1e-13, atol=1e-15)


def test_activations():
    h = torch.linspace(-2, 2, 9, dtype=torch.float64)
    torch.testing.assert_close(TwoLayerReLU(2, 2).activation(h), h.clamp_min(0))
    torch.testing.assert_close(TwoLayerLeakyReLU(2, 2, 0.25).activation(h), torch.where(h > 0, h, 0.25 * h))
    torch.testing.assert_close(TwoLayerReLUPower(2, 2, 3).activation(h), h.clamp_min(0) ** 3)


def test_relu_derivative_at_zero_is_zero():
    model = TwoLayerReLU(2, 2)
    theta = torch.tensor([0.0, 0.0, 1.0, 1.0, 2.0, 3.0], dtype=torch.float64, requires_grad=True)
    X = torch.tensor([[1.0, -1.0]], dtype=torch.float64)  # h_11 = 0 and h_12 = 0
    (g,) = torch.autograd.grad(model.forward(theta, X).sum(), theta)
    assert torch.equal(g, torch.zeros(6, dtype=torch.float64))


def test_two_layer_masses_and_representation(case):
    model, _ = case
    if not isinstance(model, AbstractTwoLayer):
        pytest.skip("two-layer only")
    theta = _theta(model, batch=(2,))
    for k in range(2):
        p = model.unflatten(theta[k])
        w_tilde = p["a"].abs()[:, None] * p["W"]
        torch.testing.assert_close(model.input_weight_representation(theta[k]), w_tilde)
        masses = torch.tensor([abs(p["a"][j]) * p["W"][j].norm() for j in range(model.width)], dtype=theta.dtype)
        torch.testing.assert_close(model.neuron_masses(theta[k]), masses)
        torch.testing.assert_close(model.neuron_masses(theta)[k], masses)
    X = _data()
    H = model.preactivations(theta, X)
    assert H.shape == (2, N, model.width)
    torch.testing.assert_close(H[0], X @ model.unflatten(theta[0])["W"].T)
    f_direct = model.activation(H) @ model.unflatten(theta)["a"][..., None]
    torch.testing.assert_close(model.forward(theta, X), f_direct.squeeze(-1))


@pytest.mark.parametrize("cls", [TwoLayerReLU, TwoLayerLeakyReLU])
def test_forward_with_pattern_two_layer(cls):
    model = cls(D, 6)
    theta, X = _theta(model), _data()
    P = (model.preactivations(theta, X) > 0).to(theta.dtype)
    assert isinstance(model, AbstractPiecewiseLinearTwoLayer)
    torch.testing.assert_close(model.forward_with_pattern(theta, X, P), model.forward(theta, X))
    batch = _theta(model, batch=(2,))
    Pb = (model.preactivations(batch, X) > 0).to(theta.dtype)
    torch.testing.assert_close(model.forward_with_pattern(batch, X, Pb), model.forward(batch, X))
    with pytest.raises(InvalidDataError, match=r"pattern must have shape \(n, m\) = \(7, 6\)"):
        model.forward_with_pattern(theta, X, P[:, :3])


def test_deep_relu_preactivations_and_pattern():
    model = DeepReLU(D, [5, 3])
    theta, X = _theta(model), _data()
    Hs = model.preactivations(theta, X)
    assert [h.shape for h in Hs] == [(N, 5), (N, 3)]
    p = model.unflatten(theta)
    torch.testing.assert_close(Hs[0], X @ p["W1"].T)
    torch.testing.assert_close(Hs[1], torch.relu(Hs[0]) @ p["W2"].T)
    torch.testing.assert_close(model.forward(theta, X), (torch.relu(Hs[1]) @ p["W3"].T).squeeze(-1))
    Ps = [(h > 0).to(theta.dtype) for h in Hs]
    torch.testing.assert_close(model.forward_with_pattern(theta, X, Ps), model.forward(theta, X))
    with pytest.raises(InvalidDataError, match="one pattern per hidden layer"):
        model.forward_with_pattern(theta, X, Ps[:1])


def test_diagonal_effective_weights_and_deep_end_to_end():
    diag = DiagonalLinear(D, depth=3)
    theta, X = _theta(diag), _data()
    u = diag.unflatten(theta)
    w = u["u1"] * u["u2"] * u["u3"]
    torch.testing.assert_close(diag.effective_weights(theta), w)
    torch.testing.assert_close(diag.forward(theta, X), X @ w)

    deep = DeepLinear(D, [3, 5])
    theta = _theta(deep)
    p = deep.unflatten(theta)
    e2e = (p["W3"] @ p["W2"] @ p["W1"]).reshape(-1)
    torch.testing.assert_close(deep.end_to_end(theta), e2e)
    torch.testing.assert_close(deep.forward(theta, X), X @ e2e)
    batch = _theta(deep, batch=(2,))
    torch.testing.assert_close(deep.end_to_end(batch)[1], deep.end_to_end(batch[1]))


def test_double_backward_smooth_model():
    model = TwoLayerReLUPower(D, 5)
    theta, X = _theta(model).requires_grad_(), _data()
    (g,) = torch.autograd.grad(model.forward(theta, X).sum(), theta, create_graph=True)
    (hv,) = torch.autograd.grad(g @ theta.detach(), theta)
    # Euler for the gradient (degree L − 1): H θ = (L − 1) ∇f
    torch.testing.assert_close(hv, (model.degree - 1) * g.detach(), rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------------------
# config, repr, equality
# ---------------------------------------------------------------------------------------------------------


def test_config_roundtrip(case):
    model, _ = case
    cfg = json.loads(json.dumps(model.config()))
    rebuilt = get_model(**cfg)
    assert rebuilt == model and hash(rebuilt) == hash(model)
    assert rebuilt.param_shapes() == model.param_shapes()
    assert repr(model).startswith(type(model).__name__ + "(")
    assert "input_dim=4" in repr(model)


def test_equality_distinguishes_configs():
    assert TwoLayerReLU(3, 4) != TwoLayerReLU(3, 5)
    assert TwoLayerReLU(3, 4) != TwoLayerLeakyReLU(3, 4)
    assert DeepLinear(3, (2, 2)) == DeepLinear(3, [2, 2])


# ---------------------------------------------------------------------------------------------------------
# nice errors
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "pattern"),
    [
        (lambda: Linear(0), r"`input_dim` must be an integer >= 1; got 0"),
        (lambda: Linear(2.5), r"`input_dim` must be an integer >= 1; got 2.5 of type float"),
        (lambda: Linear(True), r"`input_dim` must be an integer"),
        (lambda: TwoLayerReLU(3, 0), r"TwoLayerReLU: `width` must be an integer >= 1; got 0"),
        (lambda: DiagonalLinear(3, depth=1), r"`depth` must be an integer >= 2; got 1"),
        (lambda: DiagonalLinear(3, init_mode="ones"), r"unknown init_mode 'ones'.*zero_last"),
        (lambda: DeepLinear(3, []), r"`widths` is empty.*use Linear"),
        (lambda: DeepReLU(3, [4, 0]), r"`widths\[1\]` must be an integer >= 1; got 0"),
        (lambda: DeepReLU(3, 4), r"`widths` must be a sequence of positive integers"),
        (lambda: TwoLayerLeakyReLU(3, 4, negative_slope=1.5), r"0 < negative_slope < 1; got 1.5"),
        (lambda: TwoLayerLeakyReLU(3, 4, negative_slope=0.0), r"Use TwoLayerReLU for slope 0"),
        (lambda: TwoLayerReLUPower(3, 4, power=1), r"`power` must be an integer >= 2; got 1"),
        (
            lambda: get_model("mlp"),
            r"Unknown model 'mlp'. Valid names: deep_linear, deep_relu, diagonal_linear",
        ),
        (
            lambda: get_model("two_layer_relu", input_dim=3, width=2, depth=2),
            r"unexpected keyword.*'depth'.*Its arguments are TwoLayerReLU\(input_dim, width\)",
        ),
        (lambda: get_model("linear"), r"missing a required argument: 'input_dim'"),
    ],
)
def test_invalid_parameters(build, pattern):
    with pytest.raises(InvalidParameterError, match=pattern):
        build()


def test_invalid_init_arguments():
    model = TwoLayerReLU(3, 4)
    with pytest.raises(InvalidParameterError, match="either `seed` or `generator`, not both"):
        model.init(seed=1, generator=_gen(1))
    with pytest.raises(InvalidParameterError, match="`scale` must be >= 0; got -1"):
        model.init(scale=-1.0)
    with pytest.raises(InvalidParameterError, match="`scale` must be a finite real"):
        model.init(scale=float("nan"))
    with pytest.raises(InvalidParameterError, match="`seed` must be a non-negative integer; got 1.5"):
        model.init(seed=1.5)
    with pytest.raises(InvalidParameterError, match="`dtype` must be a floating torch dtype"):
        model.init(dtype=torch.int64)


def test_invalid_data():
    model = TwoLayerReLU(3, 4)
    theta = model.init()
    X = _data(d=3)
    with pytest.raises(InvalidDataError, match=r"X has 5 features \(shape \(7, 5\)\).*input_dim=3.*input_dim=5"):
        model.forward(theta, _data(d=5))
    with pytest.raises(InvalidDataError, match=r"X must be 2-D .* got shape \(3,\).*X.reshape\(1, -1\)"):
        model.forward(theta, X[0])
    with pytest.raises(InvalidDataError, match=r"num_params = 16; got shape \(15,\).*model.init"):
        model.forward(theta[:-1], X)
    with pytest.raises(InvalidDataError, match=r"num_params = 16; got shape \(\)"):
        model.forward(theta[0], X)
    with pytest.raises(InvalidDataError, match=r"X has dtype torch.float32 but theta has dtype torch.float64"):
        model.forward(theta, X.float())
    with pytest.raises(InvalidDataError, match="theta must be a torch.Tensor"):
        model.forward(theta.tolist(), X)
    with pytest.raises(InvalidDataError, match="X must be a torch.Tensor"):
        model.forward(theta, X.numpy())
    with pytest.raises(InvalidDataError, match=r"num_params = 16"):
        model.unflatten(torch.zeros(3, 10, dtype=torch.float64))
    with pytest.raises(InvalidDataError, match=r"missing \['a'\], unknown \['b'\]"):
        model.flatten({"W": torch.zeros(4, 3), "b": torch.zeros(4)})
    with pytest.raises(InvalidDataError, match=r"'W' must have trailing shape \(4, 3\); got shape \(3, 4\)"):
        model.flatten({"W": torch.zeros(3, 4), "a": torch.zeros(4)})
    with pytest.raises(InvalidDataError, match=r"leading \(batch\) shape \(2,\).*\(\)"):
        model.flatten({"W": torch.zeros(4, 3), "a": torch.zeros(2, 4)})
    with pytest.raises(InvalidDataError, match="X has 2 features"):
        model.preactivations(theta, _data(d=2))


def test_errors_are_value_errors():
    assert issubclass(InvalidParameterError, ValueError) and issubclass(InvalidDataError, ValueError)
