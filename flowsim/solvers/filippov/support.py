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

    Deep ReLU nets with two or more hidden layers stay naive under "auto": a data point that would slide in two
    hidden layers at once (not handled) stops most such runs early; ``kinks="filippov"`` asks for it explicitly.
    """
    if isinstance(model, DeepReLU):
        return len(model.widths) == 1
    return isinstance(model, AbstractPiecewiseLinearTwoLayer)
