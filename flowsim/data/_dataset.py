"""The :class:`Dataset` type, :func:`make_dataset` (validation, label map) and row normalization."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._json import jsonable
from ..errors import InvalidDataError, InvalidParameterError


@dataclass(frozen=True, eq=False)
class Dataset:
    """A binary classification data set with labels in {−1, +1}.

    Build instances with :func:`make_dataset` (or a loader), which validates and converts the inputs;
    the constructor itself checks shapes, dtype kind, the label values, that ``X`` and ``y`` are finite,
    and that no point appears twice with different labels (such data cannot be classified by any model).

    Attributes:
        X: features, shape `(n, d)`, floating point (float64 by default).
        y: labels, shape `(n,)`, same dtype and device as ``X``, values in {−1, +1}.
        name: short name, e.g. ``"digits_0v1"``.
        info: JSON-able provenance (source, classes, label map, preprocessing, seed, ...).
        num_classes: None (default) for labels ±1; K ≥ 2 for multi-class labels 0..K−1 (stored as floats in
            ``y``), as used by :func:`flowsim.minibatch.minibatch_mirror_descent` with a K-output model. The
            flow and :func:`~flowsim.discrete.mirror_descent` take ±1 labels only.
    """

    X: Tensor
    y: Tensor
    name: str = "custom"
    info: dict = field(default_factory=dict)
    num_classes: int | None = None

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
        if self.num_classes is not None:
            _check_class_labels(self.y, self.num_classes)
        elif self.y.numel() and not bool(((self.y == 1) | (self.y == -1)).all()):
            bad = sorted({float(v) for v in self.y.unique().tolist()} - {-1.0, 1.0})[:5]
            raise InvalidDataError(
                f"Dataset.y must contain only -1 and +1; found other values {bad}. "
                "Use flowsim.data.make_dataset(X, y), which maps two-class labels to ±1."
            )
        _check_finite(self.X, self.y)
        _check_no_conflicting_duplicates(self.X, self.y)

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
        """Label-signed inputs z_i = y_i x_i, shape `(n, d)`: margins of a linear model are ``Z @ w``.

        Raises:
            InvalidDataError: for multi-class labels (use :func:`flowsim.analysis.references.kesler_rows`).
        """
        if self.num_classes is not None:
            raise InvalidDataError(
                "Dataset.Z needs labels ±1; for labels 0..K−1 use flowsim.analysis.references.kesler_rows(X, y)."
            )
        return self.y[:, None] * self.X

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Dataset:
        """Return a copy of the data set on ``device`` with floating dtype ``dtype`` (``None``: unchanged)."""
        return Dataset(
            self.X.to(device=device, dtype=dtype),
            self.y.to(device=device, dtype=dtype),
            self.name,
            dict(self.info),
            self.num_classes,
        )

    def numpy(self) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(X, y)`` as numpy arrays of shapes `(n, d)` and `(n,)` (on the CPU, same dtype)."""
        return self.X.detach().cpu().numpy(), self.y.detach().cpu().numpy()

    def __repr__(self) -> str:
        if self.num_classes is not None:
            return (
                f"Dataset(name={self.name!r}, n={self.n}, d={self.d}, num_classes={self.num_classes}, "
                f"dtype={self.X.dtype}, device={self.X.device})"
            )
        n_pos = int((self.y > 0).sum())
        return (
            f"Dataset(name={self.name!r}, n={self.n}, d={self.d}, n_pos={n_pos}, n_neg={self.n - n_pos}, "
            f"dtype={self.X.dtype}, device={self.X.device})"
        )


def _check_class_labels(y: Tensor, num_classes: int) -> None:
    """Raise :class:`InvalidDataError` unless ``num_classes`` is an int ≥ 2 and ``y`` holds 0..K−1."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise InvalidDataError(
            f"Dataset.num_classes must be an integer >= 2 (or None for labels ±1); got {num_classes!r}."
        )
    ok = (y == torch.round(y)) & (y >= 0) & (y < num_classes)
    if y.numel() and not bool(ok.all()):
        bad = sorted({float(v) for v in y[~ok].unique().tolist()})[:5]
        raise InvalidDataError(
            f"Dataset.y must hold class indices 0..{num_classes - 1} for num_classes={num_classes}; found {bad}."
        )


def _check_finite(X: Tensor, y: Tensor) -> None:
    """Raise :class:`InvalidDataError` if ``X`` or ``y`` has NaN/inf entries (first bad row named)."""
    for what, a in (("X", X), ("y", y)):
        finite = torch.isfinite(a)
        if bool(finite.all()):
            continue
        rows = finite if a.ndim == 1 else finite.all(dim=1)
        r = int(torch.nonzero(~rows)[0, 0])
        raise InvalidDataError(
            f"Dataset.{what} has {int((~finite).sum())} non-finite (NaN/inf) entries; the first is in row {r}. "
            "Drop or impute these rows, e.g. keep = np.isfinite(X).all(axis=1); make_dataset(X[keep], y[keep])."
        )


def _check_no_conflicting_duplicates(X: Tensor, y: Tensor) -> None:
    """Raise :class:`InvalidDataError` if two rows of ``X`` are equal but their labels differ.

    Such a pair (x, +1), (x, −1) has margins of opposite signs for every model f(θ; x), so no parameter
    classifies both and the margin flow never separates the data (the loss cannot go to zero). Each row is
    hashed (:func:`_row_hashes`, O(n) extra memory: no second copy of X); only rows whose hashes collide are
    compared exactly (values, so −0.0 = 0.0). A row conflicts when its label differs from the label of the
    first row with the same x.
    """
    if X.shape[0] < 2 or bool((y == y[0]).all()):
        return
    Xa = X.detach().cpu().numpy()
    ya = y.detach().cpu().numpy()
    conflicts = _conflicts(Xa, ya, _row_hashes(Xa))
    if not conflicts:
        return
    j, i = min(conflicts, key=lambda c: c[1])
    raise InvalidDataError(
        f"the data set has {len(conflicts)} row(s) that repeat an earlier point with a different label; e.g. "
        f"rows {j} and {i} have the same x but labels {_label_repr(ya[j])} and {_label_repr(ya[i])}. No model "
        "can classify both, so the data are not separable and the margin flow would never converge. Remove the "
        "conflicting duplicates (keep one label per point), e.g. find them with "
        "numpy.unique(X, axis=0, return_inverse=True)."
    )


_HASH_BLOCK = 1 << 16  # entries of X hashed at a time (512 KiB of float64)


def _row_hashes(X: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row of ``X`` `(n, d)`, shape `(n,)` uint64; equal rows (−0.0 = 0.0) hash equal.

    Rows are read in blocks (−0.0 mapped to 0.0, as float64 bits), each word mixed and summed with odd
    multipliers modulo 2⁶⁴ (fixed seed: the check is deterministic).
    """
    n, d = X.shape
    mult = np.random.default_rng(0x5EED).integers(1, 2**63, size=d, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    out = np.empty(n, dtype=np.uint64)
    rows = max(1, _HASH_BLOCK // max(d, 1))
    for a in range(0, n, rows):
        u = (np.asarray(X[a : a + rows], dtype=np.float64) + 0.0).view(np.uint64)  # + 0.0 maps -0.0 to 0.0
        u ^= u >> np.uint64(29)
        out[a : a + rows] = (u * mult).sum(axis=1, dtype=np.uint64)
    return out


def _conflicts(X: np.ndarray, y: np.ndarray, h: np.ndarray) -> list[tuple[int, int]]:
    """Pairs (j, i), j < i, where row i equals row j, the first row with its x, and y_i ≠ y_j; only rows whose
    hashes ``h`` collide are compared (exactly)."""
    order = np.argsort(h, kind="stable")  # equal hashes: rows in increasing index
    hs = h[order]
    same = hs[1:] == hs[:-1]
    if not same.any():
        return []
    edges = np.diff(np.concatenate(([False], same, [False])).astype(np.int8))
    conflicts: list[tuple[int, int]] = []
    for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) + 1, strict=True):
        group = order[a:b]
        rows = np.asarray(X[group], dtype=np.float64) + 0.0
        _, first, inverse = np.unique(rows, axis=0, return_index=True, return_inverse=True)
        heads = group[first[inverse.reshape(-1)]]  # each row's first occurrence (group is in index order)
        differ = y[heads] != y[group]
        conflicts.extend(zip(heads[differ].tolist(), group[differ].tolist(), strict=True))
    return conflicts


def _to_numpy(a: Any, what: str) -> np.ndarray:
    if isinstance(a, Tensor):
        return a.detach().cpu().numpy()
    try:
        return np.asarray(a)
    except (ValueError, TypeError) as err:  # ragged lists
        raise InvalidDataError(
            f"could not convert {what} to an array ({err}); pass a rectangular numpy array, tensor or list of lists."
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
            ``d == 0``, ``X`` or ``y`` is complex, ``X`` has NaN/inf entries (the message counts them and gives
            the first bad row),
            ``y`` has NaN, the labels have more than two classes or a single class other than ±1,
            the same point appears with both labels,
            ``positive_class`` is not a label,
            or ``info`` is not JSON-able.

    Example:
        >>> ds = make_dataset([[1.0, 0.0], [0.0, 1.0]], [0, 1])
        >>> ds.y.tolist()
        [-1.0, 1.0]
    """
    Xa = _to_numpy(X, "X")
    ya = _to_numpy(y, "y")
    _check_shapes(Xa, ya)
    Xa = _float64_features(Xa)
    y_pm, info_out = _labels_to_pm1(ya, positive_class, info)
    info_out = _checked_info(info_out)
    return Dataset(torch.from_numpy(Xa), torch.from_numpy(np.ascontiguousarray(y_pm)), str(name), info_out)


def _check_shapes(Xa: np.ndarray, ya: np.ndarray) -> None:
    """Raise :class:`InvalidDataError` unless X is `(n, d)` and y is `(n,)` with n, d ≥ 1."""
    if Xa.ndim != 2:
        hint = (
            "for n samples of a single feature use X.reshape(-1, 1); for a single sample X.reshape(1, -1)"
            if Xa.ndim == 1
            else "flatten each sample, e.g. X.reshape(len(X), -1)"
        )
        raise InvalidDataError(f"X must be 2-D with shape (n, d); got shape {Xa.shape} ({Xa.ndim}-D); {hint}.")
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


def _float64_features(Xa: np.ndarray) -> np.ndarray:
    """A float64 copy of the numeric, finite features X (raises :class:`InvalidDataError` otherwise)."""
    _check_real(Xa, "X")
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
    return Xa


def _check_real(a: np.ndarray, what: str) -> None:
    """Raise :class:`InvalidDataError` if ``a`` is complex: casting to float64 would drop the imaginary parts."""
    if a.dtype.kind != "c":
        return
    fix = f"{what}.real if the imaginary parts are zero or meaningless"
    if what == "X":
        fix += ", or both parts as separate features, np.hstack([X.real, X.imag])"
    raise InvalidDataError(f"{what} is complex ({a.dtype}); flowsim needs real data. Pass {fix}.")


def _labels_to_pm1(ya: np.ndarray, positive_class: Any, info: dict | None) -> tuple[np.ndarray, dict]:
    """Labels mapped to ±1 (float64) and a copy of ``info`` that records a non-trivial map (label_map, label_note)."""
    _check_real(ya, "y")
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
    return y_pm, info_out


def _checked_info(info_out: dict) -> dict:
    """``info_out`` converted by :func:`jsonable`; raises :class:`InvalidDataError` if it is still not JSON-able."""
    info_out = jsonable(info_out)
    try:
        json.dumps(info_out)
    except (TypeError, ValueError) as err:
        raise InvalidDataError(
            f"info must be JSON-able (it is saved with results); json.dumps failed: {err}. Store numbers, "
            "strings, lists and dicts only."
        ) from err
    return info_out


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
