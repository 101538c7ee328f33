"""Ensembles: K mirror flows of one experiment family integrated as one batched computation.

Members share the model architecture, the data, the loss, the save grid and the solver tolerances; they
differ in initialization (seed, scale, explicit θ₀) and potential (a class with per-member parameters such as
β or p, or different classes). The dual states are stacked into one `(K, p)` tensor and every right-hand
side is one batched evaluation: the model's batched forward and its vector–Jacobian product
(:meth:`~flowsim.models.AbstractModel.forward_and_vjp`), and the inverse mirror maps with per-member
parameters broadcast as `(K, 1)` tensors (closed forms for Euclidean, hyperbolic entropy and p-power;
other potentials are evaluated group by group).

The integrator is a batched Dormand–Prince 5(4) (the tableau, error estimate, step-size rule, initial step
and 4th-order dense output of torchdiffeq's ``dopri5``) with **per-member** times, step sizes, error
norms, accept/reject decisions and statuses, as torchode does. A member whose field turns non-finite only
has its own steps rejected; when its step underflows it is frozen with status ``nonfinite`` (or
``step_underflow``) and its partial trajectory is kept, while the others go on. Finished or frozen members
drop out of the batch. ``step="shared"`` gives every active member the smallest proposed step instead
(one step size for the batch, as torchdiffeq on the stacked state); see ``benchmarks/ensembles.py`` for
the comparison.

ReLU kinks (``kinks``, same meaning as :func:`flowsim.simulate`): with ``"naive"`` the batched integrator
steps straight through the switching surfaces. Members that need Filippov handling (``"filippov"``, or
``"auto"`` on a model with kinks that :func:`flowsim.kinks.supports`) are **not batched**: each is run on
its own by ``flowsim.simulate(..., kinks="filippov")``, one after the other, and returned in member order
with the same :class:`Trajectory` fields and statuses (plus the driver's event statistics). The
event-driven Filippov driver cannot share steps across members: every member has its own switching events
(crossings, sliding entries and exits), at which its integration stops, switches the activation pattern and
restarts, so a common step sequence does not exist. Members share the model, so in practice a whole
ensemble takes one path or the other: batched for smooth models (and for ``"naive"``), sequential under
Filippov handling for two-layer ReLU / leaky-ReLU models with ``"auto"`` or ``"filippov"``.

References:
    Dormand & Prince, "A family of embedded Runge–Kutta formulae", J. Comput. Appl. Math. 1980.
    Lienen & Günnemann, "torchode: A Parallel ODE Solver for PyTorch", NeurIPS 2022 workshop,
    arXiv:2210.12375 (per-instance step sizes and statuses).
    Hairer, Nørsett & Wanner, "Solving Ordinary Differential Equations I", Sec. II.4 (initial step).
"""

from __future__ import annotations

import itertools
import time as _time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .analysis.diagnostics import compute_diagnostics
from .data import Dataset
from .device import resolve_device, resolve_threads
from .errors import InvalidParameterError
from .flow import TIME_MODES
from .losses import AbstractLoss, get_loss
from .models import AbstractModel
from .potentials import AbstractPotential, Euclidean, HyperbolicEntropy, PPower
from .problem import as_dataset, as_potential, num_threads
from .results.trajectory import Status, Trajectory, environment_metadata
from .simulation import KINKS_MODES, _filippov_available, _time_grid
from .timegrid import log_t_from_s, t_from_s

__all__ = ["Member", "members_grid", "simulate_ensemble", "resolve_kinks", "BatchedMirrorFlowField", "STEP_MODES"]

STEP_MODES = ("per_member", "shared")


@dataclass(frozen=True)
class Member:
    """One member of an ensemble.

    Attributes:
        potential: a potential object, a name or a dict ``{"name": ..., **params}``.
        init_scale: initialization scale for ``model.init`` (ignored with ``theta0``).
        seed: initialization seed (ignored with ``theta0``).
        theta0: explicit initial parameters, shape `(p,)`, or None.
        label: a name for tables and plots (default: built from the fields).
    """

    potential: Any = "euclidean"
    init_scale: float = 1.0
    seed: int = 0
    theta0: Any = None
    label: str | None = None


def members_grid(
    potentials: Sequence[Any] = ("euclidean",),
    init_scales: Sequence[float] = (1.0,),
    seeds: Sequence[int] = (0,),
) -> list[Member]:
    """The Cartesian product potentials × init_scales × seeds as a list of :class:`Member` (potential slowest).

    Example:
        >>> [m.seed for m in members_grid(["euclidean"], [1.0], [0, 1, 2])]
        [0, 1, 2]
    """
    return [
        Member(potential=p, init_scale=float(s), seed=int(k))
        for p, s, k in itertools.product(list(potentials), list(init_scales), list(seeds))
    ]


# ------------------------------------------------------------------------------------------------------------
# batched inverse mirror map with per-member parameters
# ------------------------------------------------------------------------------------------------------------


def _closed_form_inverse(cls: type, params: Tensor | None, z: Tensor) -> Tensor:
    """∇Φ*(z) of a closed-form potential class with per-row parameters `params` of shape `(K, 1)`."""
    if cls is Euclidean:
        return z
    if cls is HyperbolicEntropy:
        return params * torch.sinh(z)  # β sinh z
    if cls is PPower:
        return torch.sign(z) * z.abs().pow(params)  # sign(z)|z|^{1/(p−1)}
    raise AssertionError(cls)


def _closed_form_param(potential: AbstractPotential) -> float:
    if isinstance(potential, HyperbolicEntropy):
        return potential.beta
    if isinstance(potential, PPower):
        return 1.0 / (potential.p - 1.0)
    return 0.0


_CLOSED_FORM = (Euclidean, HyperbolicEntropy, PPower)


class _StackedInverseMap:
    """θ = ∇Φ*_k(z_k) row by row for K members with their own potentials, in as few torch calls as possible.

    Members are grouped: one group per closed-form class (parameters as a `(K_g, 1)` tensor) and one per
    distinct other potential (its own ``inverse_mirror_map`` on its rows). One group: no scatter at all.
    """

    def __init__(self, potentials: Sequence[AbstractPotential], dtype: torch.dtype, device: torch.device):
        keys, self._members = [], []
        for pot in potentials:
            key = type(pot) if type(pot) in _CLOSED_FORM else (type(pot), repr(pot))
            if key not in keys:
                keys.append(key)
                self._members.append(pot)
        self._keys = keys
        self.group = torch.tensor([keys.index(self._key(p)) for p in potentials], device=device)
        self.params = torch.tensor([_closed_form_param(p) for p in potentials], dtype=dtype, device=device).unsqueeze(
            -1
        )
        self._cache: dict[tuple[int, ...] | None, list[tuple[int, Tensor | None, Tensor | None]]] = {}

    @staticmethod
    def _key(pot: AbstractPotential):
        return type(pot) if type(pot) in _CLOSED_FORM else (type(pot), repr(pot))

    def _plan(self, rows: Tensor | None):
        key = None if rows is None else tuple(rows.tolist())
        plan = self._cache.get(key)
        if plan is None:
            group = self.group if rows is None else self.group[rows]
            params = self.params if rows is None else self.params[rows]
            plan = []
            for g in range(len(self._keys)):
                pos = (group == g).nonzero().squeeze(-1)
                if pos.numel() == 0:
                    continue
                whole = pos.numel() == group.numel()
                plan.append((g, None if whole else pos, params if whole else params[pos]))
            if len(self._cache) > 256:
                self._cache.clear()
            self._cache[key] = plan
        return plan

    def __call__(self, z: Tensor, rows: Tensor | None = None) -> Tensor:
        plan = self._plan(rows)
        out = None if len(plan) == 1 else torch.empty_like(z)
        for g, pos, params in plan:
            key, pot = self._keys[g], self._members[g]
            zg = z if pos is None else z.index_select(0, pos)
            theta = _closed_form_inverse(key, params, zg) if key in _CLOSED_FORM else pot.inverse_mirror_map(zg)
            if out is None:
                return theta
            out.index_copy_(0, pos, theta)
        return out


class BatchedMirrorFlowField:
    """Mirror-flow right-hand side for K members at once: ``field(tau, z, rows)`` with z of shape `(k, p)`.

    ``rows`` (int64, `(k,)`) says which members the rows of ``z`` are (None: all K, in order); ``tau`` is the
    integration time per row, shape `(k, 1)` (log-time s for ``time="log"``). The members' fields are
    independent: row r of the output depends on row r of ``z`` only.

    Args:
        model: the model (batched forward and ``forward_and_vjp``).
        potentials: one potential per member.
        loss: the margin loss.
        X: inputs `(n, d)`; y: labels ±1 `(n,)`; float64, on the run's device.
        time: "log" or "linear".
    """

    def __init__(
        self,
        model: AbstractModel,
        potentials: Sequence[AbstractPotential],
        loss: AbstractLoss,
        X: Tensor,
        y: Tensor,
        *,
        time: str = "log",
    ) -> None:
        self.model = model
        self.potentials = list(potentials)
        self.loss = loss
        self.X = X
        self.y = y
        self.log_time = time == "log"
        self.inverse_mirror_map = _StackedInverseMap(self.potentials, X.dtype, X.device)
        self.nfe = 0

    def __call__(self, tau: Tensor, z: Tensor, rows: Tensor | None = None) -> Tensor:
        self.nfe += 1
        theta = self.inverse_mirror_map(z, rows)
        f, vjp = self.model.forward_and_vjp(theta, self.X)
        log_c = self.loss.log_neg_derivative(self.y * f)
        if self.log_time:
            log_c = log_c + tau
        return vjp(torch.exp(log_c) * self.y)


# ------------------------------------------------------------------------------------------------------------
# batched Dormand–Prince 5(4) with per-member step sizes
# ------------------------------------------------------------------------------------------------------------

_A = (
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_C = (1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_E = (
    35 / 384 - 1951 / 21600,
    0.0,
    500 / 1113 - 22642 / 50085,
    125 / 192 - 451 / 720,
    -2187 / 6784 - -12231 / 42400,
    11 / 84 - 649 / 6300,
    -1.0 / 60.0,
)
_MID = (
    6025192743 / 30085553152 / 2,
    0.0,
    51252292925 / 65400821598 / 2,
    -2691868925 / 45128329728 / 2,
    187940372067 / 1594534317056 / 2,
    -1776094331 / 19743644256 / 2,
    11237099 / 235043384 / 2,
)
_SAFETY, _IFACTOR, _DFACTOR, _ORDER = 0.9, 10.0, 0.2, 5


def _combine(coeffs: Sequence[float], ks: Sequence[Tensor]) -> Tensor:
    """Σ_j coeffs_j k_j (zero coefficients skipped)."""
    out = None
    for a, k in zip(coeffs, ks, strict=False):
        if a == 0.0:
            continue
        out = k * a if out is None else out.add(k, alpha=a)
    assert out is not None
    return out


def _rms_rows(x: Tensor) -> Tensor:
    """Per-row RMS norm, +inf (never NaN) for rows with non-finite entries."""
    v = x.square().mean(dim=-1).sqrt()
    return torch.where(torch.isfinite(v), v, torch.full_like(v, float("inf")))


class _BatchedDopri5:
    """Per-member adaptive Dormand–Prince over a common save grid; fills ``saved`` `(K, G, p)`."""

    def __init__(self, field, rtol, atol, max_steps, step: str, first_step: float | None):
        self.field = field
        self.rtol, self.atol = float(rtol), float(atol)
        self.max_steps = int(max_steps)
        self.step = step
        self.first_step = first_step

    def _initial_step(self, t0: Tensor, y0: Tensor, f0: Tensor, cap: float) -> Tensor:
        """Per-member :func:`flowsim.integrate.initial_step` (Hairer's, trial step capped at ``cap``)."""
        scale = self.atol + y0.abs() * self.rtol
        d0, d1 = _rms_rows(y0 / scale), _rms_rows(f0 / scale)
        small = (d0 < 1e-5) | (d1 < 1e-5)
        h0 = torch.where(small, torch.full_like(d0, 1e-6), 0.01 * d0 / torch.where(small, 1.0, d1))
        h0 = torch.clamp(h0, max=cap)
        f1 = self.field((t0 + h0).unsqueeze(-1), y0 + h0.unsqueeze(-1) * f0, None)
        d2 = _rms_rows((f1 - f0) / scale) / h0
        dmax = torch.maximum(d1, d2)
        h1 = torch.where(
            dmax <= 1e-15,
            torch.clamp(h0 * 1e-3, min=1e-6 * h0),
            (0.01 / torch.where(dmax > 0, dmax, 1.0)) ** (1.0 / (_ORDER + 1)),
        )
        h = torch.minimum(100 * h0, torch.clamp(h1, max=cap))
        return torch.where(torch.isfinite(d2), h, h0 * 1e-3)

    def start(self, z0: Tensor, grid: Tensor) -> None:
        """Set up the per-member state (before :meth:`run`, so that an interrupted run can be read)."""
        K = z0.shape[0]
        dev = z0.device
        self.t = torch.full((K,), float(grid[0]), dtype=torch.float64, device=dev)
        self.y = z0.clone()
        self.next_save = torch.ones(K, dtype=torch.long, device=dev)  # grid[0] is saved by the caller
        self.status: list[Status | None] = [None] * K
        self.messages: list[str] = [""] * K
        self.n_accepted = torch.zeros(K, dtype=torch.long)
        self.n_rejected = torch.zeros(K, dtype=torch.long)
        self.n_nonfinite = torch.zeros(K, dtype=torch.long)
        self.nfe = torch.zeros(K, dtype=torch.long)
        self.last_dt = torch.full((K,), float("nan"), dtype=torch.float64)
        self.batch_steps = 0
        self.f = z0
        self.dt = torch.zeros(K, dtype=torch.float64, device=dev)

    def run(self, z0: Tensor, grid: Tensor, saved: Tensor) -> None:
        """Integrate every member to ``grid[-1]``, writing save points into ``saved`` `(K, G, p)`."""
        K, dev, t_end = z0.shape[0], z0.device, grid[-1]
        active = torch.ones(K, dtype=torch.bool)
        self.f = self.field(self.t.unsqueeze(-1), self.y, None)
        self.nfe += 1
        if self.first_step is not None:
            self.dt = torch.full((K,), float(self.first_step), dtype=torch.float64, device=dev)
        else:
            cap = 1.0 if self.field.log_time else float(grid[1] - grid[0])
            self.dt = self._initial_step(self.t, self.y, self.f, cap)
            self.nfe += 1
        self.dt = torch.minimum(self.dt, t_end - self.t)
        while bool(active.any()):
            self._step(active, grid, t_end, saved)
            self.batch_steps += 1

    def _freeze(self, k: int, status: Status, message: str, active: Tensor) -> None:
        self.status[k] = status
        self.messages[k] = message
        active[k] = False

    def _step(self, active: Tensor, grid: Tensor, t_end: Tensor, saved: Tensor) -> None:
        all_active = bool(active.all())
        rows_cpu = None if all_active else active.nonzero().squeeze(-1)
        rows = None if rows_cpu is None else rows_cpu.to(self.y.device)
        if rows is None:
            t0, y0, f0, h = self.t, self.y, self.f, self.dt
        else:
            t0, y0, f0, h = self.t[rows], self.y[rows], self.f[rows], self.dt[rows]
        if self.step == "shared":
            h = h.min().expand_as(h)
        remaining = t_end - t0
        last = h >= remaining  # land exactly on the end (t0 + (t_end − t0) may round below t_end)
        h = torch.where(last, remaining, h)
        hc = h.unsqueeze(-1)
        t1 = torch.where(last, t_end, t0 + h)
        ks = [f0]
        for c, a in zip(_C, _A, strict=True):
            yi = y0 + hc * _combine(a, ks)
            ti = t0 + c * h if c != 1.0 else t1
            ks.append(self.field(ti.unsqueeze(-1), yi, rows))
        y1, f1 = yi, ks[-1]
        err = hc * _combine(_E, ks)
        tol = self.atol + self.rtol * torch.maximum(y0.abs(), y1.abs())
        ratio = _rms_rows(err / tol)
        nonfinite_rows = ~torch.isfinite(f1).all(dim=-1)
        for k_ in ks[1:-1]:
            nonfinite_rows |= ~torch.isfinite(k_).all(dim=-1)
        accept = ratio <= 1.0
        # torchdiffeq's rule: factor = clamp(safety·ratio^(−1/5), dfactor (1 if accepted), ifactor)
        lower = torch.where(accept, torch.ones_like(ratio), torch.full_like(ratio, _DFACTOR))
        factor = torch.where(
            ratio == 0,
            torch.full_like(ratio, _IFACTOR),
            torch.clamp(torch.maximum(_SAFETY * ratio.pow(-1.0 / _ORDER), lower), max=_IFACTOR),
        )
        h_new = h * factor

        # bookkeeping on CPU (K is small): which members accepted, crossed save times, finished
        idx = torch.arange(self.y.shape[0]) if rows_cpu is None else rows_cpu
        accept_c, nonfinite_c = accept.cpu(), nonfinite_rows.cpu()
        self.nfe[idx] += 6
        self.n_accepted[idx[accept_c]] += 1
        self.n_rejected[idx[~accept_c]] += 1
        self.n_nonfinite[idx[nonfinite_c]] += 1

        # save points in (t0, t1] of accepted members: 4th-order dense output (torchdiffeq's interpolant)
        n_cross = torch.searchsorted(grid, t1, right=True) - (self.next_save if rows is None else self.next_save[rows])
        n_cross = torch.where(accept, n_cross, torch.zeros_like(n_cross))
        if bool((n_cross > 0).any()):
            pos = (n_cross > 0).nonzero().squeeze(-1)
            y_mid = y0[pos] + hc[pos] * _combine(_MID, [k[pos] for k in ks])
            ya, yb, fa, fb, hp = y0[pos], y1[pos], f0[pos], f1[pos], hc[pos]
            coef_a = 2 * hp * (fb - fa) - 8 * (yb + ya) + 16 * y_mid
            coef_b = hp * (5 * fa - 3 * fb) + 18 * ya + 14 * yb - 32 * y_mid
            coef_c = hp * (fb - 4 * fa) - 11 * ya - 5 * yb + 16 * y_mid
            coef_d = hp * fa
            members = pos if rows is None else rows[pos]
            for j in range(int(n_cross.max())):
                sel = (n_cross[pos] > j).nonzero().squeeze(-1)
                m = members[sel]
                gi = self.next_save[m] + j
                tg = grid[gi]
                x = ((tg - t0[pos][sel]) / h[pos][sel]).unsqueeze(-1)
                val = (((coef_a[sel] * x + coef_b[sel]) * x + coef_c[sel]) * x + coef_d[sel]) * x + ya[sel]
                val = torch.where((tg == t1[pos][sel]).unsqueeze(-1), yb[sel], val)
                saved[m.to(saved.device), gi.to(saved.device)] = val.to(saved.device)
            self.next_save[members] += n_cross[pos]

        underflow = (~(t0 + h_new > t0) | ~(t1 > t0)).cpu()  # before t0 (a view when all are active) moves

        # advance accepted members, new step sizes for all
        acc_rows = accept.nonzero().squeeze(-1)
        members_acc = acc_rows if rows is None else rows[acc_rows]
        self.t[members_acc] = t1[acc_rows]
        self.y[members_acc] = y1[acc_rows]
        self.f[members_acc] = f1[acc_rows]
        members_all = torch.arange(self.y.shape[0], device=self.y.device) if rows is None else rows
        self.dt[members_all] = h_new
        self.last_dt[idx[accept_c]] = h[accept].cpu()

        # statuses: finished, step underflow / non-finite, max steps
        done = (self.t[members_all] >= t_end).cpu()
        for r in done.nonzero().squeeze(-1).tolist():
            self._freeze(int(idx[r]), Status.SUCCESS, Status.SUCCESS.hint, active)
        for r in underflow.nonzero().squeeze(-1).tolist():
            k = int(idx[r])
            if self.status[k] is not None:
                continue
            if int(self.n_nonfinite[k]):
                msg = (
                    f"{Status.NONFINITE.hint} (the step size underflowed after {int(self.n_nonfinite[k])} "
                    f"non-finite field evaluations, at τ = {float(self.t[k]):.6g})"
                )
                self._freeze(k, Status.NONFINITE, msg, active)
            else:
                msg = f"{Status.STEP_UNDERFLOW.hint} (at τ = {float(self.t[k]):.6g})"
                self._freeze(k, Status.STEP_UNDERFLOW, msg, active)
        over = (self.n_accepted >= self.max_steps) & active
        for k in over.nonzero().squeeze(-1).tolist():
            self._freeze(k, Status.MAX_STEPS, f"{Status.MAX_STEPS.hint} ({self.max_steps} accepted steps)", active)


# ------------------------------------------------------------------------------------------------------------
# entry point
# ------------------------------------------------------------------------------------------------------------


def _member_label(member: Member, potential: AbstractPotential) -> str:
    if member.label is not None:
        return member.label
    params = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in potential.params().items())
    init = "theta0" if member.theta0 is not None else f"scale={member.init_scale:g}, seed={member.seed}"
    return f"{potential.name}({params}) {init}" if params else f"{potential.name} {init}"


def resolve_kinks(model: AbstractModel, kinks: str) -> str:
    """The kink handling an ensemble of ``model`` gets: "naive" (batched) or "filippov" (member by member).

    Same rule as :func:`flowsim.simulate`: "auto" is "filippov" for models with kinks that
    :func:`flowsim.kinks.auto_filippov` (two-layer ReLU / leaky ReLU, one-hidden-layer deep ReLU) and "naive"
    otherwise (smooth models, deeper ReLU nets; "filippov" may be asked for them).

    Raises:
        InvalidParameterError: an unknown mode, or "filippov" for a smooth or unsupported model.

    Example:
        >>> from flowsim.models import Linear, TwoLayerReLU
        >>> resolve_kinks(Linear(3), "auto"), resolve_kinks(TwoLayerReLU(3, 4), "auto")
        ('naive', 'filippov')
    """
    if kinks not in KINKS_MODES:
        raise InvalidParameterError(f"kinks must be one of {KINKS_MODES}, got {kinks!r}")
    if kinks == "auto":
        return "filippov" if model.has_kinks and _filippov_available(model, auto=True) else "naive"
    if kinks == "filippov":
        if not model.has_kinks:
            raise InvalidParameterError(
                f"kinks='filippov' needs a model with ReLU kinks; {model!r} is smooth: use kinks='naive'"
            )
        if not _filippov_available(model):
            raise InvalidParameterError(
                f"kinks='filippov' supports two-layer ReLU/leaky-ReLU models and deep ReLU models; "
                f"{type(model).__name__} is not supported: use kinks='naive'"
            )
    return kinks


def _member_config(
    model, pot, loss_fn, dataset, solver: dict, s_grid, member: Member, K: int, i: int, dev, path: str
) -> dict:
    """The trajectory config of member ``i`` (the batched path's; also used for members never started)."""
    return {
        "model": model.config(),
        "potential": {"name": pot.name, **pot.params()},
        "loss": loss_fn.name,
        "data": {"name": dataset.name, "n": dataset.n, "d": dataset.d, **dict(dataset.info)},
        "solver": solver,
        "horizon": {"log_t_end": float(log_t_from_s(s_grid[-1])), "n_save": int(s_grid.size)},
        "init": {"scale": member.init_scale, "seed": member.seed, "theta0_given": member.theta0 is not None},
        "ensemble": {"size": K, "index": i, "label": _member_label(member, pot), "device": str(dev), "path": path},
    }


def simulate_ensemble(
    model: AbstractModel,
    data: Dataset | tuple,
    members: Sequence[Member | dict],
    *,
    loss: str | AbstractLoss = "exponential",
    log_t_end: float | None = 10.0,
    n_save: int = 200,
    log_t_start: float | None = None,
    save_log_t: Any = None,
    time: str = "log",
    method: str = "dopri5",
    rtol: float = 1e-8,
    atol: float = 1e-10,
    max_steps: int = 5_000_000,
    step: str = "per_member",
    solver_options: dict | None = None,
    diagnostics: bool = True,
    active_threshold: float = 1e-2,
    threads: int | str | None = "auto",
    device: str | torch.device | None = "auto",
    kinks: str = "auto",
) -> list[Trajectory]:
    """Integrate the mirror flows of K members, batched where possible; one :class:`Trajectory` each.

    Same conventions as :func:`flowsim.simulate` (log-time, sum loss, horizon in log t, float64); the
    members differ in potential and initialization (:class:`Member`). Each member gets its own status,
    stats and partial trajectory: a member that diverges (non-finite field, step underflow) or runs out of
    steps is frozen and reported while the others finish.

    What is batched: with naive kink handling (smooth models; ``kinks="naive"``; ``"auto"`` on models
    Filippov handling does not support) all members are one computation, a batched dopri5 with per-member
    step sizes. What is not: under Filippov handling (``kinks="filippov"``, or ``"auto"`` on two-layer ReLU /
    leaky-ReLU models) each member is run alone by ``flowsim.simulate(..., kinks="filippov")``, one after
    the other, because the event-driven Filippov driver stops, switches and restarts at every member's own
    switching events and so cannot share steps across members. Those members' results equal per-member
    ``simulate`` calls exactly; the cost is K sequential runs (no batching speed-up).

    Args:
        model: the model shared by all members.
        data: a :class:`~flowsim.data.Dataset` or an ``(X, y)`` pair.
        members: :class:`Member` objects or dicts of their fields (``{"potential": ..., "seed": ...}``).
        loss, log_t_end, n_save, log_t_start, save_log_t, time, rtol, atol, max_steps, diagnostics,
            active_threshold: as in :func:`flowsim.simulate` (``max_steps`` per member).
        method: "dopri5" only (the batched integrator; also the Filippov driver's smooth-segment method).
        step: "per_member" (default: own step size, accept/reject per member) or "shared" (every active
            member takes the smallest proposed step). Batched path only.
        solver_options: ``{"first_step": h}`` (initial step in τ for every member).
        threads: "auto" (one thread for small CPU problems), None or an int. Under Filippov handling it is
            passed to each ``simulate`` call.
        device: "auto" (CUDA when present and n·p·K is large, see :mod:`flowsim.device`; n·p under
            Filippov handling, which runs one member at a time), a device, or None (the data's device).
        kinks: "auto" (default), "filippov" or "naive", as in :func:`flowsim.simulate` (see
            :func:`resolve_kinks`).

    Returns:
        One trajectory per member, in order. Batched path: ``stats`` hold the member's ``nfe`` (batched
        evaluations it took part in), ``n_accepted``, ``n_rejected``, ``n_nonfinite_evals``, ``last_dt`` and
        the batch's ``batch_nfe``, ``batch_steps`` and ``wall_time`` (whole batch). Filippov path: the
        member's own ``simulate`` stats (``nfe``, ``n_crossings``, ``n_sliding_entries``, ``sliding_time``,
        ..., ``wall_time`` of that member's run). Both add ``ensemble_size``, ``ensemble_index`` and
        ``ensemble_path`` ("batched" or "sequential_filippov"); ``config["ensemble"]`` says the same. If a
        Filippov member is interrupted (Ctrl-C), the members after it are not started: they are returned
        with their initial point only and status ``interrupted``.

    Raises:
        InvalidParameterError: empty ``members``, unknown fields, a method other than dopri5, an unknown
            ``kinks`` mode or ``kinks="filippov"`` for a smooth or unsupported model, bad tolerances or step
            mode, a wrong ``theta0`` shape.
        HorizonError, InvalidDataError: as :func:`flowsim.simulate`.
    """
    if kinks not in KINKS_MODES:
        raise InvalidParameterError(f"kinks must be one of {KINKS_MODES}, got {kinks!r}")
    if method != "dopri5":
        raise InvalidParameterError(
            f"ensembles integrate with a batched dopri5 only, got method={method!r}; run stiff methods member "
            "by member with flowsim.simulate"
        )
    if step not in STEP_MODES:
        raise InvalidParameterError(f"step must be one of {STEP_MODES}, got {step!r}")
    if time not in TIME_MODES:
        raise InvalidParameterError(f"time must be one of {TIME_MODES}, got {time!r}")
    for name, tol in (("rtol", rtol), ("atol", atol)):
        if not (np.isfinite(tol) and tol > 0):
            raise InvalidParameterError(f"{name} must be a positive finite number, got {tol}")
    opts = dict(solver_options or {})
    unknown = sorted(set(opts) - {"first_step"})
    if unknown:
        raise InvalidParameterError(f"unknown solver option(s) {unknown} for ensembles; valid: ['first_step']")
    if not isinstance(model, AbstractModel):
        raise InvalidParameterError(f"model must be a flowsim model, got {type(model).__name__}")
    members = [m if isinstance(m, Member) else _member_from_dict(m) for m in members]
    if not members:
        raise InvalidParameterError("an ensemble needs at least one member")
    path_kinks = resolve_kinks(model, kinks)
    K = len(members)
    potentials = [as_potential(m.potential) for m in members]
    loss_fn = get_loss(loss)
    dataset = as_dataset(data)
    if dataset.d != model.input_dim:
        from .errors import InvalidDataError

        raise InvalidDataError(
            f"the data have d = {dataset.d} features but the model expects input_dim = {model.input_dim}"
        )
    s_grid = _time_grid(time, log_t_end, save_log_t, n_save, log_t_start)
    filippov = path_kinks == "filippov"
    work = dataset.n * model.num_params * (1 if filippov else K)
    dev = resolve_device(device, work=work, default=dataset.X.device)
    theta0 = []
    for i, m in enumerate(members):
        if m.theta0 is None:
            th = model.init(scale=m.init_scale, seed=m.seed, dtype=torch.float64, device=dev)
        else:
            th = torch.as_tensor(m.theta0, dtype=torch.float64, device=dev).clone()
        if th.shape != (model.num_params,):
            raise InvalidParameterError(
                f"member {i}: theta0 must have shape ({model.num_params},) for {model!r}, got {tuple(th.shape)}"
            )
        theta0.append(th)
    if filippov:
        return _filippov_members(
            model,
            dataset,
            members,
            potentials,
            theta0,
            loss_fn,
            s_grid,
            dev,
            threads=threads,
            diagnostics=diagnostics,
            active_threshold=active_threshold,
            simulate_kwargs=dict(
                log_t_end=log_t_end,
                n_save=n_save,
                log_t_start=log_t_start,
                save_log_t=save_log_t,
                time=time,
                method=method,
                rtol=rtol,
                atol=atol,
                max_steps=max_steps,
                solver_options=opts,
            ),
        )
    n_threads = resolve_threads(threads, work=work, device=dev)
    X = dataset.X.to(device=dev, dtype=torch.float64)
    y = dataset.y.to(device=dev, dtype=torch.float64)
    z0 = torch.stack([pot.mirror_map(th) for pot, th in zip(potentials, theta0, strict=True)])
    tau_np = s_grid if time == "log" else t_from_s(s_grid)
    grid = torch.as_tensor(tau_np, dtype=torch.float64, device=dev)
    G = grid.shape[0]

    field = BatchedMirrorFlowField(model, potentials, loss_fn, X, y, time=time)
    saved = torch.full((K, G, model.num_params), float("nan"), dtype=torch.float64, device=dev)
    saved[:, 0] = z0
    stepper = _BatchedDopri5(field, rtol, atol, max_steps, step, opts.get("first_step"))
    stepper.start(z0, grid)
    interrupted = False
    start = _time.perf_counter()
    solver = {
        "kinks": "naive",
        "method": "dopri5",
        "rtol": rtol,
        "atol": atol,
        "max_steps": int(max_steps),
        "time": time,
        "options": opts,
        "ensemble_step": step,
    }
    with num_threads(n_threads), torch.no_grad():
        try:
            stepper.run(z0, grid, saved)
        except KeyboardInterrupt:
            interrupted = True
        wall = _time.perf_counter() - start
        trajectories = []
        for i, (m, pot) in enumerate(zip(members, potentials, strict=True)):
            status, message = stepper.status[i], stepper.messages[i]
            if status is None:
                status = Status.INTERRUPTED if interrupted else Status.FAILED
                message = status.hint
            n_saved = int(stepper.next_save[i])
            tau_i = tau_np[:n_saved]
            z_i = saved[i, :n_saved]
            if status != Status.SUCCESS:  # keep the last accepted state
                t_last, y_last = float(stepper.t[i]), stepper.y[i]
                if t_last > tau_i[-1] and bool(torch.isfinite(y_last).all()):
                    tau_i = np.append(tau_i, t_last)
                    z_i = torch.cat([z_i, y_last.unsqueeze(0)])
            s_i = np.asarray(tau_i, dtype=np.float64) if time == "log" else np.log1p(tau_i)
            theta_i = pot.inverse_mirror_map(z_i)
            diags = (
                compute_diagnostics(model, pot, loss_fn, X, y, theta_i, s_i, active_threshold=active_threshold)
                if diagnostics
                else {}
            )
            stats = {
                "nfe": int(stepper.nfe[i]),
                "n_accepted": int(stepper.n_accepted[i]),
                "n_rejected": int(stepper.n_rejected[i]),
                "last_dt": float(stepper.last_dt[i]),
                "n_nonfinite_evals": int(stepper.n_nonfinite[i]),
                "batch_nfe": field.nfe,
                "batch_steps": stepper.batch_steps,
                "ensemble_size": K,
                "ensemble_index": i,
                "ensemble_path": "batched",
                "wall_time": wall,
                "final_log_t": float(log_t_from_s(s_i[-1])),
            }
            config = _member_config(model, pot, loss_fn, dataset, solver, s_grid, m, K, i, dev, "batched")
            trajectories.append(
                Trajectory(
                    s=s_i,
                    theta=theta_i.cpu().numpy(),
                    z=z_i.cpu().numpy(),
                    diagnostics=diags,
                    stats=stats,
                    status=status,
                    message=message,
                    config=config,
                    metadata=environment_metadata(),
                )
            )
    return trajectories


def _filippov_members(
    model: AbstractModel,
    dataset: Dataset,
    members: list[Member],
    potentials: list[AbstractPotential],
    theta0: list[Tensor],
    loss_fn: AbstractLoss,
    s_grid: np.ndarray,
    dev: torch.device,
    *,
    threads,
    diagnostics: bool,
    active_threshold: float,
    simulate_kwargs: dict,
) -> list[Trajectory]:
    """Members under Filippov handling: one ``simulate(..., kinks="filippov")`` each, in member order.

    Not batched: the event-driven driver (:class:`flowsim.kinks.FilippovDriver`) restarts at each member's
    own switching events. After an interrupted member the rest are returned unstarted (initial point only).
    """
    from .simulation import simulate

    K = len(members)
    path = "sequential_filippov"
    kw = simulate_kwargs
    solver = {
        "kinks": "filippov",
        "method": kw["method"],
        "rtol": kw["rtol"],
        "atol": kw["atol"],
        "max_steps": int(kw["max_steps"]),
        "time": kw["time"],
        "options": dict(kw["solver_options"]),
    }
    trajectories: list[Trajectory] = []
    interrupted = False
    for i, (m, pot, th0) in enumerate(zip(members, potentials, theta0, strict=True)):
        if interrupted:
            config = _member_config(model, pot, loss_fn, dataset, solver, s_grid, m, K, i, dev, path)
            trajectories.append(
                _unstarted(model, dataset, pot, th0, loss_fn, s_grid, config, diagnostics, active_threshold)
            )
            continue
        tr = simulate(
            model,
            dataset,
            pot,
            loss=loss_fn,
            theta0=m.theta0,
            init_scale=m.init_scale,
            seed=m.seed,
            diagnostics=diagnostics,
            active_threshold=active_threshold,
            threads=threads,
            device=dev,
            kinks="filippov",
            **simulate_kwargs,
        )
        tr.stats.update({"ensemble_size": K, "ensemble_index": i, "ensemble_path": path})
        tr.config["ensemble"] = {
            "size": K,
            "index": i,
            "label": _member_label(m, pot),
            "device": str(dev),
            "path": path,
        }
        trajectories.append(tr)
        interrupted = tr.status == Status.INTERRUPTED
    return trajectories


def _unstarted(model, dataset, pot, theta0, loss_fn, s_grid, config: dict, diagnostics, active_threshold):
    """The trajectory of a member never run (an earlier member was interrupted): its initial point only."""
    X = dataset.X.to(device=theta0.device, dtype=torch.float64)
    y = dataset.y.to(device=theta0.device, dtype=torch.float64)
    theta = theta0.unsqueeze(0)
    s = np.asarray(s_grid[:1], dtype=np.float64)
    diags = (
        compute_diagnostics(model, pot, loss_fn, X, y, theta, s, active_threshold=active_threshold)
        if diagnostics
        else {}
    )
    ens = config["ensemble"]
    return Trajectory(
        s=s,
        theta=theta.cpu().numpy(),
        z=pot.mirror_map(theta).cpu().numpy(),
        diagnostics=diags,
        stats={
            "nfe": 0,
            "ensemble_size": ens["size"],
            "ensemble_index": ens["index"],
            "ensemble_path": ens["path"],
            "wall_time": 0.0,
            "final_log_t": float(log_t_from_s(s[-1])),
        },
        status=Status.INTERRUPTED,
        message=f"{Status.INTERRUPTED.hint} (an earlier member was interrupted; this one was not started)",
        config=config,
        metadata=environment_metadata(),
    )


def _member_from_dict(spec: dict) -> Member:
    fields = {"potential", "init_scale", "seed", "theta0", "label"}
    unknown = sorted(set(spec) - fields)
    if unknown:
        raise InvalidParameterError(f"unknown member field(s) {unknown}; valid fields are {sorted(fields)}")
    return Member(**spec)
