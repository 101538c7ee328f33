"""Multi-class hard margin (Crammer–Singer, without bias) as a convex QP solved by Clarabel."""

from __future__ import annotations

import numpy as np

from ...errors import InvalidDataError, ReferenceSolverError
from ._common import ACTIVE_TOL, KKT_TOL, MaxMarginSolution

__all__ = ["kesler_rows", "crammer_singer"]


def _check(X: np.ndarray, labels: np.ndarray, num_classes: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    X = np.asarray(X, dtype=np.float64)
    labels = np.asarray(labels)
    if X.ndim != 2 or labels.shape != (X.shape[0],):
        raise InvalidDataError(f"crammer_singer: X must be (n, d) and labels (n,); got {X.shape} and {labels.shape}.")
    if not np.issubdtype(labels.dtype, np.integer) and not np.all(labels == np.round(labels)):
        raise InvalidDataError("crammer_singer: labels must be class indices 0..K−1 (integers).")
    labels = labels.astype(np.int64)
    K = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    if labels.min() < 0 or labels.max() >= K or K < 2:
        raise InvalidDataError(f"crammer_singer: labels must lie in 0..K−1 with K = {K} ≥ 2.")
    return X, labels, K


def kesler_rows(X: np.ndarray, labels: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """Kesler's construction: one row z_ic = (e_{y_i} − e_c) ⊗ x_i per point i and class c ≠ y_i.

    For W of shape `(K, d)` and w = W.reshape(-1) (row-major), ⟨z_ic, w⟩ = f_{y_i}(x_i) − f_c(x_i) with
    f = W x: multi-class margins of a linear model become binary margins of a linear model in K·d
    dimensions, and the multi-class exponential loss Σ_i Σ_{c≠y_i} e^{−(f_{y_i} − f_c)} is the binary
    exponential loss Σ e^{−⟨z, w⟩} on these rows (all labels +1).

    Args:
        X: inputs, shape `(n, d)`; labels: classes 0..K−1, shape `(n,)`; num_classes: K (default
            max label + 1).

    Returns:
        Z, shape `(n·(K−1), K·d)`, float64, rows ordered by point then class.

    Raises:
        InvalidDataError: bad shapes or labels.

    References:
        Duda & Hart, "Pattern Classification and Scene Analysis", 1973, §5.12 (Kesler's construction).
    """
    X, labels, K = _check(X, labels, num_classes)
    n, d = X.shape
    other = np.array([[c for c in range(K) if c != y] for y in labels], dtype=np.int64)  # (n, K−1)
    Z = np.zeros((n, K - 1, K, d))
    rows = np.arange(n)[:, None]
    Z[rows, np.arange(K - 1)[None, :], labels[:, None]] = X[:, None, :]
    Z[rows, np.arange(K - 1)[None, :], other] = -X[:, None, :]
    return Z.reshape(n * (K - 1), K * d)


def crammer_singer(X: np.ndarray, labels: np.ndarray, num_classes: int | None = None) -> MaxMarginSolution:
    """Crammer–Singer multi-class hard-margin classifier without bias:

        min ½‖W‖_F²   subject to   (w_{y_i} − w_c)·x_i ≥ 1 for all i and c ≠ y_i,

    a strictly convex QP, solved by Clarabel's interior-point method on the sparse Kesler rows. Clarabel is
    chosen because it is a maintained QP/conic solver (cvxpy's default) that certifies infeasibility and
    needs no starting point; scipy has no QP solver (HiGHS is LP-only there) and SLSQP/trust-constr scale
    badly with thousands of constraints. The result is checked against the KKT conditions
    (W = Σ α_ic z_ic, α ≥ 0, complementarity) before it is returned.

    Args:
        X: inputs, shape `(n, d)`; labels: 0..K−1, shape `(n,)`; num_classes: K.

    Returns:
        :class:`MaxMarginSolution` with ``w`` = vec(W) of shape `(K·d,)` (row-major (K, d)), ``margin``
        = 1/‖W‖_F (the maximal normalized multi-class margin min_i q_i/‖W‖_F), ``dual`` α per Kesler row,
        ``norm = "l2"``.

    Raises:
        ImportError: clarabel is missing (``pip install "flowsim[vision]"``).
        InvalidDataError: bad shapes or labels.
        ReferenceSolverError: the data are not linearly separable through the origin, or the solver or the
            KKT check fails.

    References:
        Crammer & Singer, "On the Algorithmic Implementation of Multiclass Kernel-based Vector Machines",
        JMLR 2, 2001. Goulart & Chen, "Clarabel: An interior-point solver for conic programs with quadratic
        objectives", arXiv:2405.12762 (2024).
    """
    import clarabel
    from scipy import sparse

    Z = kesler_rows(X, labels, num_classes)
    scale = float(np.abs(Z).max()) or 1.0
    Zs = Z / scale
    m, p = Zs.shape
    settings = clarabel.DefaultSettings()
    settings.verbose = False
    settings.tol_gap_abs = settings.tol_gap_rel = settings.tol_feas = 1e-12
    solver = clarabel.DefaultSolver(
        sparse.identity(p, format="csc"),
        np.zeros(p),
        sparse.csc_matrix(-Zs),
        -np.ones(m),
        [clarabel.NonnegativeConeT(m)],
        settings,
    )
    sol = solver.solve()
    status = str(sol.status)
    if "Infeasible" in status:
        raise ReferenceSolverError(
            "crammer_singer: the classes are not linearly separable through the origin (Clarabel: "
            f"{status}); use fewer points or a richer model."
        )
    if "Solved" not in status:
        raise ReferenceSolverError(f"crammer_singer: Clarabel did not solve the QP ({status}).")
    w = np.asarray(sol.x) / scale  # Z w ≥ 1 in the original units
    alpha = np.asarray(sol.z) / scale**2
    q = Z @ w - 1.0
    amax = max(float(alpha.max()), 1e-300)
    kkt = {
        "primal": float(max(0.0, -q.min())),
        "dual": float(max(0.0, -alpha.min()) / amax),
        "stationarity": float(np.abs(w - Z.T @ alpha).max() / max(np.abs(w).max(), 1e-300)),
        "complementarity": float(np.abs(alpha * q).max() / amax),
    }
    if max(kkt.values()) > KKT_TOL:
        raise ReferenceSolverError(f"crammer_singer: KKT residuals too large after Clarabel ({kkt}).")
    norm = float(np.linalg.norm(w))
    return MaxMarginSolution(
        w=w,
        margin=1.0 / norm,
        norm="l2",
        p=2.0,
        dual=alpha,
        support=np.flatnonzero(q <= ACTIVE_TOL),
        status="optimal",
        message=f"Crammer–Singer QP on {m} Kesler rows solved by Clarabel ({status}, {sol.iterations} iterations)",
        unique=True,
        kkt=kkt,
    )
