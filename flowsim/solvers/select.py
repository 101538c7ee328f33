"""The choice of integration driver: one rule for ``kinks="auto"|"naive"|"filippov"`` and the method.

Used by :func:`flowsim.simulate` (one driver per run or checkpoint segment) and
:func:`flowsim.ensemble.simulate_ensemble` (batched naive members or one Filippov run per member), so both
accept and reject the same combinations with the same messages.
"""

from __future__ import annotations

from ..errors import InvalidParameterError, positive_real
from ..models import AbstractModel
from . import (
    ADAPTIVE_METHODS,
    AUTO_METHOD,
    STIFF_METHODS,
    FilippovDriver,
    ImplicitFilippovDriver,
    SmoothDriver,
    StiffDriver,
    auto_filippov,
    supports,
)
from .auto import EXPLICIT_METHOD, AutoDriver
from .base import AbstractDriver

__all__ = ["KINKS_MODES", "check_kinks_mode", "check_tolerances", "resolve_kinks", "make_driver"]

KINKS_MODES = ("auto", "naive", "filippov")


def check_kinks_mode(kinks: str) -> None:
    """Raises:
    InvalidParameterError: if ``kinks`` is not one of :data:`KINKS_MODES`."""
    if kinks not in KINKS_MODES:
        raise InvalidParameterError(f"kinks must be one of {KINKS_MODES}, got {kinks!r}")


def check_tolerances(rtol: float, atol: float) -> tuple[float, float]:
    """``rtol`` and ``atol`` as floats.

    Raises:
        InvalidParameterError: if ``rtol`` or ``atol`` is not a positive finite number (a string, a bool, None,
            NaN, ≤ 0), or ``rtol`` ≥ 1 (a relative error as large as the state itself: no accuracy is asked for).
    """
    rtol = positive_real("rtol", rtol, "rtol=1e-8")
    atol = positive_real("atol", atol, "atol=1e-10")
    if rtol >= 1:
        raise InvalidParameterError(
            f"rtol = {rtol} allows errors as large as the state itself; use rtol < 1 (typically 1e-8 to 1e-5)"
        )
    return rtol, atol


def resolve_kinks(model: AbstractModel, kinks: str) -> str:
    """The kink handling ``model`` gets under an explicit Runge–Kutta method: "naive" or "filippov".

    "auto" is "filippov" for models with kinks that :func:`flowsim.solvers.filippov.auto_filippov` picks
    (two-layer ReLU / leaky ReLU, deep ReLU) and "naive" otherwise (smooth models, other models with kinks).

    Raises:
        InvalidParameterError: an unknown mode, or "filippov" for a smooth or unsupported model.

    Example:
        >>> from flowsim.models import Linear, TwoLayerReLU
        >>> resolve_kinks(Linear(3), "auto"), resolve_kinks(TwoLayerReLU(3, 4), "auto")
        ('naive', 'filippov')
    """
    check_kinks_mode(kinks)
    if kinks == "auto":
        return "filippov" if model.has_kinks and auto_filippov(model) else "naive"
    if kinks == "filippov":
        if not model.has_kinks:
            raise InvalidParameterError(
                f"kinks='filippov' needs a model with ReLU kinks; {model!r} is smooth: use kinks='naive'"
            )
        if not supports(model):
            raise InvalidParameterError(
                f"kinks='filippov' supports two-layer ReLU/leaky-ReLU models and deep ReLU models; "
                f"{type(model).__name__} is not supported: use kinks='naive'"
            )
    return kinks


def make_driver(
    model: AbstractModel, kinks: str, method: str, rtol: float, atol: float, max_steps: int, options: dict | None
) -> AbstractDriver:
    """The driver for one run: implicit scipy stepping for a stiff ``method`` (radau with exact kinks where
    :func:`resolve_kinks` gives "filippov" — ``kinks="auto"`` or ``"filippov"`` — else through them; bdf and lsoda
    always through them), torchdiffeq stepping with the kink handling of
    :func:`resolve_kinks` for an explicit one, and for ``method="auto"`` dopri5 handing over to radau once its
    steps stop growing in log-time (:class:`~flowsim.solvers.auto.AutoDriver`; same kink handling).

    Raises:
        InvalidParameterError: an unknown ``kinks`` mode, ``kinks="filippov"`` with a stiff method other than
            radau or a smooth or unsupported model, or options the driver rejects.
    """
    check_kinks_mode(kinks)
    if method == AUTO_METHOD:
        return _auto_driver(model, kinks, rtol, atol, max_steps, options)
    if method in STIFF_METHODS:  # bdf and lsoda integrate straight through kinks; radau keeps them exact
        if method == "radau" and kinks == "auto" and resolve_kinks(model, kinks) == "filippov":
            # (integrated through, a sliding neuron stalls Radau: a two-layer ReLU net, n = 12, width 4, stuck at
            # log t ≈ −0.42 after 20,000 steps; exact kinks reach log t = 1e6 in a few thousand evaluations)
            return ImplicitFilippovDriver(model, method, rtol, atol, max_steps, options)
        if kinks == "filippov":
            if method != "radau":
                raise InvalidParameterError(
                    f"kinks='filippov' needs method='radau' or an explicit torchdiffeq method {ADAPTIVE_METHODS}; "
                    f"the stiff method {method!r} integrates through kinks: use method='radau' or kinks='naive'"
                )
            resolve_kinks(model, kinks)
            return ImplicitFilippovDriver(model, method, rtol, atol, max_steps, options)
        return StiffDriver(method, rtol, atol, max_steps, options)
    if resolve_kinks(model, kinks) == "filippov":
        return FilippovDriver(model, method, rtol, atol, max_steps, options)
    return SmoothDriver(method, rtol, atol, max_steps, options)


def _auto_driver(model, kinks: str, rtol: float, atol: float, max_steps: int, options: dict | None) -> AutoDriver:
    """``method="auto"``: dopri5 with the run's kink handling (and ``options``), then radau with the same."""
    explicit = make_driver(model, kinks, EXPLICIT_METHOD, rtol, atol, max_steps, options)
    exact = explicit.kinks == "filippov"

    def make_implicit(opts: dict, steps: int):
        if exact:
            return ImplicitFilippovDriver(model, "radau", rtol, atol, steps, opts)
        return StiffDriver("radau", rtol, atol, steps, opts)

    return AutoDriver(explicit, make_implicit, max_steps)
