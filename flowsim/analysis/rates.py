"""Convergence-rate fits along a trajectory: loss decay, norm growth, margin gap, with fit confidence.

Rates of homogeneous-network training are power laws in t with logarithmic corrections, or powers of
log t. Every fit here is an ordinary least-squares line in log-coordinates over a chosen window of
**log t** (natural log of time t; never t itself, so windows like log t ∈ [1e2, 1e6] work):

* :func:`fit_loss_rate` — log L = c + a·log t + b·log log t, i.e. L ≈ C t^a (log t)^b.
  Gradient flow, linear model (Soudry et al. 2018): a = −1, b = 0 (t·L → Σ α_n).
  L-homogeneous nets (Lyu & Li 2020): a = −1, b = −(2 − 2/L).
  With ``log_power=k`` given, only the residual slope of log(t (log t)^k L) against log log t is fitted
  (0 when the correction (log t)^{−k} is right); ``fix_a=-1`` fixes the power of t.
* :func:`fit_norm_growth` — log ‖θ‖ = c + γ·log log t, ‖θ‖ ≈ C (log t)^γ (γ = 1/L under gradient flow).
* :func:`fit_margin_gap` — gap = limit − margin ≈ C (log t)^{−κ}; with an unknown limit the three
  parameters are fitted by nonlinear least squares.

Each returns a :class:`RateFit` with the coefficients, their standard errors (OLS, σ̂²(XᵀX)⁻¹),
95 % confidence intervals (Student t), R², the window and the number of points. Trajectory points are
deterministic and correlated, so the standard errors measure the misfit of the model over the window
(how well a pure power law describes the data there), not sampling noise.

References:
    Soudry, Hoffer, Nacson, Gunasekar & Srebro, "The Implicit Bias of Gradient Descent on Separable Data",
    JMLR 2018. Lyu & Li, "Gradient Descent Maximizes the Margin of Homogeneous Neural Networks", ICLR 2020.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import least_squares

from ..errors import InvalidParameterError

__all__ = ["RateFit", "fit_linear", "fit_loss_rate", "fit_norm_growth", "fit_margin_gap", "window_mask"]


def _t_quantile(dof: int) -> float:
    """Student-t 97.5% quantile (two-sided 95% interval); scipy.stats, slow to import, is loaded on first use."""
    from scipy import stats

    return float(stats.t.ppf(0.975, dof))


@dataclass
class RateFit:
    """Result of a rate fit.

    Attributes:
        params: fitted coefficients by name (e.g. ``{"a": -1.0, "b": -0.998, "c": 0.3}``).
        stderr: standard errors by name (same keys).
        ci95: 95 % confidence intervals by name, ``(low, high)``.
        r2: coefficient of determination of the fit in the fitted coordinates.
        window: the window in log t, ``(lo, hi)``.
        n: number of points in the window.
        model: the fitted formula, in words.
        residual_rms: RMS residual in the fitted coordinates.
    """

    params: dict[str, float]
    stderr: dict[str, float]
    ci95: dict[str, tuple[float, float]]
    r2: float
    window: tuple[float, float]
    n: int
    model: str
    residual_rms: float
    extra: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> float:
        return self.params[key]

    def within(self, key: str, value: float, tol: float) -> bool:
        """Whether ``params[key]`` is within ``tol`` of ``value``."""
        return abs(self.params[key] - value) <= tol

    def __str__(self) -> str:
        ps = ", ".join(f"{k} = {v:.5g} ± {self.stderr[k]:.2g}" for k, v in self.params.items())
        return (
            f"{self.model}: {ps}; R² = {self.r2:.6f}, n = {self.n}, "
            f"log t ∈ [{self.window[0]:.4g}, {self.window[1]:.4g}]"
        )


def window_mask(log_t: np.ndarray, window: tuple[float, float] | None) -> np.ndarray:
    """Boolean mask of finite points with log t inside ``window`` (inclusive); None: all finite, log t > 0."""
    log_t = np.asarray(log_t, dtype=np.float64)
    ok = np.isfinite(log_t)
    if window is None:
        return ok & (log_t > 0)
    lo, hi = window
    if not lo < hi:
        raise InvalidParameterError(f"a window must be (lo, hi) in log t with lo < hi, got {window}")
    return ok & (log_t >= lo) & (log_t <= hi)


def fit_linear(X: np.ndarray, y: np.ndarray, names: list[str]) -> tuple[dict, dict, dict, float, float]:
    """OLS y ≈ X β with standard errors, 95 % intervals, R² and RMS residual.

    Args:
        X: design matrix, shape `(n, k)`.
        y: responses, shape `(n,)`.
        names: coefficient names, length k.

    Raises:
        InvalidParameterError: if there are not more points than coefficients.
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n, k = X.shape
    if n <= k:
        raise InvalidParameterError(
            f"a rate fit with {k} coefficients needs more than {k} points in the window, got {n}; "
            "widen the window or save more points (n_save)"
        )
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ beta
    dof = n - k
    sigma2 = float(resid @ resid) / dof
    cov = sigma2 * np.linalg.pinv(X.T @ X)
    se = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float(resid @ resid) / ss_tot if ss_tot > 0 else 1.0
    q = _t_quantile(dof)
    params = {nm: float(b) for nm, b in zip(names, beta, strict=True)}
    stderr = {nm: float(s) for nm, s in zip(names, se, strict=True)}
    ci = {nm: (params[nm] - q * stderr[nm], params[nm] + q * stderr[nm]) for nm in names}
    return params, stderr, ci, r2, float(np.sqrt(np.mean(resid**2)))


def _prep(log_t, values, window, what: str) -> tuple[np.ndarray, np.ndarray]:
    log_t = np.asarray(log_t, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    if log_t.shape != values.shape:
        raise InvalidParameterError(f"log_t has shape {log_t.shape} but {what} has {values.shape}")
    m = window_mask(log_t, window) & np.isfinite(values) & (log_t > 0)
    return log_t[m], values[m]


def fit_loss_rate(
    log_t,
    log_loss,
    window: tuple[float, float] | None = None,
    *,
    log_power: float | None = None,
    fix_a: float | None = None,
) -> RateFit:
    """Fit L ≈ C t^a (log t)^b on a window of log t, from log L (never L or t themselves).

    Args:
        log_t: log t at the save times, shape `(k,)` (e.g. ``traj.log_t``).
        log_loss: log L at the same times, shape `(k,)` (``traj.diagnostics["log_loss"]``).
        window: (lo, hi) in log t; default all points with log t > 0.
        log_power: if given (k), fit only the residual slope ``b`` of log(t·(log t)^k·L) against log log t
            (with a = −1 fixed): b ≈ 0 when L ~ 1/(t (log t)^k).
        fix_a: fix the power of t to this value and fit b (and c) only.

    Returns:
        A :class:`RateFit` with ``a`` (power of t), ``b`` (power of log t) and ``c`` (log C).

    Raises:
        InvalidParameterError: shapes differ, a bad window, or too few points.

    References:
        Soudry et al., JMLR 2018 (a = −1, b = 0); Lyu & Li, ICLR 2020 (a = −1, b = −(2 − 2/L)).
    """
    lt, ll = _prep(log_t, log_loss, window, "log_loss")
    if lt.size and lt.min() <= 0:
        raise InvalidParameterError("log corrections need log t > 0 (t > e) throughout the window")
    llt = np.log(lt)
    if log_power is not None or fix_a is not None:
        a = -1.0 if fix_a is None else float(fix_a)
        k = 0.0 if log_power is None else float(log_power)
        y = ll - a * lt + k * llt  # log(t^{-a} (log t)^k L)
        p, se, ci, r2, rms = fit_linear(np.column_stack([llt, np.ones_like(lt)]), y, ["b", "c"])
        p["a"], se["a"], ci["a"] = a, 0.0, (a, a)
        model = f"log(t^{-a:g}·(log t)^{k:g}·L) = c + b·log log t"
        extra = {"log_power": k}
    else:
        p, se, ci, r2, rms = fit_linear(np.column_stack([lt, llt, np.ones_like(lt)]), ll, ["a", "b", "c"])
        model = "log L = c + a·log t + b·log log t"
        extra = {}
    win = (float(lt.min()), float(lt.max())) if window is None else tuple(map(float, window))
    return RateFit(p, se, ci, r2, win, int(lt.size), model, rms, extra)


def fit_norm_growth(log_t, norm, window: tuple[float, float] | None = None) -> RateFit:
    """Fit ‖θ‖ ≈ C (log t)^γ: log ‖θ‖ = c + γ·log log t on a window of log t.

    Args:
        log_t: log t, shape `(k,)`.
        norm: a norm along the trajectory (``diagnostics["l2_norm"]``, ``horizon_norm``, a layer norm), `(k,)`.
        window: (lo, hi) in log t (log t > 0 required).

    Returns:
        A :class:`RateFit` with ``gamma`` and ``c``. Gradient flow: γ = 1/L for an L-homogeneous model
        (γ = 1 for linear models, Soudry et al. 2018; Lyu & Li 2020).

    Raises:
        InvalidParameterError: shapes differ, a bad window, too few points, or non-positive norms.
    """
    lt, nv = _prep(log_t, norm, window, "norm")
    if np.any(nv <= 0):
        raise InvalidParameterError("norms must be positive in the window")
    p, se, ci, r2, rms = fit_linear(np.column_stack([np.log(lt), np.ones_like(lt)]), np.log(nv), ["gamma", "c"])
    win = (float(lt.min()), float(lt.max())) if window is None else tuple(map(float, window))
    return RateFit(p, se, ci, r2, win, int(lt.size), "log ‖θ‖ = c + γ·log log t", rms)


def fit_margin_gap(log_t, margin, window: tuple[float, float] | None = None, *, limit: float | None = None) -> RateFit:
    """Fit the margin gap limit − margin ≈ C (log t)^{−κ} on a window of log t.

    Args:
        log_t: log t, shape `(k,)`.
        margin: a margin along the trajectory (normalized, smoothed, q-margin), shape `(k,)`.
        window: (lo, hi) in log t.
        limit: the limit margin (e.g. a max-margin reference); None fits it too (nonlinear least squares,
            the limit bounded below by the largest margin in the window: the model's margin stays below it).

    Returns:
        A :class:`RateFit` with ``kappa``, ``c`` (log C) and, when fitted, ``limit``.

    Raises:
        InvalidParameterError: shapes differ, a bad window, too few points, or a non-positive gap with a
            given limit.

    Warns:
        RuntimeWarning: with ``limit=None``, the fitted limit is at its bound (the largest margin in the window).
    """
    lt, mv = _prep(log_t, margin, window, "margin")
    llt = np.log(lt)
    win = (float(lt.min()), float(lt.max())) if window is None else tuple(map(float, window))
    if limit is not None:
        gap = float(limit) - mv
        if np.any(gap <= 0):
            raise InvalidParameterError("the margin reaches or exceeds the given limit inside the window")
        p, se, ci, r2, rms = fit_linear(np.column_stack([-llt, np.ones_like(lt)]), np.log(gap), ["kappa", "c"])
        return RateFit(p, se, ci, r2, win, int(lt.size), "log(limit − margin) = c − κ·log log t", rms)
    if lt.size <= 3:
        raise InvalidParameterError("fitting the limit too needs more than 3 points in the window")

    def resid(v):
        m_inf, c, kappa = v
        return mv - (m_inf - np.exp(c - kappa * llt))

    g0 = max(abs(mv[-1] - mv[-2]) * 10, 1e-12)
    top = float(mv.max())  # the model's margin stays below its limit: the limit is at least every margin seen
    v0 = np.array([max(mv[-1], top) + g0, np.log(g0) + llt[-1], 1.0])
    lower = np.array([top, -np.inf, -np.inf])
    sol = least_squares(resid, v0, method="trf", bounds=(lower, np.inf), x_scale="jac", xtol=1e-15, ftol=1e-15)
    if sol.active_mask[0] != 0:
        warnings.warn(
            f"fit_margin_gap: the fitted limit sits at the largest margin in the window ({top:.10g}): the margins "
            "there do not follow limit − C·(log t)^(−κ) yet (a later or longer window, or a known limit=, gives a "
            "meaningful κ)",
            RuntimeWarning,
            stacklevel=2,
        )
    r = sol.fun
    dof = lt.size - 3
    sigma2 = float(r @ r) / dof
    J = sol.jac
    cov = sigma2 * np.linalg.pinv(J.T @ J)
    se_v = np.sqrt(np.clip(np.diag(cov), 0, None))
    names = ["limit", "c", "kappa"]
    p = {n: float(v) for n, v in zip(names, sol.x, strict=True)}
    se = {n: float(s) for n, s in zip(names, se_v, strict=True)}
    q = _t_quantile(dof)
    ci = {n: (p[n] - q * se[n], p[n] + q * se[n]) for n in names}
    ss_tot = float(((mv - mv.mean()) ** 2).sum())
    r2 = 1 - float(r @ r) / ss_tot if ss_tot > 0 else 1.0
    return RateFit(
        p, se, ci, r2, win, int(lt.size), "margin = limit − exp(c)·(log t)^{−κ}", float(np.sqrt(np.mean(r**2)))
    )
