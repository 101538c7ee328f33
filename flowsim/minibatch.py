"""Full-batch and seeded mini-batch (stochastic) mirror descent for larger networks and multi-class labels.

The iteration is mirror descent in dual coordinates, as :func:`flowsim.discrete.mirror_descent`,

    z_{k+1} = z_k − η_k ĝ_k,   θ_k = ∇Φ*(z_k),   ĝ_k = (n/b) Σ_{i∈B_k} ∇ℓ_i(θ_k),

with B_k the k-th batch of a seeded shuffle of the n training points per epoch, cut into ⌈n/b⌉ batches of
near-equal size (b = |B_k|; the sizes differ by at most one, so no small last batch gets a large n/b; B_k =
all points when ``batch_size`` is None, which is full-batch mirror descent). ĝ_k is unbiased for ∇L, L = Σ_i
ℓ_i (sum convention), so a constant η has the units of flow time t for every batch size and the flow clock is
t_k = Σ_j η_j. ``"loss_normalized"`` steps use η_k = η / L̂_k with L̂_k = (n/b) Σ_{B_k} ℓ_i. Gradients are in
log-space: ĝ = e^m g with g = O(1), and the step is exp(log η_k + m) g, as in :mod:`flowsim.discrete`.

Unlike :func:`~flowsim.discrete.mirror_descent` it keeps no trajectory of θ (a VGG-16 has 15 M
parameters): it returns the final θ and a per-epoch history (training loss and accuracy on all points,
test accuracy), and it can checkpoint after every epoch and resume bit-identically (the batch order comes
from a seeded ``torch.Generator`` whose state is checkpointed). dtype and device come from the
arguments (float64 by default; float32 for GPUs).

References:
    Nemirovski & Yudin 1983; Beck & Teboulle, Oper. Res. Lett. 2003 (mirror descent).
    Lyu & Li, ICLR 2020 (arXiv:1906.05890), loss-based step sizes.
"""

from __future__ import annotations

import math
import os
import time as _time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .data import Dataset
from .errors import InvalidDataError, InvalidParameterError, positive_real
from .losses import AbstractLoss, AbstractMulticlassLoss, get_loss, get_multiclass_loss
from .models import AbstractModel
from .potentials import AbstractPotential
from .problem import as_potential
from .results import Status

__all__ = ["minibatch_mirror_descent", "MinibatchResult", "batch_gradient", "evaluate"]

_SCHEDULES = ("constant", "loss_normalized")


@dataclass
class MinibatchResult:
    """What :func:`minibatch_mirror_descent` returns.

    Attributes:
        theta: final parameters, shape `(p,)`, the run's dtype and device.
        history: per evaluated epoch (epoch 0 = θ₀), numpy arrays: ``epoch``, ``steps``, ``log_t`` (log of the
            flow clock t = Σ η_k), ``log_loss`` (log L on all training points, sum convention),
            ``mean_loss`` (L / n), ``train_accuracy``, ``test_accuracy`` (nan without test data), ``wall``.
        status, message: how the run ended (:class:`~flowsim.results.Status`).
        config: the arguments needed to rerun it.
    """

    theta: Tensor
    history: dict[str, np.ndarray]
    status: Status
    message: str
    config: dict = field(default_factory=dict)


def _loss_for(model: AbstractModel, loss: Any) -> AbstractLoss | AbstractMulticlassLoss:
    if getattr(model, "num_classes", 1) > 1:
        return get_multiclass_loss(loss)
    return get_loss(loss)


def batch_gradient(model, loss, X: Tensor, y: Tensor, theta: Tensor) -> tuple[float, float, Tensor]:
    """log L, m and g with −∇L = e^m g on the points (X, y), for scalar (±1) or multi-class (0..K−1) labels.

    Args:
        model: a flowsim model; loss: a binary :class:`~flowsim.losses.AbstractLoss` (model output `(n,)`)
            or an :class:`~flowsim.losses.AbstractMulticlassLoss` (logits `(n, K)`).
        X: inputs `(n, d)`; y: labels ±1 (float, dtype of X) or 0..K−1 (int64), shape `(n,)`.
        theta: parameters `(p,)`.

    Returns:
        ``(log_L, m, g)``: floats and g of shape `(p,)`, O(1) however small L is.
    """
    with torch.enable_grad():
        th = theta.detach().requires_grad_(True)
        out = model.forward(th, X)
        if isinstance(loss, AbstractMulticlassLoss):
            F = out.detach()
            log_L = loss.log_value(F, y)
            m, G = loss.logit_weights(F, y)
        else:
            q = y * out.detach()
            log_L = loss.log_value(q)
            log_c = loss.log_neg_derivative(q)
            m = log_c.max()
            G = torch.exp(log_c - m) * y
        (g,) = torch.autograd.grad(out, th, grad_outputs=G)
    return float(log_L), float(m), g


@torch.no_grad()
def evaluate(model, loss, theta: Tensor, X: Tensor, y: Tensor, *, chunk: int = 4096) -> tuple[float, float]:
    """(log L, accuracy) on all points, in chunks of ``chunk`` points (bounded memory).

    Accuracy: argmax_c f_c(x_i) = y_i for multi-class models, sign f(x_i) = y_i for scalar ones.
    """
    logs, correct = [], 0
    for start in range(0, X.shape[0], chunk):
        Xb, yb = X[start : start + chunk], y[start : start + chunk]
        out = model.forward(theta, Xb)
        if isinstance(loss, AbstractMulticlassLoss):
            logs.append(loss.log_value(out, yb))
            correct += int((out.argmax(-1) == yb).sum())
        else:
            logs.append(loss.log_value(yb * out))
            correct += int(((yb * out) > 0).sum())
    return float(torch.logsumexp(torch.stack(logs), 0)), correct / max(X.shape[0], 1)


def _labels(model: AbstractModel, y: Any, X: Tensor) -> Tensor:
    y = torch.as_tensor(y, device=X.device)
    if y.shape != (X.shape[0],):
        raise InvalidDataError(f"labels must have shape (n,) = ({X.shape[0]},); got {tuple(y.shape)}.")
    K = getattr(model, "num_classes", 1)
    if K > 1:
        if y.is_floating_point() and not bool((y == y.round()).all()):
            raise InvalidDataError("multi-class labels must be class indices 0..K−1.")
        y = y.long()
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= K):
            raise InvalidDataError(f"labels must lie in 0..{K - 1} for a model with num_classes = {K}.")
        return y
    if not bool(((y == 1) | (y == -1)).all()):
        raise InvalidDataError("a model with a scalar output needs labels ±1 (or build it with num_classes = K).")
    return y.to(dtype=X.dtype)


def _check_args(step_size, schedule, batch_size, epochs, n, target_loss):
    eta = positive_real("step_size", step_size, "step_size=0.1")
    if schedule not in _SCHEDULES:
        raise InvalidParameterError(f"schedule must be one of {_SCHEDULES}, got {schedule!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise InvalidParameterError(f"batch_size must be a positive integer or None (full batch), got {batch_size!r}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise InvalidParameterError(f"epochs must be a positive integer, got {epochs!r}")
    if target_loss is not None:
        positive_real("target_loss", target_loss, "target_loss=0.01")
    return eta, n if batch_size is None else min(int(batch_size), n)


class _Run:
    """State of a run: z, θ, the clock, the step count, the batch generator and the history lists."""

    def __init__(self, pot, theta: Tensor, seed: int) -> None:
        self.pot, self.theta = pot, theta
        self.z = pot.mirror_map(theta)
        self.log_t, self.k, self.epoch = -math.inf, 0, 0
        self.gen = torch.Generator(device="cpu").manual_seed(int(seed))
        self.history: dict[str, list] = {
            k: [] for k in ("epoch", "steps", "log_t", "log_loss", "mean_loss", "train_accuracy", "test_accuracy")
        }
        self.history["wall"] = []

    def state(self, config: dict) -> dict:
        return {
            "z": self.z.cpu(),
            "log_t": self.log_t,
            "k": self.k,
            "epoch": self.epoch,
            "gen": self.gen.get_state(),
            "history": self.history,
            "config": config,
        }

    def load(self, state: dict, device) -> None:
        self.z = state["z"].to(device=device, dtype=self.z.dtype)
        self.theta = self.pot.inverse_mirror_map(self.z)
        self.log_t, self.k, self.epoch = state["log_t"], state["k"], state["epoch"]
        self.gen.set_state(state["gen"])
        self.history = state["history"]


def _save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _epoch(run: _Run, model, loss, X, y, eta: float, b: int, schedule: str) -> None:
    """One pass over a seeded shuffle of the training points in batches of b.

    Raises:
        FloatingPointError: a non-finite loss, gradient or iterate.
    """
    n = X.shape[0]
    order = torch.randperm(n, generator=run.gen) if b < n else torch.arange(n)
    for idx in torch.tensor_split(order, -(-n // b)):  # near-equal batches: no tiny last batch scaled by n/b
        idx = idx.to(X.device)
        log_L, m, g = batch_gradient(model, loss, X[idx], y[idx], run.theta)
        if not (math.isfinite(log_L) and math.isfinite(m)):
            raise FloatingPointError(f"non-finite batch loss at step {run.k + 1}")
        scale_n = math.log(n / idx.numel())
        log_eta = math.log(eta) + (scale_n if schedule == "constant" else -log_L)
        run.z = run.z + math.exp(min(log_eta + m, 709.0)) * g
        run.theta = run.pot.inverse_mirror_map(run.z)
        if not bool(torch.isfinite(run.theta).all()):
            raise FloatingPointError(f"the iterate became non-finite at step {run.k + 1}; reduce step_size")
        run.log_t = float(np.logaddexp(run.log_t, log_eta - scale_n))  # η_k: the step is η_k (n/b) Σ_B ∇ℓ_i
        run.k += 1
    run.epoch += 1


def _record(run: _Run, model, loss, X, y, test, start: float) -> float:
    log_L, acc = evaluate(model, loss, run.theta, X, y)
    test_acc = evaluate(model, loss, run.theta, *test)[1] if test is not None else math.nan
    h = run.history
    for key, value in zip(
        ("epoch", "steps", "log_t", "log_loss", "mean_loss", "train_accuracy", "test_accuracy", "wall"),
        (run.epoch, run.k, run.log_t, log_L, math.exp(log_L) / X.shape[0], acc, test_acc, _time.perf_counter() - start),
        strict=True,
    ):
        h[key].append(value)
    return log_L


def minibatch_mirror_descent(
    model: AbstractModel,
    X: Any,
    y: Any,
    potential: str | AbstractPotential | dict = "euclidean",
    *,
    loss: str | AbstractLoss | AbstractMulticlassLoss = "exponential",
    step_size: float,
    schedule: str = "constant",
    batch_size: int | None = None,
    epochs: int = 1,
    seed: int = 0,
    theta0: Any = None,
    init_scale: float = 1.0,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device | None = None,
    test: tuple[Any, Any] | None = None,
    target_loss: float | None = None,
    progress: bool = False,
    checkpoint: str | Path | None = None,
    resume: bool = False,
) -> MinibatchResult:
    """Full-batch or seeded mini-batch mirror descent (module docstring), evaluated after every epoch.

    Args:
        model: a flowsim model: scalar output with labels ±1, or ``num_classes`` = K logits with labels 0..K−1.
        X: training inputs `(n, d)`, or a :class:`~flowsim.data.Dataset` (then ``y`` is ignored: pass None).
        y: labels `(n,)`.
        potential: object, name or ``{"name": ..., **params}``.
        loss: binary loss for scalar models; for K ≥ 2 a multi-class loss (``"exponential"`` = multi-class
            exponential, ``"logistic"``/``"cross_entropy"``).
        step_size: η > 0 (flow-time units for ``"constant"``).
        schedule: ``"constant"`` or ``"loss_normalized"`` (η / L̂ of the batch).
        batch_size: points per step; None: full batch.
        epochs: passes over the data.
        seed: seed of the batch order and of ``model.init`` (explicit generators; global RNG untouched).
        theta0: initial parameters `(p,)`; default ``model.init(scale=init_scale, seed=seed)``.
        dtype: floating dtype of θ, z and the data (float64 default; float32 for GPUs).
        device: torch device (default: X's device).
        test: ``(X_test, y_test)`` or a Dataset whose accuracy is recorded each epoch.
        target_loss: stop after the first epoch whose mean training loss L/n is ≤ this.
        progress: a tqdm bar over epochs showing the loss and accuracies.
        checkpoint: file to write the state to after every epoch (atomically).
        resume: continue from ``checkpoint`` when it exists (same arguments required, except ``epochs``,
            ``target_loss`` and ``progress``: a run can be extended).

    Returns:
        :class:`MinibatchResult`. Non-finite iterates and Ctrl-C end the run with a status, keeping the history.

    Raises:
        InvalidParameterError: bad step size, schedule, batch size, epochs, dtype, θ₀ shape, or a checkpoint
            written by a different run.
        InvalidDataError: bad shapes or labels.
    """
    if not isinstance(model, AbstractModel):
        raise InvalidParameterError(
            f"model must be a flowsim model (see flowsim.models.from_module), got {type(model).__name__}"
        )
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise InvalidParameterError(f"dtype must be a floating torch dtype, got {dtype!r}")
    if isinstance(X, Dataset):
        X, y = X.X, X.y
    if isinstance(test, Dataset):
        test = (test.X, test.y)
    Xt = torch.as_tensor(X)
    dev = torch.device(device) if device is not None else Xt.device
    Xt = Xt.to(device=dev, dtype=dtype)
    if Xt.dim() != 2 or Xt.shape[1] != model.input_dim:
        raise InvalidDataError(f"X must have shape (n, {model.input_dim}); got {tuple(Xt.shape)}.")
    yt = _labels(model, y, Xt)
    test_data = None
    if test is not None:
        Xs = torch.as_tensor(test[0]).to(device=dev, dtype=dtype)
        test_data = (Xs, _labels(model, test[1], Xs))
    pot = as_potential(potential)
    loss_fn = _loss_for(model, loss)
    eta, b = _check_args(step_size, schedule, batch_size, epochs, Xt.shape[0], target_loss)
    theta = (
        model.init(scale=init_scale, seed=seed, dtype=dtype, device=dev)
        if theta0 is None
        else torch.as_tensor(theta0).to(device=dev, dtype=dtype).clone()
    )
    if theta.shape != (model.num_params,):
        raise InvalidParameterError(f"theta0 must have shape ({model.num_params},), got {tuple(theta.shape)}")
    config = {
        "model": model.config(),
        "potential": {"name": pot.name, **pot.params()},
        "loss": loss_fn.name,
        "solver": {"method": "minibatch_md", "step_size": eta, "schedule": schedule, "batch_size": b, "seed": seed},
        "dtype": str(dtype).removeprefix("torch."),
        "init": {"scale": init_scale, "theta0_given": theta0 is not None},
    }
    run = _Run(pot, theta, seed)
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if resume and ckpt is not None and ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        if state["config"] != config:
            raise InvalidParameterError(f"the checkpoint {ckpt} was written by a run with other arguments; "
                                        "resume with the same arguments or remove the file")  # fmt: skip
        run.load(state, dev)
    status, message = _train(
        run, model, loss_fn, Xt, yt, test_data, eta, b, schedule, epochs, target_loss, progress, ckpt, config
    )
    history = {k: np.asarray(v, dtype=np.float64) for k, v in run.history.items()}
    return MinibatchResult(run.theta, history, status, message, {**config, "epochs": epochs})


def _train(run, model, loss, X, y, test, eta, b, schedule, epochs, target_loss, progress, ckpt, config):
    """Epochs with evaluation, checkpoints and the progress bar; failures and Ctrl-C become a status."""
    start = _time.perf_counter() - (run.history["wall"][-1] if run.history["wall"] else 0.0)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, initial=run.epoch, desc=f"mirror descent ({schedule}, batch {b})", unit="epoch")
    try:
        if not run.history["epoch"]:
            _record(run, model, loss, X, y, test, start)
        while run.epoch < epochs:
            _epoch(run, model, loss, X, y, eta, b, schedule)
            log_L = _record(run, model, loss, X, y, test, start)
            if ckpt is not None:
                _save_checkpoint(ckpt, run.state(config))
            if bar is not None:
                h = run.history
                bar.set_postfix(loss=f"{h['mean_loss'][-1]:.3g}", acc=f"{h['train_accuracy'][-1]:.3f}",
                                test=f"{h['test_accuracy'][-1]:.3f}")  # fmt: skip
                bar.update(1)
            if target_loss is not None and log_L - math.log(X.shape[0]) <= math.log(target_loss):
                return (
                    Status.SUCCESS,
                    f"{Status.SUCCESS.hint} (mean training loss ≤ {target_loss} at epoch {run.epoch})",
                )
    except KeyboardInterrupt:
        return Status.INTERRUPTED, Status.INTERRUPTED.hint
    except FloatingPointError as e:
        return Status.NONFINITE, f"{Status.NONFINITE.hint} ({e})"
    finally:
        if bar is not None:
            bar.close()
    return Status.SUCCESS, Status.SUCCESS.hint
