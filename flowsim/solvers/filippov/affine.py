"""Generic piecewise-affine Filippov systems ẏ = f₀ + F₁σ on the same event core, with a small box-LCP."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .dense import _horner
from .driver import FilippovDriver
from .lcp import _box_lcp
from .state import ACTIVE, INACTIVE, SLIDING, AbstractSwitchingSystem


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
    with a box-LCP, exits where α leaves [0, 1], side checks — runs on hand-checkable cases.
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


class _AffineSwitching(AbstractSwitchingSystem):
    """Switching-system adapter of a :class:`PiecewiseAffineSystem` for the :class:`FilippovDriver` event core."""

    def __init__(self, system: PiecewiseAffineSystem, field: _CountingAffineField, y0: Tensor) -> None:
        self.sys = system
        self.field = field
        self.k = int(system.h(y0).numel())
        self._init_state((self.k,), torch.float64, y0.device)

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

    def surfaces_at(self, coeff: Tensor, x: Tensor, idx: Tensor) -> Tensor:
        return torch.stack([self.sys.h(_horner(coeff, float(xk)))[int(k)] for xk, k in zip(x, idx, strict=True)])

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
            self._assign(new, alpha0, (torch.tensor(C, dtype=torch.long, device=new.device),), al)
        return self._commit(old, new, alpha0, counts)


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

    def _make_switching(self, field, z0: Tensor) -> _AffineSwitching:
        return _AffineSwitching(self.system, field, z0)


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
    Example: ``solve_filippov(lambda t, y: (torch.ones(1), -2 * torch.ones(1, 1)), [[1.0]], [1.0],
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
