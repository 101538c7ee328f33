"""Figure 11: decision boundary and activation of a two-layer ReLU network on a 2-D example (fig2's problem).

A bias-free network's decision regions in 2-D are cones; each active neuron switches on a line ⟨w_j, x⟩ = 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from . import _draw
from ._base import FigureResult, StudentTeacher2D, pot_label, register, save
from ._representations import FIG2_POTENTIALS

N_CIRCLE = 3600  # angles on the unit circle where student and teacher are compared


def _teacher(st: StudentTeacher2D, X: np.ndarray) -> np.ndarray:
    return np.maximum(X @ st.teacher_W.T, 0.0) @ st.teacher_a


def _student(st: StudentTeacher2D, theta: np.ndarray, X: np.ndarray) -> np.ndarray:
    th = torch.as_tensor(np.asarray(theta), dtype=torch.float64)
    return st.model.forward(th, torch.as_tensor(X, dtype=torch.float64)).numpy()


def _one(st: StudentTeacher2D, tr) -> tuple[dict, dict]:
    """Numbers and panel of one run: accuracies, agreement with the teacher on the circle, activation lines."""
    theta = np.asarray(tr.theta[-1])
    phi = np.linspace(0.0, 2 * np.pi, N_CIRCLE, endpoint=False)
    circle = np.stack([np.cos(phi), np.sin(phi)], axis=1)
    f, f_star = _student(st, theta, circle), _teacher(st, circle)
    sign_changes = int(np.sum(np.sign(f) != np.sign(np.roll(f, 1))))
    X, y = st.data.X.numpy(), st.data.y.numpy()
    wt, _ = st.effective(theta)
    norms = np.linalg.norm(wt, axis=1)
    active = norms > 1e-2 * norms.max()  # the lines drawn: neurons with a non-negligible share of w̃
    W = theta[: 2 * st.width].reshape(st.width, 2)[active]
    lines = W / np.linalg.norm(W, axis=1, keepdims=True)
    g = np.linspace(-1.3, 1.3, 121)
    xx, yy = np.meshgrid(g, g)
    grid = _student(st, theta, np.stack([xx.ravel(), yy.ravel()], axis=1)).reshape(xx.shape)
    numbers = {
        "train_accuracy": float(np.mean(np.sign(_student(st, theta, X)) == y)),
        "teacher_agreement_on_circle": float(np.mean((np.sign(f) == np.sign(f_star))[f_star != 0])),
        "boundary_rays": sign_changes,
        "activation_lines": int(active.sum()),
    }
    return numbers, {"grid": (xx, yy, grid), "lines": lines}


@register("fig11", "decision boundary and activation lines of a 2-D example (fig2's networks)")
def fig11(quick: bool, out: Path) -> FigureResult:
    """Fig. 11: sign f(x) and the active neurons' lines ⟨w_j, x⟩ = 0 for fig2's three runs."""
    st = StudentTeacher2D()
    log_t_end = 12.0
    runs, panels, pngs = {}, [], []
    for pot in FIG2_POTENTIALS:
        tr = st.run(pot, log_t_end, n_save=20 if quick else 60)  # the same runs as fig2
        numbers, panel = _one(st, tr)
        label = pot_label(pot)
        runs[label] = {"potential": pot, "status": tr.status.value, **numbers}
        panel["title"] = f"{label}: {numbers['activation_lines']} lines, {numbers['boundary_rays']} boundary rays"
        panels.append(panel)
    X, y = st.data.X.numpy(), st.data.y.numpy()
    save(lambda plt: _draw.boundaries(plt, panels, X, y), out, "fig11.png", pngs)
    fmt = ", ".join
    lines = [
        f"fig2's networks at log t = {log_t_end:g}: regions sign f(x), decision boundary (black), each active neuron's "
        "activation line ⟨w_j, x⟩ = 0 (dashed)",
        "activation lines: " + fmt(f"{k} {v['activation_lines']}" for k, v in runs.items()),
        "training accuracy "
        + fmt(f"{k} {v['train_accuracy']:.3f}" for k, v in runs.items())
        + "; agreement with the teacher's sign on the unit circle (where f* ≠ 0) "
        + fmt(f"{k} {v['teacher_agreement_on_circle']:.3f}" for k, v in runs.items()),
    ]
    note = "the 2-D example is fig2's student–teacher problem (chosen here); the caption names boundary and activation"
    numbers = {"log_t": log_t_end, "width": st.width, "runs": runs}
    return FigureResult("fig11", "decision boundary and activation (2-D)", numbers, lines, note, pngs)
