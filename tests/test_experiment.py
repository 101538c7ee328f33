"""run_experiment: the potentials' runs in worker processes (``workers``) against one after another."""

import os
import sys
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import pytest

import flowsim.lab.experiment as experiment
from flowsim.data import load_dataset
from flowsim.errors import ConfigError, InvalidParameterError
from flowsim.lab.cli import main
from flowsim.lab.config import get_preset, validate_config
from flowsim.lab.experiment import run_experiment
from flowsim.models import get_model
from flowsim.results.trajectory import Trajectory
from flowsim.simulation import simulate


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


@pytest.mark.slow  # (15-27 s; the default suite stays under 8 minutes)
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


def test_a_config_that_cannot_run_leaves_the_folder_as_it_was(tmp_path):
    """Every run is checked (check_runs) before anything is written: a folder made for the experiment (and the
    parents made with it) is removed again, an existing one keeps exactly what it held."""
    cfg = validate_config(
        {
            "data": {"name": "iris"},
            "model": {"name": "two_layer_relu", "width": 4, "input_dim": 7},
            "potentials": [{"name": "euclidean"}],
            "horizon": {"log_t_end": 1.0, "n_save": 5},
        }
    )
    message = r"\[model\] input_dim = 7, but the data set iris_0v1 has d = 4 features; drop input_dim"
    with pytest.raises(ConfigError, match=message):
        run_experiment(cfg, tmp_path / "new" / "exp", workers=1)
    assert not (tmp_path / "new").exists()
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=message):
        run_experiment(cfg, tmp_path / "old", workers=1)
    assert [p.name for p in (tmp_path / "old").iterdir()] == ["notes.txt"]


def test_summary_table_of_no_runs_has_its_header():
    """An experiment interrupted before any run started has no rows; the table is its header (was a TypeError)."""
    from flowsim.lab.experiment import SUMMARY_COLUMNS, format_table

    lines = format_table([]).splitlines()
    assert len(lines) == 2 and lines[0].split() == list(SUMMARY_COLUMNS)


def test_yield_when_ahead_rule():
    """With more running runs than cores, a worker lowers its own priority once another running run is more
    than one unit of log t behind (or has not saved yet): the runs behind get the cores. Not with a free core
    for every run, not for runs that are not running (NaN), and at most once."""
    import math
    from unittest import mock

    from flowsim.lab.workers import _YieldWhenAhead

    shared = [math.nan, -math.inf, -2.5]  # run 0 itself, run 1 not saved yet, run 2 at log t = −2.5
    hook = _YieldWhenAhead(shared, 0, cores=2)
    with mock.patch("os.nice") as nice:
        hook(-3.0, 100)  # 3 running on 2 cores, run 1 behind (no save): yield
        assert nice.call_count == 1 and shared[0] == -3.0
        hook(0.0, 200)
        assert nice.call_count == 1  # once
    shared = [math.nan, -4.0, math.nan]
    with mock.patch("os.nice") as nice:
        _YieldWhenAhead(shared, 0, cores=2)(0.0, 1)  # two running on two cores: nothing to gain
        _YieldWhenAhead([math.nan, -0.5, -0.2], 0, cores=1)(0.0, 1)  # others within one unit of log t
        assert nice.call_count == 0


def test_progress_callable_sees_every_save(tmp_path):
    """simulate(progress=callable) is called after every saved state with its log t and the RHS count so far
    (in memory and streamed to disk); a callable that raises is warned about once and the run goes on."""
    import warnings

    ds = load_dataset("iris", a=0, b=1)
    model = get_model("two_layer_relu", input_dim=ds.d, width=3)
    for out in (None, tmp_path / "run"):
        seen: list = []
        tr = simulate(
            model, ds, "euclidean", log_t_end=1.0, n_save=5, out=out, progress=lambda lt, n, s=seen: s.append((lt, n))
        )
        assert [s[0] for s in seen] == pytest.approx(list(tr.log_t[1:]))
        assert all(b[1] >= a[1] for a, b in zip(seen, seen[1:], strict=False)) and seen[-1][1] <= tr.stats["nfe"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tr = simulate(model, ds, "euclidean", log_t_end=1.0, n_save=5, progress=lambda lt, n: 1 / 0)
    assert tr.status.value == "success"
    assert sum("progress callable raised ZeroDivisionError" in str(w.message) for w in caught) == 1


def test_truthy_progress_shows_a_bar():
    """Found by review: progress=1 (truthy, not True) showed nothing after the callable hook was added."""
    from flowsim.results import SaveProgress

    bar = SaveProgress(1, 5, 0, "log")
    try:
        assert bar.bar is not None and bar.fn is None
    finally:
        bar.close()
    assert SaveProgress(0, 5, 0, "log").bar is None
