import numpy as np
import pytest

from flowsim.errors import ConfigError, FlowSimError, UnknownPresetError
from flowsim.lab.cli import main
from flowsim.lab.config import PRESETS, get_preset, load_config, validate_config
from flowsim.results.trajectory import Trajectory


def test_every_preset_validates():
    for name in PRESETS:
        cfg = get_preset(name)
        assert cfg["potentials"] and cfg["data"]["name"] and cfg["model"]["name"]


def test_unknown_preset_error_lists_presets():
    with pytest.raises(UnknownPresetError, match="available presets") as info:
        get_preset("mian")
    assert isinstance(info.value, FlowSimError)
    assert "main" in str(info.value)


def test_unknown_config_key_and_table(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[data]\nname="iris"\n[model]\nname="linear"\n[[potentials]]\nname="euclidean"\n[solver]\nrtoll = 1e-6\n'
    )
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['rtoll'\] in \[solver\]; valid keys"):
        load_config(bad)
    with pytest.raises(ConfigError, match="unknown table"):
        validate_config(
            {
                "data": {"name": "iris"},
                "model": {"name": "linear"},
                "potentials": [{"name": "euclidean"}],
                "solvr": {},
            }
        )
    with pytest.raises(ConfigError, match="potentials"):
        validate_config({"data": {"name": "iris"}, "model": {"name": "linear"}})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="must be a number"):
        validate_config(
            {
                "data": {"name": "iris"},
                "model": {"name": "linear"},
                "potentials": [{"name": "euclidean"}],
                "solver": {"rtol": "tight"},
            }
        )


def test_cli_run_config_file_end_to_end(tmp_path, capsys):
    cfg = tmp_path / "exp.toml"
    cfg.write_text(
        '[experiment]\nname = "tiny"\n'
        '[data]\nname = "iris"\n'
        '[model]\nname = "two_layer_relu"\nwidth = 3\n'
        '[[potentials]]\nname = "euclidean"\n'
        '[[potentials]]\nname = "hyperbolic_entropy"\nbeta = 0.5\nlabel = "HE"\n'
        "[init]\nscale = 0.5\n"
        "[horizon]\nlog_t_end = 2.0\nn_save = 12\n"
    )
    out = tmp_path / "out"
    code = main(["run", "--config", str(cfg), "--out", str(out), "--no-progress"])
    text = capsys.readouterr().out
    assert code == 0
    assert "normalized_margin" in text and "HE" in text
    for name in (
        "summary.txt",
        "summary.csv",
        "config.json",
        "margins.png",
        "loss.png",
        "neurons.png",
        "features.png",
    ):
        assert (out / name).exists(), name
    tr = Trajectory.load(out / "HE")
    assert tr.success and len(tr) == 12
    assert np.isclose(tr.log_t[-1], 2.0)


_SMALL = {
    "data": '[data]\nname = "iris"\n',
    "model": '[model]\nname = "linear"\n',
    "potentials": '[[potentials]]\nname = "hyperbolic_entropy"\nbeta = 0.1\n',
    "rest": "[horizon]\nlog_t_end = 2.0\nn_save = 10\n[output]\nplots = false\n",
}

_CANNOT_RUN = {  # (the table to replace, its text, a part of the error message)
    "potential name": ("potentials", '[[potentials]]\nname = "hyperbolic_entropi"\nbeta = 0.1\n', "unknown potential"),
    "missing beta": ("potentials", '[[potentials]]\nname = "hyperbolic_entropy"\n', "needs beta"),
    "swept beta": ("potentials", '[[potentials]]\nname = "hyperbolic_entropy"\nbeta = [0.1, -1.0]\n', "beta"),
    "method": ("rest", '[solver]\nmethod = "rk4"\n', "[solver] method must be one of"),
    "loss": ("rest", '[flow]\nloss = "hinge"\n', "[flow] loss: unknown loss 'hinge'"),
    "init scale": ("rest", "[init]\nscale = -1\n", "[init] scale must be a finite number ≥ 0"),
    "kinks": ("rest", '[solver]\nkinks = "exact"\n', "[solver] kinks must be one of"),
    "input_dim": ("model", '[model]\nname = "two_layer_relu"\nwidth = 4\ninput_dim = 7\n', "[model] input_dim = 7"),
    "data name": ("data", '[data]\nname = "irs"\n', "unknown data set 'irs'"),
    "model name": ("model", '[model]\nname = "lineer"\n', "lineer"),
    "filippov on a smooth model": ("rest", '[solver]\nkinks = "filippov"\n', "kinks='filippov' needs a model"),
}


def _small_config(tmp_path, **tables) -> str:
    path = tmp_path / "exp.toml"
    path.write_text("".join({**_SMALL, **tables}.values()))
    return str(path)


@pytest.mark.parametrize("case", sorted(_CANNOT_RUN))
def test_a_config_that_cannot_run_writes_nothing(tmp_path, capsys, monkeypatch, case):
    """Names, parameters, init and model vs data are checked before the output folder exists: a refused config
    leaves neither --out DIR nor a flowsim_runs/<name> folder behind, and says what was wrong."""
    table, text, message = _CANNOT_RUN[case]
    if table == "rest":
        text = _SMALL["rest"] + text
    cfg = _small_config(tmp_path, **{table: text})
    monkeypatch.chdir(tmp_path)
    for out in (["--out", "exp"], []):
        assert main(["run", "--config", cfg, *out, "--no-progress"]) == 2
        captured = capsys.readouterr()
        assert message in captured.err and "Traceback" not in captured.err, captured.err
        assert "writing to" not in captured.out, captured.out
        assert not (tmp_path / "exp").exists() and not (tmp_path / "flowsim_runs").exists()


def test_a_corrected_config_runs_into_the_same_folder(tmp_path, capsys):
    """The reported sequence: a potential name typo (refused), then the corrected file with the same --out runs."""
    out = str(tmp_path / "exp")
    bad = _small_config(tmp_path, potentials='[[potentials]]\nname = "hyperbolic_entropi"\nbeta = 0.1\n')
    assert main(["run", "--config", bad, "--out", out, "--no-progress"]) == 2
    good = _small_config(tmp_path)
    assert main(["run", "--config", good, "--out", out, "--no-progress"]) == 0, capsys.readouterr().err
    assert f"writing to {out}" in capsys.readouterr().out
    assert Trajectory.load(tmp_path / "exp" / "hyperbolic_entropy_beta_0.1").success


def test_cli_errors_are_clean(tmp_path, capsys):
    assert main(["run", "--preset", "nosuch", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown preset 'nosuch'" in err and "main" in err


@pytest.mark.slow  # (15-27 s; the default suite stays under 8 minutes)
def test_solver_options_table_reaches_the_driver(tmp_path):
    """``[solver] options`` is passed to simulate(solver_options=...): a Filippov driver option changes the run
    (soft_cap = 0.01 shortens or refuses more soft steps than the default), an unknown name fails up front with
    the valid names (torchdiffeq alone would only warn, once per segment), and a bad table is a ConfigError."""
    from flowsim.lab.experiment import run_experiment

    base = (
        '[data]\nname = "iris"\n[model]\nname = "two_layer_relu"\nwidth = 4\n[[potentials]]\nname = "euclidean"\n'
        "[init]\nscale = 1.0\n[horizon]\nlog_t_end = 1.0\nn_save = 4\n"
        '[solver]\nkinks = "filippov"\nrtol = 1e-6\natol = 1e-9\n'
    )
    runs = {}
    for name, opts in (("default", ""), ("tight_cap", "options = {soft_cap = 0.01}\n")):
        path = tmp_path / f"{name}.toml"
        path.write_text(base + opts)
        res = run_experiment(load_config(path), None, log=lambda *a: None, workers=1)
        runs[name] = res.trajectories[0]
    assert runs["default"].status.value == runs["tight_cap"].status.value == "success"
    assert runs["default"].stats["n_soft_steps"] > 0
    fails = lambda tr: sum(tr.stats["soft_fallbacks"].values()) + sum(tr.stats["soft_truncations"].values())  # noqa: E731
    assert fails(runs["tight_cap"]) > fails(runs["default"])
    bogus = tmp_path / "bogus.toml"
    bogus.write_text(base + "options = {soft_capp = 2.0}\n")
    with pytest.raises(ConfigError, match="unknown option 'soft_capp'"):
        load_config(bogus)
    from flowsim import simulate
    from flowsim.data import load_dataset
    from flowsim.errors import InvalidParameterError
    from flowsim.models import get_model

    ds = load_dataset("iris", a=0, b=1)
    model = get_model("two_layer_relu", input_dim=ds.d, width=3)
    for opts, match in (
        ({"soft_capp": 2.0}, r"unknown solver option\(s\) \['soft_capp'\]"),
        ({"max_num_steps": 5}, "max_steps"),
    ):
        with pytest.raises(InvalidParameterError, match=match):  # (torchdiffeq alone would only warn, per segment)
            simulate(model, ds, "euclidean", log_t_end=0.0, n_save=3, kinks="filippov", solver_options=opts)
    with pytest.raises(ConfigError, match="soft_cap must be a positive number"):
        validate_config(
            {
                "data": {"name": "iris"},
                "model": {"name": "linear"},
                "potentials": [{"name": "euclidean"}],
                "solver": {"options": {"soft_cap": [1, 2]}},
            }
        )
    with pytest.raises(ConfigError, match='not to method = "md"'):
        validate_config(
            {
                "data": {"name": "iris"},
                "model": {"name": "linear"},
                "potentials": [{"name": "euclidean"}],
                "solver": {"method": "md", "step_size": 0.1, "options": {"soft_cap": 2.0}},
            }
        )
    assert get_preset("main")["solver"]["options"] == {"soft_cap": 2.0}


@pytest.mark.parametrize(
    "options, message",
    [
        ({"soft_cap": -1}, "soft_cap must be a positive number"),
        ({"soft_cap": float("nan")}, "soft_cap must be a positive number"),
        ({"soft_cap": "x"}, "soft_cap must be a positive number"),
        ({"first_step": 0.0}, "first_step must be a positive number"),
        ({"sof_cap": 2.0}, "unknown option 'sof_cap'; valid options are"),
        ({"norm": "rms"}, "unknown option 'norm'"),
        ({"event_state": "bogus"}, 'event_state must be "redo" or "interpolate"'),
        ({"exact_saves": 1}, "exact_saves must be true or false"),
    ],
)
def test_bad_solver_options_fail_at_validation(options, message):
    """Found by review: bad [solver] options passed validation and failed only once a run started (raw TypeErrors
    from torchdiffeq for strings); they are ConfigErrors now, naming the option."""
    cfg = {"data": {"name": "iris"}, "model": {"name": "two_layer_relu"}, "potentials": [{"name": "euclidean"}]}
    with pytest.raises(ConfigError, match=message):
        validate_config({**cfg, "solver": {"options": options}})
    with pytest.raises(ConfigError, match='are for kinks = "filippov" or "auto", not "naive"'):
        validate_config({**cfg, "solver": {"kinks": "naive", "options": {"soft_cap": 2.0}}})


def test_method_md_on_the_main_preset_drops_the_flows_solver_options():
    """Found by review: `flowsim run --method md` on the main preset failed ("options apply to the flow's solvers")
    once the preset set soft_cap; switching to md from the command line drops the flow's options."""
    import argparse

    from flowsim.lab.cli import _apply_md_options

    args = argparse.Namespace(method="md", step_size=0.5, schedule=None, variant=None, rollback=False)
    cfg = _apply_md_options(get_preset("main"), args)
    assert cfg["solver"]["method"] == "md" and "options" not in cfg["solver"]
    assert get_preset("main")["solver"]["options"] == {"soft_cap": 2.0}
