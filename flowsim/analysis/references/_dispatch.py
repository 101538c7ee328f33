"""One entry point for the max-margin references: :func:`max_margin` by norm name or exponent."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ...errors import InvalidParameterError
from ._common import (
    MaxMarginSolution,
)
from ._linprog import max_margin_l1, max_margin_linf
from ._lp_norm import max_margin_lp
from ._svm import svm_l2


def max_margin(Z: Any, norm_or_p: str | float, **kwargs: Any) -> MaxMarginSolution:
    """Max-margin solution in the norm named by ``norm_or_p``.

    Args:
        Z: label-signed data z_i = y_i x_i, shape `(n, d)`, or a :class:`~flowsim.data.Dataset`.
        norm_or_p: ``"l2"``/``2`` → :func:`svm_l2`; ``"l1"``/``1`` → :func:`max_margin_l1`;
            ``"linf"``/``"inf"``/``math.inf`` → :func:`max_margin_linf`; any other p > 1 (number, or a
            string ``"l1.5"``) → :func:`max_margin_lp`.
        **kwargs: passed to the solver (``check_unique`` for the LPs, ``polish`` for ℓ2/ℓp).

    Returns:
        :class:`MaxMarginSolution`.

    Raises:
        InvalidParameterError: on an unknown norm name or p < 1.
        ReferenceSolverError: from the solver.
    """
    p: float
    if isinstance(norm_or_p, str):
        key = norm_or_p.strip().lower().replace("_", "").replace("ℓ", "l")
        if key in ("linf", "inf", "l∞", "max"):
            p = math.inf
        else:
            try:
                p = float(key[1:] if key.startswith("l") else key)
            except ValueError:
                p = math.nan
            if math.isnan(p):
                raise InvalidParameterError(
                    f"unknown norm {norm_or_p!r}; use 'l2', 'l1', 'linf', a string like 'l1.5', or a number p ≥ 1."
                ) from None
    elif isinstance(norm_or_p, bool) or not isinstance(norm_or_p, (int, float, np.integer, np.floating)):
        raise InvalidParameterError(f"norm_or_p must be a norm name or a number p ≥ 1; got {norm_or_p!r}.")
    else:
        p = float(norm_or_p)
    if math.isnan(p) or p < 1.0:
        raise InvalidParameterError(f"p must be ≥ 1 (a norm); got {norm_or_p!r}. Use 1, 2, a p > 1, or 'linf'.")
    if p == 2.0:
        return svm_l2(Z, **kwargs)
    if p == 1.0:
        return max_margin_l1(Z, **kwargs)
    if math.isinf(p):
        return max_margin_linf(Z, **kwargs)
    return max_margin_lp(Z, p, **kwargs)
