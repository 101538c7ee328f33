"""The one place that imports torchdiffeq's private internals.

The drivers step torchdiffeq's adaptive Runge–Kutta solvers themselves (``_before_integrate``, ``_advance``,
``_adaptive_step``, ``rk_state``) instead of calling ``odeint``: a solver runs through the whole save grid without
restarts, and the Filippov driver inspects every accepted step (dense output, events) before taking the next.
That API is private, so ``pyproject.toml`` pins torchdiffeq to ``>=0.2.3,<0.3``.
"""

from torchdiffeq._impl.interp import _interp_evaluate as interp_evaluate
from torchdiffeq._impl.misc import _check_inputs as check_inputs
from torchdiffeq._impl.odeint import SOLVERS as SOLVERS
from torchdiffeq._impl.rk_common import _runge_kutta_step as runge_kutta_step

__all__ = ["SOLVERS", "check_inputs", "interp_evaluate", "runge_kutta_step"]
