"""flowsim paper: every figure in --quick mode, asserting its effect from its own numbers (issue 21)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from flowsim.errors import FlowSimError
from flowsim.lab.cli import main
from flowsim.lab.paper import FIGURES, run_figure


def _check_files(result, out):
    for png in result.pngs:
        assert (out / png).stat().st_size > 1000
    saved = json.loads((out / f"{result.name}.json").read_text())
    assert saved["figure"] == result.name and saved["quick"] is True
    assert saved["reconstruction"]
    return saved["numbers"]


def test_fig2_active_neurons_he_below_gf_below_smoothed_equal_width(tmp_path):
    result = run_figure("fig2", quick=True, out=tmp_path)
    numbers = _check_files(result, tmp_path)
    runs = numbers["runs"]
    gf, he, p3 = (runs[k]["active_neurons"] for k in ("gradient flow", "HE β=0.01", "smoothed p=3 λ=1"))
    assert he < gf < p3 == numbers["width"]
    assert all(r["status"] == "success" for r in runs.values())
    # from the saved points w̃_j = |a_j| w_j: HE's mass sits on a few neurons, the smoothed potential's is spread
    share = {}
    for key in ("HE β=0.01", "smoothed p=3 λ=1"):
        norms = np.sort(np.linalg.norm(np.asarray(runs[key]["w_tilde"]), axis=1))[::-1]
        share[key] = norms[:he].sum() / norms.sum()
    assert share["HE β=0.01"] > 0.95 > 0.5 > share["smoothed p=3 λ=1"]
    assert "active neurons" in result.report()


def test_fig3_distance_to_gradient_flow_decreases_in_lambda(tmp_path):
    result = run_figure("fig3", quick=True, out=tmp_path)
    numbers = _check_files(result, tmp_path)
    cos = [numbers["runs"][f"{lam:g}"]["cosine_to_gf"] for lam in numbers["lambda"]]
    assert numbers["lambda"] == sorted(numbers["lambda"])
    assert all(a < b for a, b in zip(cos, cos[1:], strict=False))
    assert cos[-1] > 0.99  # λ = 100: the potential is nearly quadratic at the weights' scale


def test_paper_cli_list_and_unknown(capsys):
    assert main(["paper", "--list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in FIGURES)
    with pytest.raises(FlowSimError, match="unknown figure"):
        run_figure("fig99", quick=True)
