import math

import numpy as np
import pytest
import torch

from flowsim.errors import InvalidParameterError
from flowsim.losses import CrossEntropyLoss, ExponentialLoss, LogisticLoss, get_loss


def test_exponential_log_value_matches_direct_and_survives_underflow():
    q = torch.tensor([0.3, 1.2, -0.5, 2.0], dtype=torch.float64)
    loss = ExponentialLoss()
    assert math.isclose(float(loss.log_value(q)), math.log(float(torch.exp(-q).sum())), rel_tol=1e-14)
    big = q + 2000.0  # L ≈ e^{-2000}: underflows as a number, exact in log-space
    np.testing.assert_allclose(float(loss.log_value(big)), float(loss.log_value(q)) - 2000.0, rtol=1e-14)


@pytest.mark.parametrize("qv", [-40.0, -3.0, 0.0, 1e-3, 2.5, 30.0, 700.0, 5000.0])
def test_logistic_log_pointwise_and_derivative(qv):
    loss = LogisticLoss()
    q = torch.tensor([qv], dtype=torch.float64)
    # reference with mpmath-free closed forms in float64 where representable, asymptotics beyond
    if qv < 700:
        ref = math.log(math.log1p(math.exp(-qv)))
    else:
        ref = -qv  # log(log(1+e^{-q})) = -q + O(e^{-q})
    np.testing.assert_allclose(float(loss.log_pointwise(q)[0]), ref, rtol=1e-13)
    # −ℓ′(q) = σ(−q) = 1/(1+e^q)
    ref_d = -math.log1p(math.exp(qv)) if qv < 700 else -qv
    np.testing.assert_allclose(float(loss.log_neg_derivative(q)[0]), ref_d, rtol=1e-13)


@pytest.mark.parametrize("qv", [-20.5, 20.1, 25.0, 30.0])
def test_logistic_values_exact_past_torch_softplus_threshold(qv):
    """torch's softplus returns its argument itself above 20: −ℓ′(20.1) = e^{−softplus(20.1)} was 1.9e-9 off, and
    the cross-entropy's class weights with it. Compared with 1/(1 + e^q) and log1p(e^{−q}) themselves."""
    loss = LogisticLoss()
    q = torch.tensor([qv], dtype=torch.float64)
    w_ref = 1.0 / (1.0 + math.exp(qv))
    l_ref = math.log1p(math.exp(-qv))
    assert math.isclose(math.exp(float(loss.log_neg_derivative(q)[0])), w_ref, rel_tol=1e-14)
    assert math.isclose(math.exp(float(loss.log_pointwise(q)[0])), l_ref, rel_tol=1e-14)
    # two classes, margin f_y − f_c = q: the other class's softmax weight is σ(−q) = −ℓ′(q)
    F = torch.tensor([[0.0, -qv]], dtype=torch.float64)
    ce = CrossEntropyLoss()
    assert math.isclose(math.exp(float(ce.log_weights(F, torch.tensor([0]))[0, 1])), w_ref, rel_tol=1e-14)
    assert math.isclose(math.exp(float(ce.log_pointwise(F, torch.tensor([0]))[0])), l_ref, rel_tol=1e-14)


def test_derivative_consistent_with_autograd():
    q = torch.linspace(-3, 5, 9, dtype=torch.float64, requires_grad=True)
    for loss in (ExponentialLoss(), LogisticLoss()):
        vals = torch.exp(loss.log_pointwise(q))
        (g,) = torch.autograd.grad(vals.sum(), q)
        np.testing.assert_allclose(torch.exp(loss.log_neg_derivative(q.detach())).numpy(), -g.numpy(), rtol=1e-12)


def test_get_loss_names_and_error():
    assert isinstance(get_loss("exponential"), ExponentialLoss)
    assert isinstance(get_loss("logistic"), LogisticLoss)
    with pytest.raises(InvalidParameterError, match="valid losses"):
        get_loss("hinge")
    assert get_loss("exponential").value_at_zero == 1.0
    assert math.isclose(get_loss("logistic").value_at_zero, math.log(2.0))
