"""Tests for flowsim.potentials: the C2 identities of validation/CASES.md and the public API.

References are computed independently: closed forms of DESIGN.md §1 evaluated in mpmath at 50 digits,
and autograd derivatives of each potential's φ.
"""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch

from flowsim.errors import FlowSimError, InvalidParameterError, PotentialOverflowError
from flowsim.potentials import (
    POTENTIALS,
    AbstractPotential,
    Euclidean,
    Horizon,
    HyperbolicEntropy,
    PPower,
    PPowerPlusQuadratic,
    SeparablePotential,
    SmoothedHomogeneous,
    estimate_horizon,
    get_potential,
)

mp = pytest.importorskip("mpmath")

DTYPE = torch.float64
RTOL = 1e-10


# --------------------------------------------------------------------------------------------------
# Potentials under test and their independent references
# --------------------------------------------------------------------------------------------------

CUSTOM_BETA = 0.5


def _quartic(x):
    return x**4 / 4 + x**2 / 2


def _he_custom(x):
    beta = torch.as_tensor(CUSTOM_BETA, dtype=x.dtype)
    return x * torch.asinh(x / beta) - torch.hypot(x, beta)


def _asymmetric(x):
    return x**2 / 2 + torch.nn.functional.softplus(x)


def _builtins():
    cases = [Euclidean()]
    cases += [HyperbolicEntropy(beta) for beta in (0.01, 0.1, 1.0, 10.0)]
    cases += [PPower(p) for p in (1.5, 3.0, 4.0)]
    cases += [SmoothedHomogeneous(p, lam) for p in (1.5, 3.0, 4.0) for lam in (0.1, 1.0, 10.0)]
    cases += [PPowerPlusQuadratic(p, lam) for p in (1.5, 3.0, 4.0) for lam in (0.1, 1.0, 10.0)]
    return cases


BUILTINS = _builtins()
# (custom potential, reference potential with the same φ or None, odd φ′)
CUSTOM = {
    "quartic": (SeparablePotential(_quartic, name="quartic"), PPowerPlusQuadratic(4.0, 1.0)),
    "he_custom": (SeparablePotential(_he_custom, name="he_custom"), HyperbolicEntropy(CUSTOM_BETA)),
    "asymmetric": (SeparablePotential(_asymmetric, name="asymmetric"), None),
}
ALL = BUILTINS + [pot for pot, _ in CUSTOM.values()]


def _id(pot):
    return repr(pot).replace(" ", "")


def _reference_of(pot):
    """The potential whose mpmath closed forms describe `pot`."""
    for custom, reference in CUSTOM.values():
        if pot is custom:
            return reference if reference is not None else pot
    return pot


def _mp_functions(pot):
    """(φ, φ′, φ″) in mpmath from the closed forms of DESIGN.md §1."""
    pot = _reference_of(pot)
    if isinstance(pot, Euclidean):
        return (lambda x: x * x / 2), (lambda x: x), (lambda x: mp.mpf(1))
    if isinstance(pot, HyperbolicEntropy):
        b = mp.mpf(pot.beta)
        return (
            lambda x: x * mp.asinh(x / b) - mp.sqrt(x * x + b * b),
            lambda x: mp.asinh(x / b),
            lambda x: 1 / mp.sqrt(x * x + b * b),
        )
    if isinstance(pot, PPower):
        p = mp.mpf(pot.p)
        return (
            lambda x: abs(x) ** p / p,
            lambda x: mp.sign(x) * abs(x) ** (p - 1),
            lambda x: (p - 1) * abs(x) ** (p - 2),
        )
    if isinstance(pot, SmoothedHomogeneous):
        p, lam = mp.mpf(pot.p), mp.mpf(pot.lam)
        return (
            lambda x: (x * x + lam) ** (p / 2),
            lambda x: p * x * (x * x + lam) ** (p / 2 - 1),
            lambda x: p * (x * x + lam) ** (p / 2 - 2) * ((p - 1) * x * x + lam),
        )
    if isinstance(pot, PPowerPlusQuadratic):
        p, lam = mp.mpf(pot.p), mp.mpf(pot.lam)
        return (
            lambda x: abs(x) ** p / p + lam * x * x / 2,
            lambda x: mp.sign(x) * abs(x) ** (p - 1) + lam * x,
            lambda x: (p - 1) * abs(x) ** (p - 2) + lam,
        )
    if pot.name == "asymmetric":

        def sigma(x):
            return 1 / (1 + mp.exp(-x))

        return (
            lambda x: x * x / 2 + mp.log(1 + mp.exp(x)),
            lambda x: x + sigma(x),
            lambda x: 1 + sigma(x) * (1 - sigma(x)),
        )
    raise AssertionError(f"no reference for {pot!r}")


def _mp_map(fn, x):
    with mp.workdps(50):
        return torch.tensor([float(fn(mp.mpf(float(v)))) for v in x.flatten()], dtype=DTYPE).reshape(x.shape)


def _is_odd(pot):
    return pot.name != "asymmetric"


def _singular_at_zero(pot):
    """φ″(0) = inf (p < 2 power families): autograd and quadrature are not used at 0."""
    pot = _reference_of(pot)
    return isinstance(pot, (PPower, PPowerPlusQuadratic)) and pot.p < 2


def _points(seed=0, n_log=60, n_uniform=20):
    """Random points: sign·10^U(−6, 6), U(−3, 3), and 0, ±1e6, 1e-6."""
    gen = torch.Generator().manual_seed(seed)
    sign = torch.where(torch.rand(n_log, generator=gen, dtype=DTYPE) < 0.5, -1.0, 1.0)
    log_part = sign * 10.0 ** (12.0 * torch.rand(n_log, generator=gen, dtype=DTYPE) - 6.0)
    uniform = 6.0 * torch.rand(n_uniform, generator=gen, dtype=DTYPE) - 3.0
    special = torch.tensor([0.0, 1e6, -1e6, 1e-6], dtype=DTYPE)
    return torch.cat([log_part, uniform, special])


def _dual_points(pot, seed=1):
    """Random dual values covering the range where the primal solution is a finite float."""
    gen = torch.Generator().manual_seed(seed)
    n = 60
    sign = torch.where(torch.rand(n, generator=gen, dtype=DTYPE) < 0.5, -1.0, 1.0)
    if isinstance(_reference_of(pot), HyperbolicEntropy):  # θ = β sinh z overflows beyond |z| ≈ 710
        magnitude = torch.cat(
            [
                10.0 ** (8.0 * torch.rand(n // 2, generator=gen, dtype=DTYPE) - 8.0),
                40.0 * torch.rand(n - n // 2, generator=gen, dtype=DTYPE),
            ]
        )
        special = torch.tensor([0.0, 700.0, -700.0], dtype=DTYPE)
    else:
        magnitude = 10.0 ** (26.0 * torch.rand(n, generator=gen, dtype=DTYPE) - 8.0)
        special = torch.tensor([0.0, 1e18, -1e18, 1e-8], dtype=DTYPE)
    return torch.cat([sign * magnitude, special])


def _autograd_derivatives(phi, x):
    x = x.clone().requires_grad_(True)
    (first,) = torch.autograd.grad(phi(x).sum(), x, create_graph=True)
    (second,) = torch.autograd.grad(first.sum(), x)
    return first.detach(), second


# --------------------------------------------------------------------------------------------------
# C2: mirror maps and their inverses
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pot", ALL, ids=_id)
def test_inverse_of_mirror_map_is_identity(pot):
    x = _points()
    z = pot.mirror_map(x)
    x_back = pot.inverse_mirror_map(z)
    assert x_back.dtype == DTYPE and x_back.shape == x.shape
    if _is_odd(pot):
        scale = x.abs()
        assert x_back[x == 0].abs().max() == 0
    else:  # x = (φ′)⁻¹(z) is conditioned by |z − φ′(0)|/φ″(x), not by |x|
        scale = x.abs() + (z - pot.mirror_map(torch.zeros(1, dtype=DTYPE))).abs() / pot.hessian_diag(x)
    assert ((x_back - x).abs() <= RTOL * scale).all(), (x_back - x).abs().div(scale).max()


@pytest.mark.parametrize("pot", ALL, ids=_id)
def test_mirror_map_of_inverse_is_identity(pot):
    z = _dual_points(pot)
    x = pot.inverse_mirror_map(z)
    assert torch.isfinite(x).all()
    z_back = pot.mirror_map(x)
    scale = z.abs()
    if _is_odd(pot):
        assert (x[z == 0] == 0).all()
    else:  # φ′(x) is a sum of terms of size ~|x|φ″(x) that cancel near its root
        scale = scale + x.abs() * pot.hessian_diag(x)
    ok = z != 0
    assert ((z_back - z).abs()[ok] <= RTOL * scale[ok]).all(), ((z_back - z) / scale)[ok].abs().max()


@pytest.mark.parametrize("pot", ALL, ids=_id)
def test_mirror_map_matches_closed_form(pot):
    x = _points(seed=2, n_log=20, n_uniform=8)
    phi, d1, d2 = _mp_functions(pot)
    phi_ref, d1_ref = _mp_map(phi, x), _mp_map(d1, x)
    assert ((pot.mirror_map(x) - d1_ref).abs() <= 1e-12 * d1_ref.abs()).all()
    # φ may cross 0: measure its error on the scale of its terms
    scale = phi_ref.abs() + (x * d1_ref).abs() + _mp_map(phi, torch.zeros(1, dtype=DTYPE)).abs()
    assert ((pot.phi(x) - phi_ref).abs() <= 1e-12 * scale).all()
    nonzero = x[x != 0]
    d2_ref = _mp_map(d2, nonzero)
    assert ((pot.hessian_diag(nonzero) - d2_ref).abs() <= 1e-12 * d2_ref.abs()).all()


@pytest.mark.parametrize("pot", BUILTINS, ids=_id)
def test_inverse_mirror_map_special_values(pot):
    z = torch.tensor([0.0, -0.0, math.inf, -math.inf, math.nan], dtype=DTYPE)
    x = pot.inverse_mirror_map(z)
    assert x[0] == 0 and x[1] == 0
    assert x[2] == math.inf and x[3] == -math.inf
    assert torch.isnan(x[4])
    z = _dual_points(pot, seed=3)
    assert torch.equal(pot.inverse_mirror_map(-z), -pot.inverse_mirror_map(z))


def test_inverse_mirror_map_huge_dual_values():
    z = torch.tensor([1e18, -1e18, 1e300], dtype=DTYPE)
    for pot in (PPowerPlusQuadratic(1.5, 0.1), PPowerPlusQuadratic(3.0, 10.0), SmoothedHomogeneous(3.0, 1.0)):
        x = pot.inverse_mirror_map(z)
        assert torch.isfinite(x).all()
        assert ((pot.mirror_map(x) - z).abs() <= 1e-14 * z.abs()).all()
    # θ = (z/p)^2 = 4.4e35 is finite, (1e300/p)^2 overflows to inf
    x = SmoothedHomogeneous(1.5, 1.0).inverse_mirror_map(z)
    assert torch.allclose(x[:2], torch.tensor([1e36, -1e36], dtype=DTYPE) / 2.25, rtol=1e-14, atol=0)
    assert x[2] == math.inf
    # the exact solutions 1e36 and 1e12 of |x|^{p-1} = 1e18
    x = PPower(1.5).inverse_mirror_map(z[:2])
    assert torch.allclose(x, torch.tensor([1e36, -1e36], dtype=DTYPE), rtol=1e-14, atol=0)
    assert HyperbolicEntropy(0.1).inverse_mirror_map(z[:1]) == math.inf


def test_custom_inverse_mirror_map_keeps_the_sign_beyond_the_float_range_in_a_mixed_call():
    """φ = (x² + 1)^{3/4}: the user's φ′ is 0 past |x| ≈ 1.3e154 (x² overflows), so z = 1e150 has no root in
    floats and maps to +inf. In one call with a bracketed value, the Newton loop had moved its bracket's lower end
    to 0 and the sign came out −inf."""
    pot = SeparablePotential(lambda x: (x * x + 1) ** 0.75)
    x = pot.inverse_mirror_map(torch.tensor([1e6, 1e150, -1e150], dtype=DTYPE))
    # φ′(x) = 1.5 x (x² + 1)^{−1/4}: z = 1e6 at x ≈ (z/1.5)² = 4.4e11
    assert math.isclose(float(x[0]), float(pot.inverse_mirror_map(torch.tensor([1e6], dtype=DTYPE))[0]), rel_tol=0)
    assert math.isclose(float(pot.mirror_map(x[:1])[0]), 1e6, rel_tol=1e-12)
    assert x[1] == math.inf and x[2] == -math.inf


def _he_over_beta(x, beta=0.1):
    """A user's hyperbolic entropy written with x / β: φ′ = asinh(x/β) ≤ 712.8 on floats, but x / β overflows, so
    the computed φ′ is inf from x ≈ 1.8e307 on, where its true value is ≈ 710.5."""
    return x * torch.asinh(x / beta) - torch.sqrt(x * x + beta**2)


def test_custom_inverse_mirror_map_where_phi_prime_overflows_is_an_error():
    """z = 1e6 came back as 1.8e307 (the edge of the overflow, where φ′ = 710.5 ≠ z) with no sign of trouble; now a
    PotentialOverflowError names the potential, the coordinate and where φ′ stops being finite."""
    pot = SeparablePotential(_he_over_beta, name="he_x_over_beta", horizon=Horizon("l1", 1.0, 1.0, 1.0))
    z = torch.tensor([[1.0, 700.0], [-700.0, 1e6]], dtype=DTYPE)
    with pytest.raises(PotentialOverflowError) as info:
        pot.inverse_mirror_map(z)
    message = str(info.value)
    assert isinstance(info.value, FlowSimError) and isinstance(info.value, OverflowError)
    assert "SeparablePotential 'he_x_over_beta'" in message and "coordinate (1, 1) (z = 1000000;" in message
    assert "φ′ reaches only 710.47" in message and "from x = 1.797693134862316e+307 on" in message
    x = pot.inverse_mirror_map(z[:, :1].reshape(-1))  # roots below the overflow stay exact: β sinh z
    assert torch.allclose(x, 0.1 * torch.sinh(z[:, :1].reshape(-1)), rtol=1e-13, atol=0)
    assert pot.inverse_mirror_map(z[0, 1:]) == pytest.approx(0.1 * math.sinh(700.0), rel=1e-13)


def test_custom_inverse_mirror_map_finds_roots_below_a_region_where_phi_prime_is_nan():
    """With x**2 for x * x the derivative 2x·(…) is inf·0 = nan from x ≈ 9e307 on: the bracket search probed there,
    never bracketed z = ±700 (root ±5.1e302) and returned nan. It bisects back below the nan region now."""
    beta = 0.1
    pot = SeparablePotential(
        lambda x: x * torch.asinh(x / beta) - torch.sqrt(x**2 + beta**2), horizon=Horizon("l1", 1.0, 1.0, 1.0)
    )
    z = torch.tensor([700.0, -700.0, 3.0], dtype=DTYPE)
    assert torch.allclose(pot.inverse_mirror_map(z), beta * torch.sinh(z), rtol=1e-13, atol=0)


def test_run_meeting_an_overflowing_phi_prime_fails_with_the_message():
    """φ′(x) = x up to |x| ≈ 8.42, nan beyond (0·exp(10x²) overflows): the flow stops with status failed, the message
    naming the potential, and keeps its trajectory; so does mirror descent."""
    import flowsim
    from flowsim.discrete import mirror_descent
    from flowsim.models import Linear

    pot = SeparablePotential(
        lambda x: x * x / 2 + 0.0 * torch.exp(10.0 * x * x), "walled", Horizon("l2", 2.0, 2.0, 0.5)
    )
    data = ([[1.0, 0.5], [-0.5, -1.0], [0.8, -0.2]], [1, -1, 1])
    tr = flowsim.simulate(Linear(2), data, pot, log_t_end=30.0, n_save=20, theta0=[0.0, 0.0], threads=1)
    assert tr.status.value == "failed" and "PotentialOverflowError: SeparablePotential 'walled'" in tr.message
    assert "use a built-in potential" in tr.message  # flowsim's own message is kept whole, advice included
    assert len(tr) > 2 and float(abs(tr.theta[-1]).max()) < 8.43
    md = mirror_descent(Linear(2), data, pot, step_size=1.0, n_steps=1000, theta0=[0.0, 0.0], threads=1)
    assert md.status.value == "failed" and "SeparablePotential 'walled'" in md.message
    assert "use a built-in potential" in md.message


def test_smoothed_p3_closed_form_inverse_matches_newton_solver():
    """p = 3 inverts φ′(x) = 3x√(x² + λ) in closed form (a quadratic in x²); it must agree with the general
    safeguarded Newton solver used for other p to 1e-15 relative over 60 decades of z and both signs."""
    from flowsim.potentials import _invert_odd_log_softplus

    gen = torch.Generator().manual_seed(5)
    z = torch.logspace(-30, 30, 4001, dtype=DTYPE) * torch.where(torch.rand(4001, generator=gen) < 0.5, -1.0, 1.0)
    for lam in (1e-4, 0.01, 1.0, 50.0):
        pot = SmoothedHomogeneous(3.0, lam)
        newton = _invert_odd_log_softplus(
            z, a=math.log(3.0), b=0.5, c=2.0, d=math.log(lam), g=pot.mirror_map, g_prime=pot.hessian_diag
        )
        x = pot.inverse_mirror_map(z)
        assert ((x - newton).abs() <= 1e-15 * newton.abs()).all()
        assert ((pot.mirror_map(x) - z).abs() <= 2e-15 * z.abs()).all()


# --------------------------------------------------------------------------------------------------
# C2: Hessians
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pot", ALL, ids=_id)
def test_hessian_matches_autograd(pot):
    x = _points(seed=4)
    x = x[x != 0]  # φ″(0) is infinite for p < 2 and autograd's chain rule is 0·inf there
    reference = _reference_of(pot)
    first, second = _autograd_derivatives(reference.phi, x)
    assert ((pot.mirror_map(x) - first).abs() <= RTOL * first.abs()).all()
    hessian = pot.hessian_diag(x)
    assert ((hessian - second).abs() <= RTOL * second.abs()).all(), ((hessian - second) / second).abs().max()


@pytest.mark.parametrize("pot", ALL, ids=_id)
def test_inverse_hessian_is_reciprocal(pot):
    x = _points(seed=5)
    x = x[x != 0]
    product = pot.inverse_hessian_diag(x) * pot.hessian_diag(x)
    assert ((product - 1).abs() <= 1e-13).all()
    v = torch.linspace(-2.0, 3.0, x.numel(), dtype=DTYPE)
    assert torch.equal(pot.inverse_hessian_action(x, v), pot.inverse_hessian_diag(x) * v)


def test_inverse_hessian_at_zero():
    zero = torch.zeros(1, dtype=DTYPE)
    assert PPower(1.5).hessian_diag(zero) == math.inf
    assert PPower(1.5).inverse_hessian_diag(zero) == 0
    assert PPower(3.0).hessian_diag(zero) == 0
    assert PPower(3.0).inverse_hessian_diag(zero) == math.inf
    assert PPowerPlusQuadratic(1.5, 1.0).inverse_hessian_diag(zero) == 0
    assert PPowerPlusQuadratic(3.0, 4.0).inverse_hessian_diag(zero) == 0.25
    assert HyperbolicEntropy(0.1).inverse_hessian_diag(zero) == pytest.approx(0.1, rel=1e-15)


# --------------------------------------------------------------------------------------------------
# C2: Bregman divergence
# --------------------------------------------------------------------------------------------------


def _mp_bregman(pot, a, b):
    phi, d1, _ = _mp_functions(pot)
    out = []
    with mp.workdps(60):
        for row_a, row_b in zip(a.tolist(), b.tolist(), strict=True):
            total = mp.mpf(0)
            for u, v in zip(row_a, row_b, strict=True):
                u, v = mp.mpf(u), mp.mpf(v)
                total += phi(u) - phi(v) - d1(v) * (u - v)
            out.append(float(total))
    return torch.tensor(out, dtype=DTYPE)


@pytest.mark.parametrize("pot", ALL, ids=_id)
def test_bregman_divergence(pot):
    gen = torch.Generator().manual_seed(6)
    a = _points(seed=7)[:48].reshape(6, 8)
    b = a * (1.0 + torch.randn(6, 8, generator=gen, dtype=DTYPE))
    divergence = pot.bregman_divergence(a, b)
    assert divergence.shape == (6,)
    assert (divergence >= 0).all()
    assert (pot.bregman_divergence(a, a) == 0).all()
    reference = _mp_bregman(pot, a, b)
    assert ((divergence - reference).abs() <= 1e-10 * reference).all()


@pytest.mark.parametrize("pot", BUILTINS, ids=_id)
def test_bregman_divergence_nearly_equal_points(pot):
    """a ≈ b: the direct formula cancels; the built-ins keep relative accuracy (quadrature)."""
    a = _points(seed=8)[:48]
    a = a[a != 0].reshape(1, -1)
    for relative_gap in (1e-3, 1e-7):
        b = a * (1.0 + relative_gap)
        reference = _mp_bregman(pot, a, b)
        divergence = pot.bregman_divergence(a, b)
        assert ((divergence - reference).abs() <= 1e-10 * reference).all()


# --------------------------------------------------------------------------------------------------
# Q (balance quantity) and horizons
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pot", ALL, ids=_id)
def test_q_function_is_fenchel_conjugate_of_mirror_map(pot):
    x = _points(seed=9, n_log=30, n_uniform=10)
    phi, d1, _ = _mp_functions(pot)
    with mp.workdps(50):
        reference = torch.tensor([float(mp.mpf(v) * d1(mp.mpf(v)) - phi(mp.mpf(v))) for v in x.tolist()], dtype=DTYPE)
    scale = (x * _mp_map(d1, x)).abs() + _mp_map(phi, x).abs()
    q = pot.q_function(x)
    assert ((q - reference).abs() <= 1e-12 * scale).all()
    own = x * pot.mirror_map(x) - pot.phi(x)
    assert ((q - own).abs() <= 1e-12 * scale).all()


def test_q_function_closed_forms():
    x = _points(seed=10)
    assert torch.equal(Euclidean().q_function(x), x**2 / 2)
    for beta in (0.01, 1.0, 10.0):
        assert torch.allclose(HyperbolicEntropy(beta).q_function(x), torch.sqrt(x**2 + beta**2), rtol=1e-15)
    assert torch.allclose(PPower(3.0).q_function(x), (2.0 / 3.0) * x.abs() ** 3, rtol=1e-15, atol=0)


@pytest.mark.parametrize("pot", ALL, ids=_id)
def test_q_approaches_its_horizon(pot):
    x = torch.tensor([1e6, -1e6, 1e12, -1e12], dtype=DTYPE)
    ratio = pot.q_function(x) / pot.q_horizon(x)
    deviation = (ratio - 1).abs()
    assert (deviation[2:] <= 1e-5).all()
    assert (deviation[2:] <= deviation[:2]).all() or (deviation[2:] <= 1e-12).all()
    reference = _reference_of(pot)
    if isinstance(reference, PPowerPlusQuadratic) and reference.p < 2:
        # Q/Q∞ − 1 = (1 − 1/p)|x|^{p−2}/(λ/2) exactly; 6.7e-3 at 1e6 for p = 1.5, λ = 0.1
        p, lam = reference.p, reference.lam
        expected = (1 - 1 / p) * x.abs() ** (p - 2) / (lam / 2)
        assert torch.allclose(deviation, expected, rtol=1e-6)
    else:
        assert (deviation[:2] <= 1e-3).all()


def test_horizons_of_builtins():
    assert Euclidean().horizon == Horizon("l2", 2.0, 2.0, 0.5)
    assert HyperbolicEntropy(0.3).horizon == Horizon("l1", 1.0, 1.0, 1.0)
    assert PPower(3.0).horizon == Horizon("lp", 3.0, 3.0, 1.0 - 1.0 / 3.0)
    assert SmoothedHomogeneous(1.5, 2.0).horizon == Horizon("lp", 1.5, 1.5, 0.5)
    assert PPowerPlusQuadratic(3.0, 2.0).horizon == Horizon("lp", 3.0, 3.0, 1.0 - 1.0 / 3.0)
    assert PPowerPlusQuadratic(1.5, 2.0).horizon == Horizon("l2", 2.0, 2.0, 1.0)
    assert PPowerPlusQuadratic(2.0, 2.0).horizon == Horizon("l2", 2.0, 2.0, 1.5)


def test_horizon_function():
    theta = torch.tensor([[1.0, -2.0, 3.0], [0.0, 0.5, -0.5]], dtype=DTYPE)
    assert torch.equal(HyperbolicEntropy(0.1).horizon_function(theta), theta.abs().sum(-1))
    assert torch.equal(Euclidean().horizon_function(theta), 0.5 * (theta**2).sum(-1))
    pot = SmoothedHomogeneous(3.0, 1.0)
    assert torch.allclose(pot.horizon_function(theta), 2.0 * (theta.abs() ** 3).sum(-1), rtol=1e-15)
    assert torch.equal(pot.horizon_function(theta), pot.q_horizon(theta).sum(-1))


@pytest.mark.parametrize("pot", ALL, ids=_id)
def test_estimate_horizon_recovers_known_horizon(pot):
    expected = _reference_of(pot).horizon if pot.name != "asymmetric" else Horizon("l2", 2.0, 2.0, 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        estimate = estimate_horizon(pot)
    assert estimate.name == expected.name
    assert abs(estimate.alpha - expected.alpha) <= 1e-3
    assert abs(estimate.p - expected.p) <= 1e-3
    assert abs(estimate.coefficient / expected.coefficient - 1) <= 1e-3
    if isinstance(pot, SeparablePotential):
        assert pot.horizon_estimated and pot.horizon == estimate


def test_estimate_horizon_rejects_sublinear_potential():
    with pytest.raises(InvalidParameterError, match="horizon"):
        SeparablePotential(lambda x: torch.log(torch.cosh(x)), name="logcosh")
    # an explicit horizon skips the estimate
    pot = SeparablePotential(lambda x: torch.log(torch.cosh(x)), horizon=Horizon("l1", 1.0, 1.0, 1.0))
    assert not pot.horizon_estimated


# --------------------------------------------------------------------------------------------------
# Shapes, dtypes, global state
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pot",
    [Euclidean(), HyperbolicEntropy(0.1), PPower(3.0), SmoothedHomogeneous(1.5, 1.0)]
    + [PPowerPlusQuadratic(3.0, 1.0), CUSTOM["quartic"][0]],
    ids=_id,
)
def test_shapes_and_dtypes(pot):
    gen = torch.Generator().manual_seed(11)
    theta = torch.randn(3, 4, 5, generator=gen, dtype=DTYPE)
    for method in ("phi", "mirror_map", "inverse_mirror_map", "hessian_diag", "inverse_hessian_diag"):
        out = getattr(pot, method)(theta)
        assert out.shape == theta.shape and out.dtype == DTYPE, method
    for method in ("q_function", "q_horizon"):
        assert getattr(pot, method)(theta).shape == theta.shape
    assert pot.value(theta).shape == (3, 4)
    assert pot.horizon_function(theta).shape == (3, 4)
    assert pot.bregman_divergence(theta, 0.5 * theta).shape == (3, 4)
    assert pot.inverse_hessian_action(theta, theta).shape == theta.shape
    assert torch.allclose(pot.value(theta), pot.phi(theta).sum(-1))
    single = theta.to(torch.float32)
    back = pot.inverse_mirror_map(pot.mirror_map(single))
    assert back.dtype == torch.float32
    assert torch.allclose(back, single, rtol=1e-5, atol=1e-6)
    assert pot.mirror_map(1.5).dtype == DTYPE  # Python numbers become float64


def test_no_global_state_is_touched():
    rng_state = torch.get_rng_state()
    default_dtype = torch.get_default_dtype()
    z = torch.linspace(-50.0, 50.0, 101, dtype=DTYPE)
    for pot in ALL:
        pot.inverse_mirror_map(z)
        pot.bregman_divergence(z, 0.9 * z)
    estimate_horizon(SmoothedHomogeneous(3.0, 1.0))
    assert torch.equal(torch.get_rng_state(), rng_state)
    assert torch.get_default_dtype() == default_dtype


def test_custom_potential_under_no_grad_and_inference_mode():
    pot = CUSTOM["quartic"][0]
    x = torch.tensor([0.5, -2.0, 3.0], dtype=DTYPE)
    expected = x**3 + x
    with torch.no_grad():
        assert torch.allclose(pot.mirror_map(x), expected, rtol=1e-15)
    with torch.inference_mode():
        xi = x.clone()
        assert torch.allclose(pot.inverse_mirror_map(pot.mirror_map(xi)), xi, rtol=1e-14)
    xg = x.clone().requires_grad_(True)
    pot.mirror_map(xg).sum().backward()  # differentiable when the input requires grad
    assert torch.allclose(xg.grad, 3 * x**2 + 1, rtol=1e-15)


# --------------------------------------------------------------------------------------------------
# Parameters, errors, registry
# --------------------------------------------------------------------------------------------------


def test_error_message_names_value_and_fix():
    with pytest.raises(InvalidParameterError) as info:
        HyperbolicEntropy(-1.0)
    assert str(info.value) == "HyperbolicEntropy needs beta > 0, got -1.0; pass a positive scale such as beta=0.1"
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("factory", "kwargs", "parameter"),
    [
        (HyperbolicEntropy, {"beta": 0.0}, "beta"),
        (HyperbolicEntropy, {"beta": -1.0}, "beta"),
        (HyperbolicEntropy, {"beta": math.nan}, "beta"),
        (HyperbolicEntropy, {"beta": math.inf}, "beta"),
        (HyperbolicEntropy, {"beta": "0.1"}, "beta"),
        (PPower, {"p": 1.0}, "p"),
        (PPower, {"p": 0.5}, "p"),
        (PPower, {"p": -2.0}, "p"),
        (PPower, {"p": math.nan}, "p"),
        (SmoothedHomogeneous, {"p": 1.0, "lam": 1.0}, "p"),
        (SmoothedHomogeneous, {"p": 3.0, "lam": 0.0}, "lam"),
        (SmoothedHomogeneous, {"p": 3.0, "lam": -1.0}, "lam"),
        (SmoothedHomogeneous, {"p": 3.0, "lam": math.nan}, "lam"),
        (PPowerPlusQuadratic, {"p": 0.9, "lam": 1.0}, "p"),
        (PPowerPlusQuadratic, {"p": 3.0, "lam": 0.0}, "lam"),
        (PPowerPlusQuadratic, {"p": 3.0, "lam": -0.5}, "lam"),
    ],
)
def test_invalid_parameters_raise(factory, kwargs, parameter):
    with pytest.raises(InvalidParameterError) as info:
        factory(**kwargs)
    message = str(info.value)
    assert factory.__name__ in message
    assert f"{parameter}" in message and "got" in message
    assert "such as" in message or "e.g." in message


def test_p_at_most_one_message_explains():
    with pytest.raises(InvalidParameterError, match=r"p > 1, got p=1\.0.*HyperbolicEntropy"):
        PPower(1.0)


def test_params_and_repr_roundtrip():
    for pot in BUILTINS:
        params = pot.params()
        json.dumps(params)
        rebuilt = get_potential(pot.name, **params)
        assert type(rebuilt) is type(pot) and rebuilt.params() == params
        assert repr(rebuilt) == repr(pot)
    assert repr(HyperbolicEntropy(0.1)) == "HyperbolicEntropy(beta=0.1)"
    assert repr(Euclidean()) == "Euclidean()"
    assert repr(SmoothedHomogeneous(3, 1)) == "SmoothedHomogeneous(p=3.0, lam=1.0)"
    assert CUSTOM["quartic"][0].params() == {"name": "quartic"}


def test_get_potential():
    assert isinstance(get_potential("he", beta=0.1), HyperbolicEntropy)
    assert isinstance(get_potential("Hyperbolic-Entropy", beta=0.1), HyperbolicEntropy)
    assert isinstance(get_potential("euclidean"), Euclidean)
    assert get_potential("p_power", p=3).params() == {"p": 3.0}
    assert get_potential("p_power_quadratic", p=3, lam=2).params() == {"p": 3.0, "lam": 2.0}
    assert set(POTENTIALS) == {
        "euclidean",
        "hyperbolic_entropy",
        "p_power",
        "smoothed_homogeneous",
        "p_power_quadratic",
    }
    assert all(issubclass(cls, AbstractPotential) for cls in POTENTIALS.values())
    with pytest.raises(InvalidParameterError) as info:
        get_potential("entropy")
    for name in POTENTIALS:
        assert name in str(info.value)
    assert "'he'" in str(info.value)
    with pytest.raises(InvalidParameterError, match="beta"):
        get_potential("hyperbolic_entropy")
    with pytest.raises(InvalidParameterError, match="does not take beta"):
        get_potential("euclidean", beta=0.1)
    with pytest.raises(InvalidParameterError, match="lam"):
        get_potential("smoothed_homogeneous", p=3.0, lam=-1.0)


def test_separable_potential_validation():
    with pytest.raises(InvalidParameterError, match="callable"):
        SeparablePotential(3.0)
    with pytest.raises(InvalidParameterError, match="elementwise"):
        SeparablePotential(lambda x: x**2 * x.abs().mean())
    with pytest.raises(InvalidParameterError, match="same shape"):
        SeparablePotential(lambda x: (x**2).sum())
    with pytest.raises(InvalidParameterError, match="strictly convex"):
        SeparablePotential(lambda x: -(x**2))
    # φ″ ≡ 0 by autograd is an unallocated zero tensor: the convexity message itself must not fail on it
    with pytest.raises(InvalidParameterError, match=r"strictly convex, but phi'' at .* is \[0\.0, 0\.0"):
        SeparablePotential(torch.abs)
    for not_autograd in (torch.zeros_like, lambda x: x.detach() ** 2):
        with pytest.raises(InvalidParameterError, match="differentiable by torch autograd.*torch operations"):
            SeparablePotential(not_autograd)
    with pytest.raises(InvalidParameterError, match="Horizon"):
        SeparablePotential(_quartic, horizon=(4, 4))
    pot = SeparablePotential(_quartic, horizon=Horizon("lp", 4.0, 4.0, 0.75))
    assert not pot.horizon_estimated and pot.horizon.coefficient == 0.75


@pytest.mark.parametrize("p", [1.1, 1.2, 1.5, 2.5, 3.0, 4.0])
def test_smoothed_homogeneous_inverse_hessian_does_not_overflow(p):
    """1/φ″ = r^{4−p}/(p((p−1)x² + λ)) for the smoothed homogeneous potential, against the same formula in log
    space, for |x| up to 1e250: finite and to 1e-12 relative (a review found r^{3−p} overflowing for p < 2 in
    an earlier fast path; p = 3 has its own closed form)."""
    lam = 1.0
    pot = SmoothedHomogeneous(p, lam)
    x = torch.tensor([1e-8, 0.3, 7.0, 1e50, 1e200, 1e250], dtype=torch.float64)
    got = pot.inverse_hessian_diag(x)
    xs = [float(v) for v in x]
    log_r = [0.5 * math.log(v * v + lam) if v < 1e100 else math.log(v) + 0.5 * math.log1p(lam / v / v) for v in xs]
    log_den = [
        math.log(p) + math.log((p - 1) * v * v + lam) if v < 1e100 else math.log(p * (p - 1)) + 2 * math.log(v)
        for v in xs
    ]
    expect = torch.tensor(
        [math.exp((4 - p) * lr - ld) for lr, ld in zip(log_r, log_den, strict=True)], dtype=torch.float64
    )
    assert bool(torch.isfinite(got).all())
    assert torch.allclose(got, expect, rtol=1e-12, atol=0.0)
