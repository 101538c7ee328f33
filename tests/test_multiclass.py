"""Multi-class margins and losses (log-space), Kesler's construction, the Crammer–Singer reference, and
gradient flow's direction on 10-class digits reaching it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flowsim.errors import InvalidParameterError, ReferenceSolverError
from flowsim.losses import (
    CrossEntropyLoss,
    MulticlassExponentialLoss,
    get_multiclass_loss,
    multiclass_margins,
)


def _logits(n=7, K=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    F = torch.randn(n, K, generator=g, dtype=torch.float64)
    y = torch.randint(0, K, (n,), generator=g)
    return F, y


def test_margins_match_a_loop():
    F, y = _logits()
    q = multiclass_margins(F, y)
    ref = [float(F[i, y[i]] - max(F[i, c] for c in range(F.shape[1]) if c != y[i])) for i in range(F.shape[0])]
    assert np.allclose(q.numpy(), ref, rtol=0, atol=1e-15)


@pytest.mark.parametrize("loss", [MulticlassExponentialLoss(), CrossEntropyLoss()])
def test_loss_value_and_logit_gradient_match_autograd(loss):
    F, y = _logits()
    Fr = F.clone().requires_grad_(True)
    if isinstance(loss, CrossEntropyLoss):
        ref = torch.nn.functional.cross_entropy(Fr, y, reduction="sum")
    else:
        onehot = torch.nn.functional.one_hot(y, F.shape[1]).bool()
        ref = torch.where(onehot, 0.0, torch.exp(Fr - Fr.gather(1, y[:, None]))).sum()
    (grad,) = torch.autograd.grad(ref, Fr)
    assert math.isclose(float(loss.log_value(F, y)), math.log(float(ref.detach())), rel_tol=1e-13)
    m, G = loss.logit_weights(F, y)
    assert torch.allclose(torch.exp(m) * G, -grad, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("loss", [MulticlassExponentialLoss(), CrossEntropyLoss()])
def test_losses_stay_finite_at_far_horizons(loss):
    """Logits scaled by 1e4 (L ≈ e^{-1e4}, far below float64's range): log L is exact and G = O(1)."""
    F, y = _logits()
    F = F + 10 * torch.nn.functional.one_hot(y, F.shape[1])  # every point correct with a gap
    scale = 1e4
    log_L = float(loss.log_value(scale * F, y))
    gaps = (scale * F - scale * F.gather(1, y[:, None])).numpy()
    mask = np.ones_like(gaps, dtype=bool)
    mask[np.arange(len(y)), y.numpy()] = False
    expected = np.logaddexp.reduce(gaps[mask])  # log Σ e^{gap}; log(1 + u) = u for both losses at this scale
    assert math.isclose(log_L, expected, rel_tol=1e-12)
    m, G = loss.logit_weights(scale * F, y)
    assert torch.isfinite(G).all() and float(G.abs().max()) >= 1.0 - 1e-12


def test_get_multiclass_loss_names_and_errors():
    assert isinstance(get_multiclass_loss("exponential"), MulticlassExponentialLoss)
    assert isinstance(get_multiclass_loss("logistic"), CrossEntropyLoss)
    with pytest.raises(InvalidParameterError, match="valid"):
        get_multiclass_loss("hinge")
    with pytest.raises(InvalidParameterError, match="logits of shape"):
        multiclass_margins(torch.zeros(3), torch.zeros(3, dtype=torch.long))


def _digits(n):
    from sklearn.datasets import load_digits

    b = load_digits()
    X = b.data / np.linalg.norm(b.data, axis=1).max()
    return X[:n], b.target[:n]


def test_kesler_rows_turn_the_multiclass_exponential_loss_into_the_binary_one():
    from flowsim.analysis.references import kesler_rows

    X, y = _digits(30)
    Z = kesler_rows(X, y, 10)
    W = np.random.default_rng(0).normal(size=(10, 64))
    binary = np.log(np.exp(-(Z @ W.reshape(-1))).sum())
    multi = float(MulticlassExponentialLoss().log_value(torch.as_tensor(X @ W.T), torch.as_tensor(y)))
    assert Z.shape == (30 * 9, 640)
    assert math.isclose(binary, multi, rel_tol=1e-12)


def test_crammer_singer_agrees_with_the_lawson_hanson_svm_on_kesler_rows():
    pytest.importorskip("clarabel")
    from flowsim.analysis.references import crammer_singer, kesler_rows, svm_l2

    X, y = _digits(120)
    cs = crammer_singer(X, y)
    ref = svm_l2(kesler_rows(X, y))  # an independent algorithm (active-set NNLS) on the same problem
    assert max(cs.kkt.values()) < 1e-8
    assert math.isclose(cs.margin, ref.margin, rel_tol=1e-7)
    assert np.allclose(cs.w, ref.w, rtol=0, atol=1e-6 * np.abs(ref.w).max())
    W = cs.w.reshape(10, 64)
    q = multiclass_margins(torch.as_tensor(X @ W.T), torch.as_tensor(y))
    assert math.isclose(float(q.min()), 1.0, rel_tol=1e-9)  # the hard-margin constraints are tight


def test_crammer_singer_reports_inseparable_data():
    pytest.importorskip("clarabel")
    from flowsim.analysis.references import crammer_singer

    X = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(ReferenceSolverError, match="not linearly separable"):
        crammer_singer(X, np.array([0, 1, 2]))


def _flow_cosines(n, log_t_end):
    from flowsim import simulate
    from flowsim.analysis.references import crammer_singer, kesler_rows
    from flowsim.models import Linear

    X, y = _digits(n)
    cs = crammer_singer(X, y)
    Z = kesler_rows(X, y)
    tr = simulate(Linear(Z.shape[1]), (Z, np.ones(len(Z))), "euclidean", log_t_end=log_t_end, init_scale=0.0,
                  n_save=5, diagnostics=False, rtol=1e-6, atol=1e-9)  # fmt: skip
    assert tr.success, tr.message
    theta = np.asarray(tr.theta)[1:]
    return theta @ cs.w / (np.linalg.norm(theta, axis=1) * np.linalg.norm(cs.w))


def test_gradient_flow_direction_approaches_crammer_singer():
    """The multi-class linear model W x under gradient flow of the multi-class exponential loss (integrated
    as the binary flow on Kesler's rows: the same ODE) turns towards Clarabel's Crammer–Singer solution."""
    pytest.importorskip("clarabel")
    cos = _flow_cosines(60, 15.0)
    assert cos[-1] >= 0.985 and np.all(np.diff(cos) > 0), cos


@pytest.mark.slow
def test_gradient_flow_direction_reaches_crammer_singer_on_10_class_digits():
    """Acceptance 1: cosine ≥ 0.999 with the Crammer–Singer solution at log t = 100 (10 digit classes)."""
    pytest.importorskip("clarabel")
    cos = _flow_cosines(100, 100.0)
    assert cos[-1] >= 0.999 and np.all(np.diff(cos) > 0), cos


def test_multiclass_margin_summary_at_the_crammer_singer_solution():
    """At W = the Crammer–Singer solution, q_min = 1 and the normalised margin is its margin 1/‖W‖; the
    normalisations are scale-invariant (degree 1); gradient descent's Q-margin uses (Σ θ²/2)^{1/2}."""
    pytest.importorskip("clarabel")
    from torch import nn

    from flowsim.analysis.multiclass import multiclass_margin_summary
    from flowsim.analysis.references import crammer_singer
    from flowsim.models import from_module
    from flowsim.potentials import get_potential

    X, y = _digits(80)
    cs = crammer_singer(X, y)
    model = from_module(nn.Linear(64, 10, bias=False), (64,))
    Xt, yt, W = torch.as_tensor(X), torch.as_tensor(y), torch.as_tensor(cs.w)
    s = multiclass_margin_summary(model, get_potential("euclidean"), W, Xt, yt)
    assert math.isclose(s["q_min"], 1.0, rel_tol=1e-9) and math.isclose(s["normalized_margin"], cs.margin, rel_tol=1e-9)
    assert math.isclose(s["q_margin"], math.sqrt(2.0) * s["normalized_margin"], rel_tol=1e-12)  # Q∞ = x²/2
    s3 = multiclass_margin_summary(model, get_potential("euclidean"), 3.0 * W, Xt, yt)
    assert math.isclose(s3["normalized_margin"], cs.margin, rel_tol=1e-9)


def test_multiclass_datasets_are_checked_and_kept_out_of_the_binary_flow():
    from flowsim import simulate
    from flowsim.data import Dataset, load_digits_images
    from flowsim.errors import InvalidDataError
    from flowsim.models import Linear

    X = torch.rand(4, 3, dtype=torch.float64)
    with pytest.raises(InvalidDataError, match=r"0\.\.2"):
        Dataset(X, torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float64), num_classes=3)
    ds = Dataset(X, torch.tensor([0.0, 1.0, 2.0, 2.0], dtype=torch.float64), num_classes=3)
    assert ds.to(dtype=torch.float32).num_classes == 3
    with pytest.raises(InvalidDataError, match="kesler_rows"):
        _ = ds.Z
    with pytest.raises(InvalidDataError, match="minibatch_mirror_descent"):
        simulate(Linear(64), load_digits_images().train, "euclidean", log_t_end=1.0)
