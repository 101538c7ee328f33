"""Module paths from before the subpackage layout keep importing: ``flowsim.kinks`` is
:mod:`flowsim.solvers.filippov`, ``flowsim.plotting`` is :mod:`flowsim.lab.plotting`, and so on.

A meta-path finder maps each old name to the module that now holds its contents, so
``from flowsim.references import svm_l2`` and ``import flowsim.kinks`` give the same objects as the new
paths. Nothing is imported until an old name is asked for (the core does not load :mod:`flowsim.lab`).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from types import ModuleType

ALIASES: dict[str, str] = {
    "flowsim.solve": "flowsim.simulation",
    "flowsim.setup": "flowsim.problem",
    "flowsim.diagnostics": "flowsim.analysis.diagnostics",
    "flowsim.rates": "flowsim.analysis.rates",
    "flowsim.references": "flowsim.analysis.references",
    "flowsim.integrate": "flowsim.solvers",
    "flowsim.kinks": "flowsim.solvers.filippov",
    "flowsim.trajectory": "flowsim.results.trajectory",
    "flowsim.stream": "flowsim.simulation",  # resume; the store itself is flowsim.results.store
    "flowsim.cli": "flowsim.lab.cli",
    "flowsim.config": "flowsim.lab.config",
    "flowsim.experiment": "flowsim.lab.experiment",
    "flowsim.plotting": "flowsim.lab.plotting",
    "flowsim.validate": "flowsim.lab.validate",
}


class _AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old module name and loads it as the new module object itself (not a copy)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname in ALIASES:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec) -> ModuleType:
        module = importlib.import_module(ALIASES[spec.name])
        self._spec = module.__spec__  # the import system overwrites __spec__; exec_module restores it
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = self._spec


def install() -> None:
    """Put the alias finder on ``sys.meta_path`` once."""
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.append(_AliasFinder())
