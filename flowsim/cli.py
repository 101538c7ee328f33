"""Command-line interface: ``flowsim run``, ``flowsim plot``, ``flowsim info``.

``flowsim run`` with no arguments runs the default preset (the main job: a two-layer ReLU network on
digits 0 vs 1 under three mirror potentials) and writes trajectories, a summary table and plots.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import FlowSimError

__all__ = ["main"]


def _cmd_run(args: argparse.Namespace) -> int:
    from .config import DEFAULT_PRESET, get_preset, load_config
    from .experiment import format_table, run_experiment

    if args.config is not None and args.preset is not None:
        raise FlowSimError("give either --preset NAME or --config FILE.toml, not both")
    config = (
        load_config(args.config) if args.config is not None else get_preset(args.preset or DEFAULT_PRESET)
    )
    out = Path(args.out) if args.out else Path("flowsim_runs") / config["experiment"]["name"]
    print(f"[flowsim] experiment {config['experiment']['name']!r}: {config['experiment']['description']}")
    print(f"[flowsim] writing to {out}")
    result = run_experiment(config, out, progress=not args.no_progress and sys.stderr.isatty())
    table = format_table(result.rows)
    print()
    print(table)
    print(f"\n[flowsim] outputs in {out}: summary.txt, summary.csv, config.json, *.png, one folder per run")
    bad = [r for r in result.rows if r["status"] != "success"]
    return 0 if not bad else 3


def _cmd_plot(args: argparse.Namespace) -> int:
    from . import plotting
    from .trajectory import Trajectory

    trajs = [Trajectory.load(p) for p in args.runs]
    labels = [Path(p).name for p in args.runs]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plotting.plot_margins(labels, trajs, out / "margins.png")
    plotting.plot_loss(labels, trajs, out / "loss.png")
    print(f"[flowsim] wrote {out / 'margins.png'} and {out / 'loss.png'}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from .config import PRESETS
    from .data import DATASETS
    from .models import MODELS
    from .potentials import POTENTIALS
    from .trajectory import environment_metadata

    for k, v in environment_metadata().items():
        print(f"{k:>14}: {v}")
    print(f"{'presets':>14}: {', '.join(sorted(PRESETS))}")
    print(f"{'potentials':>14}: {', '.join(sorted(POTENTIALS))}")
    print(f"{'models':>14}: {', '.join(sorted(MODELS))}")
    print(f"{'datasets':>14}: {', '.join(sorted(DATASETS))}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``flowsim`` command (subcommands run, plot, info)."""
    parser = argparse.ArgumentParser(
        prog="flowsim", description="Mirror flow on homogeneous neural networks as an exact ODE."
    )
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run an experiment (default: the main job preset)")
    run.add_argument("--preset", help="built-in preset name (default: main); see `flowsim info`")
    run.add_argument("--config", help="TOML experiment file (see flowsim.config for the format)")
    run.add_argument("--out", help="output directory (default: flowsim_runs/<experiment name>)")
    run.add_argument(
        "--no-progress", action="store_true", help="no progress bars (they are shown only on a terminal anyway)"
    )
    run.set_defaults(func=_cmd_run)
    plot = sub.add_parser("plot", help="plot saved trajectories (directories written by `flowsim run`)")
    plot.add_argument("runs", nargs="+", help="trajectory directories")
    plot.add_argument("--out", default=".", help="where to write the PNGs")
    plot.set_defaults(func=_cmd_plot)
    info = sub.add_parser("info", help="versions, presets, potentials, models, datasets")
    info.set_defaults(func=_cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``flowsim`` console script. Returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except FlowSimError as e:
        print(f"flowsim: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
