"""Batched Dormand–Prince 5(4) with per-member times, step sizes, accept/reject decisions and statuses.

K independent initial value problems dz_k/dτ = F_k(τ, z_k) on a common save grid, integrated as one
computation: every stage is one batched call ``field(tau (k, 1), z (k, p), rows)`` on the active members. The
tableau, error estimate, step-size rule, initial step and 4th-order dense output are those of torchdiffeq's
``dopri5``; times, step sizes, error norms and accept/reject decisions are **per member**, as in torchode. A
member whose field turns non-finite only has its own steps rejected; when its step underflows it is frozen
with status ``nonfinite`` (or ``step_underflow``), its partial trajectory kept, while the others go on.
Finished or frozen members drop out of the batch. ``step="shared"`` gives every active member the smallest
proposed step instead (one step size for the batch, as torchdiffeq on the stacked state).

References:
    Dormand & Prince, "A family of embedded Runge–Kutta formulae", J. Comput. Appl. Math. 1980.
    Lienen & Günnemann, "torchode: A Parallel ODE Solver for PyTorch", NeurIPS 2022 workshop,
    arXiv:2210.12375 (per-instance step sizes and statuses).
    Hairer, Nørsett & Wanner, "Solving Ordinary Differential Equations I", Sec. II.4 (initial step).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..results import Status

__all__ = ["BatchedDopri5", "STEP_MODES"]

STEP_MODES = ("per_member", "shared")

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


class BatchedDopri5:
    """Per-member adaptive Dormand–Prince over a common save grid; fills ``saved`` `(K, G, p)`."""

    def __init__(self, field, rtol, atol, max_steps, step: str, first_step: float | None):
        self.field = field
        self.rtol, self.atol = float(rtol), float(atol)
        self.max_steps = int(max_steps)
        self.step = step
        self.first_step = first_step
        self.monitor = None  # a BatchedSeparationMonitor: (τ, z, members) -> [(member, message)] to stop

    def _initial_step(self, t0: Tensor, y0: Tensor, f0: Tensor, cap: float) -> Tensor:
        """Per-member initial step, as the single-run drivers take it (Hairer's, trial step capped at ``cap``)."""
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
        """One attempted step of every active member: stages, error control, saves, advance, statuses."""
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
        ks, y1 = self._stages(t0, y0, f0, h, hc, t1, rows)
        accept, nonfinite_rows, h_new = self._error_control(ks, y0, y1, h, hc)

        # bookkeeping on CPU (K is small): which members accepted, crossed save times, finished
        idx = torch.arange(self.y.shape[0]) if rows_cpu is None else rows_cpu
        accept_c, nonfinite_c = accept.cpu(), nonfinite_rows.cpu()
        self.nfe[idx] += 6
        self.n_accepted[idx[accept_c]] += 1
        self.n_rejected[idx[~accept_c]] += 1
        self.n_nonfinite[idx[nonfinite_c]] += 1

        self._save_crossed(grid, saved, rows, accept, t0, t1, h, hc, y0, y1, ks)
        underflow = (~(t0 + h_new > t0) | ~(t1 > t0)).cpu()  # before t0 (a view when all are active) moves
        members_all = self._advance(rows, accept, t1, y1, ks[-1], h, h_new, idx, accept_c)
        self._update_statuses(members_all, idx, underflow, t_end, active)
        if self.monitor is not None and bool(accept_c.any()):
            self._check_separation(idx[accept_c], active)

    def _stages(self, t0: Tensor, y0: Tensor, f0: Tensor, h: Tensor, hc: Tensor, t1: Tensor, rows: Tensor | None):
        """The six new stage derivatives (FSAL: the last one is the field at the 5th-order solution ``y1``)."""
        ks = [f0]
        for c, a in zip(_C, _A, strict=True):
            yi = y0 + hc * _combine(a, ks)
            ti = t0 + c * h if c != 1.0 else t1
            ks.append(self.field(ti.unsqueeze(-1), yi, rows))
        return ks, yi

    def _error_control(self, ks: list[Tensor], y0: Tensor, y1: Tensor, h: Tensor, hc: Tensor):
        """Per-member accept decision, rows with a non-finite stage, and the next step size."""
        f1 = ks[-1]
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
        return accept, nonfinite_rows, h * factor

    def _save_crossed(self, grid, saved, rows, accept, t0, t1, h, hc, y0, y1, ks) -> None:
        """Save points in (t0, t1] of accepted members from the 4th-order dense output (torchdiffeq's)."""
        n_cross = torch.searchsorted(grid, t1, right=True) - (self.next_save if rows is None else self.next_save[rows])
        n_cross = torch.where(accept, n_cross, torch.zeros_like(n_cross))
        if not bool((n_cross > 0).any()):
            return
        f0, f1 = ks[0], ks[-1]
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

    def _advance(self, rows, accept, t1, y1, f1, h, h_new, idx, accept_c) -> Tensor:
        """Move accepted members to ``t1``, give every attempted member its new step size; returns their indices."""
        acc_rows = accept.nonzero().squeeze(-1)
        members_acc = acc_rows if rows is None else rows[acc_rows]
        self.t[members_acc] = t1[acc_rows]
        self.y[members_acc] = y1[acc_rows]
        self.f[members_acc] = f1[acc_rows]
        members_all = torch.arange(self.y.shape[0], device=self.y.device) if rows is None else rows
        self.dt[members_all] = h_new
        self.last_dt[idx[accept_c]] = h[accept].cpu()
        return members_all

    def _check_separation(self, accepted: Tensor, active: Tensor) -> None:
        """Stop (status ``not_separable``) the still-running members that just accepted a step past the
        separation horizon with data not separated (:class:`~flowsim.guards.BatchedSeparationMonitor`)."""
        running = accepted[active[accepted]]
        if running.numel() == 0:
            return
        rows = running.to(self.y.device)
        for k, message in self.monitor(self.t[rows], self.y[rows], rows):
            self._freeze(k, Status.NOT_SEPARABLE, f"{Status.NOT_SEPARABLE.hint} ({message})", active)

    def _update_statuses(self, members_all, idx, underflow, t_end, active) -> None:
        """Freeze members that finished, whose step underflowed (non-finite field or not) or out of steps."""
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
