"""Data sets from CSV and NPZ files."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from ..errors import InvalidDataError, InvalidParameterError
from ._dataset import Dataset, make_dataset


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
    X, y = _parse_rows(p, rows, ncol, feat_cols, lc, first_line)
    info = {"source": str(p), "format": "csv", "label_column": int(lc), "header": header}
    return make_dataset(X, y, p.stem, info)


def _parse_rows(
    p: Path, rows: list[list[str]], ncol: int, feat_cols: list[int], lc: int, first_line: int
) -> tuple[np.ndarray, np.ndarray]:
    """Features `(n, ncol − 1)` float64 and labels `(n,)` (numbers if all parse, else strings) of CSV rows."""
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
    return X, y


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
