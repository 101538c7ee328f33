"""Switching system of a deep ReLU net: the hidden pre-activations of every layer, one sliding block."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from .bridge import transition
from .dense import _poly_eval
from .lcp import _candidate_lcp, _equivalent_control, _group_average, _project_onto_surfaces
from .state import (
    _ZERO_FACTOR,
    ACTIVE,
    INACTIVE,
    SLIDING,
    AbstractSwitchingSystem,
    DenseSurfaceRates,
    inverse_map_slope,
)

_MAX_SWEEPS = 50  # Newton iterations of a classification with a point at zero in several layers
_MAX_NEWTON = 20  # Newton iterations per evaluation for the α's of a point sliding in several layers
_ALPHA_TOL = 1e-12  # convergence of those α's (absolute; they lie in [0, 1]), or of the field (relative)
_SWEEP_TOL = 1e-9  # convergence of such a classification (relative, in the field; the segment refines α)
_COINCIDE_REACH = 1e3  # surfaces within this many of their own bands of zero are checked for coinciding candidates


def _ray_classes(X: Tensor, y: Tensor) -> Tensor | None:
    """For each data point, the index of the first point of its class of positive multiples with the same label
    (x and c·x, c > 0: the same direction to 1e-12), `(n,)` long; None if every point is alone in its class.

    A homogeneous ReLU net's pre-activations of c·x are c times those of x in every layer, under any pattern with
    the same gates, so the two points' surfaces coincide layer by layer and their Filippov α's are equal."""
    U = X / X.norm(dim=1, keepdim=True)
    Un = U.cpu().numpy()
    keys = np.concatenate([np.round(Un * 1e9), y.cpu().numpy().reshape(-1, 1)], 1)
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    rep = first[inverse.reshape(-1)]
    rep = np.where(np.abs(Un - Un[rep]).max(1) <= 1e-12, rep, np.arange(len(rep)))  # (a rounding coincidence)
    if bool((rep == np.arange(len(rep))).all()):
        return None
    return torch.as_tensor(rep, dtype=torch.long, device=X.device)


def _share_along_rays(ray_of: Tensor, C: Tensor, al: Tensor, A: Tensor) -> Tensor:
    """α's `(K,)` of the candidates ``C`` `(K, 2)` (point, column) with one value per (ray class, column): the mean
    weighted by the norms of the box-LCP's columns ``A`` `(q, K)` (:func:`~.lcp._group_average`: the field's total
    along their common direction is kept) where a class has several candidates in one column.

    In the multilinear Newton iteration the scaled copies' conditions are linearly dependent (ḣ of c·x is c·ḣ of
    x), and their separate α's wandered: a breaker run on student–teacher data with 3× copies of a fifth of its
    points (`DeepReLU(4, [5, 4, 6])`, smoothed p = 3) had 48 unconverged classifications and stopped on a
    non-finite field at log t 0.49; with one α per ray it reached log t 2 with 7."""
    groups = _ray_groups(ray_of, C, al.dtype)
    return al if groups is None else _group_average(A, al, groups)


def _ray_groups(ray_of: Tensor | None, C: Tensor, dtype) -> Tensor | None:
    """The candidates ``C`` `(K, 2)` of one (ray class, column) as a `(K, K)` 0/1 matrix
    (:func:`~.lcp._group_average`'s groups), or None where no class has two candidates in one column."""
    if ray_of is None:
        return None
    key = ray_of.index_select(0, C[:, 0]) * (int(C[:, 1].max()) + 1) + C[:, 1]
    groups = key.unsqueeze(0) == key.unsqueeze(1)
    return groups.to(dtype) if bool((groups.sum(1) > 1).any()) else None


def _newton_update(al: Tensor, nxt: Tensor, last: tuple | None) -> tuple[Tensor, tuple]:
    """The next iterate of the α's of a point sliding in two layers, and (proposed step, factor taken) for the next
    call. The affine model misses the terms ∝ ḣ of the point's lower surfaces, and off the solution the iterates
    can alternate around it, shrinking slowly (error factor μ < 0 of one mode). μ is read off the last two
    proposals (q = the new proposal over the last along it; a step of factor c gives q = 1 + c(μ − 1)), and where
    it is negative the step is taken by 1/(1 − μ), to that mode's fixed point (Aitken; the factor lies in (0, 1],
    so the iterate stays between two points of the box)."""
    raw = nxt - al
    c = 1.0
    if last is not None:
        prev, c_prev = last
        pp = float((prev @ prev).detach())
        if pp > 0:
            mu = 1.0 + (float((raw @ prev).detach()) / pp - 1.0) / c_prev
            if mu < 0:
                c = 1.0 / (1.0 - mu)
    return al + c * raw, (raw, c)


class _Slaved(NamedTuple):
    """Surfaces slaved to a unit below (:meth:`_DeepSwitching._slaved`), all `(n, M)`."""

    mask: Tensor  # bool: slaved (not a switching surface)
    pattern: Tensor  # bool: its pattern on the master's active side
    master: Tensor  # long: the master's column, −1 where the layers below are dead


class _DeepSwitching(AbstractSwitchingSystem, DenseSurfaceRates):
    """Switching system of a deep ReLU net (:class:`~flowsim.models.DeepReLU`): the hidden pre-activations
    h⁽ˡ⁾_ij of all layers side by side, shape `(n, M)`, M = Σ_l h_l (column c ↔ layer l, unit j).

    Within a segment the activation pattern P of every layer is fixed and the field is the gradient field of
    the fixed-pattern network (closed-form backpropagation). Sliding: on a surface h_k = 0 (point i, layer l,
    unit j) the unit's output α h_k is 0 whatever α, so f_i and the loss weight c_i do not depend on α, and
    ∇_θ f_i is affine in α with slope u_k ∇_θ h_k (u_k = ∂f_i/∂a_k, the output's sensitivity to the unit). The
    Filippov field is then v₀ + Σ_k r_k α_k ∇h_k with r_k = c_i y_i u_k, exactly the two-layer structure (rows
    ∇h_k instead of x_i, one velocity block for all sliding surfaces: they couple through shared layers), as
    long as no point slides in two layers at once. Where one does, the α's of its layers multiply (f_i is
    multilinear in its own pattern across layers): the field with fractional pattern entries is the multilinear
    ("canopy") combination of the neighbouring patterns' fields (Jeffrey 2014) — the ε → 0 limit of the net
    with its ReLU smoothed on a scale ε, whose gates σ′(h/ε) are such α's — and the α's solve a nonlinear
    complementarity problem: by Newton, each iterate the affine problem of the field, ∇h and r at the current
    α's (the box-LCP at a segment start, the equivalent control ḣ_S = −λ h_S in each evaluation; the model is
    exact in the field, and ḣ of an upper surface misses only terms ∝ ḣ of the point's lower sliding surfaces,
    which vanish on the solution). Counted: ``multilayer_segments`` (segments that start with a point sliding in
    two layers) and ``multilayer_unconverged`` (such solves stopped at their iteration limit; the last iterate
    is used).

    Reference:
        Jeffrey, "Hidden dynamics in models of discontinuity and switching", Physica D 273-274, 2014 (the
        multilinear combination of the fields where switching surfaces intersect).
    """

    def __init__(self, model, field) -> None:
        self.model = model
        self.field = field
        self.pot = field.potential
        self.X = field.X
        self.y = field.y
        self.n = self.X.shape[0]
        self.widths = [int(w) for w in model.widths]
        self.cuts = np.cumsum([0, *self.widths]).tolist()
        self.M = self.cuts[-1]
        self.layer_of = torch.cat(
            [torch.full((w,), l, dtype=torch.long, device=self.X.device) for l, w in enumerate(self.widths)]
        )
        self.spans = [(start, stop) for _, start, stop, _ in model._layout]  # flat slices of W_1, …, W_L
        self.xabs = self.X.abs()
        self._init_state((self.n, self.M), self.X.dtype, self.X.device)
        self._attraction: tuple | None = None  # (θ, sliding set, −r) of the last velocity with sliding surfaces
        self.multilayer_segments = 0
        self.multilayer_unconverged = 0
        self.ray_of = _ray_classes(self.X, self.y)

    def _refresh(self) -> None:
        super()._refresh()
        self.S = torch.nonzero(self.sliding)  # (K, 2): point, column
        # inert surfaces: no unit of the layer below is active (and live) for that point, so its pre-activations
        # in this layer are exactly 0 (every unit below inactive: dead) or slaved to the one sliding unit below
        # (h ∝ h_master ≈ 0); they are not independent switching surfaces and are not watched for events
        inert = torch.zeros_like(self.sliding)
        for l in range(1, len(self.widths)):
            lo, hi = self.cuts[l - 1], self.cuts[l]
            live = ((self.mode[:, lo:hi] == ACTIVE) & ~inert[:, lo:hi]).any(1, keepdim=True)
            inert[:, hi : self.cuts[l + 1]] = ~live
        self.inert = inert
        # a point sliding in two layers or more: its α's multiply (Newton in velocity())
        self.multilayer = self._in_several_layers(self.S)

    def _in_several_layers(self, idx: Tensor) -> bool:
        """Whether a data point has surfaces in two layers or more among ``idx`` `(K, 2)` (point, column)."""
        per_layer = torch.zeros(self.n, len(self.widths), dtype=torch.bool, device=idx.device)
        per_layer[idx[:, 0], self.layer_of[idx[:, 1]]] = True
        return bool((per_layer.sum(1) > 1).any())

    def init_mode(self, theta: Tensor) -> None:
        # the network's own pre-activations (true ReLU upstream; surfaces() continues the current pattern)
        self.mode = torch.where(torch.cat(self.model.preactivations(theta, self.X), -1) > 0, ACTIVE, INACTIVE)
        self._refresh()

    # -- the fixed-pattern network --
    def _layers(self, P: Tensor) -> list[Tensor]:
        return [P[..., a:b] for a, b in zip(self.cuts[:-1], self.cuts[1:], strict=True)]

    def _forward(self, theta: Tensor, P: Tensor):
        """Weights, pre-activations h⁽ˡ⁾ (`(…, n, h_l)` each), layer inputs a⁽ˡ⁾ (a⁽⁰⁾ = X) and outputs f."""
        Ws = self.model._views(theta)
        a, hs = [self.X], []
        for W, Pl in zip(Ws[:-1], self._layers(P), strict=True):
            h = a[-1] @ W.mT
            hs.append(h)
            a.append(Pl * h)
        return Ws, hs, a, (a[-1] @ Ws[-1].mT).squeeze(-1)

    def _field(self, tau, theta: Tensor, P: Tensor):
        """dz/dτ = Σ_i c_i y_i ∇_θ f_i of the pattern-P network `(p,)`, with c·y `(n,)`, the sensitivities
        u = ∂f_i/∂a⁽ˡ⁾_ij `(n, M)`, the pre-activations `(n, M)` and the forward pass."""
        Ws, hs, a, f = self._forward(theta, P)
        cy = self.field.loss_weights(tau, self.y * f) * self.y
        L = len(hs)
        grads: list = [None] * (L + 1)
        grads[L] = (cy @ a[L]).unsqueeze(0)
        cur = Ws[L].expand(self.n, -1)  # ∂f_i/∂a⁽ᴸ⁾
        us: list = [None] * L
        for l, Pl in reversed(list(enumerate(self._layers(P)))):
            us[l] = cur
            d = Pl * cur  # ∂f_i/∂h⁽ˡ⁾
            grads[l] = (cy.unsqueeze(1) * d).T @ a[l]
            cur = d @ Ws[l]
        v = torch.cat([g.reshape(-1) for g in grads])
        return v, cy, torch.cat(us, -1), torch.cat(hs, -1), (Ws, a)

    def _surface_grads(self, idx: Tensor, P: Tensor, fwd) -> Tensor:
        """∇_θ h_k of the surfaces ``idx`` `(K, 2)` (point, column) with pattern P upstream, `(K, p)` (batched
        per layer: backpropagation from each surface's layer down to the input)."""
        Ws, a = fwd
        Pls = self._layers(P)
        rows = torch.zeros(idx.shape[0], self.spans[-1][1], dtype=self.X.dtype, device=self.X.device)
        layer = self.layer_of[idx[:, 1]]
        for l in torch.unique(layer).tolist():
            ks = torch.nonzero(layer == l).flatten()
            pts, js = idx[ks, 0], idx[ks, 1] - self.cuts[l]
            start, stop = self.spans[l]
            block = torch.zeros(ks.numel(), *Ws[l].shape, dtype=rows.dtype, device=rows.device)
            block[torch.arange(ks.numel(), device=rows.device), js] = a[l][pts]  # ∂h_k/∂W_l[j] = a⁽ˡ⁾_i
            rows[ks, start:stop] = block.reshape(ks.numel(), -1)
            cur = Ws[l][js]  # ∂h_k/∂a⁽ˡ⁾_i, (K_l, fan_in)
            for l2 in range(l - 1, -1, -1):
                d = Pls[l2][pts] * cur
                start, stop = self.spans[l2]
                rows[ks, start:stop] = (d.unsqueeze(2) * a[l2][pts].unsqueeze(1)).reshape(ks.numel(), -1)
                cur = d @ Ws[l2]
        return rows

    def project_sliding(self, z: Tensor, theta: Tensor, band: Tensor) -> Tensor | None:
        """Put the sliding surfaces back on h = 0 when one drifted off by more than ``band`` `(n, M)`; else None.

        As :meth:`_TwoLayerSwitching.project_sliding`, for all sliding surfaces at once (they share one
        velocity block): z + Gᵀ μ with G = ∇_θ h_S at the start (the directions of the Filippov α's), Newton on
        μ with the Jacobian ∇_θ h_S D Gᵀ (∇h_S depends on θ here), to 1% of the band.
        """
        P = torch.where(self.sliding, self.alpha0, self.P)
        h = self.surfaces(theta)
        if not bool((self.sliding & (h.abs() > band)).any()):
            return None
        S = self.S

        def h_fn(th: Tensor) -> Tensor:
            return self.surfaces(th)[S[:, 0], S[:, 1]]

        def rows_fn(th: Tensor) -> Tensor:
            Ws, _, a, _ = self._forward(th, P)
            return self._surface_grads(S, P, (Ws, a))

        G = rows_fn(theta)
        return _project_onto_surfaces(self.pot, z, G, h_fn, rows_fn, h[S[:, 0], S[:, 1]], 0.01 * band[S[:, 0], S[:, 1]])

    # -- surfaces and the fixed-pattern field --
    def surfaces(self, theta: Tensor) -> Tensor:
        return torch.cat(self._forward(theta, torch.where(self.sliding, self.alpha0, self.P))[1], -1)

    def surface_rates(self, theta: Tensor, theta_dot: Tensor) -> Tensor:
        """ḣ along θ̇ (forward mode through the fixed pattern), shape `(…, n, M)`."""
        Ws, dWs = self.model._views(theta), self.model._views(theta_dot)
        P = torch.where(self.sliding, self.alpha0, self.P)
        a, da, out = self.X, None, []
        for W, dW, Pl in zip(Ws[:-1], dWs[:-1], self._layers(P), strict=True):
            h = a @ W.mT
            dh = a @ dW.mT if da is None else a @ dW.mT + da @ W.mT
            out.append(dh)
            a, da = Pl * h, Pl * dh
        return torch.cat(out, -1)

    def _point_surfaces(self, theta: Tensor, idx: Tensor, theta_dot: Tensor | None = None):
        """h (and ḣ along ``theta_dot``) of surfaces ``idx`` (flat indices, `(B,)`), surface b at its own state
        ``theta[b]`` `(B, p)`: `(B,)` each. Only each surface's own data point is propagated (B forward passes of
        one point, not of all n: the event roots of a step with many crossings)."""
        pts, cols = idx // self.M, idx % self.M
        Ws = self.model._views(theta)  # (B, out, in) each
        dWs = None if theta_dot is None else self.model._views(theta_dot)
        P = torch.where(self.sliding[pts], self.alpha0[pts], self.P[pts])  # (B, M): the B points' rows only
        a, da, hs, dhs = self.X[pts], None, [], []
        for l, Pl in enumerate(self._layers(P)):
            h = (Ws[l] @ a.unsqueeze(-1)).squeeze(-1)  # (B, h_l)
            hs.append(h)
            if dWs is not None:
                dh = (dWs[l] @ a.unsqueeze(-1)).squeeze(-1)
                if da is not None:
                    dh = dh + (Ws[l] @ da.unsqueeze(-1)).squeeze(-1)
                dhs.append(dh)
                da = Pl * dh
            a = Pl * h
        rows = torch.arange(idx.shape[0], device=idx.device)
        H = torch.cat(hs, -1)[rows, cols]
        return H, (None if dWs is None else torch.cat(dhs, -1)[rows, cols])

    def surfaces_at(self, coeff: Tensor, x: Tensor, idx: Tensor) -> Tensor:
        """h of surfaces ``idx`` (flat indices, `(B,)`) at step fractions ``x`` `(B,)` of a step's dense output."""
        Z, _ = _poly_eval(list(coeff), x)
        return self._point_surfaces(self.pot.inverse_mirror_map(Z), idx)[0]

    def surface_rates_fn(self, coeff: Tensor, idx: Tensor) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
        """x `(B,)` ↦ (h, dh/dx) of surfaces ``idx`` `(B,)` at step fractions x of a step's dense output."""
        coeffs = list(coeff)

        def rates(x: Tensor) -> tuple[Tensor, Tensor]:
            Z, dZ = _poly_eval(coeffs, x)
            Th = self.pot.inverse_mirror_map(Z)
            return self._point_surfaces(Th, idx, inverse_map_slope(self.pot, Th) * dZ)

        return rates

    def error_scale(self, theta: Tensor, z: Tensor, rtol: float, atol: float) -> Tensor:
        """Scale of the error in h implied by the solver tolerance on z, shape `(n, M)` (first-order bound
        propagated through the layers). The weights' error is the half-width of the inverse mirror map's image of
        z ± (rtol |z| + atol), not the slope times it: the slope is infinite where a weight is 0 under p-power
        potentials (p > 2), and a step ending just before such a zero read a band of 6e-2 around h = 0 (1e5 times
        the step before), classified a surface 4.8e-3 below 0 as active and stopped 1e5 error scales off."""
        return self._propagated_error(theta, z, rtol, atol, torch.where(self.sliding, 1.0, self.P))

    def regularisation_width(self, theta: Tensor, z: Tensor, rtol: float, atol: float) -> Tensor:
        """As the base class; where that is 0 (a point dead in a layer below: no error reaches h), with the error
        propagated through every unit instead. A bridge's gates open units that are off, and a zero width there
        was a jump Radau's Newton could not take (steps of 4e-12, p-power p = 1.5, three hidden layers); through
        every unit everywhere, the bands were wider than the tolerance asks (rtol 1e-7 against 1e-9: 8.8e-6 apart
        instead of 3.5e-7, p = 1.25)."""
        own = self.error_scale(theta, z, rtol, atol)
        wide = self._propagated_error(theta, z, rtol, atol, torch.ones_like(self.P))
        return _ZERO_FACTOR * torch.where(own > 0, own, wide)

    def _propagated_error(self, theta: Tensor, z: Tensor, rtol: float, atol: float, Pe: Tensor) -> Tensor:
        """:meth:`error_scale` with the layers' error passed through the gates ``Pe`` `(n, M)`."""
        tol = rtol * z.abs() + atol
        eth = 0.5 * (self.pot.inverse_mirror_map(z + tol) - self.pot.inverse_mirror_map(z - tol)).abs()
        Ws, eWs = self.model._views(theta.abs()), self.model._views(eth)
        ma = ea = None  # |activations| and their error, propagated
        ms, es = [], []
        for W, eW, Pl in zip(Ws[:-1], eWs[:-1], self._layers(Pe), strict=True):
            if ma is None:
                m, e = self.xabs @ W.mT, self.xabs @ eW.mT
            else:
                m, e = ma @ W.mT, ea @ W.mT + ma @ eW.mT
            ms.append(m)
            es.append(e)
            ma, ea = Pl * m, Pl * e
        return torch.cat(es, -1) + torch.finfo(theta.dtype).eps * torch.cat(ms, -1)

    def velocity(self, tau, theta: Tensor, alpha_ref: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """dz/dτ of the current activation state and the sliding α's (or None), shapes `(p,)`, `(n, M)`."""
        if self.multilayer:
            return self._multilayer_velocity(tau, theta, alpha_ref)
        v0, cy, U, H, fwd = self._field(tau, theta, self.P)  # sliding entries at α = 0
        if not self.n_sliding:
            return v0, None
        S = self.S
        G = self._surface_grads(S, self.P, fwd)
        r = cy[S[:, 0]] * U[S[:, 0], S[:, 1]]
        sq = inverse_map_slope(self.pot, theta).sqrt()
        ref = self.alpha0 if alpha_ref is None else alpha_ref
        scale = {} if self.bg_scale is None else None
        al = _equivalent_control(self, 0, scale, v0, G, -r, sq, ref[S[:, 0], S[:, 1]], H[S[:, 0], S[:, 1]])
        if scale is not None:
            self.bg_scale = scale
        alpha = torch.full_like(H, float("nan"))
        alpha[S[:, 0], S[:, 1]] = al
        self._attraction = (theta, S, -r)  # (for sliding_margins at the same θ)
        return v0 + G.T @ (r * al), alpha

    def regularised_velocity(self, tau, theta: Tensor, eps: Tensor) -> Tensor:
        """dz/dτ with every surface's gate φ(h/ε) (:func:`~flowsim.solvers.filippov.bridge.transition`; ``eps``
        `(n, M)` the transition's half-width), layer by layer (a layer's h uses the gated outputs below), `(p,)`."""
        Ws = self.model._views(theta)
        a, gates = self.X, []
        for l, W in enumerate(Ws[:-1]):
            h = a @ W.mT
            g = transition(h / eps[:, self.cuts[l] : self.cuts[l + 1]])
            gates.append(g)
            a = g * h
        return self._field(tau, theta, torch.cat(gates, -1))[0]

    def _multilayer_velocity(self, tau, theta: Tensor, alpha_ref: Tensor | None) -> tuple[Tensor, Tensor]:
        """:meth:`velocity` when a point slides in two layers (the field is multilinear in the sliding α's):
        Newton from the reference α's (α₀ by default; the system can have several solutions, and the sliding mode
        continues the one it started on). At each iterate α_j the field, the rows ∇h_S and r with the sliding
        entries at α_j give the affine model v_j + Σ r_k (α_k − α_jk) ∇h_k, whose equivalent control is the next
        iterate; until no α moves by more than 1e-12, or the field they give by more than 1e-12 relative (at
        most 20 iterations, then counted in ``multilayer_unconverged``). Each iteration counts as a field
        evaluation."""
        S = self.S
        ref = self.alpha0 if alpha_ref is None else alpha_ref
        al = ref[S[:, 0], S[:, 1]].clone()
        sq = inverse_map_slope(self.pot, theta).sqrt()
        scale = {} if self.bg_scale is None else None
        evals, last = 0, None
        for _ in range(_MAX_NEWTON):
            evals += 1
            P = self.P.clone()
            P[S[:, 0], S[:, 1]] = al
            v, cy, U, H, fwd = self._field(tau, theta, P)
            G = self._surface_grads(S, P, fwd)
            r = cy[S[:, 0]] * U[S[:, 0], S[:, 1]]
            u = v - G.T @ (r * al)
            nxt = _equivalent_control(self, 0, scale, u, G, -r, sq, al, H[S[:, 0], S[:, 1]], share=False)
            if not bool(torch.isfinite(nxt.detach()).all()):  # a trial stage far off: the step is rejected
                al = nxt
                break
            al, last = _newton_update(al, nxt, last)
            step = last[1] * last[0]
            # converged: the α's, or the field they move (an α of a surface with a tiny r_k stalls at rounding)
            moved = float((G.T @ (r * step)).detach().abs().max()) / max(float(v.detach().abs().max()), 1e-300)
            if float(step.detach().abs().max()) <= _ALPHA_TOL or moved <= _ALPHA_TOL:
                break
        else:
            self.multilayer_unconverged += 1
        self.field.nfe += evals - 1  # (the first is the caller's)
        if scale is not None:
            self.bg_scale = scale
        alpha = torch.full_like(H, float("nan"))
        alpha[S[:, 0], S[:, 1]] = al
        self._attraction = (theta, S, -r)
        return u + G.T @ (r * al), alpha

    def sliding_margins(self, theta: Tensor, alpha: Tensor) -> Tensor:
        """How far each sliding surface is from leaving its sliding mode, `(n, M)` (inf off the sliding set;
        negative: left): the smaller of α's distance from [0, 1]'s bounds and the attraction −r_k, r_k = c_i U_ij
        (the loss weight times the backpropagated signal at unit j; as ``_TwoLayerSwitching.sliding_margins``'s
        −a_j y_i: a surface slides while it attracts, r_k < 0, and turns repelling where U_ij crosses 0, e.g. a
        one-hidden-layer net's output weight). The attraction is the one :meth:`velocity` computed at this θ (every
        caller evaluates the field there first); α's alone otherwise."""
        room = super().sliding_margins(theta, alpha)
        cached = self._attraction
        if cached is not None and cached[0] is theta and torch.equal(cached[1], self.S):
            S = cached[1]
            room[S[:, 0], S[:, 1]] = torch.minimum(room[S[:, 0], S[:, 1]], cached[2])
        return room

    def classify(self, tau, theta: Tensor, zero: Tensor, forced: dict | None = None) -> dict:
        """Set the activation state at a segment start; returns transition counts (as the two-layer case, with
        all surfaces at zero in one block: one complementarity problem, :meth:`_candidate_alphas`, affine in the
        α's unless a point has surfaces at zero in two layers).
        """
        h = self._preactivations_after_crossings(theta, zero)
        old = self.mode.clone()
        new = torch.where(h > 0, ACTIVE, INACTIVE)
        cand = (h.abs() <= zero) | (old == SLIDING)
        new = torch.where(cand, torch.where(old == SLIDING, INACTIVE, old), new)
        slaves = self._slaved(theta, new, cand)
        if slaves is not None:  # not switching surfaces: their pattern on the master's active side
            cand &= ~slaves.mask
            new = torch.where(slaves.mask, torch.where(slaves.pattern, ACTIVE, INACTIVE), new)
        joined = self._join_coinciding(theta, h, zero, cand, (new == ACTIVE).to(h.dtype))
        if joined is not None:
            cand |= joined
            new = torch.where(joined, torch.where(old == SLIDING, INACTIVE, old), new)
        alpha0 = torch.zeros_like(self.alpha0)
        C = torch.nonzero(cand)
        if C.shape[0]:
            side = torch.where(
                old == SLIDING, (self.alpha0 > 0.5).to(h.dtype), (old == ACTIVE).to(h.dtype)
            )  # current side (sliding → nearer bound)
            pinned = torch.zeros(C.shape[0], dtype=torch.bool, device=h.device)
            for k, ic in enumerate(C.tolist()):
                if forced and tuple(ic) in forced:
                    side[ic[0], ic[1]] = float(forced[tuple(ic)])
                    pinned[k] = True
            Pbase = (new == ACTIVE).to(h.dtype)
            start = torch.where(old == SLIDING, self.alpha0, side)[C[:, 0], C[:, 1]]
            al, att = self._candidate_alphas(tau, theta, C, Pbase, side, pinned, start)
            self._assign(new, alpha0, (C[:, 0], C[:, 1]), al, att)
        fixed = cand.clone()
        if slaves is not None:
            # the master turned off: dead above it
            off = new.gather(1, slaves.master.clamp_min(0)) == INACTIVE
            new = torch.where(slaves.mask & (slaves.master >= 0) & off, INACTIVE, new)
            fixed |= slaves.mask
        self._resign_above(theta, zero, fixed, new, alpha0)
        counts = self._commit(old, new, alpha0, {"unresolved": 0})
        self.multilayer_segments += int(self.multilayer)
        return counts

    def _resign_above(self, theta: Tensor, zero: Tensor, fixed: Tensor, new: Tensor, alpha0: Tensor) -> None:
        """Give every surface that is not ``fixed`` (candidates, slaved) the side of its h under the decided pattern
        below it, where that h is off its at-zero band on the other side (``new`` updated in place, layer by layer).

        :meth:`classify` signs the surfaces off zero with h under the old pattern of the units at zero below them
        (:meth:`_preactivations_after_crossings`); a unit at zero that the box-LCP turns on moves h above by
        w·h_unit, up to the unit's band times |w|, which can be far more than the upper surface's own band (its
        error reaches it only through active units). Measured: p-power p = 1.5, three hidden layers, a layer-2
        unit at h = 6.8e-8 turned on, its layer-3 surface signed inactive at h = −1.6e-9 (band 8.5e-15) then
        read +1.3e-7; the event scan, which needs g ≥ 0 at a step's start, never saw it cross and the run stopped
        4.7e4 error scales off."""
        Ws = self.model._views(theta)
        a = self.X
        for W, (lo, hi) in zip(Ws[:-1], zip(self.cuts[:-1], self.cuts[1:], strict=True), strict=True):
            h = a @ W.mT
            mode = new[:, lo:hi]
            free = ~fixed[:, lo:hi] & (mode != SLIDING)
            band = zero[:, lo:hi]
            flip = free & (((mode == ACTIVE) & (h < -band)) | ((mode == INACTIVE) & (h > band)))
            if bool(flip.any()):
                new[:, lo:hi] = torch.where(flip, torch.where(h > 0, ACTIVE, INACTIVE), mode)
                mode = new[:, lo:hi]
            gate = torch.where(mode == SLIDING, alpha0[:, lo:hi], (mode == ACTIVE).to(h.dtype))
            a = gate * h

    def _join_coinciding(self, theta: Tensor, h: Tensor, zero: Tensor, cand: Tensor, P: Tensor) -> Tensor | None:
        """Surfaces `(n, M)` (bool) off their own at-zero band that coincide with a candidate of :meth:`classify`,
        or None if there are none: ∇h parallel and of the same orientation (to 1e-12) and no further from the
        surface, in θ-distance |h| / |∇h|, than the candidate's band edge. Such surfaces are classified with it.

        Coinciding surfaces (h_i = w·r_i of the points whose only active input to a unit is the same weight w)
        share one zero set but not their bands: a point's error scale also counts the error through its units
        that sit at zero. Measured (p-power p = 1.25, rtol 1e-9): three of four such surfaces inside their bands,
        the fourth 1.6 of its band (10× narrower) outside. It took the side of its sign alone, against the other
        three's field, and the state switched back and forth every 1e-10 of τ.
        """
        # only a unit's own surfaces can coincide (∇h on its weight row is the point's input to the unit's layer)
        near = ~cand & (h.abs() <= _COINCIDE_REACH * zero) & cand.any(0, keepdim=True)
        if not bool(near.any()):
            return None
        C, N = torch.nonzero(cand), torch.nonzero(near)
        Ws, _, a, _ = self._forward(theta, P)
        # cheap necessary condition first: the same unit and parallel inputs (the full ∇h only for those: on the
        # digits net, p = 1,296, every classification of a crowded run paid for hundreds of rows otherwise)
        maybe = torch.zeros(N.shape[0], dtype=torch.bool, device=N.device)
        paired = torch.zeros(C.shape[0], dtype=torch.bool, device=C.device)
        layer_n, layer_c = self.layer_of[N[:, 1]], self.layer_of[C[:, 1]]
        for l in torch.unique(layer_n).tolist():
            rn, rc = torch.nonzero(layer_n == l).flatten(), torch.nonzero(layer_c == l).flatten()
            if not rc.numel():
                continue
            xn, xc = a[l][N[rn, 0]], a[l][C[rc, 0]]
            xn = xn / xn.norm(dim=1, keepdim=True).clamp_min(torch.finfo(xn.dtype).tiny)
            xc = xc / xc.norm(dim=1, keepdim=True).clamp_min(torch.finfo(xc.dtype).tiny)
            pair = (xn @ xc.T >= 1.0 - 1e-12) & (N[rn, 1].unsqueeze(1) == C[rc, 1].unsqueeze(0))
            maybe[rn] = pair.any(1)
            paired[rc] = pair.any(0)
        if not bool(maybe.any()):
            return None
        C, N = C[paired], N[maybe]
        G = self._surface_grads(torch.cat([C, N]), P, (Ws, a))
        norm = G.norm(dim=1)
        U = G / torch.where(norm > 0, norm, 1.0).unsqueeze(1)
        k = C.shape[0]
        edge = (h[C[:, 0], C[:, 1]].abs() + zero[C[:, 0], C[:, 1]]) / norm[:k]  # the candidates' band edges
        dist = h[N[:, 0], N[:, 1]].abs() / norm[k:]
        hit = (
            (U[k:] @ U[:k].T >= 1.0 - 1e-12) & (dist.unsqueeze(1) <= edge.unsqueeze(0)) & (norm[k:] > 0).unsqueeze(1)
        ).any(1)
        if not bool(hit.any()):
            return None
        joined = torch.zeros_like(cand)
        joined[N[hit, 0], N[hit, 1]] = True
        return joined

    def _preactivations_after_crossings(self, theta: Tensor, zero: Tensor) -> Tensor:
        """h `(n, M)` at a segment start with each layer's units that are off the at-zero band (``zero``) on the
        side of their sign: a unit below that has crossed changes the pre-activations above it (with the old
        pattern below, a point's upper layer read exactly 0 where all its units below had just turned on, and
        its surfaces there were set inactive on the wrong side; a breaker run stopped 6e5 error scales off).
        Units at zero or sliding keep their pattern (α₀): they move h above by O(band) only."""
        Ws = self.model._views(theta)
        P0 = torch.where(self.sliding, self.alpha0, self.P)
        a, hs = self.X, []
        for W, (lo, hi) in zip(Ws[:-1], zip(self.cuts[:-1], self.cuts[1:], strict=True), strict=True):
            h = a @ W.mT
            keep = (h.abs() <= zero[:, lo:hi]) | self.sliding[:, lo:hi]
            a = torch.where(keep, P0[:, lo:hi], (h > 0).to(h.dtype)) * h
            hs.append(h)
        return torch.cat(hs, -1)

    def _candidate_alphas(self, tau, theta, C, Pbase, side, pinned, start) -> tuple[Tensor, Tensor]:
        """Filippov α's `(K,)` of the candidates ``C`` `(K, 2)` and which attract, `(K,)` bool (of
        :meth:`classify`): one box-LCP (:func:`_candidate_lcp`) when no point has candidates in two layers.

        Else the field is multilinear in the α's: Josephy–Newton from ``start`` — at each iterate the field, ∇h and
        r with the candidates at their α's give the affine model u + Σ r_k α_k ∇h_k (exact in the field; ḣ of an
        upper surface misses terms ∝ ḣ of the point's lower candidates, zero where those slide), whose box-LCP
        gives the next iterate (:func:`_newton_update`) — until the field moves by at most 1e-9 relative. Where
        it has not within 50 iterations, the candidates still moving (by more than 1e-3: their α's alternate
        between two iterates, the affine models of the two sending them to opposite bounds) keep their side and
        the rest are solved again from ``start``; counted in ``multilayer_unconverged`` (the last iterate is
        used if that fails too)."""
        multi = self._in_several_layers(C)
        sq = inverse_map_slope(self.pot, theta).sqrt()
        rays = _ray_groups(self.ray_of, C, theta.dtype) if multi else None  # (the candidates are fixed here)
        for attempt in range(2):
            al, P = start.clone(), Pbase.clone()
            al[pinned] = side[C[:, 0], C[:, 1]][pinned]
            push = last = None
            for _ in range(_MAX_SWEEPS):
                P[C[:, 0], C[:, 1]] = al if multi else 0.0
                v, cy, U, _, fwd = self._field(tau, theta, P)
                self.field.nfe += 1
                G = self._surface_grads(C, P, fwd)
                r = cy[C[:, 0]] * U[C[:, 0], C[:, 1]]
                att = (r < 0) & ~pinned
                u = v - G.T @ (r * al) if multi else v
                nxt = _candidate_lcp(u, G, r, sq, side[C[:, 0], C[:, 1]], att, pinned, share=not multi)
                if not multi:
                    return nxt, att
                if rays is not None:  # positive multiples of one point: one α per surface (_share_along_rays)
                    nxt = _group_average((sq.unsqueeze(1) * G.T) * r, nxt, rays)
                al, last = _newton_update(al, nxt, last)
                # converged: the field the α's give (surfaces with parallel ∇h share their α's in any split)
                prev, push = push, G.T @ (r * al)
                if prev is not None and float((push - prev).abs().max()) <= _SWEEP_TOL * float(u.abs().max()):
                    return al, att
            if attempt == 0:
                self.multilayer_unconverged += 1
                moving = (last[1] * last[0]).abs() > 1e-3
                if not bool((moving & ~pinned).any()):
                    break
                pinned = pinned | moving
        return al, att

    def _slaved(self, theta: Tensor, new: Tensor, cand: Tensor) -> _Slaved | None:
        """The surfaces of a point that are not independent switching surfaces (a :class:`_Slaved`), or None.

        When no unit of layer l is clearly active for point i (active and not at zero), its layer-(l+1)
        pre-activations are W (P ⊙ h⁽ˡ⁾): exactly 0 if no unit of layer l is at zero either (dead: no master),
        else, with one unit j at zero (the master), proportional to h_j — they vanish with it and their signs on
        its active side are those of ∂h⁽ˡ⁺¹⁾/∂h_j (propagated further up the same way). Their pattern there is
        what the master's one-sided field needs; they follow the master's classification. (Two or more units at
        zero with none active: not slaved, classified as candidates, and the next layer is looked at.) The first
        such layer of each point decides; every layer above it is slaved. Batched over the points, one pass per
        layer.
        """
        L = len(self.widths)
        if L < 2:
            return None
        clear = (new == ACTIVE) & ~cand
        n, dev = self.n, new.device
        first = torch.full((n,), L, dtype=torch.long, device=dev)  # the deciding layer (L: none)
        unit = torch.full((n,), -1, dtype=torch.long, device=dev)  # its master column (−1: dead)
        for l in range(L - 1):
            lo, hi = self.cuts[l], self.cuts[l + 1]
            nc = cand[:, lo:hi].sum(1)
            hit = (first == L) & ~clear[:, lo:hi].any(1) & (nc <= 1)
            first = torch.where(hit, l, first)
            unit = torch.where(hit & (nc == 1), lo + cand[:, lo:hi].to(torch.int8).argmax(1), unit)
        if not bool((first < L).any()):
            return None
        mask = torch.zeros_like(cand)
        pattern = torch.zeros_like(cand)
        master = torch.full(cand.shape, -1, dtype=torch.long, device=dev)
        Ws = self.model._views(theta)
        s = None  # ∂h⁽ˡ⁾/∂h_master on the master's active side, (n, h_l)
        for l in range(1, L):
            lo, hi = self.cuts[l], self.cuts[l + 1]
            above = first < l
            start = (first == l - 1) & (unit >= 0)  # the master's own layer is l − 1: s = its column of W_l
            col = Ws[l][:, (unit - self.cuts[l - 1]).clamp(0, self.widths[l - 1] - 1)].T  # (n, h_l)
            s = col if l == 1 else torch.where(start.unsqueeze(1), col, s @ Ws[l].T)
            live = above & (unit >= 0)
            s = torch.where(live.unsqueeze(1), s, 0.0)
            pat = s > 0
            s = s * pat
            mask[:, lo:hi] = above.unsqueeze(1)
            pattern[:, lo:hi] = pat
            master[:, lo:hi] = torch.where(live, unit, -1).unsqueeze(1)
        return _Slaved(mask, pattern, master)
