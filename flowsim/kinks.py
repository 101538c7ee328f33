"""Filippov handling of ReLU kinks: event-located switching and sliding modes of mirror flow.

ReLU and leaky-ReLU networks make the mirror-flow field dz/dτ = Σ_i c_i ∇q_i(θ), θ = ∇Φ*(z), discontinuous on
the **switching surfaces** h_ij(θ) = 0 (pre-activation of hidden unit j on data point i). Integrating straight
through them makes an adaptive Runge–Kutta solver chatter (tiny steps, first-order balance drift). The
:class:`FilippovDriver` integrates the flow in the sense of Filippov instead (Stewart's active-set method):

1. **Activation state per surface**: active (relu′ = 1), inactive (relu′ = 0 — leaky: the negative slope)
   or sliding (relu′ = α ∈ [0, 1], the Filippov convex combination). Within a *segment* the field of that
   fixed state is smooth and is integrated by torchdiffeq's adaptive RK (dopri5 by default).
2. **Events**: after every *accepted* step the signed pre-activations σ_ij h_ij (σ = +1 active, −1
   inactive) are evaluated along the step's dense output at 9 points, with a Hermite check for a dip below
   zero between samples (a surface can be crossed and re-crossed inside one step). The earliest root is
   located on the interpolant (Brent), the step is **redone** from its start to the event time (full RK
   accuracy at the event), and a new segment starts there.
3. **Crossing vs sliding vs grazing** is decided at every segment start from the one-sided fields, for all
   surfaces at zero (|h| ≤ tolerance) at once, by the box-LCP of each neuron (below), not from the side the
   event fired on. Sliding surfaces whose α sits at a bound with ḣ pointing away are released there.
4. **Sliding** (two-layer nets): for neuron j with sliding set S, ż_{w_j} = u + Σ_{k∈S} r_k α_k x_k with u
   the field at α = 0, r_k = (1 − s₋) a_j c_k y_k, and ẇ_j = D_j ż_{w_j}, D_j = diag(1/φ″(w_j)). With
   A = D_j^{1/2} X_Sᵀ diag(−r) (columns −r_k D_j^{1/2} x_k) and t = D_j^{1/2} u,

       diag(−r) ḣ_S = Aᵀ(t − Aα),

   so for an attracting surface (r_k < 0) the Filippov conditions — ḣ_k = 0 for 0 < α_k < 1, ḣ_k ≤ 0 at
   α_k = 0, ḣ_k ≥ 0 at α_k = 1 — are exactly the KKT conditions of the bounded least-squares problem
   min_{α∈[0,1]^S} ½‖Aα − t‖², i.e. of the convex box-QP min ½αᵀ(AᵀA)α − (Aᵀt)ᵀα. It is solved by
   bounded-variable least squares (scipy BVLS), which handles a singular AᵀA (more sliding surfaces than
   input dimensions); ḣ_S and the velocity are unique even when α is not. Inside a sliding segment α is
   the equivalent control: the minimum-change solution of Aᵀ(t − Aα) = −λ diag(−r) h_S, i.e. ḣ_S = −λ h_S.
   The small Baumgarte term λ h_S (λ = the state's relative rate at the segment start) pulls numerical drift
   back to the surface *without a projection*: every fixed-pattern field — whatever α — conserves the
   per-neuron balance B_j = Σ_k Q(w_jk) − Q(a_j) exactly (d/dτ B_j = a_j Σ_i c_i y_i g_ij h_ij −
   a_j Σ_i c_i y_i g_ij h_ij = 0), so the balance drift measures the integration error alone. The segment
   ends when some α_k leaves [0, 1] (located like a crossing, on the dense output).
5. **Deep ReLU nets** (:class:`~flowsim.models.DeepReLU`) are not handled yet: sliding there is a
   nonlinear complementarity problem (the α's of different layers multiply). :func:`supports` says no, and
   ``kinks="auto"`` integrates them naively; ``kinks="filippov"`` raises for them.

Time: the integration variable τ is log-time s = log(1 + t) by default (``time="log"``), plain t otherwise;
all times in :meth:`FilippovDriver.stats` are in τ.

References:
    Filippov, "Differential Equations with Discontinuous Righthand Sides", Kluwer, 1988.
    Stewart, "A high accuracy method for numerical treatment of discontinuous ordinary differential
    equations", Numerische Mathematik 58, 1990.
    Acary & Brogliato, "Numerical Methods for Nonsmooth Dynamical Systems", Springer, 2008 (LCP view).
    Dieci & Lopez, "Sliding motion in Filippov differential systems: theoretical results and a computational
    approach", SIAM J. Numer. Anal. 47, 2009.
    Stark & Bro, "Bounded-variable least-squares: an algorithm and applications", Comput. Statist. 10, 1995.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy.optimize import brentq, lsq_linear
from torch import Tensor
from torchdiffeq._impl.interp import _interp_evaluate
from torchdiffeq._impl.misc import _check_inputs
from torchdiffeq._impl.odeint import SOLVERS
from torchdiffeq._impl.rk_common import _runge_kutta_step

from .errors import InvalidParameterError
from .integrate import MaxStepsReached, NonFiniteField, finite_rms_norm
from .models import AbstractModel, AbstractPiecewiseLinearTwoLayer

__all__ = [
    "FilippovDriver",
    "FilippovInvariantError",
    "INACTIVE",
    "PiecewiseAffineSystem",
    "ACTIVE",
    "SLIDING",
    "activation_summary",
    "solve_filippov",
    "supports",
]

INACTIVE, ACTIVE, SLIDING = 0, 1, 2

_N_SAMPLES = 8  # sub-intervals of an accepted step scanned for sign changes
_ZERO_FACTOR = 10.0  # |h| ≤ this × (error scale of h) counts as "at zero"
_ASSERT_FACTOR = 1e4  # a surface further than this × (error scale) on the wrong side is a bug
_ALPHA_EPS = 1e-7  # α within this of a bound is at the bound
_MAX_SOFT = 64  # most crossings switched softly (with an event correction) in one step
_MAX_NULL_SEGMENTS = 200  # consecutive segments of zero length before giving up


def supports(model: AbstractModel) -> bool:
    """Whether :class:`FilippovDriver` handles ``model`` (two-layer ReLU / leaky-ReLU nets).

    ``kinks="auto"`` uses Filippov handling for supported models and naive integration otherwise (deep ReLU
    nets, for now).
    """
    return isinstance(model, AbstractPiecewiseLinearTwoLayer)


def activation_summary(model: AbstractModel, theta: Tensor, X: Tensor, rel_tol: float = 1e-7) -> dict:
    """Activation pattern of a two-layer net at saved states: active pairs and pairs on a switching surface.

    Args:
        model: a two-layer (leaky-)ReLU model.
        theta: parameters, shape `(k, p)`.
        X: inputs, shape `(n, d)`.
        rel_tol: (i, j) is on its surface when |h_ij| ≤ rel_tol · ‖x_i‖ ‖w_j‖.

    Returns:
        dict of int64 numpy arrays of shape `(k,)`: ``active_pairs`` (#{h_ij > tol}), ``zero_pairs``
        (#{|h_ij| ≤ tol}: sliding or switching surfaces) and ``zero_neurons`` (neurons with a zero pair).
    """
    W = model.unflatten(theta)["W"]  # (k, m, d)
    H = X @ W.transpose(-1, -2)  # (k, n, m)
    tol = rel_tol * torch.linalg.vector_norm(X, dim=1)[:, None] * torch.linalg.vector_norm(W, dim=-1)[:, None, :]
    zero = H.abs() <= tol
    return {
        "active_pairs": ((H > tol).sum((1, 2))).cpu().numpy(),
        "zero_pairs": zero.sum((1, 2)).cpu().numpy(),
        "zero_neurons": zero.any(1).sum(1).cpu().numpy(),
    }


class FilippovInvariantError(RuntimeError):
    """A switching surface ended a segment on the side opposite to its activation state (a missed event)."""


def _poly_eval(coeff: list[Tensor], x: Tensor) -> tuple[Tensor, Tensor]:
    """Dense-output polynomial Σ_p c_p x^p and its x-derivative at points ``x`` `(K,)` → `(K, p)` each."""
    C = torch.stack(coeff)  # (P, dim)
    P = C.shape[0]
    pw = x.unsqueeze(1) ** torch.arange(P, dtype=x.dtype, device=x.device)  # (K, P)
    dpw = torch.zeros_like(pw)
    dpw[:, 1:] = pw[:, :-1] * torch.arange(1, P, dtype=x.dtype, device=x.device)
    return pw @ C, dpw @ C


# ----------------------------------------------------------------------------------------------------------
# switching systems: pattern fields, surfaces, classification
# ----------------------------------------------------------------------------------------------------------


class _TwoLayerSwitching:
    """Switching system of a two-layer (leaky-)ReLU net: surfaces h_ij = ⟨w_j, x_i⟩, shape `(n, m)`."""

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
        self.mode = torch.zeros(self.n, self.m, dtype=torch.long, device=self.X.device)
        self.alpha0 = torch.zeros(self.n, self.m, dtype=self.X.dtype, device=self.X.device)
        self.lam = 0.0
        self._refresh()

    # -- state bookkeeping --
    def _refresh(self) -> None:
        self.P = (self.mode == ACTIVE).to(self.X.dtype)
        self.sliding = self.mode == SLIDING
        self.sigma = torch.where(self.mode == ACTIVE, 1.0, -1.0).to(self.X.dtype)
        self.slide_neurons = [int(j) for j in torch.nonzero(self.sliding.any(0)).flatten()]
        self.slide_sets = {j: torch.nonzero(self.sliding[:, j]).flatten() for j in self.slide_neurons}
        self.n_sliding = int(self.sliding.sum())

    def split(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        return theta[..., : self.md].reshape(*theta.shape[:-1], self.m, self.d), theta[..., self.md :]

    def surfaces(self, theta: Tensor) -> Tensor:
        """h, shape `(..., n, m)`."""
        W, _ = self.split(theta)
        return self.X @ W.transpose(-1, -2)

    def surface_rates(self, theta: Tensor, theta_dot: Tensor) -> Tensor:
        """ḣ along θ̇ (h is linear in θ)."""
        return self.surfaces(theta_dot)

    def error_scale(self, theta: Tensor, z: Tensor, rtol: float, atol: float) -> Tensor:
        """Scale of the error in h implied by the solver tolerance on z, shape `(n, m)`."""
        W, _ = self.split(theta)
        zW, _ = self.split(z)
        D = self.pot.inverse_hessian_diag(W)  # (m, d)
        ew = D * (rtol * zW.abs() + atol)  # error in w
        return self.xabs @ ew.T + torch.finfo(theta.dtype).eps * (self.xabs @ W.abs().T)

    # -- the fixed-pattern field --
    def _gate(self, P: Tensor) -> Tensor:
        return P if self.slope == 0.0 else self.slope + (1.0 - self.slope) * P

    def velocity(self, tau, theta: Tensor, alpha_ref: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """dz/dτ of the current activation state and the sliding α's (or None), shapes `(p,)`, `(n, m)`."""
        W, a = self.split(theta)
        H = self.X @ W.T  # (n, m)
        G0 = self._gate(self.P)  # sliding entries at α = 0
        q = self.y * ((H * G0) @ a)
        cy = self.field.loss_weights(tau, q) * self.y
        uW = a.unsqueeze(1) * ((G0 * cy.unsqueeze(1)).T @ self.X)  # (m, d)
        if not self.slide_neurons:
            zW, G = uW, G0
            alpha = None
        else:
            alpha = torch.full_like(H, float("nan"))
            D = self.pot.inverse_hessian_diag(W)
            rows = []
            Pf = self.P.clone()
            ref = self.alpha0 if alpha_ref is None else alpha_ref
            for j in self.slide_neurons:
                S = self.slide_sets[j]
                XS = self.X[S]
                sq = D[j].sqrt()
                R = -(1.0 - self.slope) * a[j] * cy[S]  # −r_k (> 0 on an attracting surface)
                A = (sq.unsqueeze(1) * XS.T) * R  # (d, k)
                t = sq * uW[j]
                a0 = ref[S, j]
                rhs = A.T @ (t - A @ a0) + self.lam * R * H[S, j]
                M = A.T @ A
                if M.shape[0] == 1:
                    delta = rhs / M[0, 0] if bool(M[0, 0] > 0) else torch.zeros_like(rhs)
                else:
                    delta = torch.linalg.pinv(M, hermitian=True, rtol=1e-12) @ rhs
                al = a0 + delta
                alpha[S, j] = al
                Pf[S, j] = al
                rows.append((j, uW[j] + (1.0 - self.slope) * a[j] * ((cy[S] * al) @ XS)))
            zW = uW.clone()
            for j, row in rows:
                zW[j] = row
            G = self._gate(Pf)
        za = ((G * H) * cy.unsqueeze(1)).sum(0)
        return torch.cat([zW.reshape(-1), za]), alpha

    # -- classification at a segment start --
    def classify(self, tau, theta: Tensor, zero: Tensor, forced: dict | None = None) -> dict:
        """Set the activation state at a segment start; returns transition counts.

        Surfaces with |h| > tolerance get the mode of their sign. For each neuron, the surfaces at zero
        (|h| ≤ tolerance, or sliding) are classified together by the box-LCP (bounded least squares) of the
        module docstring: α interior → sliding, α at 0 → inactive, α at 1 → active. Repelling surfaces
        (r_k ≥ 0: both one-sided fields point away, or a_j = 0) keep their side unless the field at that side
        points through, then they cross.
        """
        W, a = self.split(theta)
        H = self.X @ W.T
        old = self.mode.clone()
        new = torch.where(H > 0, ACTIVE, INACTIVE)
        cand = (H.abs() <= zero) | (old == SLIDING)
        new = torch.where(cand, torch.where(old == SLIDING, INACTIVE, old), new)
        alpha0 = torch.zeros_like(self.alpha0)
        counts = {"unresolved": 0}
        cand_neurons = [int(j) for j in torch.nonzero(cand.any(0)).flatten()]
        if cand_neurons:
            # velocity base: candidates at α = 0, others at their (new) mode
            Pbase = (new == ACTIVE).to(H.dtype)
            Pbase[cand] = 0.0
            G0 = self._gate(Pbase)
            q = self.y * ((H * G0) @ a)
            cy = self.field.loss_weights(tau, q) * self.y
            uW = a.unsqueeze(1) * ((G0 * cy.unsqueeze(1)).T @ self.X)
            D = self.pot.inverse_hessian_diag(W)
            self.field.nfe += 1
            for j in cand_neurons:
                C = torch.nonzero(cand[:, j]).flatten()
                r = (1.0 - self.slope) * a[j] * cy[C]
                att = r < 0
                # initial α for repelling candidates: their current side (sliding → nearer bound)
                fixed = torch.where(
                    old[C, j] == SLIDING, (self.alpha0[C, j] > 0.5).to(H.dtype), (old[C, j] == ACTIVE).to(H.dtype)
                )
                if forced:
                    for k, i in enumerate(C.tolist()):
                        if (i, j) in forced:
                            fixed[k] = float(forced[(i, j)])
                            att[k] = False
                al = fixed.clone()
                sq = D[j].sqrt()
                XC = self.X[C]
                for _ in range(2 * len(C) + 2):
                    # bounded LS on the attracting candidates, repelling ones at their side
                    rep = ~att
                    base = uW[j] + (XC[rep].T @ (r[rep] * al[rep])) if bool(rep.any()) else uW[j]
                    t = sq * base
                    if bool(att.any()):
                        A = (sq.unsqueeze(1) * XC[att].T) * (-r[att])
                        sol = lsq_linear(
                            A.numpy(), t.numpy(), bounds=(0.0, 1.0), method="bvls", tol=1e-14, lsmr_tol=None
                        )
                        al[att] = torch.as_tensor(sol.x, dtype=H.dtype)
                        resid = t - A @ al[att]
                    else:
                        resid = t
                    hdot = XC @ (sq * resid)  # ḣ on all candidates
                    flip = rep & (((al > 0.5) & (hdot < 0)) | ((al < 0.5) & (hdot > 0)))
                    if forced:
                        for k, i in enumerate(C.tolist()):
                            if (i, j) in forced:
                                flip[k] = False
                    if not bool(flip.any()):
                        break
                    al[flip] = 1.0 - al[flip]
                for k, i in enumerate(C.tolist()):
                    v = float(al[k])
                    if bool(att[k]) and _ALPHA_EPS < v < 1.0 - _ALPHA_EPS:
                        new[i, j] = SLIDING
                        alpha0[i, j] = v
                    else:
                        new[i, j] = ACTIVE if v > 0.5 else INACTIVE
        counts.update(_transitions(old, new))
        self.mode = new
        self.alpha0 = alpha0
        self._refresh()
        return counts

    def init_mode(self, theta: Tensor) -> None:
        self.mode = torch.where(self.surfaces(theta) > 0, ACTIVE, INACTIVE)
        self._refresh()

    # -- hooks of the generic event core (FilippovDriver) --
    supports_soft = True

    def surface_at(self, coeff: Tensor, x: float, idx: int) -> float:
        """h of surface ``idx`` (flat index) at point x ∈ [0, 1] of a step's dense output (coefficients `(P, p)`).

        Only neuron j's dual block is interpolated (h_ij depends on w_j alone).
        """
        i, j = divmod(idx, self.m)
        d = self.d
        zx = _horner(coeff[:, j * d : (j + 1) * d], x)
        return float(self.X[i] @ self.pot.inverse_mirror_map(zx))

    def soft_info(self, tau1, z1: Tensor, f1: Tensor, z0: Tensor, rtol: float, atol: float):
        """Quantities at the step end for the soft-crossing test: c_i, a_j, ḣ (old pattern), D_j, tolerance."""
        th = self.pot.inverse_mirror_map(z1)
        W, a = self.split(th)
        H = self.X @ W.T
        q = self.y * ((H * self._gate(self.P)) @ a)  # sliding surfaces have h ≈ 0: α does not matter
        c = self.field.loss_weights(tau1, q)
        D = self.pot.inverse_hessian_diag(W)
        hdot = self.surfaces(self.pot.inverse_hessian_diag(th) * f1)
        tol = atol + rtol * torch.maximum(z0.abs(), z1.abs())
        tolW, _ = self.split(tol)
        return c, a, hdot, D, tolW, float(z1.numel())

    def soft_jump(self, info, idx: int) -> tuple[Tensor, Tensor, float, float]:
        """Field jump of surface ``idx`` at the step end: (Δż on w_j's dual block, its tolerance, ḣ old, ḣ new).

        Crossing h_ij = 0 changes only w_j's dual block, by ∓(1 − s₋) a_j c_i y_i x_i (q_i is continuous on
        the surface, so c_i does not jump; a_j's component carries the factor h_ij = 0).
        """
        c, a, hdot, D, tolW, _ = info
        i, j = divmod(idx, self.m)
        s_old = float(self.sigma[i, j])
        jump_vec = (1.0 - self.slope) * float(a[j] * c[i] * self.y[i]) * self.X[i]  # entering the active side
        dz = -s_old * jump_vec  # old active → inactive removes the term, inactive → active adds it
        hd_old = float(hdot[i, j])
        hd_new = hd_old + float(self.X[i] @ (D[j] * dz))
        return dz, tolW[j], hd_old, hd_new


def _horner(coeff: Tensor, x: float) -> Tensor:
    """Σ_p coeff_p x^p (dense-output polynomial in the step fraction x)."""
    out = coeff[-1]
    for c in coeff[:-1].flip(0):
        out = c + x * out
    return out


def _transitions(old: Tensor, new: Tensor) -> dict:
    flipped = ((old == ACTIVE) & (new == INACTIVE)) | ((old == INACTIVE) & (new == ACTIVE))
    return {
        "crossings": int(flipped.sum()),
        "entries": int(((old != SLIDING) & (new == SLIDING)).sum()),
        "exits": int(((old == SLIDING) & (new != SLIDING)).sum()),
    }


# ----------------------------------------------------------------------------------------------------------
# the driver
# ----------------------------------------------------------------------------------------------------------


class _SegmentField:
    """The fixed-activation-state field handed to torchdiffeq; counts evaluations and steps, tracks α."""

    def __init__(self, driver: FilippovDriver) -> None:
        self.drv = driver
        self.stage_margin = float("inf")
        self.last: tuple | None = None

    def __call__(self, tau: Tensor, z: Tensor) -> Tensor:
        drv = self.drv
        drv.field.nfe += 1
        theta = drv.field.potential.inverse_mirror_map(z)
        v, alpha = drv.sw.velocity(tau, theta)
        if alpha is not None:
            al = alpha[drv.sw.sliding]
            m = float(torch.minimum(al, 1.0 - al).min())
            self.stage_margin = min(self.stage_margin, m)
            self.last = (tau, z, m)
        if not bool(torch.isfinite(v).all()):
            drv.n_nonfinite += 1
            drv.last_nonfinite_tau = float(tau)
        return v

    def callback_step(self, t0, y0, dt) -> None:
        self.stage_margin = float("inf")

    def callback_accept_step(self, t0, y0, dt) -> None:
        drv = self.drv
        drv.n_accepted += 1
        drv.last_dt = float(dt)
        if drv.n_accepted >= drv.max_steps:
            raise MaxStepsReached(f"{drv.n_accepted} accepted steps")

    def callback_reject_step(self, t0, y0, dt) -> None:
        self.drv.n_rejected += 1


class FilippovDriver:
    """Integration driver that treats ReLU kinks in the sense of Filippov (event location + sliding modes).

    Same protocol as :class:`~flowsim.integrate.SmoothDriver` (``integrate``, ``last_state``, ``stats``);
    :func:`flowsim.simulate` picks it for models with ``has_kinks`` (``kinks="auto"`` or ``"filippov"``).
    The method is described in :mod:`flowsim.kinks`: smooth RK segments of a fixed activation state,
    crossings located inside accepted steps on the dense output and stepped to exactly, sliding modes by the
    per-neuron box-LCP (two-layer nets).

    Limits:
        * Two-layer ReLU / leaky-ReLU nets (:class:`~flowsim.models.AbstractPiecewiseLinearTwoLayer`): exact
          crossings and sliding. A repelling surface (both one-sided fields point away; the Filippov solution
          is not unique there) keeps the side the trajectory came from. A neuron with w_j = 0 (all its
          surfaces at zero) is handled by the degenerate box-LCP, whose velocity is unique.
        * Deep ReLU nets: not supported by this driver; ``kinks="auto"`` integrates them naively (sliding
          there is a nonlinear complementarity problem — the α's of different layers multiply — and even
          exact crossings need the fixed-pattern pre-activations of every layer; not implemented yet).
        * Separable potentials only (all flowsim potentials are).

    Args:
        model: the model (must have ``has_kinks``).
        method: torchdiffeq adaptive RK method for the smooth segments (default dopri5).
        rtol, atol: tolerances on the dual state z.
        max_steps: budget of accepted steps for the whole run (all segments).
        options: extra torchdiffeq options (``first_step`` is used for the first segment only).

    Raises:
        InvalidParameterError: for a model this driver cannot handle.

    References:
        Filippov 1988; Stewart, Numer. Math. 58 (1990); Dieci & Lopez, SIAM J. Numer. Anal. 47 (2009).
    """

    kinks = "filippov"

    def __init__(
        self, model: AbstractModel, method: str, rtol: float, atol: float, max_steps: int, options: dict | None = None
    ) -> None:
        self._check_model(model)
        self.model = model
        self.method = method
        self.rtol = float(rtol)
        self.atol = float(atol)
        self.max_steps = int(max_steps)
        self.options = dict(options or {})
        self.field = None
        self.sw = None
        self._last: tuple[float, Tensor] | None = None
        self.n_accepted = self.n_rejected = 0
        self.n_nonfinite = 0
        self.last_nonfinite_tau: float | None = None
        self.last_dt: float | None = None
        self.n_segments = self.n_crossings = self.n_entries = self.n_exits = 0
        self.n_crossing_events = self.n_exit_events = self.n_redo = self.n_dip_events = 0
        self.n_null_segments = 0
        self.n_soft_crossings = 0
        self._dt_last = 0.0
        self.soft_crossings = bool(self.options.pop("soft_crossings", False))
        self.soft_fraction = float(self.options.pop("soft_fraction", 0.1))
        # soft crossings with an event correction (see _corrected_soft); implies soft_crossings
        self.soft_correct = bool(self.options.pop("soft_correct", False))
        self.soft_fallbacks: dict = {}
        if self.soft_correct:
            self.soft_crossings = True
            self.soft_fraction = float(self.options.pop("soft_correct_fraction", 0.5))
        self.options.pop("soft_correct_fraction", None)
        self.exact_saves = bool(self.options.pop("exact_saves", True))
        self.sliding_time = 0.0
        self.sliding_surface_time = 0.0
        self.max_side_violation = 0.0
        self.max_sliding_offset = 0.0

    @staticmethod
    def _check_model(model) -> None:
        if not isinstance(model, AbstractPiecewiseLinearTwoLayer):
            raise InvalidParameterError(
                f"kinks='filippov' supports two-layer ReLU/leaky-ReLU models; {type(model).__name__} is not "
                "supported yet: use kinks='naive'"
            )

    # ---- protocol ----
    def last_state(self) -> tuple[float, Tensor] | None:
        """(τ, z) of the last accepted step (or event point), or None before the first."""
        return self._last

    def stats(self) -> dict:
        """Solver statistics; times in the integration variable τ (log-time s by default)."""
        sw = self.sw
        return {
            "n_accepted": self.n_accepted,
            "n_rejected": self.n_rejected,
            "last_dt": self.last_dt,
            "n_nonfinite_evals": self.n_nonfinite,
            "n_segments": self.n_segments,
            "n_crossings": self.n_crossings,
            "n_sliding_entries": self.n_entries,
            "n_sliding_exits": self.n_exits,
            "n_crossing_events": self.n_crossing_events,
            "n_dip_events": self.n_dip_events,
            "n_soft_crossings": self.n_soft_crossings,
            "soft_fallbacks": dict(self.soft_fallbacks),
            "n_exit_events": self.n_exit_events,
            "n_redo_steps": self.n_redo,
            "n_null_segments": self.n_null_segments,
            "sliding_time": self.sliding_time,
            "sliding_surface_time": self.sliding_surface_time,
            "n_sliding_at_end": sw.n_sliding if sw is not None else 0,
            "n_active_at_end": int((sw.mode == ACTIVE).sum()) if sw is not None else 0,
            "max_side_violation": self.max_side_violation,
            "max_sliding_offset": self.max_sliding_offset,
            "time_variable": "s = log(1+t)" if (self.field is None or self.field.log_time) else "t",
        }

    def integrate(self, field, z0: Tensor, tau_grid: Tensor, save: Callable[[float, Tensor], None]) -> None:
        """Integrate over ``tau_grid`` (τ, shape `(k,)`), calling ``save(τ_k, z_k)`` at every grid time.

        Raises:
            MaxStepsReached: the budget of accepted steps is used up.
            NonFiniteField: the step size underflowed after non-finite field values.
            FilippovInvariantError: a surface ended a segment on the wrong side (a missed event).
            AssertionError: torchdiffeq's own failures (step-size underflow).
        """
        self.field = field
        self.sw = sw = self._make_switching(field)
        pot = field.potential
        seg = _SegmentField(self)
        opts = dict(self.options)
        first_step = opts.pop("first_step", None)
        opts.setdefault("norm", finite_rms_norm)
        _, func, _, tt, rtol, atol, method, opts, _, _ = _check_inputs(
            seg, z0, tau_grid, self.rtol, self.atol, self.method, opts, None, SOLVERS
        )
        opts.setdefault("max_num_steps", 2**31 - 1)
        grid = tt.to(torch.float64)
        if self.exact_saves:
            opts["step_t"] = grid[1:]  # steps land on the save times: saved states are step ends, not interpolants
        tau = grid[0].clone()
        z = z0
        k = 1
        theta = pot.inverse_mirror_map(z)
        sw.init_mode(theta)
        forced: dict = {}
        soft_crossed: list = []
        self._last = (float(tau), z)
        # Baumgarte rate: the state's relative rate of change
        self.sw.lam = 0.0
        try:
            while k < len(grid):
                theta = pot.inverse_mirror_map(z)
                zero = _ZERO_FACTOR * sw.error_scale(theta, z, self.rtol, self.atol)
                self._check_sides(theta, zero, soft_crossed)
                c = sw.classify(tau, theta, zero, forced)
                forced = {}
                self.n_crossings += c["crossings"]
                self.n_entries += c["entries"]
                self.n_exits += c["exits"]
                self.n_segments += 1
                seg_start = float(tau)
                solver = SOLVERS[method](func=func, y0=z, rtol=rtol, atol=atol, first_step=first_step, **opts)
                solver._before_integrate(torch.stack([tau, grid[-1]]))
                f0 = solver.rk_state.f1
                sw.lam = float(f0.norm() / z.norm().clamp_min(torch.finfo(z.dtype).tiny))
                # components at zero at the segment start get a hysteresis band (they may sit a hair off)
                band = torch.where(sw.surfaces(theta).abs() <= zero, zero, torch.zeros_like(zero))
                while True:
                    prev = solver.rk_state
                    new = solver._adaptive_step(prev)
                    solver.rk_state = new
                    if not bool(new.t1 > prev.t1):
                        continue  # rejected step
                    t0, t1 = prev.t1, new.t1
                    self._dt_last = float(t1 - t0)
                    ev = self._find_event(new, prev, band, seg)
                    t_stop = t1 if ev is None else ev[0]
                    while k < len(grid) and grid[k] <= t_stop:
                        zk = _interp_evaluate(new.interp_coeff, t0, t1, grid[k])
                        if ev is not None and len(ev) > 3 and bool(grid[k] >= t1):
                            zk = zk + ev[3]  # event correction of soft crossings (at the step end)
                        save(float(grid[k]), zk)
                        k += 1
                    if ev is None:
                        self._last = (float(t1), new.y1)
                        self._track_sliding(float(t0), float(t1), new.y1)
                        if k == len(grid):
                            break
                        continue
                    tau_e, forced, soft = ev[:3]
                    soft_crossed = soft
                    if soft and not forced and bool(tau_e >= t1):
                        # only soft crossings: switch them at the step end (plus their event correction, if
                        # any: the integral of the field jump from the crossing to the step end) and restart
                        z = new.y1 if len(ev) < 4 else new.y1 + ev[3]
                    elif bool(tau_e > t0):
                        z = _runge_kutta_step(func, prev.y1, prev.f1, t0, tau_e - t0, tau_e, solver.tableau)[0]
                        self.n_redo += 1
                    else:
                        z = prev.y1
                    self._track_sliding(float(t0), float(tau_e), z)
                    tau = tau_e
                    self._last = (float(tau), z)
                    first_step = new.dt
                    break
                if k == len(grid):
                    break
                if float(tau) <= seg_start:
                    self.n_null_segments += 1
                    if self.n_null_segments > _MAX_NULL_SEGMENTS * max(1, self.n_segments // 100):
                        raise FilippovInvariantError(
                            f"{self.n_null_segments} zero-length segments at τ = {float(tau):.6g}: the activation "
                            "state does not settle (a degenerate switching configuration); try kinks='naive'"
                        )
        except AssertionError as e:
            if "underflow in dt" in str(e) and self.n_nonfinite:
                raise NonFiniteField(
                    f"the step size underflowed after {self.n_nonfinite} non-finite field evaluations "
                    f"(last at τ = {self.last_nonfinite_tau:.6g})"
                ) from e
            raise

    # ---- helpers ----
    def _make_switching(self, field):
        return _TwoLayerSwitching(self.model, field)

    def _track_sliding(self, t0: float, t1: float, z: Tensor) -> None:
        sw = self.sw
        if sw.n_sliding:
            self.sliding_time += t1 - t0
            self.sliding_surface_time += (t1 - t0) * sw.n_sliding
            h = sw.surfaces(self.field.potential.inverse_mirror_map(z))
            theta = self.field.potential.inverse_mirror_map(z)
            scale = sw.error_scale(theta, z, self.rtol, self.atol)
            off = float((h.abs() / scale)[sw.sliding].max())
            self.max_sliding_offset = max(self.max_sliding_offset, off)

    def _check_sides(self, theta: Tensor, zero: Tensor, exempt: list = ()) -> None:
        """Every non-sliding surface must be on the side its state claims (up to a tolerance band).

        ``exempt``: flat indices of surfaces crossed softly in the last step (switched at its end).
        """
        sw = self.sw
        h = sw.surfaces(theta)
        scale = zero / _ZERO_FACTOR
        v = torch.where(sw.sliding, -h.abs(), sw.sigma * h) / scale
        if exempt:
            v.view(-1)[torch.as_tensor(list(exempt), dtype=torch.long)] = 0.0
        worst = float((-v).max())
        self.max_side_violation = max(self.max_side_violation, worst)
        if worst > _ASSERT_FACTOR:
            i, j = np.unravel_index(int((-v).argmax()), tuple(h.shape))
            raise FilippovInvariantError(
                f"surface (i={i}, j={j}) is {worst:.3g} error scales on the wrong side of its activation state "
                f"(mode {int(sw.mode[i, j])}, h = {float(h[i, j]):.3g}): a switching event was missed"
            )

    def _find_event(self, new, prev, band: Tensor, seg: _SegmentField):
        """Earliest switching event inside the accepted step [t0, t1]: (τ_e, forced sides, soft) or None.

        Candidates are sign changes of σ h between 9 samples of the dense output, plus dips below zero
        between two samples flagged by the cubic Hermite interpolant of (σh, σḣ) and confirmed on the dense
        output. A *soft* crossing (``soft_crossings``) is a transversal one — both one-sided fields at the
        step end move h the same way — whose field jump, integrated over the rest of the step, is below
        ``soft_fraction`` of the step's error tolerance (RMS norm, as torchdiffeq's error control): it is
        switched at the end of the step (or at the next hard event) instead of being stepped to. Every
        fixed-pattern field conserves the balance, so this costs at most a fraction of one step's error.
        """
        sw = self.sw
        pot = self.field.potential
        t0, t1 = prev.t1, new.t1
        C = torch.stack(new.interp_coeff)  # (5, p)
        xs = torch.linspace(0.0, 1.0, _N_SAMPLES + 1, dtype=torch.float64, device=C.device)
        Z, dZ = _poly_eval(new.interp_coeff, xs)
        Th = pot.inverse_mirror_map(Z)
        dTh = pot.inverse_hessian_diag(Th) * dZ
        sig = sw.sigma
        g = (sig * sw.surfaces(Th) + band).flatten(1)  # (K+1, N); event: g crosses from ≥ 0 to < 0
        dg = (sig * sw.surface_rates(Th, dTh)).flatten(1)
        slid = sw.sliding.flatten()
        if sw.n_sliding:
            g[:, slid] = float("inf")
            dg[:, slid] = 0.0
        ga, gb = g[:-1], g[1:]
        cross = (ga >= 0) & (gb < 0)
        dip = (ga >= 0) & (gb >= 0) & (dg[:-1] < 0) & (dg[1:] > 0)
        any_cross, any_dip = bool(cross.any()), bool(dip.any())
        x_cross, soft = None, []
        if any_cross or any_dip:
            sigf, bandf = sig.flatten(), band.flatten()
            dx = 1.0 / _N_SAMPLES
            soft_on = self.soft_crossings and getattr(sw, "supports_soft", False)
            hard_info = sw.soft_info(t1, new.y1, new.f1, prev.y1, self.rtol, self.atol) if soft_on else None

            def g_at(x: float, idx: int) -> float:
                return float(sigf[idx] * sw.surface_at(C, x, idx) + bandf[idx])

            dip_confirmed = False
            if self.soft_correct and soft_on and any_dip:
                u = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
                h00, h10 = 2 * u**3 - 3 * u**2 + 1, u**3 - 2 * u**2 + u
                h01, h11 = -2 * u**3 + 3 * u**2, u**3 - u**2
                for i, idx in torch.nonzero(dip).tolist():
                    pcub = h00 * g[i, idx] + h10 * dx * dg[i, idx] + h01 * g[i + 1, idx] + h11 * dx * dg[i + 1, idx]
                    if bool(pcub.min() < 0):
                        dip_confirmed = True
                        self.soft_fallbacks["dip"] = self.soft_fallbacks.get("dip", 0) + 1
                        break
            if self.soft_correct and soft_on and not dip_confirmed:
                corr = self._corrected_soft(new, prev, C, cross, xs, g_at)
                if corr is not None and sw.n_sliding and self._find_exit(new, prev, seg, None)[0] is not None:
                    corr = None  # a sliding α leaves [0, 1] in this step: handle the step exactly
                if corr is not None:
                    idxs, dz = corr
                    self.n_soft_crossings += len(idxs)
                    return t1, {}, idxs, dz

            soft_budget = self.soft_fraction
            for i in range(_N_SAMPLES):
                brackets = [(float(xs[i]), float(xs[i + 1]), idx) for idx in torch.nonzero(cross[i]).flatten().tolist()]
                if any_dip:
                    for idx in torch.nonzero(dip[i]).flatten().tolist():
                        u = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
                        h00, h10 = 2 * u**3 - 3 * u**2 + 1, u**3 - 2 * u**2 + u
                        h01, h11 = -2 * u**3 + 3 * u**2, u**3 - u**2
                        pcub = h00 * g[i, idx] + h10 * dx * dg[i, idx] + h01 * g[i + 1, idx] + h11 * dx * dg[i + 1, idx]
                        if bool(pcub.min() < 0):
                            xm = float(xs[i]) + float(u[int(pcub.argmin())]) * dx
                            if g_at(xm, idx) < 0:
                                brackets.append((float(xs[i]), xm, idx))
                                self.n_dip_events += 1
                hard = []
                for a, b, idx in brackets:
                    if hard_info is not None and b == float(xs[i + 1]):
                        cost = self._soft_cost(hard_info, idx, 1.0 - a)
                        if cost is not None and cost <= soft_budget:
                            soft_budget -= cost
                            soft.append(idx)
                            continue
                    hard.append((a, b, idx))
                if hard:
                    roots = []
                    for a, b, idx in hard:
                        fa = g_at(a, idx)
                        x = a if fa <= 0 else brentq(lambda x, idx=idx: g_at(x, idx), a, b, xtol=1e-15, rtol=1e-15)
                        roots.append(x)
                    x_cross = min(roots)
                    break
        x_exit, forced = None, {}
        if sw.n_sliding:
            x_exit, forced = self._find_exit(new, prev, seg, x_cross)
        if soft:
            self.n_soft_crossings += len(soft)
        if x_cross is None and x_exit is None:
            return None if not soft else (t1, {}, soft)
        if x_exit is not None and (x_cross is None or x_exit < x_cross):
            self.n_exit_events += 1
            x = x_exit
        else:
            self.n_crossing_events += 1
            x, forced = x_cross, {}
        tau_e = t0 + (t1 - t0) * x if x < 1.0 else t1.clone()
        return tau_e, forced, soft

    def _corrected_soft(self, new, prev, C: Tensor, cross: Tensor, xs: Tensor, g_at):
        """Soft switching of *all* crossings of the step with an event correction, or None (→ exact handling).

        For a transversal crossing of h_ij = 0 at τc ∈ (τ0, τ1) the fixed-pattern field jumps by
        Δf = δg c_i y_i (a_j x_i on w_j's dual block, h_ij on a_j's), δg = ±(1 − s₋) (q_i is continuous on the
        surface, so c_i does not jump). The step was integrated with the old pattern; the state at τ1 is
        corrected by the trapezoid rule ½(τ1 − τc)(Δf(τc) + Δf(τ1)) — no RHS evaluation (Δf is known in
        closed form). Its error estimate — the trapezoid-vs-rectangle difference ½(τ1 − τc)|Δf(τ1) − Δf(τc)|
        plus the neglected change of the loss weight, ½(τ1 − τc)|c_i^new − c_i^old|·|∇_z q_i| at τ1 — must stay
        below ``soft_correct_fraction`` of the step's error tolerance (RMS over all crossings, as torchdiffeq's
        error norm), else None. Also None when: a crossing is not transversal at both ends (sliding / grazing
        candidate), two crossings share a point i or a neuron j (they interact), a neuron with a crossing has
        sliding surfaces, a sliding α would leave [0, 1] in the step, or there are more than
        ``_MAX_SOFT`` crossings. Balance: ⟨θ, Δz⟩ restricted to neuron j is δg c_i y_i a_j h_ij = 0 at τc, so the
        correction changes B_j only at second order, within the error estimate.
        """
        sw = self.sw
        pot = self.field.potential
        idxs = [int(v) for v in torch.nonzero(cross.any(0)).flatten().tolist()]
        why = self.soft_fallbacks
        if len(idxs) > _MAX_SOFT or int(cross.sum()) != len(idxs):
            why["many"] = why.get("many", 0) + 1
            return None
        ij = [divmod(idx, sw.m) for idx in idxs]
        if len({i for i, _ in ij}) < len(ij) or len({j for _, j in ij}) < len(ij):
            why["interact"] = why.get("interact", 0) + 1
            return None
        if sw.n_sliding and any(bool(sw.sliding[:, j].any()) for _, j in ij):
            why["sliding_neuron"] = why.get("sliding_neuron", 0) + 1
            return None
        t0, t1 = prev.t1, new.t1
        dt = float(t1 - t0)
        info = sw.soft_info(t1, new.y1, new.f1, prev.y1, self.rtol, self.atol)
        th1 = pot.inverse_mirror_map(new.y1)
        W1, a1 = sw.split(th1)
        H1 = sw.X @ W1.T
        G1 = sw._gate(sw.P)
        tol = self.atol + self.rtol * torch.maximum(prev.y1.abs(), new.y1.abs())
        dz = torch.zeros_like(new.y1)
        err = torch.zeros_like(new.y1)
        md = sw.md
        for idx, (i, j) in zip(idxs, ij, strict=True):
            _, _, hd_old, hd_new = sw.soft_jump(info, idx)
            s_old = float(sw.sigma[i, j])
            if not (s_old * hd_old < 0 and s_old * hd_new < 0):
                why["not_transversal"] = why.get("not_transversal", 0) + 1
                return None
            k = int(torch.nonzero(cross[:, idx]).flatten()[0])
            xa, xb = float(xs[k]), float(xs[k + 1])
            xc = xa if g_at(xa, idx) <= 0 else brentq(lambda x, idx=idx: g_at(x, idx), xa, xb, xtol=1e-15, rtol=1e-15)
            if xc <= 0.0:
                return None
            rem = (1.0 - xc) * dt
            dg = -s_old * (1.0 - sw.slope)  # gate change: entering the active side +(1 − s₋)
            # state at the crossing (dense output): a_j, q_i → c_i (the old pattern; h_ij = 0 there)
            zc = _horner(C, xc)
            thc = pot.inverse_mirror_map(zc)
            Wc, ac = sw.split(thc)
            qc = sw.y[i] * ((sw.X[i] @ Wc.T) * G1[i]) @ ac
            cc = self.field.loss_weights(t0 + xc * dt, qc.reshape(1))[0]
            q1 = sw.y[i] * (H1[i] * G1[i]) @ a1
            c1 = info[0][i]
            c1_new = self.field.loss_weights(t1, (q1 + sw.y[i] * dg * a1[j] * H1[i, j]).reshape(1))[0]
            fw_c = dg * cc * sw.y[i] * ac[j] * sw.X[i]
            fw_1 = dg * c1 * sw.y[i] * a1[j] * sw.X[i]
            fa_1 = dg * c1 * sw.y[i] * H1[i, j]
            blk = slice(j * sw.d, (j + 1) * sw.d)
            dz[blk] += 0.5 * rem * (fw_c + fw_1)
            dz[md + j] += 0.5 * rem * fa_1
            err[blk] += 0.5 * rem * (fw_1 - fw_c).abs()
            err[md + j] += 0.5 * rem * fa_1.abs()
            # neglected: the change of c_i (q_i moves by y_i δg a_j h_ij after the crossing) times ∇_z q_i
            gq_w = sw.y[i] * a1.unsqueeze(1) * (G1[i].unsqueeze(1) * sw.X[i])  # (m, d)
            gq_a = sw.y[i] * G1[i] * H1[i]
            dc = 0.5 * rem * float((c1_new - c1).abs())
            err[:md] += dc * gq_w.abs().reshape(-1)
            err[md:] += dc * gq_a.abs()
        # balance-consistent: the exact solution conserves B_j, the old-pattern step does too, so move the
        # corrected state back onto B_j = B_j(z1) along (w_j, −a_j) (Newton on the scalar step μ; dB_j/dz = θ on
        # neuron j's dual blocks). The shift is of the size of the correction's own second-order error.
        from .diagnostics import balance

        B1 = balance(self.model, pot, th1.unsqueeze(0))[0][0]
        zn = new.y1 + dz
        js = sorted({j for _, j in ij})
        for _ in range(3):
            thn = pot.inverse_mirror_map(zn)
            Bn = balance(self.model, pot, thn.unsqueeze(0))[0][0]
            for j in js:
                wb, ab = slice(j * sw.d, (j + 1) * sw.d), md + j
                gw, ga = th1[wb], -th1[ab]
                slope = float(thn[wb] @ gw) - float(thn[ab] * ga)  # d B_j(z + μ g)/dμ
                if slope != 0.0:
                    mu = -float(Bn[j] - B1[j]) / slope
                    zn[wb] += mu * gw
                    zn[ab] += mu * ga
        dz = zn - new.y1
        ratio = float(((err / tol).square().mean()).sqrt())
        if not ratio <= self.soft_fraction:
            why["error"] = why.get("error", 0) + 1
            return None
        return idxs, dz

    def _soft_cost(self, info, idx: int, frac: float) -> float | None:
        """Error ratio of switching crossing ``idx`` at the step end, or None if it is not transversal."""
        dz, tol, hd_old, hd_new = self.sw.soft_jump(info, idx)
        s_old = float(self.sw.sigma.flatten()[idx])
        if not (s_old * hd_old < 0 and s_old * hd_new < 0):
            return None  # not transversal at the step end: sliding or grazing candidate → locate exactly
        e = (dz * frac * self._dt_last) / tol
        return float(e.square().sum() / info[-1]) ** 0.5

    def _find_exit(self, new, prev, seg: _SegmentField, x_max):
        """Earliest time in the step where a sliding α leaves [0, 1] (equivalent control on the dense output)."""
        sw = self.sw
        pot = self.field.potential
        t0, t1 = prev.t1, new.t1

        def margin(x: float) -> tuple[float, Tensor]:
            tx = t0 + (t1 - t0) * x
            zx = _interp_evaluate(new.interp_coeff, t0, t1, tx) if x > 0 else prev.y1
            self.field.nfe += 1
            _, alpha = sw.velocity(tx, pot.inverse_mirror_map(zx))
            al = torch.where(sw.sliding, alpha, torch.full_like(alpha, 0.5))
            return float(torch.minimum(al, 1.0 - al).min()), al

        end_margin = seg.last[2] if (seg.last is not None and seg.last[1] is new.y1) else margin(1.0)[0]
        if seg.stage_margin >= 0 and end_margin >= 0:
            return None, {}
        xs = np.linspace(0.0, 1.0, _N_SAMPLES + 1)
        xa = 0.0
        for xb in xs[1:]:
            if x_max is not None and xa >= x_max:
                return None, {}
            mb = margin(float(xb))[0] if xb < 1.0 else end_margin
            if mb < 0:
                # samples after the first were ≥ 0; at the step start α may already sit (a hair) outside [0, 1]
                ma = margin(xa)[0] if xa == 0.0 else 0.0
                x = xa if ma <= 0 else brentq(lambda x: margin(x)[0], xa, float(xb), xtol=1e-15, rtol=1e-15)
                _, al = margin(min(1.0, x + 1e-12 * (xb - xa)))
                worst = torch.minimum(al, 1.0 - al)
                forced = {}
                for ix in torch.nonzero(worst <= max(0.0, float(worst.min())) + 1e-9).tolist():
                    forced[tuple(ix)] = ACTIVE if float(al[tuple(ix)]) > 0.5 else INACTIVE
                return x, forced
            xa = float(xb)
        return None, {}


# ----------------------------------------------------------------------------------------------------------
# generic piecewise-affine switching systems (CASES C9): the same event core, small box-LCPs
# ----------------------------------------------------------------------------------------------------------


class _IdentityPotential:
    """Identity "mirror map" for systems integrated in their own coordinates (z = θ = y)."""

    def mirror_map(self, y: Tensor) -> Tensor:
        return y

    def inverse_mirror_map(self, z: Tensor) -> Tensor:
        return z

    def inverse_hessian_diag(self, y: Tensor) -> Tensor:
        return torch.ones_like(y)


class _CountingAffineField:
    """Holds a :class:`PiecewiseAffineSystem` for the driver; ``nfe`` is the number of calls of its field.

    The driver's own bookkeeping increments (``field.nfe += 1`` where it evaluates the field outside the RK
    stages) are ignored: every evaluation goes through :meth:`PiecewiseAffineSystem.field_affine` and is
    counted there, once.
    """

    log_time = False

    def __init__(self, system: PiecewiseAffineSystem) -> None:
        self.system = system
        self.potential = _IdentityPotential()

    @property
    def nfe(self) -> int:
        return self.system.nfe

    @nfe.setter
    def nfe(self, value: int) -> None:  # the driver's increments: already counted by the system
        pass


class PiecewiseAffineSystem:
    """A Filippov system ẏ = f₀(t, y) + F₁(t, y) σ, σ_k = 1[h_k(y) > 0], affine in the activation vector σ.

    This is the structure of a one-hidden-layer ReLU field (σ = relu′ of the pre-activations), reduced to a
    small generic system so that the event core of :class:`FilippovDriver` — event location on the dense
    output, the crossing / sliding / grazing classification at segment starts, sliding by equivalent control
    with a box-LCP, exits where α leaves [0, 1], side checks — runs on hand-checkable cases (CASES C9).
    On surfaces at zero σ_k is replaced by α_k ∈ [0, 1] (Filippov convex combination). With S the surfaces at
    zero, ḣ_S = b + M α_S, b = J_S (f₀ + F₁ σ_rest), M = J_S F₁[:, S] (J = ∂h/∂y). The Filippov
    conditions — ḣ_k = 0 for 0 < α_k < 1, ḣ_k ≤ 0 at α_k = 0, ḣ_k ≥ 0 at α_k = 1 — are a box-constrained
    linear complementarity problem (box-LCP); it is solved by enumerating the 3^|S| bound/interior patterns
    (|S| ≤ 8), preferring no sliding on repelling surfaces (M_kk ≥ 0) and the side the state came from (the
    same rules as the two-layer classification). The two-layer driver solves its per-neuron box-LCP as a
    bounded least-squares problem instead (its M = −diag(r)⁻¹AᵀA structure makes it a convex QP).

    Args:
        field_affine: ``(t, y) -> (f0, F1)``, shapes `(p,)` and `(p, k)` (float64 tensors). Each call counts
            as one RHS evaluation.
        switching: ``y -> h``, shape `(k,)`, or a `(k, p)` matrix H for linear surfaces h = H y.
        switching_jacobian: ``y -> ∂h/∂y`` `(k, p)` for nonlinear ``switching`` (default: autograd).

    Limits: |S| ≤ 8 surfaces at zero at once (the enumeration); non-uniqueness on repelling surfaces is
    resolved by keeping the current side, as in the two-layer driver.
    """

    def __init__(self, field_affine, switching, switching_jacobian=None) -> None:
        self._field = field_affine
        if callable(switching):
            self._h = switching
            self._J = switching_jacobian
        else:
            Hm = torch.as_tensor(switching, dtype=torch.float64)
            self._h = lambda y: Hm @ y if y.ndim == 1 else y @ Hm.T
            self._J = lambda y: Hm
        self.nfe = 0

    def field_affine(self, t, y: Tensor) -> tuple[Tensor, Tensor]:
        self.nfe += 1
        f0, F1 = self._field(t, y)
        return torch.as_tensor(f0, dtype=y.dtype), torch.as_tensor(F1, dtype=y.dtype)

    def h(self, y: Tensor) -> Tensor:
        if y.ndim == 2:
            return torch.stack([self.h(r) for r in y])
        return torch.as_tensor(self._h(y), dtype=y.dtype).reshape(-1)

    def jacobian(self, y: Tensor) -> Tensor:
        if self._J is not None:
            return torch.as_tensor(self._J(y), dtype=y.dtype).reshape(-1, y.shape[-1])
        return torch.autograd.functional.jacobian(lambda v: self.h(v), y).reshape(-1, y.shape[-1])


def _box_lcp(b: Tensor, M: Tensor, side: Tensor, free: Tensor, tol: float) -> tuple[Tensor, bool]:
    """α ∈ [0,1]^k with w = b + Mα: α_k interior ⇒ w_k = 0, α_k = 0 ⇒ w_k ≤ 0, α_k = 1 ⇒ w_k ≥ 0.

    ``side``: the current side (0/1) of each surface; ``free``: surfaces allowed to move (others fixed at
    ``side``). Enumerates the patterns (k ≤ 8), ranking valid solutions by (#repelling sliding, #changed sides).
    Returns (α, resolved).
    """
    import itertools

    k = b.numel()
    idx_free = [i for i in range(k) if bool(free[i])]
    best, best_cost = None, None
    rep = torch.diagonal(M) >= 0
    for pat in itertools.product((0, 1, 2), repeat=len(idx_free)):  # 0: α=0, 1: α=1, 2: interior
        al = side.clone()
        I = [i for i, c in zip(idx_free, pat, strict=True) if c == 2]
        for i, c in zip(idx_free, pat, strict=True):
            if c < 2:
                al[i] = float(c)
        if I:
            Ii = torch.tensor(I)
            rest = b + M @ torch.where(torch.isin(torch.arange(k), Ii), torch.zeros_like(al), al)
            MI = M[Ii][:, Ii]
            sol = torch.linalg.lstsq(MI, -rest[Ii].unsqueeze(1), rcond=None).solution.flatten()
            al[Ii] = sol
            if bool((sol <= _ALPHA_EPS).any() | (sol >= 1.0 - _ALPHA_EPS).any()):
                continue
        w = b + M @ al
        ok = True
        for i, c in zip(idx_free, pat, strict=True):
            if (c == 2 and abs(float(w[i])) > tol) or (c == 0 and float(w[i]) > tol) or (c == 1 and float(w[i]) < -tol):
                ok = False
                break
        if not ok:
            continue
        cost = (
            sum(1 for i, c in zip(idx_free, pat, strict=True) if c == 2 and bool(rep[i])),
            sum(1 for i, c in zip(idx_free, pat, strict=True) if c < 2 and c != int(side[i])),
        )
        if best_cost is None or cost < best_cost:
            best, best_cost = al, cost
    if best is None:
        return side.clone(), False
    return best, True


class _AffineSwitching:
    """Switching-system adapter of a :class:`PiecewiseAffineSystem` for the :class:`FilippovDriver` event core."""

    supports_soft = False

    def __init__(self, system: PiecewiseAffineSystem, field: _CountingAffineField, y0: Tensor) -> None:
        self.sys = system
        self.field = field
        self.k = int(system.h(y0).numel())
        self.mode = torch.zeros(self.k, dtype=torch.long)
        self.alpha0 = torch.zeros(self.k, dtype=y0.dtype)
        self.lam = 0.0
        self._refresh()

    def _refresh(self) -> None:
        self.P = (self.mode == ACTIVE).to(torch.float64)
        self.sliding = self.mode == SLIDING
        self.sigma = torch.where(self.mode == ACTIVE, 1.0, -1.0).to(torch.float64)
        self.n_sliding = int(self.sliding.sum())

    def init_mode(self, y: Tensor) -> None:
        self.mode = torch.where(self.sys.h(y) > 0, ACTIVE, INACTIVE)
        self._refresh()

    def surfaces(self, y: Tensor) -> Tensor:
        return self.sys.h(y)

    def surface_rates(self, y: Tensor, ydot: Tensor) -> Tensor:
        if y.ndim == 2:
            return torch.stack([self.sys.jacobian(r) @ v for r, v in zip(y, ydot, strict=True)])
        return self.sys.jacobian(y) @ ydot

    def surface_at(self, coeff: Tensor, x: float, idx: int) -> float:
        return float(self.sys.h(_horner(coeff, x))[idx])

    def error_scale(self, y: Tensor, z: Tensor, rtol: float, atol: float) -> Tensor:
        Ja = self.sys.jacobian(y).abs()
        return Ja @ (rtol * y.abs() + atol) + torch.finfo(y.dtype).eps * (Ja @ y.abs())

    def _lcp_data(self, tau, y: Tensor, S: Tensor, sigma_rest: Tensor):
        f0, F1 = self.sys.field_affine(tau, y)
        J = self.sys.jacobian(y)
        base = f0 + F1 @ torch.where(S, torch.zeros_like(sigma_rest), sigma_rest)
        return f0, F1, J, J[S] @ base, J[S] @ F1[:, S]

    def velocity(self, tau, y: Tensor, alpha_ref: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        if not self.n_sliding:
            f0, F1 = self.sys.field_affine(tau, y)
            return f0 + F1 @ self.P, None
        S = self.sliding
        f0, F1, J, b, M = self._lcp_data(tau, y, S, self.P)
        a0 = (self.alpha0 if alpha_ref is None else alpha_ref)[S]
        rhs = -self.lam * self.sys.h(y)[S] - b - M @ a0  # equivalent control: ḣ_S = −λ h_S
        al = a0 + torch.linalg.pinv(M, rtol=1e-12) @ rhs
        sig = self.P.clone()
        sig[S] = al
        alpha = torch.full((self.k,), float("nan"), dtype=y.dtype)
        alpha[S] = al
        return f0 + F1 @ sig, alpha

    def classify(self, tau, y: Tensor, zero: Tensor, forced: dict | None = None) -> dict:
        h = self.sys.h(y)
        old = self.mode.clone()
        new = torch.where(h > 0, ACTIVE, INACTIVE)
        cand = (h.abs() <= zero) | (old == SLIDING)
        counts = {"unresolved": 0}
        alpha0 = torch.zeros_like(self.alpha0)
        if bool(cand.any()):
            if int(cand.sum()) > 8:
                raise NotImplementedError("PiecewiseAffineSystem: more than 8 surfaces at zero at once")
            side_all = torch.where(old == SLIDING, (self.alpha0 > 0.5).to(y.dtype), (old == ACTIVE).to(y.dtype))
            sig_rest = (new == ACTIVE).to(y.dtype)
            _, _, _, b, M = self._lcp_data(tau, y, cand, sig_rest)
            C = torch.nonzero(cand).flatten().tolist()
            side = side_all[cand]
            free = torch.ones(len(C), dtype=torch.bool)
            for kk, i in enumerate(C):
                if forced and (i,) in forced:
                    side[kk] = float(forced[(i,)] == ACTIVE)
                    free[kk] = False
            scale = float(b.abs().max()) + float(M.abs().max()) + 1e-300
            al, ok = _box_lcp(b, M, side, free, 1e-12 * scale)
            counts["unresolved"] += int(not ok)
            for kk, i in enumerate(C):
                v = float(al[kk])
                if _ALPHA_EPS < v < 1.0 - _ALPHA_EPS:
                    new[i] = SLIDING
                    alpha0[i] = v
                else:
                    new[i] = ACTIVE if v > 0.5 else INACTIVE
        counts.update(_transitions(old, new))
        self.mode = new
        self.alpha0 = alpha0
        self._refresh()
        return counts


class _AffineFilippovDriver(FilippovDriver):
    """:class:`FilippovDriver` on a :class:`PiecewiseAffineSystem` (same event core, generic box-LCP)."""

    def __init__(
        self,
        system: PiecewiseAffineSystem,
        method: str,
        rtol: float,
        atol: float,
        max_steps: int,
        options: dict | None = None,
    ) -> None:
        self.system = system
        super().__init__(None, method, rtol, atol, max_steps, options)
        self.soft_crossings = False

    @staticmethod
    def _check_model(model) -> None:
        pass

    def _make_switching(self, field):
        return _AffineSwitching(self.system, field, self._y0)


def solve_filippov(
    field_affine,
    switching,
    y0,
    t_grid,
    rtol: float = 1e-10,
    atol: float = 1e-12,
    *,
    method: str = "dopri5",
    switching_jacobian=None,
    max_steps: int = 100_000,
    options: dict | None = None,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Filippov solution of ẏ = f₀(t, y) + F₁(t, y) σ, σ_k = 1[h_k(y) > 0] on ``t_grid`` (plain time).

    Runs the :class:`FilippovDriver` event core (see :class:`PiecewiseAffineSystem` for the classification).
    Example (CASES C9): ``solve_filippov(lambda t, y: (torch.ones(1), -2 * torch.ones(1, 1)), [[1.0]], [1.0],
    [0, 2])`` solves y′ = −sign(y) = 1 − 2·1[y > 0]; y(2) = 0.

    Args:
        field_affine: ``(t, y) -> (f0, F1)``, shapes `(p,)`, `(p, k)`.
        switching: ``y -> h`` `(k,)` or a `(k, p)` matrix (linear surfaces).
        y0: initial state `(p,)`.
        t_grid: increasing save times (the first is the start), shape `(K,)`.
        rtol, atol: tolerances of the smooth segments (dopri5 by default).

    Returns:
        (t `(K,)`, y `(K, p)`, stats): stats has ``nfe`` (calls of ``field_affine``, all of them: RK stages,
        classification, sliding-exit checks), the driver's event counters and ``mode`` (final activation
        state per surface: 0 inactive, 1 active, 2 sliding).
    """
    y0_t = torch.as_tensor(np.asarray(y0, dtype=np.float64)).reshape(-1)
    grid = torch.as_tensor(np.asarray(t_grid, dtype=np.float64))
    system = PiecewiseAffineSystem(field_affine, switching, switching_jacobian)
    field = _CountingAffineField(system)
    drv = _AffineFilippovDriver(system, method, rtol, atol, max_steps, options)
    drv._y0 = y0_t
    out_t, out_y = [], []

    def save(t, y):
        out_t.append(t)
        out_y.append(y.detach().clone())

    out_t.append(float(grid[0]))
    out_y.append(y0_t.clone())
    drv.integrate(field, y0_t, grid, save)
    st = drv.stats()
    st["nfe"] = system.nfe
    st["mode"] = drv.sw.mode.tolist()
    return np.array(out_t), torch.stack(out_y).numpy(), st
