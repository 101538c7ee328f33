"""Switching system of a two-layer (leaky-)ReLU net: per-neuron sliding and soft crossings in closed form.

Sliding (:mod:`flowsim.solvers.filippov`, item 4): for neuron j with sliding set S, ż_{w_j} = u + Σ_{k∈S} r_k α_k x_k
with u the field at α = 0, r_k = (1 − s₋) a_j c_k y_k, and ẇ_j = D_j ż_{w_j}, D_j = diag(1/φ″(w_j)); the
Filippov α's are the bounded least-squares solution of the neuron's box-LCP. Soft crossings (item 2): the
pattern difference of crossed points integrated along the old dense output (:mod:`.crossings`, a mixin of
:class:`_TwoLayerSwitching`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ...models import AbstractPiecewiseLinearTwoLayer
from .bridge import transition
from .crossings import _CrossingCorrections
from .dense import _horner
from .lcp import _candidate_lcp, _project_onto_surfaces, _symmetric_pinv
from .state import ACTIVE, INACTIVE, SLIDING, AbstractSwitchingSystem, DenseSurfaceRates, inverse_map_slope


class _TwoLayerSwitching(_CrossingCorrections, AbstractSwitchingSystem, DenseSurfaceRates):
    """Switching system of a two-layer (leaky-)ReLU net: surfaces h_ij = ⟨w_j, x_i⟩, shape `(n, m)`.

    Sliding neurons get their equivalent control per neuron (:func:`_equivalent_control`; closed form and batched
    for the neurons sliding on one surface); surfaces at zero are classified per neuron by the box-LCP
    (:func:`_candidate_lcp`). Transversal crossings can be switched inside a step (``supports_soft``).
    """

    supports_soft = True
    scans_subsets = True

    def __init__(self, model: AbstractPiecewiseLinearTwoLayer, field) -> None:
        self.model = model
        self.field = field
        self.pot = field.potential
        self.X = field.X
        self.y = field.y
        self.n, self.d = self.X.shape
        self.m = model.width
        self.md = self.m * self.d
        self.slope = float(model.negative_slope)
        self.xabs = self.X.abs()
        self._owner: Tensor | None = None  # each coordinate's neuron (:meth:`_coordinate_neuron`)
        self._sets_of: Tensor | None = None  # the sliding mask the sliding sets were built for (:meth:`_refresh`)
        self._h_memo: tuple = (None, None)  # (θ, h) of the last :meth:`surfaces` call
        self._init_state((self.n, self.m), self.X.dtype, self.X.device)

    # -- state bookkeeping --
    def _refresh(self) -> None:
        super()._refresh()
        self.bg_multi: Tensor | None = None
        if self._sets_of is not None and torch.equal(self._sets_of, self.sliding):
            return  # the same sliding set (most segment starts): its neurons and points as they were
        self._sets_of = self.sliding
        flat = torch.nonzero(self.sliding.flatten()).flatten()
        self._sliding_entries = (flat, flat // self.m, flat % self.m)  # flat index, point, neuron of each, (S,)
        count = self.sliding.sum(0)  # sliding surfaces per neuron, (m,)
        self.slide_neurons = torch.nonzero(count > 0).flatten().tolist()
        # neurons sliding on one surface (most of them) get their equivalent control in closed form, batched
        self.single_j = torch.nonzero(count == 1).flatten()
        self.single_i = self.sliding[:, self.single_j].to(torch.int8).argmax(0)
        self.single_flat = self.single_i * self.m + self.single_j  # their surfaces' flat indices
        self.single_x = self.X.index_select(0, self.single_i)  # their points
        # neurons sliding on several surfaces: their points (ascending) padded to the largest set, mask = real ones
        self.multi_j = torch.nonzero(count > 1).flatten()
        self.multi_i, self.multi_mask = self._padded_points(self.multi_j, count)
        self.multi_fm = self.multi_mask.to(self.X.dtype)
        self.multi_x = self.X[self.multi_i] * self.multi_fm.unsqueeze(2)  # (J, k, d), padded rows 0
        self.multi_flat = self.multi_i * self.m + self.multi_j.unsqueeze(1)  # surfaces' flat indices (J, k)
        self.multi_real = torch.nonzero(self.multi_mask.reshape(-1)).flatten()  # the real ones' places in (J·k)
        self.multi_flat_real = self.multi_flat.reshape(-1).index_select(0, self.multi_real)
        self._slide_sets: tuple | None = None  # (neurons, padded points, mask) of all sliding neurons, on demand

    def _sliding_sets(self) -> tuple[Tensor, Tensor, Tensor]:
        """Every sliding neuron `(J,)`, its sliding points padded to the largest set `(J, k)` and the mask of the
        real ones `(J, k)`."""
        if self._slide_sets is None:
            count = self.sliding.sum(0)
            js = torch.nonzero(count > 0).flatten()
            self._slide_sets = (js, *self._padded_points(js, count))
        return self._slide_sets

    def _padded_points(self, js: Tensor, count: Tensor) -> tuple[Tensor, Tensor]:
        """The sliding points of neurons ``js`` `(J,)` (ascending), padded to the largest set `(J, k)`, and the mask
        of the real ones `(J, k)`; ``count``: sliding surfaces per neuron `(m,)`."""
        k = int(count[js].max()) if js.numel() else 0
        order = torch.argsort((~self.sliding[:, js].T).to(torch.int8), dim=1, stable=True)
        return order[:, :k], torch.arange(k, device=count.device) < count[js].unsqueeze(1)

    def project_sliding_rows(self, V: Tensor, W: Tensor) -> Tensor:
        """Dual W-block rows ``V`` `(..., m, d)` with each sliding neuron's row projected onto the directions that
        leave its sliding surfaces' rates unchanged: v ← v − X_Sᵀ (X_S D X_Sᵀ)⁺ X_S D v, D = dθ/dz at the
        weights ``W`` `(m, d)` — the equivalent control's response to a change v of the neuron's one-sided field
        (it keeps ḣ_S as it was: the α's absorb the change)."""
        if not self.n_sliding:
            return V
        js, I, mask = self._sliding_sets()
        XS = self.X[I] * mask.unsqueeze(2).to(V.dtype)  # (J, k, d)
        D = inverse_map_slope(self.pot, W[js])  # (J, d)
        XD = XS * D.unsqueeze(1)
        Ginv = _symmetric_pinv(XD @ XS.transpose(1, 2))  # (J, k, k)
        Vj = V[..., js, :]  # (..., J, d)
        coef = Ginv @ (XD @ Vj.unsqueeze(-1))  # (..., J, k, 1)
        out = V.clone()
        out[..., js, :] = Vj - (XS.transpose(1, 2) @ coef).squeeze(-1)
        return out

    def split(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        if theta.dim() == 1:  # (most calls: plain slices, without the Ellipsis index's parsing)
            return theta[: self.md].view(self.m, self.d), theta[self.md :]
        return theta[..., : self.md].reshape(*theta.shape[:-1], self.m, self.d), theta[..., self.md :]

    def surfaces(self, theta: Tensor) -> Tensor:
        """h, shape `(..., n, m)`. The last θ's h is kept (a segment start asks for it several times; θ tensors
        are never modified in place): callers must not modify the result in place."""
        if theta is self._h_memo[0]:
            return self._h_memo[1]
        W, _ = self.split(theta)
        h = self.X @ W.transpose(-1, -2)
        self._h_memo = (theta, h)
        return h

    def surface_rates(self, theta: Tensor, theta_dot: Tensor) -> Tensor:
        """ḣ along θ̇ (h is linear in θ)."""
        return self.surfaces(theta_dot)

    def surfaces_and_rates(self, theta: Tensor, theta_dot: Tensor) -> tuple[Tensor, Tensor]:
        """h and ḣ at K states ``theta``, ``theta_dot`` `(K, p)`: `(K, n, m)` each, from one matrix product
        (X @ [W; Ẇ]ᵀ over all states: about half the time of 2K small products)."""
        K = theta.shape[0]
        W, _ = self.split(torch.cat([theta, theta_dot]))  # (2K, m, d)
        HH = (self.X @ W.reshape(-1, self.d).T).reshape(self.n, 2 * K, self.m).transpose(0, 1)
        return HH[:K], HH[K:]

    def surfaces_and_rates_at(self, theta: Tensor, theta_dot: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
        """h and ḣ of surfaces ``idx`` (flat, `(B,)`) at K states, `(K, B)` each: h_ij = x_i · w_j."""
        i, j = idx // self.m, idx % self.m
        W, _ = self.split(torch.stack([theta, theta_dot]))  # (2, K, m, d)
        HH = (self.X[i] * W[:, :, j]).sum(-1)  # (2, K, B)
        return HH[0], HH[1]

    def error_scale(self, theta: Tensor, z: Tensor, rtol: float, atol: float) -> Tensor:
        """Scale of the error in h implied by the solver tolerance on z, shape `(n, m)`."""
        W, _ = self.split(theta)
        zW, _ = self.split(z)
        D = inverse_map_slope(self.pot, W)  # (m, d)
        ew = D * (rtol * zW.abs() + atol)  # error in w
        return self.xabs @ (ew + torch.finfo(theta.dtype).eps * W.abs()).T  # + rounding of h itself

    def error_scale_at(self, theta: Tensor, z: Tensor, rtol: float, atol: float, i: Tensor, j: Tensor) -> Tensor:
        """:meth:`error_scale` of the surfaces (``i``, ``j``) `(B,)` only, `(B,)`."""
        W, _ = self.split(theta)
        zW, _ = self.split(z)
        Wj, zj = W.index_select(0, j), zW.index_select(0, j)
        ew = inverse_map_slope(self.pot, Wj) * (rtol * zj.abs() + atol)
        return (self.xabs.index_select(0, i) * (ew + torch.finfo(theta.dtype).eps * Wj.abs())).sum(1)

    # -- the fixed-pattern field --
    def _gate(self, P: Tensor) -> Tensor:
        return P if self.slope == 0.0 else self.slope + (1.0 - self.slope) * P

    def regularised_velocity(self, tau, theta: Tensor, eps: Tensor) -> Tensor:
        """dz/dτ with every surface's gate φ(h/ε) (:func:`~flowsim.solvers.filippov.bridge.transition`; ``eps``
        `(n, m)` the transition's half-width; leaky nets: slope + (1 − slope) φ), `(p,)`."""
        W, a = self.split(theta)
        H = self.X @ W.T
        _, uW, za = self._gated_field(tau, H, self._gate(transition(H / eps)), a)
        return torch.cat([uW.reshape(-1), za])

    def _gated_field(self, tau, H: Tensor, G: Tensor, a: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The field of the net with gates ``G`` `(n, m)` at pre-activations ``H``: c·y `(n,)`, ż_W `(m, d)` and ż_a
        `(m,)` (:meth:`velocity`'s fixed pattern, :meth:`regularised_velocity`'s smoothed gates)."""
        HG = H * G
        cy = self.field.loss_weights(tau, self.y * (HG @ a)) * self.y
        cy_col = cy.unsqueeze(1)
        return cy, a.unsqueeze(1) * ((G * cy_col).T @ self.X), (HG * cy_col).sum(0)

    def velocity(self, tau, theta: Tensor, alpha_ref: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """dz/dτ of the current activation state and the sliding α's (or None), shapes `(p,)`, `(n, m)`."""
        W, a = self.split(theta)
        H = self.X @ W.T  # (n, m)
        cy, uW, za = self._gated_field(tau, H, self._gate(self.P), a)  # sliding entries at α = 0
        if not self.slide_neurons:
            return torch.cat([uW.reshape(-1), za]), None
        # sliding entries: gate 0 → gate(α) adds (1 − s₋) α h c y to ż_a (h ≈ 0 there; added for the Baumgarte part)
        alpha = torch.full_like(H, float("nan"))
        D = inverse_map_slope(self.pot, W)
        ref = self.alpha0 if alpha_ref is None else alpha_ref
        scale = {} if self.bg_scale is None else None
        zW = uW  # (uW is read again by the controls: the rows are replaced out of place)
        if self.single_j.numel():
            js, is_ = self.single_j, self.single_i
            al, row, dza = self._single_control(js, is_, scale, uW, D, a, cy, H, ref)
            alpha.view(-1).index_copy_(0, self.single_flat, al)
            zW = zW.index_copy(0, js, row)
            za.index_add_(0, js, dza)
        if self.multi_j.numel():
            js = self.multi_j
            al, row, dza = self._multi_control(js, self.multi_i, scale, uW, D, a, cy, H, ref)
            alpha.view(-1).index_copy_(0, self.multi_flat_real, al.reshape(-1).index_select(0, self.multi_real))
            zW = zW.index_copy(0, js, row)
            za.index_add_(0, js, dza)
        if scale is not None:
            self.bg_scale = scale
        return torch.cat([zW.reshape(-1), za]), alpha

    def velocity_jacobian(self, tau, theta: Tensor) -> Tensor:
        """∂(dz/dτ)/∂θ of the current activation state, `(p, p)`, for the implicit driver's Newton matrix.

        The field (:meth:`velocity`) is v = Σ_i c_i y_i ∇̃f_i with the loss weights c_i at the margins q_i = y_i f_i
        of the pattern with sliding entries at α = 0 (f_i = Σ_j G⁰_ij h_ij a_j; h ≈ 0 there) and ∇̃f_i the gradient
        with the sliding entries' gates at their α: J = Φᵀ diag(c′_i y_i²) Φ⁰ + Σ_i c_i y_i ∂²f_i, Φ⁰ and Φ the rows
        ∇f_i with gates G⁰ and G (W_j-part G_ij a_j x_i, a_j-part G_ij h_ij); the only second-derivative blocks
        are ∂²f_i/∂W_j∂a_j = G_ij x_i; ż_aj gains (1 − s₋) h_sj c_s y_s ∇α_sj from its sliding entries. The sliding
        neurons' weight rows (their equivalent control) and ∇α: in closed form by implicit differentiation of the
        control (:meth:`_sliding_rows_closed_form`), by autograd where its matrix is singular (torch.func.jacrev on
        those outputs only: a few backward passes instead of p). Matches autograd through the whole field to rounding
        (tests/test_implicit_filippov.py)."""
        W, a = self.split(theta)
        n, m, d = self.n, self.m, self.d
        _, alpha = self.velocity(tau, theta)
        G0 = self._gate(self.P)
        G = G0 if alpha is None else self._gate(torch.where(self.sliding, alpha, self.P))
        H = self.X @ W.T
        q = (self.y * ((G0 * H) @ a)).detach()
        with torch.enable_grad():
            qg = q.clone().requires_grad_(True)
            c = self.field.loss_weights(tau, qg)
            (dc,) = torch.autograd.grad(c.sum(), qg)  # c_i depends on q_i only: the diagonal c′_i
        cy = c.detach() * self.y

        def grad_f(gates: Tensor) -> Tensor:  # rows ∇f_i, (n, p)
            return torch.cat([((gates * a).unsqueeze(2) * self.X.unsqueeze(1)).reshape(n, m * d), gates * H], dim=1)

        Phi0 = grad_f(G0)
        Phi = Phi0 if alpha is None else grad_f(G)
        rows = torch.arange(m * d, device=theta.device).reshape(m, d)
        cols = m * d + torch.arange(m, device=theta.device)
        weight = (dc * self.y.square()).unsqueeze(1)
        J = Phi.T @ (weight * Phi0)
        B = (G * cy.unsqueeze(1)).T @ self.X  # (m, d): ∂²f terms of W_j with a_j
        J[rows, cols.unsqueeze(1).expand(m, d)] += B
        J[cols.unsqueeze(1).expand(m, d), rows] += B
        if not self.slide_neurons:
            return J
        # the sliding neurons' rows and ∇α of their entries (ż_aj gains (1 − s₋) h c y ∇α from each)
        si, sj, dA, js, J_rows = self._sliding_rows(tau, theta, H, G0, cy, dc, Phi0, weight, rows, cols)
        J.index_add_(0, cols[sj], ((1.0 - self.slope) * H[si, sj] * cy[si]).unsqueeze(1) * dA)
        J[rows[js].flatten()] = J_rows
        return J

    def _sliding_rows(self, tau, theta, H, G0, cy, dc, Phi0, weight, rows, cols):
        """∇ of the sliding neurons' weight rows and of their α's for :meth:`velocity_jacobian`: the sliding
        entries (si, sj) `(S,)`, their ∇α `(S, p)`, the neurons `(J,)` and their rows' Jacobian `(J·d, p)` — in
        closed form (:meth:`_sliding_rows_closed_form`), by autograd where that does not apply."""
        closed = self._sliding_rows_closed_form(theta, H, G0, cy, dc, Phi0, weight, rows, cols)
        if closed is not None:
            return closed
        js = torch.as_tensor(self.slide_neurons, device=theta.device)
        si, sj = torch.nonzero(self.sliding, as_tuple=True)
        idx = rows[js].flatten()

        def outputs(th: Tensor) -> Tensor:
            v, al = self.velocity(tau, th)
            return torch.cat([v[idx], al[si, sj]])

        with torch.enable_grad():
            Jo = torch.func.jacrev(outputs)(theta)
        return si, sj, Jo[idx.numel() :], js, Jo[: idx.numel()]

    def _sliding_rows_closed_form(self, theta, H, G0, cy, dc, Phi0, weight, rows, cols):
        """Closed-form Jacobian of the sliding neurons' rows and α's (every neuron j with its sliding points S).

        The equivalent control (:meth:`_single_control`, :meth:`_multi_control`) is α = −v/r with N v = g,
        N = X_S D X_Sᵀ, g = X_S D u + f λ h_S, r_s = (1 − s₋) a_j c_s y_s (u the neuron's field at α = 0, D = dθ/dz
        at w_j, f the segment's Baumgarte factor), and the row is u − X_Sᵀ v. With ∂v = N⁻¹(∂g − ∂N v):
        ∂row = ∂u − X_Sᵀ ∂v and ∇α = −∂v/r + v ∂r/r², where ∂u are the rows of the α = 0 Jacobian
        (Φ⁰ᵀ diag(c′y²) Φ⁰, plus ∂u/∂a_j = Σ_i G⁰_ij c_i y_i x_i), ∂g = X_S D ∂u plus X_S ⊙ D′ ⊙ u + f λ X_S on w_j
        (D′ = dD/dw by autograd: D is elementwise), (∂N v)_s = x_s ⊙ D′ ⊙ X_Sᵀ v on w_j, and
        ∂r_s = (1 − s₋)(c_s y_s e_{a_j} + a_j c′_s y_s² Φ⁰_s).

        Returns (si, sj, ∇α `(S, p)`, js `(J,)`, rows' Jacobian `(J·d, p)`), or None where the closed form does not
        hold: the control's matrix (r ⊙ N ⊙ r) singular to 1e-11 of its largest eigenvalue (its pseudo-inverse
        truncates at 1e-12) or D′ not finite (autograd then). Above it the closed form is the control's derivative
        also for nearly parallel sliding points, where autograd through the pseudo-inverse is off by 1e3-1e6
        relative (tests/test_implicit_filippov.py, against finite differences).
        """
        js, I, mask = self._sliding_sets()
        W, a = self.split(theta)
        Jn, k, d = js.numel(), I.shape[1], self.d
        fm = mask.to(theta.dtype)
        with torch.enable_grad():
            Wg = W[js].detach().requires_grad_(True)
            D = inverse_map_slope(self.pot, Wg)
            # elementwise: the diagonal D′ (a constant D, e.g. the Euclidean potential's, has none)
            dD = torch.autograd.grad(D.sum(), Wg)[0] if D.requires_grad else torch.zeros_like(D)
        D = D.detach()
        XS = self.X[I] * fm.unsqueeze(2)  # (J, k, d), padded rows 0
        r = (1.0 - self.slope) * a[js].unsqueeze(1) * cy[I] * fm  # (J, k)
        N = (XS * D.unsqueeze(1)) @ XS.transpose(1, 2)
        M = r.unsqueeze(2) * N * r.unsqueeze(1)
        if not bool(torch.isfinite(dD).all() and torch.isfinite(M).all()):
            return None
        top = M.diagonal(dim1=1, dim2=2).amax(1).reshape(Jn, 1, 1)
        eig = torch.linalg.eigvalsh(M + torch.diag_embed(1.0 - fm) * top)  # (the padded block at the top scale)
        if bool((eig[:, 0] <= 1e-11 * eig[:, -1]).any()):  # (the control's pseudo-inverse truncates at 1e-12)
            return None
        ar = torch.arange(Jn, device=theta.device)
        rw, ca = rows[js], cols[js]  # the neurons' w-columns (J, d) and a-columns (J,)
        du_da = (G0[:, js] * cy.unsqueeze(1)).T @ self.X  # ∂u/∂a_j = Σ_i G⁰_ij c_i y_i x_i, (J, d)
        u = a[js].unsqueeze(1) * du_da  # (J, d)
        dU = (Phi0[:, rw.flatten()].T @ (weight * Phi0)).reshape(Jn, d, -1)  # (J, d, p)
        dU[ar, :, ca] += du_da
        f = torch.tensor([self.bg_scale.get(j, 1.0) for j in js.tolist()], dtype=theta.dtype, device=theta.device)
        flam = (f * self.lam).reshape(Jn, 1, 1)
        XSD = XS * D.unsqueeze(1)
        g = (XSD @ u.unsqueeze(2)).squeeze(2) + flam[:, :, 0] * H[I, js.unsqueeze(1)] * fm  # (J, k)
        N_pad = N + torch.diag_embed(1.0 - fm)  # the padded block decoupled (its g and ∂g are 0)
        v = torch.linalg.solve(N_pad, g)  # (J, k)
        dg = XSD @ dU  # (J, k, p)
        xv = (XS * v.unsqueeze(2)).sum(1)  # X_Sᵀ v, (J, d)
        on_w = XS * (dD * u).unsqueeze(1) + flam * XS - XS * (dD * xv).unsqueeze(1)  # ∂g − ∂N v on w_j, (J, k, d)
        dg[ar.reshape(Jn, 1, 1), torch.arange(k, device=theta.device).reshape(1, k, 1), rw.unsqueeze(1)] += on_w
        dv = torch.linalg.solve(N_pad, dg)  # (J, k, p)
        J_rows = (dU - XS.transpose(1, 2) @ dv).reshape(Jn * d, -1)
        dr = (1.0 - self.slope) * (a[js].unsqueeze(1) * dc[I] * self.y[I].square()).unsqueeze(2) * Phi0[I]  # (J, k, p)
        dr[ar, :, ca] += (1.0 - self.slope) * cy[I]
        r_safe = torch.where(mask, r, 1.0).unsqueeze(2)
        dA = -dv / r_safe + (v.unsqueeze(2) / r_safe.square()) * dr
        return I[mask], js.unsqueeze(1).expand_as(I)[mask], dA[mask], js, J_rows

    def _single_control(self, js, is_, scale, uW, D, a, cy, H, ref) -> tuple[Tensor, Tensor, Tensor]:
        """:func:`_equivalent_control` of the neurons ``js`` `(J,)` sliding on one surface each (points ``is_``),
        batched, in closed form: with N = x_iᵀ D_j x_i, g = x_iᵀ D_j u + f λ h_ij and r = (1 − s₋) a_j c_i y_i (u the
        neuron's row at α = 0, f its Baumgarte factor), α = −g / (r N), the one α with ḣ_ij = −f λ h_ij (the
        box-LCP's solution is unique for one surface); where r N is 0 or NaN there is no control and α
        keeps its reference value. Returns α `(J,)`, the neurons' velocity rows `(J, d)` and what their sliding
        entries add to ż_a, (1 − s₋) α h c y `(J,)`."""
        XS = self.single_x  # (J, d)
        # (index_select, not torch.take: take's derivative, put, has no batching rule for the Jacobian's jacrev)
        cyS, hS = cy.index_select(0, is_), H.reshape(-1).index_select(0, self.single_flat)
        uWj = uW.index_select(0, js)
        r = self._one_sided(a.index_select(0, js)) * cyS
        P = D.index_select(0, js) * XS  # D_j x_i
        rN = r * (P * XS).sum(1)
        g = (P * uWj).sum(1)
        ok = rN.abs() > 0  # (False where r N is 0 or NaN)
        if self.lam:
            bg = self.lam * hS
            if scale is not None:  # the segment's first evaluation: fix the Baumgarte factors
                al_eq = torch.where(ok, -g / rN, torch.take(ref, self.single_flat))
                room = torch.minimum(al_eq, 1.0 - al_eq).clamp_min(0.0)
                big = torch.where(ok, (bg / rN).abs(), 0.0)
                f = torch.where(big > 0, (0.5 * room / torch.where(big > 0, big, 1.0)).clamp_max(1.0), 1.0)
                scale.update(zip(js.tolist(), f.tolist(), strict=True))
                self.bg_single = f  # (the same factors as in the dict, for this segment's later evaluations)
            else:
                f = self.bg_single
                if f is None or f.shape != js.shape:  # (defensive: the sliding set changed within the segment)
                    f = torch.tensor([self.bg_scale.get(j, 1.0) for j in js.tolist()], dtype=rN.dtype, device=rN.device)
            g = g + f * bg
        al = torch.where(ok, -g / rN, torch.take(ref, self.single_flat))
        row = uWj + (r * al).unsqueeze(1) * XS
        return al, row, self._one_sided(al) * hS * cyS

    def _one_sided(self, x: Tensor) -> Tensor:
        """(1 − s₋) x, the jump factor of the gate (x itself for ReLU: no multiplication by 1)."""
        return x if self.slope == 0.0 else (1.0 - self.slope) * x

    def _multi_control(self, js, I, scale, uW, D, a, cy, H, ref) -> tuple[Tensor, Tensor, Tensor]:
        """:func:`_equivalent_control` of the neurons ``js`` `(J,)` sliding on several surfaces each (points ``I``
        `(J, k)`, padded; :attr:`multi_mask` marks the real ones), batched: one pseudo-inverse of the stacked
        (zero-padded) k × k systems AᵀA, whose padded block contributes nothing. Returns α `(J, k)` (0 where
        padded), the neurons' velocity rows `(J, d)` and what their sliding entries add to ż_a, (1 − s₋) Σ α h c y
        `(J,)`."""
        mask, fm, XS, flat = self.multi_mask, self.multi_fm, self.multi_x, self.multi_flat
        cyS, hS = cy[I], H.reshape(-1).index_select(0, flat.reshape(-1)).reshape(flat.shape)
        R = (-(1.0 - self.slope) * a.index_select(0, js)).unsqueeze(1) * cyS  # −r (> 0 on an attracting surface)
        sq = D.index_select(0, js).sqrt()  # (J, d)
        A = (sq.unsqueeze(2) * XS.transpose(1, 2)) * R.unsqueeze(1)  # (J, d, k); padded columns 0 (XS's rows)
        At = A.transpose(1, 2)
        a0 = torch.where(mask, torch.take(ref, flat), 0.0)
        M = At @ A
        finite = torch.isfinite(M).flatten(1).all(1)  # a trial RK stage far off: non-finite field, step rejected
        Minv = torch.linalg.pinv(torch.where(finite[:, None, None], M, 0.0), hermitian=True, rtol=1e-12)
        rhs = At @ (sq * uW.index_select(0, js) - (A @ a0.unsqueeze(2)).squeeze(2)).unsqueeze(2)  # (J, k, 1)
        if self.lam:
            bg = (self.lam * R * hS * fm).unsqueeze(2)
            if scale is not None:  # the segment's first evaluation (its start): fix the Baumgarte factors
                al_eq = a0 + (Minv @ rhs).squeeze(2)
                d_bg = (Minv @ bg).squeeze(2)
                room = torch.where(mask, torch.minimum(al_eq, 1.0 - al_eq), math.inf).amin(1).clamp_min(0.0)
                big = d_bg.abs().amax(1)
                f = torch.where(big > 0, (0.5 * room / torch.where(big > 0, big, 1.0)).clamp_max(1.0), 1.0)
                scale.update(zip(js.tolist(), f.tolist(), strict=True))
                self.bg_multi = f
            else:
                f = self.bg_multi
                if f is None or f.shape != js.shape:  # (defensive: the sliding set changed within the segment)
                    f = torch.tensor([self.bg_scale.get(j, 1.0) for j in js.tolist()], dtype=M.dtype, device=M.device)
            rhs = rhs + f.reshape(-1, 1, 1) * bg
        al = torch.where(finite.unsqueeze(1), (a0 + (Minv @ rhs).squeeze(2)) * fm, math.nan)
        row = uW.index_select(0, js) - ((R * al).unsqueeze(1) @ XS).squeeze(1)
        return al, row, self._one_sided(al * hS * cyS).sum(1)  # (al = 0 where padded)

    # -- classification at a segment start --
    def classify(self, tau, theta: Tensor, zero: Tensor, forced: dict | None = None) -> dict:
        """Set the activation state at a segment start; returns transition counts.

        Surfaces with |h| > tolerance get the mode of their sign. For each neuron, the surfaces at zero
        (|h| ≤ tolerance, or sliding) are classified together by the box-LCP (bounded least squares,
        :mod:`flowsim.solvers.filippov` item 4): α interior → sliding, α at 0 → inactive, α at 1 → active.
        Repelling surfaces (r_k ≥ 0: both one-sided fields point away, or a_j = 0) keep their side unless the
        field at that side points through, then they cross.
        """
        W, a = self.split(theta)
        H = self.X @ W.T
        old = self.mode.clone()
        new = torch.where(H > 0, ACTIVE, INACTIVE)
        cand = (H.abs() <= zero) | (old == SLIDING)
        new = torch.where(cand, torch.where(old == SLIDING, INACTIVE, old), new)
        alpha0 = torch.zeros_like(self.alpha0)
        counts = {"unresolved": 0}
        ncand = cand.sum(0)
        if bool((ncand > 0).any()):
            # velocity base: candidates at α = 0, others at their (new) mode
            Pbase = (new == ACTIVE).to(H.dtype)
            Pbase[cand] = 0.0
            G0 = self._gate(Pbase)
            q = self.y * ((H * G0) @ a)
            cy = self.field.loss_weights(tau, q) * self.y
            uW = a.unsqueeze(1) * ((G0 * cy.unsqueeze(1)).T @ self.X)
            D = inverse_map_slope(self.pot, W)
            self.field.nfe += 1
            single = ncand == 1
            if forced:
                for _, j in forced:
                    single[j] = False
            cand_neurons = [int(j) for j in torch.nonzero((ncand > 0) & ~single).flatten()]
            if bool(single.any()):
                cand_neurons += self._classify_single(new, alpha0, old, cand, single, a, cy, uW, D)
            for j in cand_neurons:
                C = torch.nonzero(cand[:, j]).flatten()
                r = (1.0 - self.slope) * a[j] * cy[C]
                att = r < 0
                # initial α for repelling candidates: their current side (sliding → nearer bound)
                fixed = torch.where(
                    old[C, j] == SLIDING, (self.alpha0[C, j] > 0.5).to(H.dtype), (old[C, j] == ACTIVE).to(H.dtype)
                )
                pinned = torch.zeros_like(att)
                if forced:
                    for k, i in enumerate(C.tolist()):
                        if (i, j) in forced:
                            fixed[k] = float(forced[(i, j)])
                            att[k] = False
                            pinned[k] = True
                al = _candidate_lcp(uW[j], self.X[C], r, D[j].sqrt(), fixed, att, pinned)
                self._assign(new, alpha0, (C, j), al, att)
        return self._commit(old, new, alpha0, counts)

    def _classify_single(self, new, alpha0, old, cand, single, a, cy, uW, D) -> list[int]:
        """:func:`_candidate_lcp` of the neurons with one candidate surface each (``single`` `(m,)`), batched in
        closed form: with ḣ(α) = x·D(u + x r α) (r = (1 − s) a_j c_i y_i), an attracting surface (r < 0) gets
        α = clip(−x·Du / (r x·Dx), 0, 1), the minimizer of its one-variable box least squares; a repelling one
        keeps its side unless ḣ there points through (one flip settles it: r ≥ 0). Neurons with x·Dx = 0 are
        returned for the general path."""
        js = torch.nonzero(single).flatten()
        is_ = cand[:, js].to(torch.int8).argmax(0)
        x, Dj, u = self.X[is_], D[js], uW[js]
        r = (1.0 - self.slope) * a[js] * cy[is_]
        xDu, xDx = (x * Dj * u).sum(1), (x * Dj * x).sum(1)
        ok = xDx > 0
        att = r < 0
        o = old[is_, js]
        fixed = torch.where(o == SLIDING, (self.alpha0[is_, js] > 0.5).to(x.dtype), (o == ACTIVE).to(x.dtype))
        hdot = xDu + r * fixed * xDx
        flip = ((fixed > 0.5) & (hdot < 0)) | ((fixed < 0.5) & (hdot > 0))
        al = torch.where(
            att, (-xDu / torch.where(ok & att, r * xDx, 1.0)).clamp(0.0, 1.0), torch.where(flip, 1.0 - fixed, fixed)
        )
        self._assign(new, alpha0, (is_[ok], js[ok]), al[ok], att[ok])
        return [int(j) for j in js[~ok].tolist()]

    def init_mode(self, theta: Tensor) -> None:
        self.mode = torch.where(self.surfaces(theta) > 0, ACTIVE, INACTIVE)
        self._refresh()

    def project_sliding(self, z: Tensor, theta: Tensor, band: Tensor) -> Tensor | None:
        """Put sliding surfaces that drifted off h = 0 by more than ``band`` `(n, m)` back on it; None if none did.

        Per neuron j with sliding points S: z_wj ← z_wj + X_Sᵀ μ, the directions in which the Filippov α's move
        the state (so the balance B_j changes only at second order: ∂B_j/∂z_wj · X_Sᵀ = h_S ≈ 0), with μ from a
        damped Newton iteration on h_S(∇Φ*(z_wj + X_Sᵀ μ)) = 0 (h_S is the gradient of the convex function
        μ ↦ Σ_k φ*((z_wj + X_Sᵀ μ)_k): Jacobian X_S D X_Sᵀ, D = (∇²Φ)⁻¹), to 1% of ``band``. The Baumgarte term
        keeps the drift inside the band along smooth sliding; it does not where D is singular or not smooth, e.g.
        p-power terms in φ″ when a sliding neuron's weight passes through 0.
        """
        h = self.surfaces(theta)
        off = self.sliding & (h.abs() > band)
        if not bool(off.any()):
            return None
        zW, za = self.split(z.clone())
        for j in torch.nonzero(off.any(0)).flatten().tolist():
            S = torch.nonzero(self.sliding[:, j]).flatten()
            XS = self.X[S]
            zW[j] = _project_onto_surfaces(
                self.pot, zW[j], XS, lambda w, XS=XS: XS @ w, lambda w, XS=XS: XS, h[S, j], 0.01 * band[S, j]
            )
        return torch.cat([zW.reshape(-1), za])

    def sliding_margins(self, theta: Tensor, alpha: Tensor) -> Tensor:
        """How far each sliding surface (i, j) is from leaving its sliding mode, `(n, m)` (inf off the sliding set;
        negative: left): the smaller of α's distance from [0, 1]'s bounds and the attraction −a_j y_i. A surface
        slides while it attracts, r = (1 − s₋) a_j c_i y_i < 0; where a_j crosses 0 it turns repelling (ḣ on both
        sides ∝ a_j vanishes there, α stays inside [0, 1]) and the sliding ends, as at a bound of α. Without this
        exit the surface stayed on h = 0 — also a Filippov solution, an unstable one — until the next segment start,
        wherever that fell (measured: a two-layer ReLU, a_j = 0 at s = 0.306, the exact-restart reference left at
        its next crossing, s = 0.322, a soft step later still: 600 × rtol apart)."""
        room = torch.full_like(alpha, math.inf)
        room.view(-1).index_copy_(0, self._sliding_entries[0], self.sliding_room(theta, alpha))
        return room

    def sliding_room(self, theta: Tensor, alpha: Tensor) -> Tensor:
        """:meth:`sliding_margins` of the sliding surfaces only, `(S,)` (the order of ``torch.nonzero(self.sliding)``),
        computed on them alone (no pass over all n × m surfaces)."""
        _, a = self.split(theta)
        flat, i, j = self._sliding_entries
        al = torch.take(alpha, flat)
        attraction = -(a.index_select(0, j) * self.y.index_select(0, i))
        return torch.minimum(torch.minimum(al, 1.0 - al), attraction)

    def sliding_neuron_margins(self, room: Tensor) -> Tensor:
        """Each neuron's smallest sliding margin, `(m,)` (inf: none sliding), from :meth:`sliding_room`'s ``room``
        `(S,)`."""
        per = torch.full((self.m,), math.inf, dtype=room.dtype, device=room.device)
        return per.scatter_reduce_(0, self._sliding_entries[2], room, "amin")

    # -- soft crossings (FilippovDriver._soft_step): balance, per-crossing rates, closed-form correction --
    def balance(self, theta: Tensor) -> Tensor:
        """Per-neuron balance B_j = Σ_k Q(w_jk) − Q(a_j), shape `(m,)` (:func:`flowsim.diagnostics.balance`'s B
        for a degree-1 activation, without its scale)."""
        QW, Qa = self.split(self.pot.q_function(theta))
        return QW.sum(-1) - Qa

    def restore_balance(self, z: Tensor, ref: tuple) -> Tensor:
        """Move z along (θ_wj, −θ_aj) in dual coordinates so that every neuron's B_j(z) = B_j(z_ref).

        ``ref``: :meth:`balance_ref` of z_ref. ∂B_j/∂z = (θ_wj, −θ_aj) (Q = φ*∘φ′ has dQ/dz = θ), so two Newton
        steps on the scalar step μ_j remove the second-order defect (one is not enough after the coupling term
        at loose tolerances).
        """
        B_ref, gw, ga, g, owner = ref
        for _ in range(2):
            th = self.pot.inverse_mirror_map(z)
            B = self.balance(th)
            W, a = self.split(th)
            slope = (W * gw).sum(-1) - a * ga
            flat = slope == 0  # (B_j does not move along its direction: μ_j = 0)
            mu = (-(B - B_ref) / slope.masked_fill(flat, 1.0)).masked_fill(flat, 0.0)
            z = z + mu.index_select(0, owner) * g  # (z_wj + μ_j θ_wj, z_aj − μ_j θ_aj) in one product
        return z

    def balance_ref(self, z_ref: Tensor, b_at: Tensor | None = None) -> tuple:
        """(B_j(z_ref) `(m,)` — or B_j(``b_at``) — , directions θ_wj `(m, d)` and −θ_aj `(m,)` at z_ref, both as
        one vector `(p,)`, and each coordinate's neuron `(p,)`) for :meth:`restore_balance`."""
        pot = self.pot
        th_ref = pot.inverse_mirror_map(z_ref)
        W_ref, a_ref = self.split(th_ref)
        th_b = th_ref if b_at is None else pot.inverse_mirror_map(b_at)
        g = torch.cat([th_ref[: self.md], -a_ref])
        return self.balance(th_b), W_ref, -a_ref, g, self._coordinate_neuron(z_ref.device)

    def _coordinate_neuron(self, device) -> Tensor:
        """The neuron of every coordinate of θ = (w_1, …, w_m, a), `(p,)` (cached)."""
        if self._owner is None:
            ar = torch.arange(self.m, device=device)
            self._owner = torch.cat([ar.repeat_interleave(self.d), ar])
        return self._owner

    def surface_at(self, coeff: Tensor, x: float, idx: int) -> float:
        """h of surface ``idx`` (flat index) at point x ∈ [0, 1] of a step's dense output (coefficients `(P, p)`).

        Only neuron j's dual block is interpolated (h_ij depends on w_j alone).
        """
        i, j = divmod(idx, self.m)
        d = self.d
        zx = _horner(coeff[:, j * d : (j + 1) * d], x)
        return float(self.X[i] @ self.pot.inverse_mirror_map(zx))

    def surfaces_at(self, coeff: Tensor, x: Tensor, idx: Tensor) -> Tensor:
        """h of surfaces ``idx`` (flat indices, `(B,)`) at step fractions ``x`` `(B,)` of a step's dense output.

        Only neuron j's dual block is interpolated (h_ij depends on w_j alone); one batched inverse mirror map.
        """
        i, j = idx // self.m, idx % self.m
        Cw = coeff[:, : self.md].reshape(coeff.shape[0], self.m, self.d)[:, j]  # (P, B, d)
        zx = Cw[-1]
        for c in Cw[:-1].flip(0):
            zx = c + x.unsqueeze(1) * zx
        return (self.X[i] * self.pot.inverse_mirror_map(zx)).sum(-1)

    def surface_rates_fn(self, coeff: Tensor, idx: Tensor) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
        """x `(B,)` ↦ (h, dh/dx) of surfaces ``idx`` `(B,)` on a step's dense output, for repeated evaluation.

        Horner's scheme with its derivative on neuron j's dual block (gathered once); dh/dx = x_i · (∇²Φ)⁻¹ dz/dx.
        """
        i, j = idx // self.m, idx % self.m
        Cw = coeff[:, : self.md].reshape(coeff.shape[0], self.m, self.d)[:, j].flip(0)  # (P, B, d), top first
        Xi, pot = self.X.index_select(0, i), self.pot
        top, lower, zero = Cw[0], Cw[1:].unbind(0), torch.zeros_like(Cw[0])

        def rates(x: Tensor) -> tuple[Tensor, Tensor]:
            xb = x.unsqueeze(1)
            zx, dzx = top, zero
            for c in lower:
                dzx = zx + xb * dzx
                zx = c + xb * zx
            th = pot.inverse_mirror_map(zx)
            return (Xi * th).sum(-1), (Xi * inverse_map_slope(pot, th) * dzx).sum(-1)

        return rates
