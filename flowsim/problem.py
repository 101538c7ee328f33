"""Shared set-up of a run (flow or discrete): resolve the potential, loss and data, place them on a device,
build θ₀, and pick a thread count; and the checks of the arguments the entry points share (solver settings,
``active_threshold``). Used by :func:`flowsim.simulate`, :func:`flowsim.discrete.mirror_descent` and
:func:`flowsim.ensemble.simulate_ensemble` so that they validate their inputs the same way.
"""

from __future__ import annotations

import contextlib
import numbers
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .data import Dataset, make_dataset
from .device import resolve_device, resolve_threads
from .errors import InvalidDataError, InvalidParameterError, integer_argument
from .flow import TIME_MODES
from .guards import check_all_finite
from .losses import AbstractLoss, get_loss
from .models import AbstractModel
from .potentials import AbstractPotential, get_potential
from .solvers import ADAPTIVE_METHODS, AUTO_METHOD, STIFF_METHODS
from .solvers.select import check_tolerances

__all__ = [
    "Problem",
    "prepare_problem",
    "as_potential",
    "as_dataset",
    "num_threads",
    "integer_argument",
    "check_solver_arguments",
    "check_active_threshold",
]


def as_potential(potential: str | AbstractPotential | dict) -> AbstractPotential:
    """A potential object from an object, a name, or a dict ``{"name": ..., **params}``.

    Raises:
        InvalidParameterError: unknown name or invalid parameters (from :func:`get_potential`), a dict
            without ``"name"``, or a bare name of a potential that needs parameters (the message shows the dict).
    """
    if isinstance(potential, AbstractPotential):
        return potential
    if isinstance(potential, dict):
        params = dict(potential)
        if "name" not in params:
            raise InvalidParameterError(
                f"a potential given as a dict needs its 'name', got keys {sorted(params)}: e.g. "
                "{'name': 'hyperbolic_entropy', 'beta': 0.1}"
            )
        name = params.pop("name")
        return get_potential(name, **params)
    return _named_potential(str(potential))


def _named_potential(name: str) -> AbstractPotential:
    """A built-in potential from its bare name; one that needs parameters gets a message showing how to pass them
    with the name (a bare name cannot carry them)."""
    try:
        return get_potential(name)
    except InvalidParameterError as err:
        if " needs " not in str(err):  # (an unknown name: its message lists the valid ones)
            raise
        raise InvalidParameterError(
            f"{err}. A name alone carries no parameters: pass the potential as a dict, "
            f"{{'name': {name!r}, <parameter>: <value>}} (e.g. {{'name': 'hyperbolic_entropy', 'beta': 0.05}}), "
            "or as an object (e.g. flowsim.potentials.HyperbolicEntropy(beta=0.05))"
        ) from err


def as_dataset(data: Dataset | tuple) -> Dataset:
    """A :class:`Dataset` from a Dataset or an ``(X, y)`` pair (validated by :func:`make_dataset`).

    Raises:
        InvalidParameterError: for anything else; InvalidDataError: for bad arrays.
    """
    if isinstance(data, Dataset):
        return data
    if isinstance(data, tuple | list) and len(data) == 2:
        return make_dataset(data[0], data[1])
    raise InvalidParameterError(
        f"data must be a flowsim Dataset or an (X, y) pair, got {type(data).__name__}; "
        "see flowsim.data.load_dataset or flowsim.data.make_dataset"
    )


def check_solver_arguments(
    time: str, method: str, rtol: float, atol: float, max_steps: int
) -> tuple[float, float, int]:
    """``rtol``, ``atol`` as floats and ``max_steps`` as an int, as every flow run takes them.

    Raises:
        InvalidParameterError: an unknown time mode or method, bad tolerances
            (:func:`flowsim.solvers.select.check_tolerances`), or ``max_steps`` not an integer ≥ 1 (``1e6`` is
            accepted, ``"10"`` and ``10.5`` are not: :func:`flowsim.errors.integer_argument`).
    """
    if time not in TIME_MODES:
        raise InvalidParameterError(f"time must be one of {TIME_MODES}, got {time!r}")
    if method not in ADAPTIVE_METHODS + STIFF_METHODS + (AUTO_METHOD,):
        raise InvalidParameterError(
            f"method {method!r} is not an adaptive solver; choose an explicit torchdiffeq method "
            f"{ADAPTIVE_METHODS}, an implicit (stiff) scipy method {STIFF_METHODS} for long log-time horizons, or "
            f"{AUTO_METHOD!r} (dopri5, then radau once its steps stop growing)"
        )
    rtol, atol = check_tolerances(rtol, atol)
    return rtol, atol, integer_argument("max_steps", max_steps, "max_steps=1_000_000", minimum=1)


def check_active_threshold(value: object) -> None:
    """Raises:
    InvalidParameterError: ``active_threshold`` not a number in [0, 1] (a fraction of the largest neuron mass)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) <= 1.0:
        raise InvalidParameterError(
            f"active_threshold must be a number in [0, 1], the fraction of the largest neuron mass above which a "
            f"neuron counts as active (e.g. active_threshold=1e-2), got {value!r}"
        )


@contextlib.contextmanager
def num_threads(n: int | None):
    """Temporarily set torch's intra-op thread count ``n`` ≥ 1 (None: leave it)."""
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


@dataclass
class Problem:
    """A validated run set-up: potential, loss, data on the device, initial θ₀ `(p,)` and thread count."""

    potential: AbstractPotential
    loss: AbstractLoss
    dataset: Dataset
    X: Tensor
    y: Tensor
    theta0: Tensor
    threads: int | None
    device: torch.device


def prepare_problem(
    model: AbstractModel,
    data: Dataset | tuple,
    potential: str | AbstractPotential | dict,
    loss: str | AbstractLoss,
    *,
    theta0: Any = None,
    init_scale: float = 1.0,
    seed: int = 0,
    device: str | torch.device | None = None,
    threads: int | str | None = "auto",
) -> Problem:
    """Validate and resolve the inputs shared by flow and discrete runs.

    Args:
        model: a flowsim model; data: Dataset or (X, y); potential, loss: objects or names.
        theta0: initial parameters `(p,)`; default ``model.init(scale=init_scale, seed=seed)``.
        device: torch device, or "auto" (CUDA when present and n·p is large, :mod:`flowsim.device`);
            default: the data's device.
        threads: "auto" (1 thread on the CPU when n·p ≤ 2e6: small problems are op-overhead bound), an int ≥ 1
            (``2.0`` too), or None (leave torch's setting); :func:`flowsim.device.resolve_threads`.

    Raises:
        InvalidParameterError: not a flowsim model, wrong θ₀ shape, NaN/inf in θ₀, unknown potential/loss,
            ``threads`` not "auto", None or an int ≥ 1.
        InvalidDataError: bad data, or a feature count different from ``model.input_dim``.
    """
    if not isinstance(model, AbstractModel):
        raise InvalidParameterError(
            f"model must be a flowsim model (e.g. flowsim.models.TwoLayerReLU(d, m)), got {type(model).__name__}"
        )
    pot = as_potential(potential)
    loss_fn = get_loss(loss)
    dataset = as_dataset(data)
    if dataset.num_classes is not None:
        raise InvalidDataError(
            f"{dataset.name!r} has labels 0..{dataset.num_classes - 1}; the flow and mirror_descent take labels ±1. "
            "Use flowsim.minibatch.minibatch_mirror_descent with a K-output model, or, for a linear model, the "
            "binary data flowsim.analysis.references.kesler_rows(X, y) (the same gradient flow)"
        )
    if dataset.d != model.input_dim:
        raise InvalidDataError(
            f"the data have d = {dataset.d} features but the model expects input_dim = {model.input_dim}; "
            "build the model with the data's dimension"
        )
    dev = resolve_device(device, work=dataset.n * model.num_params, default=dataset.X.device)
    X = dataset.X.to(device=dev, dtype=torch.float64)
    y = dataset.y.to(device=dev, dtype=torch.float64)
    if theta0 is None:
        theta = model.init(scale=init_scale, seed=seed, dtype=torch.float64, device=dev)
    else:
        theta = torch.as_tensor(theta0, dtype=torch.float64, device=dev).clone()
    if theta.shape != (model.num_params,):
        raise InvalidParameterError(
            f"theta0 must have shape ({model.num_params},) for {model!r}, got {tuple(theta.shape)}"
        )
    check_all_finite(theta, "theta0", "Pass a finite θ₀, or theta0=None for model.init(scale=init_scale, seed=seed).")
    n_threads = resolve_threads(threads, work=X.shape[0] * model.num_params, device=dev)
    return Problem(pot, loss_fn, dataset, X, y, theta, n_threads, dev)
