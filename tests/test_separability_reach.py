"""Separability by the predictors a flow can reach: a diagonal linear network whose factors start equal keeps its
effective weights' signs (the field is symmetric in the factors), so data needing another sign are refused before
the run instead of a run that stalls with margin ≤ 0 and reports success: by simulate, simulate_ensemble and the
lab's checks of a configuration."""

import numpy as np
import pytest
import torch

import flowsim
from flowsim.data import is_linearly_separable, load_dataset, make_dataset
from flowsim.ensemble import Member, simulate_ensemble
from flowsim.errors import InvalidDataError
from flowsim.guards import _sign_locked_bounds
from flowsim.lab.checks import check_runs
from flowsim.lab.config import validate_config
from flowsim.lab.experiment import run_comparison, run_experiment
from flowsim.models import DiagonalLinear
from flowsim.potentials import BlockPotential, Euclidean, HyperbolicEntropy


def test_sign_bounds_restrict_the_separability_lp():
    # z = (1, −1), (1, 1): separable by w = (1, 0) ≥ 0; z = (−1, 0.5), (−1, −0.5): only with w_1 < 0 (w = (−2, 0))
    Z = np.array([[1.0, -1.0], [1.0, 1.0]])
    assert is_linearly_separable(Z) and is_linearly_separable(Z, bounds=[(0, None), (0, None)])
    Z = np.array([[-1.0, 0.5], [-1.0, -0.5]])
    assert is_linearly_separable(Z) and not is_linearly_separable(Z, bounds=[(0, None), (0, None)])
    assert is_linearly_separable(Z, bounds=[(None, 0), (None, None)])


def test_equal_factors_lock_the_signs_of_their_coordinates():
    model = DiagonalLinear(3, depth=3)
    theta0 = torch.tensor([1.0, -2.0, 0.5, 1.0, -2.0, 0.7, 1.0, -2.0, 0.5], dtype=torch.float64)
    bounds = _sign_locked_bounds(model, theta0, Euclidean())
    assert bounds == [(0, None), (None, 0), (None, None)]  # w = u³: +, −, and coordinate 3's factors differ
    assert _sign_locked_bounds(model, torch.zeros(9, dtype=torch.float64), Euclidean()) == [(0, 0)] * 3
    block = BlockPotential([(3, Euclidean()), (3, HyperbolicEntropy(0.1)), (3, Euclidean())])
    assert _sign_locked_bounds(model, theta0, block) is None  # factors under different potentials: not locked


def test_default_diagonal_init_on_data_needing_a_negative_weight_is_refused():
    """Iris 0 vs 1: separable, but not by w ≥ 0. From u = v = s·1 the flow stalled at margin −0.186 (loss ≈ n) and
    reported success (log t 10: 921,639 RHS, 274 s). Refused now; init_mode='zero_last' separates it."""
    data = load_dataset("iris")
    with pytest.raises(InvalidDataError, match="init_mode='zero_last'"):
        flowsim.simulate(DiagonalLinear(4), data, log_t_end=4.0, n_save=3)
    tr = flowsim.simulate(DiagonalLinear(4, init_mode="zero_last"), data, log_t_end=4.0, n_save=3, threads=1)
    assert tr.status.value == "success" and tr.diagnostics["normalized_margin"][-1] > 0
    # data a nonnegative w separates still run from the default init
    rng = np.random.default_rng(0)
    X = np.abs(rng.normal(size=(12, 3)))
    y = np.sign(X @ np.array([1.0, 0.5, 0.0]) - 0.1 * X.sum(1) + 1e-3)
    X[y < 0] *= -1  # z_i = y_i x_i ≥ 0 componentwise: w = (1, 1, 1) separates
    tr = flowsim.simulate(DiagonalLinear(3), make_dataset(X, y), log_t_end=2.0, n_save=3, threads=1)
    assert tr.status.value == "success" and tr.diagnostics["normalized_margin"][-1] > 0


def test_ensemble_refuses_a_member_whose_flow_cannot_reach_a_separator():
    """simulate_ensemble checked the plain LP only and ran such members to a stall (margin ≤ 0, status success);
    it refuses them as simulate does before any member runs, naming the first one (member 0 starts with unequal
    factors, so every sign is reachable from it)."""
    data = load_dataset("iris")
    free = [0.5] * 4 + [0.0] * 4  # u = 0.5·1, v = 0: the zero_last init
    members = [Member("euclidean", theta0=free), Member("euclidean", 0.5, 0)]
    message = r"^member 1 \(euclidean scale=0\.5, seed=0\): DiagonalLinear's initial factors are equal in 4 of 4"
    for method in ("dopri5", "radau"):  # batched, and member by member through simulate
        with pytest.raises(InvalidDataError, match=message):
            simulate_ensemble(DiagonalLinear(4), data, members, log_t_end=2.0, n_save=3, method=method)
    tr = simulate_ensemble(DiagonalLinear(4), data, members[:1], log_t_end=2.0, n_save=3, threads=1)
    assert tr[0].success


@pytest.mark.parametrize("init", [{}, {"seed": [0, 1]}], ids=["runs", "sweep"])
def test_lab_refuses_such_a_configuration_before_its_folder_is_made(tmp_path, init):
    """The lab's pre-run checks called check_separable without θ₀: `flowsim run` on DiagonalLinear (default init) and
    iris 0 vs 1 made its folder, wrote config.json, then the run was refused. Refused before anything is written now,
    for plain runs and for a sweep (one ensemble); init_mode="zero_last" passes."""
    cfg = {
        "data": {"name": "iris"},
        "model": {"name": "diagonal_linear"},
        "potentials": [{"name": "euclidean"}],
        "horizon": {"log_t_end": 1.0, "n_save": 5},
        "init": init,
        "output": {"plots": False},
    }
    with pytest.raises(InvalidDataError, match="init_mode='zero_last'"):
        run_experiment(validate_config(cfg), tmp_path / "new" / "exp", workers=1)
    assert not (tmp_path / "new").exists()
    check_runs(validate_config({**cfg, "model": {"name": "diagonal_linear", "init_mode": "zero_last"}}))


def test_compare_refuses_data_the_flow_would_refuse_before_mirror_descent_runs(tmp_path):
    """`flowsim compare` checked the runs' problems but not the flow's reach: on a sign-locked DiagonalLinear start
    (iris 0 vs 1, default init) it ran mirror descent and wrote its output, then the flow refused the data. Refused
    before any work and before the folder is made now; init_mode="zero_last" passes."""
    cfg = {
        "data": {"name": "iris"},
        "model": {"name": "diagonal_linear"},
        "potentials": [{"name": "euclidean"}],
        "horizon": {"log_t_end": 1.0, "n_save": 5},
        "output": {"plots": False},
    }
    with pytest.raises(InvalidDataError, match="init_mode='zero_last'"):
        run_comparison(validate_config(cfg), tmp_path / "new" / "cmp", step_size=0.1, log=lambda *a: None)
    assert not (tmp_path / "new").exists()
    rows, _, runs = run_comparison(
        validate_config({**cfg, "model": {"name": "diagonal_linear", "init_mode": "zero_last"}}),
        None,
        step_size=0.5,
        schedule="sup_normalized",
        log=lambda *a: None,
    )
    assert rows and runs[0][0].success
