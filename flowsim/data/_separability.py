"""Linear separability through the origin, as an LP feasibility problem."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linprog
from torch import Tensor

from ..errors import InvalidDataError, ReferenceSolverError
from ._dataset import Dataset, _to_numpy


def is_linearly_separable(dataset: Dataset | np.ndarray | Tensor, bounds: list[tuple] | None = None) -> bool:
    """Whether the data are linearly separable through the origin.

    Solves the LP feasibility problem: find w with Z w ≥ 1 (z_i = y_i x_i), which is feasible iff some w
    has y_i⟨x_i, w⟩ > 0 for all i (rescale w). Uses ``scipy.optimize.linprog(method="highs")``.

    Args:
        dataset: a :class:`Dataset`, or the label-signed matrix Z of shape `(n, d)`.
        bounds: optional sign restrictions on w, one ``(lower, upper)`` per feature with entries 0 or None
            (e.g. ``(0, None)``: w_k ≥ 0; ``(0, 0)``: w_k = 0), as a model that cannot change a weight's sign
            imposes them; None: w is free.

    Returns:
        True if separable through the origin, False if the LP is infeasible.

    Raises:
        ReferenceSolverError: if HiGHS ends with a status other than optimal or infeasible.
    """
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
        bounds=[(None, None)] * Z.shape[1] if bounds is None else list(bounds),
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
