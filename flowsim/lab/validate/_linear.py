"""Implicit bias of linear models, C6 and C10–C13: the diagonal network, the ℓ2 SVM, ℓp and ℓ1 max margins,
potentials sharing a horizon."""

from __future__ import annotations

import math

import numpy as np

from ...analysis.references import max_margin_l1, max_margin_lp, svm_l2
from ...errors import ReferenceSolverError
from ...models import DiagonalLinear, Linear
from ...potentials import Euclidean, HyperbolicEntropy, PPower, PPowerPlusQuadratic, SmoothedHomogeneous
from ._common import _cos, _first_crossing, _lp_margin, _random_separable, _sim
from ._framework import _Ctx, register_check


@register_check(
    "C6",
    "Diagonal network u⊙v (u₀ = α, v₀ = 0) = hyperbolic entropy β = α²/2 at time 2t",
    "Woodworth et al., COLT 2020",
)
def check_c6(ctx: _Ctx) -> None:
    """C6: gradient flow on θ = u⊙v equals hyperbolic-entropy mirror flow on w with ∇Φ(w) = ½asinh(2w/α²),
    trajectory for trajectory. Reference: the second simulation (different model and potential)."""
    data = _random_separable(n=10, d=4, seed=2)
    d = 4
    worst = 0.0
    for alpha in (0.3, 1.0) if ctx.full else (0.3,):
        log_ts = np.linspace(-2.0, 12.0 if ctx.full else 8.0, 21)
        theta0 = np.concatenate([alpha * np.ones(d), np.zeros(d)])
        diag = _sim(
            DiagonalLinear(d, depth=2), data, Euclidean(), theta0=theta0, save_log_t=log_ts, rtol=1e-12, atol=1e-14
        )
        he = _sim(
            Linear(d),
            data,
            HyperbolicEntropy(alpha**2 / 2),
            theta0=np.zeros(d),
            save_log_t=log_ts + math.log(2.0),
            rtol=1e-12,
            atol=1e-14,
        )
        w_diag = diag.theta[:, :d] * diag.theta[:, d:]
        err = np.abs(w_diag - he.theta).max(axis=1) / np.maximum(np.abs(he.theta).max(axis=1), 1e-300)
        worst = max(worst, float(err[1:].max()))
    ctx.upper("max rel. difference u⊙v vs w_HE", worst, 1e-8, "hyperbolic-entropy flow")


@register_check(
    "C10",
    "Gradient flow → ℓ2 SVM: direction, t·L → Σα, offsets ⟨z_n, w − ŵ log t⟩ → −log α_n",
    "Soudry et al., JMLR 2018",
)
def check_c10(ctx: _Ctx) -> None:
    """C10: linear model, Euclidean potential, asymmetric random data. Reference: :func:`svm_l2` (NNLS/LDP)."""
    data = _random_separable(n=8, d=3, seed=4)
    Z = data.Z.numpy()
    svm = svm_l2(Z)
    end = 200.0 if ctx.full else 80.0
    log_ts = np.linspace(1.0, end, 40)
    tr = _sim(Linear(3), data, Euclidean(), theta0=np.zeros(3), save_log_t=log_ts, rtol=1e-12, atol=1e-14)
    cos = np.array([_cos(w, svm.w) for w in tr.theta[1:]])
    t_loss = np.exp(tr.diagnostics["log_t_loss"][1:])
    sv = svm.support
    offs = np.array([Z[sv] @ (w - svm.w * lt) for w, lt in zip(tr.theta[1:], log_ts, strict=True)])
    off_err = np.abs(offs + np.log(svm.dual[sv])).max(axis=1)
    ctx.upper(f"max |offset + log α_n| at log t = {end:g}", float(off_err[-1]), 1e-5, "−log α_n (SVM dual)")
    ctx.close(f"t·L at log t = {end:g}", float(t_loss[-1]), float(svm.dual.sum()), rtol=1e-4)
    ctx.upper("1 − cos(w, ŵ) at the end", float(1 - cos[-1]), 1e-3, "ŵ (ℓ2 SVM)")
    ctx.holds(
        "cos(w, ŵ) increasing",
        bool(np.all(np.diff(cos) > 0)),
        "monotone" if np.all(np.diff(cos) > 0) else "not monotone",
        "increasing",
        "increasing",
    )

    def draw(plt):
        fig, ax = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
        ax[0].semilogy(log_ts, 1 - cos, label="1 − cos(w(t), ŵ)")
        ax[0].semilogy(log_ts, np.abs(t_loss - svm.dual.sum()) / svm.dual.sum(), label="|t·L − Σα| / Σα")
        ax[1].semilogy(log_ts, off_err, label="max_n |⟨z_n, w − ŵ log t⟩ + log α_n|")
        for a in ax:
            a.set_xlabel("log t")
            a.grid(alpha=0.3)
            a.legend(fontsize=8)
        fig.suptitle("C10: gradient flow vs ℓ2 SVM (reference: NNLS/LDP)")

    ctx.figure(draw)


@register_check(
    "C11",
    "p-power potential (p = 1.5, 3): direction → ℓp max margin, ratio ↑ like 1 − O(1/log t)",
    "Gunasekar et al., ICML 2018",
)
def check_c11(ctx: _Ctx) -> None:
    """C11: linear model, :class:`PPower`; reference :func:`max_margin_lp` (SLSQP + Newton, KKT-checked)."""
    data = _random_separable(n=10, d=4, seed=5)
    Z = data.Z.numpy()
    log_ts = np.array([2.0, 10.0, 40.0, 160.0] + ([640.0] if ctx.full else []))
    curves = {}
    for p in (1.5, 3.0):
        ref = max_margin_lp(Z, p)
        tr = _sim(Linear(4), data, PPower(p), theta0=np.zeros(4), save_log_t=log_ts, rtol=1e-10, atol=1e-12)
        ratios = np.array([_lp_margin(w, Z, p) / ref.margin for w in tr.theta[1:]])
        curves[p] = ratios
        ctx.lower(f"p = {p:g}: ℓp margin ratio at log t = {log_ts[-1]:g}", float(ratios[-1]), 0.97, 1.0)
        ctx.upper(f"p = {p:g}: ratio − 1 (never above the optimum)", float(ratios.max() - 1.0), 1e-9, 0.0)
        inc = bool(np.all(np.diff(ratios) > 0))
        ctx.holds(f"p = {p:g}: ratio increasing in log t", inc, np.round(ratios, 4).tolist(), "→ 1", "increasing")
        gap_log = (1 - ratios[1:]) * log_ts[1:]
        ctx.upper(
            f"p = {p:g}: (1 − ratio)·log t at the end / at log t = 10",
            float(gap_log[-1] / gap_log[0]),
            1.5,
            "O(1): gap = O(1/log t)",
        )

    def draw(plt):
        fig, ax = plt.subplots(figsize=(6, 3.8), constrained_layout=True)
        for p, r in curves.items():
            ax.semilogy(log_ts, 1 - r, marker="o", label=f"p = {p:g}")
        ax.semilogy(log_ts, 1 / log_ts, "k--", lw=0.8, label="1/log t")
        ax.set_xlabel("log t")
        ax.set_ylabel("1 − ℓp margin / optimum")
        ax.legend()
        ax.grid(alpha=0.3)
        ax.set_title("C11: p-power mirror flow → ℓp max margin")

    ctx.figure(draw)


@register_check(
    "C12",
    "Hyperbolic entropy → ℓ1 max margin, slowly; larger β stays ℓ2-like exponentially long",
    "Pesme, Dragomir & Flammarion, NeurIPS 2024; Woodworth et al., COLT 2020",
)
def check_c12(ctx: _Ctx) -> None:
    """C12 and seed-paper finding (2), exponentially slow regimes.

    Reference: :func:`max_margin_l1` (HiGHS LP; the reference must be certified unique, else error) and
    :func:`svm_l2`. Measured: the ℓ1 margin ratio along the flow for several β; the log-time log t* at which
    it first reaches 0.985 as a function of β (t* = e^{log t*}; exponential slowness means log t* grows with
    β), and the early direction for β = 100 against gradient flow's.
    """
    data = _random_separable(n=10, d=5, seed=6)
    Z = data.Z.numpy()
    ref = max_margin_l1(Z)
    if ref.unique is not True:
        raise ReferenceSolverError(f"the ℓ1 max-margin reference is not certified unique ({ref.message})")
    ref2 = svm_l2(Z)
    l2_ratio = _lp_margin(ref2.w, Z, 1) / ref.margin
    end = 600.0 if ctx.full else 250.0
    log_ts = np.linspace(1.0, end, 120)
    betas = (0.5, 1.0, 2.0, 4.0, 8.0) if ctx.full else (0.5, 1.0, 2.0, 4.0)
    curves, tstar = {}, {}
    for beta in (1e-2, *betas):
        tr = _sim(
            Linear(5), data, HyperbolicEntropy(beta), theta0=np.zeros(5), save_log_t=log_ts, rtol=1e-9, atol=1e-11
        )
        r = np.array([_lp_margin(w, Z, 1) / ref.margin for w in tr.theta[1:]])
        curves[beta] = r
        if beta in betas:
            tstar[beta] = _first_crossing(log_ts, r, 0.985)
    r_small = curves[1e-2]
    ctx.upper(
        "β = 0.01: ℓ1 ratio − 1 (never above the optimum)", float(max(c.max() for c in curves.values()) - 1), 1e-9, 0.0
    )
    ctx.lower(f"β = 0.01: ℓ1 margin ratio at log t = {end:g}", float(r_small[-1]), 0.99, 1.0)
    ctx.holds(
        "β = 0.01: ratio improves (end > log t = 10)",
        bool(r_small[-1] > np.interp(10.0, log_ts, r_small)),
        f"{np.interp(10.0, log_ts, r_small):.4f} → {r_small[-1]:.4f}",
        "→ 1",
        "increasing",
    )
    ts = [tstar[b] for b in betas]
    ctx.holds(
        "log t* (ratio ≥ 0.985) increasing in β",
        bool(np.all(np.diff(ts) > 0) and np.isfinite(ts).all()),
        ", ".join(f"β={b:g}: {t:.1f}" for b, t in zip(betas, ts, strict=True)),
        "t* = e^{c(β)}, c ↑",
        "increasing",
    )
    mid = int(np.searchsorted(log_ts, 100.0))
    at_mid = [curves[b][mid] for b in betas]
    ctx.holds(
        f"ratio at log t = {log_ts[mid]:.0f} decreasing in β",
        bool(np.all(np.diff(at_mid) < 0)),
        ", ".join(f"{v:.4f}" for v in at_mid),
        "larger β later",
        "decreasing",
    )
    lt_early = [2.0, 10.0]
    tr_gf = _sim(Linear(5), data, Euclidean(), theta0=np.zeros(5), save_log_t=lt_early)
    tr_he = _sim(Linear(5), data, HyperbolicEntropy(100.0), theta0=np.zeros(5), save_log_t=lt_early)
    ctx.lower(
        "β = 100: cos(w_HE, w_GF) at log t = 10", _cos(tr_he.theta[-1], tr_gf.theta[-1]), 0.999, "gradient flow (ℓ2)"
    )

    ctx.figure(lambda plt: _draw_c12(plt, log_ts, curves, l2_ratio, betas, ts))


def _draw_c12(plt, log_ts, curves: dict, l2_ratio: float, betas, ts) -> None:
    """C12's figure: ℓ1 margin ratio against log t per β, and log t* against β."""
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.8), constrained_layout=True)
    for b, r in curves.items():
        ax[0].plot(log_ts, r, label=f"β = {b:g}")
    ax[0].axhline(l2_ratio, color="0.5", ls=":", label="ℓ2 SVM direction")
    ax[0].axhline(0.985, color="k", lw=0.6)
    ax[0].set_xlabel("log t")
    ax[0].set_ylabel("ℓ1 margin / ℓ1 max margin (HiGHS)")
    ax[0].legend(fontsize=8)
    ax[0].grid(alpha=0.3)
    ax[1].plot(list(betas), ts, marker="o")
    ax[1].set_xlabel("β")
    ax[1].set_ylabel("log t*  (first ratio ≥ 0.985)")
    ax[1].grid(alpha=0.3)
    fig.suptitle("C12 / finding 2: hyperbolic entropy reaches the ℓ1 geometry exponentially late in β")


@register_check(
    "C13",
    "Distinct potentials with the same ℓ3 horizon reach the same max-margin direction; larger λ later",
    "Pesme, Dragomir & Flammarion, NeurIPS 2024; Jacobs & Montúfar 2026",
)
def check_c13(ctx: _Ctx) -> None:
    """C13 and seed-paper finding (1): PPower(3), SmoothedHomogeneous(3, λ), PPowerPlusQuadratic(3, λ) on a
    linear model converge to the ℓ3 max-margin direction (:func:`max_margin_lp`, p = 3)."""
    data = _random_separable(n=10, d=4, seed=5)
    Z = data.Z.numpy()
    ref = max_margin_lp(Z, 3.0)
    end = 400.0 if ctx.full else 60.0
    log_ts = np.linspace(1.0, end, 60)
    lams = (0.1, 10.0) if not ctx.full else (0.1, 1.0, 10.0)
    pots = (
        [PPower(3.0)]
        + [SmoothedHomogeneous(3.0, lam) for lam in lams]
        + [PPowerPlusQuadratic(3.0, lam) for lam in lams]
    )
    curves, finals = {}, {}
    for pot in pots:
        tr = _sim(Linear(4), data, pot, theta0=np.zeros(4), save_log_t=log_ts, rtol=1e-10, atol=1e-12)
        curves[repr(pot)] = np.array([_lp_margin(w, Z, 3.0) / ref.margin for w in tr.theta[1:]])
        finals[repr(pot)] = tr.theta[-1]
    worst_ratio = min(c[-1] for c in curves.values())
    ctx.lower(f"min ℓ3 margin ratio at log t = {end:g} over {len(pots)} potentials", float(worst_ratio), 0.97, 1.0)
    worst_cos = min(_cos(w, ref.w) for w in finals.values())
    ctx.lower("min cos(w(t), ŵ_ℓ3) at the end", worst_cos, 0.995, "ŵ_ℓ3 (SLSQP)")
    mid = int(np.searchsorted(log_ts, 5.0))
    for fam in ("SmoothedHomogeneous", "PPowerPlusQuadratic"):
        # smallest vs largest λ: neighbouring small λ (0.1 vs 1) are tied to about 2e-4 at this time
        vals = [curves[repr(p)][mid] for p in pots if type(p).__name__ == fam]
        ctx.holds(
            f"{fam}: ratio at log t = {log_ts[mid]:.1f}, λ = {lams[0]:g} vs {lams[-1]:g}",
            bool(vals[0] > vals[-1]),
            f"{vals[0]:.4f} vs {vals[-1]:.4f}",
            "larger λ later",
            "λ_min > λ_max",
        )

    def draw(plt):
        fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
        for k, r in curves.items():
            ax.plot(log_ts, r, label=k)
        ax.set_xlabel("log t")
        ax.set_ylabel("ℓ3 margin / ℓ3 max margin (SLSQP)")
        ax.set_xscale("log")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        ax.set_title("C13 / finding 1: same horizon (ℓ3) ⇒ same limit direction")

    ctx.figure(draw)
