"""``flowsim paper``: list the seed paper's figures or regenerate one (or all) of them (:mod:`flowsim.lab.paper`).

``flowsim paper --list`` prints the figures; ``flowsim paper FIG [--quick] [--out DIR]`` writes FIG's PNGs and
``FIG.json`` to DIR (default ``paper_figures``) and prints what the figure shows, its numbers and what is a
reconstruction; ``FIG`` = ``all`` runs every figure.
"""

from __future__ import annotations

import argparse

__all__ = ["add_paper_command"]


def _cmd_paper(args: argparse.Namespace) -> int:
    from .paper import FIGURES, figure_names, run_figure

    if args.list or args.figure is None:
        for fig in (FIGURES[name] for name in figure_names()):
            also = f" (also {', '.join(fig.aliases)})" if fig.aliases else ""
            print(f"{fig.name:<9} {fig.summary}{also}")
        if not args.list:
            print("\nrun one: flowsim paper FIG [--quick] [--out DIR]; every figure: flowsim paper all")
        return 0
    names = figure_names() if args.figure.strip().lower() == "all" else [args.figure]
    for name in names:
        result = run_figure(name, quick=args.quick, out=args.out)
        print(result.report())
    print(f"[flowsim] outputs in {args.out}")
    return 0


def add_paper_command(sub) -> None:
    """Add the ``paper`` subcommand to the ``flowsim`` parser's subparsers."""
    paper = sub.add_parser("paper", help="regenerate the seed paper's figures (flowsim paper --list)")
    paper.add_argument("figure", nargs="?", help="figure name (e.g. fig2, fig6) or all")
    paper.add_argument("--list", action="store_true", help="list the figures")
    paper.add_argument("--quick", action="store_true", help="the small setting (seconds to a minute per figure)")
    paper.add_argument("--out", default="paper_figures", help="output folder (default: paper_figures)")
    paper.set_defaults(func=_cmd_paper)
