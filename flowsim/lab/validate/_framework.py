"""The framework of the theorem checks: metrics, results, the context a check receives, the registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CHECKS",
    "STATUSES",
    "TIERS",
    "Check",
    "CheckError",
    "CheckFailure",
    "CheckResult",
    "CheckSkipped",
    "Metric",
    "register_check",
]

TIERS = ("quick", "full")
STATUSES = ("pass", "fail", "error", "skipped")


@dataclass
class Metric:
    """One measured quantity of a check against its reference.

    Attributes:
        name: what is measured (e.g. ``"max rel. error of u(t)"``).
        measured: the measured value (a float, or a short string for counts/orderings).
        reference: the reference value it is compared with (independently computed, or the theory's value).
        tolerance: the acceptance rule as text (e.g. ``"≤ 1e-09"``, ``"≥ 0.97"``, ``"increasing"``).
        passed: whether the measured value satisfies the rule.
    """

    name: str
    measured: Any
    reference: Any
    tolerance: str
    passed: bool


@dataclass
class CheckResult:
    """Outcome of one check.

    Attributes:
        case: case id ``"C1"`` … ``"C15"``.
        title: one-line description.
        status: ``"pass"``, ``"fail"``, ``"error"`` or ``"skipped"`` (an optional dependency is not installed).
        message: explanation (what failed, which reference errored, what to install, substitutions made).
        metrics: the :class:`Metric` rows, in order.
        runtime: wall-clock seconds of the check.
        figures: paths of the figures written (relative to the report directory), e.g. ``figs/C10.png``.
        tier: ``"quick"`` or ``"full"``.
        references: literature of the case.
    """

    case: str
    title: str
    status: str
    message: str
    metrics: list[Metric] = field(default_factory=list)
    runtime: float = 0.0
    figures: list[str] = field(default_factory=list)
    tier: str = "quick"
    references: str = ""

    def _primary(self) -> Metric | None:
        for m in self.metrics:
            if not m.passed:
                return m
        return self.metrics[0] if self.metrics else None

    @property
    def measured(self) -> Any:
        """Measured value of the primary metric (the first failing one, else the first)."""
        m = self._primary()
        return None if m is None else m.measured

    @property
    def reference(self) -> Any:
        """Reference value of the primary metric."""
        m = self._primary()
        return None if m is None else m.reference

    @property
    def tolerance(self) -> str:
        """Tolerance rule of the primary metric."""
        m = self._primary()
        return "" if m is None else m.tolerance


class CheckFailure(Exception):
    """flowsim itself failed inside a check (e.g. a run did not reach its horizon): status ``"fail"``."""


class CheckError(Exception):
    """The check could not be carried out (missing module, unusable reference): status ``"error"``."""


class CheckSkipped(Exception):
    """An optional dependency of the check (a package of a flowsim extra) is not installed: status
    ``"skipped"``, neither a pass nor a failure of the validation; the message says what to install."""


class _Ctx:
    """What a check function receives: the tier, where figures go, and metric recorders."""

    def __init__(self, case: str, full: bool, out: Path | None) -> None:
        self.case = case
        self.full = full
        self.out = out
        self.metrics: list[Metric] = []
        self.notes: list[str] = []
        self.figures: list[str] = []

    # metric recorders -------------------------------------------------------------------------------
    def upper(self, name: str, measured: float, bound: float, reference: Any = 0.0) -> bool:
        ok = bool(np.isfinite(measured) and measured <= bound)
        self.metrics.append(Metric(name, float(measured), reference, f"≤ {bound:.3g}", ok))
        return ok

    def lower(self, name: str, measured: float, bound: float, reference: Any) -> bool:
        ok = bool(np.isfinite(measured) and measured >= bound)
        self.metrics.append(Metric(name, float(measured), reference, f"≥ {bound:.3g}", ok))
        return ok

    def close(self, name: str, measured: float, reference: float, rtol: float = 0.0, atol: float = 0.0) -> bool:
        err = abs(measured - reference)
        ok = bool(np.isfinite(measured) and err <= atol + rtol * abs(reference))
        tol = " + ".join(t for t in (f"{atol:.3g}" if atol else "", f"{rtol:.3g}·|ref|" if rtol else "") if t)
        self.metrics.append(Metric(name, float(measured), float(reference), f"|Δ| ≤ {tol}", ok))
        return ok

    def holds(self, name: str, ok: bool, measured: Any, reference: Any, rule: str) -> bool:
        self.metrics.append(Metric(name, measured, reference, rule, bool(ok)))
        return bool(ok)

    def note(self, text: str) -> None:
        self.notes.append(text)

    # figures ----------------------------------------------------------------------------------------
    def figure(self, draw: Callable[[Any], None], suffix: str = "") -> None:
        """Draw a figure with ``draw(plt)`` and save it as ``figs/<case><suffix>.png`` (if an out dir is set)."""
        if self.out is None:
            return
        from .. import plotting  # matplotlib is loaded only when a figure is drawn

        figdir = self.out / "figs"
        figdir.mkdir(parents=True, exist_ok=True)
        rel = f"figs/{self.case}{suffix}.png"
        plotting.save_drawing(draw, self.out / rel, dpi=100)
        self.figures.append(rel)


@dataclass(frozen=True)
class Check:
    """A registered check: case id, title, the function, literature."""

    case: str
    title: str
    func: Callable[[_Ctx], None]
    references: str


CHECKS: dict[str, Check] = {}


def register_check(case: str, title: str, references: str) -> Callable:
    """Decorator: register ``func(ctx)`` as the check of ``case`` in :data:`CHECKS`."""

    def register(func: Callable[[_Ctx], None]) -> Callable[[_Ctx], None]:
        CHECKS[case] = Check(case, title, func, references)
        return func

    return register
