"""Command-line interface: ``flowsim run``, ``flowsim plot``, ``flowsim validate``, ``flowsim info``; the sweep
commands ``flowsim plan``, ``run-spec``, ``gather`` and ``run --executor ray`` are in :mod:`flowsim.lab.sweep_cli`.

``flowsim run`` with no arguments runs the default preset (the main job: a two-layer ReLU network on
digits 0 vs 1 under three mirror potentials) and writes trajectories, a summary table and plots. Each
subcommand imports what it needs when it runs (plotting loads matplotlib, validate scipy's solvers).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import FlowSimError, RunFolderError
from ..results.store import new_output_folder
from .paper_cli import add_paper_command
from .sweep_cli import EXECUTOR_HELP, add_sweep_commands

__all__ = ["main"]


def _cmd_run(args: argparse.Namespace) -> int:
    from .config import DEFAULT_PRESET, get_preset, load_config, validate_config
    from .experiment import format_table, run_experiment

    workers = _workers(args.workers)
    if args.ray_address is not None and args.executor != "ray":
        raise FlowSimError("--ray-address ADDR goes with --executor ray")
    if args.resume is not None:
        _resume_alone(args)
        if args.executor != "local":  # a planned sweep (flowsim.lab.sweep): run its plan again
            from .sweep_cli import resume_with_executor

            return resume_with_executor(Path(args.resume), args)
        return _resume(Path(args.resume), progress=not args.no_progress and sys.stderr.isatty(), workers=workers)
    if args.config is not None and args.preset is not None:
        raise FlowSimError("give either --preset NAME or --config FILE.toml, not both")
    from .vision import run_vision_command  # the vision presets (a CNN by mini-batch mirror descent)

    if (vision_status := run_vision_command(args)) is not None:
        return vision_status
    config = load_config(args.config) if args.config is not None else get_preset(args.preset or DEFAULT_PRESET)
    config = _apply_md_options(config, args)
    if args.checkpoint_every is not None:
        config = validate_config({**config, "output": {**config["output"], "checkpoint_every": args.checkpoint_every}})
    out = new_output_folder(args.out, Path("flowsim_runs") / config["experiment"]["name"], args.overwrite)
    print(f"[flowsim] experiment {config['experiment']['name']!r}: {config['experiment']['description']}")
    if args.executor != "local":  # one task per run (flowsim.lab.sweep)
        from .sweep_cli import run_with_executor

        return run_with_executor(config, out, args)
    # (run_experiment says "writing to OUT" once it has checked every run: a configuration that cannot run writes
    # nothing and leaves no folder behind)
    result = run_experiment(config, out, progress=not args.no_progress and sys.stderr.isatty(), workers=workers)
    table = format_table(result.rows)
    print()
    print(table)
    plots = ", *.png" if any(out.glob("*.png")) else ""  # (none with [output] plots = false)
    print(f"\n[flowsim] outputs in {out}: summary.txt, summary.csv, config.json{plots}, one folder per run")
    bad = [r for r in result.rows if r["status"] != "success"]
    if result.skipped:
        print(f"[flowsim] not run (interrupted): {', '.join(result.skipped)}")
    return 0 if not bad and not result.skipped else 3


def _workers(text: str) -> int | str:
    """``--workers``: "auto" or an integer (run_experiment checks it, with an InvalidParameterError)."""
    try:
        return int(text)
    except ValueError:
        return text


def _resume_alone(args: argparse.Namespace) -> None:
    """``--resume DIR`` continues with the configuration stored in DIR: options that would change it are refused
    (they would otherwise be silently ignored)."""
    given = [
        flag
        for flag, value in (
            ("--config", args.config),
            ("--preset", args.preset),
            ("--out", args.out),
            ("--overwrite", args.overwrite or None),
            ("--method", args.method),
            ("--step-size", args.step_size),
            ("--schedule", args.schedule),
            ("--variant", args.variant),
            ("--rollback", args.rollback or None),
            ("--checkpoint-every", args.checkpoint_every),
        )
        if value is not None
    ]
    if given:
        raise FlowSimError(
            f"--resume DIR continues a run with the configuration stored in DIR; {', '.join(given)} would not be "
            "applied. Give --resume DIR alone (--workers and --no-progress may go with it), or start a new run "
            "with those options and another --out DIR"
        )


def _resume(path: Path, progress: bool, workers: int | str) -> int:
    """``flowsim run --resume DIR``: one run (DIR/run.json) or an experiment (DIR/config.json)."""
    from .experiment import format_table, run_experiment

    if (path / "run.json").exists():
        from ..simulation import resume

        print(f"[flowsim] resuming the run in {path}")
        tr = resume(path, progress=progress)
        print(f"[flowsim] {tr.status.value}: log t = {tr.log_t[-1]:.6g}, nfe = {tr.stats.get('nfe')}")
        return 0 if tr.success else 3
    if not (path / "config.json").exists():
        raise FlowSimError(f"--resume {path}: no run.json (a simulate run) or config.json (an experiment) there")
    try:
        config = json.loads((path / "config.json").read_text())
        if not isinstance(config, dict) or "experiment" not in config:
            raise ValueError("not an experiment configuration")
    except ValueError as e:
        raise RunFolderError(
            f"{path / 'config.json'} is damaged ({e}); the experiment cannot be resumed without it: run it again "
            "with flowsim run --config FILE.toml (or --preset NAME) --out DIR"
        ) from e
    print(f"[flowsim] resuming experiment {config['experiment']['name']!r} in {path}")
    result = run_experiment(config, path, progress=progress, resume=True, workers=workers)
    print()
    print(format_table(result.rows))
    if result.skipped:
        print(f"[flowsim] not run (interrupted): {', '.join(result.skipped)}")
    return 0 if all(r["status"] == "success" for r in result.rows) and not result.skipped else 3


def _cmd_plot(args: argparse.Namespace) -> int:
    from ..results import Trajectory, run_folders
    from ..results.store import prepare_out_dir
    from . import plotting

    # an experiment folder stands for its runs; a path with none goes to Trajectory.load, which says what is missing
    runs = [run for p in args.runs for run in (run_folders(p) or [Path(p)])]
    trajs = [Trajectory.load(p) for p in runs]
    labels = [p.name for p in runs]
    out = prepare_out_dir(args.out)
    plotting.plot_margins(labels, trajs, out / "margins.png")
    plotting.plot_loss(labels, trajs, out / "loss.png")
    print(f"[flowsim] wrote {out / 'margins.png'} and {out / 'loss.png'}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from ..data import DATASETS
    from ..models import MODELS
    from ..potentials import POTENTIALS
    from ..results import environment_metadata
    from .config import PRESETS

    for k, v in environment_metadata().items():
        print(f"{k:>14}: {v}")
    print(f"{'presets':>14}: {', '.join(sorted(PRESETS))}")
    print(f"{'potentials':>14}: {', '.join(sorted(POTENTIALS))}")
    print(f"{'models':>14}: {', '.join(sorted(MODELS))}")
    print(f"{'datasets':>14}: {', '.join(sorted(DATASETS))}")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from ..results.store import prepare_out_dir
    from .validate import format_table, resolve_cases, run_validation, write_report

    cases = [c for c in args.only.split(",") if c.strip()] if args.only else None
    resolve_cases(cases)  # an unknown case is an error before the report folder is made
    out = prepare_out_dir(args.out)
    tier = "full" if args.full else "quick"
    print(f"[flowsim] validate ({tier} tier), report in {out}")
    results = run_validation(cases, full=args.full, out=out, progress=lambda line: print(line, flush=True))
    print()
    print(format_table(results))
    report = write_report(results, out)
    print(f"\n[flowsim] wrote {report}")
    return 1 if any(r.status in ("fail", "error") for r in results) else 0  # (skipped: an extra not installed)


def _add_md_arguments(parser: argparse.ArgumentParser, *, method: bool) -> None:
    """Options of discrete mirror descent (flowsim.discrete): --method md, --step-size, --schedule, ..."""
    from ..discrete import SCHEDULES, VARIANTS

    if method:
        parser.add_argument(
            "--method", help='solver: a torchdiffeq method (the flow) or "md" (discrete mirror descent)'
        )
    need = "required with --method md" if method else "required"
    parser.add_argument("--step-size", type=float, help=f"mirror-descent step size η ({need})")
    parser.add_argument("--schedule", choices=SCHEDULES, help="mirror-descent step-size rule (default constant)")
    parser.add_argument("--variant", choices=VARIANTS, help='"eg": sign-preserving EG (hyperbolic entropy)')
    parser.add_argument("--rollback", action="store_true", help="undo loss-increasing steps and halve η")


def _apply_md_options(config: dict, args: argparse.Namespace) -> dict:
    """Fold --method/--step-size/--schedule/--variant/--rollback into [solver] and re-validate."""
    from .config import validate_config

    solver = dict(config["solver"])
    if getattr(args, "method", None):
        solver["method"] = args.method
    for key in ("step_size", "schedule", "variant"):
        if getattr(args, key, None) is not None:
            solver[key] = getattr(args, key)
    if getattr(args, "rollback", False):
        solver["rollback"] = True
    if solver == config["solver"]:
        return config
    if solver.get("method") != "md":
        if any(k in solver for k in ("step_size", "schedule", "variant", "rollback")):
            raise FlowSimError("--step-size/--schedule/--variant/--rollback need --method md (discrete mirror descent)")
    if solver.get("method") == "md":
        for key in ("rtol", "atol"):  # kept for the flow in `flowsim compare`; unused by md
            solver.setdefault(key, config["solver"].get(key))
        if args.method == "md" and config["solver"].get("method") != "md":
            solver.pop("options", None)  # the flow's solver options (e.g. the main preset's soft_cap): not for md
    return validate_config({**config, "solver": solver}, source="command line")


def _cmd_compare(args: argparse.Namespace) -> int:
    from .config import get_preset, load_config
    from .experiment import format_compare_table, run_comparison

    if args.config is not None and args.preset is not None:
        raise FlowSimError("give either --preset NAME or --config FILE.toml, not both")
    if args.step_size is None:
        raise FlowSimError("flowsim compare needs --step-size η (the mirror-descent step size), e.g. --step-size 0.1")
    config = load_config(args.config) if args.config is not None else get_preset(args.preset or "quick")
    out = new_output_folder(args.out, Path("flowsim_runs") / f"{config['experiment']['name']}_compare", args.overwrite)
    print(f"[flowsim] compare flow vs mirror descent: experiment {config['experiment']['name']!r}, writing to {out}")
    rows, _, runs = run_comparison(
        config,
        out,
        step_size=args.step_size,
        schedule=args.schedule or "constant",
        variant=args.variant or "mirror",
        rollback=args.rollback,
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    print()
    print(format_compare_table(rows))
    print(f"\n[flowsim] outputs in {out}: compare.txt, compare.csv, compare_*.png, <label>/flow and <label>/md")
    ok = all(fl.success and md.success for fl, md, _ in runs)
    return 0 if ok else 3


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``flowsim`` command (subcommands run, plot, info)."""
    parser = argparse.ArgumentParser(
        prog="flowsim", description="Mirror flow on homogeneous neural networks as an exact ODE."
    )
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run an experiment (default: the main job preset)")
    run.add_argument("--preset", help="built-in preset name (default: main); see `flowsim info`")
    run.add_argument("--config", help="TOML experiment file (see flowsim.lab.config for the format)")
    run.add_argument("--out", help="output directory (default: flowsim_runs/<experiment name>)")
    run.add_argument("--overwrite", action="store_true", help="--out DIR may hold an earlier experiment: replace it")
    run.add_argument("--resume", metavar="DIR", help="continue a killed run or experiment from its checkpoints")
    run.add_argument(
        "--workers",
        default="auto",
        metavar="N",
        help='processes running the potentials concurrently: an integer ≥ 1 or "auto" (default: one per potential '
        "up to the CPU cores for small problems, else 1)",
    )
    _add_md_arguments(run, method=True)
    run.add_argument(
        "--checkpoint-every",
        type=int,
        metavar="N",
        help="save points between each run's checkpoints (default 50; 0: none); [output] checkpoint_every",
    )
    run.add_argument(
        "--no-progress", action="store_true", help="no progress bars (they are shown only on a terminal anyway)"
    )
    run.add_argument("--executor", choices=("local", "ray"), default="local", help=EXECUTOR_HELP)
    run.add_argument("--ray-address", metavar="ADDR", help="Ray cluster to use with --executor ray (default: local)")
    run.set_defaults(func=_cmd_run)
    add_sweep_commands(sub)
    plot = sub.add_parser("plot", help="plot saved trajectories (directories written by `flowsim run`)")
    plot.add_argument(
        "runs", nargs="+", help="trajectory directories, or experiment folders of `flowsim run` (all their runs)"
    )
    plot.add_argument("--out", default=".", help="where to write the PNGs")
    plot.set_defaults(func=_cmd_plot)
    val = sub.add_parser("validate", help="theorem checks C1–C18 with a pass/fail table and a Markdown report")
    val.add_argument("--full", action="store_true", help="full tier (longer horizons, more settings)")
    val.add_argument("--only", help="comma-separated cases, e.g. C10,C12")
    val.add_argument("--out", default="flowsim_validation", help="report directory (report.md, figs/)")
    val.set_defaults(func=_cmd_validate)
    cmp = sub.add_parser("compare", help="mirror flow vs discrete mirror descent of one experiment (table + plots)")
    cmp.add_argument("--preset", help="built-in preset name (default: quick); see `flowsim info`")
    cmp.add_argument("--config", help="TOML experiment file")
    cmp.add_argument("--out", help="output directory (default: flowsim_runs/<experiment name>_compare)")
    cmp.add_argument("--overwrite", action="store_true", help="--out DIR may hold an earlier comparison: replace it")
    cmp.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_md_arguments(cmp, method=False)
    cmp.set_defaults(func=_cmd_compare)
    info = sub.add_parser("info", help="versions, presets, potentials, models, datasets")
    info.set_defaults(func=_cmd_info)
    add_paper_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``flowsim`` console script. Returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from .workers import Terminated, sigterm_as_interrupt

    try:
        with sigterm_as_interrupt():  # SIGTERM stops a run like Ctrl-C: what was computed is kept and saved
            return int(args.func(args))
    except FlowSimError as e:
        print(f"flowsim: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # outside a run (runs keep their results and return)
        print(f"flowsim: {str(e) or 'interrupted'}", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
