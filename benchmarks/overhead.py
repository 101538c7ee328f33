"""Per-RHS overhead of flowsim's mirror-flow field against the bare autograd gradient of the same model.

For a two-layer ReLU net (no biases) on gaussian data, hyperbolic entropy (β = 0.1), exponential loss,
log-time: times one evaluation of ``MirrorFlowField`` (inverse mirror map, forward, log-space loss weights,
closed-form vector–Jacobian product) and divides it by the time of the bare autograd gradient
∇_θ Σ_i c_i f(θ; x_i) (forward + ``torch.autograd.grad``) of the same model and data. Also prints the
ratio of the autograd path of the field (``AbstractModel.forward_and_vjp``, the pre-issue-8 code) for
comparison. Each figure is the minimum over repeats of the mean over a batch of calls, measured in one run.

    python benchmarks/overhead.py [--device cpu|cuda] [--quick]

Last line: ``medium_rhs_over_bare_gradient=<x>`` (acceptance: ≤ 1.5 on CPU).
"""

from __future__ import annotations

import argparse
import time

import torch

from flowsim.flow import MirrorFlowField
from flowsim.losses import get_loss
from flowsim.models import AbstractModel, TwoLayerReLU
from flowsim.potentials import HyperbolicEntropy

SIZES = {"small": (50, 5, 20), "medium": (1000, 64, 256), "large": (4000, 128, 512)}


def timeit(fn, device, calls: int, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def measure(name: str, device: torch.device, repeats: int) -> dict:
    n, d, m = SIZES[name]
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n, d, generator=g, dtype=torch.float64).to(device)
    y = torch.sign(X @ torch.randn(d, generator=g, dtype=torch.float64).to(device))
    model = TwoLayerReLU(d, m)
    theta = model.init(seed=0, scale=0.5, device=device)
    pot = HyperbolicEntropy(0.1)
    field = MirrorFlowField(model, pot, get_loss("exponential"), X, y)
    z = pot.mirror_map(theta)
    tau = torch.tensor(1.0, dtype=torch.float64, device=device)
    c = torch.rand(n, generator=g, dtype=torch.float64).to(device) * y

    def bare():
        th = theta.detach().requires_grad_(True)
        return torch.autograd.grad(model.forward(th, X), th, grad_outputs=c)[0]

    def rhs():
        return field(tau, z)

    def rhs_autograd():
        f, vjp = AbstractModel.forward_and_vjp(model, pot.inverse_mirror_map(z), X)
        w = torch.exp(field.loss.log_neg_derivative(y * f) + tau)
        return vjp(w * y)

    assert float((rhs() - rhs_autograd()).abs().max() / rhs_autograd().abs().max()) <= 1e-12
    calls = max(3, int(2e7 / (n * model.num_params)))
    t_bare = timeit(bare, device, calls, repeats)
    t_rhs = timeit(rhs, device, calls, repeats)
    t_auto = timeit(rhs_autograd, device, calls, repeats)
    return {
        "problem": name,
        "n": n,
        "d": d,
        "m": m,
        "p": model.num_params,
        "bare_ms": 1e3 * t_bare,
        "rhs_ms": 1e3 * t_rhs,
        "ratio": t_rhs / t_bare,
        "autograd_rhs_ratio": t_auto / t_bare,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    repeats = 3 if args.quick else 7
    print(f"device={device} threads={torch.get_num_threads()} torch={torch.__version__}")
    print(
        f"{'problem':8} {'n':>5} {'d':>4} {'m':>5} {'p':>7} {'bare ms':>9} {'rhs ms':>9} {'rhs/bare':>9} "
        f"{'autograd rhs/bare':>18}"
    )
    rows = [measure(name, device, repeats) for name in SIZES]
    for r in rows:
        print(
            f"{r['problem']:8} {r['n']:5} {r['d']:4} {r['m']:5} {r['p']:7} {r['bare_ms']:9.3f} {r['rhs_ms']:9.3f} "
            f"{r['ratio']:9.3f} {r['autograd_rhs_ratio']:18.3f}"
        )
    print(f"medium_rhs_over_bare_gradient={rows[1]['ratio']:.4g}")


if __name__ == "__main__":
    main()
