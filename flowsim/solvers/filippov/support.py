"""Which models the Filippov driver integrates."""

from __future__ import annotations

from ...models import AbstractModel, AbstractPiecewiseLinearTwoLayer, DeepReLU


def supports(model: AbstractModel) -> bool:
    """Whether :class:`FilippovDriver` can integrate ``model``: two-layer ReLU / leaky-ReLU nets and deep ReLU
    nets (:class:`~flowsim.models.DeepReLU`; their sliding with the limit of :mod:`flowsim.solvers.filippov`,
    item 5)."""
    return isinstance(model, (AbstractPiecewiseLinearTwoLayer, DeepReLU))


def auto_filippov(model: AbstractModel) -> bool:
    """Whether ``kinks="auto"`` picks Filippov handling for ``model``: models whose sliding modes are handled
    completely — two-layer ReLU / leaky-ReLU nets, and deep ReLU nets with one hidden layer.

    Deep ReLU nets with two or more hidden layers stay naive under "auto"; ``kinks="filippov"`` asks for exact
    kinks explicitly. Their crossings are all exact restarts (no soft crossings), so where crossings crowd exact
    kinks cost far more than naive stepping: digits 0 vs 1 with ``DeepReLU(64, [16, 16])``, gradient flow to
    log t = 0 at rtol 1e-5, 5,121 crossings, 59,888 RHS evaluations and 73 s CPU against naive's 1,527 and 0.9 s
    (1.6e-4 apart). Under p-power potentials with p < 2 a weight at 0 makes the surfaces through it degenerate
    (docs/kinks.md).
    """
    if isinstance(model, DeepReLU):
        return len(model.widths) == 1
    return isinstance(model, AbstractPiecewiseLinearTwoLayer)
