"""Theorem verification: the known results C1–C18 of ``validation/CASES.md`` as numerical checks.

Each check runs flowsim (:func:`flowsim.simulate`, :func:`flowsim.discrete.mirror_descent`, the potentials
and models) on a small problem and compares the result with a reference computed *independently*: a
closed form, a solver from :mod:`flowsim.analysis.references` (HiGHS LPs, the NNLS SVM, SLSQP, KKT residuals),
a high-precision evaluation (mpmath), or a separate numpy/scipy integration of the same ODE. A check returns a
:class:`CheckResult` with one or more :class:`Metric` rows (measured value, reference, tolerance, pass),
a status and the figures it wrote:

* ``"pass"`` — every metric is within its tolerance;
* ``"fail"`` — a metric is outside its tolerance, or a flowsim run did not reach its horizon;
* ``"error"`` — the reference could not be computed (:class:`~flowsim.errors.ReferenceSolverError`, a
  non-unique LP reference, a failed scipy integration), a module the check needs is missing (C7 and C9 need
  :mod:`flowsim.solvers.filippov`, C8 :mod:`flowsim.discrete`), or the check itself crashed. An error is
  never a pass;
* ``"skipped"`` — an optional dependency of the check is not installed (C16 needs clarabel, from the
  ``vision`` extra); the message says what to install. Neither a pass nor a failure.

Two tiers: ``quick`` (every check on a small horizon) and ``full`` (longer horizons, more potentials, widths
and seeds). Times: ``log t`` is the natural log of the flow time t; horizons are given in log t throughout.

The checks, by topic: exact identities C1–C5 (:mod:`._identities`), implicit bias of linear models C6 and
C10–C13 (:mod:`._linear`), networks and kinks C7–C9, C14, C15 (:mod:`._networks`), the seed paper's findings on
two-layer ReLU nets C16–C18 (:mod:`._paper_networks`). The framework (records,
the context a check receives, the registry :data:`CHECKS`) is :mod:`._framework`; figures are drawn through
:mod:`flowsim.lab.plotting`, only when a report directory is given.

Example:
    >>> from flowsim.validate import run_validation
    >>> results = run_validation(["C1", "C3"])          # doctest: +SKIP
    >>> [r.status for r in results]                     # doctest: +SKIP
    ['pass', 'pass']

References (per case, see each check's docstring):
    Soudry, Hoffer, Nacson, Gunasekar & Srebro, JMLR 2018 (C1, C10); Lyu & Li, ICLR 2020 (C14);
    Gunasekar, Lee, Soudry & Srebro, ICML 2018 (C5, C11); Woodworth et al., COLT 2020 (C6);
    Pesme, Dragomir & Flammarion, NeurIPS 2024 (C11–C13); Du, Hu & Lee, NeurIPS 2018 (C7, C8);
    Jacobs & Montúfar, arXiv 2605.19458 (2026) (C7, C13, C15–C18).
"""

from . import _identities, _linear, _networks, _paper_networks  # noqa: F401  (importing them registers their checks)
from ._framework import (
    CHECKS,
    STATUSES,
    TIERS,
    Check,
    CheckError,
    CheckFailure,
    CheckResult,
    CheckSkipped,
    Metric,
)
from ._report import format_table, write_report
from ._runner import resolve_cases, run_check, run_validation

__all__ = [
    "Metric",
    "CheckResult",
    "CheckError",
    "CheckFailure",
    "CheckSkipped",
    "Check",
    "CHECKS",
    "TIERS",
    "STATUSES",
    "run_check",
    "resolve_cases",
    "run_validation",
    "format_table",
    "write_report",
]
