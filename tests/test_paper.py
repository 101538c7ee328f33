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


def test_paper_cli_list_run_and_unknown(capsys, tmp_path):
    assert main(["paper", "--list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in FIGURES)
    assert main(["paper", "fig11", "--quick", "--out", str(tmp_path)]) == 0  # (fig2's runs, shared in a process)
    printed = capsys.readouterr().out
    assert "reconstruction:" in printed and "activation lines:" in printed
    assert (tmp_path / "fig11.png").is_file() and (tmp_path / "fig11.json").is_file()
    with pytest.raises(FlowSimError, match="unknown figure"):
        run_figure("fig99", quick=True)
    (tmp_path / "file").write_text("")
    with pytest.raises(FlowSimError, match="is a file"):
        run_figure("fig2", quick=True, out=tmp_path / "file")


def _check_ranges(numbers):
    he = {k: v for k, v in numbers["beta_runs"].items() if k.startswith("HE")}
    betas = sorted(he, key=lambda k: he[k]["potential"]["beta"])
    gf = numbers["beta_runs"]["gradient flow"]["active_neurons"]
    # small β: sparse (fewer active neurons than gradient flow); more β: more neurons, towards gradient flow
    assert he[betas[0]]["active_neurons"] < he[betas[-1]]["active_neurons"] <= gf
    sm = {k: v for k, v in numbers["lambda_runs"].items() if k != "gradient flow"}
    lams = sorted(sm, key=lambda k: sm[k]["potential"]["lam"])
    cos = [sm[k]["cosine_to_gf"] for k in lams]
    assert all(a < b for a, b in zip(cos, cos[1:], strict=False))
    # ten times longer: the representation's direction has settled, and hyperbolic entropy stays sparse
    runs = [*numbers["beta_runs"].values(), *numbers["lambda_runs"].values()]
    assert min(r["cosine_t_vs_10t"] for r in runs) > 0.99
    assert he[betas[0]]["active_neurons_10t"] <= he[betas[0]]["active_neurons"]
    assert numbers["log_t_10x"] - numbers["log_t"] == pytest.approx(np.log(10.0))


def test_fig5_7_beta_and_lambda_ranges_and_ten_times_longer(tmp_path):
    result = run_figure("fig6", quick=True, out=tmp_path)  # an alias of the group
    assert result.name == "fig5-7"
    _check_ranges(_check_files(result, tmp_path))


@pytest.mark.slow
def test_fig12_13_on_a_second_data_draw(tmp_path):
    result = run_figure("fig13", quick=True, out=tmp_path)
    _check_ranges(_check_files(result, tmp_path))


def test_fig11_boundary_separates_and_he_uses_fewest_lines(tmp_path):
    result = run_figure("fig11", quick=True, out=tmp_path)
    runs = _check_files(result, tmp_path)["runs"]
    lines = {k: r["activation_lines"] for k, r in runs.items()}
    assert lines["HE β=0.01"] < lines["gradient flow"] < lines["smoothed p=3 λ=1"] + 1
    for r in runs.values():
        assert r["train_accuracy"] == 1.0
        assert r["teacher_agreement_on_circle"] > 0.95  # the student's sign follows the teacher's off the data too
        assert r["boundary_rays"] % 2 == 0 and r["boundary_rays"] >= 2  # f changes sign an even number of times


def test_fig8_10_matched_loss_and_layer_sparsity_order(tmp_path):
    result = run_figure("fig8", quick=True, out=tmp_path)
    numbers = _check_files(result, tmp_path)
    runs, target = numbers["runs"], numbers["target_log_loss"]
    assert len(runs) == 5 and numbers["layers"] == ["W1", "W2", "W3"]
    for r in runs.values():  # compared at matched loss: each map's first iterate past the level
        assert r["reached_target"] and target - 1.0 < r["log_loss"] <= target
    first = {k: r["participation"]["W1"] for k, r in runs.items()}
    assert first["HE β=0.05"] < first["gradient flow"] < first["p_power p=3"]
    for r in runs.values():
        assert all(1.0 / 144 <= v <= 1.0 for v in r["participation"].values())  # (Σa)²/(NΣa²) ∈ [1/N, 1]


@pytest.mark.slow
def test_fig4_14_vision_first_layer_sparsity_order(tmp_path):
    result = run_figure("fig14", quick=True, out=tmp_path)
    numbers = _check_files(result, tmp_path)
    runs, first = numbers["runs"], numbers["first_layer"]
    target = numbers["config"]["training"]["target_loss"]
    pr = {k.split()[0]: r["participation"][first] for k, r in runs.items()}
    assert pr["hyperbolic"] < pr["gradient"] < pr["smoothed"]
    for r in runs.values():
        assert r["mean_loss"] <= target  # compared at matched training loss
        keep, acc = r["pruning"]["keep"], r["pruning"]["accuracy"]
        assert acc[keep.index(1.0)] == pytest.approx(r["test_accuracy"])  # keeping every weight: the test accuracy
