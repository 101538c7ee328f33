"""Reporting: a plain-text table of results and a Markdown report with every metric and figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...results import environment_metadata
from ._framework import STATUSES, CheckResult

__all__ = ["format_table", "write_report"]


def _fmt(v: Any) -> str:
    if v is None:  # (a check with no metric: skipped, or an error before its first)
        return "—"
    if isinstance(v, bool | np.bool_):
        return str(bool(v))
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, float | np.floating):
        v = float(v)
        if v == 0.0 or (1e-3 <= abs(v) < 1e4):
            return f"{v:.6g}"
        return f"{v:.3e}"
    return str(v)


def format_table(results: list[CheckResult]) -> str:
    """Plain-text table: case, measured, reference, tolerance, status, time (primary metric per case); then why
    each skipped or erroring case was not carried out (what to install, what went wrong); then the counts."""
    rows = [("case", "measured", "reference", "tolerance", "status", "time")]
    for r in results:
        rows.append((r.case, _fmt(r.measured), _fmt(r.reference), r.tolerance, r.status, f"{r.runtime:.1f}s"))
    rows = [tuple(c if len(c) <= 44 else c[:41] + "..." for c in row) for row in rows]
    widths = [max(len(row[k]) for row in rows) for k in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    reasons = [f"{r.case}  {r.status}: {r.message}" for r in results if r.status in ("skipped", "error")]
    if reasons:
        lines += ["", *reasons]
    total = sum(r.runtime for r in results)
    lines.append(f"\n{_counts(results)} in {total:.1f} s")
    return "\n".join(lines)


def _counts(results: list[CheckResult]) -> str:
    """``"17 passed, 0 failed, 0 errors, 1 skipped"``."""
    n = {s: sum(r.status == s for r in results) for s in STATUSES}
    return f"{n['pass']} passed, {n['fail']} failed, {n['error']} errors, {n['skipped']} skipped"


def _md(v: Any) -> str:
    return _fmt(v).replace("|", "\\|")


def write_report(results: list[CheckResult], out: str | Path, *, title: str | None = None) -> Path:
    """Write ``report.md`` into ``out``: a summary table and, per case, every metric and its figures.

    Args:
        results: from :func:`run_validation`.
        out: directory (created if needed); figure paths in the results are relative to it.
        title: heading (default names the tier).

    Returns:
        The path of ``report.md``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tier = results[0].tier if results else "quick"
    total = sum(r.runtime for r in results)
    meta = environment_metadata()
    lines = [
        f"# {title or f'flowsim validation report ({tier} tier)'}",
        "",
        f"{_counts(results)}; total check time {total:.1f} s. "
        f"flowsim {meta['flowsim']}, torch {meta['torch']}, scipy {meta['scipy']}, {meta['date']}.",
        "",
        "Status: *pass* — every metric within tolerance; *fail* — a metric outside its tolerance or a run "
        "that did not reach its horizon; *error* — the reference could not be computed or a needed module "
        "is missing (never counted as a pass); *skipped* — an optional dependency of the check is not "
        "installed (the message says what to install; neither a pass nor a failure). Times are log t = "
        "natural log of the flow time t.",
        "",
        "| case | title | measured | reference | tolerance | status | time |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.case} | {r.title.replace('|', '/')} | {_md(r.measured)} | {_md(r.reference)} | "
            f"{r.tolerance.replace('|', '/')} | **{r.status}** | {r.runtime:.1f} s |"
        )
    for r in results:
        lines += [
            "",
            f"## {r.case}: {r.title}",
            "",
            f"Status: **{r.status}** ({r.runtime:.1f} s). References: {r.references}.",
        ]
        if r.message:
            lines += ["", f"Message: {r.message}"]
        if r.metrics:
            lines += ["", "| metric | measured | reference | tolerance | ok |", "|---|---|---|---|---|"]
            for m in r.metrics:
                lines.append(
                    f"| {m.name.replace('|', '/')} | {_md(m.measured)} | {_md(m.reference)} | "
                    f"{m.tolerance.replace('|', '/')} | {'✓' if m.passed else '✗'} |"
                )
        for fig in r.figures:
            lines += ["", f"![{r.case}]({fig})"]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
