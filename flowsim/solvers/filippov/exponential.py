"""Soft crossings inside a stiff (Radau) step: the state correction as an exponential-integrator term.

A soft step keeps an accepted step of the old activation pattern and corrects its end for the crossings inside
it (:mod:`.soft`). The correction δz solves, to first order in the pattern difference ΔF(τ) of the crossed
points, the linear equation

    δz′ = J δz + ΔF(τ),   δz(τ_c) = 0,   on [τ_c, τ_e]   (τ_c the first crossing, L = τ_e − τ_c),

J the new-pattern field's Jacobian at the step end. The explicit driver takes δz ≈ Δz + J ∫Δz dτ with
Δz(τ) = ∫_{τ_c}^τ ΔF (first order in L·J); in a stiff step |λ|·L ≫ 1 for the fast modes, whose exact δz is
about −ΔF/λ, not Δz. Writing δz = Δz + R, R′ = J R + J Δz(τ), R(τ_c) = 0, so

    δz(τ_e) = Δz(τ_e) + ∫_0^L e^{J(L−r)} J Δz(τ_c + r) dr.

Δz(τ_c + r) is continuous (kinked at the crossings) and is replaced by the cubic p(r) = a ρ + b ρ² + c ρ³,
ρ = r/L, with p(L) = Δz(τ_e), p′(L) = ΔF(τ_e) and ∫_0^L p dr = ∫ Δz dτ (all three from the closed-form
correction). With ∫_0^L e^{A(1−ρ)} ρ^k dρ = k! φ_{k+1}(A), A = JL, and A φ_{k+1}(A) = φ_k(A) − I/k!:

    δz(τ_e) = φ₁(A) a + 2 φ₂(A) b + 6 φ₃(A) c,

the φ-functions of exponential integrators. Non-stiff limit (φ_k(0) = 1/k!): δz = Δz + J ∫ Δz dτ + O(L²J²),
the explicit driver's coupling; stiff limit (λL → −∞): δz = −p′(L)/λ = −ΔF(τ_e)/λ, the quasi-static response.
The three φ-function actions come from one matrix exponential of the (p+3)×(p+3) augmented matrix
[[A, W], [0, N₃]] (W = [6c, 2b, a], N₃ the 3×3 shift): its top-right column is Σ_k φ_k(A) w_k. J need not be
symmetric (sliding neurons' equivalent control is in it). The Radau driver uses the quartic fit (one more
condition, ∫ (L − r) p dr = ∫ (τ_e − τ) Δz dτ, so the non-stiff J² term is exact too) and the cubic's difference
from it as the fit's error estimate (:func:`stiff_correction_pair`, both from one exponential).

References:
    Hochbruck & Ostermann, "Exponential integrators", Acta Numerica 19 (2010) (φ-functions, §2);
    Al-Mohy & Higham, "Computing the action of the matrix exponential", SIAM J. Sci. Comput. 33 (2011),
    Theorem 2.1 (the augmented matrix; after Saad 1992 and Sidje's Expokit 1998).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# the cubic fit's conditions [p(L), L p′(L), (1/L) ∫ p] = _FIT · [a, b, c]
_FIT = torch.tensor([[1.0, 1.0, 1.0], [1.0, 2.0, 3.0], [1 / 2, 1 / 3, 1 / 4]], dtype=torch.float64)
_FIT_INV = torch.linalg.inv(_FIT)
# the quartic fit's: [p(L), L p′(L), (1/L) ∫ p, (1/L²) ∫ (L − r) p] = _FIT4 · [a, b, c, e]
_FIT4 = torch.tensor(
    [[1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0], [1 / 2, 1 / 3, 1 / 4, 1 / 5], [1 / 6, 1 / 12, 1 / 20, 1 / 30]],
    dtype=torch.float64,
)
_FIT4_INV = torch.linalg.inv(_FIT4)


def phi_actions(A: Tensor, *Ws: Tensor) -> Tensor | list[Tensor]:
    """Σ_{k=1}^{q} φ_k(A) w_k for A `(p, p)` and each W = [w_q, …, w_1] `(p, q)` (Al-Mohy & Higham 2011, Thm 2.1).

    One matrix exponential of [[A, W₁, W₂, …], [0, N_q₁, 0, …], [0, 0, N_q₂, …], …] (N_q ones on the
    superdiagonal): the last column of each W block's part of the result is its sum. The W's are scaled to A's
    norm first (the exponential's scaling and squaring then treats the blocks alike). Returns `(p,)` for one W,
    else a list.
    """
    p = A.shape[0]
    total = sum(W.shape[1] for W in Ws)
    scale = max(float(W.abs().max()) for W in Ws)
    if scale == 0.0:
        out = [torch.zeros(p, dtype=A.dtype, device=A.device) for _ in Ws]
        return out[0] if len(Ws) == 1 else out
    eta = max(float(A.abs().sum(0).max()), 1.0) / scale
    M = torch.zeros(p + total, p + total, dtype=A.dtype, device=A.device)
    M[:p, :p] = A
    ends, off = [], p
    for W in Ws:
        q = W.shape[1]
        M[:p, off : off + q] = eta * W
        M[off : off + q, off : off + q] = torch.diag(torch.ones(q - 1, dtype=A.dtype, device=A.device), 1)
        off += q
        ends.append(off - 1)
    E = torch.linalg.matrix_exp(M)
    out = [E[:p, e] / eta for e in ends]
    return out[0] if len(Ws) == 1 else out


def _fit_weights(fit_inv: Tensor, conditions: list[Tensor]) -> Tensor:
    """The φ-function weights [k!·c_k, …, 1!·c_1] `(p, q)` of the polynomial fit c_1 ρ + … + c_q ρ^q whose
    ``conditions`` (rows of the fit's matrix) are given, `(q, p)` each."""
    coef = fit_inv.to(dtype=conditions[0].dtype, device=conditions[0].device) @ torch.stack(conditions)
    scale = torch.tensor([math.factorial(k) for k in range(1, coef.shape[0] + 1)], dtype=coef.dtype)
    return (coef * scale.to(coef.device).unsqueeze(1)).flip(0).T


def stiff_correction(jac: Tensor, dz: Tensor, dF_end: Tensor, dz_moment: Tensor, length: float) -> Tensor | None:
    """δz(τ_e) of a soft step in a stiff step (module docstring): φ₁(A) a + 2 φ₂(A) b + 6 φ₃(A) c, A = J L.

    Args:
        jac: J = ∂(dz/dτ)/∂z of the new-pattern field at the step end, `(p, p)` float64.
        dz, dF_end, dz_moment: Δz(τ_e), ΔF(τ_e) and ∫ Δz dτ of the closed-form correction
            (:meth:`~flowsim.solvers.filippov.two_layer._TwoLayerSwitching.crossing_correction`), `(p,)` each.
        length: L = τ_e − τ_c > 0 (τ_c the first crossing), in the integration variable τ.

    Returns:
        δz `(p,)`, or None where J or the result is not finite (a mode growing too fast within L).
    """
    if not bool(torch.isfinite(jac).all()):
        return None
    dz_new = phi_actions(length * jac, _fit_weights(_FIT_INV, [dz, length * dF_end, dz_moment / length]))
    return dz_new if bool(torch.isfinite(dz_new).all()) else None


def stiff_correction_pair(
    jac: Tensor, dz: Tensor, dF_end: Tensor, dz_moment: Tensor, dz_moment2: Tensor, length: float
) -> tuple[Tensor, Tensor] | None:
    """δz(τ_e) with the quartic fit of Δz (one more condition: ∫ (L − r) p dr = ∫ (τ_e − τ) Δz dτ) and with the
    cubic fit of :func:`stiff_correction`, from one matrix exponential: (quartic, cubic). Their difference estimates
    the error of the fit (an embedded pair: the cubic matches the non-stiff coupling J ∫Δz dτ, the quartic also its
    next term J² ∫ (τ_e − τ) Δz dτ). None where J or a result is not finite.
    """
    if not bool(torch.isfinite(jac).all()):
        return None
    conditions = [dz, length * dF_end, dz_moment / length]
    quartic, cubic = phi_actions(
        length * jac,
        _fit_weights(_FIT4_INV, [*conditions, dz_moment2 / length**2]),
        _fit_weights(_FIT_INV, conditions),
    )
    if not bool(torch.isfinite(quartic).all() & torch.isfinite(cubic).all()):
        return None
    return quartic, cubic
