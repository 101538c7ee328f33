"""Errors raised by flowsim.

Every error flowsim raises on bad input is a subclass of :class:`FlowSimError`; each message says what
was wrong and how to fix it. The subclasses also derive from the matching built-in exception
(``ValueError``, ``KeyError``...) so that generic handlers keep working.
"""

from __future__ import annotations

import math
import numbers

__all__ = [
    "FlowSimError",
    "InvalidDataError",
    "InvalidParameterError",
    "ConfigError",
    "UnknownPresetError",
    "HorizonError",
    "ReferenceSolverError",
    "TrajectoryFileError",
    "RunFolderError",
    "PotentialOverflowError",
    "exception_text",
]


class FlowSimError(Exception):
    """Base class of every error flowsim raises on purpose."""


class InvalidDataError(FlowSimError, ValueError):
    """The data set is unusable: labels not ±1 (or not two classes), NaN/inf values, shape mismatch."""


class InvalidParameterError(FlowSimError, ValueError):
    """A potential, model, loss or solver parameter is out of its valid range (e.g. β ≤ 0, p ≤ 1)."""


class ConfigError(FlowSimError, ValueError):
    """A configuration (TOML file or dict) has an unknown key, a wrong type or an invalid value."""


class UnknownPresetError(ConfigError, KeyError):
    """The preset name given to ``flowsim run --preset`` is not a known preset."""

    def __str__(self) -> str:  # KeyError would otherwise print the repr of the message
        return str(self.args[0]) if self.args else ""


class HorizonError(FlowSimError, ValueError):
    """The time horizon or save grid is invalid (not increasing, non-finite, starts before 0)."""


class ReferenceSolverError(FlowSimError, RuntimeError):
    """An independent reference solver (QP, LP, SLSQP) failed or reported a non-optimal status."""


class TrajectoryFileError(FlowSimError, OSError):
    """A saved trajectory could not be read (missing files, wrong format version)."""


class RunFolderError(FlowSimError, OSError):
    """An output folder cannot be used: a file is in the way, it is not writable, another run holds it, or a
    file in it is damaged (the message names the file and what to do)."""


class PotentialOverflowError(FlowSimError, OverflowError):
    """A user potential's φ′ stops being finite (inf or NaN: an overflow in φ or in its autograd derivative) before it
    reaches a dual value z, so the inverse mirror map ∇Φ*(z) cannot be computed there; the message names the
    potential, the coordinate and where φ′ stops. A run that meets it ends with status ``failed`` (it is an
    ``OverflowError``) and keeps what it computed."""


def exception_text(e: BaseException, limit: int = 300) -> str:
    """``"<type>: <message>"`` of an exception that ends a run, for its status message: a :class:`FlowSimError`'s
    message whole (flowsim wrote it, with what to do), another's cut to ``limit`` characters (a foreign library's
    message can run to pages)."""
    text = str(e)
    if not isinstance(e, FlowSimError) and len(text) > limit:
        text = text[:limit] + " …"
    return f"{type(e).__name__}: {text}"


def positive_real(name: str, value, example: str) -> float:
    """``value`` as a float, checked to be a finite number > 0 (bool and non-numbers rejected).

    Raises:
        InvalidParameterError: otherwise, naming ``name`` and an ``example`` of a valid value.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidParameterError(f"{name} must be a positive finite number (e.g. {example}), got {value!r}")
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise InvalidParameterError(f"{name} must be a positive finite number (e.g. {example}), got {value!r}")
    return v


def integer_argument(name: str, value: object, example: str, *, minimum: int | None = None) -> int:
    """``value`` as an int: a Python or numpy integer, or an integral float such as ``5.0`` or ``1e6``.

    Args:
        name: the argument's name, for the message; example: a valid setting, e.g. ``"n_save=200"``.
        minimum: the smallest valid value (None: no lower bound checked here).

    Raises:
        InvalidParameterError: a bool, a string or other non-number, a fractional or non-finite float, or a
            value below ``minimum``; the message names ``name`` and shows ``example``.
    """
    integral = isinstance(value, numbers.Integral) or (isinstance(value, numbers.Real) and float(value).is_integer())
    if isinstance(value, bool) or not integral or (minimum is not None and int(value) < minimum):
        bound = "" if minimum is None else f" ≥ {minimum}"
        raise InvalidParameterError(f"{name} must be an integer{bound} (e.g. {example}), got {value!r}")
    return int(value)
