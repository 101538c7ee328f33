"""flowsim: mirror flow on homogeneous neural networks as an exact ODE.

One entry point, :func:`simulate`, integrates mirror flow d/dt ∇Φ(θ) = −∇L(θ) for a potential Φ, an
L-homogeneous model and a margin loss on binary data, and returns a :class:`Trajectory`.

    >>> import flowsim
    >>> data = flowsim.data.load_dataset("iris")
    >>> tr = flowsim.simulate(flowsim.models.Linear(data.d), data, "hyperbolic_entropy", log_t_end=20)

Seed paper: Jacobs & Montúfar, "Implicit Bias of Mirror Flow in Homogeneous Neural Networks: Sparse and
Dense Feature Learning", arXiv 2605.19458 (2026).
"""

__version__ = "0.1.0"

from . import data, diagnostics, errors, losses, models, potentials, rates, references  # noqa: E402
from .errors import FlowSimError  # noqa: E402
from .solve import simulate  # noqa: E402
from .stream import resume  # noqa: E402
from .trajectory import Status, Trajectory  # noqa: E402

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
