"""Device and thread choice for a run: ``device="auto"`` and ``threads="auto"``.

Tiny systems are overhead-bound (a torch op costs ~10 µs on CPU, more to launch on a GPU), so CUDA only
pays once the per-evaluation work is large. The work measure is n·p·K: data points × parameters × ensemble
members, about the multiply-adds of one forward pass of the whole batch.
"""

from __future__ import annotations

import torch

from .errors import InvalidParameterError, integer_argument

__all__ = ["AUTO_CUDA_MIN_WORK", "SMALL_PROBLEM_WORK", "check_threads", "resolve_device", "resolve_threads"]

# n·p·K above which device="auto" picks CUDA when present (a medium problem, n = 1000, p = 16,640, is 1.7e7).
# An estimate, not a GPU measurement: one batched matrix product then costs well above the ~0.3 ms of kernel
# launches of one right-hand side on a GPU.
AUTO_CUDA_MIN_WORK = 4_000_000
# n·p·K up to which threads="auto" uses one CPU thread (op overhead dominates; threads only add syncs).
SMALL_PROBLEM_WORK = 2_000_000


def resolve_device(
    device: str | torch.device | None, *, work: int, default: torch.device | None = None
) -> torch.device:
    """The torch device of a run.

    Args:
        device: ``"auto"`` (CUDA when present and ``work`` ≥ :data:`AUTO_CUDA_MIN_WORK`, else CPU), a device
            or its name, or None (``default``, else CPU).
        work: n·p·K, the size of one batched evaluation.
        default: device used for None (e.g. the data's device).

    Returns:
        The device.

    Raises:
        InvalidParameterError: for a name torch does not know, or "cuda" without a CUDA device.
    """
    if device is None:
        return default if default is not None else torch.device("cpu")
    if isinstance(device, str) and device == "auto":
        use_cuda = torch.cuda.is_available() and work >= AUTO_CUDA_MIN_WORK
        return torch.device("cuda" if use_cuda else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise InvalidParameterError(f"device must be 'auto', 'cpu', 'cuda' or a torch.device, got {device!r}") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidParameterError("device='cuda' was asked for but no CUDA device is available; use device='auto'")
    return dev


def resolve_threads(threads: int | str | None, *, work: int, device: torch.device) -> int | None:
    """Torch CPU threads for a run: "auto" is 1 for small CPU problems, else unchanged (None).

    Args:
        threads: "auto", None (leave torch's setting) or an integer ≥ 1 (a Python or numpy integer, or an integral
            float such as ``2.0``: :func:`flowsim.errors.integer_argument`).
        work: n·p·K, the size of one batched evaluation; device: the run's device.

    Raises:
        InvalidParameterError: any other string, a bool, a fractional number or one below 1.
    """
    if isinstance(threads, str) and threads == "auto":
        return 1 if device.type == "cpu" and work <= SMALL_PROBLEM_WORK else None
    return check_threads(threads)


def check_threads(threads: object) -> int | str | None:
    """``threads`` checked as :func:`resolve_threads` takes it: "auto", None or an int ≥ 1 (returned as an int).

    Raises:
        InvalidParameterError: any other string, a bool, a fractional number or one below 1.
    """
    if threads is None or (isinstance(threads, str) and threads == "auto"):
        return threads
    if isinstance(threads, str):
        raise InvalidParameterError(f"threads must be 'auto', None or a positive int, got {threads!r}")
    return integer_argument("threads", threads, 'threads=1, "auto" or None', minimum=1)
