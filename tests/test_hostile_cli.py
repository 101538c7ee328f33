"""Hostile inputs through the CLI, TOML configurations and the run-folder API (issue 19 items 2, 4, 7, 8, 9, 10,
11, 12): each is refused with a FlowSimError (the CLI: exit code 2 and one ``flowsim: error:`` line, no
traceback) whose message names the problem and the fix, or ends with the right status and keeps what it computed.

The runs are tiny (a linear model on iris to log t = 2 with a few save points), so the whole file takes seconds.
"""

from __future__ import annotations

import doctest
import importlib
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import flowsim
from flowsim.data import load_dataset
from flowsim.errors import ConfigError, FlowSimError, RunFolderError
from flowsim.lab.cli import build_parser, main
from flowsim.lab.config import load_config
from flowsim.lab.experiment import run_comparison, run_experiment
from flowsim.models import Linear
from flowsim.results.store import LOCK_FILE, locked_folder
from flowsim.results.trajectory import Status, Trajectory

ROOT = Path(__file__).resolve().parents[1]

TINY = """
[experiment]
name = "tiny"
[data]
name = "iris"
a = 0
b = 1
[model]
name = "linear"
[[potentials]]
name = "euclidean"
label = "GF"
[init]
scale = 0.0
[horizon]
log_t_end = 2.0
n_save = 12
[output]
plots = false
"""


@pytest.fixture
def tiny(tmp_path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


def _cli(argv, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _refused(argv, capsys, *needles: str) -> str:
    """The CLI refuses ``argv``: exit code 2, one clean error line naming every needle, no traceback."""
    code, out, err = _cli(argv, capsys)
    assert code == 2, (code, out, err)
    assert err.startswith("flowsim: error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def _data():
    return load_dataset("iris", a=0, b=1)


def _simulate(out, **kw):
    data = _data()
    args = {"log_t_end": 2.0, "n_save": 12, "theta0": [0.0] * data.d, "checkpoint_every": 4, **kw}
    return flowsim.simulate(Linear(data.d), data, "euclidean", out=out, **args)


# ---------------------------------------------------------------- item 9: --out / out= unusable
def test_cli_out_is_a_file(tiny, tmp_path, capsys):
    target = tmp_path / "afile"
    target.write_text("not a folder")
    _refused(["run", "--config", tiny, "--out", target, "--no-progress"], capsys, "is a file", "give a folder")
    assert target.read_text() == "not a folder"  # untouched


def test_cli_out_below_a_file(tiny, tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    _refused(["run", "--config", tiny, "--out", tmp_path / "afile" / "sub"], capsys, "a part of the path is a file")


def test_cli_out_that_cannot_be_created(tiny, capsys):
    _refused(["run", "--config", tiny, "--out", "/proc/flowsim-no-such/x"], capsys, "cannot create", "--out DIR")


def test_cli_out_not_writable(tiny, capsys):
    # /proc/self is a folder no one may create files in (root included)
    _refused(["run", "--config", tiny, "--out", "/proc/self"], capsys, "not writable", "/proc/self")


def test_api_simulate_out_is_a_file(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(RunFolderError, match="is a file, not a folder"):
        _simulate(tmp_path / "f")


def test_api_run_experiment_checks_out_before_any_work(tiny, tmp_path, monkeypatch):
    import flowsim.lab.checks as checks
    import flowsim.lab.experiment as experiment

    def no_work(*a, **k):
        raise AssertionError("work started before the output folder was checked")

    monkeypatch.setattr(checks, "build", no_work)
    monkeypatch.setattr(experiment, "build", no_work)
    (tmp_path / "f").write_text("")
    with pytest.raises(RunFolderError, match="is a file"):
        run_experiment(load_config(tiny), tmp_path / "f", workers=1)


def test_compare_out_is_a_file(tiny, tmp_path, capsys):
    (tmp_path / "f").write_text("")
    _refused(["compare", "--config", tiny, "--step-size", "0.1", "--out", tmp_path / "f"], capsys, "is a file")
    with pytest.raises(RunFolderError):
        run_comparison(load_config(tiny), tmp_path / "f", step_size=0.1)


def test_plot_out_is_a_file(tmp_path, capsys):
    _simulate(tmp_path / "run")
    (tmp_path / "f").write_text("")
    _refused(["plot", tmp_path / "run", "--out", tmp_path / "f"], capsys, "is a file")


def test_plot_an_experiment_folder_plots_its_runs(tmp_path, capsys, monkeypatch):
    import flowsim.lab.plotting as plotting

    _simulate(tmp_path / "exp" / "GF")
    _simulate(tmp_path / "exp" / "HE", theta0=[0.1] * _data().d)
    (tmp_path / "exp" / "notes").mkdir()  # a subfolder without a run is not a run
    seen = []
    original = plotting.plot_margins
    monkeypatch.setattr(
        plotting, "plot_margins", lambda labels, *a, **k: seen.append(labels) or original(labels, *a, **k)
    )
    code, out, err = _cli(["plot", tmp_path / "exp", "--out", tmp_path / "plots"], capsys)
    assert code == 0, err
    assert seen == [["GF", "HE"]] and (tmp_path / "plots" / "margins.png").stat().st_size > 0
    # the API's error names the subfolders that hold runs
    with pytest.raises(FlowSimError, match=r"its subfolders \['GF', 'HE'\] hold runs"):
        Trajectory.load(tmp_path / "exp")


def test_validate_out_is_a_file(tmp_path, capsys):
    (tmp_path / "f").write_text("")
    _refused(["validate", "--only", "C1", "--out", tmp_path / "f"], capsys, "is a file")


# ---------------------------------------------------------------- item 2: a folder another run holds
def test_cli_run_into_a_locked_folder(tiny, tmp_path, capsys):
    with locked_folder(tmp_path / "exp"):
        err = _refused(["run", "--config", tiny, "--out", tmp_path / "exp"], capsys, "in use by another flowsim")
    assert f"pid {os.getpid()}" in err and "another folder" in err and LOCK_FILE in err
    assert not (tmp_path / "exp" / "GF").exists()  # refused before any run started


def test_cli_run_into_a_folder_with_results_needs_overwrite(tiny, tmp_path, capsys):
    exp = tmp_path / "exp"
    assert _cli(["run", "--config", tiny, "--out", exp, "--workers", "1"], capsys)[0] == 0
    before = (exp / "summary.csv").read_bytes()
    _refused(["run", "--config", tiny, "--out", exp], capsys, "holds an earlier experiment", "--overwrite", "--resume")
    assert (exp / "summary.csv").read_bytes() == before  # refused before any run started
    _refused(["compare", "--config", tiny, "--step-size", "0.1", "--out", exp], capsys, "holds an earlier")
    assert _cli(["run", "--config", tiny, "--out", exp, "--workers", "1", "--overwrite"], capsys)[0] == 0


def test_cli_run_default_folder_is_never_replaced(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for _ in range(3):
        code, out, _err = _cli(["run", "--config", tiny, "--workers", "1"], capsys)
        assert code == 0, out
    runs = tmp_path / "flowsim_runs"
    assert sorted(p.name for p in runs.iterdir()) == ["tiny", "tiny-2", "tiny-3"]
    assert "writing to flowsim_runs/tiny-3" in out
    assert all((runs / name / "summary.csv").exists() for name in ("tiny", "tiny-2", "tiny-3"))


def test_api_simulate_into_a_locked_folder(tmp_path):
    with locked_folder(tmp_path / "run", what="experiment"):
        with pytest.raises(RunFolderError, match=f"pid {os.getpid()} on host"):
            _simulate(tmp_path / "run")


def test_resume_of_a_locked_folder_is_refused(tiny, tmp_path, capsys):
    assert _cli(["run", "--config", tiny, "--out", tmp_path / "exp", "--workers", "1"], capsys)[0] == 0
    with locked_folder(tmp_path / "exp"):
        _refused(["run", "--resume", tmp_path / "exp"], capsys, "in use by another flowsim")


def test_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "run").mkdir()
    stale = {"pid": dead.pid, "host": "somewhere", "started": "long ago"}
    (tmp_path / "run" / LOCK_FILE).write_text(json.dumps(stale))
    tr = _simulate(tmp_path / "run")
    assert tr.success and len(tr) == 12
    assert not (tmp_path / "run" / LOCK_FILE).exists()  # released when the run returned


def test_lock_is_released_after_each_run(tmp_path):
    a = _simulate(tmp_path / "run")
    b = _simulate(tmp_path / "run")  # the same folder again, one after the other: fine
    assert np.array_equal(a.z, b.z) and not (tmp_path / "run" / LOCK_FILE).exists()


# ---------------------------------------------------------------- item 7 (CLI): --resume takes DIR's config
@pytest.mark.parametrize(
    "extra, flag",
    [
        (["--config", "{tiny}"], "--config"),
        (["--preset", "quick"], "--preset"),
        (["--out", "{tmp}/elsewhere"], "--out"),
        (["--method", "md", "--step-size", "0.1"], "--method, --step-size"),
        (["--checkpoint-every", "5"], "--checkpoint-every"),
        (["--rollback"], "--rollback"),
    ],
)
def test_resume_with_options_it_would_ignore(tiny, tmp_path, capsys, extra, flag):
    assert _cli(["run", "--config", tiny, "--out", tmp_path / "exp", "--workers", "1"], capsys)[0] == 0
    extra = [e.format(tiny=tiny, tmp=tmp_path) for e in extra]
    _refused(["run", "--resume", tmp_path / "exp", *extra], capsys, flag, "would not be applied", "--resume DIR alone")
    assert not (tmp_path / "elsewhere").exists()


def test_resume_of_a_folder_without_a_run(tmp_path, capsys):
    _refused(["run", "--resume", tmp_path], capsys, "no run.json", "config.json")


# ---------------------------------------------------------------- item 8: damaged run folders on --resume
def _killed_run(tmp_path) -> Path:
    """A streamed run as a kill leaves it: checkpoints written, trajectory not finished."""
    out = tmp_path / "run"
    tr = _simulate(out)
    assert tr.success
    return out


def test_truncated_checkpoint(tmp_path, capsys):
    out = _killed_run(tmp_path)
    data = (out / "checkpoint.npz").read_bytes()
    (out / "checkpoint.npz").write_bytes(data[: len(data) // 2])
    err = _refused(["run", "--resume", out], capsys, "checkpoint.npz is damaged", "delete")
    assert "restart the run from t = 0" in err
    with pytest.raises(RunFolderError, match="checkpoint.npz"):
        flowsim.resume(out)
    # the fix the message gives works: without the checkpoint the run restarts from t = 0, as before
    (out / "checkpoint.npz").unlink()
    again = flowsim.resume(out)
    assert again.success and np.array_equal(again.z, _simulate(tmp_path / "fresh").z)


def test_checkpoint_that_is_not_an_npz(tmp_path, capsys):
    out = _killed_run(tmp_path)
    (out / "checkpoint.npz").write_text("garbage")
    _refused(["run", "--resume", out], capsys, "checkpoint.npz is damaged")


def test_garbage_run_json(tmp_path, capsys):
    out = _killed_run(tmp_path)
    (out / "run.json").write_text("{ not json")
    _refused(["run", "--resume", out], capsys, "run.json is damaged", "JSONDecodeError", "start it again")


def test_run_json_that_is_not_a_run(tmp_path, capsys):
    out = _killed_run(tmp_path)
    (out / "run.json").write_text("[1, 2, 3]")
    _refused(["run", "--resume", out], capsys, "run.json is damaged", "not a run description")


def test_truncated_data_npz(tmp_path, capsys):
    out = _killed_run(tmp_path)
    (out / "data.npz").write_bytes((out / "data.npz").read_bytes()[:40])
    _refused(["run", "--resume", out], capsys, "data.npz is damaged", "start it again")


def test_truncated_stream_file(tmp_path, capsys):
    out = _killed_run(tmp_path)
    theta = out / "stream" / "theta.npy"
    theta.write_bytes(theta.read_bytes()[:200])
    _refused(["run", "--resume", out], capsys, "theta.npy is damaged", "delete")
    with pytest.raises(RunFolderError, match="theta.npy"):
        Trajectory.load(out)


def test_damaged_trajectory_json_of_a_run_folder(tmp_path):
    out = _killed_run(tmp_path)
    js = out / "trajectory.json"
    text = js.read_text()
    z = Trajectory.load(out).z.copy()
    meta = json.loads(text)
    meta.pop("n_saved")
    for bad in ("\x00 not json", text[: len(text) // 2], "[1, 2]", json.dumps(meta)):  # garbage, cut, list, no rows
        js.write_text(bad)
        with pytest.raises(RunFolderError, match="trajectory.json is damaged") as info:
            Trajectory.load(out)
        assert f"flowsim run --resume {out}" in str(info.value)
    # the fix the message gives works: resuming rewrites trajectory.json from the last checkpoint
    flowsim.resume(out)
    np.testing.assert_array_equal(Trajectory.load(out).z, z)


def test_damaged_files_of_a_saved_trajectory(tmp_path):
    saved = _simulate(tmp_path / "run").save(tmp_path / "saved")
    (saved / "trajectory.json").write_text('{"format_version": 1, "stat')
    with pytest.raises(RunFolderError, match=r"trajectory.json is damaged.*save the trajectory again"):
        Trajectory.load(saved)
    Trajectory.load(tmp_path / "run").save(saved)
    npz = saved / "trajectory.npz"
    npz.write_bytes(npz.read_bytes()[:100])
    with pytest.raises(RunFolderError, match=r"trajectory.npz is damaged"):
        Trajectory.load(saved)


def test_garbage_experiment_config_json(tiny, tmp_path, capsys):
    assert _cli(["run", "--config", tiny, "--out", tmp_path / "exp", "--workers", "1"], capsys)[0] == 0
    (tmp_path / "exp" / "config.json").write_text("][")
    _refused(["run", "--resume", tmp_path / "exp"], capsys, "config.json is damaged", "run it again")


def test_damaged_checkpoint_inside_an_experiment(tiny, tmp_path, capsys):
    exp = tmp_path / "exp"
    assert _cli(["run", "--config", tiny, "--out", exp, "--workers", "1", "--checkpoint-every", "3"], capsys)[0] == 0
    (exp / "GF" / "checkpoint.npz").write_bytes(b"PK\x03\x04 truncated")
    _refused(["run", "--resume", exp, "--workers", "1"], capsys, str(exp / "GF" / "checkpoint.npz"), "damaged")


# ---------------------------------------------------------------- item 10: what a user sees
def test_compare_help_mentions_no_method(capsys):
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["compare", "--help"])
    text = capsys.readouterr().out
    assert "--step-size" in text and "--method" not in text


def test_checkpoint_every_from_the_cli_reaches_the_runs(tiny, tmp_path, capsys):
    code, out, _ = _cli(
        ["run", "--config", tiny, "--out", tmp_path / "e", "--workers", "1", "--checkpoint-every", "5"], capsys
    )
    assert code == 0, out
    tr = Trajectory.load(tmp_path / "e" / "GF")
    assert tr.stats["checkpoint_every"] == 5
    assert json.loads((tmp_path / "e" / "GF" / "run.json").read_text())["kwargs"]["checkpoint_every"] == 5
    with np.load(tmp_path / "e" / "GF" / "checkpoint.npz") as ck:
        assert int(ck["k"]) == 11  # the last grid index (12 save points: 0..11)


def test_negative_checkpoint_every(tiny, tmp_path, capsys):
    _refused(
        ["run", "--config", tiny, "--out", tmp_path / "e", "--checkpoint-every", "-1"],
        capsys,
        "checkpoint_every",
        "≥ 0",
    )


@pytest.mark.parametrize("value", ['"often"', "1.5", "true", "-3"])
def test_bad_checkpoint_every_in_toml(tmp_path, value):
    path = tmp_path / "bad.toml"
    path.write_text(TINY.replace("plots = false", f"plots = false\ncheckpoint_every = {value}"))
    with pytest.raises(ConfigError, match=r"\[output\] checkpoint_every must be an integer ≥ 0"):
        load_config(path)


def test_unknown_output_key_lists_checkpoint_every(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(TINY.replace("plots = false", "plots = false\ncheckpoint_evry = 3"))
    with pytest.raises(ConfigError, match="checkpoint_every"):
        load_config(path)


def test_stream_files_hold_exactly_the_save_points(tmp_path):
    """No extra all-zero row: the raw .npy files have n_saved rows, finished or interrupted."""
    tr = _simulate(tmp_path / "done")
    for f in (tmp_path / "done" / "stream").glob("*.npy"):
        assert np.load(f).shape[0] == len(tr) == 12, f.name
    raw = np.load(tmp_path / "done" / "stream" / "s.npy")
    np.testing.assert_array_equal(raw, tr.s)
    assert raw[-1] == pytest.approx(math.log1p(math.exp(2.0)), rel=1e-15)  # the horizon, not a zero row

    count = [0]

    def stop_at_five(log_t, nfe):
        count[0] += 1
        if count[0] == 5:
            raise KeyboardInterrupt

    part = _simulate(tmp_path / "part", progress=stop_at_five)
    assert part.status == Status.INTERRUPTED
    for f in (tmp_path / "part" / "stream").glob("*.npy"):
        assert np.load(f).shape[0] == len(part), f.name
    assert np.all(np.diff(np.load(tmp_path / "part" / "stream" / "s.npy")) > 0)
    # resumed: the files grow back and end as the uninterrupted run's
    full = flowsim.resume(tmp_path / "part")
    np.testing.assert_array_equal(full.z, tr.z)
    assert np.load(tmp_path / "part" / "stream" / "z.npy").shape == (12, 4)


def test_readme_promises_what_a_run_writes(tiny, tmp_path, capsys):
    text = (ROOT / "README.md").read_text()
    assert "trajectory.npz" not in text and "stream/*.npy" in text and "trajectory.json" in text
    assert _cli(["run", "--config", tiny, "--out", tmp_path / "e", "--workers", "1"], capsys)[0] == 0
    assert (tmp_path / "e" / "GF" / "trajectory.json").is_file() and (
        tmp_path / "e" / "GF" / "stream" / "z.npy"
    ).is_file()
    assert Trajectory.load(tmp_path / "e" / "GF").success


DOCTEST_MODULES = sorted(
    ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    for p in (ROOT / "flowsim").rglob("*.py")
    if ">>>" in p.read_text(encoding="utf-8")
)


@pytest.mark.parametrize("name", DOCTEST_MODULES)
def test_docstring_examples_run(name):
    torch.set_num_threads(1)
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0, result


# ---------------------------------------------------------------- item 4: SIGTERM keeps what was computed
def test_sigterm_stops_a_run_like_ctrl_c(tmp_path):
    from flowsim.lab.workers import sigterm_as_interrupt

    count = [0]

    def terminate_at_six(log_t, nfe):
        count[0] += 1
        if count[0] == 6:
            os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    with sigterm_as_interrupt():
        tr = _simulate(tmp_path / "run", checkpoint_every=0, progress=terminate_at_six)  # no checkpoint at all
    assert signal.getsignal(signal.SIGTERM) is before  # restored
    assert tr.status == Status.INTERRUPTED and "terminated by SIGTERM" in tr.message and "Ctrl-C" not in tr.message
    back = Trajectory.load(tmp_path / "run")  # saved: rows 0..6 (and the last accepted state, if beyond)
    assert back.status == Status.INTERRUPTED and 7 <= len(back) <= 8 and "SIGTERM" in back.message
    np.testing.assert_array_equal(back.z[:7], _simulate(tmp_path / "ref", checkpoint_every=0).z[:7])


def test_interrupt_messages_name_one_cause(tmp_path):
    """Ctrl-C says Ctrl-C, SIGTERM says SIGTERM (not "interrupted (Ctrl-C) … (terminated by SIGTERM)")."""
    from flowsim.lab.workers import Terminated
    from flowsim.results.trajectory import interrupted_message

    pressed = []

    def ctrl_c(log_t, nfe):
        if log_t > 0.0 and not pressed:  # once
            pressed.append(log_t)
            raise KeyboardInterrupt

    tr = _simulate(tmp_path / "run", checkpoint_every=0, progress=ctrl_c)
    assert tr.status == Status.INTERRUPTED and len(tr) >= 2
    assert "interrupted (Ctrl-C)" in tr.message and "SIGTERM" not in tr.message, tr.message
    assert Trajectory.load(tmp_path / "run").message == tr.message
    term = interrupted_message(Terminated())
    assert "terminated by SIGTERM" in term and "Ctrl-C" not in term and "interrupted" not in term


# ---------------------------------------------------------------- item 11: plots
def test_margin_plot_axes_and_reference_levels(tmp_path):
    """Q-margins on a symlog axis, mathtext labels, and the max-margin levels of the linear model: for gradient
    flow √2·γ₂ (Q∞ = ½‖w‖², γ₂ the ℓ2 SVM margin), for hyperbolic entropy γ₁ (Q∞ = ‖w‖₁, the ℓ1 LP margin)."""
    from flowsim.analysis.references import max_margin_l1, svm_l2
    from flowsim.lab import plotting

    data = _data()
    runs = [
        flowsim.simulate(Linear(data.d), data, pot, log_t_end=2.0, n_save=8, theta0=[0.0] * data.d)
        for pot in ("euclidean", {"name": "hyperbolic_entropy", "beta": 0.1})
    ]
    refs = plotting.margin_references(["GF", "HE"], runs, Linear(data.d), data)
    Z = data.Z.numpy()
    assert refs["GF"] == pytest.approx(math.sqrt(2) * svm_l2(Z).margin, rel=1e-6)
    assert refs["HE"] == pytest.approx(max_margin_l1(Z).margin, rel=1e-6)
    fig = plotting.plot_margins(["GF", "HE"], runs, references=refs)
    ax_n, ax_q = fig.axes
    assert ax_q.get_yscale() == "symlog" and ax_n.get_yscale() == "linear"
    for ax in (ax_n, ax_q):
        assert "$" in ax.get_ylabel() and "^{L/α}" not in ax.get_ylabel()
    levels = sorted(line.get_ydata()[0] for line in ax_q.lines if line.get_linestyle() == "--")
    assert levels == pytest.approx(sorted(refs.values()))
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_features_plot_has_a_colour_bar():
    from flowsim.lab import plotting
    from flowsim.models import TwoLayerReLU

    data = load_dataset("digits", a=0, b=1)
    model = TwoLayerReLU(data.d, width=3)
    theta = model.init(scale=0.5, seed=0).reshape(1, -1).numpy()
    tr = Trajectory(s=np.zeros(1), theta=theta, z=theta, diagnostics={}, stats={}, status=Status.SUCCESS)
    fig = plotting.plot_features(["GF"], [tr], model, image_shape=(8, 8), top=3)
    bars = [ax for ax in fig.axes if "tilde" in ax.get_ylabel()]
    assert len(bars) == 1
    import matplotlib.pyplot as plt

    plt.close(fig)


# ---------------------------------------------------------------- item 12: progress of parallel runs
def test_parallel_runs_report_their_log_t(tmp_path, monkeypatch):
    import flowsim.lab.workers as workers

    monkeypatch.setattr(workers, "PROGRESS_EVERY", 0.05)
    cfg = load_config_text(
        tmp_path, TINY.replace("log_t_end = 2.0", "log_t_end = 8.0").replace("n_save = 12", "n_save = 60")
    )
    cfg["potentials"].append({"name": "hyperbolic_entropy", "beta": 0.1, "label": "HE"})
    lines: list[str] = []
    result = run_experiment(cfg, tmp_path / "exp", workers=2, progress=True, log=lines.append)
    assert all(r["status"] == "success" for r in result.rows)
    progress = [line for line in lines if "progress:" in line]
    assert progress, lines
    assert any("log t = " in line for line in progress), progress
    assert all(("GF" in line) or ("HE" in line) for line in progress)


def load_config_text(tmp_path, text: str):
    path = tmp_path / "cfg.toml"
    path.write_text(text)
    return load_config(path)


def test_every_cli_error_is_a_flowsim_error():
    assert issubclass(RunFolderError, FlowSimError) and issubclass(RunFolderError, OSError)


def test_run_summary_names_only_the_outputs_written(tiny, tmp_path, capsys):
    """With [output] plots = false no PNG is written, and the closing line does not promise any."""
    code, out, _ = _cli(["run", "--config", tiny, "--out", tmp_path / "o", "--no-progress"], capsys)
    assert code == 0
    assert not list((tmp_path / "o").glob("*.png"))
    line = [ln for ln in out.splitlines() if "outputs in" in ln][0]
    assert "*.png" not in line and "summary.csv" in line
