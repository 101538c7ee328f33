"""``flowsim paper``: the seed paper's figures regenerated, as far as their captions describe them.

Each figure writes PNGs and ``<name>.json`` (the numbers it shows) and returns a
:class:`~flowsim.lab.paper._base.FigureResult` whose :meth:`report` says what it shows, the numbers backing it,
and what is a reconstruction. ``quick=True`` runs a small setting (seconds to a minute on one core).

References:
    Jacobs & Montúfar, arXiv:2605.19458 (2026), the seed paper; only its captions were available.
"""

from . import _boundary, _layers, _ranges, _representations, _vision  # noqa: F401  (register the figures)
from ._base import FIGURES as FIGURES
from ._base import Figure as Figure
from ._base import FigureResult as FigureResult
from ._base import figure_names as figure_names
from ._base import run_figure as run_figure

__all__ = ["FIGURES", "Figure", "FigureResult", "figure_names", "run_figure"]
