"""flowsim: mirror flow on homogeneous neural networks as an exact ODE.

One entry point, :func:`simulate`, integrates mirror flow d/dt ∇Φ(θ) = −∇L(θ) for a potential Φ, an
L-homogeneous model and a margin loss on binary data, and returns a :class:`Trajectory`.

    >>> import flowsim
    >>> data = flowsim.data.load_dataset("iris")
    >>> he = flowsim.potentials.HyperbolicEntropy(beta=0.1)
    >>> tr = flowsim.simulate(flowsim.models.Linear(data.d), data, he, log_t_end=10, n_save=40, rtol=1e-6)
    >>> tr.status.value, tr.theta.shape
    ('success', (40, 4))

Layout: the core (``errors``, ``losses``, ``flow``, ``simulation``, ``discrete``, ``ensemble``) at the top;
``potentials``, ``models``, ``data``, ``analysis``, ``solvers`` and ``results`` below it; ``lab`` holds the
edges (CLI, configurations, experiments, plotting, validation) and nothing else imports it.

Seed paper: Jacobs & Montúfar, "Implicit Bias of Mirror Flow in Homogeneous Neural Networks: Sparse and
Dense Feature Learning", arXiv 2605.19458 (2026).
"""

from ._compat import install as _install_aliases
from ._version import __version__

_install_aliases()

from . import data, errors, losses, models, potentials  # noqa: E402
from .analysis import diagnostics, rates, references  # noqa: E402
from .errors import FlowSimError  # noqa: E402
from .results import Status, Trajectory  # noqa: E402
from .simulation import resume, simulate  # noqa: E402

__all__ = [
    "__version__",
    "simulate",
    "resume",
    "Trajectory",
    "Status",
    "FlowSimError",
    "data",
    "diagnostics",
    "errors",
    "losses",
    "models",
    "potentials",
    "rates",
    "references",
]
