"""Small reference problems shared by the tests (data are generated here, references computed in tests)."""

from __future__ import annotations

import numpy as np
import torch

from flowsim.data import make_dataset


def random_separable(n: int = 12, d: int = 3, seed: int = 0, asymmetric: bool = True):
    """Linearly separable (through the origin) data with a random teacher; asymmetric scales per point."""
    rng = np.random.default_rng(seed)
    w_star = rng.normal(size=d)
    X = rng.normal(size=(n, d))
    if asymmetric:
        X *= rng.uniform(0.5, 1.5, size=(n, 1))
    y = np.sign(X @ w_star)
    # push points away from the teacher's hyperplane so the margin is not tiny
    X += 0.3 * y[:, None] * w_star / np.linalg.norm(w_star)
    y = np.sign(X @ w_star)
    return make_dataset(X, y, name=f"random_separable_{seed}")


def single_point(x, y: float = 1.0):
    X = torch.as_tensor(np.asarray(x, dtype=np.float64)[None, :])
    return make_dataset(X, torch.tensor([y], dtype=torch.float64), name="single_point")
