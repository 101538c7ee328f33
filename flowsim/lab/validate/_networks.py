"""Networks and kinks, C7–C9, C14 and C15: conservation laws, discrete balance drift, Filippov sliding, the
Lyu & Li asymptotics of homogeneous networks, sparse versus dense features."""

from __future__ import annotations

import importlib

import numpy as np
import torch

from ...analysis.references import kkt_residual
from ...data import student_teacher_relu
from ...models import DeepLinear, TwoLayerReLU, TwoLayerReLUPower
from ...potentials import Euclidean, HyperbolicEntropy, PPower
from ._common import _random_separable, _require, _sim
from ._framework import CheckError, CheckFailure, _Ctx, register_check


@register_check(
    "C7",
    "Balance B_j = Σ_k Q(w_jk) − Q(a_j) conserved (ReLU, Filippov); Euclidean balance not, under HE",
    "Du, Hu & Lee, NeurIPS 2018; Jacobs & Montúfar 2026",
)
def check_c7(ctx: _Ctx) -> None:
    """C7: two-layer ReLU net under mirror flow with exact kink handling (``kinks="filippov"``).

    Measured: the relative balance drift (``diagnostics["balance_drift"]``); reference 0 (conservation
    law). Negative control: under hyperbolic entropy the Euclidean quantity ‖w_j‖² − a_j² drifts.
    Needs :mod:`flowsim.solvers.filippov`; without it the check is an error.
    """
    data = _random_separable(n=10, d=3, seed=7)
    # smooth part first (ReLU², no kinks): conservation must hold there with any driver
    smooth = _sim(
        TwoLayerReLUPower(3, 5, power=2), data, HyperbolicEntropy(0.5), log_t_end=6.0, n_save=20, rtol=1e-10, atol=1e-12
    )
    ctx.upper(
        "balance drift, ReLU² net, hyperbolic entropy", float(smooth.diagnostics["balance_drift"].max()), 1e-7, 0.0
    )
    _require("flowsim.solvers.filippov")
    worst = 0.0
    he_tr = None
    for pot in (Euclidean(), HyperbolicEntropy(0.5)):
        tr = _sim(
            TwoLayerReLU(3, 5),
            data,
            pot,
            kinks="filippov",
            log_t_end=6.0 if ctx.full else 3.0,
            n_save=20,
            rtol=1e-10,
            atol=1e-12,
        )
        worst = max(worst, float(tr.diagnostics["balance_drift"].max()))
        if isinstance(pot, HyperbolicEntropy):
            he_tr = tr
    ctx.upper("balance drift, ReLU net, Filippov (Euclidean, HE)", worst, 1e-7, 0.0)
    model = TwoLayerReLU(3, 5)
    th = torch.as_tensor(he_tr.theta)
    B = model.neuron_balance(th, lambda x: x.square())
    drift = float(((B - B[:1]).abs().max(dim=1).values / B.abs().max().clamp_min(1e-300)).max())
    ctx.lower("negative control: Euclidean balance drift under HE", drift, 1e-3, "> 0 (not conserved)")


@register_check(
    "C8",
    "Discrete GD on a deep linear net: balance drift = η² Σ (G_{l+1}ᵀG_{l+1} − G_l G_lᵀ)",
    "Du, Hu & Lee, NeurIPS 2018",
)
def check_c8(ctx: _Ctx) -> None:
    """C8: steps of :func:`flowsim.discrete.mirror_descent` (Euclidean, constant η) on DeepLinear(3, [4, 3]).

    Reference: the exact algebraic identity D_l(θ − ηG) − D_l(θ) = η²(G_{l+1}ᵀG_{l+1} − G_l G_lᵀ) with
    D_l = W_{l+1}ᵀW_{l+1} − W_l W_lᵀ and G = ∇L by independent autograd on L = Σ e^{−y_i f(x_i)}.
    """
    discrete = _require("flowsim.discrete")
    data = _random_separable(n=8, d=3, seed=8)
    model = DeepLinear(3, [4, 3])
    theta = model.init(seed=0, scale=0.7, dtype=torch.float64)

    def D(th):
        Ws = list(model.unflatten(th).values())
        return [Ws[l + 1].T @ Ws[l + 1] - Ws[l] @ Ws[l].T for l in range(len(Ws) - 1)]

    def predicted(th, eta):
        thg = th.clone().requires_grad_(True)
        L = torch.exp(-data.y * model.forward(thg, data.X)).sum()
        (g,) = torch.autograd.grad(L, thg)
        Gs = list(model.unflatten(g).values())
        return [eta**2 * (Gs[l + 1].T @ Gs[l + 1] - Gs[l] @ Gs[l].T) for l in range(len(Gs) - 1)]

    worst, drifts = 0.0, {}
    for eta in (0.05, 0.025):
        th = theta.clone()
        for step in range(3):
            tr = discrete.mirror_descent(
                model, data, Euclidean(), step_size=eta, n_steps=1, theta0=th, diagnostics=False
            )
            th_next = torch.as_tensor(tr.theta[-1])
            pred = predicted(th, eta)
            meas = [a - b for a, b in zip(D(th_next), D(th), strict=True)]
            num = sum(float((m - p).square().sum()) for m, p in zip(meas, pred, strict=True)) ** 0.5
            den = sum(float(p.square().sum()) for p in pred) ** 0.5
            worst = max(worst, num / den)
            if step == 0:  # same θ for both η: the drift ratio is exactly 4
                drifts[eta] = sum(float(m.square().sum()) for m in meas) ** 0.5
            th = th_next
    ctx.upper("max rel. error of the per-step balance drift", worst, 1e-7, "η²(G_{l+1}ᵀG_{l+1} − G_lG_lᵀ)")
    ctx.close("first-step drift ratio η = 0.05 vs 0.025 (order η²)", drifts[0.05] / drifts[0.025], 4.0, rtol=1e-8)


@register_check(
    "C9",
    "Filippov: y′ = −sign(y) reaches y(2) = 0 cheaply; y′ = 0.5 − 1[y > 0] slides at 0",
    "Filippov 1988; Stewart 1990",
)
def check_c9(ctx: _Ctx) -> None:
    """C9: :func:`flowsim.solvers.filippov.solve_filippov` (the Filippov driver's event core on a generic system).

    y′ = −sign(y) = 1 − 2σ, σ = 1[y > 0], y(0) = 1: reference y = max(1 − t, 0) (crossing into a sliding
    mode at t = 1), checked at t = 0.5, 1.5, 2. y′ = 0.5 − σ, y(0) = 0: sliding at 0 from t = 0 (α = 0.5),
    reference y ≡ 0. RHS evaluations are the calls of the field, all of them (stages, classification,
    exit checks); tolerances: error ≤ 1e-10 with ≤ 100 evaluations; naive dopri5 needs ~26,000.
    """
    kinks = _require("flowsim.solvers.filippov")
    solver = getattr(kinks, "solve_filippov", None)
    if solver is None:
        raise CheckError("flowsim.solvers.filippov has no generic Filippov entry point (solve_filippov) to run C9")
    one = torch.ones(1, dtype=torch.float64)
    t, y, st = solver(lambda t, y: (one, -2.0 * one.reshape(1, 1)), [[1.0]], [1.0], [0.0, 0.5, 1.5, 2.0])
    ctx.close("y(2) for y′ = −sign(y), y(0) = 1", float(y[-1, 0]), 0.0, atol=1e-10)
    err = float(np.abs(y[:, 0] - np.maximum(1.0 - t, 0.0)).max())
    ctx.upper("max |y − max(1 − t, 0)| at t = 0.5, 1.5, 2", err, 1e-10, 0.0)
    ctx.upper("RHS evaluations", float(st["nfe"]), 100.0, "~26,000 naive")
    t, y, st = solver(lambda t, y: (0.5 * one, -one.reshape(1, 1)), [[1.0]], [0.0], [0.0, 1.0, 2.0])
    ctx.upper("max |y|, y′ = 0.5 − 1[y > 0], y(0) = 0, t ≤ 2 (sliding)", float(np.abs(y).max()), 1e-10, 0.0)
    ctx.upper("RHS evaluations, y′ = 0.5 − 1[y > 0] to t = 2", float(st["nfe"]), 100.0, "sliding from t = 0")


@register_check(
    "C14", "Homogeneous net (Lyu & Li): smoothed margin ↑, margins agree, KKT residual ↓, rates", "Lyu & Li, ICLR 2020"
)
def check_c14(ctx: _Ctx) -> None:
    """C14: gradient flow on a bias-free two-layer ReLU² net (degree L = 3, smooth), exponential loss.

    Measured: monotonicity of the smoothed margin log(1/L)/‖θ‖^L once L < 1; the relative gap between
    normalized and smoothed margins; the Lyu & Li KKT residual (:func:`flowsim.analysis.references.kkt_residual`,
    NNLS on the near-active set) at two times; the fitted exponents of ‖θ‖ ~ (log t)^{1/L} and
    t·L ~ (log t)^{−(2−2/L)} over the last decade of log t (loose tolerances: these are asymptotic rates).
    """
    data = _random_separable(n=12, d=3, seed=12)
    model = TwoLayerReLUPower(3, 4, power=2)
    L = model.degree
    end = 400.0 if ctx.full else 120.0
    log_ts = np.linspace(0.0, end, 80)
    tr = _sim(model, data, Euclidean(), save_log_t=log_ts, init_scale=0.5, seed=2, rtol=1e-10, atol=1e-12)
    dg = tr.diagnostics
    lt = tr.log_t
    sm, nm = dg["smoothed_margin"], dg["normalized_margin"]
    after = np.flatnonzero(dg["log_loss"] < 0.0)
    if after.size < 10:
        raise CheckFailure("the loss did not drop below ℓ(0) = 1 early enough to test monotonicity")
    k0 = int(after[0])
    dec = float(np.max(-np.diff(sm[k0:]) / np.abs(sm[k0:-1])))
    ctx.upper("max relative decrease of the smoothed margin after L < 1", dec, 1e-8, "non-decreasing")
    gap = np.abs(nm - sm) / np.abs(nm)
    ctx.upper(f"|normalized − smoothed| / normalized at log t = {end:g}", float(gap[-1]), 0.05, 0.0)
    k_mid = int(np.searchsorted(lt, end / 4))
    r_mid = kkt_residual(model, tr.theta[k_mid], data.X, data.y, p=2.0).stationarity
    r_end = kkt_residual(model, tr.theta[-1], data.X, data.y, p=2.0).stationarity
    # the direction converges like 1/log t, so the residual decays slowly: demand a clear decrease
    ctx.upper(f"KKT residual (Lyu & Li) at log t = {end:g}", r_end, 0.25, 0.0)
    ctx.upper(f"KKT residual ratio log t = {end:g} vs {lt[k_mid]:.0f}", r_end / r_mid, 0.5, "→ 0 (decreasing)")
    sel = lt >= end / 2
    llt = np.log(lt[sel])
    slope_norm = float(np.polyfit(llt, np.log(dg["l2_norm"][sel]), 1)[0])
    slope_loss = float(np.polyfit(llt, dg["log_t_loss"][sel], 1)[0])
    ctx.close("exponent of ‖θ‖ ~ (log t)^a", slope_norm, 1.0 / L, atol=0.05)
    ctx.close("exponent of t·L ~ (log t)^b", slope_loss, -(2.0 - 2.0 / L), atol=0.15)

    def draw(plt):
        fig, ax = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
        ok = np.isfinite(lt)
        ax[0].plot(lt[ok], nm[ok], label="normalized margin")
        ax[0].plot(lt[ok], sm[ok], label="smoothed margin")
        ax[0].set_xlabel("log t")
        ax[0].legend(fontsize=8)
        ax[0].grid(alpha=0.3)
        ax[1].plot(
            np.log(lt[sel]), np.log(dg["l2_norm"][sel]), label=f"log‖θ‖ (slope {slope_norm:.3f}, theory {1 / L:.3f})"
        )
        ax[1].plot(
            np.log(lt[sel]),
            dg["log_t_loss"][sel],
            label=f"log(t·L) (slope {slope_loss:.3f}, theory {-(2 - 2 / L):.3f})",
        )
        ax[1].set_xlabel("log log t")
        ax[1].legend(fontsize=8)
        ax[1].grid(alpha=0.3)
        fig.suptitle("C14: Lyu & Li asymptotics, two-layer ReLU² net (L = 3), gradient flow")

    ctx.figure(draw)


def _kinks_available() -> bool:
    try:
        importlib.import_module("flowsim.solvers.filippov")
    except ImportError:
        return False
    return True


@register_check(
    "C15",
    "Sparse (hyperbolic entropy) vs dense (p = 3) features: active neurons vs width m",
    "Jacobs & Montúfar 2026; Woodworth et al., COLT 2020",
)
def check_c15(ctx: _Ctx) -> None:
    """C15 and seed-paper finding (3): student–teacher two-layer net, teacher width 2 (sparse inputs).

    A student of width m ∈ {10, 40} (full: {10, 40, 160}) is trained to log t = 12 from init scale 0.1 with
    hyperbolic entropy (β = 0.01), gradient flow and PPower(3). Active neurons: mass ≥ 1% of the largest
    (``diagnostics["active_neurons"]``, mass_j = ‖|a_j| w_j‖). Reference: the teacher's width (sparse) and m
    (dense). The student is a ReLU net with the Filippov driver when :mod:`flowsim.solvers.filippov` is
    available, else the smooth ReLU² net (naive integration of ReLU chatters), and the message says so.
    """
    k_teacher = 2
    data = student_teacher_relu(n=20, d=5, teacher_width=k_teacher, seed=0, margin=0.1)
    widths = (10, 40, 160) if ctx.full else (10, 40)
    relu = _kinks_available()
    if relu:
        ctx.note("student: two-layer ReLU, Filippov kink handling")
    else:
        ctx.note(
            "student: two-layer ReLU² surrogate (flowsim.solvers.filippov not available; "
            "naive ReLU integration chatters)"
        )
    pots = {
        "hyperbolic entropy β=0.01": HyperbolicEntropy(0.01),
        "gradient flow": Euclidean(),
        "p-power p=3": PPower(3.0),
    }
    active: dict[str, list[int]] = {k: [] for k in pots}
    shares: dict[str, np.ndarray] = {}
    for m in widths:
        model = TwoLayerReLU(5, m) if relu else TwoLayerReLUPower(5, m, power=2)
        for name, pot in pots.items():
            tr = _sim(
                model,
                data,
                pot,
                log_t_end=12.0,
                n_save=20,
                init_scale=0.1,
                seed=1,
                rtol=1e-6,
                atol=1e-9,
                **({"kinks": "filippov"} if relu else {}),
            )
            if tr.diagnostics["q_min"][-1] <= 0:
                raise CheckFailure(f"{name}, m = {m}: the student does not fit the data at log t = 12")
            active[name].append(int(tr.diagnostics["active_neurons"][-1]))
            if m == widths[-1]:
                mass = np.sort(tr.diagnostics["neuron_mass"][-1])[::-1]
                shares[name] = mass / mass.sum()
    he, gf, pp = (active[k] for k in pots)
    ctx.upper(
        "hyperbolic entropy: max active neurons over m", float(max(he)), k_teacher + 1, f"teacher width {k_teacher}"
    )
    ctx.upper("hyperbolic entropy: spread of active count over m", float(max(he) - min(he)), 1.0, "independent of m")
    frac = min(a / m for a, m in zip(pp, widths, strict=True))
    ctx.lower("p = 3: min fraction of active neurons", frac, 0.75, "1 (all m)")
    ctx.holds(
        "ordering HE ≤ GF ≤ p=3 at every m",
        all(a <= b <= c for a, b, c in zip(he, gf, pp, strict=True)),
        f"HE {he}, GF {gf}, p3 {pp}",
        f"m = {list(widths)}",
        "HE ≤ GF ≤ p3",
    )

    ctx.figure(lambda plt: _draw_c15(plt, widths, active, shares, k_teacher, relu))


def _draw_c15(plt, widths, active: dict, shares: dict, k_teacher: int, relu: bool) -> None:
    """C15's figure: active neurons against the width per potential, and the mass shares at the largest width."""
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.8), constrained_layout=True)
    for name in active:  # (the potentials, in order)
        ax[0].plot(widths, active[name], marker="o", label=name)
    ax[0].plot(widths, widths, "k:", lw=0.8, label="m")
    ax[0].axhline(k_teacher, color="0.5", ls="--", lw=0.8, label="teacher width")
    ax[0].set_xscale("log")
    ax[0].set_yscale("log")
    ax[0].set_xlabel("student width m")
    ax[0].set_ylabel("active neurons (mass ≥ 1% of max)")
    ax[0].legend(fontsize=8)
    ax[0].grid(alpha=0.3, which="both")
    for name, s in shares.items():
        ax[1].semilogy(np.arange(1, s.size + 1), np.maximum(s, 1e-12), marker=".", label=name)
    ax[1].set_xlabel(f"neuron rank (m = {widths[-1]})")
    ax[1].set_ylabel("mass share")
    ax[1].legend(fontsize=8)
    ax[1].grid(alpha=0.3)
    fig.suptitle("C15 / finding 3: sparse (HE) vs dense (p = 3) features, " + ("ReLU" if relu else "ReLU² surrogate"))
