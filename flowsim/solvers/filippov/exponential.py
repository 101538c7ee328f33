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
symmetric (sliding neurons' equivalent control is in it).

References:
    Hochbruck & Ostermann, "Exponential integrators", Acta Numerica 19 (2010) (φ-functions, §2);
    Al-Mohy & Higham, "Computing the action of the matrix exponential", SIAM J. Sci. Comput. 33 (2011),
    Theorem 2.1 (the augmented matrix; after Saad 1992 and Sidje's Expokit 1998).
"""

from __future__ import annotations

import torch
from torch import Tensor

# the cubic fit's conditions [p(L), L p′(L), (1/L) ∫ p] = _FIT · [a, b, c]
_FIT = torch.tensor([[1.0, 1.0, 1.0], [1.0, 2.0, 3.0], [1 / 2, 1 / 3, 1 / 4]], dtype=torch.float64)
_FIT_INV = torch.linalg.inv(_FIT)


def phi_actions(A: Tensor, W: Tensor) -> Tensor:
    """Σ_{k=1}^{q} φ_k(A) w_k for A `(p, p)` and W = [w_q, …, w_1] `(p, q)` (Al-Mohy & Higham 2011, Thm 2.1).

    One matrix exponential of [[A, W], [0, N_q]] (N_q ones on the superdiagonal); W is scaled to A's norm first
    (the exponential's scaling and squaring then treats both blocks alike). Returns `(p,)`.
    """
    p, q = W.shape
    scale = float(W.abs().max())
    if scale == 0.0:
        return torch.zeros(p, dtype=A.dtype, device=A.device)
    eta = max(float(A.abs().sum(0).max()), 1.0) / scale
    M = torch.zeros(p + q, p + q, dtype=A.dtype, device=A.device)
    M[:p, :p] = A
    M[:p, p:] = eta * W
    M[p:, p:] = torch.diag(torch.ones(q - 1, dtype=A.dtype, device=A.device), 1)
    return torch.linalg.matrix_exp(M)[:p, -1] / eta


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
    fit = _FIT_INV.to(dtype=dz.dtype, device=dz.device)
    a, b, c = fit @ torch.stack([dz, length * dF_end, dz_moment / length])  # (3, p)
    dz_new = phi_actions(length * jac, torch.stack([6.0 * c, 2.0 * b, a], 1))
    return dz_new if bool(torch.isfinite(dz_new).all()) else None
