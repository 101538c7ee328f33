"""Binary classification data sets for mirror-flow experiments.

A :class:`Dataset` holds float64 features ``X`` of shape `(n, d)` and labels ``y`` in {−1, +1} of shape
`(n,)`, a name and a JSON-able ``info`` dict that records where the data came from (source, classes,
label map, preprocessing, seed). Build one from your own arrays with :func:`make_dataset` (which
validates shapes, finiteness and labels), from files with :func:`load_csv` / :func:`load_npz`, or by name
with :func:`load_dataset`.

Real data (offline, bundled with scikit-learn; no download):

* ``"digits"`` – :func:`load_digits_pair`, 8×8 handwritten digits, default 0 (+1) vs 1 (−1), scaled so
  max_i ‖x_i‖₂ = 1. Separable through the origin; measured ℓ2 hard margin ≈ 0.1217.
* ``"iris"`` – :func:`load_iris_pair`, setosa (+1) vs versicolor (−1); ℓ2 margin ≈ 0.0813 after scaling.
* ``"wine"`` – :func:`load_wine_pair`, classes 0 (+1) vs 1 (−1), standardized; ℓ2 margin ≈ 0.0705.

Synthetic data: :func:`student_teacher_relu`, :func:`sparse_teacher_linear`, :func:`gaussian_separable`,
:func:`soudry_2d`.

Label convention of the ``*_pair`` loaders: the *first* class argument ``a`` is the positive class
(y = +1) and ``b`` the negative class (y = −1). :func:`make_dataset`, on arbitrary two-class labels,
maps the *larger* label (or ``positive_class``) to +1.

"Separable" in flowsim always means separable *through the origin* (no bias), i.e. there is w with
y_i⟨x_i, w⟩ > 0 for all i, as needed by homogeneous models; see :func:`is_linearly_separable`.
"""

from __future__ import annotations

import csv
import difflib
import inspect
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._json import jsonable
from ..errors import InvalidDataError, InvalidParameterError, ReferenceSolverError

__all__ = [
    "Dataset",
    "make_dataset",
    "load_digits_pair",
    "load_iris_pair",
    "load_wine_pair",
    "student_teacher_relu",
    "sparse_teacher_linear",
    "gaussian_separable",
    "soudry_2d",
    "load_csv",
    "load_npz",
    "load_dataset",
    "is_linearly_separable",
    "DATASETS",
]


# ----------------------------------------------------------------------------------------------------------
# The data set object
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Dataset:
    """A binary classification data set with labels in {−1, +1}.

    Build instances with :func:`make_dataset` (or a loader), which validates and converts the inputs;
    the constructor itself only checks shapes, dtype kind and the label values.

    Attributes:
        X: features, shape `(n, d)`, floating point (float64 by default).
        y: labels, shape `(n,)`, same dtype and device as ``X``, values in {−1, +1}.
        name: short name, e.g. ``"digits_0v1"``.
        info: JSON-able provenance (source, classes, label map, preprocessing, seed, ...).
    """

    X: Tensor
    y: Tensor
    name: str = "custom"
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.X, Tensor) or not isinstance(self.y, Tensor):
            raise InvalidDataError(
                "Dataset.X and Dataset.y must be torch tensors; got "
                f"{type(self.X).__name__} and {type(self.y).__name__}. "
                "Use flowsim.data.make_dataset(X, y), which accepts numpy arrays, tensors and lists."
            )
        if self.X.ndim != 2 or self.y.ndim != 1 or self.X.shape[0] != self.y.shape[0]:
            raise InvalidDataError(
                f"Dataset needs X of shape (n, d) and y of shape (n,); got X {tuple(self.X.shape)} and "
                f"y {tuple(self.y.shape)}. Use flowsim.data.make_dataset(X, y) to validate and convert."
            )
        if not (self.X.is_floating_point() and self.y.is_floating_point()):
            raise InvalidDataError(
                f"Dataset.X and Dataset.y must be floating point; got {self.X.dtype} and {self.y.dtype}. "
                "Use flowsim.data.make_dataset(X, y), which converts to float64."
            )
        if self.y.numel() and not bool(((self.y == 1) | (self.y == -1)).all()):
            bad = sorted({float(v) for v in self.y.unique().tolist()} - {-1.0, 1.0})[:5]
            raise InvalidDataError(
                f"Dataset.y must contain only -1 and +1; found other values {bad}. "
                "Use flowsim.data.make_dataset(X, y), which maps two-class labels to ±1."
            )

    @property
    def n(self) -> int:
        """Number of samples."""
        return int(self.X.shape[0])

    @property
    def d(self) -> int:
        """Input dimension."""
        return int(self.X.shape[1])

    @property
    def Z(self) -> Tensor:
        """Label-signed inputs z_i = y_i x_i, shape `(n, d)`: margins of a linear model are ``Z @ w``."""
        return self.y[:, None] * self.X

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Dataset:
        """Return a copy of the data set on ``device`` with floating dtype ``dtype`` (``None``: unchanged)."""
        return Dataset(
            self.X.to(device=device, dtype=dtype),
            self.y.to(device=device, dtype=dtype),
            self.name,
            dict(self.info),
        )

    def numpy(self) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(X, y)`` as numpy arrays of shapes `(n, d)` and `(n,)` (on the CPU, same dtype)."""
        return self.X.detach().cpu().numpy(), self.y.detach().cpu().numpy()

    def __repr__(self) -> str:
        n_pos = int((self.y > 0).sum())
        return (
            f"Dataset(name={self.name!r}, n={self.n}, d={self.d}, n_pos={n_pos}, n_neg={self.n - n_pos}, "
            f"dtype={self.X.dtype}, device={self.X.device})"
        )


# ----------------------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------------------


def _to_numpy(a: Any, what: str) -> np.ndarray:
    if isinstance(a, Tensor):
        return a.detach().cpu().numpy()
    try:
        return np.asarray(a)
    except (ValueError, TypeError) as err:  # ragged lists
        raise InvalidDataError(
            f"could not convert {what} to an array ({err}); pass a rectangular numpy array, tensor or list "
            "of lists."
        ) from err


def _label_repr(c: Any) -> Any:
    c = c.item() if isinstance(c, np.generic) else c
    if isinstance(c, float) and c.is_integer():
        return int(c)
    return c


def make_dataset(
    X: Any,
    y: Any,
    name: str = "custom",
    info: dict | None = None,
    *,
    positive_class: Any = None,
) -> Dataset:
    """Validate features and labels and build a float64 :class:`Dataset`.

    Labels already in {−1, +1} are kept (unless ``positive_class=-1`` asks to flip them); they may all be
    of one sign (single-point or one-class problems are valid margin problems). Any other
    labels with exactly two distinct values (e.g. {0, 1}, {3, 8}, {"cat", "dog"}) are mapped: the larger
    value, or ``positive_class`` if given, becomes +1 and the other −1; the map is stored in
    ``info["label_map"]``.

    Args:
        X: features, shape `(n, d)`; numpy array, torch tensor or nested list of numbers.
        y: labels, shape `(n,)`; numbers or strings with exactly two distinct values.
        name: name of the data set.
        info: provenance to store (must be JSON-able; numpy scalars are converted).
        positive_class: the label that becomes +1 (default: the larger of the two).

    Returns:
        The data set, ``X`` float64 `(n, d)` and ``y`` float64 `(n,)` on the CPU.

    Raises:
        InvalidDataError: if ``X`` is not 2-D, ``y`` is not 1-D, their lengths differ, ``n == 0`` or
            ``d == 0``, ``X`` has NaN/inf entries (the message counts them and gives the first bad row),
            ``y`` has NaN, the labels have more than two classes or a single class other than ±1,
            ``positive_class`` is not a label,
            or ``info`` is not JSON-able.

    Example:
        >>> ds = make_dataset([[1.0, 0.0], [0.0, 1.0]], [0, 1])
        >>> ds.y.tolist()
        [-1.0, 1.0]
    """
    Xa = _to_numpy(X, "X")
    ya = _to_numpy(y, "y")
    if Xa.ndim != 2:
        hint = (
            "for n samples of a single feature use X.reshape(-1, 1); for a single sample X.reshape(1, -1)"
            if Xa.ndim == 1
            else "flatten each sample, e.g. X.reshape(len(X), -1)"
        )
        raise InvalidDataError(
            f"X must be 2-D with shape (n, d); got shape {Xa.shape} ({Xa.ndim}-D); {hint}."
        )
    if ya.ndim != 1:
        raise InvalidDataError(
            f"y must be 1-D with shape (n,); got shape {ya.shape}; if it is a column vector use y.ravel()."
        )
    n, d = Xa.shape
    if ya.shape[0] != n:
        raise InvalidDataError(
            f"X and y have different numbers of samples: X has n = {n} rows but len(y) = {ya.shape[0]}; "
            "pass one label per row of X."
        )
    if n == 0 or d == 0:
        raise InvalidDataError(f"the data set is empty (X has shape {Xa.shape}); need n ≥ 1 samples, d ≥ 1.")
    if Xa.dtype.kind not in "biuf":
        try:
            Xa = Xa.astype(np.float64)
        except (ValueError, TypeError) as err:
            raise InvalidDataError(
                f"X must be numeric; could not convert dtype {Xa.dtype} to float64 ({err}). Remove text "
                "columns or encode them as numbers."
            ) from err
    Xa = np.array(Xa, dtype=np.float64, copy=True)
    finite = np.isfinite(Xa)
    if not finite.all():
        n_nan = int(np.isnan(Xa).sum())
        n_inf = int(np.isinf(Xa).sum())
        bad_rows = np.flatnonzero(~finite.all(axis=1))
        r = int(bad_rows[0])
        c = int(np.flatnonzero(~finite[r])[0])
        raise InvalidDataError(
            f"X has non-finite entries: {n_nan} NaN and {n_inf} inf in {bad_rows.size} row(s); the first "
            f"is row {r} (column {c}, value {Xa[r, c]}). Drop or impute these rows, e.g. "
            "keep = np.isfinite(X).all(axis=1); make_dataset(X[keep], y[keep])."
        )

    # Labels.
    if ya.dtype.kind == "f" and np.isnan(ya).any():
        r = int(np.flatnonzero(np.isnan(ya))[0])
        raise InvalidDataError(
            f"y has {int(np.isnan(ya).sum())} NaN label(s), the first at index {r}; drop these samples."
        )
    if ya.dtype.kind == "O":
        ya = ya.astype(str)
    classes = np.unique(ya)
    class_list = [_label_repr(c) for c in classes]
    info_out = dict(info or {})
    is_pm1 = ya.dtype.kind in "biuf" and set(float(c) for c in classes) <= {-1.0, 1.0}
    if len(classes) == 1 and not is_pm1:
        raise InvalidDataError(
            f"labels must be ±1 or two classes; got a single class {class_list}, which cannot be mapped to "
            "±1. Add samples of the other class, or give the labels as ±1 (e.g. all +1 for a single-point "
            "problem)."
        )
    if len(classes) > 2:
        shown = class_list if len(class_list) <= 10 else [*class_list[:10], "..."]
        a, b = class_list[0], class_list[1]
        raise InvalidDataError(
            f"labels must be ±1 or two classes; got {len(classes)} classes {shown}; select two classes, "
            f"e.g. keep = (y == {a!r}) | (y == {b!r}); make_dataset(X[keep], y[keep])."
        )
    if positive_class is not None:
        matches = [c for c in classes if c == positive_class]
        if not matches:
            raise InvalidDataError(
                f"positive_class={positive_class!r} is not one of the labels {class_list}; pass one of them "
                "(or None for the larger label)."
            )
        pos = matches[0]
    else:
        pos = classes[-1]
    if is_pm1 and (len(classes) == 1 or float(pos) == 1.0):
        y_pm = ya.astype(np.float64)  # already ±1 (possibly one class only, e.g. a single point)
    else:
        y_pm = np.where(ya == pos, 1.0, -1.0)
        neg = classes[0] if classes[1] == pos else classes[1]
        info_out["label_map"] = {str(_label_repr(pos)): 1, str(_label_repr(neg)): -1}
        info_out.setdefault(
            "label_note",
            f"labels {class_list} mapped to ±1: {_label_repr(pos)!r} -> +1, {_label_repr(neg)!r} -> -1",
        )
    info_out = jsonable(info_out)
    try:
        json.dumps(info_out)
    except (TypeError, ValueError) as err:
        raise InvalidDataError(
            f"info must be JSON-able (it is saved with results); json.dumps failed: {err}. Store numbers, "
            "strings, lists and dicts only."
        ) from err
    return Dataset(torch.from_numpy(Xa), torch.from_numpy(np.ascontiguousarray(y_pm)), str(name), info_out)


# ----------------------------------------------------------------------------------------------------------
# Preprocessing helpers
# ----------------------------------------------------------------------------------------------------------

_NORMALIZE = ("max_norm", "unit_norm", None)


def _normalize(X: np.ndarray, normalize: str | None) -> tuple[np.ndarray, dict]:
    """Scale rows: ``"max_norm"`` divides by max_i ‖x_i‖₂, ``"unit_norm"`` each row by its norm."""
    if normalize == "none":
        normalize = None
    if normalize not in _NORMALIZE:
        raise InvalidParameterError(
            f"normalize={normalize!r} is not supported; use 'max_norm' (max_i ‖x_i‖ = 1), 'unit_norm' "
            "(every ‖x_i‖ = 1) or None."
        )
    norms = np.linalg.norm(X, axis=1)
    if normalize is None:
        return X, {"normalize": None}
    if normalize == "max_norm":
        s = float(norms.max())
        return X / s, {"normalize": "max_norm", "scale_divisor": s}
    if (norms == 0).any():
        raise InvalidDataError(
            f"normalize='unit_norm' cannot scale {int((norms == 0).sum())} all-zero row(s); use 'max_norm'."
        )
    return X / norms[:, None], {"normalize": "unit_norm"}


def _select_pair(X: np.ndarray, target: np.ndarray, a: int, b: int, names: list[str], loader: str):
    k = len(names)
    for v, nm in ((a, "a"), (b, "b")):
        if not isinstance(v, (int, np.integer)) or not 0 <= int(v) < k:
            raise InvalidParameterError(
                f"{loader}: class {nm}={v!r} is not a class index; use an integer in 0..{k - 1} ({names})."
            )
    if a == b:
        raise InvalidParameterError(f"{loader}: a and b are both {a}; choose two different classes.")
    keep = (target == a) | (target == b)
    y = np.where(target[keep] == a, 1.0, -1.0)
    return X[keep].astype(np.float64), y


def _sklearn_pair(
    loader: str,
    fn: Callable,
    a: int,
    b: int,
    normalize: str | None,
    standardize: bool = False,
) -> Dataset:
    bunch = fn()
    names = [str(t) for t in getattr(bunch, "target_names", range(int(bunch.target.max()) + 1))]
    X, y = _select_pair(bunch.data, bunch.target, a, b, names, loader)
    steps: list[str] = []
    if standardize:
        mu, sd = X.mean(axis=0), X.std(axis=0)
        sd = np.where(sd > 0, sd, 1.0)
        X = (X - mu) / sd
        steps.append("standardize each feature to mean 0, std 1 over the selected two classes")
    X, norm_info = _normalize(X, normalize)
    if norm_info["normalize"] == "max_norm":
        steps.append("divide by max_i ‖x_i‖₂ so that max_i ‖x_i‖₂ = 1")
    elif norm_info["normalize"] == "unit_norm":
        steps.append("divide every x_i by ‖x_i‖₂")
    info = {
        "source": f"sklearn.datasets.{fn.__name__}",
        "classes": {"+1": names[a], "-1": names[b]},
        "class_indices": {"+1": int(a), "-1": int(b)},
        "preprocessing": steps,
        **norm_info,
    }
    return make_dataset(X, y, f"{fn.__name__.removeprefix('load_')}_{a}v{b}", info)


# ----------------------------------------------------------------------------------------------------------
# Real data bundled with scikit-learn
# ----------------------------------------------------------------------------------------------------------


def load_digits_pair(a: int = 0, b: int = 1, *, normalize: str | None = "max_norm") -> Dataset:
    """Two classes of scikit-learn's bundled 8×8 digits: digit ``a`` (y = +1) vs digit ``b`` (y = −1).

    Pixels are intensities 0..16 (64 features, no centring, so the origin is a corner of the data cloud).
    With ``normalize="max_norm"`` every x_i is divided by max_i ‖x_i‖₂, so max_i ‖x_i‖₂ = 1.

    Digits 0 vs 1 (n = 360 = 178 + 182, d = 64) are linearly separable through the origin; measured with
    :func:`flowsim.references.svm_l2` after max-norm scaling the ℓ2 hard margin is 0.12171 (16 support
    vectors). Other pairs: 1 vs 7 ≈ 0.0827, 3 vs 8 ≈ 0.0451.

    Args:
        a: positive digit, in 0..9 (default 0).
        b: negative digit, in 0..9, ≠ a (default 1).
        normalize: ``"max_norm"`` (default), ``"unit_norm"`` or ``None``.

    Returns:
        :class:`Dataset` named ``"digits_{a}v{b}"``, float64.

    Raises:
        InvalidParameterError: if ``a``/``b`` are not digits, are equal, or ``normalize`` is unknown.

    References:
        UCI "Optical Recognition of Handwritten Digits" (test part), as bundled by scikit-learn.
    """
    from sklearn.datasets import load_digits

    return _sklearn_pair("load_digits_pair", load_digits, a, b, normalize)


def load_iris_pair(a: int = 0, b: int = 1, *, normalize: str | None = "max_norm") -> Dataset:
    """Two iris classes: ``a`` (y = +1) vs ``b`` (y = −1), by default setosa vs versicolor.

    Four positive features (cm), n = 100 for any pair. Setosa vs versicolor and setosa vs virginica are
    separable through the origin (ℓ2 margins ≈ 0.0813 and ≈ 0.114 after max-norm scaling); versicolor vs
    virginica is not separable at all.

    Args:
        a: positive class index: 0 setosa, 1 versicolor, 2 virginica (default 0).
        b: negative class index, ≠ a (default 1).
        normalize: ``"max_norm"`` (default), ``"unit_norm"`` or ``None``.

    Returns:
        :class:`Dataset` named ``"iris_{a}v{b}"``, float64, `(100, 4)`; class names in ``info["classes"]``.

    Raises:
        InvalidParameterError: on bad class indices or ``normalize``.
    """
    from sklearn.datasets import load_iris

    return _sklearn_pair("load_iris_pair", load_iris, a, b, normalize)


def load_wine_pair(
    a: int = 0, b: int = 1, *, standardize: bool = True, normalize: str | None = "max_norm"
) -> Dataset:
    """Two classes of the wine data: cultivar ``a`` (y = +1) vs ``b`` (y = −1), d = 13.

    Raw features have very different scales (proline ~1000, hue ~1), so by default each feature is
    standardized over the two selected classes, then rows are max-norm scaled. With these defaults all
    three pairs are separable through the origin: ℓ2 margins ≈ 0.0705 (0 vs 1), 0.226 (0 vs 2),
    0.0356 (1 vs 2).

    Args:
        a: positive class index in 0..2 (default 0).
        b: negative class index, ≠ a (default 1).
        standardize: z-score each feature over the selected samples (default True).
        normalize: ``"max_norm"`` (default), ``"unit_norm"`` or ``None``.

    Returns:
        :class:`Dataset` named ``"wine_{a}v{b}"``, float64; class names in ``info["classes"]``.

    Raises:
        InvalidParameterError: on bad class indices or ``normalize``.
    """
    from sklearn.datasets import load_wine

    return _sklearn_pair("load_wine_pair", load_wine, a, b, normalize, standardize=standardize)


# ----------------------------------------------------------------------------------------------------------
# Synthetic data
# ----------------------------------------------------------------------------------------------------------


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
    so both output signs occur. Inputs x ~ uniform on the unit sphere S^{d−1} (normalized Gaussians),
    labels y = sign f*(x). Candidates with |f*(x)| ≤ margin · scale, scale = Σ_k |a*_k| ‖w*_k‖₂ (the
    maximum of |f*| on the sphere), are rejected and redrawn — points with f*(x) = 0 (all teacher
    neurons off) are always rejected since their label is undefined. Both classes are guaranteed.
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
    W = np.zeros((width, d))
    for k in range(width):
        supp = rng.choice(d, size=s, replace=False)
        W[k, supp] = rng.choice([-1.0, 1.0], size=s) / math.sqrt(s)
    a = np.array([1.0 if k % 2 == 0 else -1.0 for k in range(width)])
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


def sparse_teacher_linear(
    n: int = 40, d: int = 20, k: int = 3, *, seed: int = 0, margin: float = 0.0
) -> Dataset:
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


# ----------------------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------------------


def _parse_float(s: str) -> float:
    s = s.strip()
    if s == "" or s.lower() in ("nan", "na", "null"):
        return math.nan
    return float(s)


def load_csv(
    path: str | Path,
    *,
    label_column: int = -1,
    delimiter: str = ",",
    skip_header: bool | str = "auto",
) -> Dataset:
    """Load a delimited text file: one sample per row, features and one label column.

    Empty cells and ``nan`` become NaN (and are then reported by :func:`make_dataset`). Labels may be
    numbers or strings; two-class labels are mapped to ±1 as in :func:`make_dataset`.

    Args:
        path: file path.
        label_column: index of the label column (negative counts from the end; default last).
        delimiter: field separator (default ``","``).
        skip_header: ``True``/``False``, or ``"auto"`` (default): skip the first row if one of its feature
            cells is not a number.

    Returns:
        :class:`Dataset` named after the file stem; ``info`` has ``source`` (the path) and ``header``.

    Raises:
        InvalidDataError: if the file is missing or empty, rows have different lengths, a feature cell is
            not a number (row and column given), ``label_column`` is out of range, or
            :func:`make_dataset` rejects the data.
    """
    p = Path(path)
    if not p.is_file():
        raise InvalidDataError(f"CSV file not found: {str(p)!r}; check the path (cwd is {Path.cwd()}).")
    with p.open(newline="") as fh:
        rows = [r for r in csv.reader(fh, delimiter=delimiter) if r and any(c.strip() for c in r)]
    if not rows:
        raise InvalidDataError(f"CSV file {str(p)!r} has no data rows.")
    ncol = len(rows[0])
    if ncol < 2:
        raise InvalidDataError(
            f"CSV file {str(p)!r} has {ncol} column with delimiter {delimiter!r}; need features and a label "
            "column. Is the delimiter right (e.g. delimiter=';' or '\\t')?"
        )
    lc = label_column + ncol if label_column < 0 else label_column
    if not 0 <= lc < ncol:
        raise InvalidDataError(
            f"label_column={label_column} is out of range for {ncol} columns; use -{ncol}..{ncol - 1}."
        )
    feat_cols = [j for j in range(ncol) if j != lc]

    def row_is_numeric(r: list[str]) -> bool:
        try:
            [_parse_float(r[j]) for j in feat_cols]
        except (ValueError, IndexError):
            return False
        return True

    header = None
    if skip_header == "auto":
        skip = not row_is_numeric(rows[0])
    elif isinstance(skip_header, bool):
        skip = skip_header
    else:
        raise InvalidParameterError(f"skip_header must be True, False or 'auto'; got {skip_header!r}.")
    if skip:
        header, rows = rows[0], rows[1:]
        if not rows:
            raise InvalidDataError(f"CSV file {str(p)!r} has a header but no data rows.")
    first_line = 2 if skip else 1
    X = np.empty((len(rows), ncol - 1))
    labels: list[str] = []
    for i, r in enumerate(rows):
        if len(r) != ncol:
            raise InvalidDataError(
                f"CSV file {str(p)!r}: line {first_line + i} has {len(r)} fields, expected {ncol} (as in the "
                "first row); fix the row or the delimiter."
            )
        for k, j in enumerate(feat_cols):
            try:
                X[i, k] = _parse_float(r[j])
            except ValueError as err:
                raise InvalidDataError(
                    f"CSV file {str(p)!r}: line {first_line + i}, column {j} is not a number ({r[j]!r}); "
                    "features must be numeric (is label_column right? is there an unskipped header?)."
                ) from err
        labels.append(r[lc].strip())
    try:
        y: np.ndarray = np.array([float(v) for v in labels])
    except ValueError:
        y = np.array(labels)
    info = {"source": str(p), "format": "csv", "label_column": int(lc), "header": header}
    return make_dataset(X, y, p.stem, info)


def load_npz(path: str | Path, *, x_key: str = "X", y_key: str = "y") -> Dataset:
    """Load features and labels from a numpy ``.npz`` archive.

    Args:
        path: file path.
        x_key: name of the `(n, d)` feature array (default ``"X"``).
        y_key: name of the `(n,)` label array (default ``"y"``).

    Returns:
        :class:`Dataset` named after the file stem.

    Raises:
        InvalidDataError: if the file is missing or unreadable, a key is missing (the message lists the
            keys found), or :func:`make_dataset` rejects the arrays.
    """
    p = Path(path)
    if not p.is_file():
        raise InvalidDataError(f"NPZ file not found: {str(p)!r}; check the path (cwd is {Path.cwd()}).")
    try:
        with np.load(p, allow_pickle=False) as z:
            keys = list(z.keys())
            missing = [k for k in (x_key, y_key) if k not in keys]
            if missing:
                raise InvalidDataError(
                    f"NPZ file {str(p)!r} has no array(s) {missing}; keys found: {keys}. Pass x_key=... and "
                    "y_key=... naming the feature and label arrays."
                )
            X, y = z[x_key], z[y_key]
    except InvalidDataError:
        raise
    except (OSError, ValueError) as err:
        raise InvalidDataError(
            f"could not read {str(p)!r} as an .npz archive ({err}); save with np.savez(path, X=X, y=y)."
        ) from err
    return make_dataset(X, y, p.stem, {"source": str(p), "format": "npz", "x_key": x_key, "y_key": y_key})


# ----------------------------------------------------------------------------------------------------------
# Registry and separability
# ----------------------------------------------------------------------------------------------------------

DATASETS: dict[str, Callable[..., Dataset]] = {
    "digits": load_digits_pair,
    "iris": load_iris_pair,
    "wine": load_wine_pair,
    "student_teacher": student_teacher_relu,
    "sparse_teacher": sparse_teacher_linear,
    "gaussian": gaussian_separable,
    "soudry_2d": soudry_2d,
    "csv": load_csv,
    "npz": load_npz,
}
"""Names accepted by :func:`load_dataset`, mapped to their loaders."""


def load_dataset(name: str, **kwargs: Any) -> Dataset:
    """Load a data set by registry name (see :data:`DATASETS`).

    Args:
        name: one of ``"digits"``, ``"iris"``, ``"wine"``, ``"student_teacher"``, ``"sparse_teacher"``,
            ``"gaussian"``, ``"soudry_2d"``, ``"csv"``, ``"npz"`` (case-insensitive).
        **kwargs: passed to the loader, e.g. ``a=3, b=8`` for digits, ``path=...`` for csv/npz.

    Returns:
        The :class:`Dataset`.

    Raises:
        InvalidDataError: if the name is unknown (the message lists the valid names), or ``"csv"``/``"npz"``
            is given without ``path``.
        InvalidParameterError: if a keyword is not accepted by the loader (the message lists those it
            accepts).
    """
    key = str(name).strip().lower()
    if key not in DATASETS:
        close = difflib.get_close_matches(key, list(DATASETS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise InvalidDataError(f"unknown data set {name!r}; valid names: {sorted(DATASETS)}.{hint}")
    fn = DATASETS[key]
    sig = inspect.signature(fn)
    if key in ("csv", "npz") and "path" not in kwargs:
        raise InvalidDataError(
            f"data set {key!r} needs path=...; e.g. load_dataset({key!r}, path='data.{key}')."
        )
    bad = [k for k in kwargs if k not in sig.parameters]
    if bad:
        raise InvalidParameterError(
            f"load_dataset({key!r}) got unexpected keyword(s) {bad}; {fn.__name__} accepts "
            f"{list(sig.parameters)}."
        )
    return fn(**kwargs)


def is_linearly_separable(dataset: Dataset | np.ndarray | Tensor) -> bool:
    """Whether the data are linearly separable through the origin.

    Solves the LP feasibility problem: find w with Z w ≥ 1 (z_i = y_i x_i), which is feasible iff some w
    has y_i⟨x_i, w⟩ > 0 for all i (rescale w). Uses ``scipy.optimize.linprog(method="highs")``.

    Args:
        dataset: a :class:`Dataset`, or the label-signed matrix Z of shape `(n, d)`.

    Returns:
        True if separable through the origin, False if the LP is infeasible.

    Raises:
        ReferenceSolverError: if HiGHS ends with a status other than optimal or infeasible.
    """
    from scipy.optimize import linprog

    if isinstance(dataset, Dataset):
        Z = dataset.Z.detach().cpu().numpy().astype(np.float64)
    else:
        Z = _to_numpy(dataset, "Z").astype(np.float64)
    if Z.ndim != 2:
        raise InvalidDataError(f"Z must be 2-D with shape (n, d); got shape {Z.shape}.")
    s = float(np.abs(Z).max()) if Z.size else 1.0
    Zs = Z / (s if s > 0 else 1.0)
    res = linprog(
        np.zeros(Z.shape[1]),
        A_ub=-Zs,
        b_ub=-np.ones(Z.shape[0]),
        bounds=[(None, None)] * Z.shape[1],
        method="highs",
        options={"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10},
    )
    if res.status == 0:
        return True
    if res.status == 2:
        return False
    raise ReferenceSolverError(
        f"separability LP (HiGHS) ended with status {res.status}: {res.message}. The data may be badly "
        "scaled; try normalizing X (max_i ‖x_i‖ = 1)."
    )
