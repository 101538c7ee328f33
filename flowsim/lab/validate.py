"""Theorem verification: the known results C1–C15 of ``validation/CASES.md`` as numerical checks.

Each check runs flowsim (:func:`flowsim.simulate`, :func:`flowsim.discrete.mirror_descent`, the potentials
and models) on a small problem and compares the result with a reference computed *independently*: a
closed form, a solver from :mod:`flowsim.references` (HiGHS LPs, the NNLS SVM, SLSQP, KKT residuals), a
high-precision evaluation (mpmath), or a separate numpy/scipy integration of the same ODE. A check returns a
:class:`CheckResult` with one or more :class:`Metric` rows (measured value, reference, tolerance, pass),
a status and the figures it wrote:

* ``"pass"`` — every metric is within its tolerance;
* ``"fail"`` — a metric is outside its tolerance, or a flowsim run did not reach its horizon;
* ``"error"`` — the reference could not be computed (:class:`~flowsim.errors.ReferenceSolverError`, a
  non-unique LP reference, a failed scipy integration), a module the check needs is missing (C7 and C9 need
  :mod:`flowsim.kinks`, C8 :mod:`flowsim.discrete`), or the check itself crashed. An error is never a pass.

Two tiers: ``quick`` (every check on a small horizon; the whole tier runs in about two minutes on two
cores) and ``full`` (longer horizons, more potentials, widths and seeds). Times: ``log t`` is the natural
log of the flow time t; horizons are given in log t throughout.

This is an edge module: the core never imports it; matplotlib is imported lazily only to draw figures.

Example:
    >>> from flowsim.validate import run_validation
    >>> results = run_validation(["C1", "C3"])          # doctest: +SKIP
    >>> [r.status for r in results]                     # doctest: +SKIP
    ['pass', 'pass']

References (per case, see each check's docstring):
    Soudry, Hoffer, Nacson, Gunasekar & Srebro, JMLR 2018 (C1, C10); Lyu & Li, ICLR 2020 (C14);
    Gunasekar, Lee, Soudry & Srebro, ICML 2018 (C5, C11); Woodworth et al., COLT 2020 (C6);
    Pesme, Dragomir & Flammarion, NeurIPS 2024 (C11–C13); Du, Hu & Lee, NeurIPS 2018 (C7, C8);
    Jacobs & Montúfar, arXiv 2605.19458 (2026) (C7, C13, C15).
"""

from __future__ import annotations

import importlib
import math
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..analysis.references import kkt_residual, max_margin_l1, max_margin_lp, svm_l2
from ..data import Dataset, make_dataset, student_teacher_relu
from ..errors import InvalidParameterError, ReferenceSolverError
from ..losses import get_loss
from ..models import (
    DeepLinear,
    DeepReLU,
    DiagonalLinear,
    Linear,
    TwoLayerLeakyReLU,
    TwoLayerReLU,
    TwoLayerReLUPower,
)
from ..potentials import (
    AbstractPotential,
    Euclidean,
    HyperbolicEntropy,
    PPower,
    PPowerPlusQuadratic,
    SmoothedHomogeneous,
)
from ..simulation import simulate

__all__ = [
    "Metric",
    "CheckResult",
    "Check",
    "CHECKS",
    "TIERS",
    "run_check",
    "run_validation",
    "format_table",
    "write_report",
]

TIERS = ("quick", "full")
STATUSES = ("pass", "fail", "error")


# ----------------------------------------------------------------------------------------------------------
# Records
# ----------------------------------------------------------------------------------------------------------


@dataclass
class Metric:
    """One measured quantity of a check against its reference.

    Attributes:
        name: what is measured (e.g. ``"max rel. error of u(t)"``).
        measured: the measured value (a float, or a short string for counts/orderings).
        reference: the reference value it is compared with (independently computed, or the theory's value).
        tolerance: the acceptance rule as text (e.g. ``"≤ 1e-09"``, ``"≥ 0.97"``, ``"increasing"``).
        passed: whether the measured value satisfies the rule.
    """

    name: str
    measured: Any
    reference: Any
    tolerance: str
    passed: bool


@dataclass
class CheckResult:
    """Outcome of one check.

    Attributes:
        case: case id ``"C1"`` … ``"C15"``.
        title: one-line description.
        status: ``"pass"``, ``"fail"`` or ``"error"``.
        message: explanation (what failed, which reference errored, substitutions made).
        metrics: the :class:`Metric` rows, in order.
        runtime: wall-clock seconds of the check.
        figures: paths of the figures written (relative to the report directory), e.g. ``figs/C10.png``.
        tier: ``"quick"`` or ``"full"``.
        references: literature of the case.
    """

    case: str
    title: str
    status: str
    message: str
    metrics: list[Metric] = field(default_factory=list)
    runtime: float = 0.0
    figures: list[str] = field(default_factory=list)
    tier: str = "quick"
    references: str = ""

    def _primary(self) -> Metric | None:
        for m in self.metrics:
            if not m.passed:
                return m
        return self.metrics[0] if self.metrics else None

    @property
    def measured(self) -> Any:
        """Measured value of the primary metric (the first failing one, else the first)."""
        m = self._primary()
        return None if m is None else m.measured

    @property
    def reference(self) -> Any:
        """Reference value of the primary metric."""
        m = self._primary()
        return None if m is None else m.reference

    @property
    def tolerance(self) -> str:
        """Tolerance rule of the primary metric."""
        m = self._primary()
        return "" if m is None else m.tolerance


class CheckFailure(Exception):
    """flowsim itself failed inside a check (e.g. a run did not reach its horizon): status ``"fail"``."""


class CheckError(Exception):
    """The check could not be carried out (missing module, unusable reference): status ``"error"``."""


class _Ctx:
    """What a check function receives: the tier, where figures go, and metric recorders."""

    def __init__(self, case: str, full: bool, out: Path | None) -> None:
        self.case = case
        self.full = full
        self.out = out
        self.metrics: list[Metric] = []
        self.notes: list[str] = []
        self.figures: list[str] = []

    # metric recorders -------------------------------------------------------------------------------
    def upper(self, name: str, measured: float, bound: float, reference: Any = 0.0) -> bool:
        ok = bool(np.isfinite(measured) and measured <= bound)
        self.metrics.append(Metric(name, float(measured), reference, f"≤ {bound:.3g}", ok))
        return ok

    def lower(self, name: str, measured: float, bound: float, reference: Any) -> bool:
        ok = bool(np.isfinite(measured) and measured >= bound)
        self.metrics.append(Metric(name, float(measured), reference, f"≥ {bound:.3g}", ok))
        return ok

    def close(self, name: str, measured: float, reference: float, rtol: float = 0.0, atol: float = 0.0) -> bool:
        err = abs(measured - reference)
        ok = bool(np.isfinite(measured) and err <= atol + rtol * abs(reference))
        tol = " + ".join(t for t in (f"{atol:.3g}" if atol else "", f"{rtol:.3g}·|ref|" if rtol else "") if t)
        self.metrics.append(Metric(name, float(measured), float(reference), f"|Δ| ≤ {tol}", ok))
        return ok

    def holds(self, name: str, ok: bool, measured: Any, reference: Any, rule: str) -> bool:
        self.metrics.append(Metric(name, measured, reference, rule, bool(ok)))
        return bool(ok)

    def note(self, text: str) -> None:
        self.notes.append(text)

    # figures ----------------------------------------------------------------------------------------
    def figure(self, draw: Callable[[Any], None], suffix: str = "") -> None:
        """Draw a figure with ``draw(plt)`` and save it as ``figs/<case><suffix>.png`` (if an out dir is set)."""
        if self.out is None:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figdir = self.out / "figs"
        figdir.mkdir(parents=True, exist_ok=True)
        rel = f"figs/{self.case}{suffix}.png"
        try:
            draw(plt)
            plt.gcf().savefig(self.out / rel, dpi=100)
            self.figures.append(rel)
        finally:
            plt.close("all")


@dataclass(frozen=True)
class Check:
    """A registered check: case id, title, the function, literature."""

    case: str
    title: str
    func: Callable[[_Ctx], None]
    references: str


CHECKS: dict[str, Check] = {}


def _check(case: str, title: str, references: str) -> Callable:
    def register(func: Callable[[_Ctx], None]) -> Callable[[_Ctx], None]:
        CHECKS[case] = Check(case, title, func, references)
        return func

    return register


# ----------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------


def _random_separable(n: int = 12, d: int = 3, seed: int = 0) -> Dataset:
    """Separable-through-the-origin data with a random teacher and per-point scales (as tests/problems.py)."""
    rng = np.random.default_rng(seed)
    w_star = rng.normal(size=d)
    X = rng.normal(size=(n, d)) * rng.uniform(0.5, 1.5, size=(n, 1))
    y = np.sign(X @ w_star)
    X += 0.3 * y[:, None] * w_star / np.linalg.norm(w_star)
    y = np.sign(X @ w_star)
    return make_dataset(X, y, name=f"random_separable_{seed}")


def _sim(*args: Any, **kwargs: Any):
    """:func:`flowsim.simulate` on one thread; a run that does not reach its horizon fails the check."""
    kwargs.setdefault("threads", 1)
    tr = simulate(*args, **kwargs)
    if not tr.success:
        raise CheckFailure(f"simulate({args[0]!r}, {args[2]!r}) ended with status {tr.status.value}: {tr.message}")
    return tr


def _require(module: str):
    """Import ``module`` or raise :class:`CheckError` ("<module> not available")."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise CheckError(f"{module} not available ({err})") from err


def _lp_margin(w: np.ndarray, Z: np.ndarray, p: float) -> float:
    return float(np.min(Z @ w) / np.linalg.norm(w, ord=p))


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _first_crossing(x: np.ndarray, y: np.ndarray, level: float) -> float:
    """First x where y reaches ``level`` (linear interpolation); inf if never."""
    idx = np.flatnonzero(y >= level)
    if idx.size == 0:
        return math.inf
    k = int(idx[0])
    if k == 0:
        return float(x[0])
    return float(x[k - 1] + (level - y[k - 1]) * (x[k] - x[k - 1]) / (y[k] - y[k - 1]))


# ----------------------------------------------------------------------------------------------------------
# Exact identities
# ----------------------------------------------------------------------------------------------------------


@_check("C1", "Single point, Euclidean: u(t) = log(e^{u0} + ‖x‖² t) up to log t = 1000", "Soudry et al., JMLR 2018")
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


@_check(
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


@_check("C3", "Homogeneity f(cθ) = c^L f(θ) and Euler ⟨θ, ∇q_i⟩ = L q_i", "Lyu & Li, ICLR 2020")
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


@_check("C4", "Loss decreases along the flow; dL/dt = −∇Lᵀ(∇²Φ)⁻¹∇L ≤ 0", "Gunasekar et al., ICML 2018")
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


@_check("C5", "Dual-cone identity ∇Φ(θ_t) − ∇Φ(θ_0) = Σ c_i(t) z_i, c_i ≥ 0", "Gunasekar et al., ICML 2018")
def check_c5(ctx: _Ctx) -> None:
    """C5: linear model. Reference: scipy DOP853 on the augmented system (z, c) in log-time s,
    dz/ds = e^s Σ z_i e^{−⟨z_i, θ⟩}, dc_i/ds = e^{s − ⟨z_i, θ⟩}, θ = closed-form (φ′)⁻¹(z) in numpy.

    Measured: ‖(z_flowsim(t) − z_0) − Zᵀ c_ref(t)‖ / ‖z_flowsim(t) − z_0‖ (max over t), and the
    cone-membership residual of flowsim's z(t) − z_0 by NNLS (no reference integration involved).
    """
    from scipy.integrate import solve_ivp
    from scipy.optimize import nnls

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


@_check(
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


@_check(
    "C7",
    "Balance B_j = Σ_k Q(w_jk) − Q(a_j) conserved (ReLU, Filippov); Euclidean balance not, under HE",
    "Du, Hu & Lee, NeurIPS 2018; Jacobs & Montúfar 2026",
)
def check_c7(ctx: _Ctx) -> None:
    """C7: two-layer ReLU net under mirror flow with exact kink handling (``kinks="filippov"``).

    Measured: the relative balance drift (``diagnostics["balance_drift"]``); reference 0 (conservation
    law). Negative control: under hyperbolic entropy the Euclidean quantity ‖w_j‖² − a_j² drifts.
    Needs :mod:`flowsim.kinks`; without it the check is an error.
    """
    data = _random_separable(n=10, d=3, seed=7)
    # smooth part first (ReLU², no kinks): conservation must hold there with any driver
    smooth = _sim(
        TwoLayerReLUPower(3, 5, power=2), data, HyperbolicEntropy(0.5), log_t_end=6.0, n_save=20, rtol=1e-10, atol=1e-12
    )
    ctx.upper(
        "balance drift, ReLU² net, hyperbolic entropy", float(smooth.diagnostics["balance_drift"].max()), 1e-7, 0.0
    )
    _require("flowsim.kinks")
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


@_check(
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


@_check(
    "C9",
    "Filippov: y′ = −sign(y) reaches y(2) = 0 cheaply; y′ = 0.5 − 1[y > 0] slides at 0",
    "Filippov 1988; Stewart 1990",
)
def check_c9(ctx: _Ctx) -> None:
    """C9: :func:`flowsim.kinks.solve_filippov` (the Filippov driver's event core on a generic system).

    y′ = −sign(y) = 1 − 2σ, σ = 1[y > 0], y(0) = 1: reference y = max(1 − t, 0) (crossing into a sliding
    mode at t = 1), checked at t = 0.5, 1.5, 2. y′ = 0.5 − σ, y(0) = 0: sliding at 0 from t = 0 (α = 0.5),
    reference y ≡ 0. RHS evaluations are the calls of the field, all of them (stages, classification,
    exit checks); tolerances: error ≤ 1e-10 with ≤ 100 evaluations (issue 3); naive dopri5 needs ~26,000.
    """
    kinks = _require("flowsim.kinks")
    solver = getattr(kinks, "solve_filippov", None)
    if solver is None:
        raise CheckError("flowsim.kinks has no generic Filippov entry point (solve_filippov) to run C9")
    one = torch.ones(1, dtype=torch.float64)
    t, y, st = solver(lambda t, y: (one, -2.0 * one.reshape(1, 1)), [[1.0]], [1.0], [0.0, 0.5, 1.5, 2.0])
    ctx.close("y(2) for y′ = −sign(y), y(0) = 1", float(y[-1, 0]), 0.0, atol=1e-10)
    err = float(np.abs(y[:, 0] - np.maximum(1.0 - t, 0.0)).max())
    ctx.upper("max |y − max(1 − t, 0)| at t = 0.5, 1.5, 2", err, 1e-10, 0.0)
    ctx.upper("RHS evaluations", float(st["nfe"]), 100.0, "~26,000 naive")
    t, y, st = solver(lambda t, y: (0.5 * one, -one.reshape(1, 1)), [[1.0]], [0.0], [0.0, 1.0, 2.0])
    ctx.upper("max |y|, y′ = 0.5 − 1[y > 0], y(0) = 0, t ≤ 2 (sliding)", float(np.abs(y).max()), 1e-10, 0.0)
    ctx.upper("RHS evaluations, y′ = 0.5 − 1[y > 0] to t = 2", float(st["nfe"]), 100.0, "sliding from t = 0")


# ----------------------------------------------------------------------------------------------------------
# Asymptotics
# ----------------------------------------------------------------------------------------------------------


@_check(
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


@_check(
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


@_check(
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

    def draw(plt):
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

    ctx.figure(draw)


@_check(
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
        # smallest vs largest λ: neighbouring small λ (0.1 vs 1) are tied to 2e-4 at this time (measured)
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


@_check(
    "C14", "Homogeneous net (Lyu & Li): smoothed margin ↑, margins agree, KKT residual ↓, rates", "Lyu & Li, ICLR 2020"
)
def check_c14(ctx: _Ctx) -> None:
    """C14: gradient flow on a bias-free two-layer ReLU² net (degree L = 3, smooth), exponential loss.

    Measured: monotonicity of the smoothed margin log(1/L)/‖θ‖^L once L < 1; the relative gap between
    normalized and smoothed margins; the Lyu & Li KKT residual (:func:`flowsim.references.kkt_residual`,
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
        importlib.import_module("flowsim.kinks")
    except ImportError:
        return False
    return True


@_check(
    "C15",
    "Sparse (hyperbolic entropy) vs dense (p = 3) features: active neurons vs width m",
    "Jacobs & Montúfar 2026; Woodworth et al., COLT 2020",
)
def check_c15(ctx: _Ctx) -> None:
    """C15 and seed-paper finding (3): student–teacher two-layer net, teacher width 2 (sparse inputs).

    A student of width m ∈ {10, 40} (full: {10, 40, 160}) is trained to log t = 12 from init scale 0.1 with
    hyperbolic entropy (β = 0.01), gradient flow and PPower(3). Active neurons: mass ≥ 1% of the largest
    (``diagnostics["active_neurons"]``, mass_j = ‖|a_j| w_j‖). Reference: the teacher's width (sparse) and m
    (dense). The student is a ReLU net with the Filippov driver when :mod:`flowsim.kinks` is available, else
    the smooth ReLU² net (naive integration of ReLU chatters: measured 216,000 RHS evaluations for log t = 3
    at m = 10), and the message says so.
    """
    k_teacher = 2
    data = student_teacher_relu(n=20, d=5, teacher_width=k_teacher, seed=0, margin=0.1)
    widths = (10, 40, 160) if ctx.full else (10, 40)
    relu = _kinks_available()
    if relu:
        ctx.note("student: two-layer ReLU, Filippov kink handling")
    else:
        ctx.note("student: two-layer ReLU² surrogate (flowsim.kinks not available; naive ReLU integration chatters)")
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

    def draw(plt):
        fig, ax = plt.subplots(1, 2, figsize=(11, 3.8), constrained_layout=True)
        for name in pots:
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
        fig.suptitle(
            "C15 / finding 3: sparse (HE) vs dense (p = 3) features, " + ("ReLU" if relu else "ReLU² surrogate")
        )

    ctx.figure(draw)


# ----------------------------------------------------------------------------------------------------------
# Running and reporting
# ----------------------------------------------------------------------------------------------------------


def _case_key(case: str) -> int:
    return int(case[1:]) if case[1:].isdigit() else 10**6


def run_check(case: str, *, full: bool = False, out: str | Path | None = None) -> CheckResult:
    """Run one check and classify its outcome (never raises for a failing or erroring check).

    Args:
        case: ``"C1"`` … ``"C15"`` (case-insensitive).
        full: run the ``full`` tier (longer horizons, more settings) instead of ``quick``.
        out: report directory; figures go to ``out/figs/<case>.png`` (None: no figures).

    Returns:
        :class:`CheckResult` with status ``"pass"`` (all metrics within tolerance), ``"fail"`` (a metric
        outside, or a flowsim run that did not reach its horizon) or ``"error"`` (reference failure —
        :class:`~flowsim.errors.ReferenceSolverError` —, missing module, or a crash; never a pass).

    Raises:
        InvalidParameterError: if ``case`` is not a registered check.
    """
    key = case.strip().upper()
    if key not in CHECKS:
        raise InvalidParameterError(
            f"unknown validation case {case!r}; valid: {', '.join(sorted(CHECKS, key=_case_key))}"
        )
    chk = CHECKS[key]
    ctx = _Ctx(key, full, Path(out) if out is not None else None)
    start = time.perf_counter()
    status, message = "pass", ""
    try:
        with torch.inference_mode(False):
            chk.func(ctx)
        bad = [m for m in ctx.metrics if not m.passed]
        if bad:
            status = "fail"
            message = "; ".join(f"{m.name}: {_fmt(m.measured)} (tolerance {m.tolerance})" for m in bad)
        elif not ctx.metrics:
            status, message = "error", "the check recorded no metrics"
    except ReferenceSolverError as err:
        status, message = "error", f"reference solver failed: {err}"
    except CheckError as err:
        status, message = "error", f"error: {err}"
    except CheckFailure as err:
        status, message = "fail", str(err)
    except Exception as err:  # a crash of the check is an error, never a pass
        tb = traceback.format_exc(limit=3).strip().splitlines()[-1]
        status, message = "error", f"{type(err).__name__}: {err} [{tb}]"
    runtime = time.perf_counter() - start
    if ctx.notes:
        message = "; ".join([*ctx.notes, message] if message else ctx.notes)
    return CheckResult(
        case=key,
        title=chk.title,
        status=status,
        message=message,
        metrics=ctx.metrics,
        runtime=runtime,
        figures=ctx.figures,
        tier="full" if full else "quick",
        references=chk.references,
    )


def run_validation(
    cases: Iterable[str] | None = None,
    *,
    full: bool = False,
    out: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[CheckResult]:
    """Run checks in case order, optionally printing a progress line per check.

    Args:
        cases: case ids (default: all C1–C15).
        full: run the ``full`` tier.
        out: report directory for figures (``write_report`` writes ``report.md`` there).
        progress: called with a line before and after each check (e.g. ``print``).

    Returns:
        The :class:`CheckResult` list, in case order.

    Raises:
        InvalidParameterError: on an unknown case id (before anything runs).
    """
    keys = sorted({c.strip().upper() for c in (cases or CHECKS)}, key=_case_key)
    unknown = [k for k in keys if k not in CHECKS]
    if unknown:
        raise InvalidParameterError(
            f"unknown validation case(s) {', '.join(unknown)}; valid: {', '.join(sorted(CHECKS, key=_case_key))}"
        )
    results = []
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for i, key in enumerate(keys, 1):
            if progress is not None:
                progress(f"[{i}/{len(keys)}] {key}: {CHECKS[key].title} ...")
            res = run_check(key, full=full, out=out)
            results.append(res)
            if progress is not None:
                progress(f"[{i}/{len(keys)}] {key}: {res.status.upper()} in {res.runtime:.1f} s")
    finally:
        torch.set_num_threads(old)
    return results


def _fmt(v: Any) -> str:
    if isinstance(v, bool | np.bool_):
        return str(bool(v))
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, float | np.floating):
        v = float(v)
        if v == 0.0 or (1e-3 <= abs(v) < 1e4):
            return f"{v:.6g}"
        return f"{v:.3e}"
    return str(v)


def format_table(results: list[CheckResult]) -> str:
    """Plain-text table: case, measured, reference, tolerance, status, time (primary metric per case)."""
    rows = [("case", "measured", "reference", "tolerance", "status", "time")]
    for r in results:
        rows.append((r.case, _fmt(r.measured), _fmt(r.reference), r.tolerance, r.status, f"{r.runtime:.1f}s"))
    rows = [tuple(c if len(c) <= 44 else c[:41] + "..." for c in row) for row in rows]
    widths = [max(len(row[k]) for row in rows) for k in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    n = {s: sum(r.status == s for r in results) for s in STATUSES}
    total = sum(r.runtime for r in results)
    lines.append(f"\n{n['pass']} passed, {n['fail']} failed, {n['error']} errors in {total:.1f} s")
    return "\n".join(lines)


def _md(v: Any) -> str:
    return _fmt(v).replace("|", "\\|")


def write_report(results: list[CheckResult], out: str | Path, *, title: str | None = None) -> Path:
    """Write ``report.md`` into ``out``: a summary table and, per case, every metric and its figures.

    Args:
        results: from :func:`run_validation`.
        out: directory (created if needed); figure paths in the results are relative to it.
        title: heading (default names the tier).

    Returns:
        The path of ``report.md``.
    """
    from ..results.trajectory import environment_metadata

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tier = results[0].tier if results else "quick"
    n = {s: sum(r.status == s for r in results) for s in STATUSES}
    total = sum(r.runtime for r in results)
    meta = environment_metadata()
    lines = [
        f"# {title or f'flowsim validation report ({tier} tier)'}",
        "",
        f"{n['pass']} passed, {n['fail']} failed, {n['error']} errors; total check time {total:.1f} s. "
        f"flowsim {meta['flowsim']}, torch {meta['torch']}, scipy {meta['scipy']}, {meta['date']}.",
        "",
        "Status: *pass* — every metric within tolerance; *fail* — a metric outside its tolerance or a run "
        "that did not reach its horizon; *error* — the reference could not be computed or a needed module "
        "is missing (never counted as a pass). Times are log t = natural log of the flow time t.",
        "",
        "| case | title | measured | reference | tolerance | status | time |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.case} | {r.title.replace('|', '/')} | {_md(r.measured)} | {_md(r.reference)} | "
            f"{r.tolerance.replace('|', '/')} | **{r.status}** | {r.runtime:.1f} s |"
        )
    for r in results:
        lines += [
            "",
            f"## {r.case}: {r.title}",
            "",
            f"Status: **{r.status}** ({r.runtime:.1f} s). References: {r.references}.",
        ]
        if r.message:
            lines += ["", f"Message: {r.message}"]
        if r.metrics:
            lines += ["", "| metric | measured | reference | tolerance | ok |", "|---|---|---|---|---|"]
            for m in r.metrics:
                lines.append(
                    f"| {m.name.replace('|', '/')} | {_md(m.measured)} | {_md(m.reference)} | "
                    f"{m.tolerance.replace('|', '/')} | {'✓' if m.passed else '✗'} |"
                )
        for fig in r.figures:
            lines += ["", f"![{r.case}]({fig})"]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
