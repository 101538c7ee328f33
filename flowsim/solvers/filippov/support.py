"""Which models the Filippov driver integrates."""

from __future__ import annotations

from ...models import AbstractModel, AbstractPiecewiseLinearTwoLayer, DeepReLU


def supports(model: AbstractModel) -> bool:
    """Whether :class:`FilippovDriver` can integrate ``model``: two-layer ReLU / leaky-ReLU nets and deep ReLU
    nets (:class:`~flowsim.models.DeepReLU`; their sliding with the limit of :mod:`flowsim.solvers.filippov`,
    item 5)."""
    return isinstance(model, (AbstractPiecewiseLinearTwoLayer, DeepReLU))


def auto_filippov(model: AbstractModel) -> bool:
    """Whether ``kinks="auto"`` picks Filippov handling for ``model``: every model the driver supports (two-layer
    ReLU / leaky-ReLU nets, deep ReLU nets).

    Naive stepping chatters on sliding modes and can stall: on ``student_teacher_relu(n=60, d=4, seed=3)`` with
    ``DeepReLU(4, [6, 6])`` it was at log t −1.98 after 120 s and 502k RHS evaluations (gradient flow), where exact
    kinks reach log t = 2 in 3 s. Deep nets' crossings are all exact restarts, so where crossings crowd exact kinks
    cost more than naive stepping, which is then fast but off: digits 0 vs 1 with ``DeepReLU(64, [16, 16])``,
    gradient flow at rtol 1e-5, 66,086 RHS evaluations and 83 s CPU to log t = 8 (5,571 crossings), against naive's
    6,171 and 2.8 s, 1.6e-4 apart; ``kinks="naive"`` asks for that explicitly. Under p-power potentials with
    p < 2 some deep runs do not finish (docs/kinks.md).
    """
    return supports(model)
