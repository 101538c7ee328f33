"""Tests of the theorem-verification suite (flowsim.lab.validate), the CLI `flowsim validate` and the KKT residuals."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

import flowsim.analysis.references._kkt as references_module
import flowsim.lab.validate as validate
import flowsim.lab.validate._linear as linear_checks
import flowsim.lab.validate._networks as network_checks
from flowsim.analysis.references import kkt_residual, max_margin_l1, max_margin_lp, svm_l2
from flowsim.errors import InvalidParameterError, ReferenceSolverError
from flowsim.lab.cli import main
from flowsim.models import Linear, TwoLayerReLUPower
from flowsim.potentials import Euclidean, HyperbolicEntropy

from .problems import random_separable


def test_registry_covers_every_case():
    cases = sorted(validate.CHECKS, key=lambda c: int(c[1:]))
    assert cases == [f"C{k}" for k in range(1, len(cases) + 1)] and len(cases) >= 18
    for chk in validate.CHECKS.values():
        assert chk.title and chk.references and chk.func.__doc__


# ---------------------------------------------------------------- real quick checks, same code path as the CLI
def test_quick_checks_pass_and_write_figures(tmp_path):
    results = validate.run_validation(["C1", "c6", "C10"], out=tmp_path)
    assert [r.case for r in results] == ["C1", "C6", "C10"]
    for r in results:
        assert r.status == "pass", (r.case, r.message)
        assert r.metrics and all(m.passed for m in r.metrics)
        assert r.tier == "quick" and r.runtime > 0
    c10 = results[-1]
    assert c10.figures == ["figs/C10.png"]
    assert (tmp_path / "figs" / "C10.png").stat().st_size > 1000
    report = validate.write_report(results, tmp_path).read_text()
    assert "![C10](figs/C10.png)" in report
    assert "| C1 |" in report and "closed form" in report


@pytest.mark.slow  # every quick case through the CLI (~1.5 min); also `flowsim validate`
def test_whole_quick_tier_passes_through_the_cli(tmp_path, capsys):
    # Acceptance of `flowsim validate`: the quick tier (every registered case) passes in CI.
    code = main(["validate", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    n = len(validate.CHECKS)
    assert f"{n} passed, 0 failed, 0 errors" in out
    report = (tmp_path / "report.md").read_text()
    for k in range(1, n + 1):
        assert f"| C{k} |" in report


# ---------------------------------------------------------------- failures of the reference are errors, never passes
def test_reference_solver_failure_is_error(monkeypatch):
    def broken(*args, **kwargs):
        raise ReferenceSolverError("svm_l2: NNLS (Lawson–Hanson) did not converge (injected)")

    monkeypatch.setattr(linear_checks, "svm_l2", broken)
    r = validate.run_check("C10")
    assert r.status == "error"
    assert "reference solver failed" in r.message and "injected" in r.message


def test_non_unique_lp_reference_is_error(monkeypatch):
    real = linear_checks.max_margin_l1

    def not_unique(Z, **kwargs):
        sol = real(Z, **kwargs)
        sol.unique = False
        return sol

    monkeypatch.setattr(linear_checks, "max_margin_l1", not_unique)
    r = validate.run_check("C12")
    assert r.status == "error" and "not certified unique" in r.message


def test_missing_module_is_error(monkeypatch):
    real = network_checks._require

    def missing(module):
        if module == "flowsim.discrete":
            raise validate.CheckError(f"{module} not available (simulated)")
        return real(module)

    monkeypatch.setattr(network_checks, "_require", missing)
    r = validate.run_check("C8")
    assert r.status == "error" and r.message.startswith("error: flowsim.discrete not available")


def _without_clarabel(monkeypatch) -> None:
    """As on the README's default install (no ``vision`` extra): ``import clarabel`` raises ImportError."""
    monkeypatch.setitem(sys.modules, "clarabel", None)


def test_missing_optional_dependency_is_skipped_with_the_fix(tmp_path, monkeypatch, capsys):
    """C16 without clarabel: skipped before any run, not an error; the console line and the lines under the table
    say why and what to install; the exit status is 0 (nothing failed)."""
    _without_clarabel(monkeypatch)
    assert main(["validate", "--only", "C16", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    fix = 'pip install "flowsim[vision]"'
    progress = next(line for line in out.splitlines() if line.startswith("[1/1] C16: SKIPPED"))
    assert "clarabel is not installed" in progress and fix in progress, out
    row = next(line for line in out.splitlines() if line.startswith("C16 ") and "0.0s" in line)
    assert row.split() == ["C16", "—", "—", "skipped", "0.0s"], row
    reason = next(line for line in out.splitlines() if line.startswith("C16  skipped: "))
    assert "clarabel is not installed" in reason and fix in reason, out
    assert "0 passed, 0 failed, 0 errors, 1 skipped" in out, out
    report = (tmp_path / "report.md").read_text()
    assert "**skipped**" in report and fix in report


def test_a_skipped_case_does_not_hide_a_failure(tmp_path, monkeypatch, capsys):
    _without_clarabel(monkeypatch)
    _break_inverse(monkeypatch, HyperbolicEntropy)
    assert main(["validate", "--only", "C2,C16", "--out", str(tmp_path)]) == 1
    assert "0 passed, 1 failed, 0 errors, 1 skipped" in capsys.readouterr().out


def test_crashing_check_is_error(monkeypatch):
    def crash(ctx):
        ctx.upper("something", 0.0, 1.0)
        raise ValueError("boom")

    monkeypatch.setitem(validate.CHECKS, "C3", validate.Check("C3", "crash", crash, "none"))
    r = validate.run_check("C3")
    assert r.status == "error" and "boom" in r.message


def test_unknown_case_raises():
    with pytest.raises(InvalidParameterError, match="C99"):
        validate.run_validation(["C99"])


def test_cli_unknown_case_is_an_error_before_the_report_folder(tmp_path, capsys):
    from flowsim.lab.cli import main

    out = tmp_path / "report"
    assert main(["validate", "--only", "C99", "--out", str(out)]) == 2
    assert "C99" in capsys.readouterr().err and not out.exists()


# ---------------------------------------------------------------- acceptance 4: a broken potential fails the checks
def _break_inverse(monkeypatch, cls, factor=1.01):
    """A wrong inverse mirror map: ∇Φ*(z) scaled by `factor` (so ∇Φ*∘∇Φ ≠ id)."""
    original = cls.inverse_mirror_map

    def wrong(self, z):
        return factor * original(self, z)

    monkeypatch.setattr(cls, "inverse_mirror_map", wrong)


def test_broken_hyperbolic_entropy_fails_relevant_checks(monkeypatch):
    _break_inverse(monkeypatch, HyperbolicEntropy)
    results = {r.case: r for r in validate.run_validation(["C2", "C6"])}
    assert results["C2"].status == "fail"
    assert "∇Φ*(∇Φ(x))" in results["C2"].message and "HyperbolicEntropy" in results["C2"].message
    assert results["C6"].status == "fail"


def test_broken_euclidean_fails_closed_form(monkeypatch):
    _break_inverse(monkeypatch, Euclidean, factor=1.001)
    r = validate.run_check("C1")
    assert r.status == "fail" and r.measured > 1e-4


# ---------------------------------------------------------------- CLI: exit codes and report
def test_cli_validate_exit_code_and_report(tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["validate", "--only", "C3,C2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "[1/2] C2" in text and "[2/2] C3" in text and "2 passed, 0 failed, 0 errors" in text
    report = (out / "report.md").read_text()
    for word in ("| case | title | measured | reference | tolerance | status | time |", "## C2:", "## C3:", "**pass**"):
        assert word in report


def test_cli_validate_nonzero_on_failure(tmp_path, monkeypatch, capsys):
    _break_inverse(monkeypatch, HyperbolicEntropy)
    out = tmp_path / "rep"
    assert main(["validate", "--only", "C2", "--out", str(out)]) == 1
    assert "0 passed, 1 failed" in capsys.readouterr().out
    assert "**fail**" in (out / "report.md").read_text()


def test_cli_validate_unknown_case_exit_2(tmp_path, capsys):
    assert main(["validate", "--only", "C42", "--out", str(tmp_path)]) == 2
    assert "C42" in capsys.readouterr().err


# ---------------------------------------------------------------- KKT residuals (references.kkt_residual)
@pytest.mark.parametrize("p", [1.0, 1.5, 2.0, 3.0])
def test_kkt_residual_vanishes_at_max_margin_solutions(p):
    data = random_separable(n=10, d=5, seed=6)
    Z = data.Z.numpy()
    sol = {1.0: max_margin_l1, 2.0: svm_l2}.get(p, lambda Z: max_margin_lp(Z, p))(Z)
    res = kkt_residual(Linear(5), sol.w, data.X, data.y, p=p)
    assert res.status == "optimal"
    assert res.stationarity < 1e-10 and abs(res.complementarity) < 1e-10
    assert set(res.active.tolist()) >= set(sol.support.tolist())
    # scale invariance: the rescaling to q_min = 1 makes 7·w equivalent
    assert kkt_residual(Linear(5), 7.0 * sol.w, data.X, data.y, p=p).stationarity < 1e-10
    # a non-optimal direction has a clearly positive residual
    assert kkt_residual(Linear(5), sol.w * (1 + 0.1 * np.arange(5)), data.X, data.y, p=p).stationarity > 1e-3


def test_kkt_residual_nonlinear_model_and_errors(monkeypatch):
    data = random_separable(n=8, d=3, seed=1)
    model = TwoLayerReLUPower(3, 4, power=2)
    theta = model.init(seed=0, dtype=torch.float64)
    q = data.y * model.forward(theta, data.X)
    if q.min() <= 0:
        with pytest.raises(InvalidParameterError, match="q_min"):
            kkt_residual(model, theta, data.X, data.y)
    with pytest.raises(InvalidParameterError, match="p must"):
        kkt_residual(Linear(3), np.ones(3), data.X, data.y, p=0.5)

    class Bad:
        status, x, message = -1, np.zeros(1), "injected failure"

    monkeypatch.setattr(references_module, "lsq_linear", lambda *a, **k: Bad())
    w = svm_l2(data.Z.numpy()).w
    with pytest.raises(ReferenceSolverError, match="BVLS"):
        kkt_residual(Linear(3), w, data.X, data.y, p=1.0)
