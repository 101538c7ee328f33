"""The seed paper's three findings on two-layer ReLU networks, C16–C18, with exact kinks.

* C16, same limit: ``PPower(3)`` and the smoothed p = 3 potential reach the same normalised network;
* C17, exponentially slow: hyperbolic entropy reaches its sparse geometry at a log t that grows like a power
  of β;
* C18, KKT: the Q-margin problem's KKT residual along the flow goes to 0.

Every run uses the Filippov driver (``kinks="filippov"``) with the ODE method of :data:`METHODS` for its
tier (one parameter: ``dopri5`` for the quick tier, ``radau``, the implicit Filippov driver, for the full one).

Normalised networks. A bias-free two-layer ReLU net f(x) = Σ_j a_j relu(⟨w_j, x⟩) is determined by the
signs s_j = sign a_j and the effective weights w̃_j = |a_j| w_j (f = Σ_j s_j relu(⟨w̃_j, x⟩)), which are
invariant under the rescaling symmetry (w_j, a_j) → (c w_j, a_j / c). Dividing by the smallest margin gives
the network at unit margin, w̃ / q_min; two networks are compared by the permutation-invariant distance

    D(A, B) = min_π (Σ_j ‖w̃ᴬ_j − w̃ᴮ_π(j)‖²)^{1/2} / ((Σ_j ‖w̃ᴬ_j‖² + Σ_j ‖w̃ᴮ_j‖²) / 2)^{1/2}

over neuron permutations π (``scipy.optimize.linear_sum_assignment``; a pair with different output signs
costs ‖w̃ᴬ_j‖² + ‖w̃ᴮ_π(j)‖², as if each were matched with a dead neuron).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import linear_sum_assignment, minimize, nnls

from ...analysis.references import kkt_residual
from ...data import Dataset, student_teacher_relu
from ...errors import ReferenceSolverError
from ...models import TwoLayerReLU
from ...potentials import Euclidean, HyperbolicEntropy, PPower, SmoothedHomogeneous
from ._common import _require_extra, _sim
from ._framework import CheckFailure, _Ctx, register_check

__all__ = ["METHODS", "OTHER_PATTERN", "config_distance", "unit_margin_network"]

#: ODE method per tier for C16–C18 (always with ``kinks="filippov"``). The full tier's long horizons use the
#: implicit Filippov driver: the same metrics as dopri5 to ~1e-6, CPU C16 48 s / C17 75 s / C18 83 s against
#: 69 / 133 / 63 s with dopri5.
METHODS = {"quick": "dopri5", "full": "radau"}


#: λ of ``SmoothedHomogeneous(3, λ)`` per tier whose C16 run ends on another activation pattern than the
#: ``PPower(3)`` run (measured; :func:`check_c16`).
OTHER_PATTERN = {"quick": frozenset(), "full": frozenset({0.1})}


def _method(ctx: _Ctx) -> str:
    return METHODS["full" if ctx.full else "quick"]


def _split(theta: np.ndarray, d: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """(W `(m, d)`, a `(m,)`) of a flat two-layer parameter vector (``TwoLayerReLU`` layout: W rows, then a)."""
    return theta[: m * d].reshape(m, d), theta[m * d : m * d + m]


def _margins(wt: np.ndarray, s: np.ndarray, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    return y * (np.maximum(X @ wt.T, 0.0) @ s)


def unit_margin_network(theta: np.ndarray, X: np.ndarray, y: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Effective weights w̃_j = |a_j| w_j at unit margin (divided by q_min) and output signs, in numpy.

    Args:
        theta: flat parameters of ``TwoLayerReLU(d, m)``, shape `(m·d + m,)`.
        X: inputs `(n, d)`; y: labels `(n,)` (±1).
        m: width.

    Returns:
        (w̃ / q_min `(m, d)`, s `(m,)`).

    Raises:
        CheckFailure: if θ does not classify every point (q_min ≤ 0).
    """
    W, a = _split(np.asarray(theta, dtype=np.float64), X.shape[1], m)
    wt, s = np.abs(a)[:, None] * W, np.sign(a)
    q_min = float(_margins(wt, s, X, y).min())
    if not q_min > 0.0:
        raise CheckFailure(f"the network does not classify every point (q_min = {q_min:.3g}); run longer")
    return wt / q_min, s


def config_distance(A: tuple[np.ndarray, np.ndarray], B: tuple[np.ndarray, np.ndarray]) -> float:
    """Permutation-invariant relative distance D(A, B) of two (w̃, s) configurations (module docstring)."""
    (wa, sa), (wb, sb) = A, B
    na, nb = (wa**2).sum(-1), (wb**2).sum(-1)
    cost = ((wa[:, None, :] - wb[None, :, :]) ** 2).sum(-1)
    cost = np.where(sa[:, None] != sb[None, :], na[:, None] + nb[None, :], cost)
    rows, cols = linear_sum_assignment(cost)
    return float(math.sqrt(cost[rows, cols].sum() / ((na.sum() + nb.sum()) / 2.0)))


def _lp_q_margin(theta: np.ndarray, X: np.ndarray, y: np.ndarray, m: int, p: float) -> float:
    """ℓp Q-margin q_min / ‖θ‖_p^{2} of a two-layer ReLU (L = 2), computed in numpy from θ alone."""
    W, a = _split(theta, X.shape[1], m)
    q_min = float((y * (np.maximum(X @ W.T, 0.0) @ a)).min())
    return q_min / float(np.sum(np.abs(theta) ** p)) ** (2.0 / p)


def _l3_pattern_reference(wt: np.ndarray, s: np.ndarray, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Minimiser of Σ_j ‖w̃_j‖₃^{3/2} s.t. y_i Σ_j s_j relu⟨w̃_j, x_i⟩ ≥ 1 on the activation pattern of ``wt``.

    With the Q-balance of the ℓ3 horizon (‖w_j‖₃³ = |a_j|³ in the limit) Σ_k |θ_k|³ = 2 Σ_j ‖w̃_j‖₃^{3/2}, so
    this is the ℓ3 Q-margin problem in the effective weights. On a fixed pattern (neuron j on at x_i iff
    ⟨w̃_j, x_i⟩ > 0 for the given ``wt``, kept by every side constraint ⟨w̃_j, x_i⟩ ≥ 0 where on, ≤ 0 where
    off) the margins are linear and the objective strictly convex, so the minimiser is unique. It is solved as
    a conic program with power cones (:func:`_l3_cone_program`) by Clarabel's interior-point method, which
    needs no starting point (nothing is taken from the flow but the pattern) and is indifferent to the
    objective's missing curvature at w̃_j = 0. Every neuron is kept, none is fixed at 0 beforehand: a neuron
    dying along the flow stays in the program, and the optimum sends it to 0 by itself if it does not help (on
    C16's quick net one at 0.16 % of the largest mass ends at 1e-7, and the objective equals the one with that
    neuron removed to 1e-10), while a threshold for "dying" could remove a neuron the optimum needs.

    Args:
        wt: effective weights w̃ `(m, d)` whose activation pattern is used (any positive scale).
        s: output signs `(m,)` (±1).
        X: inputs `(n, d)`; y: labels `(n,)` (±1).

    Returns:
        (w̃* `(m, d)` at unit margin, its balanced ℓ3 Q-margin 1 / (2 Σ_j ‖w̃*_j‖₃^{3/2})^{2/3}).

    Raises:
        CheckSkipped: if clarabel (the ``vision`` extra) is not installed.
        ReferenceSolverError: if Clarabel's status is not ``Solved`` with or without equilibration (e.g. the
            pattern admits no margin ≥ 1: ``PrimalInfeasible``), or if its result violates a constraint by more
            than 1e-7.

    References:
        Goulart & Chen, "Clarabel: An interior-point solver for conic programs with quadratic objectives",
        arXiv:2405.12762 (2024).
    """
    clarabel = _require_extra("clarabel", "vision")
    m, d = wt.shape
    margin, side = _pattern_rows(wt, s, X, y)
    program = _l3_cone_program(margin, side, m, d, clarabel)
    statuses = []
    # at tolerance 1e-10 the power cones leave a few programs AlmostSolved or InsufficientProgress, not the
    # same ones with and without Ruiz equilibration: the second try solves those of the first
    for equilibrate in (True, False):
        settings = clarabel.DefaultSettings()
        settings.verbose = False
        settings.equilibrate_enable = equilibrate
        settings.tol_gap_abs = settings.tol_gap_rel = settings.tol_feas = 1e-10
        sol = clarabel.DefaultSolver(*program, settings).solve()
        status = str(sol.status)
        statuses.append(f"{status} after {sol.iterations} iterations")
        if status == "Solved":
            break
    else:
        raise ReferenceSolverError(
            f"ℓ3 pattern program: Clarabel status {statuses[0]} (with equilibration), {statuses[1]} (without)"
        )
    v = np.asarray(sol.x)[: m * d]
    viol = max(float(np.max(1.0 - margin @ v)), float(np.max(-(side @ v))), 0.0)
    if viol > 1e-7:
        raise ReferenceSolverError(f"ℓ3 pattern program: Clarabel {status}, constraint violation {viol:.2e}")
    w = v.reshape(m, d) / float((margin @ v).min())  # exactly unit margin (the margin below is scale-free)
    return w, 1.0 / (2.0 * float((np.cbrt((np.abs(w) ** 3).sum(-1)) ** 1.5).sum())) ** (2.0 / 3.0)


def _pattern_rows(wt: np.ndarray, s: np.ndarray, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Margin rows `(n, m·d)` and pattern side rows `(n·m, m·d)` of the activation pattern of ``wt``, on vec(w̃).

    Neuron j is on at x_i iff ⟨w̃_j, x_i⟩ > 0; on that pattern the margin of x_i is the linear form
    y_i Σ_{j on} s_j ⟨w̃_j, x_i⟩, and the pattern is kept by ±⟨w̃_j, x_i⟩ ≥ 0 (+ where on, − where off).
    """
    n, (m, d) = len(y), wt.shape
    P = (X @ wt.T > 0.0).astype(np.float64)  # (n, m)
    margin = ((y[:, None] * P * s[None, :])[:, :, None] * X[:, None, :]).reshape(n, m * d)
    side = (((2.0 * P - 1.0)[:, :, None] * X[:, None, :])[:, :, None, :] * np.eye(m)[None, :, :, None]).reshape(
        n * m, m * d
    )
    return margin, side


def _l3_cone_program(margin: np.ndarray, side: np.ndarray, m: int, d: int, clarabel):
    """Clarabel data (P, q, A, b, cones) of min Σ_j ‖w_j‖₃^{3/2} s.t. margin·w ≥ 1, side·w ≥ 0 (A x + s = b, s ∈ K).

    Variables x = (w `(m·d)`, r `(m·d)`, t `(m)`, u `(m)`): ‖w_j‖₃ ≤ t_j through r_jk ≥ 0, Σ_k r_jk = t_j and
    (r_jk, t_j, w_jk) ∈ K_pow(1/3), i.e. |w_jk|³ ≤ r_jk t_j², summed Σ_k |w_jk|³ ≤ t_j³; t_j^{3/2} ≤ u_j through
    (u_j, 1, t_j) ∈ K_pow(2/3); the objective is Σ_j u_j (Clarabel's K_pow(α) = {x^α y^{1−α} ≥ |z|, x, y ≥ 0}).
    """
    from scipy import sparse

    md = m * d
    iw, ir, it, iu = 0, md, 2 * md, 2 * md + m  # offsets of w, r, t, u in x
    nx = 2 * md + 2 * m
    k, j = np.arange(md), np.repeat(np.arange(m), d)  # flat entry, its neuron
    jm = np.arange(m)
    sums = sparse.coo_matrix(
        (np.r_[np.ones(md), -np.ones(m)], (np.r_[j, jm], np.r_[ir + k, it + jm])), shape=(m, nx)
    )  # Σ_k r_jk − t_j = 0
    linear = sparse.hstack(
        [sparse.csr_matrix(-np.vstack([margin, side])), sparse.csr_matrix((len(margin) + len(side), nx - md))]
    )
    pow3 = sparse.coo_matrix(
        (-np.ones(3 * md), (np.arange(3 * md), np.column_stack([ir + k, it + j, iw + k]).ravel())), shape=(3 * md, nx)
    )
    pow32 = sparse.coo_matrix(
        (-np.ones(2 * m), (np.r_[3 * jm, 3 * jm + 2], np.r_[iu + jm, it + jm])), shape=(3 * m, nx)
    )
    b_pow32 = np.zeros(3 * m)
    b_pow32[1::3] = 1.0
    A = sparse.vstack([sums, linear, pow3, pow32]).tocsc()
    b = np.r_[np.zeros(m), -np.ones(len(margin)), np.zeros(len(side) + 3 * md), b_pow32]
    cones = [clarabel.ZeroConeT(m), clarabel.NonnegativeConeT(len(margin) + len(side))]
    cones += [clarabel.PowerConeT(1.0 / 3.0)] * md + [clarabel.PowerConeT(2.0 / 3.0)] * m
    q = np.r_[np.zeros(nx - m), np.ones(m)]
    return sparse.csc_matrix((nx, nx)), q, A, b, cones


def _student_teacher(ctx: _Ctx) -> tuple[Dataset, int, int]:
    """Student–teacher data (teacher width 2, 2-sparse inputs, margin filter 0.1), the input dim and width
    (quick tier n = 12, d = 4, m = 6; full tier n = 20, d = 5, m = 10)."""
    n, d, m = (20, 5, 10) if ctx.full else (12, 4, 6)
    return student_teacher_relu(n=n, d=d, teacher_width=2, seed=0, margin=0.1), d, m


def _run(ctx: _Ctx, data: Dataset, d: int, m: int, pot, save_log_t, rtol: float, init_scale: float):
    return _sim(
        TwoLayerReLU(d, m),
        data,
        pot,
        kinks="filippov",
        method=_method(ctx),
        save_log_t=np.asarray(save_log_t, dtype=np.float64),
        rtol=rtol,
        atol=rtol * 1e-2,
        init_scale=init_scale,
        seed=1,
    )


def _power_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares exponent b of y ≈ c·x^b (log–log) and the fit's R²."""
    lx, ly = np.log(x), np.log(y)
    b, c = np.polyfit(lx, ly, 1)
    resid = ly - (b * lx + c)
    ss = float(((ly - ly.mean()) ** 2).sum())
    return float(b), 1.0 - float((resid**2).sum()) / ss if ss > 0 else float("nan")


@register_check(
    "C16",
    "Networks: PPower(3) and smoothed p = 3 reach the same normalised two-layer ReLU net; paths differ",
    "Jacobs & Montúfar 2026; Pesme, Dragomir & Flammarion, NeurIPS 2024",
)
def check_c16(ctx: _Ctx) -> None:
    """C16, seed-paper finding (1) on networks: same ℓ3 horizon ⇒ same limit problem, and the same limit network
    where the flows end on the same activation pattern.

    Student–teacher two-layer ReLU (quick: n = 12, d = 4, m = 6 to log t = 100; full: n = 20, d = 5, m = 10 to
    log t = 1000 and also λ = 0.1), init scale 0.5, the same initial θ for ``PPower(3)`` and
    ``SmoothedHomogeneous(3, λ)`` (λ = 0.01). Measured, from the saved θ in numpy: the permutation-invariant
    distance D of the unit-margin networks w̃/q_min (module docstring) at log t = 1 (paths differ) and at the end,
    and the ℓ3 Q-margins q_min/‖θ‖₃² (coefficient-free, so the two potentials' different Q∞ constants do not
    enter). Reference: the unique minimiser of the ℓ3 Q-margin problem on a run's final activation pattern
    (:func:`_l3_pattern_reference`, a conic program solved by Clarabel, which uses nothing of the flow but that
    pattern). Every run's margin must approach its pattern optimum's from below and its network that optimum
    (the limit problem is the same). For a λ listed in :data:`OTHER_PATTERN` the smoothed run ends on another
    activation pattern than the PPower run, whose optimum is another KKT point of the same ℓ3 problem: the check
    asserts the two optima differ (D ≥ 0.2) instead of D(PPower, smoothed) → 0. On the full net λ = 0.1 does
    (measured to log t = 10⁴: 16 of 200 neuron–point pairs differ, the optima are D = 0.39 apart, with ℓ3 margins
    0.2918 against 0.2966; D(PPower, smoothed) = 0.388 at log t = 10³ and 0.391 at 10⁴, while each run's distance
    to its own optimum decreases like (log t)^−0.5); the quick net's λ = 0.01 and the full net's λ = 0.01 end on
    PPower's pattern. Skipped (before any run) when clarabel is not installed.
    """
    _require_extra("clarabel", "vision")
    data, d, m = _student_teacher(ctx)
    X, y = data.X.numpy(), data.y.numpy()
    end = 1000.0 if ctx.full else 100.0
    save = np.unique(np.concatenate([[1.0, 10.0, 30.0], np.geomspace(1.0, end, 12)]))
    lams = (0.01, 0.1) if ctx.full else (0.01,)
    other = OTHER_PATTERN["full" if ctx.full else "quick"]
    pp = _run(ctx, data, d, m, PPower(3.0), save, 1e-8, 0.5)
    A = [unit_margin_network(th, X, y, m) for th in pp.theta[1:]]
    ref_pp = _c16_limit(ctx, "PPower(3)", pp.theta[-1], A[-1], X, y, m, end)
    g_pp = _lp_q_margin(pp.theta[-1], X, y, m, 3.0)
    curves = {}
    i1, i10 = (int(np.searchsorted(save, v)) for v in (1.0, 10.0))
    for lam in lams:
        tag = f"λ = {lam:g}"
        sm = _run(ctx, data, d, m, SmoothedHomogeneous(3.0, lam), save, 1e-8, 0.5)
        B = [unit_margin_network(th, X, y, m) for th in sm.theta[1:]]
        D = np.array([config_distance(a, b) for a, b in zip(A, B, strict=True)])
        curves[lam] = D
        ref_sm = _c16_limit(ctx, f"{tag}, smoothed", sm.theta[-1], B[-1], X, y, m, end)
        d_refs = config_distance(ref_pp, ref_sm)
        ctx.lower(f"{tag}: D(PPower, smoothed) at log t = 1 (paths differ)", float(D[i1]), 0.2, "> 0")
        b, r2 = _power_fit(save[i10:], D[i10:])
        ctx.note(f"{tag}: D(log t) ∝ (log t)^{b:.2f} on log t ∈ [10, {end:g}] (R² = {r2:.3f}), {D[-1]:.3g} at the end")
        if lam in other:
            ctx.lower(f"{tag}: D(PPower's pattern optimum, smoothed's) (another KKT point)", d_refs, 0.2, "> 0")
            continue
        ctx.upper(f"{tag}: D(PPower's pattern optimum, smoothed's) (same pattern)", d_refs, 1e-4, 0.0)
        ctx.upper(f"{tag}: D(PPower, smoothed) at log t = {end:g} (same limit)", float(D[-1]), 0.05, 0.0)
        ctx.upper(f"{tag}: D at log t = {end:g} / D at log t = 1", float(D[-1] / D[i1]), 0.1, "→ 0")
        ctx.close(f"{tag}: ℓ3 Q-margin, smoothed vs PPower", _lp_q_margin(sm.theta[-1], X, y, m, 3.0), g_pp, rtol=5e-3)
        ctx.holds(
            f"{tag}: D decreasing in log t on [10, {end:g}]",
            bool(np.all(np.diff(D[i10:]) < 0)),
            f"exponent {b:.2f}, R² {r2:.3f}",
            "→ 0",
            "decreasing",
        )
    ctx.figure(lambda plt: _draw_c16(plt, save, curves))


def _c16_limit(
    ctx: _Ctx, name: str, theta: np.ndarray, net: tuple[np.ndarray, np.ndarray], X, y, m: int, end: float
) -> tuple[np.ndarray, np.ndarray]:
    """Check a C16 run's final state against the ℓ3 optimum of its own activation pattern; return that optimum.

    Records: ℓ3 Q-margin / the optimum's − 1 (never above, ≤ 1e-6), the ratio at the end (≥ 0.98) and the
    distance D(network, optimum) (≤ 0.15).
    """
    ref, g_ref = _l3_pattern_reference(*net, X, y)
    g = _lp_q_margin(theta, X, y, m, 3.0)
    ctx.upper(f"{name}: ℓ3 Q-margin / pattern optimum − 1 (never above)", g / g_ref - 1.0, 1e-6, 0.0)
    ctx.lower(f"{name}: ℓ3 Q-margin / pattern optimum at log t = {end:g}", g / g_ref, 0.98, 1.0)
    ctx.upper(f"{name}: D(net, pattern optimum) at log t = {end:g}", config_distance(net, (ref, net[1])), 0.15, 0.0)
    return ref, net[1]


def _draw_c16(plt, save: np.ndarray, curves: dict) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 3.8), constrained_layout=True)
    for lam, D in curves.items():
        ax.loglog(save, D, marker=".", label=f"PPower(3) vs smoothed p = 3, λ = {lam:g}")
    ax.set_xlabel("log t")
    ax.set_ylabel("D(unit-margin networks)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title("C16 / finding 1 on networks: same ℓ3 horizon ⇒ same limit")


def _effective_neurons(theta: np.ndarray, d: int, m: int) -> np.ndarray:
    """Participation ratio n_eff = (Σ_j μ_j)² / Σ_j μ_j² of the neuron masses μ_j = ‖|a_j| w_j‖₂, per state."""
    W, a = theta[:, : m * d].reshape(-1, m, d), theta[:, m * d :]
    mass = np.linalg.norm(np.abs(a)[..., None] * W, axis=-1)
    return mass.sum(-1) ** 2 / (mass**2).sum(-1)


def _sparse_time(log_t: np.ndarray, n_eff: np.ndarray, level: float) -> float:
    """log t* at which n_eff last comes down through ``level`` (linear interpolation); inf if above at the end."""
    above = np.flatnonzero(n_eff > level)
    if above.size == 0:
        return float(log_t[0])
    k = int(above[-1])
    if k == n_eff.size - 1:
        return math.inf
    x0, x1, y0, y1 = log_t[k], log_t[k + 1], n_eff[k], n_eff[k + 1]
    return float(x0 + (y0 - level) * (x1 - x0) / (y0 - y1))


@register_check(
    "C17",
    "Networks: hyperbolic entropy reaches the sparse geometry at log t* ∝ β^b (b ≈ L = 2): t* = e^{cβ^b}",
    "Jacobs & Montúfar 2026; Woodworth et al., COLT 2020; Lyu & Li, ICLR 2020",
)
def check_c17(ctx: _Ctx) -> None:
    """C17, seed-paper finding (2) on networks: hyperbolic entropy is exponentially slow in β.

    Student–teacher two-layer ReLU (teacher width k = 2; quick n = 12, d = 4, m = 6, β ∈ {0.25, 0.5, 0.75}
    to log t = 300; full n = 20, d = 5, m = 10, β ∈ {0.75, 1, 1.5, 2, 3, 4} to log t = 3000), init scale 0.1.
    *Sparse geometry reached* at log t*: the effective neuron count n_eff = (Σ_j μ_j)² / Σ_j μ_j² (neuron
    masses μ_j = ‖|a_j| w_j‖₂) comes down through k + 0.1 for the last time (interpolated between save
    points; the sparse limit has n_eff = k, the teacher's width, read from the data generator). For |θ| ≪ β
    the flow is gradient flow with learning rate β, and the ℓ1 geometry takes over once the weights, growing
    like (log t)^{1/L}, reach β, which suggests log t* ∝ β^L (L = 2). Measured: log t* per β, the fitted
    exponent b of log t* ∝ β^b and its R² (checked: b within [1, 3], R² ≥ 0.95, log t* increasing; the
    constant is not checked), i.e. t* = exp(c β^b) grows exponentially in β^b.
    """
    data, d, m = _student_teacher(ctx)
    k = len(data.info["teacher"]["a"])
    level = k + 0.1
    end = 3000.0 if ctx.full else 300.0
    # the larger net of the full tier is sparse from log t ≈ 1 on for β ≤ 0.5: its range starts at 0.75
    betas = (0.75, 1.0, 1.5, 2.0, 3.0, 4.0) if ctx.full else (0.25, 0.5, 0.75)
    save = np.geomspace(1.0, end, 120 if ctx.full else 60)
    curves, tstar = {}, []
    for beta in betas:
        tr = _run(ctx, data, d, m, HyperbolicEntropy(beta), save, 1e-7, 0.1)
        n_eff = _effective_neurons(np.asarray(tr.theta[1:]), d, m)
        curves[beta] = n_eff
        tstar.append(_sparse_time(save, n_eff, level))
    ts = np.array(tstar)
    b, r2 = _power_fit(np.array(betas), ts) if np.isfinite(ts).all() else (math.nan, math.nan)
    ctx.close("exponent b of log t* ∝ β^b", b, 2.0, atol=1.0)
    ctx.lower("R² of the log–log fit of log t* against β", r2, 0.95, 1.0)
    ctx.holds(
        f"sparse geometry (n_eff ≤ {level:g}) reached by log t = {end:g} for every β",
        bool(np.isfinite(ts).all()),
        ", ".join(f"β={b:g}: {t:.1f}" for b, t in zip(betas, ts, strict=True)),
        f"n_eff → {k} (teacher width)",
        "finite log t*",
    )
    ctx.holds("log t* increasing in β", bool(np.all(np.diff(ts) > 0)), f"{ts.round(1).tolist()}", "increasing", "↑")
    ctx.note(f"log t* ∝ β^{b:.2f} (R² = {r2:.3f}); theory suggests b = L = 2; t* = exp(c β^b)")
    ctx.figure(lambda plt: _draw_c17(plt, save, curves, betas, ts, level, b))


def _draw_c17(plt, save, curves: dict, betas, ts, level: float, b: float) -> None:
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.8), constrained_layout=True)
    for beta, n_eff in curves.items():
        ax[0].semilogx(save, n_eff, label=f"β = {beta:g}")
    ax[0].axhline(level, color="k", lw=0.6)
    ax[0].set_xlabel("log t")
    ax[0].set_ylabel("n_eff = (Σμ)² / Σμ²")
    ax[0].legend(fontsize=8)
    ax[0].grid(alpha=0.3)
    ax[1].loglog(list(betas), ts, marker="o", label=f"log t* ∝ β^{b:.2f}")
    ax[1].set_xlabel("β")
    ax[1].set_ylabel("log t*  (n_eff ≤ k + 0.1 for good)")
    ax[1].legend(fontsize=8)
    ax[1].grid(alpha=0.3, which="both")
    fig.suptitle("C17 / finding 2 on networks: hyperbolic entropy reaches the sparse geometry at log t* ∝ β^b")


@register_check(
    "C18",
    "Networks: KKT residual of the Q-margin problem → 0 along the flow (two-layer ReLU)",
    "Lyu & Li, ICLR 2020; Soudry et al., JMLR 2018; Jacobs & Montúfar 2026",
)
def check_c18(ctx: _Ctx) -> None:
    """C18: KKT residuals of min Q∞(θ) s.t. q_i(θ) ≥ 1 along mirror flow on a two-layer ReLU.

    Gradient flow (R = ½‖θ‖₂², Lyu & Li) and ``PPower(3)`` (R ∝ ‖θ‖₃³) on the student–teacher net of C16
    (init scale 0.5; quick: GF to log t = 300, PPower to 100; full: both to 1000 on the larger net).
    Reference: the relative stationarity residual at 12 log-spaced states from log t = 10, with the margins'
    gradients in closed form and Clarke's generalised gradient at pairs on a kink (:func:`_clarke_kkt_residual`;
    along the Filippov solution neurons slide on switching surfaces, where one-sided gradients leave a residual
    that never vanishes), cross-checked against :func:`flowsim.analysis.references.kkt_residual` (autograd,
    NNLS) at states without kink pairs. Measured: the residual and the complementarity at the end, the decrease
    from log t = 10, and the exponent b of residual ∝ (log t)^b fitted over the run (with R²). For linear models
    the direction, and with it the residual, converges like 1/log t (Soudry et al.), b = −1; for networks no rate
    is proved (Lyu & Li show convergence only), so b ≤ −0.3 is checked and b reported.
    """
    data, d, m = _student_teacher(ctx)
    X, y = data.X.numpy(), data.y.numpy()
    model = TwoLayerReLU(d, m)
    runs = ((Euclidean(), 2.0, 1000.0 if ctx.full else 300.0), (PPower(3.0), 3.0, 1000.0 if ctx.full else 100.0))
    curves, worst_cross = {}, 0.0
    for pot, p, end in runs:
        save = np.geomspace(10.0, end, 12)
        tr = _run(ctx, data, d, m, pot, save, 1e-9, 0.5)
        res = [_clarke_kkt_residual(th, X, y, m, p) for th in tr.theta[1:]]
        stat, comp, kinks = (np.array(v) for v in zip(*res, strict=True))
        for th, st in zip(tr.theta[1:][kinks == 0], stat[kinks == 0], strict=True):
            lib = kkt_residual(model, th, data.X, data.y, p=p).stationarity
            worst_cross = max(worst_cross, abs(lib - st))
        curves[repr(pot)] = (save, stat)
        tag = f"{pot!r} (p = {p:g})"
        b, r2 = _power_fit(save, stat)
        ctx.upper(f"{tag}: stationarity residual at log t = {end:g}", float(stat[-1]), 0.15, 0.0)
        ctx.upper(f"{tag}: residual at log t = {end:g} / at log t = 10", float(stat[-1] / stat[0]), 0.2, "→ 0")
        ctx.upper(f"{tag}: complementarity at log t = {end:g}", float(comp[-1]), 5e-3, 0.0)
        ctx.upper(f"{tag}: exponent b of residual ∝ (log t)^b on [10, {end:g}]", b, -0.3, "−1 (linear models)")
        ctx.note(
            f"{tag}: residual ∝ (log t)^{b:.2f} (R² = {r2:.3f}); {int(kinks[-1])} near-active kink pairs at the end"
        )
    ctx.upper("|Clarke residual − kkt_residual| at states without kink pairs", worst_cross, 1e-6, 0.0)
    ctx.figure(lambda plt: _draw_c18(plt, curves))


def _draw_c18(plt, curves: dict) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 3.8), constrained_layout=True)
    for name, (save, stat) in curves.items():
        ax.loglog(save, stat, marker=".", label=name)
    ax.set_xlabel("log t")
    ax.set_ylabel("relative KKT stationarity residual")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title("C18: KKT residual of the Q-margin problem, two-layer ReLU")


def _clarke_kkt_residual(
    theta: np.ndarray, X: np.ndarray, y: np.ndarray, m: int, p: float, active_tol: float = 1e-2, kink_tol: float = 1e-6
) -> tuple[float, float, int]:
    """KKT residual of min ‖θ‖_p^p s.t. q_i(θ) ≥ 1 for a two-layer ReLU, with Clarke subgradients at kinks.

    As :func:`flowsim.analysis.references.kkt_residual` (rescale to q_min = 1, near-active set S, relative
    stationarity residual), with the margins' gradients written out in numpy (∂q_i/∂w_j = y_i a_j 1[⟨w_j, x_i⟩ > 0]
    x_i, ∂q_i/∂a_j = y_i relu⟨w_j, x_i⟩) and, for pairs on a kink (|⟨w_j, x_i⟩| ≤ kink_tol ‖w_j‖ ‖x_i‖, e.g. a
    neuron sliding along a switching surface), the whole Clarke generalised gradient: the w_j block of q_i's
    gradient is y_i a_j σ_ij x_i with σ_ij ∈ [0, 1]. With μ_ij = λ_i σ_ij the problem

        min ‖g − Σ_{i∈S} λ_i ∇q_i⁰ − Σ_{(i,j) kink} μ_ij y_i a_j x_i (w_j block)‖₂  s.t. λ ≥ 0, 0 ≤ μ_ij ≤ λ_i

    is a convex QP (g = sign θ |θ|^{p−1}), solved by SLSQP from the NNLS solution with σ = 0.

    Returns:
        (relative stationarity residual, complementarity Σλ_i(q_i − 1)/Σλ_i, number of kink pairs).

    Raises:
        CheckFailure: if θ does not classify every point.
        ReferenceSolverError: if the QP solver fails.
    """
    d = X.shape[1]
    W, a = _split(np.asarray(theta, dtype=np.float64), d, m)
    pre = X @ W.T  # (n, m)
    q = y * (np.maximum(pre, 0.0) @ a)
    if not q.min() > 0.0:
        raise CheckFailure(f"the network does not classify every point (q_min = {q.min():.3g}); run longer")
    c = math.sqrt(q.min())  # L = 2
    W, a, pre, q = W / c, a / c, pre / c, q / q.min()
    S = np.flatnonzero(q - 1.0 <= active_tol)
    norms = np.linalg.norm(W, axis=1)[None, :] * np.linalg.norm(X[S], axis=1)[:, None]
    kink = np.abs(pre[S]) <= kink_tol * norms
    ki, kj = np.nonzero(kink)
    on = np.where(kink, 0.0, (pre[S] > 0.0).astype(np.float64))  # slope σ of kink pairs: the μ variables below
    # gradients of the near-active margins, shape (|S|, m·d + m)
    Gw = (y[S, None] * a[None, :] * on)[:, :, None] * X[S, None, :]
    G = np.concatenate([Gw.reshape(S.size, -1), y[S, None] * np.maximum(pre[S], 0.0)], axis=1)
    E = np.zeros((ki.size, G.shape[1]))
    for r, (i, j) in enumerate(zip(ki, kj, strict=True)):
        E[r, j * d : (j + 1) * d] = y[S[i]] * a[j] * X[S[i]]
    th = np.concatenate([W.ravel(), a])
    g = np.sign(th) * np.abs(th) ** (p - 1.0)
    M = np.concatenate([G, E]).T  # (P, |S| + |K|)
    lam0, _ = nnls(G.T, g)
    x0 = np.concatenate([lam0, np.zeros(ki.size)])
    nS = S.size
    cons = [{"type": "ineq", "fun": lambda x: x[ki] - x[nS:], "jac": lambda x: _coupling(ki, nS, x.size)}]
    res = minimize(
        lambda x: (0.5 * float(((M @ x - g) ** 2).sum()), M.T @ (M @ x - g)),
        x0,
        jac=True,
        method="SLSQP",
        bounds=[(0.0, None)] * x0.size,
        constraints=cons if ki.size else [],
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    if not res.success and res.status != 9:  # 9: iteration limit (the residual is still an upper bound)
        raise ReferenceSolverError(f"Clarke KKT QP: SLSQP {res.message!r}")
    x = np.maximum(res.x, 0.0)
    x[nS:] = np.minimum(x[nS:], x[ki])  # feasible point: the residual below is attained, an upper bound
    if np.linalg.norm(M @ x - g) > np.linalg.norm(M @ x0 - g):
        x = x0
    lam = x[:nS]
    stat = float(np.linalg.norm(M @ x - g) / np.linalg.norm(g))
    comp = float(lam @ (q[S] - 1.0) / lam.sum()) if lam.sum() > 0 else 0.0
    return stat, comp, int(ki.size)


def _coupling(ki: np.ndarray, nS: int, size: int) -> np.ndarray:
    """Jacobian of λ_{i(r)} − μ_r ≥ 0 over (λ, μ)."""
    J = np.zeros((ki.size, size))
    J[np.arange(ki.size), ki] = 1.0
    J[np.arange(ki.size), nS + np.arange(ki.size)] = -1.0
    return J
