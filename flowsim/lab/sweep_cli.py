"""The sweep commands of the ``flowsim`` CLI: ``flowsim plan``, ``flowsim run-spec``, ``flowsim gather`` and
``flowsim run --executor ray`` (:mod:`flowsim.lab.sweep`; docs/sweeps.md).

``flowsim plan CONFIG --out ROOT`` writes the run specifications; ``flowsim run-spec ROOT --index I`` runs one
(``I`` defaults to ``$SLURM_ARRAY_TASK_ID``, so a SLURM array job runs the plan without Ray); ``flowsim gather
ROOT`` writes the summary and plots of whatever has finished.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..errors import FlowSimError

__all__ = ["add_sweep_commands", "run_with_executor", "resume_with_executor", "EXECUTOR_HELP"]

EXECUTOR_HELP = (
    'where the runs go: "local" (default: this machine, worker processes) or "ray" (one Ray task per run, '
    'pip install "flowsim[distributed]"; see docs/sweeps.md)'
)
INDEX_ENV = "SLURM_ARRAY_TASK_ID"


def add_sweep_commands(sub) -> None:
    """Add ``plan``, ``run-spec`` and ``gather`` to the CLI's subparsers."""
    pl = sub.add_parser("plan", help="write a sweep's run specifications (ROOT/plan.json) for run-spec / gather")
    pl.add_argument("config", nargs="?", help="TOML experiment file (or --preset NAME)")
    pl.add_argument("--preset", help="built-in preset name instead of a TOML file")
    pl.add_argument("--out", required=True, metavar="ROOT", help="root folder of the sweep (one folder per run)")
    pl.add_argument(
        "--checkpoint-every", type=int, metavar="N", help="save points between checkpoints (default 50; ≥ 1)"
    )
    pl.set_defaults(func=_cmd_plan)
    rs = sub.add_parser("run-spec", help="run (resume, or skip if finished) one planned run: a SLURM array task")
    rs.add_argument("root", help="root folder written by `flowsim plan`")
    rs.add_argument("--index", type=int, help=f"the run's index in the plan (default: ${INDEX_ENV})")
    rs.add_argument("--no-progress", action="store_true", help="no progress bar")
    rs.set_defaults(func=_cmd_run_spec)
    ga = sub.add_parser("gather", help="summary table and plots of a planned sweep's finished runs")
    ga.add_argument("root", help="root folder written by `flowsim plan`")
    ga.set_defaults(func=_cmd_gather)


def _cmd_plan(args: argparse.Namespace) -> int:
    from .config import get_preset, load_config
    from .sweep import write_plan

    if (args.config is None) == (args.preset is None):
        raise FlowSimError("flowsim plan needs a TOML experiment file or --preset NAME (one of them)")
    config = load_config(args.config) if args.config is not None else get_preset(args.preset)
    specs = write_plan(config, args.out, checkpoint_every=args.checkpoint_every)
    print(f"[flowsim] {len(specs)} runs planned in {args.out}/plan.json")
    print(f"[flowsim] run them with `flowsim run-spec {args.out} --index I` for I = 0..{len(specs) - 1}")
    print(f"[flowsim] (SLURM: sbatch --array=0-{len(specs) - 1} ...), then `flowsim gather {args.out}`")
    return 0


def _cmd_run_spec(args: argparse.Namespace) -> int:
    from .sweep import read_plan, run_spec

    index = args.index
    if index is None:
        text = os.environ.get(INDEX_ENV)
        if text is None:
            raise FlowSimError(f"flowsim run-spec needs --index I (or ${INDEX_ENV}, set in a SLURM array task)")
        try:
            index = int(text)
        except ValueError as e:
            raise FlowSimError(f"${INDEX_ENV} must be an integer, got {text!r}") from e
    _, specs = read_plan(args.root)
    if not 0 <= index < len(specs):
        raise FlowSimError(f"--index {index} is outside the plan in {args.root}: give 0..{len(specs) - 1}")
    spec = specs[index]
    print(f"[flowsim] run {index}: {spec.label} -> {Path(args.root) / spec.dir}")
    tr = run_spec(spec, args.root, progress=not args.no_progress and sys.stderr.isatty())
    print(f"[flowsim] {tr.status.value}: log t = {tr.log_t[-1]:.6g}, nfe = {tr.stats.get('nfe')}")
    return 0 if tr.success else 3


def _cmd_gather(args: argparse.Namespace) -> int:
    from .sweep import gather

    return _report(gather(args.root), args.root)


def _report(result, root) -> int:
    """Print the summary table, the missing and failed runs; exit code 0 when every planned run succeeded."""
    from .experiment import format_table

    print()
    print(format_table(result.rows))
    print(f"\n[flowsim] outputs in {root}: summary.txt, summary.csv, *.png, one folder per run")
    if result.missing:
        print(f"[flowsim] missing (not run yet): {', '.join(result.missing)}")
    bad = [r["label"] for r in result.rows if r["status"] != "success"]
    if bad:
        print(f"[flowsim] not successful: {', '.join(bad)}")
    return 0 if not bad and not result.missing else 3


def run_with_executor(config: dict, out: Path, args: argparse.Namespace) -> int:
    """``flowsim run --executor ray``: plan the configuration into ``out`` and run the plan (:func:`run_plan`)."""
    from .sweep import run_plan, write_plan

    write_plan(config, out, checkpoint_every=args.checkpoint_every)
    print(f"[flowsim] writing to {out}")
    return _report(run_plan(out, executor=args.executor, address=args.ray_address), out)


def resume_with_executor(root: Path, args: argparse.Namespace) -> int:
    """``flowsim run --resume ROOT --executor ray``: run the plan in ``root`` again (finished runs are skipped)."""
    from .sweep import run_plan

    return _report(run_plan(root, executor=args.executor, address=args.ray_address), root)
