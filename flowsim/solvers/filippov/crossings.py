"""Soft crossings of a two-layer (leaky-)ReLU net in closed form: per-crossing rates and the state correction.

A mixin of :class:`~flowsim.solvers.filippov.two_layer._TwoLayerSwitching` (it uses the switching system's data,
pattern and sliding sets): the pattern difference of the crossed points integrated along a step's old dense output
(:mod:`flowsim.solvers.filippov`, item 2), the crossings' ḣ before and after, their time shifts, the sliding
neurons' projected jumps, and the moments the implicit driver's stiff coupling needs (:mod:`.exponential`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .dense import _gl_interval_weights, _gl_nodes, _powers
from .lcp import _symmetric_pinv
from .state import inverse_map_slope


class _CrossingRates(NamedTuple):
    """Per-crossing quantities of the soft crossings of one step (:meth:`_TwoLayerSwitching.crossing_rates`)."""

    hdot_before: Tensor  # ḣ_k just before crossing k, (K,)
    hdot_after: Tensor  # ḣ_k just after crossing k, (K,)
    dtau: Tensor  # crossing-time shifts δτ_k, (K,)
    jump: Tensor  # ż_wj jump × δτ_k, (K, d)
    gate: Tensor  # gate of point i_k's pattern after its crossings up to k, (K, m)
    dalpha: Tensor  # largest |Σ Δα| of crossing k's (sliding) neuron over its crossings up to k, 0 if none, (K,)
    amp: Tensor  # a_j u_k: ż_wj jumps by amp_k x_k at crossing k (before the sliding projection), (K,)
    gram: Tensor  # x_k · D_k x_k' (sliding neurons: projected), (K, K)

    def head(self, k: int) -> _CrossingRates:
        """The first k crossings' quantities (crossing k depends on crossings ≤ k only; ``gram``, the last field,
        is cut in both dimensions)."""
        return _CrossingRates(*(t[:k] for t in self[:-1]), self.gram[:k, :k])


class _Correction(NamedTuple):
    """Closed-form effect of the soft crossings of one step (see :meth:`_TwoLayerSwitching.crossing_correction`)."""

    dz: Tensor  # Δz at the end of the corrected part, (p,)
    dF_end: Tensor  # pattern difference ΔF at the end, (p,)
    hdot_before: Tensor  # ḣ_k just before crossing k, (K,)
    hdot_after: Tensor  # ḣ_k just after crossing k, (K,)
    dz_moment: Tensor  # ∫ Δz dτ over the corrected part, (p,)
    dtau: Tensor  # crossing-time shifts δτ_k (applied to dz), (K,)
    # the error estimate's terms (``shift_terms`` or ``stiff_terms``; else None), the quartic fit's (``stiff_terms``):
    dz_shift: Tensor | None  # the shifts' part of dz, Σ_k (jump of ż at crossing k)·δτ_k, (p,) (subtracted)
    dz_shift_rest: Tensor | None  # the shifts' part not modelled by δτ_k (other neurons' crossings), (p,) (not applied)
    dz_moment2: Tensor | None  # ∫ (τ_e − τ) Δz dτ = ½ ∫ (τ_e − τ)² ΔF dτ over the corrected part, (p,)


class _CrossingCorrections:
    """Soft-crossing rates and corrections of :class:`~flowsim.solvers.filippov.two_layer._TwoLayerSwitching`."""

    def crossing_rates(self, coeff: Tensor, t0: Tensor, dt: Tensor, xc: Tensor, ii: Tensor, jj: Tensor):
        """Per-crossing quantities of transversal crossings inside one step (see :meth:`crossing_correction`).

        ḣ_k at crossing k, just before and just after it, is ḣ along the old dense output plus the velocity
        jumps of the crossings of the same neuron up to k (excluded / included): flipping (i', j) changes
        ż_{w_j} by (1 − s₋) a_j c_i' y_i' Δg x_i' (f_i' is continuous at its crossing, h_i'j = 0); other
        neurons' crossings change neuron j's field only through c (second order). Crossing k's quantities
        depend on crossings ≤ k only, so those of the first kb crossings are the first kb rows
        (:meth:`_CrossingRates.head`): computed once per step, whatever part of it is kept.

        Returns:
            a :class:`_CrossingRates` for the K crossings (``xc`` sorted, `(K,)`).
        """
        K = xc.shape[0]
        dtype, dev = coeff.dtype, coeff.device
        P = coeff.shape[0]
        ar = torch.arange(K, device=dev)
        pw, dpw = _powers(xc, P)  # (K, P)
        Th = self.pot.inverse_mirror_map(pw @ coeff)  # θ at the crossings, (K, p)
        W, a = self.split(Th)  # (K, m, d), (K, m)
        Xk, yk = self.X.index_select(0, ii), self.y.index_select(0, ii)
        # point i_k's pattern after its crossings up to k (the level it enters at x_k)
        same_pt = ii.unsqueeze(1) == ii.unsqueeze(0)
        upto = (same_pt & (ar.unsqueeze(0) <= ar.unsqueeze(1))).to(dtype)  # [k, k']
        flips = (upto @ torch.nn.functional.one_hot(jj, self.m).to(dtype)) > 0  # (K, m)
        P0 = self.P.index_select(
            0, ii
        )  # (a crossing point's sliding entries, on other neurons, have h = 0: any gate will do)
        Gk = self._gate(torch.where(flips, 1.0 - P0, P0))
        Hk = (W @ Xk.unsqueeze(-1)).squeeze(-1)  # h_{i_k j}(x_k), (K, m)
        # c_i(x_k): continuous at the crossing (h_{i_k j_k} = 0 there: flip k does not change f_i)
        c_x = self.field.loss_weights(t0 + xc * dt, yk * (Gk * Hk * a).sum(-1))
        Dk = inverse_map_slope(self.pot, W[ar, jj])  # (K, d)
        ak = a[ar, jj]  # a_j at x_k
        Cw = coeff[:, : self.md].reshape(P, self.m, self.d)[:, jj]  # (P, K, d)
        dzw = (dpw.T.unsqueeze(-1) * Cw).sum(0) / dt
        hd_dense = (Xk * Dk * dzw).sum(-1)
        s_old = self.P[ii, jj]
        u = self._one_sided(1.0 - 2.0 * s_old) * yk * c_x  # velocity jump / (a_j x_i)
        gram = (Xk * Dk) @ Xk.T  # [k, k'] = x_k · D_k x_k'
        same_j = jj.unsqueeze(1) == jj.unsqueeze(0)
        dalpha = torch.zeros_like(xc)
        if self.n_sliding:  # crossings of sliding neurons: projected jumps, the α's shifts
            gram, dalpha = self._sliding_rates(gram, Xk, Dk, W, a, t0 + xc * dt, u, jj, same_j, ar)
        before = (same_j & (ar.unsqueeze(0) < ar.unsqueeze(1))).to(dtype)
        hd_before = hd_dense + ak * ((before * gram) @ u)
        hd_after = hd_before + ak * gram.diagonal() * u
        # crossing-time shifts: the earlier crossings of neuron j moved h_k by Δh_k = x_k · D_j Δz_wj(τ_k) (first
        # order), so the corrected trajectory crosses at τ_k + δτ_k, δτ_k = −Δh_k / ḣ_k; the pattern difference
        # of crossing k then starts δτ_k later: Δz −= (jump of ż at crossing k)·δτ_k (second order, not small
        # when ḣ_k is: the caller limits |δτ_k|)
        lag = (xc.unsqueeze(1) - xc.unsqueeze(0)) * dt  # τ_k − τ_k'
        dh = ak * ((before * gram * lag) @ u)
        flat = hd_before == 0
        dtau = (-dh / hd_before.masked_fill(flat, 1.0)).masked_fill(flat, 0.0)
        jump = (ak * u * dtau).unsqueeze(1) * Xk  # (K, d): ż_wj jump × δτ_k
        return _CrossingRates(hd_before, hd_after, dtau, jump, Gk, dalpha, ak * u, gram)

    def _sliding_rates(self, gram, Xk, Dk, W, a, tau_k, u, jj, same_j, ar) -> tuple[Tensor, Tensor]:
        """Crossings (i_k, j_k) of sliding neurons (points S): the equivalent control absorbs the part of a
        velocity jump that would move h_S, so the jump of ż_wj is a_j u_k Π_k x_k, with
        Π_k x = x − X_Sᵀ M_k⁺ X_S D_k x, M_k = X_S D_k X_Sᵀ, and the α's jump by
        Δα_s = −u_k (M_k⁺ X_S D_k x_k)_s / ((1 − s₋) c_s y_s) (Σ_s r_s α_s x_s is the control term,
        r_s = (1 − s₋) a_j c_s y_s; a_j cancels).

        Returns the gram [k, k'] = x_k · D_k Π_k x_k' `(K, K)` (the rows of crossings of other neurons unchanged)
        and, per crossing, the largest |Σ Δα_s| over its neuron's sliding points, summed over the neuron's
        crossings up to and including it `(K,)` (0 off sliding neurons).
        """
        js, I, mask = self._sliding_sets()
        pos = torch.full((self.m,), -1, dtype=torch.long, device=Xk.device)
        pos[js] = torch.arange(js.numel(), device=Xk.device)
        on = torch.nonzero(pos[jj] >= 0).flatten()  # crossings of sliding neurons, (K_s,)
        dalpha = torch.zeros_like(u)
        if not on.numel():
            return gram, dalpha
        p = pos[jj[on]]
        Ik, fm = I[p], mask[p].to(gram.dtype)  # (K_s, k)
        XS = self.X[Ik] * fm.unsqueeze(2)  # (K_s, k, d)
        XD = XS * Dk[on].unsqueeze(1)
        V = XD @ Xk.T  # (K_s, k, K): X_S D_k x_k'
        Minv = _symmetric_pinv(XD @ XS.transpose(1, 2))  # (K_s, k, k)
        w = V[torch.arange(on.numel(), device=Xk.device), :, on]  # (K_s, k): X_S D_k x_k
        Mw = (Minv @ w.unsqueeze(2)).squeeze(2)  # (K_s, k)
        gram[on] = gram[on] - (Mw.unsqueeze(1) @ V).squeeze(1)
        # c_s at crossing k's state (the points' own patterns; their sliding entries have h = 0)
        yS = self.y[Ik]
        HS = XS @ W[on].transpose(1, 2)  # (K_s, k, m)
        qS = yS * (self._gate(self.P[Ik]) * HS * a[on].unsqueeze(1)).sum(-1)
        cS = self.field.loss_weights(tau_k[on].unsqueeze(1), qS)
        rS = (1.0 - self.slope) * cS * yS
        jump = torch.where(mask[p], -u[on].unsqueeze(1) * Mw / torch.where(mask[p], rS, 1.0), 0.0)  # (K_s, k)
        upto = (same_j & (ar.unsqueeze(0) <= ar.unsqueeze(1)))[on][:, on].to(gram.dtype)
        dalpha[on] = (upto @ jump).abs().amax(1)
        return gram, dalpha

    def crossing_correction(
        self,
        coeff: Tensor,
        t0: Tensor,
        dt: Tensor,
        xc: Tensor,
        ii: Tensor,
        jj: Tensor,
        x_end: float = 1.0,
        rates: _CrossingRates | None = None,
        stiff_terms: bool = False,
        shift_terms: bool = False,
    ):
        """Closed-form effect of transversal crossings inside one step integrated with the old pattern.

        The crossings (i_k, j_k) happen at step fractions ``xc`` (sorted, `(K,)`, all < ``x_end``: the corrected
        part of the step is [0, x_end], x_end ≤ 1). Between crossing times the
        activation pattern is fixed, so the exact field is the old-pattern field plus the pattern difference
        of the points that crossed — only those points' terms change (their loss weight c_i included). Point i
        contributes one *level* per crossing k of it: its pattern after its crossings up to k, valid from x_k
        to its next crossing (or the step end). Each level's term F_i(P_k) − F_i(P_old) is a smooth function of
        the dense output z_old(τ); it is evaluated at 8 Gauss–Legendre nodes of [0, x_end] and integrated
        over its own sub-interval with the interpolating polynomial's exact weights (no RHS evaluation). Cost
        O(8 · K · m) plus one (9, p) inverse mirror map, so hundreds of crossings cost about one evaluation.
        Δz = ∫ ΔF dτ is the first-order correction of the state at x_end; the coupling J·Δz (the state moved) is
        second order and is measured by the caller. The crossing-time shifts δτ_k (:meth:`crossing_rates`) are
        applied.

        ``rates``: :meth:`crossing_rates` of these crossings (or of more, the first K rows are used); computed
        here when None. ``shift_terms``: also the shifts' part of Δz and the crossing-time shifts δτ_k leaves out
        (:meth:`_unmodelled_shifts`), for the soft step's error estimate (else None). ``stiff_terms``: those and
        ∫ (τ_e − τ) Δz dτ, the implicit driver's quartic fit (else None).

        Returns:
            a :class:`_Correction`: Δz `(p,)`, ΔF at x_end `(p,)`, ḣ_k just before and just after crossing k
            `(K,)` each (used to check that every crossing is transversal), ∫ Δz dτ `(p,)` (the coupling
            estimate's length scale), the crossing-time shifts δτ_k `(K,)`, and with ``stiff_terms`` their part
            of Δz `(p,)` (already applied), the unmodelled shifts' state change `(p,)` and ∫ (τ_e − τ) Δz dτ `(p,)`
            (the implicit driver's quartic fit).
        """
        K = xc.shape[0]
        rates = self.crossing_rates(coeff, t0, dt, xc, ii, jj) if rates is None else rates.head(K)
        dtype, dev = coeff.dtype, coeff.device
        gx, gx_end = _gl_nodes(dtype, dev, with_end=True)  # (N,) nodes in (0, 1), and with the end 1 (N + 1,)
        N = gx.shape[0]
        nodes = x_end * gx_end
        P = coeff.shape[0]
        Z = _powers(nodes, P, derivative=False)[0] @ coeff
        Th = self.pot.inverse_mirror_map(Z)
        W, a = self.split(Th)  # (Q, m, d), (Q, m)
        pts, loc = torch.unique(ii, return_inverse=True)  # affected points
        XI, yI = self.X.index_select(0, pts), self.y.index_select(0, pts)
        H = (W @ XI.T).transpose(1, 2)  # (Q, nI, m) (one product per node, not Q·nI)
        tau = (t0 + nodes * dt).unsqueeze(1)
        P_old = self.P.index_select(
            0, pts
        )  # (nI, m); sliding entries (h = 0) count as inactive: sliding rows are projected below
        G_old = self._gate(P_old)
        c_old = self.field.loss_weights(tau, yI * ((G_old * H) * a.unsqueeze(1)).sum(-1))  # (Q, nI)
        # levels: point i_k's pattern after its crossings up to k
        Gk = rates.gate
        Hk = H.index_select(1, loc)  # (Q, K, m)
        yk = yI.index_select(0, loc)
        ck = self.field.loss_weights(tau, yk * ((Gk * Hk) * a.unsqueeze(1)).sum(-1))  # (Q, K)
        Dc = (
            ck.unsqueeze(-1) * Gk - c_old.index_select(1, loc).unsqueeze(-1) * G_old.index_select(0, loc)
        ) * yk.unsqueeze(-1)  # (Q, K, m)
        # level k lives on [x_k, next crossing of the same point (or x_end)]
        ar = torch.arange(K, device=dev)
        later = (loc.unsqueeze(1) == loc.unsqueeze(0)) & (ar.unsqueeze(0) > ar.unsqueeze(1))
        xnext = xc.unsqueeze(0).masked_fill(~later, float("inf")).amin(1)
        last = torch.isinf(xnext)
        xnext = xnext.masked_fill(last, x_end)
        # (R, K, N): the weights of ∫ ΔF dτ, of ∫ Δz dτ = ∫ (τ_end − τ) ΔF dτ (the coupling's length scale) and,
        # with stiff_terms, of ∫ (τ_end − τ)² ΔF dτ = 2 ∫ (τ_end − τ) Δz dτ over the corrected part
        R = 3 if stiff_terms else 2
        wts = _gl_interval_weights(gx, xc / x_end, xnext / x_end, rows=R)
        length = x_end * dt
        wts = wts * torch.stack([length, length**2, length**3][:R]).reshape(R, 1, 1)
        Xk = self.X.index_select(0, ii)
        wq = wts.transpose(1, 2).unsqueeze(-1)  # (3, N, K, 1)
        Acoef = (wq * (a[:N].unsqueeze(1) * Dc[:N])).sum(1)  # (3, K, m)
        corr_Ws = Acoef.transpose(1, 2) @ Xk  # (3, m, d)
        corr_as = (wq * (Dc[:N] * Hk[:N])).sum((1, 2))  # (3, m)
        lastf = last.to(dtype).unsqueeze(1)
        dF1_W = (lastf * a[N] * Dc[N]).T @ Xk
        dF1_a = (lastf * Dc[N] * Hk[N]).sum(0)
        # the crossing-time shifts (crossing_rates): Δz −= jump·δτ_k, ∫ (τ_end − τ)^j ΔF dτ −= jump·δτ_k·(τ_end − τ_k)^j
        shift = torch.zeros(R, self.m, self.d, dtype=dtype, device=dev)
        shift[0].index_add_(0, jj, rates.jump)
        shift[1].index_add_(0, jj, rates.jump * ((x_end - xc) * dt).unsqueeze(1))
        if stiff_terms:
            shift[2].index_add_(0, jj, rates.jump * ((x_end - xc) * dt).square().unsqueeze(1))
        corr_Ws = corr_Ws - shift
        if self.n_sliding:  # sliding neurons: their equivalent control absorbs what would move h_S
            rows = self.project_sliding_rows(torch.cat([corr_Ws, dF1_W.unsqueeze(0)]), W[N])
            corr_Ws, dF1_W = rows[:R], rows[R]
        dF1 = torch.cat([dF1_W.reshape(-1), dF1_a])
        corr = torch.cat([corr_Ws[0].reshape(-1), corr_as[0]])
        corr2 = torch.cat([corr_Ws[1].reshape(-1), corr_as[1]])
        dz_shift = rest = corr3 = None
        if stiff_terms:
            corr3 = 0.5 * torch.cat([corr_Ws[2].reshape(-1), corr_as[2]])
        if stiff_terms or shift_terms:
            dz_shift = torch.cat([shift[0].reshape(-1), torch.zeros(self.m, dtype=dtype, device=dev)])
            rest = self._unmodelled_shifts(gx, xc, xnext, x_end, dt, a[:N], Dc[:N], ii, jj, rates)
        return _Correction(corr, dF1, rates.hdot_before, rates.hdot_after, corr2, rates.dtau, dz_shift, rest, corr3)

    def _unmodelled_shifts(self, gx, xc, xnext, x_end, dt, a, Dc, ii, jj, rates) -> Tensor:
        """The crossing-time shifts :meth:`crossing_rates` leaves out, as a state change `(p,)` (first order).

        δτ_k there counts only the velocity jumps of crossing k's own neuron. Every earlier crossing moves h_k
        through the whole first-order Δz(τ_k) = Σ_l ∫_{x_l}^{min(x_k, x_l next)} ΔF_l (other neurons' crossings
        through the crossed points' loss weights; the levels' ΔF at the Gauss–Legendre nodes, as in the
        correction), Δh_k = x_k·D_k Δz_wj(τ_k); the rest, Δh_k − (−δτ_k ḣ_k), shifts crossing k by a further
        −(rest)/ḣ_k, which moves the state by −amp_k x_k times that. Not applied: an error estimate (a stiff
        step's Δz(τ_k) overstates the state change, whose fast modes relax).
        """
        K, N = xc.shape[0], gx.shape[0]
        lo = (xc / x_end).unsqueeze(0).expand(K, K)  # [k, l]: level l from x_l …
        hi = torch.minimum(xnext.unsqueeze(0), xc.unsqueeze(1)).div(x_end).clamp(min=lo)  # … to crossing k (or its end)
        w = _gl_interval_weights(gx, lo.reshape(-1), hi.reshape(-1))[0].reshape(K, K, N) * (x_end * dt)
        # ż_wj of level l at node q, along x_l, for neuron j_k: a_q[j_k] Dc[q, l, j_k]
        coef = a[:, jj].unsqueeze(1) * Dc[:, :, jj]  # (N, l, k)
        dh_full = (w * coef.permute(2, 1, 0)).sum(2).mul(rates.gram).sum(1)  # Σ_l (∫ level l) · x_k D_k x_l
        hd = rates.hdot_before
        rest = dh_full + rates.dtau * hd  # the modelled part is −δτ_k ḣ_k
        dtau_rest = torch.where(hd != 0, -rest / torch.where(hd != 0, hd, 1.0), 0.0)
        out = torch.zeros(self.m, self.d, dtype=xc.dtype, device=xc.device)
        out.index_add_(0, jj, -(rates.amp * dtau_rest).unsqueeze(1) * self.X[ii])
        return torch.cat([out.reshape(-1), torch.zeros(self.m, dtype=xc.dtype, device=xc.device)])
