"""Tests of flowsim.analysis.references against closed forms and independent solvers (SLSQP on the primal, NNLS)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import linprog, minimize, nnls

from flowsim.analysis.references import (
    MaxMarginSolution,
    max_margin,
    max_margin_l1,
    max_margin_linf,
    max_margin_lp,
    svm_l2,
)
from flowsim.data import make_dataset, soudry_2d
from flowsim.errors import InvalidParameterError, ReferenceSolverError


def random_Z(n: int, d: int, seed: int) -> np.ndarray:
    """Asymmetric separable Z = y x with a random teacher, margin bounded away from 0."""
    rng = np.random.default_rng(seed)
    w_star = rng.normal(size=d)
    w_star /= np.linalg.norm(w_star)
    X = rng.normal(size=(n, d)) * rng.uniform(0.5, 1.5, size=(n, 1))
    y = np.sign(X @ w_star)
    X += 0.2 * y[:, None] * w_star
    return y[:, None] * X


def feasible_start(Z: np.ndarray) -> np.ndarray:
    """A well-scaled strictly feasible point: max t s.t. Z w ≥ t, −1 ≤ w ≤ 1 (plain HiGHS), rescaled.

    The result has min_i ⟨z_i, w⟩ = 1.5; it is computed here, independently of flowsim.analysis.references.
    """
    n, d = Z.shape
    A = np.hstack([-Z, np.ones((n, 1))])
    c = np.append(np.zeros(d), -1.0)
    res = linprog(c, A_ub=A, b_ub=np.zeros(n), bounds=[(-1, 1)] * d + [(None, None)], method="highs")
    assert res.status == 0 and -res.fun > 0
    w = res.x[:d]
    return 1.5 * w / (Z @ w).min()


def slsqp_primal(Z: np.ndarray, fun, jac, x0: np.ndarray) -> np.ndarray:
    """Independent primal solve min fun(w) s.t. Z w ≥ 1 with SLSQP from a given start."""
    res = minimize(
        fun,
        x0,
        jac=jac,
        method="SLSQP",
        constraints=[{"type": "ineq", "fun": lambda w: Z @ w - 1.0, "jac": lambda w: Z}],
        options={"ftol": 1e-14, "maxiter": 1000},
    )
    return res.x


def kkt_residual_l2(Z: np.ndarray, w: np.ndarray, alpha: np.ndarray) -> float:
    q = Z @ w - 1.0
    return max(
        max(0.0, -q.min()),
        max(0.0, -alpha.min()) / alpha.max(),
        np.abs(w - Z.T @ alpha).max() / np.abs(w).max(),
        np.abs(alpha * q).max() / alpha.max(),
    )


# ------------------------------------------------------------------ l2


@pytest.mark.parametrize("seed, n, d", [(0, 12, 3), (1, 30, 5), (2, 8, 10), (3, 50, 2)])
def test_svm_l2_matches_independent_primal_and_kkt(seed, n, d):
    Z = random_Z(n, d, seed)
    sol = svm_l2(Z)
    assert isinstance(sol, MaxMarginSolution) and sol.norm == "l2" and sol.unique is True
    # independent primal solve from a feasible point found by an LP (not from our solution)
    w_ref = slsqp_primal(Z, lambda w: 0.5 * w @ w, lambda w: w, feasible_start(Z))
    np.testing.assert_allclose(sol.w, w_ref, atol=1e-6 * np.abs(w_ref).max())
    assert kkt_residual_l2(Z, sol.w, sol.dual) < 1e-10
    assert max(sol.kkt.values()) < 1e-10
    assert sol.margin == pytest.approx(1.0 / np.linalg.norm(sol.w), rel=1e-12)
    assert sol.dual.sum() == pytest.approx(sol.w @ sol.w, rel=1e-10)  # ‖ŵ‖² = Σ α_i
    np.testing.assert_array_equal(sol.support, np.flatnonzero(Z @ sol.w - 1.0 <= 1e-9))
    assert np.linalg.norm(sol.direction) == pytest.approx(1.0)


def test_svm_l2_two_points_closed_form():
    # z1 = (1, 0), z2 = (1/2, 1): K = [[1, 1/2], [1/2, 5/4]], α = K⁻¹1 = (3/4, 1/2), w = (1, 1/2)
    Z = np.array([[1.0, 0.0], [0.5, 1.0]])
    sol = svm_l2(Z)
    np.testing.assert_allclose(sol.w, [1.0, 0.5], rtol=1e-14)
    np.testing.assert_allclose(sol.dual, [0.75, 0.5], rtol=1e-13)
    assert sol.margin == pytest.approx(1.0 / math.sqrt(1.25), rel=1e-14)
    # general two-point formula on random non-degenerate pairs: w = Zᵀ K⁻¹ 1 when K⁻¹ 1 > 0
    rng = np.random.default_rng(7)
    for _ in range(5):
        Z2 = rng.normal(size=(2, 4)) + np.array([3.0, 0, 0, 0])
        alpha = np.linalg.solve(Z2 @ Z2.T, np.ones(2))
        if (alpha > 0).all():
            np.testing.assert_allclose(svm_l2(Z2).w, Z2.T @ alpha, rtol=1e-12)


def test_svm_l2_single_point_and_scaling():
    z = np.array([[3.0, -4.0]])
    sol = svm_l2(z)
    np.testing.assert_allclose(sol.w, z[0] / 25.0, rtol=1e-14)
    assert sol.margin == pytest.approx(5.0)
    big = svm_l2(1e6 * z)  # scale-invariant up to the trivial 1/c factor
    np.testing.assert_allclose(big.w, sol.w / 1e6, rtol=1e-12)
    np.testing.assert_allclose(big.dual, sol.dual / 1e12, rtol=1e-12)


def test_svm_l2_soudry_closed_form():
    ds = soudry_2d()
    sol = svm_l2(ds)  # a Dataset is accepted
    np.testing.assert_allclose(sol.w, [0.25, 0.5], atol=1e-15)
    np.testing.assert_allclose(sol.dual, [1 / 8, 3 / 16, 0, 0, 0], atol=1e-15)
    assert sol.margin == pytest.approx(4 / math.sqrt(5), rel=1e-15)
    assert sol.support.tolist() == [0, 1]


def test_svm_l2_degenerate_support():
    # three support vectors in 2-D (z3 = (z1 + z2)/2 is on the margin) plus a duplicate: α not unique
    Z = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.5, 0.5], [2.0, 3.0]])
    sol = svm_l2(Z)
    np.testing.assert_allclose(sol.w, [1.0, 1.0], rtol=1e-13)
    assert kkt_residual_l2(Z, sol.w, sol.dual) < 1e-12
    assert sol.support.tolist() == [0, 1, 2, 3]


# ------------------------------------------------------------------ l1, linf


def test_l1_known_by_construction_and_hand_solution():
    # one row has z_0 = a and |z_j| < a elsewhere, all rows have z_0 ≥ a: ŵ = e_0 / a, unique.
    rng = np.random.default_rng(3)
    a = 0.7
    Z = rng.uniform(-0.6, 0.6, size=(15, 6))
    Z[:, 0] = a + rng.uniform(0.0, 1.0, size=15)
    Z[4, 0] = a
    sol = max_margin_l1(Z)
    np.testing.assert_allclose(sol.w, np.eye(6)[0] / a, atol=1e-14)
    assert sol.unique is True and sol.support.tolist() == [4]
    assert sol.margin == pytest.approx(a, rel=1e-13)
    np.testing.assert_allclose(sol.dual, np.eye(15)[4] / a, atol=1e-12)
    # soudry_2d by hand: min |a| + |b| s.t. b ≥ 1/2, 2a + b ≥ 1, ... gives (1/4, 1/2), margin 4/3
    s2 = max_margin_l1(soudry_2d())
    np.testing.assert_allclose(s2.w, [0.25, 0.5], atol=1e-14)
    assert s2.margin == pytest.approx(4 / 3) and s2.unique is True


@pytest.mark.parametrize("seed, n, d", [(0, 10, 6), (1, 25, 4)])
def test_l1_and_linf_vs_slsqp_smooth_reformulations(seed, n, d):
    Z = random_Z(n, d, seed)
    # ℓ1: min Σ(u + v) s.t. Z(u − v) ≥ 1, u, v ≥ 0 — a smooth (linear) program, solved by SLSQP
    sol1 = max_margin_l1(Z)
    x0 = np.concatenate([np.maximum(svm_l2(Z).w, 0), np.maximum(-svm_l2(Z).w, 0)]) * 1.5
    A = np.hstack([Z, -Z])
    res = minimize(
        lambda x: x.sum(),
        x0,
        jac=lambda x: np.ones_like(x),
        method="SLSQP",
        bounds=[(0, None)] * (2 * d),
        constraints=[{"type": "ineq", "fun": lambda x: A @ x - 1.0, "jac": lambda x: A}],
        options={"ftol": 1e-14, "maxiter": 1000},
    )
    assert res.success
    assert np.abs(sol1.w).sum() == pytest.approx(res.fun, rel=1e-7)
    if sol1.unique:
        np.testing.assert_allclose(sol1.w, res.x[:d] - res.x[d:], atol=1e-5 * np.abs(sol1.w).max())
    # dual certificate: ‖Zᵀλ‖∞ ≤ 1, Σλ = ‖w‖₁ (strong duality)
    assert np.abs(Z.T @ sol1.dual).max() <= 1 + 1e-10 and (sol1.dual >= 0).all()
    assert sol1.dual.sum() == pytest.approx(np.abs(sol1.w).sum(), rel=1e-10)
    assert (Z @ sol1.w).min() >= 1 - 1e-12

    # ℓ∞: min t s.t. Z w ≥ 1, t ± w ≥ 0
    soli = max_margin_linf(Z)
    w2 = svm_l2(Z).w
    y0 = np.append(w2, np.abs(w2).max()) * 1.5
    B = np.vstack(
        [
            np.hstack([Z, np.zeros((n, 1))]),
            np.hstack([-np.eye(d), np.ones((d, 1))]),
            np.hstack([np.eye(d), np.ones((d, 1))]),
        ]
    )
    rhs = np.concatenate([np.ones(n), np.zeros(2 * d)])
    res = minimize(
        lambda x: x[-1],
        y0,
        jac=lambda x: np.eye(d + 1)[-1],
        method="SLSQP",
        constraints=[{"type": "ineq", "fun": lambda x: B @ x - rhs, "jac": lambda x: B}],
        options={"ftol": 1e-14, "maxiter": 1000},
    )
    assert res.success
    assert np.abs(soli.w).max() == pytest.approx(res.fun, rel=1e-7)
    assert np.abs(Z.T @ soli.dual).sum() <= 1 + 1e-10
    assert soli.dual.sum() == pytest.approx(np.abs(soli.w).max(), rel=1e-10)
    assert soli.margin == pytest.approx(1 / np.abs(soli.w).max())


def test_single_point_dual_norm_closed_forms():
    # one point z: the ℓp max margin is ‖z‖_q (q the dual exponent), w_j ∝ sign(z_j)|z_j|^{q−1}
    z = np.array([[0.5, -2.0, 1.0]])
    assert max_margin_l1(z).margin == pytest.approx(2.0)  # ‖z‖∞
    np.testing.assert_allclose(max_margin_l1(z).w, [0.0, -0.5, 0.0], atol=1e-14)
    soli = max_margin_linf(z)
    assert soli.margin == pytest.approx(3.5) and soli.unique is True  # ‖z‖₁
    np.testing.assert_allclose(soli.w, np.sign(z[0]) / 3.5, atol=1e-14)
    for p in (1.5, 3.0):
        q = p / (p - 1)
        sol = max_margin_lp(z, p)
        w = np.sign(z[0]) * np.abs(z[0]) ** (q - 1) / np.sum(np.abs(z[0]) ** q)
        np.testing.assert_allclose(sol.w, w, rtol=1e-10)
        assert sol.margin == pytest.approx(np.sum(np.abs(z) ** q) ** (1 / q), rel=1e-10)


def test_l1_linf_non_unique_detected():
    sol = max_margin_l1(np.array([[1.0, 1.0]]))  # any w ≥ 0 with w1 + w2 = 1
    assert sol.unique is False and "NOT unique" in sol.message
    assert np.abs(sol.w).sum() == pytest.approx(1.0)
    soli = max_margin_linf(soudry_2d())  # w = (a, 1/2) for any a in [1/4, 1/2]
    assert soli.unique is False
    assert np.abs(soli.w).max() == pytest.approx(0.5)
    assert max_margin_linf(soudry_2d(), check_unique=False).unique is None


# ------------------------------------------------------------------ lp


def test_lp_p2_equals_svm():
    Z = random_Z(20, 4, 5)
    np.testing.assert_allclose(max_margin_lp(Z, 2.0).w, svm_l2(Z).w, rtol=1e-6)
    np.testing.assert_allclose(max_margin_lp(Z, 2.0).dual, svm_l2(Z).dual, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("p", [1.5, 3.0])
@pytest.mark.parametrize("seed, n, d", [(0, 15, 4), (1, 30, 8)])
def test_lp_kkt_via_nnls_and_independent_slsqp(p, seed, n, d):
    Z = random_Z(n, d, seed)
    sol = max_margin_lp(Z, p)
    w = sol.w
    assert sol.norm == "lp" and sol.p == p and sol.unique is True
    assert (Z @ w).min() >= 1 - 1e-12
    # KKT: ∇‖w‖_p^p = p sign(w)|w|^{p−1} is a nonnegative combination of the active z_i
    g = p * np.sign(w) * np.abs(w) ** (p - 1)
    active = np.flatnonzero(Z @ w - 1 <= 1e-8)
    lam, rnorm = nnls(Z[active].T, g)
    assert rnorm <= 1e-9 * np.linalg.norm(g)
    np.testing.assert_allclose(Z.T @ sol.dual, g / p, atol=1e-10 * np.abs(g).max())
    # independent SLSQP on the primal, started from an LP-feasible point (not the ℓ2 solution)
    w_ref = slsqp_primal(
        Z,
        lambda v: np.sum(np.abs(v) ** p),
        lambda v: p * np.sign(v) * np.abs(v) ** (p - 1),
        feasible_start(Z),
    )
    np.testing.assert_allclose(w, w_ref, atol=1e-5 * np.abs(w).max())
    assert sol.margin == pytest.approx(1 / np.linalg.norm(w, ord=p), rel=1e-12)


def test_lp_margins_interpolate_between_l1_and_linf():
    Z = random_Z(25, 6, 11)
    margins = [max_margin(Z, p).margin for p in (1, 1.5, 2, 3, 6, math.inf)]
    assert all(
        a < b for a, b in zip(margins[:-1], margins[1:], strict=True)
    )  # ‖·‖_p decreasing in p ⇒ margins increase


# ------------------------------------------------------------------ failures and dispatch


NON_SEPARABLE = np.array([[1.0, 0.5], [-1.0, -0.5], [0.3, 1.0]])  # z and −z


@pytest.mark.parametrize(
    "solver",
    [svm_l2, max_margin_l1, max_margin_linf, lambda Z: max_margin_lp(Z, 1.5), lambda Z: max_margin(Z, 3)],
)
def test_non_separable_raises(solver):
    with pytest.raises(ReferenceSolverError, match="not linearly separable"):
        solver(NON_SEPARABLE)
    with pytest.raises(ReferenceSolverError, match="z_i = 0"):
        solver(np.array([[1.0, 0.0], [0.0, 0.0]]))


def test_non_separable_dataset_message_has_hint():
    X = np.array([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]])
    with pytest.raises(ReferenceSolverError) as info:
        svm_l2(make_dataset(X, [1, 1, -1, -1]))
    assert "is_linearly_separable" in str(info.value)


def test_dispatcher():
    Z = random_Z(12, 3, 4)
    assert max_margin(Z, "l2").norm == "l2" and max_margin(Z, 2).norm == "l2"
    assert max_margin(Z, "L1").norm == "l1" and max_margin(Z, 1).norm == "l1"
    assert max_margin(Z, "linf").norm == "linf" and max_margin(Z, math.inf).norm == "linf"
    assert max_margin(Z, "l1.5").p == 1.5 and max_margin(Z, 3).norm == "lp"
    for bad in ("l0", "euclid", 0.5, True):
        with pytest.raises(InvalidParameterError):
            max_margin(Z, bad)
    with pytest.raises(InvalidParameterError, match="max_margin_l1"):
        max_margin_lp(Z, 1.0)
