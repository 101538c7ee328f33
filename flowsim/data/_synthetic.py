"""Synthetic separable data: ReLU student–teacher, sparse linear teacher, Gaussian classes, Soudry et al.'s 2-D set."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import InvalidDataError, InvalidParameterError
from ._dataset import Dataset, make_dataset
from ._separability import is_linearly_separable


def _check_int(value: Any, name: str, lo: int, fn: str) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < lo:
        raise InvalidParameterError(f"{fn}: {name} must be an integer ≥ {lo}; got {value!r}.")
    return int(value)


def _check_margin(margin: Any, fn: str) -> float:
    if not isinstance(margin, (int, float)) or not math.isfinite(margin) or margin < 0:
        raise InvalidParameterError(f"{fn}: margin must be a finite number ≥ 0; got {margin!r}.")
    return float(margin)


def _sphere(rng: np.random.Generator, m: int, d: int) -> np.ndarray:
    g = rng.standard_normal((m, d))
    return g / np.linalg.norm(g, axis=1, keepdims=True)


def _collect(
    draw: Callable[[int], tuple[np.ndarray, np.ndarray]], n: int, fn: str, margin: float
) -> tuple[np.ndarray, np.ndarray, int]:
    """Rejection-sample until ``n`` points are accepted and both signs are present.

    ``draw(m)`` returns candidates ``(X, score)`` and ``score`` is NaN for rejected ones. The first ``n``
    accepted points are kept; if they all share a sign, the last one is replaced by the first accepted
    point of the other sign (so the data stay deterministic given the seed).
    """
    Xs, fs = [], []
    n_drawn = 0
    for _ in range(200):
        m = max(64, 2 * n)
        X, f = draw(m)
        n_drawn += m
        Xs.append(X)
        fs.append(f)
        Xc, fc = np.concatenate(Xs), np.concatenate(fs)
        ok = ~np.isnan(fc)
        Xa, fa = Xc[ok], fc[ok]
        if len(fa) >= n and (fa > 0).any() and (fa < 0).any():
            Xk, fk = Xa[:n].copy(), fa[:n].copy()
            for sign in (1.0, -1.0):
                if not (np.sign(fk) == sign).any():
                    j = int(np.flatnonzero(np.sign(fa) == sign)[0])
                    Xk[-1], fk[-1] = Xa[j], fa[j]
            return Xk, fk, n_drawn - n
    raise InvalidParameterError(
        f"{fn}: after {n_drawn} candidate points fewer than n = {n} passed the margin filter "
        f"(margin = {margin}) with both classes present; lower `margin`."
    )


def _both_signs(W: np.ndarray, a: np.ndarray) -> bool:
    """Whether the teacher Σ_k a_k relu(⟨w_k, x⟩) takes both signs: after merging identical rows w_k (their a_k
    summed), some merged neuron has a positive and some a negative output weight. Otherwise it is ≥ 0 or ≤ 0
    everywhere (e.g. two identical neurons with a = +1, −1 cancel: f* ≡ 0) and one class never occurs."""
    merged: dict[tuple, float] = {}
    for row, ak in zip(map(tuple, W), a, strict=True):
        merged[row] = merged.get(row, 0.0) + float(ak)
    return any(v > 0 for v in merged.values()) and any(v < 0 for v in merged.values())


def student_teacher_relu(
    n: int = 30,
    d: int = 5,
    teacher_width: int = 2,
    *,
    seed: int = 0,
    margin: float = 0.0,
    sparsity: int | None = None,
) -> Dataset:
    """Labels from a sparse bias-free two-layer ReLU teacher on the unit sphere.

    Teacher f*(x) = Σ_k a*_k relu(⟨w*_k, x⟩), k = 1..``teacher_width``; each w*_k has ``sparsity``
    nonzero entries (random support, random signs, ‖w*_k‖₂ = 1) and a*_k = +1 for even k, −1 for odd k,
    so both output signs occur (a draw whose neurons cancel — identical w*_k with opposite a*_k, f* ≡ 0 — is
    redrawn from the same generator; with the defaults one seed in about 40). Inputs x ~ uniform on the unit
    sphere S^{d−1} (normalized Gaussians), labels y = sign f*(x). Candidates with |f*(x)| ≤ margin · scale,
    scale = Σ_k |a*_k| ‖w*_k‖₂ (the maximum of |f*| on the sphere), are rejected and redrawn — points with
    f*(x) = 0 (all teacher neurons off) are always rejected since their label is undefined. Both classes are
    guaranteed.
    Since the teacher is itself a bias-free ReLU net of width ``teacher_width``, the data are separable
    by such a student, though not necessarily by a linear model.

    Args:
        n: number of samples (≥ 2).
        d: input dimension (≥ 1).
        teacher_width: number of teacher neurons (≥ 2, so that both signs of a* appear).
        seed: seed of the numpy ``Generator`` (teacher and inputs).
        margin: relative margin filter in [0, 1), see above (default 0: only exact ties dropped).
        sparsity: nonzeros per teacher neuron (default ``min(d, 2)``).

    Returns:
        :class:`Dataset` named ``"student_teacher_relu"``; ``info["teacher"]`` holds ``W`` (list of
        ``teacher_width`` lists of length d), ``a``, ``activation``, ``scale``; also ``seed``,
        ``margin``, ``n_rejected``.

    Raises:
        InvalidParameterError: on invalid sizes, ``margin`` < 0, or a margin so large that too few
            points pass the filter.
    """
    fn = "student_teacher_relu"
    n = _check_int(n, "n", 2, fn)
    d = _check_int(d, "d", 1, fn)
    width = _check_int(teacher_width, "teacher_width", 2, fn)
    margin = _check_margin(margin, fn)
    s = min(d, 2) if sparsity is None else _check_int(sparsity, "sparsity", 1, fn)
    if s > d:
        raise InvalidParameterError(f"{fn}: sparsity = {s} exceeds d = {d}; use sparsity ≤ d.")
    rng = np.random.default_rng(seed)
    a = np.array([1.0 if k % 2 == 0 else -1.0 for k in range(width)])
    for _ in range(1000):
        W = np.zeros((width, d))
        for k in range(width):
            supp = rng.choice(d, size=s, replace=False)
            W[k, supp] = rng.choice([-1.0, 1.0], size=s) / math.sqrt(s)
        if _both_signs(W, a):
            break
    scale = float(np.sum(np.abs(a) * np.linalg.norm(W, axis=1)))
    tol = max(margin * scale, 1e-12 * scale)

    def teacher(X: np.ndarray) -> np.ndarray:
        return np.maximum(X @ W.T, 0.0) @ a

    def draw(m: int) -> tuple[np.ndarray, np.ndarray]:
        X = _sphere(rng, m, d)
        f = teacher(X)
        return X, np.where(np.abs(f) > tol, f, np.nan)

    X, f, n_rej = _collect(draw, n, fn, margin)
    info = {
        "source": "synthetic",
        "generator": fn,
        "teacher": {"W": W.tolist(), "a": a.tolist(), "activation": "relu", "scale": scale},
        "inputs": "uniform on the unit sphere",
        "seed": seed,
        "margin": margin,
        "n_rejected": n_rej,
    }
    return make_dataset(X, np.sign(f), fn, info)


def sparse_teacher_linear(n: int = 40, d: int = 20, k: int = 3, *, seed: int = 0, margin: float = 0.0) -> Dataset:
    """Labels of a k-sparse linear teacher: y = sign⟨w*, x⟩ with x ~ N(0, I_d).

    w* has ``k`` nonzero entries on a random support, Gaussian values, normalized to ‖w*‖₂ = 1, so
    ⟨w*, x⟩ ~ N(0, 1). Candidates with |⟨w*, x⟩| ≤ ``margin`` (absolute, in units of that standard
    deviation) are rejected and redrawn; both classes are guaranteed. The data are separable through the
    origin by w*; with n < d the ℓ1 max-margin direction tends to recover the support of w*.

    Args:
        n: number of samples (≥ 2).
        d: input dimension (≥ 1).
        k: number of nonzeros of w*, 1 ≤ k ≤ d.
        seed: seed of the numpy ``Generator``.
        margin: margin filter ≥ 0 (default 0: only exact ties dropped).

    Returns:
        :class:`Dataset` named ``"sparse_teacher_linear"``; ``info["teacher"]["w"]`` (list of length d)
        and ``info["teacher"]["support"]``.

    Raises:
        InvalidParameterError: on invalid sizes or margin.
    """
    fn = "sparse_teacher_linear"
    n = _check_int(n, "n", 2, fn)
    d = _check_int(d, "d", 1, fn)
    k = _check_int(k, "k", 1, fn)
    if k > d:
        raise InvalidParameterError(f"{fn}: k = {k} nonzeros do not fit in d = {d}; use k ≤ d.")
    margin = _check_margin(margin, fn)
    rng = np.random.default_rng(seed)
    supp = np.sort(rng.choice(d, size=k, replace=False))
    w = np.zeros(d)
    w[supp] = rng.standard_normal(k)
    w /= np.linalg.norm(w)
    tol = max(margin, 1e-12)

    def draw(m: int) -> tuple[np.ndarray, np.ndarray]:
        X = rng.standard_normal((m, d))
        f = X @ w
        return X, np.where(np.abs(f) > tol, f, np.nan)

    X, f, n_rej = _collect(draw, n, fn, margin)
    info = {
        "source": "synthetic",
        "generator": fn,
        "teacher": {"w": w.tolist(), "support": supp.tolist()},
        "inputs": "standard Gaussian N(0, I_d)",
        "seed": seed,
        "margin": margin,
        "n_rejected": n_rej,
    }
    return make_dataset(X, np.sign(f), fn, info)


def gaussian_separable(n: int = 50, d: int = 2, *, separation: float = 2.0, seed: int = 0) -> Dataset:
    """Two Gaussian clouds separable through the origin.

    A unit direction u is drawn from the seed; ceil(n/2) points get y = +1 and the rest y = −1, and
    x_i = y_i (separation/2) u + ε_i, ε_i ~ N(0, I_d). Any point with y_i⟨u, x_i⟩ ≤ 0 (wrong side of the
    hyperplane u^⊥ through the origin) has its noise redrawn until it is on the right side, so u separates
    the data (the noise is a truncated Gaussian). Separability is then checked with an LP.

    Args:
        n: number of samples (≥ 2).
        d: dimension (≥ 1).
        separation: distance between the two class means (≥ 0).
        seed: seed of the numpy ``Generator``.

    Returns:
        :class:`Dataset` named ``"gaussian_separable"``; ``info["direction"]`` holds u.

    Raises:
        InvalidParameterError: on invalid sizes or a negative/non-finite ``separation``.
    """
    fn = "gaussian_separable"
    n = _check_int(n, "n", 2, fn)
    d = _check_int(d, "d", 1, fn)
    if not isinstance(separation, (int, float)) or not math.isfinite(separation) or separation < 0:
        raise InvalidParameterError(f"{fn}: separation must be a finite number ≥ 0; got {separation!r}.")
    rng = np.random.default_rng(seed)
    u = _sphere(rng, 1, d)[0]
    n_pos = (n + 1) // 2
    y = np.concatenate([np.ones(n_pos), -np.ones(n - n_pos)])
    X = y[:, None] * (0.5 * separation) * u + rng.standard_normal((n, d))
    n_resampled = 0
    for _ in range(10_000):
        bad = (y * (X @ u)) <= 1e-12
        if not bad.any():
            break
        n_resampled += int(bad.sum())
        X[bad] = y[bad, None] * (0.5 * separation) * u + rng.standard_normal((int(bad.sum()), d))
    info = {
        "source": "synthetic",
        "generator": fn,
        "direction": u.tolist(),
        "separation": float(separation),
        "seed": seed,
        "n_resampled": n_resampled,
    }
    ds = make_dataset(X, y, fn, info)
    if not is_linearly_separable(ds):  # pragma: no cover - guaranteed by construction
        raise InvalidDataError(f"{fn}: generated data are not separable (bug); report seed={seed}.")
    return ds


#: The five points of :func:`soudry_2d` and their labels.
_SOUDRY_X = np.array([[2.0, 1.0], [0.0, -2.0], [3.0, 1.0], [-1.0, -3.0], [1.0, -3.0]])
_SOUDRY_Y = np.array([1.0, -1.0, 1.0, -1.0, -1.0])


def soudry_2d() -> Dataset:
    """A tiny asymmetric 2-D separable set with a closed-form ℓ2 SVM, for Soudry-style experiments.

    Five fixed points (2 positive, 3 negative), in the spirit of the synthetic 2-D example of Soudry et
    al. (Figure 1). The exact coordinates of the paper's figure could not be checked offline, so this is
    flowsim's own set, chosen so that every quantity of the asymptotic theory is rational:

    ====  ===========  ====  ===========  =========  ==========
    i     x_i          y_i   z_i = y x    ⟨z_i, ŵ⟩   α_i
    ====  ===========  ====  ===========  =========  ==========
    0     (2, 1)       +1    (2, 1)       1          1/8
    1     (0, −2)      −1    (0, 2)       1          3/16
    2     (3, 1)       +1    (3, 1)       5/4        0
    3     (−1, −3)     −1    (1, 3)       7/4        0
    4     (1, −3)      −1    (−1, 3)      5/4        0
    ====  ===========  ====  ===========  =========  ==========

    ℓ2 hard-margin SVM (no bias): ŵ = Σ α_i z_i = (1/4, 1/2), ‖ŵ‖² = Σ α_i = 5/16, margin
    1/‖ŵ‖ = 4/√5 ≈ 1.7889, direction (1, 2)/√5. The support vectors z_0, z_1 are linearly independent
    and the other constraints are strictly inactive, so ŵ and α are unique; under gradient flow on the
    exponential loss w(t) ≈ ŵ log t + w̃ with ⟨z_n, w̃⟩ = −log α_n on the support (Soudry et al., Thm. 3
    and its continuous-time analogue), i.e. log 8 and log(16/3).

    Returns:
        :class:`Dataset` named ``"soudry_2d"``, `(5, 2)`, not rescaled; ``info`` holds ``w_svm``,
        ``alpha``, ``margin`` for use as a closed-form reference.

    References:
        Soudry, Hoffer, Nacson, Gunasekar & Srebro, "The Implicit Bias of Gradient Descent on Separable
        Data", JMLR 19(70), 2018 (arXiv 1710.10345).
    """
    info = {
        "source": "flowsim fixed points (Soudry et al. JMLR 2018 style)",
        "w_svm": [0.25, 0.5],
        "alpha": [0.125, 0.1875, 0.0, 0.0, 0.0],
        "margin": 4.0 / math.sqrt(5.0),
        "support": [0, 1],
    }
    return make_dataset(_SOUDRY_X.copy(), _SOUDRY_Y.copy(), "soudry_2d", info)
