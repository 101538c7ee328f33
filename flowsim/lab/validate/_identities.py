"""Exact identities, C1–C5: a closed-form flow, the potentials' mirror maps, homogeneity, descent, the dual cone."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from scipy.integrate import solve_ivp
from scipy.optimize import nnls

from ...data import make_dataset
from ...errors import InvalidParameterError, ReferenceSolverError
from ...losses import get_loss
from ...models import (
    DeepLinear,
    DeepReLU,
    DiagonalLinear,
    Linear,
    TwoLayerLeakyReLU,
    TwoLayerReLU,
    TwoLayerReLUPower,
)
from ...potentials import (
    AbstractPotential,
    Euclidean,
    HyperbolicEntropy,
    PPower,
    PPowerPlusQuadratic,
    SmoothedHomogeneous,
)
from ._common import _random_separable, _sim
from ._framework import _Ctx, register_check


@register_check(
    "C1", "Single point, Euclidean: u(t) = log(e^{u0} + ‖x‖² t) up to log t = 1000", "Soudry et al., JMLR 2018"
)
def check_c1(ctx: _Ctx) -> None:
    """C1: one point, gradient flow on a linear model; u = y⟨w, x⟩ solves u′ = ‖x‖² e^{−u}.

    Reference: the closed form u(t) = log(e^{u0} + ‖x‖² t), evaluated as a log-sum-exp (t never formed).
    Measured at t = 1e3, 1e10, 1e30, e^1000 (full tier: also e^10000), integrated in log-time.
    """
    x = np.array([0.6, -0.3, 0.9])
    theta0 = np.array([0.2, 0.1, -0.4])
    data = make_dataset(x[None, :], np.array([-1.0]), name="single_point")
    log_ts = [math.log(1e3), math.log(1e10), math.log(1e30), 1000.0] + ([1e4] if ctx.full else [])
    log_ts = np.array(log_ts)
    tr = _sim(Linear(3), data, Euclidean(), theta0=theta0, save_log_t=log_ts, rtol=1e-11, atol=1e-13)
    u0 = -x @ theta0
    u = -tr.theta[1:] @ x
    u_exact = np.logaddexp(u0, math.log(x @ x) + log_ts)
    err = np.abs(u - u_exact) / np.abs(u_exact)
    ctx.upper(f"max rel. error of u(t), log t ≤ {log_ts[-1]:g}", float(err.max()), 1e-9, "closed form")
    ctx.close("log L at the last time", float(tr.diagnostics["log_loss"][-1]), float(-u_exact[-1]), rtol=1e-9)


_MP_DPS = 50


def _mp_phi(name: str, par: dict, x):
    """φ and φ′ of the built-in potentials in mpmath, from the formulas of DESIGN.md (independent code)."""
    import mpmath as mp

    if name == "euclidean":
        return x**2 / 2, x
    if name == "hyperbolic_entropy":
        b = mp.mpf(par["beta"])
        return x * mp.asinh(x / b) - mp.sqrt(x**2 + b**2), mp.asinh(x / b)
    p = mp.mpf(par["p"])
    if name == "p_power":
        return abs(x) ** p / p, mp.sign(x) * abs(x) ** (p - 1)
    lam = mp.mpf(par["lam"])
    if name == "smoothed_homogeneous":
        return (x**2 + lam) ** (p / 2), p * x * (x**2 + lam) ** (p / 2 - 1)
    if name == "p_power_quadratic":
        return abs(x) ** p / p + lam * x**2 / 2, mp.sign(x) * abs(x) ** (p - 1) + lam * x
    raise ValueError(name)


def _c2_potentials(full: bool) -> list[AbstractPotential]:
    pots = [
        Euclidean(),
        HyperbolicEntropy(0.1),
        PPower(1.5),
        PPower(3.0),
        SmoothedHomogeneous(3.0, 0.1),
        PPowerPlusQuadratic(3.0, 0.1),
    ]
    if full:
        pots += [HyperbolicEntropy(1e-4), PPower(4.0), SmoothedHomogeneous(1.5, 1.0), PPowerPlusQuadratic(1.5, 1.0)]
    return pots


@register_check(
    "C2",
    "Potentials: ∇Φ*∘∇Φ = id, φ″ = autograd, Bregman ≥ 0, Q = xφ′ − φ",
    "Pesme, Dragomir & Flammarion, NeurIPS 2024",
)
def check_c2(ctx: _Ctx) -> None:
    """C2: identities of every built-in potential on points with |x| from 1e-6 to 1e6 (both signs).

    References: φ′ and Q = xφ′ − φ in 50-digit mpmath from the DESIGN formulas (independent of
    flowsim.potentials); φ″ by torch autograd of ``phi``; exact roundtrip x. Tolerances: 1e-10 relative.
    """
    import mpmath as mp

    mp.mp.dps = _MP_DPS
    rng = np.random.default_rng(0)
    mags = np.concatenate([np.logspace(-6, 6, 25), rng.uniform(0.01, 10.0, 15)])
    x = np.concatenate([mags, -mags])
    xt = torch.as_tensor(x, dtype=torch.float64)
    worst = {"roundtrip": 0.0, "mirror": 0.0, "hess": 0.0, "q": 0.0}
    who = {k: "" for k in worst}
    bmin, bself = 0.0, 0.0
    for pot in _c2_potentials(ctx.full):
        par = pot.params()
        zt = pot.mirror_map(xt)
        back = pot.inverse_mirror_map(zt)
        errs = {"roundtrip": float((torch.abs(back - xt) / torch.abs(xt)).max())}
        ref_d = np.array([float(_mp_phi(pot.name, par, mp.mpf(float(v)))[1]) for v in x])
        ref_q = np.array(
            [float((lambda f: mp.mpf(float(v)) * f[1] - f[0])(_mp_phi(pot.name, par, mp.mpf(float(v))))) for v in x]
        )
        errs["mirror"] = float(np.max(np.abs(zt.numpy() - ref_d) / np.abs(ref_d)))
        errs["q"] = float(np.max(np.abs(pot.q_function(xt).numpy() - ref_q) / np.abs(ref_q)))
        xg = xt.clone().requires_grad_(True)
        (g1,) = torch.autograd.grad(pot.phi(xg).sum(), xg, create_graph=True)
        (g2,) = torch.autograd.grad(g1.sum(), xg)
        h = pot.hessian_diag(xt)
        ok = torch.isfinite(h) & torch.isfinite(g2) & (g2 != 0)
        errs["hess"] = float((torch.abs(h - g2) / torch.abs(g2))[ok].max())
        for k, v in errs.items():
            if not v <= worst[k]:
                worst[k], who[k] = v, repr(pot)
        a = torch.as_tensor(rng.normal(size=200) * 10.0 ** rng.uniform(-3, 3, 200), dtype=torch.float64)
        b = torch.as_tensor(rng.normal(size=200) * 10.0 ** rng.uniform(-3, 3, 200), dtype=torch.float64)
        D = pot.bregman_divergence(a[:, None], b[:, None])
        bmin = min(bmin, float(D.min()))
        bself = max(bself, float(pot.bregman_divergence(a[:, None], a[:, None]).abs().max()))
    ctx.upper(f"max rel. error ∇Φ*(∇Φ(x)) − x  (worst: {who['roundtrip']})", worst["roundtrip"], 1e-10, "x (exact)")
    ctx.upper(f"max rel. error φ′ vs mpmath  (worst: {who['mirror']})", worst["mirror"], 1e-10, "mpmath, 50 digits")
    ctx.upper(f"max rel. error φ″ vs autograd  (worst: {who['hess']})", worst["hess"], 1e-10, "torch autograd")
    ctx.upper(f"max rel. error Q vs mpmath xφ′ − φ  (worst: {who['q']})", worst["q"], 1e-10, "mpmath, 50 digits")
    ctx.lower("min Bregman divergence D(a, b)", bmin, 0.0, "≥ 0 (convexity)")
    ctx.upper("max |D(a, a)|", bself, 0.0, 0.0)


@register_check("C3", "Homogeneity f(cθ) = c^L f(θ) and Euler ⟨θ, ∇q_i⟩ = L q_i", "Lyu & Li, ICLR 2020")
def check_c3(ctx: _Ctx) -> None:
    """C3: every model at random θ (away from kinks a.s.), c ∈ {0.5, 3}; reference c^L f(θ) and L q_i."""
    models = [
        Linear(4),
        DiagonalLinear(4, depth=3),
        DeepLinear(4, [3, 2]),
        TwoLayerReLU(4, 5),
        TwoLayerLeakyReLU(4, 5),
        TwoLayerReLUPower(4, 5, power=2),
        DeepReLU(4, [5, 3]),
    ]
    data = _random_separable(n=9, d=4, seed=3)
    hom, euler = 0.0, 0.0
    for k, model in enumerate(models):
        th = model.init(seed=k, dtype=torch.float64)
        f = model.forward(th, data.X)
        for c in (0.5, 3.0):
            fc = model.forward(c * th, data.X)
            hom = max(hom, float(((fc - c**model.degree * f).abs() / (c**model.degree * f).abs()).max()))
        thg = th.clone().requires_grad_(True)
        q = data.y * model.forward(thg, data.X)
        J = torch.stack([torch.autograd.grad(q[i], thg, retain_graph=True)[0] for i in range(q.numel())])
        lhs = J @ th
        euler = max(euler, float(((lhs - model.degree * q.detach()).abs() / q.detach().abs()).max()))
    ctx.upper(f"max rel. error f(cθ) vs c^L f(θ)  ({len(models)} models)", hom, 1e-12, "c^L f(θ)")
    ctx.upper("max rel. error ⟨θ, ∇q_i⟩ vs L q_i", euler, 1e-12, "L q_i")


@register_check("C4", "Loss decreases along the flow; dL/dt = −∇Lᵀ(∇²Φ)⁻¹∇L ≤ 0", "Gunasekar et al., ICML 2018")
def check_c4(ctx: _Ctx) -> None:
    """C4: ReLU² net (smooth) under four potentials: log L non-increasing between saves; dL/dt ≤ 0 at
    random states by autograd (independent of the flow code)."""
    data = _random_separable(n=15, d=4, seed=1)
    model = TwoLayerReLUPower(4, 5, power=2)
    pots = [Euclidean(), HyperbolicEntropy(0.1), PPower(3.0), SmoothedHomogeneous(3.0, 0.1)]
    if ctx.full:
        pots += [PPower(1.5), PPowerPlusQuadratic(3.0, 1.0)]
    worst_inc = -math.inf
    for pot in pots:
        tr = _sim(
            model, data, pot, log_t_end=20.0 if ctx.full else 6.0, n_save=40, init_scale=0.5, rtol=1e-9, atol=1e-11
        )
        worst_inc = max(worst_inc, float(np.max(np.diff(tr.diagnostics["log_loss"]))))
    loss = get_loss("exponential")
    gen = torch.Generator().manual_seed(3)
    worst_rate = -math.inf
    for pot in pots:
        for _ in range(5):
            th = torch.randn(model.num_params, generator=gen, dtype=torch.float64).requires_grad_(True)
            L = torch.exp(loss.log_value(data.y * model.forward(th, data.X)))
            (g,) = torch.autograd.grad(L, th)
            dLdt = -(g * pot.inverse_hessian_action(th.detach(), g)).sum() / (g @ g)
            worst_rate = max(worst_rate, float(dLdt))
    ctx.upper("max increase of log L between saves", worst_inc, 1e-9, "≤ 0 (descent)")
    ctx.upper("max dL/dt / ‖∇L‖² at random states", worst_rate, 0.0, "≤ 0")


def _closed_form_inverse(pot: AbstractPotential) -> Callable[[np.ndarray], np.ndarray]:
    """(φ′)⁻¹ in numpy from the DESIGN table, independent of flowsim.potentials."""
    if isinstance(pot, HyperbolicEntropy):
        beta = pot.params()["beta"]
        return lambda z: beta * np.sinh(z)
    if isinstance(pot, PPower):
        p = pot.params()["p"]
        return lambda z: np.sign(z) * np.abs(z) ** (1.0 / (p - 1.0))
    if isinstance(pot, Euclidean):
        return lambda z: z
    raise InvalidParameterError(f"no closed-form inverse mirror map for {pot!r}")


@register_check("C5", "Dual-cone identity ∇Φ(θ_t) − ∇Φ(θ_0) = Σ c_i(t) z_i, c_i ≥ 0", "Gunasekar et al., ICML 2018")
def check_c5(ctx: _Ctx) -> None:
    """C5: linear model. Reference: scipy DOP853 on the augmented system (z, c) in log-time s,
    dz/ds = e^s Σ z_i e^{−⟨z_i, θ⟩}, dc_i/ds = e^{s − ⟨z_i, θ⟩}, θ = closed-form (φ′)⁻¹(z) in numpy.

    Measured: ‖(z_flowsim(t) − z_0) − Zᵀ c_ref(t)‖ / ‖z_flowsim(t) − z_0‖ (max over t), and the
    cone-membership residual of flowsim's z(t) − z_0 by NNLS (no reference integration involved).
    """
    data = _random_separable(n=10, d=4, seed=11)
    Z = data.Z.numpy()
    n, d = Z.shape
    pots = [HyperbolicEntropy(0.5), PPower(3.0)] + ([HyperbolicEntropy(0.01), Euclidean()] if ctx.full else [])
    log_ts = np.linspace(-2.0, 12.0 if ctx.full else 8.0, 15)
    s_grid = np.log1p(np.exp(log_ts))
    worst_ref, worst_cone, cmin = 0.0, 0.0, math.inf
    for pot in pots:
        tr = _sim(Linear(d), data, pot, theta0=np.zeros(d), save_log_t=log_ts, rtol=1e-11, atol=1e-13)
        inv = _closed_form_inverse(pot)
        z0 = pot.mirror_map(torch.zeros(d, dtype=torch.float64)).numpy()

        def rhs(s, u, inv=inv):
            z = u[:d]
            e = np.exp(s - Z @ inv(z))
            return np.concatenate([Z.T @ e, e])

        res = solve_ivp(
            rhs,
            (0.0, s_grid[-1]),
            np.concatenate([z0, np.zeros(n)]),
            method="DOP853",
            t_eval=s_grid,
            rtol=1e-12,
            atol=1e-12,
        )
        if not res.success:
            raise ReferenceSolverError(f"C5 reference (scipy DOP853) failed for {pot!r}: {res.message}")
        c_ref = res.y[d:].T
        dz = tr.z[1:] - z0
        scale = np.linalg.norm(dz, axis=1)
        worst_ref = max(worst_ref, float(np.max(np.linalg.norm(dz - c_ref @ Z, axis=1) / scale)))
        cmin = min(cmin, float(c_ref.min()))
        for row, sc in zip(dz, scale, strict=True):
            _, r = nnls(Z.T, row)
            worst_cone = max(worst_cone, float(r / sc))
    ctx.upper("max rel. ‖Δz_flowsim − Zᵀ c_ref‖", worst_ref, 1e-7, "scipy DOP853 (rtol 1e-12)")
    ctx.upper("cone residual min_{c≥0} ‖Zᵀc − Δz‖/‖Δz‖", worst_cone, 1e-9, 0.0)
    ctx.lower("min c_i(t) of the reference", cmin, 0.0, "≥ 0")
