"""Soft crossings: transversal crossings switched inside a kept step, the state corrected in closed form.

Crossings that are transversal (both one-sided fields move h the same way at the crossing, ḣ along the piecewise
field) and touch no sliding neuron or point are switched inside the step; the pattern difference of the crossed
points, integrated from each crossing time on along the dense output, corrects the state (no RHS evaluation:
:meth:`~flowsim.solvers.filippov.two_layer._TwoLayerSwitching.crossing_correction`). The field's response to the
moved state (the coupling, second order) is measured with the evaluation the next segment needs anyway and added.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from .dense import _horner
from .events import SoftEvent
from .segment import _SegmentField
from .state import _ZERO_FACTOR


class _SideCheck(NamedTuple):
    """A corrected state's sides (:meth:`_SoftCrossings._sides_at`)."""

    theta: Tensor  # θ(z), (p,)
    zero: Tensor | None  # the at-zero band there, 10 error scales of h, (n, m); None: not computed
    sigma: Tensor  # the sides σ once the kept crossings flip, (n, m)
    bad: Tensor | None  # the non-sliding surfaces off their side, (n, m) bool, or None if there are none


@dataclass
class _KeptPart:
    """The part of a soft step kept (:meth:`_SoftCrossings._kept_part`): its first ``kb`` crossings, its end
    ``x_end`` (a step fraction; 1: the whole step), why it ends there (a ``soft_truncations`` reason), the forced
    sides of a sliding exit there, the crossings' rates, and a save time inside the step with its step fraction."""

    kb: int
    x_end: float
    reason: str
    forced: dict
    rates: object
    t_save: Tensor | None = None
    x_save: float | None = None

    def end_at(self, kb: int, x_end: float, reason: str, forced: dict | None = None) -> None:
        """Keep the first ``kb`` crossings, end at ``x_end`` for ``reason``."""
        self.kb, self.x_end, self.reason, self.forced = kb, x_end, reason, {} if forced is None else forced


_MAX_SOFT = 1024  # most crossings switched softly (with an event correction) in one step (memory: K² pairs)
_NEGLIGIBLE_COUPLING = 0.01  # a coupling correction E below this × the error tolerance (RMS) is left out


class _SoftCrossings:
    """Soft crossings of :class:`~flowsim.solvers.filippov.FilippovDriver` (a part of the driver: it uses ``sw``,
    ``field``, the tolerances and ``soft_*`` options, the run's ``_stats``, and the driver's event location)."""

    _coupling_failure = "error"  # why the last switch was undone (:meth:`_coupling_undo`)
    # (z₁, θ₁, α₁, at-zero band at θ₁ or None) of the last kept soft step's end, for the next segment start
    # (FilippovDriver._light_start)
    _soft_end: tuple | None = None

    def _soft_step(
        self,
        new,
        prev,
        C: Tensor,
        cross: Tensor,
        g: Tensor,
        xs: Tensor,
        sigf,
        bandf,
        seg: _SegmentField,
        saves: Tensor,
        cols: Tensor,
    ):
        """Keep an accepted step (or its first part) whose crossings are transversal, correcting it in closed form.

        Crossings are located exactly (roots on the dense output) and sorted by time. The old-pattern step is
        exact up to the first crossing; the pattern difference of the crossed points is integrated from each
        crossing on along the dense output (:meth:`_TwoLayerSwitching.crossing_correction`, no RHS
        evaluation). A crossing that cannot be switched softly — not transversal on both sides (ḣ along the
        piecewise field: a sliding or grazing candidate, or a cascade of crossings of one neuron that turns it
        back), touching a sliding neuron or point, crossed twice in the step, or beyond the first 1,024 — ends
        the kept part: the step is then **truncated** there, x_end = its crossing time, the state at x_end
        taken from the dense output or by a redo RK step (:meth:`_truncated_state`), and the crossings before it
        corrected softly; that crossing is then classified at the next segment start like any event. With no such
        crossing the whole step is kept (x_end = 1). A corrected end that leaves another surface off its side
        (the corrected trajectory crosses it) ends the kept part where the corrected trajectory reaches that
        surface (:meth:`_side_cut`, truncation reason "side_cut"), or else halves the kept crossings ("side").

        The coupling (the field's response to the moved state, second order) is measured with the one
        evaluation the next segment needs anyway, f_new(z_1): m = f_new(z_1) − f_old(z_e) − ΔF(τ_e) ≈ J Δz. The
        neglected integral ∫ J δz dτ ≈ J ∫ Δz dτ; writing ∫ Δz dτ = L Δz + r (L the tolerance-weighted
        projection, both from the quadrature; r = 0 for one crossing, L = ½(τ_e − τ_c)), E = L·m is added
        (every neuron's balance restored again) and f_new re-evaluated at the corrected state (an E below 1 % of
        the error tolerance, with nothing missed, is left out: no re-evaluation). Where the missed
        part |r|·|m|/|Δz| exceeds ``soft_fraction`` of the step's error tolerance, J r is added too, from one
        more evaluation (f_new(z_1 + r) − f_new(z_1); ``n_coupling_differences`` counts them). |E| must stay
        below ``soft_cap`` of the error tolerance (RMS norm, as torchdiffeq's error control); when it does
        not, the kept part is shortened once — to where the estimate, quadratic in the length from the first
        crossing, falls to half the cap, with the crossings before that point — and checked again. A sliding
        surface of the new pattern off its sliding mode at the corrected end (:meth:`_sliding_left`: left inside
        the kept part) shortens it the same way (reason "sliding_alpha"). Every neuron's balance B_j is restored
        to its uncorrected value (on a truncated step: its value at the step start) along (θ_wj, −θ_aj) (every
        fixed-pattern field conserves it; the correction's defect is second order, and not only in the crossed
        neurons: the crossed points' loss weights change, which moves every neuron).

        A sliding surface leaving its sliding mode inside the kept part (α leaving [0, 1] or, two-layer nets, a_j
        crossing 0: ``sw.sliding_margins`` on the old dense output) ends it there (the exit's forced sides are
        returned for the next classification, as for an exact exit event). So does a save time after the first
        crossing where steps do not land on save times (``exact_saves=False``; the radau driver's steps always
        do), so that every save is either on the exact old-pattern part or a corrected end.

        Returns a :class:`SoftEvent` (the new pattern set, f_new(z_e) cached for the next segment) or None:
        the caller handles the earliest crossing exactly (``soft_fallbacks`` counts why: "at_start",
        "sliding_exit", "side", "error", "sliding_alpha", or the reason of a first crossing that cannot be switched
        softly).
        """
        sw = self.sw
        fail = self._soft_fallback
        t0, t1 = prev.t1, new.t1
        dt = t1 - t0
        x, idxs, n_changes = self._sorted_crossings(C, cross, g, xs, sigf, bandf, cols)
        if bool(x[0] <= 0):
            return fail("at_start")
        ii, jj = idxs // sw.m, idxs % sw.m
        kept = self._kept_part(new, prev, x, ii, jj, n_changes, C, seg, saves)
        if kept is None:
            return None
        cc = self._correction(C, t0, dt, x[: kept.kb], ii[: kept.kb], jj[: kept.kb], kept.x_end, kept.rates)
        for attempt in range(2):
            cc = self._side_checked(C, cc, kept, x, ii, jj, t0, dt)
            if cc is None:
                return fail("side")
            kb, x_end = kept.kb, kept.x_end
            t_e = t1 if x_end >= 1.0 else (kept.t_save if x_end == kept.x_save else t0 + dt * x_end)
            if x_end >= 1.0:
                z_e, f_e = new.y1, new.f1
                bref = sw.balance_ref(z_e)
            else:
                z_e, f_e, bref = self._truncated_state(prev, new, t_e)
            # every neuron's balance: the crossed points' loss weights change, so Δz moves all neurons
            z1 = sw.restore_balance(z_e + cc.dz, bref)
            end = self._sides_ok(z1, ii[:kb], jj[:kb])
            if end is None:
                return fail("side")
            first = (t0 + dt * x[0], C, float(x[0]))  # the first crossing: τ_c, dense output, step fraction
            z1, f1_new, ratio = self._switch_with_coupling(
                prev, t_e, z_e, f_e, z1, end, bref, cc, ii[:kb], jj[:kb], first
            )
            if ratio is None:
                break
            why = self._coupling_failure
            # shorten the kept part: the estimate grows like its length squared (from the first crossing)
            x_ok = float(x[0]) + 0.7 * (x_end - float(x[0])) / ratio**0.5
            kb_new = int((x[:kb] < x_ok).sum())
            if attempt == 1 or kb_new == 0:
                return fail(why)
            kept.end_at(kb_new, x_ok, why)
            cc = self._correction(C, t0, dt, x[:kb_new], ii[:kb_new], jj[:kb_new], x_ok, kept.rates)
        self._count_soft_step(kept.kb, kept.x_end, kept.reason, kept.forced)
        seg.start_field = (float(t_e), z1, sw.mode.clone(), f1_new)
        if not sw.n_sliding:
            seg.cache = seg.start_field
        return SoftEvent(z1, t_e, kept.forced)

    def _kept_part(self, new, prev, x: Tensor, ii: Tensor, jj: Tensor, n_changes: Tensor, C, seg, saves: Tensor):
        """The part of the step that can be kept softly (a :class:`_KeptPart`, with the crossings' rates), or None
        (counted in ``soft_fallbacks``) when it would keep no crossing. It ends at the first crossing that cannot
        be switched softly (:meth:`_first_hard_crossing`, not transversal, moving a sliding α by half its margin
        or more), at a sliding exit, or at a save time after the first crossing, whichever comes first."""
        sw, fail = self.sw, self._soft_fallback
        t0, t1 = prev.t1, new.t1
        dt = t1 - t0
        K = int(ii.numel())
        kb, reason = self._first_hard_crossing(n_changes, ii, jj, K)
        if kb == 0:
            return fail(reason)
        x_end = 1.0 if kb == K else float(x[kb])
        # per-crossing rates, once for the step (crossing k's depend on crossings ≤ k: any kept prefix reuses them)
        rates = sw.crossing_rates(C, t0, dt, x[:kb], ii[:kb], jj[:kb])
        ok = self._transversal(rates, sw.sigma[ii[:kb], jj[:kb]], x[:kb], dt, x_end)
        if sw.n_sliding:
            # a crossing of a sliding neuron moves its α's: they must stay well inside (0, 1) (half their margin
            # over the step's evaluations; another neuron's α near a bound is that neuron's exit, found below)
            held = (rates.dalpha == 0) | (rates.dalpha.abs() < 0.5 * seg.margins_of(jj[:kb]))
            if not bool(held.all()):
                k_h = int(torch.nonzero(~held).flatten()[0])
                ok[k_h:] = False
        if not bool(ok.all()):
            kb = int(torch.nonzero(~ok).flatten()[0])
            reason = "sliding" if sw.n_sliding and not bool(held[kb]) else "not_transversal"
            if kb == 0:
                return fail(reason)
            x_end = float(x[kb])
        kept = _KeptPart(kb, x_end, reason, {}, rates)
        if sw.n_sliding:
            # (up to x_end: the kept part only ends earlier from here on, and the caller's fallback looks up to the
            # first crossing; remembered for it)
            x_exit, f_exit = self._find_exit(new, prev, seg, None if x_end >= 1.0 else x_end)
            if x_exit is not None and x_exit < x_end:
                # a sliding α leaves [0, 1] first: keep the crossings before it, end there with its forced sides
                kb_exit = int((x[:kb] < x_exit).sum())
                if kb_exit == 0:
                    return fail("sliding_exit")
                kept.end_at(kb_exit, float(x_exit), "sliding_exit", f_exit)
        t_end = t1 if kept.x_end >= 1.0 else t0 + dt * kept.x_end
        kept.t_save, kept.x_save = self._save_inside_kept(saves, t0, dt, float(x[0]), t_end)
        if kept.t_save is not None:
            # a save time after the first crossing (exact_saves=False: steps do not land on save times): keep the
            # crossings before it and end there, so that the save is the corrected state
            kept.end_at(int((x[: kept.kb] < kept.x_save).sum()), kept.x_save, "save")
        return kept

    def _side_checked(self, C, cc, kept, x: Tensor, ii: Tensor, jj: Tensor, t0, dt):
        """The correction ``cc`` of the kept part, or of a shorter one (``kept`` updated), whose corrected end leaves
        every other surface on its side; None if none does.

        Checked first on the dense output (no RHS evaluation). While the end is off a side (a crowded step: the
        corrected trajectory crosses surfaces the old one does not), the kept part ends where the corrected
        trajectory reaches them (:meth:`_side_cut`, once), else the kept crossings are halved."""
        cut_tried = False
        while True:
            kb, x_end = kept.kb, kept.x_end
            chk = self._sides_at(_horner(C, x_end) + cc.dz, ii[:kb], jj[:kb])
            if chk.bad is None:
                return cc
            x_cut = None if cut_tried else self._side_cut(C, chk.bad, chk.theta, x[:kb], ii[:kb], jj[:kb], x_end)
            cut_tried = True
            kb_cut = 0 if x_cut is None else int((x[:kb] < x_cut).sum())
            if kb_cut > 0:
                kept.end_at(kb_cut, x_cut, "side_cut")
            elif kb == 1:
                return None
            else:
                kept.end_at(kb // 2, float(x[kb // 2]), "side")
            cc = self._correction(C, t0, dt, x[: kept.kb], ii[: kept.kb], jj[: kept.kb], kept.x_end, kept.rates)

    @staticmethod
    def _save_inside_kept(saves: Tensor, t0: Tensor, dt: Tensor, x_first: float, t_end: Tensor):
        """The first save time strictly between the first crossing (step fraction ``x_first``) and the kept part's
        end ``t_end``, and its step fraction; (None, None) if there is none."""
        if not saves.numel():
            return None, None
        inside = (saves > t0 + dt * x_first) & (saves < t_end)
        if not bool(inside.any()):
            return None, None
        t_save = saves[inside].min()
        return t_save, float((t_save - t0) / dt)

    def _correction(self, C, t0, dt, xc, ii, jj, x_end, rates):
        """:meth:`_TwoLayerSwitching.crossing_correction` of the kept crossings, with the crossing-time shifts' terms
        for :meth:`_shift_error` (the implicit driver asks for its quartic fit's moment too)."""
        return self.sw.crossing_correction(C, t0, dt, xc, ii, jj, x_end, rates, shift_terms=True)

    @staticmethod
    def _shift_error(cc, tol: Tensor, length: float) -> float:
        """The error of the correction's crossing-time shifts, in RMS units of the error tolerance ``tol`` `(p,)`:
        their second order (δτ_k = −Δh_k/ḣ_k is first order: its error, ½ ḧ δτ²/ḣ per unit of the jump, is
        bounded with |ḧ/ḣ| ≤ 1/L, L = ``length`` from the first crossing: the step resolves the trajectory's
        curvature) plus the shifts δτ_k leaves out (other neurons' crossings move h_k too; first order)."""
        est = float((cc.dz_shift_rest / tol).square().mean().sqrt())
        if cc.dtau.numel() and length > 0:
            est += float((cc.dz_shift / tol).square().mean().sqrt()) * float(cc.dtau.abs().max()) / (2.0 * length)
        return est

    def _soft_fallback(self, reason: str) -> None:
        """Count why a step with crossings is not kept softly; None (the caller handles the crossing exactly)."""
        self._stats.count_fallback(reason)
        return None

    def _sorted_crossings(self, C: Tensor, cross: Tensor, g: Tensor, xs: Tensor, sigf, bandf, cols: Tensor):
        """The step's crossings located as roots on the dense output and sorted by time: step fractions x `(K,)`,
        flat surface indices `(K,)`, and each one's number of sign changes in the step `(K,)`. Columns of
        ``cross`` and ``g`` are the surfaces ``cols`` (flat indices)."""
        cnt = cross.sum(0)
        sub = torch.nonzero(cnt).flatten()
        k = cross[:, sub].to(torch.int8).argmax(0)
        x = self._roots(C, cols[sub], xs[k], xs[k + 1], sigf, bandf, g[k, sub], g[k + 1, sub])
        order = torch.argsort(x)
        return x[order], cols[sub][order], cnt[sub][order]

    def _first_hard_crossing(self, n_changes: Tensor, ii: Tensor, jj: Tensor, K: int) -> tuple[int, str]:
        """Index of the first crossing that cannot be switched softly and why ("recross": crossed twice in the
        step, "many": beyond the first 1,024); (K, "many") if none. (Crossings of sliding neurons are switched
        softly, their jumps projected by the equivalent control, unless they move an α too far: checked with
        the crossing rates.)"""
        bad = {"recross": n_changes > 1}
        kb, reason = min(K, _MAX_SOFT), "many"
        for r, flag in bad.items():
            f = torch.nonzero(flag[:kb]).flatten()
            if f.numel():
                kb, reason = int(f[0]), r
        return kb, reason

    @staticmethod
    def _transversal(rates, s_old: Tensor, xc: Tensor, dt: Tensor, x_end: float) -> Tensor:
        """Crossings `(K,)` that are transversal (ḣ before and after the crossing both through the surface, from the
        side ``s_old``) and whose corrected crossing time stays near the located one, inside the kept part."""
        hd_b, hd_a = rates.hdot_before, rates.hdot_after
        ok = (s_old * hd_b < 0) & (s_old * hd_a < -1e-2 * hd_b.abs())
        x_shift = xc + rates.dtau / dt
        ok &= (rates.dtau.abs() <= 0.1 * dt) & (x_shift > 0) & (x_shift < x_end)
        return ok

    def _switch_with_coupling(self, prev, t_e, z_e, f_e, z1, end, bref, cc, ii, jj, first):
        """Switch the crossings (ii, jj) and add the coupling term to the corrected state z1 at τ_e (``end``: z1's
        :class:`_SideCheck`; ``first``: the first crossing's τ_c, the dense output's coefficients and x_c, for the
        implicit driver's stiff coupling).

        Returns (z1, f_new(z1), None) with the new pattern set, or (None, None, ratio) with the old pattern
        restored when the coupling estimate is ``ratio`` > 1 times ``soft_cap``.
        """
        sw = self.sw
        tol = self.atol + self.rtol * torch.maximum(prev.y1.abs(), z_e.abs())
        # the correction's own error first (no evaluation): with |Δz| at thousands of tolerances, its crossing-time
        # shifts' part was measured 25 × rtol off where the coupling estimate passed (smoothed p = 3.6, scaled copies)
        shifts = self._shift_error(cc, tol, float(t_e - first[0]))
        if shifts > self.soft_cap:
            self._coupling_failure = "error"
            return None, None, shifts / self.soft_cap
        snap = sw.flip(ii, jj, end.sigma)
        theta = end.theta
        self.field.nfe += 1
        f1_new, alpha = sw.velocity(t_e, theta)
        # second-order coupling: the moved state changes the field, δz(τ_e) gains ∫ J δz dτ ≈ J·∫ Δz dτ. The
        # one evaluation the next segment needs anyway gives J along Δz: m = f_new(z_1) − f_new(z_e) ≈ J Δz
        # (f_new(z_e) = f_old(z_e) + ΔF(τ_e)). With ∫ Δz dτ = L Δz + r (L the tolerance-weighted projection;
        # r = 0 for one crossing), E = L m is added; where r's effect |J r| ≈ |r| |m| / |Δz| exceeds soft_fraction
        # of the error tolerance, J r is added too (a difference of the new field); |E| must stay below soft_cap
        # (RMS norm, in units of the error tolerance).
        m_dir = f1_new - f_e - cc.dF_end
        dz_t, dz2_t = cc.dz / tol, cc.dz_moment / tol
        n1 = float(dz_t.square().sum())
        L = float((dz2_t * dz_t).sum()) / n1 if n1 > 0 else 0.0
        r_m = float((m_dir / tol).square().mean().sqrt())
        E = L * m_dir
        est = float((dz2_t - L * dz_t).square().sum().sqrt()) * r_m / n1**0.5 if n1 > 0 else 0.0
        size = abs(L) * r_m
        if size > self.soft_cap:
            return self._coupling_undo(snap, "error", size / self.soft_cap)
        if size <= _NEGLIGIBLE_COUPLING and est <= self.soft_fraction:
            if self._sliding_left(theta, alpha):
                return self._coupling_undo(snap, "sliding_alpha", 2.0)
            self._soft_end = (z1, theta, alpha, end.zero)
            return z1, f1_new, None  # E below 1 % of the tolerance: left out (f_new(z_1) starts the next segment)
        if est > self.soft_fraction:
            # the part of ∫ Δz dτ not along Δz: J r by a difference of the new field (one more evaluation)
            r_vec = cc.dz_moment - L * cc.dz
            f_r, _ = sw.velocity(t_e, self.field.potential.inverse_mirror_map(z1 + r_vec))
            self.field.nfe += 1
            self._stats.n_coupling_differences += 1
            E = E + (f_r - f1_new)
        # the exact flow conserves every B_j, the approximation error of E need not: restored again
        z1 = sw.restore_balance(z1 + E, bref)
        theta = self.field.potential.inverse_mirror_map(z1)
        self.field.nfe += 1
        f1_new, alpha = sw.velocity(t_e, theta)  # the next segment's first evaluation
        if self._sliding_left(theta, alpha):
            return self._coupling_undo(snap, "sliding_alpha", 2.0)
        self._soft_end = (z1, theta, alpha, None)
        return z1, f1_new, None

    def _coupling_undo(self, snap, why: str, ratio: float):
        """Restore the old pattern after a rejected switch; (None, None, ``ratio``), :attr:`_coupling_failure` =
        ``why`` (the reason the caller counts: "error", "sliding_alpha")."""
        self.sw.unflip(snap)
        self._coupling_failure = why
        return None, None, ratio

    def _sliding_left(self, theta: Tensor, alpha: Tensor | None) -> bool:
        """Whether a sliding surface of the new pattern at the corrected end θ has left its sliding mode
        (``sw.sliding_margins`` negative or not finite: α outside [0, 1], …): left inside the kept part, which
        the old pattern's exit search cannot see (a crossing of another neuron moves the sliding neuron's α
        through the crossed point's loss weight; measured: α = −2.5 after a crossing, the state 32 error
        tolerances off, the coupling estimate below the cap)."""
        if alpha is None or not self.sw.n_sliding:
            return False
        room = self.sw.sliding_room(theta, alpha)
        return not bool((room >= 0.0).all())

    def _count_soft_step(self, kb: int, x_end: float, reason: str, forced: dict) -> None:
        """Statistics of a kept soft step with ``kb`` crossings (truncated at ``x_end`` < 1 for ``reason``)."""
        st = self._stats
        if x_end < 1.0:
            st.count_truncation(reason)
        st.n_soft_crossings += kb  # a subset of n_crossings
        st.max_soft_crossings_per_step = max(st.max_soft_crossings_per_step, kb)
        st.n_crossings += kb
        st.n_soft_steps += 1
        if forced:
            st.n_exit_events += 1

    def _truncated_state(self, prev, new, t_e: Tensor) -> tuple[Tensor, Tensor, tuple]:
        """State z_e, old-pattern field f_e and balance reference at τ_e inside an accepted step (truncated soft step).

        z_e from :meth:`_state_inside` (the dense output, along which the corrections are integrated too, or a
        redo step, RK or Radau); one field evaluation unless the redo gave it. The old-pattern flow conserves every
        B_j and the interpolant only to its error, so for an interpolated state B_j is restored to its value at the
        step start.
        """
        z_e, interpolated, f_e = self._state_inside(prev, new, t_e)
        if f_e is None:
            f_e = self._seg(t_e, z_e)
        return z_e, f_e, self.sw.balance_ref(z_e, b_at=prev.y1) if interpolated else self.sw.balance_ref(z_e)

    def _sides_at(self, z: Tensor, ii: Tensor, jj: Tensor) -> _SideCheck:
        """θ(z), the sides once (ii, jj) flip, and the non-sliding surfaces `(n, m)` (bool) off their side there (|h|
        band: 10 error scales; None if none are). The band is computed only on the surfaces with σh < 0 (no pass
        over all n × m surfaces); the check's ``zero`` is None (the next segment start computes it if it needs it)."""
        sw = self.sw
        theta = self.field.potential.inverse_mirror_map(z)
        sigma = sw.sigma.clone()
        sigma[ii, jj] = -sigma[ii, jj]
        sh = sigma * sw.surfaces(theta)
        neg = (sh < 0) & ~sw.sliding
        if not bool(neg.any()):
            return _SideCheck(theta, None, sigma, None)
        i, j = torch.nonzero(neg, as_tuple=True)
        off = sh[i, j] < -_ZERO_FACTOR * sw.error_scale_at(theta, z, self.rtol, self.atol, i, j)
        if not bool(off.any()):
            return _SideCheck(theta, None, sigma, None)
        bad = torch.zeros_like(neg)
        bad[i[off], j[off]] = True
        return _SideCheck(theta, None, sigma, bad)

    def _side_cut(self, C, bad, theta_end, xk, ii, jj, x_end):
        """A shorter kept part for a corrected end θ ``theta_end`` with surfaces ``bad`` `(n, m)` off their side,
        none of them a kept crossing (fractions ``xk``, surfaces (ii, jj)): where the corrected trajectory reaches
        the first of them — the earliest fraction at which h_old(x) + Δh(x) leaves its side, with the correction's
        part Δh taken linear from the first crossing (it grows from there; the sides are checked again at the new
        end, and a second violation halves the kept crossings). None if a kept crossing is off its new side (the
        corrected trajectory does not cross it: cutting just before it was measured less accurate than halving,
        GF main job 4.0e-6 → 2.3e-5) or there is no such fraction."""
        sw = self.sw
        x_first = float(xk[0])
        if bool(bad[ii, jj].any()):
            return None
        i, j = torch.nonzero(bad, as_tuple=True)
        idx = i * sw.m + j
        s = sw.sigma[i, j]
        h_end = sw.surfaces(theta_end)[i, j]
        x_hi = torch.full_like(s, x_end)
        dh = h_end - sw.surfaces_at(C, x_hi, idx)  # the correction's part at the end

        def g(x):
            return s * (sw.surfaces_at(C, x, idx) + dh * (x - x_first) / (x_end - x_first))

        lo, hi = torch.full_like(s, x_first), x_hi
        if not bool((g(lo) > 0).all()):
            return None
        for _ in range(12):
            mid = 0.5 * (lo + hi)
            left = g(mid) > 0
            lo, hi = torch.where(left, mid, lo), torch.where(left, hi, mid)
        x_cut = float(lo.min())
        return x_cut if x_first < x_cut < x_end else None

    def _sides_ok(self, z: Tensor, ii: Tensor, jj: Tensor) -> _SideCheck | None:
        """:meth:`_sides_at` if every non-sliding surface is on its side at z (|h| band: 10 error scales) once
        (ii, jj) flip, else None."""
        chk = self._sides_at(z, ii, jj)
        return chk if chk.bad is None else None
