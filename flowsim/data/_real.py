"""Real two-class data sets bundled with scikit-learn (offline): digits, iris and wine pairs."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..errors import InvalidParameterError
from ._dataset import Dataset, _normalize, make_dataset


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


def load_digits_pair(a: int = 0, b: int = 1, *, normalize: str | None = "max_norm") -> Dataset:
    """Two classes of scikit-learn's bundled 8×8 digits: digit ``a`` (y = +1) vs digit ``b`` (y = −1).

    Pixels are intensities 0..16 (64 features, no centring, so the origin is a corner of the data cloud).
    With ``normalize="max_norm"`` every x_i is divided by max_i ‖x_i‖₂, so max_i ‖x_i‖₂ = 1.

    Digits 0 vs 1 (n = 360 = 178 + 182, d = 64) are linearly separable through the origin; after max-norm
    scaling their ℓ2 hard margin (:func:`flowsim.references.svm_l2`) is 0.12171 with 16 support vectors.
    Other pairs: 1 vs 7 ≈ 0.0827, 3 vs 8 ≈ 0.0451.

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


def load_wine_pair(a: int = 0, b: int = 1, *, standardize: bool = True, normalize: str | None = "max_norm") -> Dataset:
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
