"""Data sets by name: :data:`DATASETS` and :func:`load_dataset`."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any

from ..errors import InvalidDataError, InvalidParameterError
from ._dataset import Dataset
from ._files import load_csv, load_npz
from ._real import load_digits_pair, load_iris_pair, load_wine_pair
from ._synthetic import gaussian_separable, soudry_2d, sparse_teacher_linear, student_teacher_relu

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
        raise InvalidDataError(f"data set {key!r} needs path=...; e.g. load_dataset({key!r}, path='data.{key}').")
    bad = [k for k in kwargs if k not in sig.parameters]
    if bad:
        raise InvalidParameterError(
            f"load_dataset({key!r}) got unexpected keyword(s) {bad}; {fn.__name__} accepts {list(sig.parameters)}."
        )
    return fn(**kwargs)
