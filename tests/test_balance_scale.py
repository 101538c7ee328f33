"""The balance-drift scale: per coordinate Q − Q(0) ≥ 0 (issue 18).

Q = φ*∘φ′ is negative near zero for the smoothed homogeneous potential (Q(0) = −λ^{p/2}), so a scale built
from Q itself was clamped to the smallest float and the relative drift read 8e+297 (λ = 1) or 2e+301
(λ = 100). References here are independent of flowsim: Q − Q(0) = ∫₀^|x| tφ″(t) dt by scipy quadrature of
φ″ written in numpy, and the balance B_j = Σ_k Q(W_jk) − Q(a_j) from the saved states with Q in numpy.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.integrate import quad

from flowsim import simulate
from flowsim.data import student_teacher_relu
from flowsim.models import TwoLayerReLU
from flowsim.potentials import Euclidean, HyperbolicEntropy, PPower, SmoothedHomogeneous


def _smoothed_phi2(p: float, lam: float):
    return lambda t: p * (t * t + lam) ** (p / 2 - 2) * ((p - 1) * t * t + lam)


def _excess_by_quadrature(phi2, x: float) -> float:
    # Q′(t) = tφ″(t), so Q(x) − Q(0) = ∫₀^|x| tφ″(t) dt (Q is even)
    return quad(lambda t: t * phi2(t), 0.0, abs(x), epsabs=0.0, epsrel=1e-13, limit=200)[0]


CASES = [
    (SmoothedHomogeneous(3.0, 0.01), _smoothed_phi2(3.0, 0.01)),
    (SmoothedHomogeneous(3.0, 100.0), _smoothed_phi2(3.0, 100.0)),
    (SmoothedHomogeneous(1.5, 1.0), _smoothed_phi2(1.5, 1.0)),
    (SmoothedHomogeneous(4.5, 2.0), _smoothed_phi2(4.5, 2.0)),
    (HyperbolicEntropy(0.1), lambda t: 1.0 / np.hypot(t, 0.1)),
    (PPower(3.0), lambda t: 2.0 * abs(t)),
    (Euclidean(), lambda t: 1.0),
]


@pytest.mark.parametrize("pot,phi2", CASES, ids=lambda c: repr(c) if not callable(c) else "")
def test_q_excess_matches_quadrature_and_is_never_negative(pot, phi2):
    xs = [0.0, 1e-9, -1e-4, 0.05, 0.0999, 0.1, -0.3, 1.0, 7.0, -30.0, 1e3]
    got = pot.q_excess(torch.tensor(xs, dtype=torch.float64)).numpy()
    ref = np.array([_excess_by_quadrature(phi2, x) for x in xs])
    assert np.all(got >= 0.0)
    np.testing.assert_allclose(got, ref, rtol=1e-11, atol=0.0)
    # and it is Q − Q(0) (checked where the difference has no cancellation)
    x = torch.tensor([0.5, -2.0, 40.0], dtype=torch.float64)
    direct = pot.q_function(x) - pot.q_function(torch.zeros(1, dtype=torch.float64))
    np.testing.assert_allclose(pot.q_excess(x).numpy(), direct.numpy(), rtol=1e-12)


def _q_smoothed_numpy(x: np.ndarray, p: float, lam: float) -> np.ndarray:
    return (x * x + lam) ** (p / 2 - 1) * ((p - 1) * x * x - lam)


@pytest.mark.parametrize("lam", [0.01, 1.0, 100.0])
def test_smoothed_balance_drift_is_finite_and_small(lam):
    """Two-layer ReLU, smoothed p = 3, exact kinks: relative drift finite and ≤ 1e-8, and equal to the ratio
    of the numpy balance drift and the quadrature scale; the absolute law |B(t) − B(0)| small on its own."""
    p, d, m = 3.0, 4, 6
    model = TwoLayerReLU(d, m)
    tr = simulate(
        model,
        student_teacher_relu(n=20, d=d, seed=0),
        SmoothedHomogeneous(p, lam),
        kinks="filippov",
        log_t_end=3.0,
        n_save=6,
        rtol=1e-10,
        atol=1e-12,
        init_scale=0.5,
        seed=1,
        threads=1,
    )
    assert tr.status.name == "SUCCESS"
    th = np.asarray(tr.theta)
    W, a = th[:, : m * d].reshape(-1, m, d), th[:, m * d :]
    B = _q_smoothed_numpy(W, p, lam).sum(-1) - _q_smoothed_numpy(a, p, lam)  # (k, m)
    drift_abs = np.abs(B - B[:1]).max(axis=1)
    phi2 = _smoothed_phi2(p, lam)
    excess = np.vectorize(lambda x: _excess_by_quadrature(phi2, x))
    scale = (excess(W).sum(-1) + excess(a)).max(axis=1)
    diag = tr.diagnostics
    assert np.all(np.isfinite(diag["balance_drift"]))
    assert float(np.max(diag["balance_drift"])) <= 1e-8
    # the law itself, checked without flowsim's Q: |B| ≈ m λ^{3/2} can be 6,000 while the drift is ~1e-10
    assert float(drift_abs.max()) <= 1e-8 * max(1.0, lam**1.5)
    np.testing.assert_allclose(diag["balance_drift_abs"], drift_abs, rtol=0.0, atol=1e-12 * max(1.0, lam**1.5))
    # flowsim's relative drift is the numpy drift over the quadrature scale (drift_abs is rounding-dominated,
    # so compare within the rounding of |B| over the scale)
    tol = 1e-12 * max(1.0, lam**1.5) / scale
    np.testing.assert_allclose(diag["balance_drift"], drift_abs / scale, rtol=0.0, atol=float(tol.max()))
