"""Event location inside an accepted step: sign changes and dips of the surfaces, roots, sliding exits.

After every accepted step the signed surfaces σh (σ = +1 active, −1 inactive) are sampled at 9 points of the
step's dense output, with a cubic Hermite check for a dip below zero between samples; roots are located on the
dense output for all brackets at once (bracketed Newton with ḣ along the dense output, Press et al.,
"Numerical Recipes" §9.4 rtsafe; Illinois regula falsi without ḣ). Sliding exits are where an α of the
equivalent control leaves [0, 1].
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from scipy.optimize import brentq
from torch import Tensor

from .._torchdiffeq import interp_evaluate, runge_kutta_step
from .dense import _horner, _poly_eval, _sample_powers
from .segment import _SegmentField
from .state import ACTIVE, INACTIVE, DenseSurfaceRates, inverse_map_slope

_N_SAMPLES = 8  # sub-intervals of an accepted step scanned for sign changes
_PRUNE_MIN = 16  # root finding for the earliest crossing drops brackets that cannot hold it above this many
# a sliding exit located to this fraction of its step: the field is continuous there (α reaches 0 or 1, the
# Filippov field is the one-sided one; or a_j reaches 0, where both one-sided ḣ vanish), so an exit time δτ off
# moves the state by O(δτ²) — negligible (the smoothed p = 3 main job's θ differs by 2e-10 relative at 1e-5)
_EXIT_XTOL = 1e-10
_PAST_WINDOW = 1e-8  # a point of the exit search this close past the exit (step fraction) tells which surfaces leave
_SIDE_OFFSET = 1e-3  # a sliding exit's side is read this fraction of its bracket before it (see _find_exit_search)
# where 1/φ″ is infinite at θ = 0, a step straddling a dual coordinate's zero past this fraction is retaken
_SINGULAR_XMIN = 1e-2


class ExactEvent(NamedTuple):
    """A switching event at τ_e: the next segment starts there (the state from the step, or a redo step to it)."""

    tau: Tensor  # τ_e, a scalar tensor in [t0, t1]
    forced: dict  # surfaces whose side is imposed at the next classification (sliding exits), index → mode


class SoftEvent(NamedTuple):
    """Transversal crossings switched inside a kept step (or its first part), the state corrected in closed form."""

    z: Tensor  # the corrected state at τ_e, (p,)
    tau: Tensor  # τ_e: the step end, or the truncation point
    forced: dict  # as ExactEvent.forced (a sliding exit ended the kept part)


class _EventLocation:
    """Event location of :class:`~flowsim.solvers.filippov.FilippovDriver` (a part of the driver: it uses ``sw``,
    ``field``, ``rtol``, ``atol``, the run's ``_stats`` and the driver's soft step)."""

    def _find_event(self, new, prev, band: Tensor, seg: _SegmentField, saves: Tensor):
        """Switching event in the accepted step [t0, t1]: None, a :class:`SoftEvent` or an :class:`ExactEvent`.

        Candidates are sign changes of σ h between 9 samples of the dense output, plus dips below zero
        between two samples flagged by the cubic Hermite interpolant of (σh, σḣ) and confirmed on the dense
        output. Every crossing is located as a root on the dense output. When all crossings of the step are
        transversal (``soft_crossings``, :meth:`_soft_step`), the step (or its part up to τ_e) is kept and the
        state corrected in closed form: a :class:`SoftEvent`. Otherwise the earliest event (crossing, confirmed
        dip or a sliding α leaving [0, 1]) is returned as an :class:`ExactEvent`; the caller restarts there.
        ``saves``: the save times inside the step (a soft step must not save inside its corrected part).
        """
        sw = self.sw
        pot = self.field.potential
        C = torch.stack(new.interp_coeff)  # (5, p)
        xs, pw, dpw = _sample_powers(C.shape[0], _N_SAMPLES + 1, C)
        Z, dZ = pw @ C, dpw @ C  # the dense output and its x-derivative at the samples
        Th = pot.inverse_mirror_map(Z)
        dTh = inverse_map_slope(pot, Th) * dZ
        sigf, bandf = sw.sigma.flatten(), band.flatten()
        watched = ~self._unwatched().flatten()
        cols = self._scan_candidates(Th, dTh, sigf, bandf, watched) if sw.scans_subsets else None
        if cols is None:  # every surface sampled: flat index = column
            H, dH = sw.surfaces_and_rates(Th, dTh)
            g, dg = sigf * H.flatten(1) + bandf, sigf * dH.flatten(1)  # (K+1, N); event: g goes from ≥ 0 to < 0
            g = torch.where(watched, g, float("inf"))
            dg = torch.where(watched, dg, 0.0)
            cols = torch.arange(g.shape[1], device=g.device)
        else:
            H, dH = sw.surfaces_and_rates_at(Th, dTh, cols)
            g, dg = sigf[cols] * H + bandf[cols], sigf[cols] * dH
        ga, gb = g[:-1], g[1:]
        cross = (ga >= 0) & (gb < 0)
        dip = (ga >= 0) & (gb >= 0) & (dg[:-1] < 0) & (dg[1:] > 0)
        x_cross = None
        dips = self._confirmed_dips(C, g, dg, dip, xs, sigf, bandf, cols) if bool(dip.any()) else []
        if bool(cross.any()) or dips:
            if not dips and self.soft_crossings and sw.supports_soft:
                soft = self._soft_step(new, prev, C, cross, g, xs, sigf, bandf, seg, saves, cols)
                if soft is not None:
                    return soft
            x_cross = self._earliest_crossing(C, cross, dips, xs, sigf, bandf, cols, g)
        x_exit, forced = None, {}
        if sw.n_sliding:
            x_exit, forced = self._find_exit(new, prev, seg, x_cross)
        self._exit_cache = None
        if x_cross is None and x_exit is None:
            return None
        if x_exit is not None and (x_cross is None or x_exit < x_cross):
            self._stats.n_exit_events += 1
            x = x_exit
        else:
            self._stats.n_crossing_events += 1
            x, forced = x_cross, {}
        t0, t1 = prev.t1, new.t1
        tau_e = t0 + (t1 - t0) * x if x < 1.0 else t1.clone()
        return ExactEvent(tau_e, forced)

    def _singular_coordinates(self, z: Tensor) -> Tensor | None:
        """The coordinates whose 1/φ″ is infinite at θ_k = 0 (p-power with p > 2, or such a block of a block
        potential), a bool mask shaped like the state ``z``; None if there are none (checked once per potential)."""
        pot = self.field.potential
        cache = getattr(self, "_singular_cache", None)
        if cache is None or cache[0] is not pot or cache[1] != z.shape:
            mask = None
            if not getattr(pot, "inverse_hessian_finite", False):
                inf = ~torch.isfinite(pot.inverse_hessian_diag(torch.zeros_like(z)))
                mask = inf if bool(inf.any()) else None
            self._singular_cache = cache = (pot, z.shape, mask)
        return cache[2]

    def _dual_zero(self, new, prev, singular: Tensor) -> float | None:
        """The first step fraction x ≥ :data:`_SINGULAR_XMIN` where a dual coordinate z_k crosses 0 inside the
        accepted step (sign changes between 9 samples of its dense output, the root by bisection), among the
        coordinates whose 1/φ″ is infinite at θ_k = 0 (``singular``, :meth:`_singular_coordinates`); None if none
        does.

        There θ(z) has an infinite slope (p-power, p = 3: θ = sign(z)·√(|z|/3)), so the field in z is only Hölder
        continuous across z_k = 0: a Runge–Kutta step whose stages straddle it loses its order, and its dense output
        its accuracy, while its error estimate can still pass it (a crossing located on such a dense output was
        1e4 error scales off at the state a redo step gave; FilippovInvariantError). The caller retakes the step to
        end just before the crossing. Left inside a step are: a crossing in its first 1 % (the step starts at or
        next to it, its order lost as at a step starting on it, which the error estimate sees); a coordinate within
        its error tolerance of 0 at the step start (it sits at its zero); and a coordinate whose ż_k turns within
        the step — drawn to 0 from both sides (field ∝ −sign(z)√|z|), it reaches 0 in finite time and stays there,
        which no step can end before.
        """
        C = torch.stack(new.interp_coeff)  # (5, p)
        xs = torch.linspace(0.0, 1.0, _N_SAMPLES + 1, dtype=C.dtype, device=C.device)
        Z, _ = _poly_eval(new.interp_coeff, xs)
        z0 = prev.y1
        through = singular & (prev.f1 * new.f1 > 0) & (z0.abs() > self.atol + self.rtol * z0.abs())
        flip = (Z[:-1] * Z[1:] < 0) & through  # (8, p)
        if not bool(flip.any()):
            return None
        i, k = torch.nonzero(flip, as_tuple=True)
        a, b, fa = xs[i], xs[i + 1], Z[i, k]
        Ck = C[:, k]
        for _ in range(52):  # bisection to the rounding of x (the dense output is a quartic in x)
            mid = 0.5 * (a + b)
            before = _horner(Ck, mid) * fa > 0
            a, b = torch.where(before, mid, a), torch.where(before, b, mid)
        late = a[a >= _SINGULAR_XMIN]
        return float(late.min()) if late.numel() else None

    def _unwatched(self) -> Tensor:
        """Surfaces not watched for events, shape of h: sliding ones (their exits are α leaving [0, 1]) and
        inert ones (deep nets: slaved to a unit below)."""
        sw = self.sw
        inert = sw.inert
        return sw.sliding if inert is None else sw.sliding | inert

    def _scan_candidates(self, Th: Tensor, dTh: Tensor, sigf: Tensor, bandf: Tensor, watched: Tensor) -> Tensor | None:
        """Flat indices of the surfaces whose g = σh + band can reach zero inside the step, from g and dg/dx at
        x = 0, ½, 1; None when most can (sampling all of them is then cheaper).

        On each half of the step the cubic Hermite interpolant of (g, dg/dx) at its ends stays above
        min(g_a, g_b) − (4/27)·½(|g′_a| + |g′_b|); a surface is sampled when min(g) − ¼ Σ|g′| over the three
        points is ≤ 0, a margin of 3.4× on that bound for the dense output's departure from the cubic.
        """
        rows = [0, _N_SAMPLES // 2, _N_SAMPLES]
        H, dH = self.sw.surfaces_and_rates(Th[rows], dTh[rows])
        g = sigf * H.flatten(1) + bandf  # (3, N)
        reach = g.amin(0) - 0.25 * dH.flatten(1).abs().sum(0)
        cand = (reach <= 0) & watched
        if 2 * int(cand.sum()) > cand.numel():
            return None
        return torch.nonzero(cand).flatten()

    def _earliest_crossing(self, C, cross, dips, xs, sigf, bandf, cols, g) -> float:
        """The earliest crossing or confirmed dip of the step (a step fraction), its root on the dense output. ``g``:
        the sampled g = σh + band `(K+1, columns)`; a sub-interval with crossings only gives its roots' brackets
        their end values from it (no evaluation)."""
        for i in range(_N_SAMPLES):
            sub = torch.nonzero(cross[i]).flatten()
            a_l, b_l, idx_l = [float(xs[i])] * sub.numel(), [float(xs[i + 1])] * sub.numel(), cols[sub].tolist()
            n_cross = len(idx_l)
            for k, xa, xm, idx in dips:
                if k == i:
                    a_l.append(xa)
                    b_l.append(xm)
                    idx_l.append(idx)
                    self._stats.n_dip_events += 1
            if idx_l:
                idx_t = torch.tensor(idx_l, dtype=torch.long, device=C.device)
                a_t = torch.tensor(a_l, dtype=C.dtype, device=C.device)
                b_t = torch.tensor(b_l, dtype=C.dtype, device=C.device)
                fa = fb = None
                if len(idx_l) == n_cross:  # (a dip's bracket ends between samples: evaluated)
                    fa, fb = g[i, sub], g[i + 1, sub]
                return float(self._roots(C, idx_t, a_t, b_t, sigf, bandf, fa, fb, earliest=True).min())
        return None

    def _confirmed_dips(self, C, g, dg, dip, xs, sigf, bandf, cols) -> list:
        """Dips below zero between two samples (g ≥ 0 at both, g′ < 0 then > 0), confirmed on the dense output.

        The cubic Hermite interpolant of (g, g′) on each flagged sub-interval is scanned at 19 points; where it
        goes below zero, g itself is evaluated at the Hermite minimum. Returns ``[(sample k, x_left, x_min,
        flat surface index)]`` for dips with g(x_min) < 0 (a surface crossed and re-crossed inside the step).
        ``cols``: the flat surface index of each column of ``g``.
        """
        ks, idxs = torch.nonzero(dip, as_tuple=True)
        dx = float(xs[1] - xs[0])
        u = torch.linspace(0.05, 0.95, 19, dtype=g.dtype, device=g.device).unsqueeze(1)
        h00, h10 = 2 * u**3 - 3 * u**2 + 1, u**3 - 2 * u**2 + u
        h01, h11 = -2 * u**3 + 3 * u**2, u**3 - u**2
        pcub = h00 * g[ks, idxs] + h10 * dx * dg[ks, idxs] + h01 * g[ks + 1, idxs] + h11 * dx * dg[ks + 1, idxs]
        low = pcub.min(0)
        sel = torch.nonzero(low.values < 0).flatten()
        if sel.numel() == 0:
            return []
        xm = xs[ks[sel]] + u[low.indices[sel], 0] * dx
        flat = cols[idxs[sel]]
        gm = sigf[flat] * self.sw.surfaces_at(C, xm, flat) + bandf[flat]
        return [
            (int(ks[s]), float(xs[ks[s]]), float(x), int(f))
            for s, f, x, v in zip(sel.tolist(), flat.tolist(), xm.tolist(), gm.tolist(), strict=True)
            if v < 0
        ]

    def _roots(
        self,
        C: Tensor,
        idx: Tensor,
        a: Tensor,
        b: Tensor,
        sigf: Tensor,
        bandf: Tensor,
        fa: Tensor | None = None,
        fb: Tensor | None = None,
        earliest: bool = False,
    ) -> Tensor:
        """Roots of g = σh + band of surfaces ``idx`` in brackets [a, b] (g(a) ≥ 0 > g(b)), all at once.

        ``fa``, ``fb``: g at the brackets' ends where the caller has them (else evaluated). With the switching
        system's ḣ on the dense output (``surface_rates_fn``): Newton's method from the secant point, kept
        inside the bracket (bisection where a Newton step leaves it; rtsafe, Press et al., Numerical Recipes
        §9.4), stopped at a Newton step ≤ 1e-9 of the step (quadratic convergence: the error left is of order
        1e-18), 2-3 evaluations per root; otherwise Illinois regula falsi, stopped at a bracket ≤ 1e-13.
        Both also stop at |g| at rounding level or a bracket ≤ 1e-13; a bracket whose left end has g ≤ 0
        returns a. One batched inverse mirror map per iteration.

        ``earliest``: only the smallest root is wanted (the result's minimum is the same; other entries may be
        left out). With Newton's method, a surface whose bracket starts past another's root (or past the far
        end of another's bracket, where g < 0) is dropped from the iterations while more than :data:`_PRUNE_MIN`
        are left: a deep net's ḣ costs a forward pass per surface, and a crowded step brackets tens of crossings
        in its first sub-interval (digits, ``DeepReLU(64, [16, 16])``: 75 on average).
        """
        sw = self.sw
        a, b = a.to(C.dtype).clone(), b.to(C.dtype).clone()
        s, bd = sigf[idx], bandf[idx]

        def g(x: Tensor) -> Tensor:
            return s * sw.surfaces_at(C, x, idx) + bd

        fa = g(a) if fa is None else fa
        fb = g(b) if fb is None else fb
        root = torch.where(fa <= 0, a, b)
        done = fa <= 0
        ftol = 1e-13 * torch.maximum(fa.abs(), fb.abs())  # |g| at rounding level: at the surface
        if isinstance(sw, DenseSurfaceRates):
            rates = sw.surface_rates_fn(C, idx)
            denom = fb - fa
            x = torch.where(denom != 0, b - fb * (b - a) / torch.where(denom != 0, denom, 1.0), 0.5 * (a + b))
            x = torch.where((x > a) & (x < b), x, 0.5 * (a + b))
            dropped = []  # earliest: the smallest result of the surfaces no longer iterated
            for _ in range(100):
                h, dh = rates(x)
                fx, dfx = s * h + bd, s * dh
                left = fx >= 0  # root in [x, b]
                a = torch.where(left, x, a)
                b = torch.where(left, b, x)
                flat = dfx == 0
                xn = x - fx / dfx.masked_fill(flat, 1.0)
                # at the surface: |g| at rounding level and the root within Newton's tolerance of x (a flat surface,
                # h ∝ z⁴ near a p-power weight's zero, has |g| far below the bracket's ends well before its root)
                hit = ~done & (fx.abs() <= ftol) & (flat | ((xn - x).abs() <= 1e-9))
                root = torch.where(hit, x, root)
                done = done | hit
                newton = ~flat & (xn > a) & (xn < b)
                xn = torch.where(newton, xn, 0.5 * (a + b))
                # a Newton step ≤ 1e-9 leaves an error of order 1e-18·g″/g′ (quadratic convergence): xn is the root
                conv = ~done & ((newton & ((xn - x).abs() <= 1e-9)) | ((b - a) <= 1e-13))
                # a converged Newton step is the root; a collapsed bracket gives its far end (g(b) < 0)
                root = torch.where(conv, torch.where(newton, xn, b), root)
                done = done | conv
                if bool(done.all()):
                    break
                x = xn
                if earliest and x.numel() > _PRUNE_MIN:
                    # every result is ≤ its bracket's far end (g(b) < 0): the smallest so far bounds the earliest
                    # root, and a bracket that starts past it cannot hold it
                    res = torch.where(done, root, b)
                    keep = ~done & (a <= res.min())
                    if not bool(keep.all()):
                        dropped.append(res.min().reshape(1))
                        a, b, x, s, bd, ftol = a[keep], b[keep], x[keep], s[keep], bd[keep], ftol[keep]
                        root, done, idx = root[keep], done[keep], idx[keep]
                        rates = sw.surface_rates_fn(C, idx)
                        if not idx.numel():
                            break
            return torch.cat([*dropped, torch.where(done, root, b)])
        side = torch.zeros_like(a)
        for _ in range(100):
            active = ~done & ((b - a) > 1e-13)
            if not bool(active.any()):
                break
            denom = fb - fa  # regula falsi: the secant through (a, fa), (b, fb) crosses zero at b − fb(b − a)/(fb − fa)
            x = torch.where(denom != 0, b - fb * (b - a) / torch.where(denom != 0, denom, 1.0), 0.5 * (a + b))
            x = torch.where((x > a) & (x < b), x, 0.5 * (a + b))
            fx = g(x)
            hit = active & (fx.abs() <= ftol)
            root = torch.where(hit, x, root)
            done = done | hit
            left = fx >= 0  # root in [x, b]
            # Illinois: halve the retained end's value when the same end is kept twice
            fb = torch.where(active & left & (side == 1), 0.5 * fb, fb)
            fa = torch.where(active & ~left & (side == -1), 0.5 * fa, fa)
            a = torch.where(active & left, x, a)
            fa = torch.where(active & left, fx, fa)
            b = torch.where(active & ~left, x, b)
            fb = torch.where(active & ~left, fx, fb)
            side = torch.where(active, torch.where(left, 1.0, -1.0), side)
        return torch.where(done, root, b)  # else g(b) < 0: the first point on the far side (to 1e-13)

    def _find_exit(self, new, prev, seg: _SegmentField, x_max):
        """Earliest time in the step where a sliding α leaves [0, 1] (equivalent control on the dense output).

        The search covers the step up to ``x_max`` (None: all of it); an exit found past ``x_max`` is returned
        too (callers compare it with their crossing time). It is remembered for the same step: a later call
        returns it where it answers that call too (an exit found is the earliest; no exit up to ``x_max`` answers
        a call up to a smaller one).
        """
        cache = self._exit_cache
        if cache is not None and cache[0] is new:
            _, reach, out = cache
            if out[0] is not None or reach is None or (x_max is not None and x_max <= reach):
                return out
        out = self._find_exit_search(new, prev, seg, x_max)
        self._exit_cache = (new, x_max, out)
        return out

    def _find_exit_search(self, new, prev, seg: _SegmentField, x_max):
        """:meth:`_find_exit` without the cache: the sliding surfaces' margins (``sw.sliding_margins``: α from
        [0, 1]'s bounds, the equivalent control on the dense output, and for two-layer nets the attraction)
        sampled at 9 points, the first negative one bracketed and its root found by Brent's method (to
        :data:`_EXIT_XTOL` of the step); returns (x, forced sides of the surfaces leaving there) or (None, {})."""
        sw = self.sw
        pot = self.field.potential
        t0, t1 = prev.t1, new.t1

        evals: dict[float, tuple[float, Tensor, Tensor]] = {}  # x → margin(x): each point evaluated once
        mins: dict[float, float] = {}  # x → the smallest margin (also the step end's, from its last evaluation)

        def margin(x: float) -> tuple[float, Tensor, Tensor]:
            if x in evals:
                return evals[x]
            tx = t0 + (t1 - t0) * x
            zx = interp_evaluate(new.interp_coeff, t0, t1, tx) if x > 0 else prev.y1
            theta = pot.inverse_mirror_map(zx)
            self.field.nfe += 1
            _, alpha = sw.velocity(tx, theta)
            room = sw.sliding_margins(theta, alpha)
            low = float(room.min())
            # a non-finite α (the control's field is not finite there: a redo or dense-output point off the step's
            # stages) counts as left, so the search ends the segment before it; brentq stopped the run on the NaN
            evals[x] = out = (-1.0 if math.isnan(low) else low, room, alpha)
            mins[x] = out[0]
            return out

        def min_margin(x: float) -> float:
            return mins[x] if x in mins else margin(x)[0]

        last = seg.last  # the step's last evaluation: at its end for RK (the FSAL stage) and Radau (f at the end)
        at_end = last is not None and (
            last[1] is new.y1 or (float(last[0]) == float(t1) and torch.equal(last[1], new.y1))
        )
        end_margin = last[2] if at_end else margin(1.0)[0]
        mins[1.0] = end_margin
        if seg.stage_margin >= 0 and end_margin >= 0:
            return None, {}
        xs = np.linspace(0.0, 1.0, _N_SAMPLES + 1)
        xa, ma = 0.0, None  # the bracket's left end and its margin (≥ 0 after the first sample)
        for xb in xs[1:]:
            if x_max is not None and xa >= x_max:
                return None, {}
            mb = min_margin(float(xb))
            if mb < 0:
                if ma is None:  # at the step start the margin may already sit (a hair) below 0
                    ma = margin(xa)[0]
                # (Brent's method evaluates the bracket's ends first: known, not evaluated again)
                x = xa if ma <= 0 else brentq(min_margin, xa, float(xb), xtol=_EXIT_XTOL, rtol=1e-15)
                # just past the exit: which surfaces leave (the search's last point past it where it is that close)
                past = [xp for xp, out in evals.items() if x < xp <= x + _PAST_WINDOW and out[0] < 0]
                _, worst, al = margin(min(past) if past else min(1.0, x + 2.0 * _EXIT_XTOL))
                if x > xa:
                    # the side each leaves to, from α a little before the exit: where a_j reaches 0 (attraction
                    # exit) α is a 0/0 ratio right at it (a breaker run read 0.997, 1.013, 0.922, 0.000 where its
                    # limit was 0.15, and runs left to different sides, 553 × rtol apart); at a bound of α the
                    # side is the same
                    al = margin(max(xa, x - _SIDE_OFFSET * (float(xb) - xa)))[2]
                forced = {}
                for ix in torch.nonzero(worst <= max(0.0, float(worst.min())) + 1e-9).tolist():
                    forced[tuple(ix)] = ACTIVE if float(al[tuple(ix)]) > 0.5 else INACTIVE
                return x, forced
            xa, ma = float(xb), mb
        return None, {}

    def _event_state(self, prev, new, t_e: Tensor) -> Tensor:
        """State at an exact event τ_e inside an accepted step (:meth:`_state_inside`; two-layer nets only take
        the dense output, deep nets where the redo step is not finite), every B_j restored to its value at the step
        start where it is interpolated (two-layer nets)."""
        z_e, interpolated, _ = self._state_inside(prev, new, t_e, self.sw.supports_soft)
        if not interpolated and not bool(torch.isfinite(z_e).all()):
            # a redo stage met a non-finite field (where a trial stage of a step is rejected; measured: a deep net's
            # sliding α's, p-power p = 1.5): the accepted step's dense output, error-controlled with the step
            self._stats.n_interpolated_states += 1
            z_e, interpolated = interp_evaluate(new.interp_coeff, prev.t1, new.t1, t_e), True
        if interpolated and self.sw.supports_soft:
            return self.sw.restore_balance(z_e, self.sw.balance_ref(z_e, b_at=prev.y1))
        return z_e

    def _state_inside(self, prev, new, t_e: Tensor, interpolate: bool = True) -> tuple[Tensor, bool, Tensor | None]:
        """(z at τ_e inside an accepted step, whether it is the dense output, the field there from a redo step or
        None).

        The step's dense output (4th order) where it agrees with the cubic Hermite interpolant of the step's ends
        to within the error tolerance (RMS norm, as the step's error control: the lower-order interpolant bounds
        the dense output's error there) and ``interpolate``; otherwise :meth:`_redo_state` (an RK step from the step
        start, 6 evaluations). Counted in ``n_interpolated_states`` / ``n_redo_steps``.
        """
        t0, t1 = prev.t1, new.t1
        z_e = interp_evaluate(new.interp_coeff, t0, t1, t_e)
        if interpolate:
            # the basis weights in Python floats: the same roundings as on 0-d tensors (torch's x**3 is x·x·x)
            x, dt = float((t_e - t0) / (t1 - t0)), t1 - t0
            x2, x3 = x * x, x * x * x
            hermite = (
                (2 * x3 - 3 * x2 + 1) * prev.y1
                + (x3 - 2 * x2 + x) * dt * prev.f1
                + (3 * x2 - 2 * x3) * new.y1
                + (x3 - x2) * dt * new.f1
            )
            tol = self.atol + self.rtol * torch.maximum(prev.y1.abs(), z_e.abs())
            if bool(((z_e - hermite) / tol).square().mean() <= 1.0):
                self._stats.n_interpolated_states += 1
                return z_e, True, None
        z_e, f_e = self._redo_state(prev, t_e)
        return z_e, False, f_e

    def _redo_state(self, prev, t_e: Tensor) -> tuple[Tensor, Tensor | None]:
        """(z, the field there) at τ_e by one RK step of the segment field from the step start (a redo)."""
        func, tableau = self._rk
        t0 = prev.t1
        self._stats.n_redo_steps += 1
        z_e, f_e = runge_kutta_step(func, prev.y1, prev.f1, t0, t_e - t0, t_e, tableau)[:2]
        return z_e, f_e
