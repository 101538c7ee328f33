"""The vision experiments: a bias-free VGG-style CNN trained by mini-batch mirror descent under several
potentials on real images, with per-layer weight histograms, sparsity, dead units and magnitude pruning.

Configurations are TOML files with the tables ``[experiment]``, ``[data]``, ``[model]``, ``[[potentials]]``
(each may carry its own ``step_size``; ``name = "per_tensor"`` with ``blocks = {conv1 = {name = ..., ...}}`` and
``default = {name = ...}`` gives one potential per parameter tensor, see ``docs/vision.md``), ``[training]``,
``[init]`` and ``[analysis]``; the built-in ones are
``flowsim/lab/presets/vision/<name>.toml`` (``flowsim run --preset vision`` / ``vision-full``).
Outputs: ``summary.json``, ``summary.txt``, ``history_<run>.csv``, ``weights.npz`` (histograms and the final
parameters of the first and last layers), ``weight_histograms.png`` and ``pruning.png``.
"""

from __future__ import annotations

import copy
import json
import math
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import tomllib
import torch

from ..analysis.multiclass import multiclass_margin_summary
from ..analysis.weights import (
    KEEP_FRACTIONS,
    dead_unit_fractions,
    layer_sparsity,
    magnitude_histograms,
    pruning_curve,
)
from ..data import ImageSplit, load_cifar10, load_digits_images, load_mnist_5k
from ..errors import ConfigError
from ..minibatch import minibatch_mirror_descent
from ..models import VGGNet
from ..results.store import new_output_folder
from .config import check_block_table, potential_from_table

__all__ = ["VISION_PRESETS", "get_vision_preset", "load_vision_config", "run_vision", "is_vision_config"]

_TABLES = {
    "experiment": {"name", "description", "kind"},
    "data": {"name", "test_fraction", "seed", "normalize", "path", "limit", "train_limit"},
    "model": {"name", "layers", "hidden", "preset"},
    "potentials": None,
    "training": {
        "loss",
        "schedule",
        "step_size",
        "batch_size",
        "epochs",
        "dtype",
        "device",
        "seed",
        "target_loss",
        "threads",
    },  # fmt: skip
    "init": {"scale", "seed"},
    "analysis": {"bins", "small", "keep", "sparsity_layer"},
    "output": {"plots"},
}
_DTYPES = {"float64": torch.float64, "float32": torch.float32}


def _load_presets() -> dict[str, dict[str, Any]]:
    folder = resources.files(__package__) / "presets" / "vision"
    return {
        f.name[: -len(".toml")]: tomllib.loads(f.read_text(encoding="utf-8"))
        for f in sorted(folder.iterdir(), key=lambda f: f.name)
        if f.name.endswith(".toml")
    }


VISION_PRESETS: dict[str, dict[str, Any]] = _load_presets()


def is_vision_config(raw: dict[str, Any]) -> bool:
    """Whether a configuration is a vision experiment (``[experiment] kind = "vision"``)."""
    return isinstance(raw.get("experiment"), dict) and raw["experiment"].get("kind") == "vision"


def validate_vision_config(raw: dict[str, Any], *, source: str = "config") -> dict[str, Any]:
    """Check the tables and keys of a vision configuration (the message lists the valid ones).

    Raises:
        ConfigError: unknown table or key, no potentials, or a missing step size.
    """
    cfg = copy.deepcopy(raw)
    for table, value in cfg.items():
        if table not in _TABLES:
            raise ConfigError(f"{source}: unknown table [{table}]; valid tables are {sorted(_TABLES)}")
        allowed = _TABLES[table]
        if allowed is not None and isinstance(value, dict) and set(value) - allowed:
            raise ConfigError(
                f"{source}: unknown key(s) {sorted(set(value) - allowed)} in [{table}]; "
                f"valid keys are {sorted(allowed)}"
            )
    pots = cfg.get("potentials")
    if not isinstance(pots, list) or not pots:
        raise ConfigError(f'{source}: give at least one [[potentials]] table, e.g. name = "euclidean"')
    for i, p in enumerate(pots):
        check_block_table(p, source, f"potentials[{i}]", per_tensor=True)
        if "step_size" not in p and "step_size" not in cfg.get("training", {}):
            raise ConfigError(f"{source}: potential {p.get('name')!r} has no step_size ([training] or its own)")
    if cfg.get("training", {}).get("dtype", "float64") not in _DTYPES:
        raise ConfigError(f"{source}: [training] dtype must be one of {sorted(_DTYPES)}")
    return cfg


def get_vision_preset(name: str) -> dict[str, Any]:
    """A built-in vision preset, validated. Raises ConfigError for an unknown name."""
    if name not in VISION_PRESETS:
        raise ConfigError(f"unknown vision preset {name!r}; available: {sorted(VISION_PRESETS)}")
    return validate_vision_config(VISION_PRESETS[name], source=f"preset {name!r}")


def load_vision_config(path: str | Path) -> dict[str, Any]:
    """Read and validate a vision configuration file."""
    return validate_vision_config(tomllib.loads(Path(path).read_text(encoding="utf-8")), source=str(path))


def _load_data(cfg: dict[str, Any]) -> ImageSplit:
    d = dict(cfg)
    name = d.pop("name", "digits10")
    train_limit = d.pop("train_limit", None)
    if name == "digits10":
        split = load_digits_images(**d)
    elif name == "mnist5k":
        split = load_mnist_5k(**d)
    elif name == "cifar10":
        if "path" not in d:
            raise ConfigError("[data] name = 'cifar10' needs path = the local cifar-10-batches-py folder")
        split = load_cifar10(d.pop("path"), **d)
    else:
        raise ConfigError(f"[data] name must be 'digits10', 'mnist5k' or 'cifar10'; got {name!r}")
    if train_limit is not None:
        split = ImageSplit(split.X_train[:train_limit], split.y_train[:train_limit], split.X_test, split.y_test,
                           split.image_shape, split.num_classes, split.name, split.info)  # fmt: skip
    return split


def _build_model(cfg: dict[str, Any], data: ImageSplit) -> VGGNet:
    from ..models import VGG16_LAYERS

    layers = VGG16_LAYERS if cfg.get("preset") == "vgg16" else cfg.get("layers")
    hidden = cfg.get("hidden", (512, 512) if cfg.get("preset") == "vgg16" else ())
    return VGGNet(data.image_shape, layers, num_classes=data.num_classes, hidden=hidden)


def _label(p: dict[str, Any]) -> str:
    return str(p.get("label", p["name"]))


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_").lower()


def _train_one(model, data, pcfg, cfg, dev, dtype, progress):
    pot = potential_from_table(pcfg, model=model, where=f"[[potentials]] {_label(pcfg)!r}")
    tr = cfg.get("training", {})
    step = pcfg.get("step_size", tr.get("step_size"))
    init = cfg.get("init", {})
    theta0 = model.init(scale=float(init.get("scale", 1.0)), seed=int(init.get("seed", 0)), dtype=dtype, device=dev)
    res = minibatch_mirror_descent(
        model, data.X_train, data.y_train, pot, loss=tr.get("loss", "cross_entropy"), step_size=float(step),
        schedule=tr.get("schedule", "constant"), batch_size=tr.get("batch_size"), epochs=int(tr.get("epochs", 10)),
        seed=int(tr.get("seed", 0)), theta0=theta0, dtype=dtype, device=dev, test=(data.X_test, data.y_test),
        target_loss=tr.get("target_loss"), progress=progress,
    )  # fmt: skip
    return res, pot


def _analyse(model, data, res, pot, an: dict[str, Any], dev, dtype) -> dict[str, Any]:
    theta = res.theta
    Xte, yte = data.X_test.to(device=dev, dtype=dtype), data.y_test.to(device=dev)
    Xtr = data.X_train.to(device=dev, dtype=dtype)
    h = res.history
    curve = pruning_curve(model, theta, Xte, yte, an.get("keep", KEEP_FRACTIONS))
    return {
        "status": res.status.value,
        "epochs": int(h["epoch"][-1]),
        "steps": int(h["steps"][-1]),
        "mean_loss": float(h["mean_loss"][-1]),
        "train_accuracy": float(h["train_accuracy"][-1]),
        "test_accuracy": float(h["test_accuracy"][-1]),
        "wall_s": float(h["wall"][-1]),
        "sparsity": layer_sparsity(model, theta, small=float(an.get("small", 0.1))),
        "dead_fraction": dead_unit_fractions(model, theta, Xtr),
        "margins": multiclass_margin_summary(model, pot, theta, Xtr, data.y_train.to(dev)),
        **({"q_margin_note": pot.horizon_note} if getattr(pot, "horizon_note", None) else {}),
        "pruning": {k: v.tolist() for k, v in curve.items()},
    }


def run_vision(config: dict[str, Any], out: str | Path, *, progress: bool = False) -> dict[str, Any]:
    """Run a vision configuration: train every potential, analyse, write the outputs to ``out``.

    Args:
        config: a validated vision configuration (:func:`get_vision_preset`, :func:`load_vision_config`).
        out: output folder (created).
        progress: tqdm bars per run.

    Returns:
        The summary dict written to ``summary.json``: ``runs`` (one entry per potential: accuracies, loss,
        per-layer sparsity, dead fractions, pruning curve), ``first_layer``, ``data``, ``model``, ``wall_s``.
    """
    start, cpu = time.perf_counter(), time.process_time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tr = config.get("training", {})
    dtype = _DTYPES[tr.get("dtype", "float64")]
    dev = torch.device(tr.get("device", "cuda" if torch.cuda.is_available() else "cpu"))
    old_threads = torch.get_num_threads()
    if tr.get("threads"):
        torch.set_num_threads(int(tr["threads"]))
    try:
        data = _load_data(config.get("data", {}))
        model = _build_model(config.get("model", {}), data)
        an = config.get("analysis", {})
        runs, hists, finals = {}, {}, {}
        for pcfg in config["potentials"]:
            label = _label(pcfg)
            res, pot = _train_one(model, data, pcfg, config, dev, dtype, progress)
            runs[label] = _analyse(model, data, res, pot, an, dev, dtype)
            hists[label] = magnitude_histograms(model, res.theta, bins=int(an.get("bins", 40)))
            finals[label] = res.theta.detach().cpu().to(torch.float64).numpy()
            _write_history(out / f"history_{_slug(label)}.csv", res.history)
    finally:
        torch.set_num_threads(old_threads)
    first = an.get("sparsity_layer", next(iter(model.param_shapes())))
    summary = {
        "experiment": config.get("experiment", {}),
        "data": {"name": data.name, "n_train": int(data.X_train.shape[0]), "n_test": int(data.X_test.shape[0]),
                 "image_shape": list(data.image_shape), "num_classes": data.num_classes, **data.info},
        "model": {**model.config(), "degree": model.degree, "num_params": model.num_params},
        "device": str(dev), "dtype": str(dtype).removeprefix("torch."),
        "first_layer": first,
        "runs": runs,
        "wall_s": time.perf_counter() - start,
        "cpu_s": time.process_time() - cpu,
    }  # fmt: skip
    _write_outputs(out, config, summary, hists, finals, model)
    return summary


def _write_history(path: Path, history: dict[str, np.ndarray]) -> None:
    keys = list(history)
    rows = [",".join(keys)] + [",".join(f"{history[k][i]:.10g}" for k in keys) for i in range(len(history[keys[0]]))]
    path.write_text("\n".join(rows) + "\n")


def format_vision_table(summary: dict[str, Any]) -> str:
    """A plain-text table: per potential, accuracies, loss and the first layer's sparsity statistics."""
    first = summary["first_layer"]
    head = (
        f"{'potential':<28} {'epochs':>6} {'loss':>9} {'train':>6} {'test':>6} "
        f"{'PR(' + first + ')':>11} {'hoyer':>6} {'<0.1':>6} {'dead':>6}"
    )
    lines = [head, "-" * len(head)]
    for label, r in summary["runs"].items():
        s = r["sparsity"][first]
        dead = r["dead_fraction"].get(first, math.nan)
        lines.append(
            f"{label:<28} {r['epochs']:>6d} {r['mean_loss']:>9.3g} {r['train_accuracy']:>6.3f} "
            f"{r['test_accuracy']:>6.3f} "
            f"{s['participation']:>11.4f} {s['hoyer']:>6.3f} {s['small_fraction']:>6.3f} {dead:>6.3f}"
        )
    lines.append(
        "PR = (Σ|w|)² / (N Σw²) of the layer's weights (1: all equal magnitudes; lower: sparser); hoyer: Hoyer's "
        "sparseness (higher: sparser); <0.1: fraction with |w| < 0.1 max|w|; dead: channels never active on the "
        "training images."
    )
    return "\n".join(lines)


def _write_outputs(out: Path, config, summary, hists, finals, model) -> None:
    (out / "config.json").write_text(json.dumps(config, indent=2, default=str))
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    (out / "summary.txt").write_text(format_vision_table(summary) + "\n")
    layers = list(model.param_shapes())
    arrays = {"edges": next(iter(hists.values()))["edges"]}
    for label, h in hists.items():
        for layer in layers:
            arrays[f"hist/{_slug(label)}/{layer}"] = h[layer]
        sl = model.layer_slices()
        arrays[f"theta/{_slug(label)}/{layers[0]}"] = finals[label][sl[layers[0]]]
        arrays[f"theta/{_slug(label)}/{layers[-1]}"] = finals[label][sl[layers[-1]]]
    np.savez_compressed(out / "weights.npz", **arrays)
    if config.get("output", {}).get("plots", True):
        from .plotting import save_drawing

        save_drawing(lambda plt: _draw_histograms(plt, hists, layers), out / "weight_histograms.png")
        save_drawing(lambda plt: _draw_pruning(plt, summary), out / "pruning.png")


def _draw_histograms(plt, hists: dict[str, dict[str, np.ndarray]], layers: list[str]) -> None:
    cols = min(4, len(layers))
    rows = math.ceil(len(layers) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False)
    for ax, layer in zip(axes.flat, layers, strict=False):
        for label, h in hists.items():
            centers = 0.5 * (h["edges"][1:] + h["edges"][:-1])
            ax.step(centers, h[layer], where="mid", label=label)
        ax.set_yscale("log")
        ax.set_title(layer)
        ax.set_xlabel("|w| / max |w|")
    for ax in list(axes.flat)[len(layers) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()


def _draw_pruning(plt, summary: dict[str, Any]) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for label, r in summary["runs"].items():
        ax.plot(r["pruning"]["keep"], r["pruning"]["accuracy"], marker="o", ms=3, label=label)
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("fraction of weights kept (per layer, largest |w|)")
    ax.set_ylabel("test accuracy (no retraining)")
    ax.legend(fontsize=8)
    fig.tight_layout()


def run_vision_command(args: Any) -> int | None:
    """``flowsim run`` for vision configurations: a ``--preset`` among :data:`VISION_PRESETS` or a
    ``--config`` file with ``[experiment] kind = "vision"``; None for anything else (the flow experiments).

    Returns:
        The exit status (0 when every run succeeded, 3 otherwise), or None when ``args`` is not a vision run.
    """
    if args.preset is not None and args.preset in VISION_PRESETS:
        config = get_vision_preset(args.preset)
    elif args.config is not None and Path(args.config).is_file():
        try:
            raw = tomllib.loads(Path(args.config).read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError):
            return None  # the flow experiments' loader reports it
        if not is_vision_config(raw):
            return None
        config = validate_vision_config(raw, source=str(args.config))
    else:
        return None
    out = new_output_folder(args.out, Path("flowsim_runs") / config["experiment"]["name"], args.overwrite)
    print(f"[flowsim] experiment {config['experiment']['name']!r}: {config['experiment']['description']}")
    print(f"[flowsim] writing to {out}")
    summary = run_vision(config, out, progress=not args.no_progress and sys.stderr.isatty())
    print()
    print(format_vision_table(summary))
    print(f"\n[flowsim] {summary['wall_s']:.1f} s; outputs in {out}: summary.txt, summary.json, weight_histograms.png, "
          "pruning.png, weights.npz, history_*.csv")  # fmt: skip
    return 0 if all(r["status"] == "success" for r in summary["runs"].values()) else 3
