"""Ensembles: K mirror flows of one experiment family integrated as one batched computation.

Members share the model architecture, the data, the loss, the save grid and the solver tolerances; they
differ in initialization (seed, scale, explicit θ₀) and potential (a class with per-member parameters such as
β or p, or different classes). The dual states are stacked into one `(K, p)` tensor and every right-hand
side is one batched evaluation: the model's batched forward and its vector–Jacobian product
(:meth:`~flowsim.models.AbstractModel.forward_and_vjp`), and the inverse mirror maps with per-member
parameters broadcast as `(K, 1)` tensors (closed forms for Euclidean, hyperbolic entropy and p-power;
other potentials are evaluated group by group).

The integrator is a batched Dormand–Prince 5(4) with **per-member** times, step sizes, accept/reject
decisions and statuses (:class:`flowsim.solvers.batched.BatchedDopri5`): a member whose field turns
non-finite or whose step underflows is frozen with its own status and partial trajectory while the others go
on. ``step="shared"`` gives every active member the smallest proposed step instead; see
``benchmarks/ensembles.py`` for the comparison.

ReLU kinks (``kinks``, same meaning as :func:`flowsim.simulate`): with ``"naive"`` the batched integrator
steps straight through the switching surfaces. Members that need Filippov handling (``"filippov"``, or
``"auto"`` on a model with kinks that :func:`flowsim.solvers.filippov.supports`) are **not batched**: each is run on
its own by ``flowsim.simulate(..., kinks="filippov")``, one after the other, and returned in member order
with the same :class:`Trajectory` fields and statuses (plus the driver's event statistics). The
event-driven Filippov driver cannot share steps across members: every member has its own switching events
(crossings, sliding entries and exits), at which its integration stops, switches the activation pattern and
restarts, so a common step sequence does not exist. Members share the model, so in practice a whole
ensemble takes one path or the other: batched for smooth models (and for ``"naive"``), sequential under
Filippov handling for two-layer ReLU / leaky-ReLU models with ``"auto"`` or ``"filippov"``.

References:
    Lienen & Günnemann, "torchode: A Parallel ODE Solver for PyTorch", NeurIPS 2022 workshop,
    arXiv:2210.12375 (per-instance step sizes and statuses).
"""

from __future__ import annotations

import itertools
import time as _time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .data import Dataset
from .device import check_threads, resolve_device, resolve_threads
from .errors import InvalidDataError, InvalidParameterError
from .flow import MirrorFlowField
from .guards import (
    DEFAULT_SEPARATION_LOG_T,
    LINEAR_IN_X,
    BatchedSeparationMonitor,
    check_all_finite,
    check_explicit_work,
    check_finite_start,
    check_separable_starts,
)
from .losses import AbstractLoss, get_loss
from .models import AbstractModel
from .potentials import AbstractPotential, Euclidean, HyperbolicEntropy, PPower
from .problem import as_dataset, as_potential, check_active_threshold, check_solver_arguments, num_threads
from .results import Status, Trajectory
from .results.recorder import Recorder, diagnostics_function
from .results.trajectory import interrupted_message
from .simulation import simulate
from .solvers import ADAPTIVE_METHODS, AUTO_METHOD, STIFF_METHODS
from .solvers.batched import STEP_MODES, BatchedDopri5
from .solvers.select import check_kinks_mode, make_driver, resolve_kinks
from .timegrid import log_t_from_s, save_grid_s, t_from_s

#: methods an ensemble runs: dopri5 batched (naive kinks), the others member by member through simulate
ENSEMBLE_METHODS = frozenset(ADAPTIVE_METHODS) | frozenset(STIFF_METHODS) | {AUTO_METHOD}

__all__ = ["Member", "members_grid", "simulate_ensemble", "resolve_kinks", "BatchedMirrorFlowField", "STEP_MODES"]


@dataclass(frozen=True)
class Member:
    """One member of an ensemble.

    Attributes:
        potential: a potential object, a name or a dict ``{"name": ..., **params}``.
        init_scale: initialization scale for ``model.init`` (ignored with ``theta0``).
        seed: initialization seed (ignored with ``theta0``).
        theta0: explicit initial parameters, shape `(p,)`, or None.
        label: a name for tables and plots (default: built from the fields).
    """

    potential: Any = "euclidean"
    init_scale: float = 1.0
    seed: int = 0
    theta0: Any = None
    label: str | None = None


def members_grid(
    potentials: Sequence[Any] = ("euclidean",),
    init_scales: Sequence[float] = (1.0,),
    seeds: Sequence[int] = (0,),
) -> list[Member]:
    """The Cartesian product potentials × init_scales × seeds as a list of :class:`Member` (potential slowest).

    Example:
        >>> [m.seed for m in members_grid(["euclidean"], [1.0], [0, 1, 2])]
        [0, 1, 2]
    """
    return [
        Member(potential=p, init_scale=float(s), seed=int(k))
        for p, s, k in itertools.product(list(potentials), list(init_scales), list(seeds))
    ]


# ------------------------------------------------------------------------------------------------------------
# batched inverse mirror map with per-member parameters
# ------------------------------------------------------------------------------------------------------------


def _closed_form_inverse(cls: type, params: Tensor | None, z: Tensor) -> Tensor:
    """∇Φ*(z) of a closed-form potential class with per-row parameters `params` of shape `(K, 1)`."""
    if cls is Euclidean:
        return z
    if cls is HyperbolicEntropy:
        return params * torch.sinh(z)  # β sinh z
    if cls is PPower:
        return torch.sign(z) * z.abs().pow(params)  # sign(z)|z|^{1/(p−1)}
    raise AssertionError(cls)


def _closed_form_param(potential: AbstractPotential) -> float:
    if isinstance(potential, HyperbolicEntropy):
        return potential.beta
    if isinstance(potential, PPower):
        return 1.0 / (potential.p - 1.0)
    return 0.0


_CLOSED_FORM = (Euclidean, HyperbolicEntropy, PPower)


class _StackedInverseMap:
    """θ = ∇Φ*_k(z_k) row by row for K members with their own potentials, in as few torch calls as possible.

    Members are grouped: one group per closed-form class (parameters as a `(K_g, 1)` tensor) and one per
    distinct other potential (its own ``inverse_mirror_map`` on its rows). One group: no scatter at all.
    """

    def __init__(self, potentials: Sequence[AbstractPotential], dtype: torch.dtype, device: torch.device):
        keys, self._members = [], []
        for pot in potentials:
            key = type(pot) if type(pot) in _CLOSED_FORM else (type(pot), repr(pot))
            if key not in keys:
                keys.append(key)
                self._members.append(pot)
        self._keys = keys
        self.group = torch.tensor([keys.index(self._key(p)) for p in potentials], device=device)
        self.params = torch.tensor([_closed_form_param(p) for p in potentials], dtype=dtype, device=device).unsqueeze(
            -1
        )
        self._cache: dict[tuple[int, ...] | None, list[tuple[int, Tensor | None, Tensor | None]]] = {}

    @staticmethod
    def _key(pot: AbstractPotential):
        return type(pot) if type(pot) in _CLOSED_FORM else (type(pot), repr(pot))

    def _plan(self, rows: Tensor | None):
        key = None if rows is None else tuple(rows.tolist())
        plan = self._cache.get(key)
        if plan is None:
            group = self.group if rows is None else self.group[rows]
            params = self.params if rows is None else self.params[rows]
            plan = []
            for g in range(len(self._keys)):
                pos = (group == g).nonzero().squeeze(-1)
                if pos.numel() == 0:
                    continue
                whole = pos.numel() == group.numel()
                plan.append((g, None if whole else pos, params if whole else params[pos]))
            if len(self._cache) > 256:
                self._cache.clear()
            self._cache[key] = plan
        return plan

    def __call__(self, z: Tensor, rows: Tensor | None = None) -> Tensor:
        plan = self._plan(rows)
        out = None if len(plan) == 1 else torch.empty_like(z)
        for g, pos, params in plan:
            key, pot = self._keys[g], self._members[g]
            zg = z if pos is None else z.index_select(0, pos)
            theta = _closed_form_inverse(key, params, zg) if key in _CLOSED_FORM else pot.inverse_mirror_map(zg)
            if out is None:
                return theta
            out.index_copy_(0, pos, theta)
        return out


class BatchedMirrorFlowField:
    """Mirror-flow right-hand side for K members at once: ``field(tau, z, rows)`` with z of shape `(k, p)`.

    ``rows`` (int64, `(k,)`) says which members the rows of ``z`` are (None: all K, in order); ``tau`` is the
    integration time per row, shape `(k, 1)` (log-time s for ``time="log"``). The members' fields are
    independent: row r of the output depends on row r of ``z`` only.

    Args:
        model: the model (batched forward and ``forward_and_vjp``).
        potentials: one potential per member.
        loss: the margin loss.
        X: inputs `(n, d)`; y: labels ±1 `(n,)`; float64, on the run's device.
        time: "log" or "linear".
    """

    def __init__(
        self,
        model: AbstractModel,
        potentials: Sequence[AbstractPotential],
        loss: AbstractLoss,
        X: Tensor,
        y: Tensor,
        *,
        time: str = "log",
    ) -> None:
        self.model = model
        self.potentials = list(potentials)
        self.loss = loss
        self.X = X
        self.y = y
        self.log_time = time == "log"
        self.inverse_mirror_map = _StackedInverseMap(self.potentials, X.dtype, X.device)
        self.nfe = 0

    def __call__(self, tau: Tensor, z: Tensor, rows: Tensor | None = None) -> Tensor:
        self.nfe += 1
        theta = self.inverse_mirror_map(z, rows)
        f, vjp = self.model.forward_and_vjp(theta, self.X)
        log_c = self.loss.log_neg_derivative(self.y * f)
        if self.log_time:
            log_c = log_c + tau
        return vjp(torch.exp(log_c) * self.y)


# ------------------------------------------------------------------------------------------------------------
# entry point
# ------------------------------------------------------------------------------------------------------------


def _member_label(member: Member, potential: AbstractPotential) -> str:
    if member.label is not None:
        return member.label
    params = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in potential.params().items())
    init = "theta0" if member.theta0 is not None else f"scale={member.init_scale:g}, seed={member.seed}"
    return f"{potential.name}({params}) {init}" if params else f"{potential.name} {init}"


def _member_name(i: int, member: Member, potential: AbstractPotential) -> str:
    """How error messages name member ``i``: "member 2 (euclidean scale=1, seed=0)"."""
    return f"member {i} ({_member_label(member, potential)})"


def _member_config(
    model, pot, loss_fn, dataset, solver: dict, s_grid, member: Member, K: int, i: int, dev, path: str
) -> dict:
    """The trajectory config of member ``i`` (the batched path's; also used for members never started)."""
    return {
        "model": model.config(),
        "potential": {"name": pot.name, **pot.params()},
        "loss": loss_fn.name,
        "data": {"name": dataset.name, "n": dataset.n, "d": dataset.d, **dict(dataset.info)},
        "solver": solver,
        "horizon": {"log_t_end": float(log_t_from_s(s_grid[-1])), "n_save": int(s_grid.size)},
        "init": {"scale": member.init_scale, "seed": member.seed, "theta0_given": member.theta0 is not None},
        "ensemble": {"size": K, "index": i, "label": _member_label(member, pot), "device": str(dev), "path": path},
    }


def simulate_ensemble(
    model: AbstractModel,
    data: Dataset | tuple,
    members: Sequence[Member | dict],
    *,
    loss: str | AbstractLoss = "exponential",
    log_t_end: float | None = 10.0,
    n_save: int = 200,
    log_t_start: float | None = None,
    save_log_t: Any = None,
    time: str = "log",
    method: str = "dopri5",
    rtol: float = 1e-8,
    atol: float = 1e-10,
    max_steps: int = 5_000_000,
    step: str = "per_member",
    solver_options: dict | None = None,
    diagnostics: bool = True,
    active_threshold: float = 1e-2,
    threads: int | str | None = "auto",
    device: str | torch.device | None = "auto",
    kinks: str = "auto",
    allow_nonseparable: bool = False,
    separation_log_t: float | None = DEFAULT_SEPARATION_LOG_T,
) -> list[Trajectory]:
    """Integrate the mirror flows of K members, batched where possible; one :class:`Trajectory` each.

    Same conventions as :func:`flowsim.simulate` (log-time, sum loss, horizon in log t, float64); the
    members differ in potential and initialization (:class:`Member`). Each member gets its own status,
    stats and partial trajectory: a member that diverges (non-finite field, step underflow) or runs out of
    steps is frozen and reported while the others finish.

    What is batched: with naive kink handling (smooth models; ``kinks="naive"``; ``"auto"`` on models
    Filippov handling does not support) all members are one computation, a batched dopri5 with per-member
    step sizes. What is not: under Filippov handling (``kinks="filippov"``, or ``"auto"`` on two-layer ReLU /
    leaky-ReLU models) each member is run alone by ``flowsim.simulate(..., kinks="filippov")``, one after
    the other, because the event-driven Filippov driver stops, switches and restarts at every member's own
    switching events and so cannot share steps across members. Those members' results equal per-member
    ``simulate`` calls exactly; the cost is K sequential runs (no batching speed-up). So do members of an
    ensemble with a method other than dopri5 (radau, auto, ...; path "sequential").

    Args:
        model: the model shared by all members.
        data: a :class:`~flowsim.data.Dataset` or an ``(X, y)`` pair.
        members: :class:`Member` objects or dicts of their fields (``{"potential": ..., "seed": ...}``).
        loss, log_t_end, n_save, log_t_start, save_log_t, time, rtol, atol, max_steps, diagnostics,
            active_threshold: as in :func:`flowsim.simulate` (``max_steps`` per member).
        method: "dopri5" (default; the batched integrator on the naive-kinks path) or any method of
            :func:`flowsim.simulate` ("radau", "auto", ...: members run one by one, path "sequential").
        step: "per_member" (default: own step size, accept/reject per member) or "shared" (every active
            member takes the smallest proposed step). Batched path only.
        solver_options: ``{"first_step": h}`` (initial step in τ for every member).
        threads: "auto" (one thread for small CPU problems), None or an int. Under Filippov handling it is
            passed to each ``simulate`` call.
        device: "auto" (CUDA when present and n·p·K is large, see :mod:`flowsim.device`; n·p under
            Filippov handling, which runs one member at a time), a device, or None (the data's device).
        kinks: "auto" (default), "filippov" or "naive", as in :func:`flowsim.simulate` (see
            :func:`resolve_kinks`).
        allow_nonseparable: as in :func:`flowsim.simulate`: by default a model linear in x refuses data that an
            LP finds not linearly separable through the origin, or not by the weights a member's flow can reach
            (a :class:`~flowsim.models.DiagonalLinear` member whose factors start equal keeps its weights' signs:
            :func:`flowsim.guards.check_separable_starts`); checked for every member before any member runs.
        separation_log_t: as in :func:`flowsim.simulate`, for members under Filippov handling (each a
            ``simulate`` run) and batched members alike: past it, a member whose data are not separated
            stops with status ``not_separable``.

    Returns:
        One trajectory per member, in order. Batched path: ``stats`` hold the member's ``nfe`` (batched
        evaluations it took part in), ``n_accepted``, ``n_rejected``, ``n_nonfinite_evals``, ``last_dt`` and
        the batch's ``batch_nfe``, ``batch_steps`` and ``wall_time`` (whole batch). Filippov path: the
        member's own ``simulate`` stats (``nfe``, ``n_crossings``, ``n_sliding_entries``, ``sliding_time``,
        ..., ``wall_time`` of that member's run). Both add ``ensemble_size``, ``ensemble_index`` and
        ``ensemble_path`` ("batched", "sequential_filippov" or "sequential"); ``config["ensemble"]`` says the same. If a
        Filippov member is interrupted (Ctrl-C), the members after it are not started: they are returned
        with their initial point only and status ``interrupted``.

    Raises:
        InvalidParameterError: empty ``members``, unknown fields, an unknown method, an unknown
            ``kinks`` mode or ``kinks="filippov"`` for a smooth or unsupported model, bad tolerances or step
            mode, a wrong ``theta0`` shape, NaN/inf in a member's θ₀ or ∇Φ(θ₀) (the member named); as
            :func:`flowsim.simulate`, before any work: a count (``n_save``, ``max_steps``, ``threads``) that is not
            an integer (5.0 is accepted, 5.5 and "5" are not) or is below its minimum, or an ``active_threshold``
            that is not a number in [0, 1].
        HorizonError, InvalidDataError: as :func:`flowsim.simulate` (the same up-front checks, :mod:`flowsim.guards`:
            a horizon out of reach of dopri5's stability-limited steps, data a model linear in x cannot separate, or
            cannot separate from a member's θ₀: the message names the member).
    """
    members, rtol, atol, max_steps = _check_ensemble(
        model, members, kinks, method, step, time, rtol, atol, max_steps, active_threshold, threads, solver_options
    )
    opts = dict(solver_options or {})
    path_kinks = resolve_kinks(model, kinks)
    K = len(members)
    potentials = [as_potential(m.potential) for m in members]
    loss_fn = get_loss(loss)
    dataset = as_dataset(data)
    if dataset.d != model.input_dim:
        raise InvalidDataError(
            f"the data have d = {dataset.d} features but the model expects input_dim = {model.input_dim}"
        )
    s_grid = save_grid_s(time, log_t_end, save_log_t, n_save, log_t_start)
    check_explicit_work(method, time, s_grid, int(max_steps))
    if method != "dopri5":  # the kink handling simulate gives this method (radau keeps kinks exact, bdf does not)
        path_kinks = make_driver(model, kinks, method, rtol, atol, int(max_steps), None).kinks
    sequential = path_kinks == "filippov" or method != "dopri5"  # (the batched integrator is dopri5)
    work = dataset.n * model.num_params * (1 if sequential else K)
    dev = resolve_device(device, work=work, default=dataset.X.device)
    theta0 = _initial_thetas(model, members, dev)
    _check_starts(model, members, potentials, theta0, loss_fn, dataset, time)
    names = [_member_name(i, m, pot) for i, (m, pot) in enumerate(zip(members, potentials, strict=True))]
    check_separable_starts(model, dataset, allow_nonseparable, list(zip(theta0, potentials, strict=True)), names)
    if sequential:
        simulate_kwargs = dict(
            log_t_end=log_t_end,
            n_save=n_save,
            log_t_start=log_t_start,
            save_log_t=save_log_t,
            time=time,
            method=method,
            rtol=rtol,
            atol=atol,
            max_steps=max_steps,
            solver_options=opts,
            allow_nonseparable=allow_nonseparable,
            separation_log_t=separation_log_t,
        )
        return _sequential_members(
            kinks,
            "sequential_filippov" if path_kinks == "filippov" else "sequential",
            model,
            dataset,
            members,
            potentials,
            theta0,
            loss_fn,
            s_grid,
            dev,
            threads,
            diagnostics,
            active_threshold,
            simulate_kwargs,
        )
    batched = dict(step=step, time=time, rtol=rtol, atol=atol, max_steps=int(max_steps), options=opts)
    guard = not (allow_nonseparable or separation_log_t is None or isinstance(model, LINEAR_IN_X))
    n_threads = resolve_threads(threads, work=work, device=dev)
    return _batched_members(
        model, dataset, members, potentials, theta0, loss_fn, s_grid, dev, n_threads, diagnostics, active_threshold,
        batched, separation_log_t if guard else None,
    )  # fmt: skip


def _batched_members(
    model, dataset, members, potentials, theta0, loss_fn, s_grid, dev, n_threads, diagnostics, active_threshold,
    batched: dict, separation_log_t: float | None,
) -> list[Trajectory]:  # fmt: skip
    """The members integrated together by :class:`BatchedDopri5` (naive kinks), one trajectory each.

    ``batched``: the ensemble's ``step``, ``time``, ``rtol``, ``atol``, ``max_steps`` and solver ``options``;
    ``separation_log_t``: where the batched separation monitor stops members whose data are not separated (None:
    no monitor)."""
    K, time, opts = len(members), batched["time"], batched["options"]
    solver = {
        "kinks": "naive",
        "method": "dopri5",
        "rtol": batched["rtol"],
        "atol": batched["atol"],
        "max_steps": batched["max_steps"],
        "time": time,
        "options": opts,
        "ensemble_step": batched["step"],
    }
    X = dataset.X.to(device=dev, dtype=torch.float64)
    y = dataset.y.to(device=dev, dtype=torch.float64)
    field = BatchedMirrorFlowField(model, potentials, loss_fn, X, y, time=time)
    stepper = BatchedDopri5(
        field, batched["rtol"], batched["atol"], batched["max_steps"], batched["step"], opts.get("first_step")
    )
    if separation_log_t is not None:
        stepper.monitor = BatchedSeparationMonitor(field, loss_fn, time, separation_log_t, K)
    z0 = torch.stack([pot.mirror_map(th) for pot, th in zip(potentials, theta0, strict=True)])
    tau_grid = s_grid if time == "log" else t_from_s(s_grid)
    with num_threads(n_threads), torch.no_grad():
        saved, interrupted, wall = _integrate_batched(stepper, z0, tau_grid)
        trajectories = []
        for i, (m, pot) in enumerate(zip(members, potentials, strict=True)):
            diagnose = diagnostics_function(model, pot, loss_fn, X, y, active_threshold) if diagnostics else None
            recorder = Recorder(pot, clock=time, diagnose=diagnose)
            config = _member_config(model, pot, loss_fn, dataset, solver, s_grid, m, K, i, dev, "batched")
            trajectories.append(_batched_member(stepper, i, saved, tau_grid, interrupted, wall, recorder, config))
        return trajectories


def _check_ensemble(
    model, members, kinks, method, step, time, rtol, atol, max_steps, active_threshold, threads, solver_options
) -> tuple[list[Member], float, float, int]:
    """The members as :class:`Member` objects, ``rtol``, ``atol`` as floats and ``max_steps`` as an int, after
    checking the ensemble's arguments as :func:`flowsim.simulate` checks its own
    (:func:`flowsim.problem.check_solver_arguments`, :func:`~flowsim.problem.check_active_threshold`,
    :func:`flowsim.device.check_threads`).

    Raises:
        InvalidParameterError: see :func:`simulate_ensemble`.
    """
    check_kinks_mode(kinks)
    if method not in ENSEMBLE_METHODS:
        raise InvalidParameterError(
            f"unknown method {method!r} for an ensemble; one of {sorted(ENSEMBLE_METHODS)} (dopri5 is batched "
            "across members on the naive-kinks path; the others run member by member)"
        )
    if step not in STEP_MODES:
        raise InvalidParameterError(f"step must be one of {STEP_MODES}, got {step!r}")
    rtol, atol, max_steps = check_solver_arguments(time, method, rtol, atol, max_steps)
    check_active_threshold(active_threshold)
    check_threads(threads)
    unknown = sorted(set(dict(solver_options or {})) - {"first_step"})
    if unknown:
        raise InvalidParameterError(f"unknown solver option(s) {unknown} for ensembles; valid: ['first_step']")
    if not isinstance(model, AbstractModel):
        raise InvalidParameterError(f"model must be a flowsim model, got {type(model).__name__}")
    members = [m if isinstance(m, Member) else _member_from_dict(m) for m in members]
    if not members:
        raise InvalidParameterError("an ensemble needs at least one member")
    return members, rtol, atol, max_steps


def _initial_thetas(model: AbstractModel, members: list[Member], dev: torch.device) -> list[Tensor]:
    """θ₀ of each member, `(p,)` float64 on ``dev`` (its ``theta0`` or ``model.init(scale, seed)``)."""
    theta0 = []
    for i, m in enumerate(members):
        if m.theta0 is None:
            th = model.init(scale=m.init_scale, seed=m.seed, dtype=torch.float64, device=dev)
        else:
            th = torch.as_tensor(m.theta0, dtype=torch.float64, device=dev).clone()
        if th.shape != (model.num_params,):
            raise InvalidParameterError(
                f"member {i}: theta0 must have shape ({model.num_params},) for {model!r}, got {tuple(th.shape)}"
            )
        theta0.append(th)
    return theta0


def _check_starts(model, members, potentials, theta0, loss_fn, dataset: Dataset, time: str) -> None:
    """Each member's θ₀, its dual start ∇Φ(θ₀) and the model's outputs at θ₀ must be finite
    (:func:`flowsim.guards.check_finite_start`, as :func:`flowsim.simulate` checks them).

    Raises:
        InvalidParameterError: naming the member and the first non-finite entry.
    """
    X = dataset.X.to(device=theta0[0].device, dtype=torch.float64)
    y = dataset.y.to(device=theta0[0].device, dtype=torch.float64)
    for i, (m, pot, th) in enumerate(zip(members, potentials, theta0, strict=True)):
        where = _member_name(i, m, pot)
        check_all_finite(th, f"{where}: theta0", "Pass a finite θ₀, or theta0=None for model.init(scale, seed).")
        try:
            check_finite_start(pot.mirror_map(th), pot, MirrorFlowField(model, pot, loss_fn, X, y, time=time), th)
        except InvalidParameterError as e:
            raise InvalidParameterError(f"{where}: {e}") from e


def _integrate_batched(
    stepper: BatchedDopri5, z0: Tensor, tau_grid: np.ndarray
) -> tuple[Tensor, KeyboardInterrupt | None, float]:
    """Every member's save points `(K, G, p)` (NaN where not reached), the KeyboardInterrupt that stopped the
    batch (Ctrl-C, SIGTERM under flowsim run) or None, and the wall time."""
    grid = torch.as_tensor(tau_grid, dtype=torch.float64, device=z0.device)
    saved = torch.full((z0.shape[0], grid.shape[0], z0.shape[1]), float("nan"), dtype=torch.float64, device=z0.device)
    saved[:, 0] = z0
    stepper.start(z0, grid)
    interrupted = None
    start = _time.perf_counter()
    try:
        stepper.run(z0, grid, saved)
    except KeyboardInterrupt as e:
        interrupted = e
    return saved, interrupted, _time.perf_counter() - start


def _batched_member(
    stepper: BatchedDopri5, i: int, saved: Tensor, tau_grid, interrupted, wall: float, recorder, config
) -> Trajectory:
    """Member ``i``'s trajectory from the batch, built by its ``recorder``: its save points (and last accepted
    state if it stopped early), status and stats."""
    status, message = stepper.status[i], stepper.messages[i]
    if status is None:
        status = Status.INTERRUPTED if interrupted is not None else Status.FAILED
        message = interrupted_message(interrupted) if interrupted is not None else status.hint
    n_saved = int(stepper.next_save[i])
    recorder.save_rows(tau_grid[:n_saved], saved[i, :n_saved])
    if status != Status.SUCCESS:
        recorder.keep_last_state((float(stepper.t[i]), stepper.y[i]), report=False)
    stats = {
        "nfe": int(stepper.nfe[i]),
        "n_accepted": int(stepper.n_accepted[i]),
        "n_rejected": int(stepper.n_rejected[i]),
        "last_dt": float(stepper.last_dt[i]),
        "n_nonfinite_evals": int(stepper.n_nonfinite[i]),
        "batch_nfe": stepper.field.nfe,
        "batch_steps": stepper.batch_steps,
        "ensemble_size": config["ensemble"]["size"],
        "ensemble_index": i,
        "ensemble_path": "batched",
        "wall_time": wall,
        "final_log_t": recorder.final_log_t,
    }
    return recorder.trajectory(status, message, stats, config)


def _sequential_members(
    kinks: str,
    path: str,
    model: AbstractModel,
    dataset: Dataset,
    members: list[Member],
    potentials: list[AbstractPotential],
    theta0: list[Tensor],
    loss_fn: AbstractLoss,
    s_grid: np.ndarray,
    dev: torch.device,
    threads,
    diagnostics: bool,
    active_threshold: float,
    simulate_kwargs: dict,
) -> list[Trajectory]:
    """Members run one ``simulate(..., kinks=kinks)`` each, in member order: under Filippov handling (the
    event-driven drivers restart at each member's own switching events) or with a method other than dopri5 (the
    batched integrator). After an interrupted member the rest are returned unstarted (initial point only).
    """
    K = len(members)
    kw = simulate_kwargs
    solver = {
        "kinks": "filippov" if path == "sequential_filippov" else "naive",
        "method": kw["method"],
        "rtol": kw["rtol"],
        "atol": kw["atol"],
        "max_steps": int(kw["max_steps"]),
        "time": kw["time"],
        "options": dict(kw["solver_options"]),
    }
    trajectories: list[Trajectory] = []
    interrupted = False
    for i, (m, pot, th0) in enumerate(zip(members, potentials, theta0, strict=True)):
        if interrupted:
            config = _member_config(model, pot, loss_fn, dataset, solver, s_grid, m, K, i, dev, path)
            trajectories.append(
                _unstarted(model, dataset, pot, th0, loss_fn, s_grid, config, diagnostics, active_threshold)
            )
            continue
        tr = simulate(
            model,
            dataset,
            pot,
            loss=loss_fn,
            theta0=m.theta0,
            init_scale=m.init_scale,
            seed=m.seed,
            diagnostics=diagnostics,
            active_threshold=active_threshold,
            threads=threads,
            device=dev,
            kinks=kinks,
            **simulate_kwargs,
        )
        tr.stats.update({"ensemble_size": K, "ensemble_index": i, "ensemble_path": path})
        tr.config["ensemble"] = {
            "size": K,
            "index": i,
            "label": _member_label(m, pot),
            "device": str(dev),
            "path": path,
        }
        trajectories.append(tr)
        interrupted = tr.status == Status.INTERRUPTED
    return trajectories


def _unstarted(model, dataset, pot, theta0, loss_fn, s_grid, config: dict, diagnostics, active_threshold):
    """The trajectory of a member never run (an earlier member was interrupted): its initial point only."""
    X = dataset.X.to(device=theta0.device, dtype=torch.float64)
    y = dataset.y.to(device=theta0.device, dtype=torch.float64)
    theta = theta0.unsqueeze(0)
    diagnose = diagnostics_function(model, pot, loss_fn, X, y, active_threshold) if diagnostics else None
    recorder = Recorder(pot, clock="log", diagnose=diagnose)
    recorder.save_rows(s_grid[:1], pot.mirror_map(theta), theta)
    ens = config["ensemble"]
    stats = {
        "nfe": 0,
        "ensemble_size": ens["size"],
        "ensemble_index": ens["index"],
        "ensemble_path": ens["path"],
        "wall_time": 0.0,
        "final_log_t": recorder.final_log_t,
    }
    message = f"{Status.INTERRUPTED.hint} (an earlier member was interrupted; this one was not started)"
    return recorder.trajectory(Status.INTERRUPTED, message, stats, config)


def _member_from_dict(spec: dict) -> Member:
    fields = {"potential", "init_scale", "seed", "theta0", "label"}
    unknown = sorted(set(spec) - fields)
    if unknown:
        raise InvalidParameterError(f"unknown member field(s) {unknown}; valid fields are {sorted(fields)}")
    return Member(**spec)
