"""Sweeps as run specifications (flowsim.lab.sweep): plan / run_spec / gather, the Ray executor, the SLURM path.

The reference of every comparison is a different code path: ``run_experiment`` (the local executor: the sweep's
members through simulate_ensemble, in memory) for the 16-run sweep, and the plan run in this process without
interruption for the runs that are killed, retried or run in separate processes. Tests that need Ray share one
local instance (2 CPUs) started by a module fixture and are skipped without Ray.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from flowsim.errors import ConfigError, FlowSimError, InvalidParameterError
from flowsim.lab import sweep
from flowsim.lab.cli import main
from flowsim.lab.config import validate_config
from flowsim.lab.experiment import run_experiment

BETAS = [0.05, 0.1, 0.5, 1.0]
ROOT_DIR = Path(__file__).resolve().parents[1]


def sweep_config(*, widths=(4, 8), betas=BETAS, seeds=(0, 1), **output):
    """4 β × 2 widths × 2 seeds of a two-layer ReLU net on 12 points, exact (Filippov) kinks, to log t = 5."""
    raw = {
        "experiment": {"name": "sweep-test"},
        "data": {"name": "student_teacher", "n": 12, "d": 3, "seed": 0},
        "model": {"name": "two_layer_relu", "width": widths[0]},
        "potentials": [{"name": "hyperbolic_entropy", "beta": list(betas)}],
        "init": {"scale": 0.5, "seed": list(seeds)},
        "solver": {"rtol": 1e-6, "atol": 1e-9, "kinks": "filippov"},
        "horizon": {"log_t_end": 5.0, "n_save": 30},
        "output": {"plots": False, **output},
    }
    if len(widths) > 1:
        raw["sweep"] = {"model.width": list(widths)}
    return validate_config(raw)


SMALL = {"widths": (4,), "betas": (0.1, 1.0), "seeds": (0,), "checkpoint_every": 10}  # 2 runs, checkpoints at 10, 20


def strip_wall(rows):
    return [{k: v for k, v in r.items() if k != "wall_time_s"} for r in rows]


def same_runs(a, b):
    """Same summary (wall time aside), same labels and bitwise the same saved states."""
    assert strip_wall(a.rows) == strip_wall(b.rows)
    assert a.labels == b.labels
    for ta, tb in zip(a.trajectories, b.trajectories, strict=True):
        assert np.array_equal(ta.theta, tb.theta) and np.array_equal(ta.s, tb.s)


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def small_reference(tmp_path_factory):
    """The 2-run plan (checkpoints every 10 of 30 save points) run in this process, uninterrupted."""
    root = tmp_path_factory.mktemp("small_ref")
    sweep.write_plan(sweep_config(**SMALL), root)
    return sweep.run_plan(root, executor="local", log=lambda *a: None)


def test_plan_specs_are_json_in_run_order():
    specs = sweep.plan(sweep_config())
    assert len(specs) == 16
    again = [sweep.RunSpec.from_dict(json.loads(json.dumps(s.to_dict()))) for s in specs]
    assert again == specs
    assert [s.index for s in specs] == list(range(16))
    assert len({s.dir for s in specs}) == 16
    widths = [s.model["width"] for s in specs]
    assert widths == [4] * 8 + [8] * 8  # [sweep] groups outermost, then β, then seed (last fastest)
    assert [s.potential["beta"] for s in specs[:8]] == [b for b in BETAS for _ in (0, 1)]
    assert [s.simulate["seed"] for s in specs[:4]] == [0, 1, 0, 1]
    assert specs[5].label == "width=4 hyperbolic_entropy(beta=0.5) seed=1"
    assert all(s.checkpoint_every == 50 and s.simulate["kinks"] == "filippov" for s in specs)
    assert sweep.plan(sweep_config(checkpoint_every=7))[0].checkpoint_every == 7


def test_ray_sweep_matches_local_executor(ray_local, tmp_path):
    cfg = sweep_config()
    local = run_experiment(cfg, tmp_path / "local", workers=1, log=lambda *a: None)
    assert main(["run", "--config", _toml(cfg, tmp_path), "--out", str(tmp_path / "ray"), "--executor", "ray"]) == 0
    ray_run = sweep.gather(tmp_path / "ray")
    assert len(ray_run.rows) == 16 and all(r["status"] == "success" for r in ray_run.rows)
    same_runs(ray_run, local)
    assert _csv_without_wall(tmp_path / "ray") == _csv_without_wall(tmp_path / "local")
    assert sum(tr.stats["n_crossings"] for tr in ray_run.trajectories) > 16  # exact kinks: crossings were located
    assert {tr.theta.shape[1] for tr in ray_run.trajectories} == {4 * 4, 8 * 4}  # widths 4 and 8 (d = 3, + a)
    pids = {sweep.attempts(tmp_path / "ray" / s.dir)[0]["pid"] for s in sweep.read_plan(tmp_path / "ray")[1]}
    assert os.getpid() not in pids and len(pids) >= 2  # Ray worker processes ran them


def test_ray_worker_killed_mid_run_is_retried_from_its_checkpoint(ray_local, small_reference, tmp_path, monkeypatch):
    root = tmp_path / "ray"
    specs = sweep.write_plan(sweep_config(**SMALL), root)
    marker = tmp_path / "killed.txt"
    monkeypatch.setenv(sweep.KILL_ENV, f"1:{marker}")
    result = sweep.run_plan(root, executor="ray", log=lambda *a: None)
    assert marker.exists()  # the task of run 1 SIGKILLed its worker after its first checkpoint
    tries = sweep.attempts(root / specs[1].dir)
    assert [t["start"] for t in tries] == [0, 10] and tries[0]["pid"] != tries[1]["pid"]
    assert [len(sweep.attempts(root / s.dir)) for s in specs] == [1, 2]
    same_runs(result, small_reference)  # the resumed run repeats the uninterrupted arithmetic: same RHS counts too


def test_ray_failed_task_is_a_status_and_the_others_are_kept(ray_local, tmp_path):
    root = tmp_path / "ray"
    sweep.write_plan(sweep_config(widths=(4,), betas=(0.1, 1.0), seeds=(0,)), root)
    doc = json.loads((root / "plan.json").read_text())
    doc["specs"][1]["potential"]["beta"] = -1.0  # the task raises InvalidParameterError (not retried)
    (root / "plan.json").write_text(json.dumps(doc))
    result = sweep.run_plan(root, executor="ray", log=lambda *a: None)
    assert [r["status"] for r in result.rows] == ["success", sweep.TASK_FAILED]
    assert result.labels == [doc["specs"][0]["label"]] and result.trajectories[0].success
    text = (root / "summary.txt").read_text()
    assert "task failed" in text and "beta > 0" in text


def test_slurm_path_in_separate_processes(small_reference, tmp_path, monkeypatch):
    root = tmp_path / "slurm"
    config_file = _toml(sweep_config(**SMALL), tmp_path)
    assert main(["plan", config_file, "--out", str(root)]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    running = [  # the array tasks, all at once
        subprocess.Popen(
            [sys.executable, "-m", "flowsim", "run-spec", str(root), "--index", str(i), "--no-progress"],
            env=env,
            cwd=ROOT_DIR,
            stdout=subprocess.DEVNULL,
        )
        for i in range(2)
    ]
    assert [p.wait(timeout=300) for p in running] == [0, 0]
    assert main(["gather", str(root)]) == 0
    result = sweep.gather(root)
    same_runs(result, small_reference)
    # the same index again: no work, nothing written
    run_dir = root / sweep.read_plan(root)[1][1].dir
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    assert main(["run-spec", str(root)]) == 0
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()} == before
    assert len(sweep.attempts(run_dir)) == 1
    assert sweep.run_spec(sweep.read_plan(root)[1][1], root).stats["nfe"] == result.trajectories[1].stats["nfe"]


def test_partial_run_is_resumed_and_missing_runs_listed(small_reference, tmp_path):
    root = tmp_path / "partial"
    specs = sweep.write_plan(sweep_config(**SMALL), root)
    stop = _StopAfter(12)  # a Ctrl-C at save point 12: the run keeps its checkpoint at 10
    first = sweep.run_spec(specs[0], root, progress=stop)
    assert first.status.value == "interrupted" and sweep.run_state(root / specs[0].dir) == "partial"
    partial = sweep.gather(root)
    assert partial.missing == [s.label for s in specs[1:]] and [r["status"] for r in partial.rows] == ["interrupted"]
    assert "missing (not run yet)" in (root / "summary.txt").read_text()
    resumed = sweep.run_spec(specs[0], root)
    assert [a["start"] for a in sweep.attempts(root / specs[0].dir)] == [0, 10]
    assert resumed.stats["nfe"] == small_reference.trajectories[0].stats["nfe"]
    assert np.array_equal(resumed.theta, small_reference.trajectories[0].theta)


class _StopAfter:
    def __init__(self, n):
        self.n, self.calls = n, 0

    def __call__(self, log_t, nfe):
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt


def test_frames(small_reference, monkeypatch):
    pd = pytest.importorskip("pandas")
    tr = small_reference.trajectories[0]
    frame = tr.to_pandas(state=True)
    assert len(frame) == len(tr) == 30
    np.testing.assert_array_equal(frame["log_t"].to_numpy(), tr.log_t)
    np.testing.assert_array_equal(frame["normalized_margin"].to_numpy(), tr.diagnostics["normalized_margin"])
    p = tr.theta.shape[1]
    np.testing.assert_array_equal(frame[[f"theta[{j}]" for j in range(p)]].to_numpy(), tr.theta)
    masses = np.asarray(tr.diagnostics["neuron_mass"])
    np.testing.assert_array_equal(frame[[f"neuron_mass[{j}]" for j in range(masses.shape[1])]].to_numpy(), masses)
    summary = small_reference.to_pandas()
    assert isinstance(summary, pd.DataFrame) and list(summary["label"]) == small_reference.labels
    assert list(summary["nfe"]) == [t.stats["nfe"] for t in small_reference.trajectories]
    stacked = small_reference.to_pandas(trajectories=True)
    assert len(stacked) == sum(len(t) for t in small_reference.trajectories)
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(FlowSimError, match=r"flowsim\[frames\]"):
        tr.to_pandas()


def test_xarray(small_reference):
    pytest.importorskip("xarray")
    tr = small_reference.trajectories[1]
    ds = tr.to_xarray()
    np.testing.assert_array_equal(ds["theta"].values, tr.theta)
    np.testing.assert_array_equal(ds["log_t"].values, tr.log_t)
    assert ds.attrs["nfe"] == tr.stats["nfe"] and ds.attrs["status"] == "success"
    runs = small_reference.to_xarray()
    assert list(runs["run"].values) == small_reference.labels and runs.sizes["save"] == 30
    np.testing.assert_array_equal(runs["q_margin"].values[1], tr.diagnostics["q_margin"])
    assert list(runs["nfe"].values) == [t.stats["nfe"] for t in small_reference.trajectories]
    assert runs["summary_q_margin"].values[1] == tr.diagnostics["q_margin"][-1]
    assert list(runs["status"].values) == ["success", "success"]


def test_errors(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"\"model.width\" = \[8, 16\]"):
        validate_config({**_raw(), "sweep": {"width": [4, 8]}})
    with pytest.raises(ConfigError, match="non-empty list"):
        validate_config({**_raw(), "sweep": {"model.width": []}})
    with pytest.raises(ConfigError, match="always checkpointed|every run"):
        sweep.plan(sweep_config(checkpoint_every=0))
    md = validate_config({**_raw(), "solver": {"method": "md", "step_size": 0.1}})
    with pytest.raises(ConfigError, match="--executor local"):
        sweep.plan(md)
    root = tmp_path / "root"
    specs = sweep.write_plan(sweep_config(**SMALL), root)
    with pytest.raises(ConfigError, match="holds another plan"):
        sweep.write_plan(sweep_config(), root)
    with pytest.raises(ConfigError, match="another specification"):
        (root / specs[1].dir).mkdir()
        (root / specs[1].dir / "spec.json").write_text(json.dumps(specs[0].to_dict()))
        sweep.run_spec(specs[1], root)
    with pytest.raises(ConfigError, match="holds no plan"):
        sweep.gather(tmp_path / "nothing")
    with pytest.raises(InvalidParameterError, match="executor"):
        sweep.run_plan(root, executor="slurm")
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)
    assert main(["run-spec", str(root)]) == 2
    assert main(["run-spec", str(root), "--index", "2"]) == 2
    assert main(["run", "--preset", "quick", "--ray-address", "auto"]) == 2
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(FlowSimError, match=r"flowsim\[distributed\]"):
        sweep.run_plan(root, executor="ray", log=lambda *a: None)


@pytest.mark.slow
def test_slurm_path_16_runs_matches_local_executor(tmp_path):
    cfg = sweep_config()
    local = run_experiment(cfg, tmp_path / "local", workers=1, log=lambda *a: None)
    root = tmp_path / "slurm"
    sweep.write_plan(cfg, root)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for i in range(16):
        env["SLURM_ARRAY_TASK_ID"] = str(i)
        subprocess.run([sys.executable, "-m", "flowsim", "run-spec", str(root)], env=env, cwd=ROOT_DIR, check=True)
    same_runs(sweep.gather(root), local)


def _raw():
    return {"data": {"name": "iris"}, "model": {"name": "linear"}, "potentials": [{"name": "euclidean"}]}


def _toml(cfg, folder: Path) -> str:
    """A TOML file of a validated configuration (the keys these tests use)."""
    lines = []
    for table, values in cfg.items():
        if table == "potentials":
            for pot in values:
                lines += ["[[potentials]]", *(f"{k} = {_value(v)}" for k, v in pot.items())]
            continue
        lines.append(f"[{table}]")
        lines += [f"{json.dumps(k) if '.' in k else k} = {_value(v)}" for k, v in values.items() if v is not None]
    path = folder / "sweep.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return json.dumps(v)


def _csv_without_wall(folder: Path) -> list[list[str]]:
    rows = [line.split(",") for line in (folder / "summary.csv").read_text().splitlines()]
    wall = rows[0].index("wall_time_s")
    return [r[:wall] + r[wall + 1 :] for r in rows]
