"""Run an experiment configuration (preset or TOML): one simulate() per potential, a summary, plots.

This is the layer behind ``flowsim run``; the core (potentials, models, losses, flow, solve) never
imports it.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .data import Dataset, load_dataset
from .errors import ConfigError
from .models import get_model
from .potentials import get_potential
from .solve import simulate
from .trajectory import Trajectory

__all__ = ["ExperimentResult", "run_experiment", "summary_rows", "format_table", "SUMMARY_COLUMNS"]

SUMMARY_COLUMNS = (
    "label",
    "status",
    "final_log_t",
    "log_loss",
    "normalized_margin",
    "q_margin",
    "active_neurons",
    "balance_drift",
    "nfe",
    "wall_time_s",
)


@dataclass
class ExperimentResult:
    """Trajectories of one experiment (one per potential), its summary rows and output directory."""

    config: dict[str, Any]
    dataset: Dataset
    labels: list[str]
    trajectories: list[Trajectory]
    rows: list[dict[str, Any]]
    out: Path | None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "run"


def _label(pot_cfg: dict[str, Any]) -> str:
    if "label" in pot_cfg:
        return str(pot_cfg["label"])
    params = ", ".join(f"{k}={v}" for k, v in pot_cfg.items() if k != "name")
    return f"{pot_cfg['name']}({params})" if params else str(pot_cfg["name"])


def summary_rows(labels: list[str], trajectories: list[Trajectory]) -> list[dict[str, Any]]:
    """One summary row per trajectory (final values of the diagnostics, stats)."""
    rows = []
    for label, tr in zip(labels, trajectories, strict=True):
        d = tr.diagnostics

        def last(key: str, d=d) -> float:
            v = d.get(key)
            return float(np.asarray(v)[-1]) if v is not None and len(v) else float("nan")

        drift = d.get("balance_drift")
        rows.append(
            {
                "label": label,
                "status": tr.status.value,
                "final_log_t": float(tr.log_t[-1]),
                "log_loss": last("log_loss"),
                "normalized_margin": last("normalized_margin"),
                "q_margin": last("q_margin"),
                "active_neurons": int(last("active_neurons")) if "active_neurons" in d else "",
                "balance_drift": float(np.max(drift)) if drift is not None and len(drift) else "",
                "nfe": int(tr.stats.get("nfe", 0)),
                "wall_time_s": float(tr.stats.get("wall_time", float("nan"))),
            }
        )
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """Fixed-width text table of summary rows."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}" if np.isfinite(v) else str(v)
        return str(v)

    cells = [[fmt(r[c]) for c in SUMMARY_COLUMNS] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(SUMMARY_COLUMNS)]
    line = "  ".join(c.ljust(w) for c, w in zip(SUMMARY_COLUMNS, widths, strict=True))
    out = [line, "-" * len(line)]
    out += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(out)


def run_experiment(
    config: dict[str, Any], out: str | Path | None = None, *, progress: bool = False, log=print
) -> ExperimentResult:
    """Run every potential of a validated configuration (see :mod:`flowsim.config`).

    Args:
        config: a validated configuration (from :func:`flowsim.config.get_preset` or ``load_config``).
        out: output directory: ``<label>/`` trajectories, ``summary.csv``, ``summary.txt``,
            ``config.json`` and PNG plots. None writes nothing.
        progress: progress bars on log t.
        log: a print-like function for progress lines.

    Returns:
        an :class:`ExperimentResult`. Runs that fail keep their partial trajectories and statuses.

    Raises:
        ConfigError: when the data, model or potential arguments in the configuration are invalid.
    """
    data_cfg = dict(config["data"])
    try:
        dataset = load_dataset(data_cfg.pop("name"), **data_cfg)
    except TypeError as e:
        raise ConfigError(f"[data]: {e}") from e
    model_cfg = dict(config["model"])
    model_cfg.setdefault("input_dim", dataset.d)
    try:
        model = get_model(model_cfg.pop("name"), **model_cfg)
    except TypeError as e:
        raise ConfigError(f"[model]: {e}") from e
    out_dir = Path(out) if out is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(json.dumps(config, indent=2, default=str))
    labels, trajs = [], []
    for pot_cfg in config["potentials"]:
        params = {k: v for k, v in pot_cfg.items() if k not in ("name", "label")}
        try:
            potential = get_potential(pot_cfg["name"], **params)
        except TypeError as e:
            raise ConfigError(f"[[potentials]] {pot_cfg['name']}: {e}") from e
        label = _label(pot_cfg)
        log(f"[flowsim] {label}: {model!r} on {dataset.name} (n={dataset.n}, d={dataset.d})")
        sub = out_dir / _slug(label) if out_dir is not None else None
        tr = simulate(
            model,
            dataset,
            potential,
            loss=config["flow"]["loss"],
            time=config["flow"]["time"],
            log_t_end=config["horizon"]["log_t_end"],
            n_save=config["horizon"]["n_save"],
            log_t_start=config["horizon"]["log_t_start"],
            init_scale=config["init"]["scale"],
            seed=config["init"]["seed"],
            method=config["solver"]["method"],
            rtol=config["solver"]["rtol"],
            atol=config["solver"]["atol"],
            max_steps=config["solver"]["max_steps"],
            progress=progress,
            out=sub,
        )
        log(
            f"[flowsim]   {tr.status.value}: log t = {tr.log_t[-1]:.4g}, nfe = {tr.stats['nfe']}, "
            f"{tr.stats['wall_time']:.1f} s"
        )
        labels.append(label)
        trajs.append(tr)
        if tr.status.value == "interrupted":
            log("[flowsim] interrupted: partial results kept; skipping the remaining potentials")
            break
    rows = summary_rows(labels, trajs)
    if out_dir is not None:
        with open(out_dir / "summary.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(SUMMARY_COLUMNS))
            writer.writeheader()
            writer.writerows(rows)
        (out_dir / "summary.txt").write_text(format_table(rows) + "\n")
        if config.get("output", {}).get("plots", True):
            from . import plotting

            plotting.experiment_plots(labels, trajs, model, dataset, out_dir)
    return ExperimentResult(config, dataset, labels, trajs, rows, out_dir)
