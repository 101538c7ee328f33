import numpy as np
import pytest

from flowsim.cli import main
from flowsim.config import PRESETS, get_preset, load_config, validate_config
from flowsim.errors import ConfigError, FlowSimError, UnknownPresetError
from flowsim.trajectory import Trajectory


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
        '[data]\nname="iris"\n[model]\nname="linear"\n[[potentials]]\nname="euclidean"\n'
        "[solver]\nrtoll = 1e-6\n"
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


def test_cli_errors_are_clean(tmp_path, capsys):
    assert main(["run", "--preset", "nosuch", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown preset 'nosuch'" in err and "main" in err
