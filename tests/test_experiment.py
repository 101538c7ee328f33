"""run_experiment: the potentials' runs in worker processes (``workers``) against one after another."""

import os
import sys
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import pytest

import flowsim.experiment as experiment
from flowsim.cli import main
from flowsim.config import get_preset, validate_config
from flowsim.errors import InvalidParameterError
from flowsim.experiment import run_experiment
from flowsim.trajectory import Trajectory


def _quick(log_t_end=10.0):
    """The quick preset (linear model on iris, three potentials) on a shorter horizon, without plots."""
    cfg = get_preset("quick")
    cfg["horizon"].update(log_t_end=log_t_end, n_save=20)
    cfg["output"]["plots"] = False
    return cfg


def _eg_config():
    """Mirror descent with the EG variant: valid for hyperbolic entropy, an error at run time for Euclidean."""
    return validate_config(
        {
            "data": {"name": "iris", "a": 0, "b": 1},
            "model": {"name": "linear"},
            "potentials": [
                {"name": "euclidean", "label": "GF"},
                {"name": "hyperbolic_entropy", "beta": 0.1, "label": "HE"},
            ],
            "init": {"scale": 0.0},
            "solver": {"method": "md", "step_size": 0.1, "variant": "eg"},
            "horizon": {"log_t_end": 2.0, "n_save": 10},
            "output": {"plots": False},
        }
    )


def test_workers_match_one_after_another(tmp_path):
    cfg = _quick()
    serial_log, parallel_log = [], []
    serial = run_experiment(cfg, tmp_path / "serial", log=serial_log.append, workers=1)
    parallel = run_experiment(cfg, tmp_path / "parallel", log=parallel_log.append, workers=2)
    labels = ["gradient flow", "hyperbolic entropy β=0.1", "p-power p=3"]
    assert serial.labels == parallel.labels == labels  # the configuration's order
    for a, b in zip(serial.trajectories, parallel.trajectories, strict=True):
        assert a.status == b.status and a.success
        assert np.array_equal(a.s, b.s) and np.array_equal(a.theta, b.theta) and np.array_equal(a.z, b.z)
        assert a.stats["nfe"] == b.stats["nfe"]
    for ra, rb in zip(serial.rows, parallel.rows, strict=True):
        ra.pop("wall_time_s"), rb.pop("wall_time_s")
        assert ra == rb
    saved = Trajectory.load(tmp_path / "parallel" / "p-power_p_3")
    assert np.array_equal(saved.theta, serial.trajectories[2].theta)
    assert (tmp_path / "parallel" / "summary.csv").read_text().count("success") == 3
    # log lines: the pool, each run at submission, each result prefixed with its label
    assert "[flowsim] 3 runs in 2 worker processes" in parallel_log[0]
    for label in labels:
        assert f"[flowsim] {label}: Linear(input_dim=4) on iris_0v1 (n=100, d=4)" in parallel_log
        assert any(line.startswith(f"[flowsim]   {label}: success: log t = 10, nfe = ") for line in parallel_log)
    assert "[flowsim]   success: log t = 10, nfe = " in serial_log[1]  # one after another: as before
    assert not any("worker" in line for line in serial_log)


@pytest.mark.parametrize("workers", [0, -2, 1.5, True, "two", None])
def test_invalid_workers(workers):
    with pytest.raises(InvalidParameterError, match=r'workers must be "auto" or an integer ≥ 1'):
        run_experiment(_quick(), workers=workers)


def test_cli_workers(tmp_path, capsys):
    assert main(["run", "--preset", "quick", "--workers", "0", "--out", str(tmp_path)]) == 2
    assert 'workers must be "auto" or an integer ≥ 1 (flowsim run --workers N), got 0' in capsys.readouterr().err
    assert main(["run", "--preset", "quick", "--workers", "many", "--out", str(tmp_path)]) == 2
    assert "got 'many'" in capsys.readouterr().err
    assert not (tmp_path / "config.json").exists()  # rejected before anything is written


def test_a_run_that_raises_in_its_worker_keeps_the_others(tmp_path):
    lines = []
    with pytest.raises(InvalidParameterError, match="eg"):
        run_experiment(_eg_config(), tmp_path, log=lines.append, workers=2)
    assert any(line.startswith("[flowsim]   GF: failed in its worker process: InvalidParameterError") for line in lines)
    he = Trajectory.load(tmp_path / "HE")
    assert he.success and np.isclose(he.log_t[-1], 2.0)
    summary = (tmp_path / "summary.csv").read_text()
    assert "HE,success" in summary and "GF" not in summary
    # one after another, the same error (after the runs before it)
    with pytest.raises(InvalidParameterError, match="eg"):
        run_experiment(_eg_config(), tmp_path / "serial", log=lines.append, workers=1)
    # every run fails: the first one's error, nothing to summarize
    cfg = _eg_config()
    cfg["potentials"][1] = {"name": "p_power", "p": 3.0, "label": "p3"}
    with pytest.raises(InvalidParameterError, match="eg"):
        run_experiment(cfg, tmp_path / "all", log=lines.append, workers=2)
    assert not (tmp_path / "all" / "summary.csv").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the patch reaches forked workers only")
def test_a_worker_process_that_dies_keeps_the_others(tmp_path, monkeypatch):
    run_one = experiment._run_one

    def dies_for_gradient_flow(config, model, dataset, potential, **kwargs):
        if potential.name == "euclidean":
            os._exit(3)  # the process dies without a word (as when killed)
        return run_one(config, model, dataset, potential, **kwargs)

    monkeypatch.setattr(experiment, "_run_one", dies_for_gradient_flow)
    lines = []
    with pytest.raises(BrokenProcessPool):
        run_experiment(_quick(), tmp_path, log=lines.append, workers=2)
    assert any(
        line.startswith("[flowsim]   gradient flow: failed in its worker process: BrokenProcessPool") for line in lines
    )
    rows = (tmp_path / "summary.csv").read_text().splitlines()
    assert [r.split(",")[:2] for r in rows[1:]] == [["hyperbolic entropy β=0.1", "success"], ["p-power p=3", "success"]]


def test_summary_table_of_no_runs_has_its_header():
    """An experiment interrupted before any run started has no rows; the table is its header (was a TypeError)."""
    from flowsim.experiment import SUMMARY_COLUMNS, format_table

    lines = format_table([]).splitlines()
    assert len(lines) == 2 and lines[0].split() == list(SUMMARY_COLUMNS)
