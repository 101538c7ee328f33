"""Running checks: one (:func:`run_check`, which classifies its outcome) or several in case order."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from ...errors import InvalidParameterError, ReferenceSolverError
from ._framework import CHECKS, CheckError, CheckFailure, CheckResult, CheckSkipped, _Ctx
from ._report import _fmt

__all__ = ["run_check", "run_validation"]


def _case_key(case: str) -> int:
    return int(case[1:]) if case[1:].isdigit() else 10**6


def run_check(case: str, *, full: bool = False, out: str | Path | None = None) -> CheckResult:
    """Run one check and classify its outcome (never raises for a failing or erroring check).

    Args:
        case: ``"C1"`` … ``"C15"`` (case-insensitive).
        full: run the ``full`` tier (longer horizons, more settings) instead of ``quick``.
        out: report directory; figures go to ``out/figs/<case>.png`` (None: no figures).

    Returns:
        :class:`CheckResult` with status ``"pass"`` (all metrics within tolerance), ``"fail"`` (a metric
        outside, or a flowsim run that did not reach its horizon), ``"error"`` (reference failure —
        :class:`~flowsim.errors.ReferenceSolverError` —, missing module, or a crash; never a pass) or
        ``"skipped"`` (an optional dependency is not installed: :class:`CheckSkipped`, its message says what
        to install).

    Raises:
        InvalidParameterError: if ``case`` is not a registered check.
    """
    key = case.strip().upper()
    if key not in CHECKS:
        raise InvalidParameterError(
            f"unknown validation case {case!r}; valid: {', '.join(sorted(CHECKS, key=_case_key))}"
        )
    chk = CHECKS[key]
    ctx = _Ctx(key, full, Path(out) if out is not None else None)
    start = time.perf_counter()
    status, message = "pass", ""
    try:
        with torch.inference_mode(False):
            chk.func(ctx)
        bad = [m for m in ctx.metrics if not m.passed]
        if bad:
            status = "fail"
            message = "; ".join(f"{m.name}: {_fmt(m.measured)} (tolerance {m.tolerance})" for m in bad)
        elif not ctx.metrics:
            status, message = "error", "the check recorded no metrics"
    except ReferenceSolverError as err:
        status, message = "error", f"reference solver failed: {err}"
    except CheckError as err:
        status, message = "error", f"error: {err}"
    except CheckSkipped as err:
        status, message = "skipped", str(err)
    except CheckFailure as err:
        status, message = "fail", str(err)
    except Exception as err:  # a crash of the check is an error, never a pass
        tb = traceback.format_exc(limit=3).strip().splitlines()[-1]
        status, message = "error", f"{type(err).__name__}: {err} [{tb}]"
    runtime = time.perf_counter() - start
    if ctx.notes:
        message = "; ".join([*ctx.notes, message] if message else ctx.notes)
    return CheckResult(
        case=key,
        title=chk.title,
        status=status,
        message=message,
        metrics=ctx.metrics,
        runtime=runtime,
        figures=ctx.figures,
        tier="full" if full else "quick",
        references=chk.references,
    )


def _why(result: CheckResult) -> str:
    """The reason after the progress line of a check that was skipped or could not be carried out."""
    return f" ({result.message})" if result.status in ("skipped", "error") and result.message else ""


def resolve_cases(cases: Iterable[str] | None = None) -> list[str]:
    """The case ids to run, upper-cased and in case order (default: all).

    Raises:
        InvalidParameterError: on an unknown case id, naming the valid ones.
    """
    keys = sorted({c.strip().upper() for c in (cases or CHECKS)}, key=_case_key)
    unknown = [k for k in keys if k not in CHECKS]
    if unknown:
        raise InvalidParameterError(
            f"unknown validation case(s) {', '.join(unknown)}; valid: {', '.join(sorted(CHECKS, key=_case_key))}"
        )
    return keys


def run_validation(
    cases: Iterable[str] | None = None,
    *,
    full: bool = False,
    out: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[CheckResult]:
    """Run checks in case order, optionally printing a progress line per check.

    Args:
        cases: case ids (default: all, C1–C18).
        full: run the ``full`` tier.
        out: report directory for figures (``write_report`` writes ``report.md`` there).
        progress: called with a line before and after each check (e.g. ``print``).

    Returns:
        The :class:`CheckResult` list, in case order.

    Raises:
        InvalidParameterError: on an unknown case id (before anything runs).
    """
    keys = resolve_cases(cases)
    results = []
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for i, key in enumerate(keys, 1):
            if progress is not None:
                progress(f"[{i}/{len(keys)}] {key}: {CHECKS[key].title} ...")
            res = run_check(key, full=full, out=out)
            results.append(res)
            if progress is not None:
                progress(f"[{i}/{len(keys)}] {key}: {res.status.upper()} in {res.runtime:.1f} s{_why(res)}")
    finally:
        torch.set_num_threads(old)
    return results
