"""Independent max-margin reference solutions for linear models.

For label-signed data z_i = y_i x_i (the rows of ``Z``, shape `(n, d)`) and a norm ‖·‖, the max-margin
problem is

    min ‖w‖   subject to   ⟨z_i, w⟩ ≥ 1 for all i,                                  (P)

whose solution ŵ gives the maximal normalized margin γ = max_{‖w‖=1} min_i ⟨z_i, w⟩ = 1/‖ŵ‖. Mirror
flow on a linear model with exponential-type loss converges in direction to the solution of (P) for the
potential's horizon norm: ℓ2 for gradient flow (Soudry et al.), ℓp for p-power potentials and ℓ1 for
hyperbolic entropy (Gunasekar et al.; Pesme et al.). These solvers are the references those limits are
checked against; they share no code with the flow.

* :func:`svm_l2` – ℓ2 hard-margin SVM without bias, via the Lawson–Hanson least-distance program (an
  active-set NNLS on the SVM dual), polished on the support set by a linear solve.
* :func:`max_margin_l1`, :func:`max_margin_linf` – linear programs (scipy HiGHS), polished on the active
  set, with a uniqueness check.
* :func:`max_margin_lp` – 1 < p < ∞ with SLSQP from the ℓ2 solution, polished by Newton on the KKT system.
* :func:`crammer_singer` – the multi-class (Crammer–Singer) hard margin without bias, a QP solved by
  Clarabel on Kesler's construction (:func:`kesler_rows`).
* :func:`max_margin` – dispatcher on ``"l2"``, ``"l1"``, ``"linf"``, or a number p.

Every solver checks its own status and the KKT conditions of its result, and raises
:class:`~flowsim.errors.ReferenceSolverError` (with the solver's message and a hint) rather than
returning an inaccurate point. All solves run on data rescaled to max_i ‖z_i‖ ~ 1 and are mapped back,
so the reported KKT residuals are relative and scale-free.

Never use ``sklearn.svm.LinearSVC`` as a reference: it solves a finite-C squared-hinge problem with a
bias, not (P).

References:
    Soudry, Hoffer, Nacson, Gunasekar & Srebro, "The Implicit Bias of Gradient Descent on Separable
    Data", JMLR 19(70), 2018 (arXiv 1710.10345).
    Gunasekar, Lee, Soudry & Srebro, "Characterizing Implicit Bias in Terms of Optimization Geometry",
    ICML 2018 (arXiv 1802.08246).
    Pesme, Dragomir & Flammarion, "Implicit Bias of Mirror Flow on Separable Data", NeurIPS 2024
    (arXiv 2406.12763).
    Lawson & Hanson, "Solving Least Squares Problems", SIAM 1995, ch. 23 (least distance programming).
"""

from ._common import ACTIVE_TOL as ACTIVE_TOL
from ._common import KKT_TOL as KKT_TOL
from ._common import MaxMarginSolution as MaxMarginSolution
from ._crammer_singer import crammer_singer as crammer_singer
from ._crammer_singer import kesler_rows as kesler_rows
from ._dispatch import max_margin as max_margin
from ._kkt import KKTResidual as KKTResidual
from ._kkt import kkt_residual as kkt_residual
from ._linprog import max_margin_l1 as max_margin_l1
from ._linprog import max_margin_linf as max_margin_linf
from ._lp_norm import max_margin_lp as max_margin_lp
from ._svm import svm_l2 as svm_l2

__all__ = [
    "MaxMarginSolution",
    "svm_l2",
    "max_margin_l1",
    "max_margin_linf",
    "max_margin_lp",
    "max_margin",
    "crammer_singer",
    "kesler_rows",
    "KKTResidual",
    "kkt_residual",
    "ACTIVE_TOL",
    "KKT_TOL",
]
